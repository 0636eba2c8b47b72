#!/usr/bin/env bash
# Builds the test images locally (no registry is reachable) and imports them into the private
# containerd. Cached: an image already imported is not built again.
#   beta9/busybox:latest  busybox-static with its applets
#   beta9/debian:latest   debootstrap minbase + python3 + docker.io, iptables (the Docker image)
#   beta9/pause:latest    the pod sandbox image CRI runs first (busybox sleeping)
#   $BETA9_CACHE/busybox-rootfs.tar  a busybox rootfs to `docker import` inside a Docker sandbox
# Each image goes to ctr's namespace `default` and to CRI's `k8s.io`.
# Usage: hack/build-images.sh [busybox] [debian] [pause]
set -euo pipefail
. "$(dirname "$0")/env.sh"

imported() { ctr_ images ls -q | grep -qx "$1" && ctr_ -n k8s.io images ls -q | grep -qx "$1"; }

# Turns a root filesystem directory into an OCI archive and imports it as $name.
import_rootfs() {
    local name=$1 rootfs=$2 work arg cmd=()
    shift 2
    for arg in "$@"; do cmd+=(--config.cmd "$arg"); done
    work=$(mktemp -d "$BETA9_CACHE/oci.XXXXXX")
    umoci init --layout "$work/layout"
    umoci new --image "$work/layout:latest"
    umoci unpack --rootless --image "$work/layout:latest" "$work/bundle" >/dev/null
    cp -a "$rootfs/." "$work/bundle/rootfs/"
    umoci repack --image "$work/layout:latest" "$work/bundle"
    umoci config --image "$work/layout:latest" "${cmd[@]}" \
        --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
    tar -C "$work/layout" -cf "$work/image.tar" .
    ctr_ images import --base-name "docker.io/$name" "$work/image.tar" >/dev/null
    ctr_ -n k8s.io images import --base-name "docker.io/$name" "$work/image.tar" >/dev/null
    rm -rf "$work"
    echo "build-images: imported docker.io/$name:latest"
}

busybox_rootfs() {
    local r=$1
    mkdir -p "$r/bin" "$r/tmp" "$r/etc" "$r/proc" "$r/sys" "$r/dev"
    cp /bin/busybox "$r/bin/busybox"
    for applet in $("$r/bin/busybox" --list); do
        [ -e "$r/bin/$applet" ] || ln -s busybox "$r/bin/$applet"
    done
    echo 'root:x:0:0:root:/root:/bin/sh' >"$r/etc/passwd"
}

busybox() {
    # Also a plain rootfs tar, for `docker import` inside a Docker sandbox.
    if [ ! -s "$BETA9_CACHE/busybox-rootfs.tar" ]; then
        local t; t=$(mktemp -d "$BETA9_CACHE/busybox-tar.XXXXXX")
        busybox_rootfs "$t"
        tar -C "$t" -cf "$BETA9_CACHE/busybox-rootfs.tar.new" . && mv "$BETA9_CACHE/busybox-rootfs.tar.new" "$BETA9_CACHE/busybox-rootfs.tar"
        rm -rf "$t"
    fi
    imported docker.io/beta9/busybox:latest && return 0
    local r; r=$(mktemp -d "$BETA9_CACHE/busybox.XXXXXX")
    busybox_rootfs "$r"
    import_rootfs beta9/busybox "$r" /bin/sh
    rm -rf "$r"
}

pause() {
    imported docker.io/beta9/pause:latest && return 0
    local r; r=$(mktemp -d "$BETA9_CACHE/pause.XXXXXX")
    busybox_rootfs "$r"
    import_rootfs beta9/pause "$r" /bin/sleep 2147483647
    rm -rf "$r"
}

debian() {
    imported docker.io/beta9/debian:latest && return 0
    local r=$BETA9_CACHE/debian-rootfs
    if [ ! -e "$r/.complete" ]; then
        rm -rf "$r"
        debootstrap --variant=minbase --include=python3-minimal,docker.io,iptables,ca-certificates \
            bookworm "$r" >"$BETA9_CACHE/debootstrap.log" 2>&1 \
            || { tail -n 20 "$BETA9_CACHE/debootstrap.log" >&2; exit 1; }
        rm -rf "$r/var/cache/apt/archives/"*.deb "$r/var/lib/apt/lists/"*
        touch "$r/.complete"
    fi
    import_rootfs beta9/debian "$r" /bin/bash
}

mkdir -p "$BETA9_CACHE"
[ $# -gt 0 ] || set -- busybox
for image in "$@"; do "$image"; done
