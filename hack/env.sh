# Shared paths of the private development containerd. Sourced by the other scripts.
BETA9_DEV=${BETA9_DEV:-/run/beta9-dev}
BETA9_DEV_ROOT=${BETA9_DEV_ROOT:-/var/lib/beta9-dev}
BETA9_CACHE=${BETA9_CACHE:-/var/cache/beta9}
CONTAINERD_ADDRESS=$BETA9_DEV/containerd.sock
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BETA9_PROFILE=${BETA9_PROFILE:-release}
ctr_() { ctr --address "$CONTAINERD_ADDRESS" "$@"; }
