#!/usr/bin/env bash
# Runs every test: unit tests of the pure parts, then end-to-end tests that drive a private
# containerd with the real runsc. Installs what is missing first. Exits non-zero on any failure.
set -uo pipefail
set -e
cd "$(dirname "$0")/.."
. hack/env.sh

hack/install-deps.sh
# One build of the binaries containerd runs and of every test (a test build alone skips bins
# without integration tests; two builds would resolve features twice and compile twice).
cargo build --release --workspace --all-targets
hack/containerd.sh restart
trap 'hack/containerd.sh stop' EXIT
hack/build-images.sh busybox debian pause
log=$(mktemp)
status=0
CONTAINERD_ADDRESS=$CONTAINERD_ADDRESS cargo test --release --workspace --no-fail-fast "$@" 2>&1 | tee "$log" || status=$?
passed=$(grep -o '[0-9]\+ passed' "$log" | awk '{s+=$1} END {print s+0}')
failed=$(grep -o '[0-9]\+ failed' "$log" | awk '{s+=$1} END {print s+0}')
rm -f "$log"
echo "tests: $passed passed, $failed failed"
# The benchmark command must keep working; its numbers are not judged here (hack/bench.sh is).
if [ "$status" -eq 0 ]; then
    hack/bench.sh --rounds 1 --shims 2 --density 2 --json target/bench/ci.json || status=$?
fi
exit $status
