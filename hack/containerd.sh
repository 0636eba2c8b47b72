#!/usr/bin/env bash
# A private containerd whose PATH holds the freshly built shim: its own root, state and socket,
# so it never touches a system containerd.  Usage: hack/containerd.sh start|stop|restart|status
# BETA9_CONTAINERD=1.6|1.7|2.1 picks the version (hack/env.sh); start switches a running one.
set -euo pipefail
. "$(dirname "$0")/env.sh"

pidfile=$BETA9_DEV/containerd.pid
running() { [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }
registry_pidfile=$BETA9_DEV/registry.pid

# Pods get a network of their own on a bridge whose host side holds the gateway address, with
# host-local addresses and no route beyond the subnet (nothing is routed off the machine), and
# portmap for host ports. The bridge is made here so the test registry can listen on it.
network_up() {
    mkdir -p "$BETA9_DEV/cni/conf"
    rm -f "$BETA9_DEV"/cni/conf/*
    cat >"$BETA9_DEV/cni/conf/10-$BETA9_CNI_NETWORK.conflist" <<JSON
{
  "cniVersion": "1.0.0",
  "name": "$BETA9_CNI_NETWORK",
  "plugins": [
    {"type": "bridge", "bridge": "$BETA9_BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "$BETA9_SUBNET.0/24", "gateway": "$BETA9_SUBNET.1"}]]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
JSON
    if ! ip link show "$BETA9_BRIDGE" >/dev/null 2>&1; then
        ip link add "$BETA9_BRIDGE" type bridge
        ip addr add "$BETA9_SUBNET.1/24" dev "$BETA9_BRIDGE"
    fi
    ip link set "$BETA9_BRIDGE" up
    if ! { [ -s "$registry_pidfile" ] && kill -0 "$(cat "$registry_pidfile")" 2>/dev/null; }; then
        mkdir -p "$BETA9_DEV_ROOT/registry"
        cat >"$BETA9_DEV/registry.yml" <<YML
version: 0.1
log: {level: warn}
storage: {filesystem: {rootdirectory: $BETA9_DEV_ROOT/registry}, delete: {enabled: true}}
http: {addr: "$BETA9_REGISTRY"}
YML
        setsid "$BETA9_CACHE/docker-registry/usr/bin/docker-registry" serve "$BETA9_DEV/registry.yml" \
            >>"$BETA9_DEV/registry.log" 2>&1 </dev/null &
        echo $! >"$registry_pidfile"
        for _ in $(seq 1 200); do
            curl -fsS "http://$BETA9_REGISTRY/v2/" >/dev/null 2>&1 && break
            kill -0 "$(cat "$registry_pidfile")" 2>/dev/null || { echo "containerd.sh: the registry did not start:" >&2; tail -n 5 "$BETA9_DEV/registry.log" >&2; exit 1; }
            sleep 0.05
        done
    fi
}

# Everything network_up made, and what CNI keeps for the network (address reservations).
network_down() {
    if [ -s "$registry_pidfile" ]; then
        kill "$(cat "$registry_pidfile")" 2>/dev/null || true
        rm -f "$registry_pidfile"
    fi
    ip link del "$BETA9_BRIDGE" 2>/dev/null || true
    rm -rf "/var/lib/cni/networks/$BETA9_CNI_NETWORK"
}

install_bins() {
    mkdir -p "$BETA9_DEV/bin"
    local dir=$REPO/target/x86_64-unknown-linux-gnu/$BETA9_PROFILE
    [ -x "$dir/containerd-shim-beta9-sandbox" ] || { echo "containerd.sh: build first: $dir/containerd-shim-beta9-sandbox missing" >&2; exit 1; }
    # Copies, not links: a rebuild must not change a binary under a running shim.
    for b in containerd-shim-beta9-sandbox beta9-sandbox-agent; do
        [ -e "$dir/$b" ] && install -m 0755 "$dir/$b" "$BETA9_DEV/bin/$b.new" && mv -f "$BETA9_DEV/bin/$b.new" "$BETA9_DEV/bin/$b"
    done
    # The peer for benchmarks: runc's shim driving runsc with the same flags.
    cat >"$BETA9_DEV/bin/runsc-as-runc" <<'W'
#!/bin/sh
exec runsc --network=none --ignore-cgroups --platform=systrap "$@"
W
    chmod +x "$BETA9_DEV/bin/runsc-as-runc"
}

# containerd's config in the version's own schema. CRI: a "beta9" runtime handler (the
# README's snippet), the local pause image, the pods' CNI network, and no negative OOM score (root
# here lacks CAP_SYS_RESOURCE: CRI's -998 for the pause would fail every pod).
config() {
    local root=$BETA9_DEV_ROOT/containerd state=$BETA9_DEV/state runtime bin_dirs
    # Each version keeps a root of its own: 2.x migrates what it finds, and 1.6 could not read it back.
    [ "$BETA9_CONTAINERD" = 1.6 ] || { root=$root-$BETA9_CONTAINERD; state=$state-$BETA9_CONTAINERD; }
    [ "$BETA9_CONTAINERD" = 2.1 ] && echo 'version = 3' || echo 'version = 2'
    cat <<TOML
root = "$root"
state = "$state"
[grpc]
  address = "$CONTAINERD_ADDRESS"
[ttrpc]
  address = "$CONTAINERD_ADDRESS.ttrpc"
TOML
    if [ "$BETA9_CONTAINERD" = 2.1 ]; then
        # 2.x split CRI into the server, an images plugin and a runtime plugin.
        runtime='plugins."io.containerd.cri.v1.runtime"' bin_dirs='bin_dirs = ["/usr/lib/cni"]'
        cat <<TOML
[plugins."io.containerd.grpc.v1.cri"]
  stream_server_port = "0"
[plugins."io.containerd.cri.v1.images".pinned_images]
  sandbox = "docker.io/beta9/pause:latest"
[$runtime]
  restrict_oom_score_adj = true
TOML
    else
        runtime='plugins."io.containerd.grpc.v1.cri"' bin_dirs='bin_dir = "/usr/lib/cni"'
        cat <<TOML
[$runtime]
  stream_server_port = "0"
  sandbox_image = "docker.io/beta9/pause:latest"
  restrict_oom_score_adj = true
TOML
    fi
    cat <<TOML
  [$runtime.containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
  [$runtime.containerd.runtimes.beta9]
    runtime_type = "io.beta9.sandbox"
    pod_annotations = ["io.beta9.sandbox.*"]
    container_annotations = ["io.beta9.sandbox.*"]
  [$runtime.cni]
    $bin_dirs
    conf_dir = "$BETA9_DEV/cni/conf"
TOML
}

start() {
    install_bins
    mkdir -p "$BETA9_DEV" "$BETA9_DEV_ROOT"
    netns_dir_shared
    network_up
    if running; then
        local was; was=$(cat "$BETA9_DEV/containerd.version" 2>/dev/null || echo 1.6)
        [ "$was" = "$BETA9_CONTAINERD" ] && return 0
        echo "containerd.sh: the private containerd runs $was; restarting it with $BETA9_CONTAINERD"
        stop_containerd
    fi
    [ -x "$CONTAINERD_BIN/containerd" ] || { echo "containerd.sh: containerd $BETA9_CONTAINERD is missing at $CONTAINERD_BIN: run hack/install-deps.sh" >&2; exit 1; }
    config >"$BETA9_DEV/config.toml"
    echo "$BETA9_CONTAINERD" >"$BETA9_DEV/containerd.version"
    # The version's own containerd-shim-runc-v2 (the benchmark's peer) comes first on its PATH.
    PATH="$BETA9_DEV/bin:$CONTAINERD_BIN:$PATH" setsid "$CONTAINERD_BIN/containerd" --config "$BETA9_DEV/config.toml" \
        >>"$BETA9_DEV/containerd.log" 2>&1 </dev/null &
    echo $! >"$pidfile"
    # Wait on the event itself: the API answering.
    for _ in $(seq 1 300); do
        if ctr_ version >/dev/null 2>&1; then
            # containerd only warns when a plugin fails to load; the pod tests need CRI.
            local plugins; plugins=$(ctr_ plugins ls)
            grep -q 'io.containerd.grpc.v1 *cri .* ok' <<<"$plugins" || {
                echo "containerd.sh: the CRI plugin did not load:" >&2
                grep 'failed to load plugin' "$BETA9_DEV/containerd.log" | grep cri | tail -n 3 >&2
                exit 1
            }
            echo "containerd.sh: containerd $BETA9_CONTAINERD ($("$CONTAINERD_BIN/containerd" --version | awk '{print $3}')) up at $CONTAINERD_ADDRESS"
            return 0
        fi
        running || break
        sleep 0.05
    done
    echo "containerd.sh: containerd did not come up; its log:" >&2
    tail -n 30 "$BETA9_DEV/containerd.log" >&2
    exit 1
}

stop_containerd() {
    running || return 0
    local pid; pid=$(cat "$pidfile")
    kill "$pid"
    for _ in $(seq 1 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$pidfile"
}

stop() {
    stop_containerd
    network_down
}

case "${1:-start}" in
    start) start ;;
    stop) stop ;;
    restart) stop; start ;;
    status) running && echo running || { echo stopped; exit 1; } ;;
    *) echo "usage: $0 start|stop|restart|status" >&2; exit 2 ;;
esac
