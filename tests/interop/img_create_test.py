#!/usr/bin/env python3
"""strata-img create against qemu-img create (QEMU 7.2): same files, same output.

Every case runs `qemu-img create ARGS` in one empty directory and `strata-img create ARGS` in
another (after the same setup commands, run with qemu-img in both). Then:
  - stdout, stderr (program name substituted) and the exit status must be equal;
  - both directories must hold the same files with the same bytes (cmp), which covers the
    header, extensions, L1/L2 and refcount layout, and that a failed create leaves no file;
  - every qcow2 image Strata made must pass `qemu-img check`, and open in qemu-io and
    strata-io (a read of its first and last cluster).
Allocation (du) may differ where the bytes are equal: both reserve space for falloc/full.

Exit status: 0 pass, 1 fail, 77 skip (qemu-img or qemu-io missing).
"""

import argparse
import filecmp
import os
import shutil
import subprocess
import sys
import tempfile

# (name, setup commands (qemu-img create argument lists), create arguments)
GOOD = [
    ("default", [], ["-f", "qcow2", "a.qcow2", "64M"]),
    ("size zero", [], ["-f", "qcow2", "a.qcow2", "0"]),
    ("unaligned size", [], ["-f", "qcow2", "a.qcow2", "1000"]),
    ("fraction and hex sizes", [], ["-f", "qcow2", "a.qcow2", "1.5M"]),
    ("hex size", [], ["-f", "qcow2", "a.qcow2", "0x100000"]),
    ("size in -o", [], ["-f", "qcow2", "-o", "size=2M", "a.qcow2"]),
    ("quiet", [], ["-q", "-f", "qcow2", "a.qcow2", "1G"]),
    ("big", [], ["-f", "qcow2", "a.qcow2", "1P"]),
    ("v2", [], ["-f", "qcow2", "-o", "compat=0.10", "a.qcow2", "10M"]),
    ("v2 spelled v2", [], ["-f", "qcow2", "-o", "compat=v2", "a.qcow2", "10M"]),
    ("v3 explicit", [], ["-f", "qcow2", "-o", "compat=1.1", "a.qcow2", "10M"]),
    ("cluster 512", [], ["-f", "qcow2", "-o", "cluster_size=512", "a.qcow2", "10M"]),
    ("cluster 4k", [], ["-f", "qcow2", "-o", "cluster_size=4k", "a.qcow2", "100M"]),
    ("cluster 2M", [], ["-f", "qcow2", "-o", "cluster_size=2M", "a.qcow2", "10G"]),
    ("lazy refcounts", [], ["-f", "qcow2", "-o", "lazy_refcounts=on", "a.qcow2", "10M"]),
    ("lazy refcounts yes", [], ["-f", "qcow2", "-o", "lazy_refcounts=yes", "a.qcow2", "1M"]),
    ("refcount 1", [], ["-f", "qcow2", "-o", "refcount_bits=1", "a.qcow2", "10M"]),
    ("refcount 8", [], ["-f", "qcow2", "-o", "refcount_bits=8", "a.qcow2", "10M"]),
    ("refcount 64", [], ["-f", "qcow2", "-o", "refcount_bits=64", "a.qcow2", "10M"]),
    ("extended l2", [], ["-f", "qcow2", "-o", "extended_l2=on", "a.qcow2", "10M"]),
    ("zstd", [], ["-f", "qcow2", "-o", "compression_type=zstd", "a.qcow2", "10M"]),
    ("everything v3", [], ["-f", "qcow2", "-o",
                           "compat=1.1,lazy_refcounts=on,refcount_bits=64,cluster_size=32k,"
                           "extended_l2=on,compression_type=zstd", "a.qcow2", "10M"]),
    ("refcount table grows", [], ["-f", "qcow2", "-o", "cluster_size=512,refcount_bits=64",
                                  "a.qcow2", "200M"]),
    ("metadata", [], ["-f", "qcow2", "-o", "preallocation=metadata", "a.qcow2", "5M"]),
    ("metadata unaligned", [], ["-f", "qcow2", "-o", "preallocation=metadata", "a.qcow2",
                                "300k"]),
    ("metadata two L2 tables", [], ["-f", "qcow2", "-o", "preallocation=metadata",
                                    "a.qcow2", "700M"]),
    ("metadata extended l2", [], ["-f", "qcow2", "-o",
                                  "preallocation=metadata,extended_l2=on", "a.qcow2", "1000000"]),
    ("metadata v2", [], ["-f", "qcow2", "-o", "preallocation=metadata,compat=0.10",
                         "a.qcow2", "3M"]),
    ("metadata small clusters", [], ["-f", "qcow2", "-o",
                                     "preallocation=metadata,cluster_size=512,refcount_bits=64",
                                     "a.qcow2", "2M"]),
    # 64 refcount blocks of 64 entries cover 2 MiB of file: the table itself must grow.
    ("metadata grows the refcount table", [], ["-f", "qcow2", "-o",
                                               "preallocation=metadata,cluster_size=512,"
                                               "refcount_bits=64", "a.qcow2", "3M"]),
    ("falloc grows the refcount table", [], ["-f", "qcow2", "-o",
                                             "preallocation=falloc,cluster_size=512,"
                                             "refcount_bits=64", "a.qcow2", "3M"]),
    ("L1 grows the refcount table", [], ["-f", "qcow2", "-o",
                                         "cluster_size=512,refcount_bits=64", "a.qcow2", "2G"]),
    ("falloc", [], ["-f", "qcow2", "-o", "preallocation=falloc", "a.qcow2", "3M"]),
    ("falloc unaligned", [], ["-f", "qcow2", "-o", "preallocation=falloc", "a.qcow2", "1000"]),
    ("falloc small clusters", [], ["-f", "qcow2", "-o",
                                   "preallocation=falloc,cluster_size=512,refcount_bits=64",
                                   "a.qcow2", "2M"]),
    ("falloc size zero", [], ["-f", "qcow2", "-o", "preallocation=falloc", "a.qcow2", "0"]),
    ("full", [], ["-f", "qcow2", "-o", "preallocation=full", "a.qcow2", "3M"]),
    ("full extended l2", [], ["-f", "qcow2", "-o", "preallocation=full,extended_l2=on",
                              "a.qcow2", "3M"]),
    ("backing, size from it", [["-f", "qcow2", "base.qcow2", "5M"]],
     ["-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", "top.qcow2"]),
    ("backing with size", [["-f", "qcow2", "base.qcow2", "5M"]],
     ["-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", "top.qcow2", "9M"]),
    ("backing raw", [["-f", "raw", "base.raw", "3M"]],
     ["-f", "qcow2", "-b", "base.raw", "-F", "raw", "top.qcow2"]),
    ("backing in -o", [["-f", "qcow2", "base.qcow2", "5M"]],
     ["-f", "qcow2", "-o", "backing_file=base.qcow2,backing_fmt=qcow2", "top.qcow2"]),
    ("backing v2", [["-f", "qcow2", "base.qcow2", "5M"]],
     ["-f", "qcow2", "-o", "compat=0.10", "-b", "base.qcow2", "-F", "qcow2", "top.qcow2"]),
    ("backing unchecked", [], ["-f", "qcow2", "-u", "-b", "nowhere.qcow2", "-F", "qcow2",
                               "top.qcow2", "1M"]),
    ("backing with metadata and extended l2", [["-f", "qcow2", "base.qcow2", "5M"]],
     ["-f", "qcow2", "-o", "preallocation=metadata,extended_l2=on", "-b", "base.qcow2",
      "-F", "qcow2", "top.qcow2"]),
    ("data file", [], ["-f", "qcow2", "-o", "data_file=a.data", "a.qcow2", "1000000"]),
    ("data file raw", [], ["-f", "qcow2", "-o", "data_file=a.data,data_file_raw=on",
                           "a.qcow2", "1000000"]),
    ("data file metadata", [], ["-f", "qcow2", "-o",
                                "data_file=a.data,preallocation=metadata,cluster_size=4k",
                                "a.qcow2", "1000000"]),
    ("data file falloc", [], ["-f", "qcow2", "-o", "data_file=a.data,preallocation=falloc",
                              "a.qcow2", "2M"]),
    ("data file full", [], ["-f", "qcow2", "-o", "data_file=a.data,preallocation=full",
                            "a.qcow2", "2M"]),
    ("raw", [], ["-f", "raw", "a.raw", "1M"]),
    ("raw default format", [], ["a.raw", "1000"]),
    ("raw falloc", [], ["-f", "raw", "-o", "preallocation=falloc", "a.raw", "1M"]),
    ("raw full", [], ["-f", "raw", "-o", "preallocation=full", "a.raw", "1M"]),
    ("raw truncates", [["-f", "raw", "a.raw", "3M"]], ["-f", "raw", "a.raw", "1M"]),
    ("qcow2 over a bigger file", [["-f", "raw", "a.qcow2", "3M"]], ["-f", "qcow2", "a.qcow2",
                                                                     "1M"]),
    ("options accumulate", [], ["-f", "qcow2", "-o", "cluster_size=4k", "-o", "lazy_refcounts=on",
                                "a.qcow2", "1M"]),
    ("comma in backing name", [], ["-f", "qcow2", "-u", "-o", "backing_file=a,,b",
                                   "-F", "raw", "a.qcow2", "1M"]),
    ("file options", [], ["-f", "qcow2", "-o", "nocow=off,extent_size_hint=1M", "a.qcow2",
                          "1M"]),
    ("help", [], ["-f", "qcow2", "-o", "help"]),
    ("help with a file", [], ["-f", "qcow2", "-o", "?", "a.qcow2", "1M"]),
    ("raw help", [], ["-f", "raw", "-o", "help"]),
]

# Images whose backing file does not exist: they cannot be opened, only compared.
DANGLING_BACKING = {"backing unchecked", "comma in backing name"}

BAD = [
    ("no backing format", [["-f", "qcow2", "base.qcow2", "1M"]],
     ["-f", "qcow2", "-b", "base.qcow2", "top.qcow2"]),
    ("no backing format, raw", [["-f", "raw", "base.raw", "1M"]],
     ["-f", "qcow2", "-b", "base.raw", "top.qcow2"]),
    ("no backing format unchecked", [], ["-f", "qcow2", "-u", "-b", "x", "top.qcow2", "1M"]),
    ("missing backing", [], ["-f", "qcow2", "-b", "nowhere", "-F", "qcow2", "top.qcow2", "1M"]),
    ("unchecked backing without size", [], ["-f", "qcow2", "-u", "-b", "x", "-F", "raw",
                                            "top.qcow2"]),
    ("no size", [], ["-f", "qcow2", "a.qcow2"]),
    ("no file name", [], ["-f", "qcow2"]),
    ("bad size", [], ["-f", "qcow2", "a.qcow2", "1x"]),
    ("fraction of bytes", [], ["-f", "qcow2", "a.qcow2", "1.5B"]),
    ("size too large", [], ["-f", "qcow2", "a.qcow2", "8E"]),
    ("negative size", [], ["-f", "qcow2", "a.qcow2", "-1"]),
    ("extra argument", [], ["-f", "qcow2", "a.qcow2", "1M", "x"]),
    ("unknown option", [], ["-Z"]),
    ("size twice", [], ["-f", "qcow2", "-o", "size=2M", "a.qcow2", "1M"]),
    ("bad cluster size", [], ["-f", "qcow2", "-o", "cluster_size=3000", "a.qcow2", "1M"]),
    ("cluster size too big", [], ["-f", "qcow2", "-o", "cluster_size=4M", "a.qcow2", "1M"]),
    ("cluster size not a size", [], ["-f", "qcow2", "-o", "cluster_size=abc", "a.qcow2", "1M"]),
    ("lazy on v2", [], ["-f", "qcow2", "-o", "lazy_refcounts=on,compat=0.10", "a.qcow2", "1M"]),
    ("refcount 8 on v2", [], ["-f", "qcow2", "-o", "refcount_bits=8,compat=0.10", "a.qcow2",
                              "1M"]),
    ("refcount 3", [], ["-f", "qcow2", "-o", "refcount_bits=3", "a.qcow2", "1M"]),
    ("refcount 128", [], ["-f", "qcow2", "-o", "refcount_bits=128", "a.qcow2", "1M"]),
    ("refcount not a number", [], ["-f", "qcow2", "-o", "refcount_bits=abc", "a.qcow2", "1M"]),
    ("extended l2 small clusters", [], ["-f", "qcow2", "-o", "extended_l2=on,cluster_size=4k",
                                        "a.qcow2", "1M"]),
    ("extended l2 on v2", [], ["-f", "qcow2", "-o", "extended_l2=on,compat=0.10", "a.qcow2",
                               "1M"]),
    ("zstd on v2", [], ["-f", "qcow2", "-o", "compression_type=zstd,compat=0.10", "a.qcow2",
                        "1M"]),
    ("unknown compression", [], ["-f", "qcow2", "-o", "compression_type=foo", "a.qcow2", "1M"]),
    ("bad compat", [], ["-f", "qcow2", "-o", "compat=2", "a.qcow2", "1M"]),
    ("bad preallocation", [], ["-f", "qcow2", "-o", "preallocation=xyz", "a.qcow2", "1M"]),
    ("bad bool", [], ["-f", "qcow2", "-o", "lazy_refcounts=maybe", "a.qcow2", "1M"]),
    ("unknown parameter", [], ["-f", "qcow2", "-o", "bogus=1", "a.qcow2", "1M"]),
    ("empty option list", [], ["-f", "qcow2", "-o", ",", "a.qcow2", "1M"]),
    ("trailing comma", [], ["-f", "qcow2", "-o", "a,", "a.qcow2", "1M"]),
    ("unknown format", [], ["-f", "foo", "a.qcow2", "1M"]),
    ("unknown format help", [], ["-f", "foo", "-o", "help"]),
    ("backing with metadata", [["-f", "qcow2", "base.qcow2", "1M"]],
     ["-f", "qcow2", "-o", "preallocation=metadata", "-b", "base.qcow2", "-F", "qcow2",
      "top.qcow2"]),
    ("backing format without file", [], ["-f", "qcow2", "-o", "backing_fmt=qcow2", "a.qcow2",
                                         "1M"]),
    ("bad backing format", [], ["-f", "qcow2", "-u", "-o", "backing_fmt=foo,backing_file=x",
                                "a.qcow2", "1M"]),
    ("backing is the image", [], ["-f", "qcow2", "-b", "a.qcow2", "-F", "qcow2", "a.qcow2"]),
    ("empty backing name", [], ["-f", "qcow2", "-b", "", "-F", "qcow2", "a.qcow2", "1M"]),
    ("raw with backing", [], ["-f", "raw", "-b", "x", "-F", "raw", "a.raw", "1M"]),
    ("data-file-raw without data file", [], ["-f", "qcow2", "-o", "data_file_raw=on",
                                             "a.qcow2", "1M"]),
    ("data file on v2", [], ["-f", "qcow2", "-o", "data_file=d.img,compat=0.10", "a.qcow2",
                             "1M"]),
    ("data-file-raw with backing", [], ["-f", "qcow2", "-u", "-b", "x", "-F", "raw", "-o",
                                        "data_file=d.img,data_file_raw=on", "a.qcow2", "1M"]),
    ("too large for small clusters", [], ["-f", "qcow2", "-o", "cluster_size=512", "a.qcow2",
                                          "100T"]),
    ("failure removes the old file", [["-f", "raw", "a.qcow2", "1M"]],
     ["-f", "qcow2", "-o", "compat=0.10,lazy_refcounts=on", "a.qcow2", "1M"]),
    ("raw metadata", [], ["-f", "raw", "-o", "preallocation=metadata", "a.raw", "1M"]),
    ("raw bad preallocation", [], ["-f", "raw", "-o", "preallocation=xyz", "a.raw", "1M"]),
]


def run(cmd, cwd):
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120)
    return p.returncode, p.stdout, p.stderr


def same_files(a, b):
    names_a, names_b = sorted(os.listdir(a)), sorted(os.listdir(b))
    if names_a != names_b:
        return f"files differ: {names_a} vs {names_b}"
    for n in names_a:
        if not filecmp.cmp(os.path.join(a, n), os.path.join(b, n), shallow=False):
            return f"{n} differs (cmp)"
    return None


def check_image(strata_io, path, cwd):
    """qemu-img check, and a read through qemu-io and strata-io, of one qcow2 image."""
    rc, out, err = run(["qemu-img", "check", path], cwd)
    if rc != 0:
        return f"qemu-img check {path}: {rc} {out}{err}"
    rc, out, err = run(["qemu-img", "info", "--output=json", path], cwd)
    size = int(out.split('"virtual-size": ')[1].split(",")[0]) if rc == 0 else 0
    last = max(size - 512, 0) // 512 * 512
    cmds = ["-c", "length"]
    if size >= 512:
        cmds += ["-c", "read 0 512", "-c", f"read {last} 512"]
    for tool in (["qemu-io", "-f", "qcow2", "-r"], [strata_io, "-f", "qcow2", "-r"]):
        rc, out, err = run(tool + cmds + [path], cwd)
        if rc != 0 or err or "fail" in out.lower():
            return f"{tool[0]} {path}: {rc} {out}{err}"
    return None


def run_case(strata_img, strata_io, name, setup, args, good):
    with tempfile.TemporaryDirectory(dir="/dev/shm") as qd, \
            tempfile.TemporaryDirectory(dir="/dev/shm") as sd:
        for s in setup:
            for d in (qd, sd):
                subprocess.run(["qemu-img", "create", "-q"] + s, cwd=d, check=True)
        q = run(["qemu-img", "create"] + args, qd)
        s = run([strata_img, "create"] + args, sd)
        s = (s[0], s[1], s[2].replace(os.path.basename(strata_img), "qemu-img"))
        problems = []
        if q != s:
            problems.append(f"output differs:\n  qemu:   {q!r}\n  strata: {s!r}")
        if good and q[0] != 0:
            problems.append(f"qemu-img failed: {q!r}")
        if not good and q[0] == 0:
            problems.append("qemu-img succeeded on a bad case")
        diff = same_files(qd, sd)
        if diff:
            problems.append(diff)
        if good and not diff and s[0] == 0 and name not in DANGLING_BACKING:
            for n in sorted(os.listdir(sd)):
                with open(os.path.join(sd, n), "rb") as f:
                    if f.read(4) != b"QFI\xfb":
                        continue
                err = check_image(strata_io, n, sd)
                if err:
                    problems.append(err)
        return problems


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--strata-img", required=True)
    ap.add_argument("--strata-io", required=True)
    ap.add_argument("--only", help="run the cases whose name contains this")
    a = ap.parse_args()
    a.strata_img, a.strata_io = os.path.abspath(a.strata_img), os.path.abspath(a.strata_io)
    if not shutil.which("qemu-img") or not shutil.which("qemu-io"):
        print("qemu-img/qemu-io not installed: skipping")
        return 77
    passed = failed = 0
    for good, cases in ((True, GOOD), (False, BAD)):
        for name, setup, args in cases:
            if a.only and a.only not in name:
                continue
            problems = run_case(a.strata_img, a.strata_io, name, setup, args, good)
            if problems:
                failed += 1
                print(f"FAIL {name}: {' '.join(args)}")
                for p in problems:
                    print("  " + p)
            else:
                passed += 1
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
