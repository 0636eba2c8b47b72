#!/usr/bin/env bash
# Validates the Kubernetes manifests in deploy/ offline (kubernetes-validate carries the API
# schemas), strictly (an unknown field fails), against the oldest and newest Kubernetes we name.
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/env.sh
kv=$BETA9_CACHE/kubernetes-validate/bin/kubernetes-validate
[ -x "$kv" ] || hack/install-deps.sh
for k in 1.31.0 1.34.0; do
    "$kv" --strict --kubernetes-version "$k" deploy/*.yaml
done
# The DaemonSet's entrypoint is a POSIX sh script (the image's /bin/sh is dash).
sh -n deploy/image/daemonset-entrypoint
echo "check-deploy.sh: deploy/*.yaml valid for Kubernetes 1.31 and 1.34"
