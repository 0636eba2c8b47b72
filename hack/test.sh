#!/usr/bin/env bash
# Runs every test: unit tests of the pure parts, then end-to-end tests that drive a private
# containerd with the real runsc. Installs what is missing first. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/env.sh

hack/install-deps.sh
# One build for binaries and tests: the test build also produces the shim and agent binaries.
cargo test --release --workspace --no-run
hack/containerd.sh restart
trap 'hack/containerd.sh stop' EXIT
hack/build-images.sh busybox debian
CONTAINERD_ADDRESS=$CONTAINERD_ADDRESS cargo test --release --workspace "$@"
