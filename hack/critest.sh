#!/usr/bin/env bash
# Kubernetes' CRI validation suite (critest, cri-tools v1.31.1) against this shim, through the
# script that ships with it (../shared/critest/critest.sh: a private containerd 1.6 with CRI, a
# CNI bridge and a local registry of critest's images; see its README). Gates on the floor in
# hack/critest.floor: the pass count may only go up, and every failing spec must be one the
# README lists as gVisor's (hack/critest.known-failures), each with its cause.
# Usage: hack/critest.sh [critest/ginkgo args...]
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/env.sh

suite=${CRITEST_SCRIPT:-$REPO/../shared/critest/critest.sh}
[ -x "$suite" ] || { echo "critest.sh: $suite is missing (the CRI validation suite beside this repository)" >&2; exit 1; }
shimbin=${CRITEST_HOME:-/var/cache/critest}/shimbin
dir=$REPO/target/x86_64-unknown-linux-gnu/$BETA9_PROFILE
[ -x "$dir/containerd-shim-beta9-sandbox" ] || cargo build --release --bins
# Its containerd must not run an older shim: stop it before the binaries change under it.
"$suite" stop >/dev/null 2>&1 || true
mkdir -p "$shimbin"
for b in containerd-shim-beta9-sandbox beta9-sandbox-agent; do
    install -m 0755 "$dir/$b" "$shimbin/$b.new" && mv -f "$shimbin/$b.new" "$shimbin/$b"
done
log=$(mktemp)
# The suite's script leaves its CNI bridge (cni-critest0, with its address) when it stops: it goes too.
trap 'rm -f "$log"; "$suite" stop >/dev/null 2>&1 || true; ip link del cni-critest0 2>/dev/null || true' EXIT
start=$(date +%s)
# Through a file shown as it grows, not a pipe: a stray process holding a pipe would keep this waiting.
CRITEST_SHIM_PATH=$shimbin "$suite" beta9 "$@" >"$log" 2>&1 &
suite_pid=$!
tail -n +1 -s 0.2 -f --pid=$suite_pid "$log"
wait $suite_pid || true
echo "critest.sh: the suite took $(( $(date +%s) - start )) s"
summary=$(grep -E '^critest beta9: [0-9]+ passed' "$log" | tail -n 1 || true)
[ -n "$summary" ] || { echo "critest.sh: the suite gave no summary" >&2; exit 1; }
[ $# -eq 0 ] || exit 0   # a focused run is for people: no gate
passed=$(sed -E 's/^critest beta9: ([0-9]+) passed.*/\1/' <<<"$summary")
floor=$(cat hack/critest.floor)
status=0
if [ "$passed" -lt "$floor" ]; then
    echo "critest.sh: $passed passed, below the floor of $floor (hack/critest.floor)" >&2
    status=1
fi
# Every failure must be a known one of gVisor's; a new one is a regression to fix (or to list,
# with its cause, in the README and hack/critest.known-failures).
while IFS= read -r spec; do
    if ! grep -qxF -- "$spec" <(grep -v '^#' hack/critest.known-failures); then
        echo "critest.sh: a spec outside the known failures failed: $spec" >&2
        status=1
    fi
done < <(sed -nE 's/^FAILED: (.*) -- .*/\1/p' "$log")
[ "$status" -ne 0 ] || echo "critest.sh: $summary (floor $floor): OK"
exit $status
