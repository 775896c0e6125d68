#!/usr/bin/env python3
"""A qcow2 image whose metadata is corrupt, found at run time, as QEMU handles it.

An L2 entry of an image qemu-io wrote is made to point at an unaligned host offset. Through
qemu-io and strata-io (on twin copies) a read of that cluster fails with EIO, the image is marked
corrupt on disk at once (qemu-img info says "corrupt: true") with QEMU's "Marking image as
corrupt" line, later writes fail, and a read-write open is then refused with "qcow2: Image is
corrupt; cannot be opened read/write" while read-only opens still read the healthy clusters.

A dirty image that a killed qemu-io left (lazy refcounts) reads as it is when opened read-only,
and opening it read-write repairs it (qemu-img check then finds nothing).

Exit status: 0 pass, 1 fail, 77 skip (qemu tools missing).
"""

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile


def run(cmd):
    return subprocess.run(cmd, capture_output=True, text=True)


def corrupt(path):
    with open(path, "r+b") as f:
        header = f.read(104)
        l1_offset = struct.unpack(">Q", header[40:48])[0]
        f.seek(l1_offset)
        l2 = struct.unpack(">Q", f.read(8))[0] & 0x00FFFFFFFFFFFE00
        f.seek(l2)
        entry = struct.unpack(">Q", f.read(8))[0]
        f.seek(l2)
        f.write(struct.pack(">Q", entry | 0x200))  # host offset no longer cluster-aligned


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--strata-io", required=True)
    args = ap.parse_args()
    if shutil.which("qemu-img") is None or shutil.which("qemu-io") is None:
        print("qemu tools missing: skipped")
        return 77
    failures = []
    with tempfile.TemporaryDirectory() as d:
        base = os.path.join(d, "base.qcow2")
        run(["qemu-img", "create", "-q", "-f", "qcow2", base, "8M"])
        run(["qemu-io", "-f", "qcow2", "-c", "write -P 1 0 64k", "-c", "write -P 2 64k 64k", base])
        corrupt(base)
        results = {}
        for tool in ("qemu-io", args.strata_io):
            img = os.path.join(d, os.path.basename(tool) + ".qcow2")
            shutil.copy(base, img)
            first = run([tool, "-f", "qcow2", "-c", "read 0 4k", "-c", "write -P 3 1M 4k", img])
            info = json.loads(run(["qemu-img", "info", "--output=json", img]).stdout)
            again = run([tool, "-f", "qcow2", "-c", "read 0 4k", img])
            ro = run([tool, "-f", "qcow2", "-r", "-c", "read -P 2 64k 64k", img])
            results[tool] = (first, info, again, ro)
        for tool, (first, info, again, ro) in results.items():
            name = os.path.basename(tool)
            if "read failed: Input/output error" not in first.stdout:
                failures.append(f"{name}: the corrupt read did not fail with EIO: {first.stdout}")
            if "write failed" not in first.stdout:
                failures.append(f"{name}: a write after the corruption succeeded: {first.stdout}")
            if "Marking image as corrupt: Cluster allocation offset 0x50200 unaligned (L2 " \
               "offset: 0x40000, L2 index: 0)" not in first.stderr:
                failures.append(f"{name}: no corruption message: {first.stderr!r}")
            if not info.get("format-specific", {}).get("data", {}).get("corrupt"):
                failures.append(f"{name}: the image is not marked corrupt on disk")
            if "Image is corrupt; cannot be opened read/write" not in again.stderr:
                failures.append(f"{name}: read-write open not refused: {again.stderr!r}")
            if ro.returncode != 0 or "Pattern verification failed" in ro.stdout:
                failures.append(f"{name}: read-only open: {ro.stdout} {ro.stderr}")
        # A dirty image left by a qemu-io killed mid-work (lazy refcounts): Strata reads it
        # read-only as it is, and a read-write open repairs it before anything else.
        dirty = os.path.join(d, "dirty.qcow2")
        run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", "lazy_refcounts=on", dirty, "8M"])
        run(["qemu-io", "-f", "qcow2", "-c", "write -P 1 0 3M", "-c", "write -P 2 5M 1M",
             "-c", "sigraise 9", dirty])
        info = json.loads(run(["qemu-img", "info", "--output=json", "-U", dirty]).stdout)
        if not info.get("dirty-flag"):
            failures.append("setup: qemu-io did not leave the image dirty")
        ro = run([args.strata_io, "-f", "qcow2", "-r", "-c", "read -P 1 0 3M",
                  "-c", "read -P 2 5M 1M", dirty])
        if ro.returncode != 0 or "Pattern verification failed" in ro.stdout:
            failures.append(f"reading the dirty image read-only: {ro.stdout} {ro.stderr}")
        rw = run([args.strata_io, "-f", "qcow2", "-c", "read -P 1 0 3M", "-c", "write 7M 4k",
                  dirty])
        check = run(["qemu-img", "check", dirty])
        if rw.returncode != 0 or check.returncode != 0:
            failures.append(f"repair on read-write open: {rw.stdout} {rw.stderr} "
                            f"check: {check.stdout} {check.stderr}")
    for f in failures:
        print("FAIL", f)
    if failures:
        return 1
    print("corruption and dirty-image handling: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
