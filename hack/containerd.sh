#!/usr/bin/env bash
# A private containerd whose PATH holds the freshly built shim: its own root, state and socket,
# so it never touches a system containerd.  Usage: hack/containerd.sh start|stop|status
set -euo pipefail
. "$(dirname "$0")/env.sh"

pidfile=$BETA9_DEV/containerd.pid
running() { [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

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
    if running; then return 0; fi
    mkdir -p "$BETA9_DEV" "$BETA9_DEV_ROOT"
    # CNI for pods with their own network namespace: a test plugin that only adds an eth0 (a veth pair)
    # inside the pod's namespace (hack/cni/beta9-test-veth), so the host's network is never touched.
    mkdir -p "$BETA9_DEV/cni/bin" "$BETA9_DEV/cni/conf"
    install -m 0755 "$REPO/hack/cni/beta9-test-veth" "$BETA9_DEV/cni/bin/beta9-test-veth"
    ln -sf /usr/lib/cni/loopback "$BETA9_DEV/cni/bin/loopback"
    cat >"$BETA9_DEV/cni/conf/10-beta9-test-veth.conflist" <<JSON
{"cniVersion": "0.4.0", "name": "beta9-test-veth", "plugins": [{"type": "beta9-test-veth"}]}
JSON
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
    bin_dir = "$BETA9_DEV/cni/bin"
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
    running || return 0
    local pid; pid=$(cat "$pidfile")
    kill "$pid"
    for _ in $(seq 1 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$pidfile"
}

case "${1:-start}" in
    start) start ;;
    stop) stop ;;
    restart) stop; start ;;
    status) running && echo running || { echo stopped; exit 1; } ;;
    *) echo "usage: $0 start|stop|restart|status" >&2; exit 2 ;;
esac
