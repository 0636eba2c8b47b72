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

# Packages of a newer Debian suite, for the containerd matrix and the Docker Engine client: fetched
# with apt's own client through a sources list, lists, cache and status of their own (the system's
# apt state is never read or written), and unpacked with dpkg -x into $BETA9_CACHE/DIR.
#   from_suite SUITE DIR PACKAGE...
from_suite() {
    local suite=$1 dir=$BETA9_CACHE/$2 apt=$BETA9_CACHE/apt/$1
    shift 2
    [ -e "$dir/.complete" ] && return 0
    uri=${uri:-$(grep -rhs '^URIs:.*debian/\?$' /etc/apt/sources.list.d/ | head -n1 | awk '{print $2}')}
    [ -n "$uri" ] || uri=http://deb.debian.org/debian
    mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/debs" "$apt/none"
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $uri $suite main" >"$apt/sources.list"
    : >"$apt/status"
    local o=(-qq -o "Dir::Etc::sourcelist=$apt/sources.list" -o "Dir::Etc::sourceparts=$apt/none" -o "Dir::State::Lists=$apt/lists"
        -o "Dir::Cache=$apt/cache" -o "Dir::State::status=$apt/status" -o "Dir::Etc::preferencesparts=$apt/none"
        -o APT::Sandbox::User=root -o Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false
        -o Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false
        -o Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false)
    apt-get "${o[@]}" update
    rm -f "$apt"/debs/*.deb
    (cd "$apt/debs" && apt-get "${o[@]}" download "$@")
    rm -rf "$dir" && mkdir -p "$dir"
    for deb in "$apt"/debs/*.deb; do dpkg -x "$deb" "$dir"; done
    touch "$dir/.complete"
    echo "install-deps: $suite's $* unpacked into $dir"
}
# The containerd matrix (hack/containerd.sh, BETA9_CONTAINERD): 1.6 is the system's package.
from_suite trixie containerd-1.7 containerd
from_suite sid containerd-2.1 containerd
# Docker Engine as a containerd client (tests/tests/docker_engine.rs): trixie's dockerd and CLI.
from_suite trixie docker-engine docker.io docker-cli

# The node installer's package and manifests (hack/package.sh, hack/check-deploy.sh): lintian
# and python3-venv from Debian, cargo-deb from crates.io, kubernetes-validate from PyPI in a
# virtualenv of the cache (the system's Python is left alone); openssl for the test API server's
# certificate (installer/tests/node.rs).
if ! dpkg -s lintian python3-venv openssl >/dev/null 2>&1; then
    [ -e /var/lib/beta9-apt-updated ] || { apt-get update -qq && touch /var/lib/beta9-apt-updated; }
    apt-get install -y -qq --no-install-recommends lintian python3-venv openssl
fi
command -v cargo-deb >/dev/null || cargo install --locked --version 3.8.0 cargo-deb
if [ ! -x "$BETA9_CACHE/kubernetes-validate/bin/kubernetes-validate" ]; then
    rm -rf "$BETA9_CACHE/kubernetes-validate"
    /usr/bin/python3 -m venv "$BETA9_CACHE/kubernetes-validate"
    "$BETA9_CACHE/kubernetes-validate/bin/pip" install -q --disable-pip-version-check kubernetes-validate==1.37.0
fi

# The Debian package may start a system containerd; ours is private and never touches it.
echo "install-deps: containerd $(containerd --version | awk '{print $3}'), runsc $(runsc --version | head -n1 | awk '{print $3}')"
