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
echo "== ctr run --rm: a command in a fresh sandbox"
ctr_ run --rm --runtime io.beta9.sandbox docker.io/beta9/busybox:latest "$id" sh -c 'echo "hello from $(uname -s) $(uname -r) (gVisor)"'
echo "== ctr run -d + ctr task exec: a sandbox that stays up"
ctr_ run -d --runtime io.beta9.sandbox docker.io/beta9/busybox:latest "$id" sleep 3600
ctr_ task exec --exec-id demo "$id" sh -c 'echo "exec inside: $(cat /proc/version)"'
ctr_ task ls
cat <<MSG
== running: sandbox '$id' under containerd at $CONTAINERD_ADDRESS
   ctr --address $CONTAINERD_ADDRESS task exec --exec-id x $id sh
   ctr --address $CONTAINERD_ADDRESS task kill $id && ctr --address $CONTAINERD_ADDRESS task rm $id
   hack/containerd.sh stop    # stops the private containerd
MSG
