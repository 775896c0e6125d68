#!/usr/bin/env bash
# The main job, for now: builds Strata, creates a qcow2 base and overlay with strata-img, writes
# through strata-io, and shows the chain with strata-img info/map/check beside qemu-img. (The daemon replaces this with a live graph and a QMP
# socket once it exists.)
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "$(nproc)"

demo=${STRATA_DEMO_DIR:-/tmp/strata-demo}
mkdir -p "$demo"
root=$(pwd)
cd "$demo"
rm -f base.qcow2 overlay.qcow2
img=$root/build/bin/strata-img
io=$root/build/bin/strata-io

echo
echo "== A qcow2 base and an overlay on it, created by Strata =="
"$img" create -f qcow2 base.qcow2 64M
"$img" create -f qcow2 -b base.qcow2 -F qcow2 overlay.qcow2

echo
echo "== Data in the base, then copy-on-write writes in the overlay =="
"$io" -f qcow2 -c "write -P 0xab 0 1M" -c "write -c -P 0x11 8M 128k" base.qcow2
"$io" -f qcow2 -c "write -P 0x5a 4k 8k" -c "write -z 512k 64k" \
      -c "read -P 0xab 0 4k" -c "read -P 0x5a 4k 8k" -c "read -P 0xab 12k 500k" overlay.qcow2

echo
echo "== What Strata and qemu-img say about the chain =="
"$img" info -f qcow2 --backing-chain overlay.qcow2
"$img" map -f qcow2 --output=json overlay.qcow2
"$img" check -f qcow2 overlay.qcow2
qemu-img check overlay.qcow2
qemu-img info --backing-chain overlay.qcow2 | grep -E "^(image|file format|backing file):" && \
  qemu-io -f qcow2 -r -c "read -P 0x5a 4k 8k" -c "read -P 0x11 8M 128k" overlay.qcow2

echo
echo "== Raw I/O through io_uring and the thread pool, 4 KiB reads at depth 16 =="
truncate -s 64M disk.raw
"$img" bench -f raw -i io_uring -c 200000 -d 16 disk.raw
"$img" bench -f raw -i threads -c 200000 -d 16 disk.raw
cat <<EOT

Try it yourself (in $demo):
  $io -f qcow2 -c 'write -P 0x11 0 4k' -c 'read -v 0 64' overlay.qcow2
  $img info -f qcow2 --output=json overlay.qcow2
  $img map --output=json -f qcow2 overlay.qcow2
  $img check -f qcow2 -r all overlay.qcow2
  $root/bench/io_bench.sh                                # side-by-side against qemu-img
EOT
