#!/usr/bin/env python3
"""Differential test of the qcow2 driver against QEMU's.

One seeded qemu-io script (aligned and unaligned writes, writes that cross clusters and L2
tables, write -z with and without -u, discard, flush, many aio writes in flight, reads with
pattern checks) runs through qemu-io on one copy of an image and through strata-io on another.
The images are made by qemu-img create with the variant's options (cluster sizes, version 2,
refcount widths, extended L2, lazy refcounts, a backing file holding data so partial writes
copy-on-write from it). The test passes when

  - both tools print the same lines (timing lines removed; in any order, since aio writes
    complete in the order each driver finishes them) and exit alike,
  - `qemu-img check` finds no error and no leak in the image Strata wrote,
  - `qemu-img compare` finds the two images identical,
  - strata-io reads back through every pattern check the image qemu-io wrote.

Compressed writes (write -c) are part of the workload; with extended L2 and with a cluster
size too small for the compressed stream the drivers store clusters uncompressed alike.

Exit status: 0 pass, 1 fail, 77 skip (qemu tools missing).
"""

import argparse
import difflib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile

TIMING = re.compile(r"^\S+ (bytes|KiB|MiB|GiB|TiB|PiB|EiB), \d+ ops; .* ops/sec\)$")
KiB = 1 << 10
MiB = 1 << 20
SIZE = 64 * MiB

# variant -> (qemu-img create -o options, backing file?)
VARIANTS = {
    "default": ("", False),
    "cluster512": ("cluster_size=512", False),
    "cluster2M": ("cluster_size=2M", False),
    "v2": ("compat=0.10", False),
    "refcount1": ("refcount_bits=1", False),
    "refcount64": ("refcount_bits=64", False),
    "extended_l2": ("extended_l2=on,cluster_size=128k", False),
    "lazy": ("lazy_refcounts=on", False),
    "backing": ("", True),
    "backing_extended_l2": ("extended_l2=on", True),
    "backing_v2": ("compat=0.10", True),
    "zstd": ("compression_type=zstd", False),
    "chain3": ("cluster_size=32k", "chain3"),
}


def script(rng, cluster):
    """A list of qemu-io commands and the (offset, length, byte) pattern writes it makes."""
    cmds = []
    model = {}  # byte -> pattern checks only on ranges written last with one pattern

    def span(limit):
        kind = rng.random()
        if kind < 0.3:
            off = rng.randrange(0, limit // cluster) * cluster
            length = cluster * rng.randint(1, 4)
        elif kind < 0.6:
            off = rng.randrange(0, limit - 256 * KiB) // 512 * 512
            length = rng.randint(1, 256) * 512
        else:
            off = rng.randrange(0, limit - 300 * KiB)
            length = rng.randint(1, 300 * KiB)
        return off, min(length, limit - off)

    # The top of the disk is for compressed writes; the rest of the script stays below it.
    top = SIZE - max(8 * MiB, 16 * cluster)
    compressed_slots = list(range(top, SIZE - 3 * cluster + 1, 3 * cluster))
    rng.shuffle(compressed_slots)
    limit = top

    written = []
    for _ in range(140):
        r = rng.random()
        off, length = span(limit)
        if r < 0.45:
            byte = rng.randrange(1, 256)
            cmds.append(f"write -P {byte} {off} {length}")
            written.append((off, length, byte))
        elif r < 0.55:
            cmds.append(f"write -z {off} {length}")
            written.append((off, length, 0))
        elif r < 0.62:
            cmds.append(f"write -z -u {off} {length}")
            written.append((off, length, 0))
        elif r < 0.68:
            cmds.append(f"discard {off} {length}")
            written.append((off, length, None))  # contents undefined from here on
        elif r < 0.72:
            cmds.append("flush")
        elif r < 0.76 and compressed_slots:
            # Compressed clusters go to fresh clusters of the top region: QEMU refuses (EIO) a
            # compressed write over an allocated cluster, in whichever clusters of the request
            # it reaches first.
            o = compressed_slots.pop(0)
            n = cluster * rng.randint(1, 3)
            b = rng.randrange(1, 256)
            cmds.append(f"write -c -P {b} {o} {n}")
            written.append((o, n, b))
        elif r < 0.82:
            # Several writes in flight at once, often in the same clusters but never on the same
            # bytes (concurrent writes to the same bytes have no defined result).
            base = rng.randrange(0, limit - 4 * MiB) // 512 * 512
            batch = []
            for _ in range(rng.randint(2, 6)):
                o = base + rng.randrange(0, 2 * MiB) // 512 * 512
                n = rng.randint(1, 64) * 512
                b = rng.randrange(1, 256)
                if any(o < bo + bn and bo < o + n for (bo, bn) in batch):
                    continue
                batch.append((o, n))
                cmds.append(f"aio_write -P {b} {o} {n}")
                written.append((o, n, b))
            cmds.append("aio_flush")
        else:
            cmds.append(f"read {off} {length}")
    # Then writes over the compressed clusters: copy-on-write from compressed data.
    for _ in range(8):
        o = rng.randrange(top, SIZE - 64 * KiB) // 512 * 512
        n = rng.randint(1, 128) * 512
        if rng.random() < 0.3:
            cmds.append(f"write -z {o} {n}")
            written.append((o, n, 0))
        else:
            b = rng.randrange(1, 256)
            cmds.append(f"write -P {b} {o} {n}")
            written.append((o, n, b))
    # Pattern checks on the last writes that nothing overlapped since.
    checks = []
    for i, (o, n, b) in enumerate(written):
        if b is None:
            continue
        later = written[i + 1:]
        if all(lo + ln <= o or lo >= o + n for (lo, ln, _) in later):
            checks.append(f"read -P {b} {o} {n}")
    return cmds, checks


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def tool_run(tool, image, cmds, fmt="qcow2"):
    args = [tool, "-f", fmt]
    for c in cmds:
        args += ["-c", c]
    args.append(image)
    return run(args)


def strip(out):
    return [l for l in out.splitlines() if not TIMING.match(l)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--strata-io", required=True)
    ap.add_argument("--variant", required=True, choices=sorted(VARIANTS))
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    for tool in ("qemu-img", "qemu-io"):
        if shutil.which(tool) is None:
            print(f"{tool} missing: skipped")
            return 77
    opts, with_backing = VARIANTS[args.variant]
    cluster = 64 * KiB
    m = re.search(r"cluster_size=(\w+)", opts)
    if m:
        cluster = {"512": 512, "32k": 32 * KiB, "128k": 128 * KiB, "2M": 2 * MiB}[m.group(1)]
    rng = random.Random(f"{args.variant}-{args.seed}")
    cmds, checks = script(rng, cluster)

    with tempfile.TemporaryDirectory(dir="/dev/shm") as d:
        create = ["qemu-img", "create", "-q", "-f", "qcow2"]
        if opts:
            create += ["-o", opts]
        if with_backing == "chain3":
            # raw base <- qcow2 middle <- the overlay: data at every level.
            base = os.path.join(d, "base.raw")
            with open(base, "wb") as f:
                f.truncate(SIZE)
            mid = os.path.join(d, "mid.qcow2")
            run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.raw", "-F", "raw", mid,
                 str(SIZE)], cwd=d)
            fill_base = [f"write -P {0x20 + i} {i * 4 * MiB} {2 * MiB + 4097}" for i in range(16)]
            fill_mid = [f"write -P {0x60 + i} {i * 4 * MiB + MiB + 512} {2 * MiB}"
                        for i in range(16)]
            for tool_fmt, image, cmds_fill in (("raw", base, fill_base), ("qcow2", mid, fill_mid)):
                r = tool_run("qemu-io", image, cmds_fill, fmt=tool_fmt)
                if r.returncode != 0:
                    print(r.stdout, r.stderr)
                    return 1
            create += ["-b", "mid.qcow2", "-F", "qcow2"]
        elif with_backing:
            base = os.path.join(d, "base.raw")
            with open(base, "wb") as f:
                f.truncate(SIZE)
            fill = [f"write -P {0x40 + i} {i * 4 * MiB + 4096} {3 * MiB + 123}" for i in range(16)]
            r = tool_run("qemu-io", base, fill, fmt="raw")
            if r.returncode != 0:
                print(r.stdout, r.stderr)
                return 1
            create += ["-b", "base.raw", "-F", "raw"]
        qemu_img = os.path.join(d, "qemu.qcow2")
        strata_img = os.path.join(d, "strata.qcow2")
        r = run(create + [qemu_img, str(SIZE)], cwd=d)
        if r.returncode != 0:
            print(r.stdout, r.stderr)
            return 1
        shutil.copy(qemu_img, strata_img)

        q = tool_run("qemu-io", qemu_img, cmds)
        s = tool_run(args.strata_io, strata_img, cmds)
        failed = False
        # aio writes complete in whatever order the drivers finish them: compare as multisets.
        if sorted(strip(q.stdout)) != sorted(strip(s.stdout)) or q.returncode != s.returncode:
            print(f"output differs (exit qemu-io {q.returncode}, strata-io {s.returncode}):")
            print("\n".join(difflib.unified_diff(strip(q.stdout), strip(s.stdout), "qemu-io",
                                                 "strata-io", lineterm="", n=2)))
            print(s.stderr)
            failed = True

        c = run(["qemu-img", "check", "--output=json", strata_img])
        if c.returncode != 0:
            print("qemu-img check of Strata's image:", c.returncode, c.stdout, c.stderr)
            failed = True
        else:
            info = json.loads(c.stdout)
            if info.get("leaks", 0) or info.get("corruptions", 0):
                print("qemu-img check found leaks or corruptions:", c.stdout)
                failed = True
        cmp = run(["qemu-img", "compare", "-f", "qcow2", "-F", "qcow2", qemu_img, strata_img])
        if cmp.returncode != 0:
            print("qemu-img compare:", cmp.stdout, cmp.stderr)
            failed = True

        # Strata reads qemu-io's image: every pattern check passes.
        for i in range(0, len(checks), 40):
            rd = tool_run(args.strata_io, qemu_img, checks[i:i + 40])
            bad = [l for l in rd.stdout.splitlines() if "Pattern verification failed" in l]
            if rd.returncode != 0 or bad or rd.stderr:
                print("strata-io reading qemu-io's image:", rd.returncode, rd.stderr)
                print("\n".join(l for l in rd.stdout.splitlines()
                                if not TIMING.match(l) and not l.startswith("read ")))
                failed = True
                break
        if failed:
            print("script:\n" + "\n".join(cmds))
            return 1
    print(f"{args.variant}: {len(cmds)} commands, {len(checks)} pattern checks: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
