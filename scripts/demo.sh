#!/usr/bin/env bash
# The main job, for now: builds Strata, creates a demo image and drives it with strata-io,
# checking the result with qemu-img. (The daemon replaces this with a live graph and a QMP
# socket once it exists.)
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "$(nproc)"

demo=${STRATA_DEMO_DIR:-/tmp/strata-demo}
mkdir -p "$demo"
img=$demo/disk.raw
rm -f "$img"
truncate -s 64M "$img"
io=build/bin/strata-io

echo
echo "== A 64 MiB raw image at $img, written and read back through Strata =="
"$io" -f raw -c "write -P 0xab 0 1M" -c "write -z 4M 1M" -c "write -P 0x5a 10M 64k" \
      -c "read -P 0xab 0 1M" -c "read -P 0x5a 10M 64k" -c "flush" -c "map" "$img"
echo
echo "== qemu-img sees the same data =="
qemu-io -f raw -r -c "read -P 0xab 0 1M" -c "read -P 0x5a 10M 64k" "$img"
echo
echo "== The same I/O through io_uring and the thread pool, 4 KiB reads at depth 16 =="
build/bin/strata-img bench -f raw -i io_uring -c 200000 -d 16 "$img"
build/bin/strata-img bench -f raw -i threads -c 200000 -d 16 "$img"
cat <<EOT

Try it yourself:
  $io -f raw -c 'write -P 0x11 0 4k' -c 'read -v 0 64' $img
  $io -f raw -t none -c 'read -P 0xab 0 1M' $img         # O_DIRECT, padded as needed
  build/bin/strata-img bench -f raw -w -d 16 $img         # compare with qemu-img bench
  bench/io_bench.sh                                       # side-by-side against qemu-img
EOT
