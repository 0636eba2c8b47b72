#!/usr/bin/env bash
# Installs everything the shim needs on Debian bookworm, idempotently.
set -euo pipefail

[ "$(id -u)" = 0 ] || { echo "install-deps: run as root" >&2; exit 1; }

# runsc from bookworm is too old for docker-in-gVisor; backports carries a usable one.
src=/etc/apt/sources.list.d/beta9-bookworm-backports.sources
if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    uri=$(grep -rhs '^URIs:.*debian/\?$' /etc/apt/sources.list.d/ | head -n1 | awk '{print $2}')
    [ -n "$uri" ] || uri=$(grep -hs '^deb .*debian/\? bookworm' /etc/apt/sources.list | head -n1 | awk '{print $2}')
    [ -n "$uri" ] || uri=http://deb.debian.org/debian
    cat >"$src" <<SRC
Types: deb
URIs: $uri
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    rm -f /var/lib/beta9-apt-updated
fi

# protobuf-compiler: the CRI client of the pod tests generates its bindings at build time;
# containernetworking-plugins: CRI's pod networks (bridge, host-local, portmap, loopback);
# iptables: portmap's rules on the host.
pkgs=(containerd runc umoci skopeo busybox-static debootstrap iproute2 procps util-linux python3 curl ca-certificates
    protobuf-compiler containernetworking-plugins iptables)
need=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || need+=("$p"); done
have_runsc() { dpkg -s runsc 2>/dev/null | grep -q '^Version: .*2024'; }

if [ ${#need[@]} -gt 0 ] || ! have_runsc; then
    [ -e /var/lib/beta9-apt-updated ] || { apt-get update -qq && touch /var/lib/beta9-apt-updated; }
    [ ${#need[@]} -eq 0 ] || apt-get install -y -qq --no-install-recommends "${need[@]}"
    have_runsc || apt-get install -y -qq --no-install-recommends -t bookworm-backports runsc
fi

# The registry the network tests pull from: Debian's docker-registry, unpacked into the cache
# (installing it would start a system service on :5000); hack/containerd.sh runs it privately.
. "$(dirname "$0")/env.sh"
if [ ! -x "$BETA9_CACHE/docker-registry/usr/bin/docker-registry" ]; then
    [ -e /var/lib/beta9-apt-updated ] || { apt-get update -qq && touch /var/lib/beta9-apt-updated; }
    mkdir -p "$BETA9_CACHE/debs" && rm -rf "$BETA9_CACHE/docker-registry"
    (cd "$BETA9_CACHE/debs" && apt-get download -qq -o APT::Sandbox::User=root docker-registry)
    dpkg -x "$(ls -t "$BETA9_CACHE"/debs/docker-registry_*.deb | head -n1)" "$BETA9_CACHE/docker-registry"
fi

# The Debian package may start a system containerd; ours is private and never touches it.
echo "install-deps: containerd $(containerd --version | awk '{print $3}'), runsc $(runsc --version | head -n1 | awk '{print $3}')"
