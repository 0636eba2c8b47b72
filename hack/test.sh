#!/usr/bin/env bash
# Runs every test: unit tests of the pure parts, then end-to-end tests that drive a private
# containerd with the real runsc, once per containerd version asked for (the first pass runs the
# unit tests too). Installs what is missing first. Exits non-zero on any failure.
#   hack/test.sh [--containerd V[,V...]] [cargo test arguments...]
# V is 1.6, 1.7 or 2.1 (hack/env.sh); without the option, $BETA9_CONTAINERD, else 1.6 (the
# default) and 2.1, as CI (.ci/run) runs it. Without cargo test arguments, critest runs last
# (hack/critest.sh).
set -uo pipefail
set -e
cd "$(dirname "$0")/.."
versions=${BETA9_CONTAINERD:-1.6,2.1}
if [ "${1:-}" = --containerd ]; then
    versions=${2:?--containerd needs a version list, e.g. 1.6,2.1}
    shift 2
fi
for v in ${versions//,/ }; do BETA9_CONTAINERD=$v bash -c '. hack/env.sh' || exit 2; done
path=$PATH

hack/install-deps.sh
# The binaries containerd runs, as users get them (the release profile: small, fat LTO); the
# tests in cargo's test profile, which builds in a fraction of the time (fat LTO over every test
# binary was half of CI). The agent's own tests run the agent of that build.
cargo build --release --workspace --bins
cargo test --workspace --no-run
# The node installer's artifacts: the Debian package (lintian-clean), the Kubernetes manifests
# (validated offline) and the DaemonSet's image. installer/tests install the package and run
# the installer against nodes of each containerd version, in the first pass below.
hack/package.sh
hack/check-deploy.sh
hack/daemonset-image.sh
log=$(mktemp)
trap 'hack/containerd.sh stop; rm -f "$log"' EXIT
# Runs a command with its output through a file that is shown as it grows: a stray process that
# inherited the output (a test's workload that outlived its test) cannot keep this script
# waiting, as it would on a pipe. Returns the command's status.
logged() {
    "$@" >"$log" 2>&1 &
    local pid=$!
    tail -n +1 -s 0.2 -f --pid=$pid "$log"
    wait $pid
}
status=0
passed=0
failed=0
scope=(--workspace)
for v in ${versions//,/ }; do
    start=$(date +%s)
    echo "== tests against containerd $v"
    export BETA9_CONTAINERD=$v PATH=$path
    (. hack/env.sh && hack/containerd.sh restart && hack/build-images.sh busybox debian debian-trixie debian-sid pause) || { status=1; break; }
    # The version's ctr comes first on the tests' PATH (hack/env.sh).
    logged bash -c '. hack/env.sh && CONTAINERD_ADDRESS=$CONTAINERD_ADDRESS exec cargo test "$@"' test "${scope[@]}" --no-fail-fast "$@" || status=1
    p=$(grep -o '[0-9]\+ passed' "$log" | awk '{s+=$1} END {print s+0}')
    f=$(grep -o '[0-9]\+ failed' "$log" | awk '{s+=$1} END {print s+0}')
    passed=$((passed + p)) failed=$((failed + f))
    # The benchmark command must keep working on each version; its numbers are not judged here.
    if [ "$status" -eq 0 ]; then
        hack/bench.sh --rounds 1 --shims 2 --density 2 --json "target/bench/ci-$v.json" || status=1
    fi
    echo "== containerd $v: $p passed, $f failed in $(( $(date +%s) - start )) s"
    # The unit tests do not depend on containerd: once is enough.
    scope=(-p beta9-e2e)
done
echo "tests: $passed passed, $failed failed"
# Kubernetes' CRI validation suite, gated on hack/critest.floor (a focused run skips it).
if [ $# -eq 0 ]; then
    hack/containerd.sh stop
    hack/critest.sh || status=1
fi
exit $status
