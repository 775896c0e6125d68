#!/usr/bin/env python3
"""qcow2 resize through strata-io against qemu-io: grow with each preallocation mode, shrink.

For each case the same qemu-io commands run on twin images through qemu-io and strata-io. The
test passes when both print the same lines (timing aside; each script ends with `length`) and
exit alike, Strata's image passes `qemu-img check` without leaks, the twins have the same content
(`qemu-img compare`), and with falloc/full the file really holds the preallocated space.

Exit status: 0 pass, 1 fail, 77 skip (qemu tools missing).
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

TIMING = re.compile(r"^\S+ (bytes|KiB|MiB|GiB|TiB|PiB|EiB), \d+ ops; .* ops/sec\)$")
MiB = 1 << 20

CASES = {
    "grow_off": ("", ["write -P 3 100k 70k", "truncate 3M", "read -P 0 1M 2M",
                      "write -P 4 2M 64k", "read -P 3 100k 70k"]),
    "grow_metadata": ("", ["write -P 3 100k 4k", "truncate -m metadata 3M", "read -P 0 1M 2M",
                           "write -P 4 1500k 10k", "read -P 4 1500k 10k"]),
    "grow_falloc": ("", ["truncate -m falloc 9M", "read -P 0 0 9M", "write -P 5 8M 4k"]),
    "grow_full": ("cluster_size=4k", ["truncate -m full 5M", "read -P 0 1M 4M"]),
    "grow_extended_l2": ("extended_l2=on", ["write -P 6 3k 2k", "truncate -m metadata 4M",
                                            "read -P 0 1M 3M", "read -P 6 3k 2k"]),
    "shrink": ("", ["write -P 7 0 1M", "truncate 300k", "length", "truncate 1M",
                    "read -P 7 0 256k", "read -P 0 320k 704k"]),
    "shrink_falloc_refused": ("", ["truncate -m falloc 512k"]),
}


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def strip(text):
    return [l for l in text.splitlines() if not TIMING.match(l)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--strata-io", required=True)
    args = ap.parse_args()
    if shutil.which("qemu-img") is None or shutil.which("qemu-io") is None:
        print("qemu tools missing: skipped")
        return 77
    failed = []
    with tempfile.TemporaryDirectory(dir="/var/tmp") as d:
        for name, (opts, cmds) in CASES.items():
            images = {}
            outs = {}
            for tool in ("qemu-io", args.strata_io):
                img = os.path.join(d, f"{name}-{os.path.basename(tool)}.qcow2")
                create = ["qemu-img", "create", "-q", "-f", "qcow2"]
                if opts:
                    create += ["-o", opts]
                run(create + [img, "1M"])
                argv = [tool, "-f", "qcow2"]
                for c in cmds + ["length"]:
                    argv += ["-c", c]
                outs[tool] = run(argv + [img])
                images[tool] = img
            q, s = outs["qemu-io"], outs[args.strata_io]
            if strip(q.stdout) != strip(s.stdout) or q.returncode != s.returncode:
                failed.append(f"{name}: output differs:\n qemu-io: {strip(q.stdout)} "
                              f"{q.stderr}\n strata-io: {strip(s.stdout)} {s.stderr}")
                continue
            c = run(["qemu-img", "check", images[args.strata_io]])
            if c.returncode != 0:
                failed.append(f"{name}: qemu-img check: {c.stdout} {c.stderr}")
            # Content only: where preallocated clusters sit is the allocator's business.
            cmp = run(["qemu-img", "compare", images["qemu-io"], images[args.strata_io]])
            if cmp.returncode != 0:
                failed.append(f"{name}: qemu-img compare: {cmp.stdout} {cmp.stderr}")
            if name in ("grow_falloc", "grow_full"):
                st = os.stat(images[args.strata_io])
                want = int(cmds[0].split()[-1].rstrip("M")) * MiB - MiB
                if st.st_blocks * 512 < want:
                    failed.append(f"{name}: only {st.st_blocks * 512} bytes allocated in the "
                                  f"file, {want} expected at least")
    for f in failed:
        print("FAIL", f)
    if failed:
        return 1
    print(f"{len(CASES)} resize cases: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
