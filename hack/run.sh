#!/usr/bin/env bash
# The main job on a fresh machine: install what is needed, build the shim, start a private
# containerd whose PATH holds it, build the images, and run a gVisor sandbox through it.
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/env.sh

hack/install-deps.sh
cargo build --release --workspace --bins
hack/containerd.sh start
hack/build-images.sh busybox debian

id=beta9-demo
ctr_ task rm -f "$id" >/dev/null 2>&1 || true
ctr_ containers rm "$id" >/dev/null 2>&1 || true
echo "== ctr run --rm: a command in a fresh gVisor sandbox"
ctr_ run --rm --runtime io.beta9.sandbox docker.io/beta9/busybox:latest "$id" sh -c 'echo "hello from $(uname -s) $(uname -r) (gVisor)"'

echo "== ctr run -d with io.beta9.sandbox.docker=true: returns once dockerd answers"
start=$(date +%s%N)
ctr_ run -d --runtime io.beta9.sandbox --annotation io.beta9.sandbox.docker=true \
    --mount "type=bind,src=$BETA9_CACHE/busybox-rootfs.tar,dst=/images/busybox.tar,options=rbind:ro" \
    docker.io/beta9/debian:latest "$id" >/dev/null
echo "   ready after $(( ($(date +%s%N) - start) / 1000000 )) ms"
ctr_ task exec --exec-id version "$id" docker version --format 'docker {{.Server.Version}} answering inside the sandbox'
ctr_ task exec --exec-id import "$id" docker import /images/busybox.tar busybox >/dev/null
ctr_ task exec --exec-id run "$id" docker run --rm busybox sh -c 'echo "a nested container says hello from $(hostname)"'
ctr_ task exec --exec-id status "$id" /.beta9/agent status | head -n 5
ctr_ task ls
cat <<MSG
== running: Docker sandbox '$id' under containerd at $CONTAINERD_ADDRESS
   ctr --address $CONTAINERD_ADDRESS task exec --exec-id x $id docker ps
   ctr --address $CONTAINERD_ADDRESS task exec --exec-id s $id /.beta9/agent status
   ctr --address $CONTAINERD_ADDRESS task kill $id && ctr --address $CONTAINERD_ADDRESS task rm $id
   hack/containerd.sh stop    # stops the private containerd
MSG
