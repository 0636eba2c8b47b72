#!/usr/bin/env bash
# Benchmarks against the peer in one interleaved run (see hack/bench.py for what is measured).
# Usage: hack/bench.sh [--containerd 1.6|1.7|2.1] [--rounds N] [--shims N] [--density N] [--json FILE]
# CI runs `hack/bench.sh --rounds 1 --shims 2 --density 2` only to check that the command works.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = --containerd ]; then
    export BETA9_CONTAINERD=${2:?--containerd needs a version: 1.6, 1.7 or 2.1}
    shift 2
fi
. hack/env.sh

hack/install-deps.sh >/dev/null
cargo build --release --workspace --bins
hack/containerd.sh start
hack/build-images.sh busybox debian
CONTAINERD_ADDRESS=$CONTAINERD_ADDRESS BETA9_DEV=$BETA9_DEV BETA9_CACHE=$BETA9_CACHE exec python3 hack/bench.py "$@"
