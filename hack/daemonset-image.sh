#!/usr/bin/env bash
# Builds the installer DaemonSet's image (deploy/daemonset.yaml) as an OCI archive, with no
# registry: target/daemonset/beta9-sandbox-installer.tar, image name beta9/sandbox-installer:VERSION.
# Push it to your registry with skopeo, e.g.
#   skopeo copy oci-archive:target/daemonset/beta9-sandbox-installer.tar:VERSION docker://REGISTRY/beta9/sandbox-installer:VERSION
# The base is Debian minbase with curl (the node label goes through the API server), built
# once with debootstrap and cached; the three static binaries and the entrypoint go to
# /opt/beta9-sandbox/bin. The script ends by running the image's own installer and curl.
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/env.sh
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
rootfs=$BETA9_CACHE/daemonset-rootfs
if [ ! -e "$rootfs/.complete" ]; then
    rm -rf "$rootfs"
    debootstrap --variant=minbase --include=curl,ca-certificates bookworm "$rootfs" >"$BETA9_CACHE/debootstrap-daemonset.log" 2>&1 \
        || { tail -n 20 "$BETA9_CACHE/debootstrap-daemonset.log" >&2; exit 1; }
    rm -rf "$rootfs/var/cache/apt/archives/"*.deb "$rootfs/var/lib/apt/lists/"*
    touch "$rootfs/.complete"
fi
bin=target/x86_64-unknown-linux-gnu/release
for b in beta9-sandbox-install containerd-shim-beta9-sandbox beta9-sandbox-agent; do
    [ -x "$bin/$b" ] || cargo build --release --workspace --bins
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
umoci init --layout "$work/layout"
umoci new --image "$work/layout:$version"
umoci unpack --rootless --image "$work/layout:$version" "$work/bundle" >/dev/null
cp -a "$rootfs/." "$work/bundle/rootfs/"
rm -f "$work/bundle/rootfs/.complete"
install -d "$work/bundle/rootfs/opt/beta9-sandbox/bin"
install -m 0755 "$bin/beta9-sandbox-install" "$bin/containerd-shim-beta9-sandbox" "$bin/beta9-sandbox-agent" \
    deploy/image/daemonset-entrypoint "$work/bundle/rootfs/opt/beta9-sandbox/bin/"
umoci repack --image "$work/layout:$version" "$work/bundle"
umoci config --image "$work/layout:$version" --config.entrypoint /opt/beta9-sandbox/bin/daemonset-entrypoint \
    --config.env PATH=/opt/beta9-sandbox/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --config.label "org.opencontainers.image.version=$version" --config.label org.opencontainers.image.title=beta9-sandbox-installer
mkdir -p target/daemonset
tar -C "$work/layout" -cf target/daemonset/beta9-sandbox-installer.tar.new . && mv target/daemonset/beta9-sandbox-installer.tar.new target/daemonset/beta9-sandbox-installer.tar
# What the DaemonSet will run, run from the image's own root filesystem.
rm -rf "$work/check" && umoci --log error unpack --rootless --image "$work/layout:$version" "$work/check" >/dev/null
r=$work/check/rootfs
chroot "$r" /opt/beta9-sandbox/bin/beta9-sandbox-install --version
chroot "$r" curl --version | head -n1
chroot "$r" /bin/sh -n /opt/beta9-sandbox/bin/daemonset-entrypoint
echo "daemonset-image.sh: target/daemonset/beta9-sandbox-installer.tar ($(du -h target/daemonset/beta9-sandbox-installer.tar | cut -f1)), image beta9/sandbox-installer:$version"
