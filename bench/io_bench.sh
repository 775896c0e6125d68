#!/usr/bin/env bash
# Side-by-side I/O benchmark: strata-img bench against qemu-img bench.
#
#   bench/io_bench.sh [path/to/strata-img]
#
# On a raw image in tmpfs (/dev/shm), 4 KiB sequential reads and writes at queue depth 1 and 16,
# with aio=io_uring and aio=threads. The two tools alternate run by run (so drifting machine
# load hits both alike), each row is repeated, and the table gives the median IOPS of each tool
# and the ratio strata/qemu.
#
# Environment: COUNT (requests per run, default 50000), REPS (runs per tool and row, default 5),
# SIZE_MB (image size, default 256), DIR (default /dev/shm), QEMU_IMG (default qemu-img).
set -euo pipefail

strata_img=${1:-$(dirname "$0")/../build/bin/strata-img}
qemu_img=${QEMU_IMG:-qemu-img}
count=${COUNT:-50000}
reps=${REPS:-5}
size_mb=${SIZE_MB:-256}
dir=${DIR:-/dev/shm}

for tool in "$strata_img" "$qemu_img"; do
  if ! command -v "$tool" >/dev/null; then
    echo "io_bench: $tool not found" >&2
    exit 1
  fi
done

image=$(mktemp "$dir/io-bench-XXXXXX.raw")
trap 'rm -f "$image"' EXIT
# Real data, so that reads copy pages rather than find holes.
dd if=/dev/urandom of="$image" bs=1M count="$size_mb" status=none

# Prints the IOPS of one run: count / the "Run completed in X seconds." time.
run_once() {
  local tool=$1 op=$2 depth=$3 aio=$4
  local flags=(bench -f raw -c "$count" -d "$depth" -i "$aio" -s 4k)
  if [ "$op" = write ]; then flags+=(-w); fi
  local secs
  secs=$("$tool" "${flags[@]}" "$image" | sed -n 's/^Run completed in \([0-9.]*\) seconds\.$/\1/p')
  if [ -z "$secs" ]; then
    echo "io_bench: $tool ${flags[*]} failed" >&2
    exit 1
  fi
  awk -v c="$count" -v s="$secs" 'BEGIN { if (s <= 0) s = 0.0005; printf "%.0f\n", c / s }'
}

median() {
  sort -n | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2];
                                      else printf "%.0f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

printf '%-6s %-6s %-9s %14s %16s %12s\n' op depth aio "qemu-img IOPS" "strata-img IOPS" strata/qemu
for op in read write; do
  for depth in 1 16; do
    for aio in io_uring threads; do
      q_runs=() s_runs=()
      for ((i = 0; i < reps; i++)); do
        q_runs+=("$(run_once "$qemu_img" "$op" "$depth" "$aio")")
        s_runs+=("$(run_once "$strata_img" "$op" "$depth" "$aio")")
      done
      q=$(printf '%s\n' "${q_runs[@]}" | median)
      s=$(printf '%s\n' "${s_runs[@]}" | median)
      ratio=$(awk -v s="$s" -v q="$q" 'BEGIN { printf "%.2f", s / q }')
      printf '%-6s %-6s %-9s %14s %16s %11sx\n' "$op" "$depth" "$aio" "$q" "$s" "$ratio"
    done
  done
done
echo "($reps runs per tool and row, $count requests of 4 KiB each, ${size_mb} MiB raw image in $dir)"
