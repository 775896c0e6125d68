#!/usr/bin/env python3
"""Golden test after QEMU iotest 153: image locks between processes, Strata against QEMU.

Raw images throughout, as Strata's format driver is raw:
  A. A long-lived holder (qemu-io, then strata-io, fed commands through a pipe) opens a raw image
     read-write and writes, so it holds WRITE. Then other processes try the image:
     qemu-img convert (whose source shares nothing but reads) is refused with
     'Failed to get shared "write" lock' and the "Is another process using the image" hint,
     and succeeds with -U; qemu-io and strata-io, read-write or read-only, open it (a raw node
     under qemu-io's BlockBackend shares every permission, so they coexist, as in QEMU); -U
     read-only opens, -U read-write fails with "force-share=on can only be used with read-only
     images". The holder then reopens read-only (giving up WRITE: convert succeeds), reopens
     read-write (WRITE is not taken until the next write: convert still succeeds) and writes
     (convert is refused again). Both holders must give the same transcript.
  B. qemu-io holds a qcow2 image read-write; qcow2 does not share WRITE on its file, so strata-io
     and qemu-io opening that file as raw read-write get 'Failed to get "write" lock' and the
     hint; read-only and -U read-only opens succeed.
"""

import os
import subprocess
import sys
import time

import golden


def lock_held(path, byte):
    """Whether any process holds a lock on `byte` of `path` (QEMU's lock bytes: 100 + perm bit
    while using it, 200 + bit while not sharing it)."""
    inode = os.stat(path).st_ino
    with open("/proc/locks") as f:
        for line in f:
            fields = line.split()
            if len(fields) < 2 or not fields[-3].endswith(f":{inode}"):
                continue
            start, end = fields[-2], fields[-1]
            end_byte = float("inf") if end == "EOF" else int(end)
            if int(start) <= byte <= end_byte:
                return True
    return False


def wait_lock(path, byte, held, timeout=20.0):
    deadline = time.monotonic() + timeout
    while lock_held(path, byte) != held:
        if time.monotonic() > deadline:
            raise RuntimeError(f"lock byte {byte} of {path} never became held={held}")
        time.sleep(0.02)


class Holder:
    """A tool reading commands from a pipe, kept alive while others try the image."""

    def __init__(self, argv, cwd):
        self.proc = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def send(self, command):
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def finish(self, transcript, title):
        try:
            out, err = self.proc.communicate("quit\n", timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
        transcript.record(title, subprocess.CompletedProcess(self.proc.args,
                                                             self.proc.returncode, out, err))


def contenders(t, strata_io, image, fmt_args=("-f", "raw")):
    for name, tool in (("qemu-io", "qemu-io"), ("strata-io", strata_io)):
        t.run(f"{name} read-write", [tool, *fmt_args, "-c", "read 0 4k", image])
        t.run(f"{name} read-only", [tool, *fmt_args, "-r", "-c", "read 0 4k", image])
        t.run(f"{name} -U read-only", [tool, *fmt_args, "-U", "-r", "-c", "read 0 4k", image])
        t.run(f"{name} -U read-write", [tool, *fmt_args, "-U", "-c", "read 0 4k", image])


def convert(t, title, *extra):
    t.run(title, ["qemu-img", "convert", *extra, "-f", "raw", "-O", "raw", "t.raw", "out.raw"])


def part_a(holder_tool, strata_io):
    with golden.temp_dir() as d:
        t = golden.Transcript(d)
        img = os.path.join(d, "t.raw")
        golden.create_raw(img, 1 << 20, fill=0x5a)
        holder = Holder([holder_tool, "-f", "raw", "t.raw"], d)
        try:
            holder.send("write -P 0x11 0 4k")
            wait_lock(img, 101, True)
            convert(t, "holder writes: qemu-img convert")
            convert(t, "holder writes: qemu-img convert -U", "-U")
            contenders(t, strata_io, "t.raw")
            holder.send("reopen -r")
            wait_lock(img, 101, False)
            convert(t, "holder reopened -r: qemu-img convert")
            holder.send("reopen -w")
            holder.send("read -P 0x11 0 4k")
            # Once the read has answered, the reopen is done; only then is the lock state
            # worth looking at.
            time.sleep(0.3)
            convert(t, "holder reopened -w, not written yet: qemu-img convert")
            holder.send("write -P 0x22 4k 4k")
            wait_lock(img, 101, True)
            convert(t, "holder wrote again: qemu-img convert")
        finally:
            holder.finish(t, "the holder's own output")
        return t.text()


def part_b(strata_io):
    with golden.temp_dir() as d:
        t = golden.Transcript(d)
        img = os.path.join(d, "q.qcow2")
        t.run("qemu-img create", ["qemu-img", "create", "-q", "-f", "qcow2", "q.qcow2", "1M"])
        holder = Holder(["qemu-io", "-f", "qcow2", "q.qcow2"], d)
        try:
            holder.send("write 0 4k")
            wait_lock(img, 201, True)
            contenders(t, strata_io, "q.qcow2")
        finally:
            holder.finish(t, "the qcow2 holder's own output")
        return t.text()


def main():
    args = golden.parse_args(__doc__)
    golden.require_qemu_tools()
    strata_io = os.path.abspath(args.strata_io)
    b = part_b(strata_io)
    texts = {"qemu-io": part_a("qemu-io", strata_io) + b,
             "strata-io": part_a(strata_io, strata_io) + b}
    return golden.compare(args.golden, texts, args.update)


if __name__ == "__main__":
    sys.exit(main())
