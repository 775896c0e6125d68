#!/usr/bin/env python3
"""Differential test of strata-img info, map and check against qemu-img 7.2.

A matrix of images is built with qemu-img and qemu-io (cluster sizes, v2 and v3, extended L2,
zstd, compressed clusters, lazy refcounts, refcount widths, a three-deep chain with data at each
level, a backing file shorter than its overlay, external data files, internal snapshots, a
dirty and a corrupt image, raw). Each command runs through both tools in the images' directory
with the same arguments; stdout, stderr (program name aside) and the exit status must be equal.

Differences that are legitimate, and how the test handles them:
  - qemu-img probes the format when -f is missing; Strata never probes. Every command passes -f.
  - QEMU 7.2 opens an external data file by its recorded name relative to the working directory,
    Strata relative to the image's directory; the commands run in the images' directory, where
    both agree.
  - Snapshot dates print in local time; both tools run with TZ=UTC.

Exit status: 0 pass, 1 fail, 77 skip (qemu-img or qemu-io missing).
"""

import argparse
import os
import shutil
import struct
import subprocess
import sys
import tempfile

MiB = 1 << 20


def sh(cmd, cwd):
    subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, timeout=60)


def qemu_io(cwd, fmt, image, *cmds):
    args = ["qemu-io", "-f", fmt]
    for c in cmds:
        args += ["-c", c]
    sh(args + [image], cwd)


def create(cwd, name, size, opts="", fmt="qcow2", backing=None):
    args = ["qemu-img", "create", "-f", fmt]
    if opts:
        args += ["-o", opts]
    if backing:
        args += ["-b", backing, "-F", "qcow2"]
    sh(args + [name, str(size)], cwd)


def build_images(d):
    """Creates the matrix in `d`; returns [(image, format, is_chain)]."""
    images = []
    create(d, "raw.img", MiB, fmt="raw")
    qemu_io(d, "raw", "raw.img", "write -P 1 64k 64k", "write -P 2 512k 4k")
    images.append(("raw.img", "raw", False))

    create(d, "default.qcow2", 64 * MiB)
    qemu_io(d, "qcow2", "default.qcow2", "write -P 1 0 64k", "write -z 128k 64k",
            "write -P 2 1M 192k", "write -P 3 2M 4k", "write -z 3M 64k")
    images.append(("default.qcow2", "qcow2", False))

    for name, size, opts in [
        ("c512.qcow2", 4 * MiB, "cluster_size=512"),
        ("c2m.qcow2", 16 * MiB, "cluster_size=2M"),
        ("v2.qcow2", 8 * MiB, "compat=0.10,cluster_size=4096"),
        ("xl2.qcow2", 8 * MiB, "extended_l2=on"),
        ("zstd.qcow2", 8 * MiB, "compression_type=zstd"),
        ("lazy.qcow2", 8 * MiB, "lazy_refcounts=on,refcount_bits=1"),
        ("r64.qcow2", 8 * MiB, "refcount_bits=64,cluster_size=16k"),
        # Metadata preallocation: data clusters are holes in the file, which qemu-img map
        # finds by asking the file (QEMU's metadata-preallocation heuristic).
        ("prealloc.qcow2", 8 * MiB, "preallocation=metadata"),
    ]:
        create(d, name, size, opts)
        qemu_io(d, "qcow2", name, "write -P 5 0 3k", "write -P 6 96k 8k", "write -z 1M 128k")
        images.append((name, "qcow2", False))

    for name, opts in [("compressed.qcow2", ""), ("compressed-zstd.qcow2",
                                                   "compression_type=zstd")]:
        qemu_io(d, "qcow2", "default.qcow2", "write -P 9 4M 256k")
        args = ["qemu-img", "convert", "-c", "-f", "qcow2", "-O", "qcow2"]
        if opts:
            args += ["-o", opts]
        sh(args + ["default.qcow2", name], d)
        images.append((name, "qcow2", False))

    # A three-deep chain with data at each level, zero clusters hiding data below, and a
    # backing file shorter than its overlay.
    create(d, "base.qcow2", 32 * MiB)
    qemu_io(d, "qcow2", "base.qcow2", "write -P 1 0 256k", "write -P 1 1M 64k")
    create(d, "mid.qcow2", 48 * MiB, backing="base.qcow2")
    qemu_io(d, "qcow2", "mid.qcow2", "write -P 2 64k 64k", "write -z 1M 64k",
            "write -P 2 40M 64k")
    create(d, "top.qcow2", 64 * MiB, backing="mid.qcow2")
    qemu_io(d, "qcow2", "top.qcow2", "write -P 3 128k 4k", "write -P 3 60M 64k")
    images += [("base.qcow2", "qcow2", False), ("mid.qcow2", "qcow2", True),
               ("top.qcow2", "qcow2", True)]
    os.mkdir(os.path.join(d, "sub"))
    create(d, "sub/over.qcow2", 32 * MiB, backing="../base.qcow2")
    images.append(("sub/over.qcow2", "qcow2", True))

    create(d, "df.qcow2", 4 * MiB, "data_file=df.data")
    qemu_io(d, "qcow2", "df.qcow2", "write -P 4 0 64k", "write -P 4 1M 4k")
    create(d, "dfraw.qcow2", 4 * MiB, "data_file=dfraw.data,data_file_raw=on,extended_l2=on")
    qemu_io(d, "qcow2", "dfraw.qcow2", "write -P 4 64k 64k")
    images += [("df.qcow2", "qcow2", False), ("dfraw.qcow2", "qcow2", False)]

    create(d, "snap.qcow2", 16 * MiB)
    qemu_io(d, "qcow2", "snap.qcow2", "write -P 5 0 128k")
    sh(["qemu-img", "snapshot", "-c", "first", "snap.qcow2"], d)
    qemu_io(d, "qcow2", "snap.qcow2", "write -P 6 0 64k")
    sh(["qemu-img", "snapshot", "-c", "a rather long snapshot name", "snap.qcow2"], d)
    images.append(("snap.qcow2", "qcow2", False))

    # Dirty: lazy refcounts and a simulated crash (qemu-io's abort leaves the dirty bit set).
    create(d, "dirty.qcow2", 8 * MiB, "lazy_refcounts=on")
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 7 0 64k", "-c", "abort",
                    "dirty.qcow2"], cwd=d, capture_output=True, timeout=60)
    images.append(("dirty.qcow2", "qcow2", False))

    # Corrupt: the corrupt bit (incompatible feature bit 1) set by hand.
    create(d, "corrupt.qcow2", 8 * MiB)
    with open(os.path.join(d, "corrupt.qcow2"), "r+b") as f:
        f.seek(72)
        (features,) = struct.unpack(">Q", f.read(8))
        f.seek(72)
        f.write(struct.pack(">Q", features | 2))
    images.append(("corrupt.qcow2", "qcow2", False))
    return images


def commands(image, fmt, chain):
    cmds = [["info", "-f", fmt, image], ["info", "-f", fmt, "--output=json", image],
            ["info", "-f", fmt, "-U", "--output", "json", image],
            ["map", "-f", fmt, image], ["map", "-f", fmt, "--output=json", image],
            ["check", "-f", fmt, image], ["check", "-f", fmt, "--output=json", image]]
    if chain:
        cmds += [["info", "-f", fmt, "--backing-chain", image],
                 ["info", "-f", fmt, "--backing-chain", "--output=json", image]]
    if image == "top.qcow2":
        cmds += [["map", "-f", fmt, "--output=json", "--start-offset=64k", "--max-length=1M",
                  image],
                 ["map", "-f", fmt, "-s", "40M", "-l", "100M", image],
                 ["info", "--image-opts", "--output=json",
                  "driver=qcow2,file.driver=file,file.filename=" + image]]
    return cmds


# Command-line errors: same message and status.
ERROR_CASES = [
    ["info"], ["info", "--output=xml", "-f", "raw", "raw.img"], ["info", "-f", "raw", "nope.img"],
    ["map", "--start-offset=1x", "-f", "raw", "raw.img"], ["check", "-r", "some", "raw.img"],
    ["check", "-f", "raw", "raw.img"], ["check", "-f", "raw", "-q", "raw.img"],
    ["info", "-Z", "raw.img"],
]


def run(tool, args, cwd):
    env = dict(os.environ, TZ="UTC")
    p = subprocess.run([tool] + args, cwd=cwd, capture_output=True, text=True, timeout=120,
                       env=env)
    name = os.path.basename(tool)
    return p.returncode, p.stdout, p.stderr.replace(name + ":", "PROG:").replace(
        f"'{name} --help'", "'PROG --help'")


def compare(args, qemu_img, strata_img, d, failures):
    want = run(qemu_img, args, d)
    got = run(strata_img, args, d)
    if want != got:
        failures.append((args, want, got))


def lock_case(qemu_img, strata_img, d, failures):
    """A reader without -U fails on an image a writer holds, with the same error; -U works."""
    holder = subprocess.Popen(["qemu-io", "-f", "qcow2", "default.qcow2"], cwd=d,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        holder.stdin.write("write -P 8 0 512\n")
        holder.stdin.flush()
        holder.stdout.readline()  # "wrote 512/512 bytes ...": the image is open read-write
        for args in (["info", "-f", "qcow2", "default.qcow2"],
                     ["map", "-f", "qcow2", "--output=json", "default.qcow2"],
                     ["info", "-f", "qcow2", "-U", "--output=json", "default.qcow2"]):
            want, got = run(qemu_img, args, d), run(strata_img, args, d)
            if want != got:
                failures.append((["(locked)"] + args, want, got))
    finally:
        holder.stdin.write("quit\n")
        holder.stdin.close()
        holder.wait(timeout=30)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--strata-img", required=True)
    ap.add_argument("--qemu-img", default=shutil.which("qemu-img"))
    args = ap.parse_args()
    if not args.qemu_img or not shutil.which("qemu-io"):
        print("SKIP: qemu-img/qemu-io not found (install qemu-utils)")
        return 77
    strata_img = os.path.abspath(args.strata_img)
    failures = []
    with tempfile.TemporaryDirectory(dir="/dev/shm" if os.path.isdir("/dev/shm") else None) as d:
        images = build_images(d)
        count = 0
        for image, fmt, chain in images:
            for cmd in commands(image, fmt, chain):
                compare(cmd, args.qemu_img, strata_img, d, failures)
                count += 1
        for cmd in ERROR_CASES:
            compare(cmd, args.qemu_img, strata_img, d, failures)
            count += 1
        lock_case(args.qemu_img, strata_img, d, failures)
    for cmd, want, got in failures:
        print(f"FAIL: {' '.join(cmd)}")
        for label, w, g in zip(("status", "stdout", "stderr"), want, got):
            if w != g:
                print(f"  {label}:\n    qemu-img:   {w!r}\n    strata-img: {g!r}")
    print(f"{count + 3 - len(failures)} passed, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
