#!/usr/bin/env bash
# Side-by-side commit benchmark: strata-img commit against qemu-img commit.
#
#   bench/commit_bench.sh [path/to/strata-img]
#
# A 1 GiB qcow2 base holding BASE_MB of data and a qcow2 overlay holding TOP_MB of data, both
# written with qemu-io in extents of 64 KiB to 1 MiB at places spread over the whole disk (a
# seeded shuffle, so every run and both tools get the same work; each extent has its own
# pattern byte). Each run commits fresh copies of the pair (the overlay is emptied afterwards,
# as plain `commit` does), with the page cache dropped before it when /proc/sys/vm/drop_caches
# is writable. The tools alternate run by run, so drifting machine load hits both alike; the
# result is the median wall time of each and the ratio qemu/strata (> 1: Strata is faster).
# After the first run of each tool the two bases are compared, so both did the same work.
#
# Environment: REPS (runs per tool, default 5), BASE_MB (default 512), TOP_MB (default 256),
# DIR (default /tmp: a real file system, where the page cache matters), CACHE (the -t mode,
# default writeback: qemu-img commit's default), QEMU_IMG (default qemu-img).
set -euo pipefail

strata_img=${1:-$(dirname "$0")/../build/bin/strata-img}
qemu_img=${QEMU_IMG:-qemu-img}
reps=${REPS:-5}
base_mb=${BASE_MB:-512}
top_mb=${TOP_MB:-256}
dir=${DIR:-/tmp}
cache=${CACHE:-writeback}

for tool in "$strata_img" "$qemu_img" qemu-io python3; do
  if ! command -v "$tool" >/dev/null; then
    echo "commit_bench: $tool not found" >&2
    exit 1
  fi
done
# The commits run in the images' directory.
if [[ $strata_img == */* ]]; then strata_img=$(realpath "$strata_img"); fi

work=$(mktemp -d "$dir/commit-bench-XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir "$work/pristine" "$work/run"

source "$(dirname "$0")/chain_lib.sh"

echo "commit_bench: building a 1 GiB base with ${base_mb} MiB and an overlay with ${top_mb} MiB"
make_chain "$work/pristine" "$base_mb" "$top_mb" "$qemu_img"

# Prints the wall time in seconds of one commit of fresh copies.
run_once() {
  local tool=$1
  rm -f "$work/run/"*
  cp "$work/pristine/base.qcow2" "$work/pristine/top.qcow2" "$work/run/"
  drop_caches
  local start end
  start=$(date +%s.%N)
  (cd "$work/run" && "$tool" commit -q -t "$cache" -f qcow2 top.qcow2)
  end=$(date +%s.%N)
  echo "$start $end" | awk '{printf "%.3f\n", $2 - $1}'
}

[ -w /proc/sys/vm/drop_caches ] || echo "commit_bench: cannot drop the page cache (not root?)"
# The machine may be shared: the load average goes with the figures.
echo "commit_bench: load average before the runs: $(cut -d' ' -f1-3 /proc/loadavg)"
qemu_times=()
strata_times=()
for ((i = 0; i < reps; i++)); do
  qemu_times+=("$(run_once "$qemu_img")")
  if [ "$i" = 0 ]; then cp "$work/run/base.qcow2" "$work/qemu-base.qcow2"; fi
  strata_times+=("$(run_once "$strata_img")")
  if [ "$i" = 0 ]; then
    "$qemu_img" compare -q -f qcow2 -F qcow2 "$work/qemu-base.qcow2" "$work/run/base.qcow2" ||
      { echo "commit_bench: the bases differ after the commits" >&2; exit 1; }
    rm -f "$work/qemu-base.qcow2"
  fi
  echo "run $((i + 1)): qemu-img ${qemu_times[-1]} s, strata-img ${strata_times[-1]} s"
done

qemu_median=$(printf '%s\n' "${qemu_times[@]}" | median)
strata_median=$(printf '%s\n' "${strata_times[@]}" | median)
printf '%-12s %10s\n' tool "median s"
printf '%-12s %10s\n' qemu-img "$qemu_median" strata-img "$strata_median"
echo "$qemu_median $strata_median" | awk '{printf "ratio qemu/strata: %.2fx\n", $1 / $2}'
echo "load average after the runs: $(cut -d' ' -f1-3 /proc/loadavg)"
