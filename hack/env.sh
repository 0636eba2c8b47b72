# Shared paths of the private development containerd. Sourced by the other scripts.
BETA9_DEV=${BETA9_DEV:-/run/beta9-dev}
BETA9_DEV_ROOT=${BETA9_DEV_ROOT:-/var/lib/beta9-dev}
BETA9_CACHE=${BETA9_CACHE:-/var/cache/beta9}
CONTAINERD_ADDRESS=$BETA9_DEV/containerd.sock
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BETA9_PROFILE=${BETA9_PROFILE:-release}
# The pods' network: a bridge with $BETA9_SUBNET.1/24 on the host side, no route off it, and the
# test registry at $BETA9_SUBNET.1:5000. Another private containerd on this machine picks others.
BETA9_SUBNET=${BETA9_SUBNET:-10.88.90}
BETA9_BRIDGE=${BETA9_BRIDGE:-beta9br0}
BETA9_CNI_NETWORK=${BETA9_CNI_NETWORK:-beta9-$BETA9_BRIDGE}
BETA9_REGISTRY=$BETA9_SUBNET.1:5000
ctr_() { ctr --address "$CONTAINERD_ADDRESS" "$@"; }
