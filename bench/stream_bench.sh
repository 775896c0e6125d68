#!/usr/bin/env bash
# Side-by-side block-stream benchmark: strata-daemon against qemu-storage-daemon.
#
#   bench/stream_bench.sh [path/to/strata-daemon]
#
# A 1 GiB qcow2 base holding BASE_MB of data and a qcow2 overlay holding TOP_MB of data, both
# written with qemu-io in extents of 64 KiB to 1 MiB at places spread over the whole disk (a
# seeded shuffle, so every run and both daemons get the same work; each extent has its own
# pattern byte). Each run starts a daemon on fresh copies of the pair, with the page cache
# dropped before it when /proc/sys/vm/drop_caches is writable: four --blockdev nodes (a file
# node and a qcow2 node per image, the overlay's qcow2 node named `top` with `backing=base`)
# and a QMP monitor on a Unix socket. bench/qmp_bench.py then sends
# `block-stream {"job-id": "s", "device": "top"}` and times from the command to the job's
# JOB_STATUS_CHANGE "concluded" event (or its BLOCK_JOB_COMPLETED, whichever is first), then
# quits the daemon. Start-up is not timed. Each run also shows, in brackets, the time to the
# job's "waiting" status (the copying alone, without the graph change at the end: the top's
# header rewritten without a backing file) and the time from the command to the daemon's exit
# after `quit` ("on disk"): Strata flushes the copied data before it rewrites the header, so its
# job ends with the data on disk, while qemu-storage-daemon's ends with it in the page cache and
# flushes it when it closes; only the "on disk" figure compares the same work. The daemons
# alternate run by run, so drifting machine load hits both alike; the result is the median time
# of each and the ratios qsd/strata (> 1: Strata is faster).
# After the first run of each daemon, both streamed tops must have no backing file any more
# and read the same as the original chain (qemu-img compare against the pristine overlay, which
# reads through its base), and the two tops must compare equal; otherwise the script fails.
#
# Environment: REPS (runs per daemon, default 5), BASE_MB (default 512), TOP_MB (default 64),
# DIR (default /tmp: a real file system, where the page cache matters), CACHE (the file nodes'
# cache.direct: "off", the default, or "on"), QSD (default qemu-storage-daemon), QEMU_IMG
# (default qemu-img), TIMEOUT (seconds one stream may take, default 600).
set -euo pipefail

strata_daemon=${1:-$(dirname "$0")/../build/bin/strata-daemon}
qsd=${QSD:-qemu-storage-daemon}
qemu_img=${QEMU_IMG:-qemu-img}
reps=${REPS:-5}
base_mb=${BASE_MB:-512}
top_mb=${TOP_MB:-64}
dir=${DIR:-/tmp}
direct=${CACHE:-off}
timeout=${TIMEOUT:-600}
helper=$(realpath "$(dirname "$0")/qmp_bench.py")

for tool in "$strata_daemon" "$qsd" "$qemu_img" qemu-io python3; do
  if ! command -v "$tool" >/dev/null; then
    echo "stream_bench: $tool not found" >&2
    exit 1
  fi
done

work=$(mktemp -d "$dir/stream-bench-XXXXXX")
daemon_pid=
cleanup() {
  if [ -n "$daemon_pid" ]; then kill "$daemon_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
mkdir "$work/pristine" "$work/run"

source "$(dirname "$0")/chain_lib.sh"

echo "stream_bench: building a 1 GiB base with ${base_mb} MiB and an overlay with ${top_mb} MiB"
make_chain "$work/pristine" "$base_mb" "$top_mb" "$qemu_img"

# Waits (up to 30 s) for the daemon to write its pid file; fails if it exits first.
wait_ready() {
  local pidfile=$1
  for ((t = 0; t < 300; t++)); do
    if [ -s "$pidfile" ]; then return 0; fi
    if ! kill -0 "$daemon_pid" 2>/dev/null; then
      echo "stream_bench: the daemon exited during start-up" >&2
      exit 1
    fi
    sleep 0.1
  done
  echo "stream_bench: the daemon did not get ready in 30 s" >&2
  exit 1
}

# Sets `elapsed` to the seconds one block-stream of fresh copies took in daemon `tool`, and
# `copying` to the seconds until the job was waiting. (Not
# run in a subshell, so the EXIT trap still sees a daemon left running by a failure.)
run_once() {
  local tool=$1 run=$work/run
  rm -f "$run/"*
  cp "$work/pristine/base.qcow2" "$work/pristine/top.qcow2" "$run/"
  drop_caches
  local cache="cache.direct=$direct"
  "$tool" \
    --blockdev "driver=file,node-name=base-file,filename=$run/base.qcow2,$cache" \
    --blockdev driver=qcow2,node-name=base,file=base-file,read-only=on \
    --blockdev "driver=file,node-name=top-file,filename=$run/top.qcow2,$cache" \
    --blockdev driver=qcow2,node-name=top,file=top-file,backing=base \
    --chardev "socket,path=$run/qmp.sock,server=on,wait=off,id=m" --monitor m \
    --pidfile "$run/daemon.pid" >"$work/daemon.log" 2>&1 &
  daemon_pid=$!
  wait_ready "$run/daemon.pid"
  local times
  times=$(python3 "$helper" "$run/qmp.sock" block-stream '{"job-id": "s", "device": "top"}' \
    "$timeout") || { cat "$work/daemon.log" >&2; exit 1; }
  local sent
  read -r elapsed copying sent <<<"$times"
  wait "$daemon_pid" || { echo "stream_bench: $tool exited with $?" >&2; exit 1; }
  durable=$(echo "$sent $(date +%s.%N)" | awk '{printf "%.3f\n", $2 - $1}')
  daemon_pid=
}

# Fails unless the streamed top in $work/run has no backing file and reads like the chain.
check_top() {
  local name=$1
  if "$qemu_img" info -U --output=json "$work/run/top.qcow2" | grep -q '"backing-filename"'; then
    echo "stream_bench: $name left a backing file in the top" >&2
    exit 1
  fi
  (cd "$work/pristine" &&
    "$qemu_img" compare -q -f qcow2 -F qcow2 top.qcow2 "$work/run/top.qcow2") ||
    { echo "stream_bench: $name's top does not read like the original chain" >&2; exit 1; }
}

[ -w /proc/sys/vm/drop_caches ] || echo "stream_bench: cannot drop the page cache (not root?)"
qsd_times=()
strata_times=()
qsd_copy=()
strata_copy=()
qsd_durable=()
strata_durable=()
for ((i = 0; i < reps; i++)); do
  run_once "$qsd"
  qsd_times+=("$elapsed")
  qsd_copy+=("$copying")
  qsd_durable+=("$durable")
  if [ "$i" = 0 ]; then
    check_top qemu-storage-daemon
    cp "$work/run/top.qcow2" "$work/qsd-top.qcow2"
  fi
  run_once "$strata_daemon"
  strata_times+=("$elapsed")
  strata_copy+=("$copying")
  strata_durable+=("$durable")
  if [ "$i" = 0 ]; then
    check_top strata-daemon
    "$qemu_img" compare -q -f qcow2 -F qcow2 "$work/qsd-top.qcow2" "$work/run/top.qcow2" ||
      { echo "stream_bench: the tops differ after the streams" >&2; exit 1; }
    rm -f "$work/qsd-top.qcow2"
  fi
  echo "run $((i + 1)): qemu-storage-daemon ${qsd_times[-1]} s (${qsd_copy[-1]}; on disk"\
    "${qsd_durable[-1]}), strata-daemon ${strata_times[-1]} s (${strata_copy[-1]}; on disk"\
    "${strata_durable[-1]})"
done

qsd_median=$(printf '%s\n' "${qsd_times[@]}" | median)
strata_median=$(printf '%s\n' "${strata_times[@]}" | median)
qsd_copy_median=$(printf '%s\n' "${qsd_copy[@]}" | median)
strata_copy_median=$(printf '%s\n' "${strata_copy[@]}" | median)
qsd_durable_median=$(printf '%s\n' "${qsd_durable[@]}" | median)
strata_durable_median=$(printf '%s\n' "${strata_durable[@]}" | median)
printf '%-20s %10s %12s %12s\n' daemon "median s" "copying s" "on disk s"
printf '%-20s %10s %12s %12s\n' qemu-storage-daemon "$qsd_median" "$qsd_copy_median" \
  "$qsd_durable_median" strata-daemon "$strata_median" "$strata_copy_median" \
  "$strata_durable_median"
echo "$qsd_median $strata_median" | awk '{printf "ratio qsd/strata: %.2fx\n", $1 / $2}'
echo "$qsd_durable_median $strata_durable_median" |
  awk '{printf "ratio qsd/strata, until on disk (command to exit after quit): %.2fx\n", $1 / $2}'
echo "$qsd_copy_median $strata_copy_median" |
  awk '{printf "ratio qsd/strata, copying only: %.2fx\n", $1 / $2}'
echo "load: $(uptime)"
