#!/usr/bin/env bash
# The README's run command: builds Strata, creates a demo graph of local images (a qcow2 base
# with data and a qcow2 overlay on it), starts strata-daemon on it with a QMP socket, and prints
# how to talk to it with strata-qmp, how to draw its graph and how to stop it.
#
# The daemon runs in the foreground: Ctrl-C stops it cleanly (nodes flushed and closed, socket
# and pid file removed), nothing is left running in the background by surprise, and its messages
# show up in this terminal. The images live in /tmp/strata-demo (STRATA_DEMO_DIR to change it):
# outside the clone, so they never show up in git status, and on a short path, which a Unix
# socket needs (at most 107 bytes).
#
# For tests: STRATA_DEMO_NO_BUILD=1 skips installing and building; STRATA_BUILD_DIR names the
# build directory (default: build).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
build=${STRATA_BUILD_DIR:-$root/build}
case $build in /*) ;; *) build=$root/$build ;; esac

if [ "${STRATA_DEMO_NO_BUILD:-0}" != "1" ]; then
  scripts/install-deps.sh
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build "$build" -j "$(nproc)"
fi
bin=$build/bin

demo=${STRATA_DEMO_DIR:-/tmp/strata-demo}
mkdir -p "$demo"
sock=$demo/qmp.sock
pidfile=$demo/strata-daemon.pid
if [ -e "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
  echo "strata-daemon already runs on $demo (pid $(cat "$pidfile")): stop it first with" >&2
  echo "  kill $(cat "$pidfile")" >&2
  exit 1
fi
rm -f "$demo/base.qcow2" "$demo/overlay.qcow2" "$demo/graph.svg"

echo "== A qcow2 base with data, and a qcow2 overlay on it, in $demo =="
"$bin/strata-img" create -q -f qcow2 "$demo/base.qcow2" 64M
"$bin/strata-io" -f qcow2 -c "write -q -P 0xab 0 1M" "$demo/base.qcow2" >/dev/null
"$bin/strata-img" create -q -f qcow2 -b base.qcow2 -F qcow2 "$demo/overlay.qcow2"
"$bin/strata-io" -f qcow2 -c "write -q -P 0x5a 4k 8k" "$demo/overlay.qcow2" >/dev/null

# The graph, node by node, as a manager builds it: file nodes that are writable on demand
# (auto-read-only), the base read-only, the overlay with its backing given by reference.
"$bin/strata-daemon" \
  --blockdev "driver=file,node-name=base-file,filename=$demo/base.qcow2,auto-read-only=on" \
  --blockdev "driver=qcow2,node-name=base,file=base-file,read-only=on" \
  --blockdev "driver=file,node-name=overlay-file,filename=$demo/overlay.qcow2,auto-read-only=on" \
  --blockdev "driver=qcow2,node-name=overlay,file=overlay-file,backing=base" \
  --qmp "unix:$sock" --pidfile "$pidfile" &
daemon=$!
# Ctrl-C reaches the daemon too (same process group); either way, wait for its clean exit.
trap 'kill -TERM "$daemon" 2>/dev/null || true; wait "$daemon" || true; exit 0' INT TERM

for _ in $(seq 100); do
  [ -e "$pidfile" ] && break
  kill -0 "$daemon" 2>/dev/null || { wait "$daemon" || exit $?; }
  sleep 0.1
done
[ -e "$pidfile" ] || { echo "strata-daemon did not start" >&2; kill "$daemon"; exit 1; }

qmp="$bin/strata-qmp $sock"
cat <<EOT

strata-daemon runs (pid $daemon) with QMP on $sock.
In another terminal:

  $qmp query-named-block-nodes
  $qmp query-block
  $qmp
      (the shell: try  x-debug-query-block-graph  or
       blockdev-add driver=file node-name=f9 filename=$demo/base.qcow2 read-only=true)
  $qmp graph --format svg -o $demo/graph.svg

Stop it with Ctrl-C here, or:
  $qmp quit
EOT

wait "$daemon"
