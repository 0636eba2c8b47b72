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
# The containerd the private daemon runs, and whose ctr the scripts and tests use: 1.6 is
# bookworm's system package (the default: what a user here installs first); 1.7 (trixie) and 2.1
# (sid) are unpacked into the cache by hack/install-deps.sh. Each keeps a root of its own.
BETA9_CONTAINERD=${BETA9_CONTAINERD:-1.6}
case $BETA9_CONTAINERD in
    1.6) CONTAINERD_BIN=/usr/bin ;;
    1.7 | 2.1) CONTAINERD_BIN=$BETA9_CACHE/containerd-$BETA9_CONTAINERD/usr/bin; PATH=$CONTAINERD_BIN:$PATH ;;
    *) echo "BETA9_CONTAINERD=$BETA9_CONTAINERD: not one of 1.6, 1.7, 2.1" >&2; exit 2 ;;
esac
export BETA9_CONTAINERD PATH
ctr_() { ctr --address "$CONTAINERD_ADDRESS" "$@"; }

# Where network namespaces live, made a shared mount point of its own before any pod's namespace
# is mounted in it: iproute2's first `ip netns add` on a machine bind-mounts /run/netns over
# itself, and done later that mount hides the pods' namespace mounts under it, so containerd can
# no longer remove them (RemovePodSandbox: "unlinkat /run/netns/cni-...: device or resource busy").
# Shared, an unmount through any later bind of it reaches the mount underneath.
netns_dir_shared() {
    mkdir -p /run/netns
    mountpoint -q /run/netns || mount --bind /run/netns /run/netns
    mount --make-shared /run/netns
}
