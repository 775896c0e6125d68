#!/usr/bin/env python3
"""Crash safety of the qcow2 driver: kill -9 at random instants, then check the image.

strata-io writes to a qcow2 image (new clusters, copy-on-write over a backing file, zero
writes, discards, each write followed by a flush) and is killed with SIGKILL after a random
delay, several times in a row on the same image. After every kill:

  - `qemu-img check` finds no corruption (leaked clusters are allowed: a crash may leak);
    with lazy refcounts the image is dirty instead, and opening it read-write in strata-io
    must repair it so that the check then finds nothing at all;
  - every write whose flush completed before the kill (known from the lines strata-io printed)
    reads back with its pattern.

Exit status: 0 pass, 1 fail, 77 skip (qemu tools missing).
"""

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

MiB = 1 << 20
KiB = 1 << 10
SIZE = 128 * MiB

VARIANTS = {
    "default": ("", False),
    "extended_l2_backing": ("extended_l2=on", True),
    "lazy": ("lazy_refcounts=on", False),
    "cluster4k": ("cluster_size=4k", False),
}


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--strata-io", required=True)
    ap.add_argument("--variant", required=True, choices=sorted(VARIANTS))
    ap.add_argument("--kills", type=int, default=8)
    args = ap.parse_args()
    if shutil.which("qemu-img") is None or shutil.which("qemu-io") is None:
        print("qemu tools missing: skipped")
        return 77
    opts, with_backing = VARIANTS[args.variant]
    rng = random.Random(args.variant)
    # Each write owns one 1 MiB slot, so no later write overlaps an earlier one.
    slots = list(range(SIZE // MiB))
    rng.shuffle(slots)
    failed = False
    with tempfile.TemporaryDirectory(dir="/var/tmp") as d:
        img = os.path.join(d, "crash.qcow2")
        create = ["qemu-img", "create", "-q", "-f", "qcow2"]
        if opts:
            create += ["-o", opts]
        if with_backing:
            base = os.path.join(d, "base.raw")
            with open(base, "wb") as f:
                f.truncate(SIZE)
            run(["qemu-io", "-f", "raw", "-c", f"write -P 0x5a 0 {SIZE}", base])
            create += ["-b", base, "-F", "raw"]
        r = run(create + [img, str(SIZE)])
        if r.returncode != 0:
            print(r.stderr)
            return 1
        durable = []  # (offset, length, byte) known flushed
        for kill in range(args.kills):
            cmds = []
            writes = []
            for _ in range(12):
                if not slots:
                    break
                slot = slots.pop()
                off = slot * MiB + rng.randrange(0, 256 * KiB) // 512 * 512 + rng.choice([0, 77])
                length = rng.randint(1, 511) * KiB - rng.choice([0, 33])  # ends before 768 KiB
                byte = rng.randrange(1, 256)
                writes.append((off, length, byte))
                cmds += [f"write -P {byte} {off} {length}", "flush"]
                z = rng.random()
                if z < 0.2:
                    cmds.append(f"write -z {slot * MiB + 768 * KiB} {64 * KiB}")
                elif z < 0.3:
                    cmds.append(f"discard {slot * MiB + 896 * KiB} {128 * KiB}")
            argv = [args.strata_io, "-f", "qcow2", "-t", "writeback"]
            for c in cmds:
                argv += ["-c", c]
            argv.append(img)
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True)
            time.sleep(rng.uniform(0.02, 0.3))
            proc.send_signal(signal.SIGKILL)
            out, err = proc.communicate()
            # The kernel drops a killed process's locks when its last file reference goes;
            # io_uring's workers may hold one a moment longer.
            for _ in range(100):
                probe = run(["qemu-img", "info", img])
                if "lock" not in probe.stderr:
                    break
                time.sleep(0.05)
            wrote = [l for l in out.splitlines() if l.startswith("wrote ")]
            # Write i is durable once write i+1 was reported: its flush came in between.
            done = max(0, len(wrote) - 1)
            if proc.returncode == 0:
                done = len(writes)
            durable += writes[:done]

            c = run(["qemu-img", "check", "--output=json", img])
            if args.variant == "lazy":
                # Dirty after a crash: strata-io opening it read-write repairs it.
                rep = run([args.strata_io, "-f", "qcow2", "-c", "flush", img])
                if rep.returncode != 0:
                    print("repair by opening read-write failed:", rep.stdout, rep.stderr)
                    failed = True
                c = run(["qemu-img", "check", "--output=json", img])
                bad = c.returncode != 0
            else:
                bad = c.returncode not in (0, 3)
            if bad:
                print(f"kill {kill}: qemu-img check exit {c.returncode}: {c.stdout} {c.stderr}")
                failed = True
                break
            info = json.loads(c.stdout)
            if info.get("corruptions", 0):
                print(f"kill {kill}: corruptions: {c.stdout}")
                failed = True
                break
            reads = []
            for (o, n, b) in durable:
                reads += ["-c", f"read -P {b} {o} {n}"]
            if reads:
                rd = run(["qemu-io", "-f", "qcow2"] + reads + [img])
                if "Pattern verification failed" in rd.stdout or rd.returncode != 0:
                    print(f"kill {kill}: flushed data lost:", [l for l in rd.stdout.splitlines()
                                                              if "failed" in l][:5], rd.stderr)
                    failed = True
                    break
        if failed:
            return 1
    print(f"{args.variant}: {args.kills} kills, {len(durable)} flushed writes verified")
    return 0


if __name__ == "__main__":
    sys.exit(main())
