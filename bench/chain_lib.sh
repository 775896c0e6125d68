# Shared by the job benchmarks (commit_bench.sh, stream_bench.sh): the qcow2 chain they work on,
# and the helpers every side-by-side run needs. Source it; it defines functions only.

# qemu-io commands writing `mb` MiB in extents of 64 KiB..1 MiB at distinct places in 1 GiB,
# from a seeded shuffle (the same work on every run and for every tool; each extent has its own
# pattern byte).
extents() {
  python3 - "$1" "$2" <<'PY'
import random, sys
mb, seed = int(sys.argv[1]), int(sys.argv[2])
rng = random.Random(seed)
K64 = 64 << 10
slots = list(range((1 << 30) // (1 << 20)))  # 1 MiB slots; one extent per slot at most
rng.shuffle(slots)
left = mb << 20
for i, slot in enumerate(slots):
    if left <= 0:
        break
    length = min(rng.randint(1, 16) * K64, left)
    offset = (slot << 20) + rng.randint(0, (1 << 20) // K64 - length // K64) * K64
    print(f"write -P {1 + i % 255} {offset} {length}")
    left -= length
PY
}

# make_chain DIR BASE_MB TOP_MB QEMU_IMG: DIR/base.qcow2 (1 GiB, BASE_MB of data) and
# DIR/top.qcow2 over it (TOP_MB of data).
make_chain() {
  local dir=$1 base_mb=$2 top_mb=$3 qemu_img=$4
  (
    cd "$dir"
    "$qemu_img" create -q -f qcow2 base.qcow2 1G
    extents "$base_mb" 1 | qemu-io -f qcow2 base.qcow2 >/dev/null
    "$qemu_img" create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2 1G
    extents "$top_mb" 2 | qemu-io -f qcow2 top.qcow2 >/dev/null
  )
}

drop_caches() {
  sync
  if [ -w /proc/sys/vm/drop_caches ]; then echo 3 >/proc/sys/vm/drop_caches; fi
}

median() {
  sort -n | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'
}
