#!/usr/bin/env bash
# A private containerd whose PATH holds the freshly built shim: its own root, state and socket,
# so it never touches a system containerd.  Usage: hack/containerd.sh start|stop|status
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

start() {
    install_bins
    mkdir -p "$BETA9_DEV" "$BETA9_DEV_ROOT"
    network_up
    if running; then return 0; fi
    cat >"$BETA9_DEV/config.toml" <<TOML
version = 2
root = "$BETA9_DEV_ROOT/containerd"
state = "$BETA9_DEV/state"
[grpc]
  address = "$CONTAINERD_ADDRESS"
[ttrpc]
  address = "$CONTAINERD_ADDRESS.ttrpc"
# Kubernetes' door: CRI with a "beta9" runtime handler (the README's snippet, plus test paths).
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "docker.io/beta9/pause:latest"
  # Root here lacks CAP_SYS_RESOURCE: CRI's -998 for the pause would fail every pod.
  restrict_oom_score_adj = true
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.beta9]
    runtime_type = "io.beta9.sandbox"
    pod_annotations = ["io.beta9.sandbox.*"]
    container_annotations = ["io.beta9.sandbox.*"]
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$BETA9_DEV/cni/conf"
TOML
    PATH="$BETA9_DEV/bin:$PATH" setsid containerd --config "$BETA9_DEV/config.toml" \
        >>"$BETA9_DEV/containerd.log" 2>&1 </dev/null &
    echo $! >"$pidfile"
    # Wait on the event itself: the API answering.
    for _ in $(seq 1 300); do
        if ctr_ version >/dev/null 2>&1; then
            # containerd only warns when a plugin fails to load; the pod tests need CRI.
            local plugins; plugins=$(ctr_ plugins ls)
            grep -q 'io.containerd.grpc.v1 *cri .* ok' <<<"$plugins" || {
                echo "containerd.sh: the CRI plugin did not load:" >&2
                grep 'failed to load plugin io.containerd.grpc.v1.cri' "$BETA9_DEV/containerd.log" | tail -n 1 >&2
                exit 1
            }
            echo "containerd.sh: containerd up at $CONTAINERD_ADDRESS"
            return 0
        fi
        running || break
        sleep 0.05
    done
    echo "containerd.sh: containerd did not come up; its log:" >&2
    tail -n 30 "$BETA9_DEV/containerd.log" >&2
    exit 1
}

stop() {
    running || { network_down; return 0; }
    local pid; pid=$(cat "$pidfile")
    kill "$pid"
    for _ in $(seq 1 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$pidfile"
    network_down
}

case "${1:-start}" in
    start) start ;;
    stop) stop ;;
    restart) stop; start ;;
    status) running && echo running || { echo stopped; exit 1; } ;;
    *) echo "usage: $0 start|stop|restart|status" >&2; exit 2 ;;
esac
