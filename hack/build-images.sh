#!/usr/bin/env bash
# Builds the test images locally (no registry is reachable) and imports them into the private
# containerd. Cached: an image already imported is not built again.
#   beta9/busybox:latest  busybox-static with its applets
#   beta9/debian:latest   debootstrap minbase + python3 + docker.io, iptables (the Docker image)
#   beta9/debian-trixie:latest, beta9/debian-sid:latest   the same from trixie (Docker 26, with
#                         Debian's docker-compose v2 and docker-buildx plugins) and sid (Docker 28, crun)
#   beta9/pause:latest    the pod sandbox image CRI runs first (busybox sleeping)
#   $BETA9_CACHE/busybox-rootfs.tar  a busybox rootfs to `docker import` inside a Docker sandbox
# Each image goes to ctr's namespace `default` and to CRI's `k8s.io`.
# Usage: hack/build-images.sh [busybox] [debian] [debian-trixie] [debian-sid] [pause]
set -euo pipefail
. "$(dirname "$0")/env.sh"

# An image's revision: bumped when what goes into it changes, so that a cached archive (and an
# import of it) made from the old recipe is not taken for the new one. Unset: revision 1, whose
# cache names carry no suffix (the names every cache already has).
revision() { case $1 in beta9/debian-trixie) echo 2 ;; *) echo 1 ;; esac; }
suffix() { local r; r=$(revision "$1"); [ "$r" = 1 ] || echo "-r$r"; }
archive() { echo "$BETA9_CACHE/images/${1//\//_}$(suffix "$1").tar"; }
# An image is done when its archive is in the cache and both namespaces have it; from revision 2
# on, the import is also tagged with its revision (a containerd that still holds the previous
# revision's :latest imports the new one).
done_() {
    local tag=latest; [ "$(revision "$1")" = 1 ] || tag=r$(revision "$1")
    [ -s "$(archive "$1")" ] || return 1
    ctr_ images ls -q | grep -qx "docker.io/$1:$tag" && ctr_ -n k8s.io images ls -q | grep -qx "docker.io/$1:$tag"
}

# Turns a root filesystem directory into an OCI archive and imports it as $name. The archive is
# kept in the cache, so another containerd root (hack/containerd.sh keeps one per version) only
# imports it.
import_rootfs() {
    local name=$1 rootfs=$2 work arg cmd=() tar; tar=$(archive "$1")
    shift 2
    for arg in "$@"; do cmd+=(--config.cmd "$arg"); done
    if [ ! -s "$tar" ]; then
        mkdir -p "$BETA9_CACHE/images"
        work=$(mktemp -d "$BETA9_CACHE/oci.XXXXXX")
        umoci init --layout "$work/layout"
        umoci new --image "$work/layout:latest"
        umoci unpack --rootless --image "$work/layout:latest" "$work/bundle" >/dev/null
        cp -a "$rootfs/." "$work/bundle/rootfs/"
        umoci repack --image "$work/layout:latest" "$work/bundle"
        umoci config --image "$work/layout:latest" "${cmd[@]}" \
            --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
        tar -C "$work/layout" -cf "$tar.new" . && mv "$tar.new" "$tar"
        rm -rf "$work"
    fi
    ctr_ images import --base-name "docker.io/$name" "$tar" >/dev/null
    ctr_ -n k8s.io images import --base-name "docker.io/$name" "$tar" >/dev/null
    if [ "$(revision "$name")" != 1 ]; then
        ctr_ images tag --force "docker.io/$name:latest" "docker.io/$name:r$(revision "$name")" >/dev/null
        ctr_ -n k8s.io images tag --force "docker.io/$name:latest" "docker.io/$name:r$(revision "$name")" >/dev/null
    fi
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
    done_ beta9/busybox && return 0
    local r; r=$(mktemp -d "$BETA9_CACHE/busybox.XXXXXX")
    busybox_rootfs "$r"
    import_rootfs beta9/busybox "$r" /bin/sh
    rm -rf "$r"
}

pause() {
    done_ beta9/pause && return 0
    local r; r=$(mktemp -d "$BETA9_CACHE/pause.XXXXXX")
    busybox_rootfs "$r"
    import_rootfs beta9/pause "$r" /bin/sleep 2147483647
    rm -rf "$r"
}

# A Docker image from a Debian suite: debootstrap minbase into the cache (once), then imported.
#   docker_image SUITE IMAGE PACKAGES
docker_image() {
    local suite=$1 name=$2 pkgs=$3 r log=$BETA9_CACHE/debootstrap-$1.log
    done_ "$name" && return 0
    r=$(rootfs_dir "$suite" "$name")
    if [ ! -e "$r/.complete" ]; then
        rm -rf "$r" "$(archive "$name")"
        debootstrap --variant=minbase --include="$pkgs" "$suite" "$r" >"$log" 2>&1 \
            || { tail -n 20 "$log" >&2; exit 1; }
        rm -rf "$r/var/cache/apt/archives/"*.deb "$r/var/lib/apt/lists/"*
        touch "$r/.complete"
    fi
    import_rootfs "$name" "$r" /bin/bash
}

# Where a suite's root filesystem is kept (tests/src/lib.rs `docker_rootfs` reads it there too).
rootfs_dir() {
    case $1 in
        bookworm) echo "$BETA9_CACHE/debian-rootfs" ;;
        *) echo "$BETA9_CACHE/$1$(suffix "$2")-rootfs" ;;
    esac
}

# bookworm: docker.io 20.10 with runc 1.1.5.
debian() { docker_image bookworm beta9/debian python3-minimal,docker.io,iptables,ca-certificates; }
# trixie: docker.io 26.1.5 (the CLI is its own package there) with runc 1.1.15, and Debian's
# docker-compose (2.26, the v2 plugin) and docker-buildx (0.13) as the platform's images have
# them (revision 2).
debian_trixie() { docker_image trixie beta9/debian-trixie python3-minimal,docker.io,docker-cli,docker-compose,docker-buildx,iptables,ca-certificates; }
# sid: docker.io 28.5.2 with runc 1.3, which refuses gVisor's /proc (the agent fails Start
# saying so); crun is there for a user who chooses it (README: "Docker inside the sandbox").
debian_sid() { docker_image sid beta9/debian-sid python3-minimal,docker.io,docker-cli,iptables,ca-certificates,crun; }

mkdir -p "$BETA9_CACHE"
[ $# -gt 0 ] || set -- busybox
for image in "$@"; do "${image//-/_}"; done
