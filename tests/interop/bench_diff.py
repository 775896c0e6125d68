#!/usr/bin/env python3
"""Differential test of strata-img bench against qemu-img bench.

Each case runs both tools with the same flags on their own copy of one image, and checks that
they print the same lines (the run time aside, whose shape is checked), exit the same way, and
leave byte-identical images. Write tests with a pattern, a step and a start offset show where
requests land, including the wrap-around at the end of the image and a request that crosses
the end.

Exit status: 0 pass, 1 fail, 77 skip (qemu-img missing).
"""

import argparse
import filecmp
import os
import re
import shutil
import subprocess
import sys
import tempfile

RUN_LINE = re.compile(r"^Run completed in \d+\.\d{3} seconds\.$")

# (name, image size, bench flags)
CASES = [
    ("reads", 1 << 20, ["-c", "2000", "-d", "16"]),
    ("reads, depth 1, threads", 1 << 20, ["-c", "500", "-d", "1", "-i", "threads"]),
    ("reads, io_uring, 512-byte requests", 1 << 20,
     ["-c", "500", "-d", "4", "-i", "io_uring", "-s", "512"]),
    ("writes wrap at the end", 128 << 10,
     ["-w", "--pattern=0x5a", "-c", "40", "-d", "4", "-s", "4k", "-S", "12k", "-o", "4k"]),
    ("writes with step = buffer size", 256 << 10,
     ["-w", "--pattern=7", "-c", "100", "-d", "16", "-s", "512", "-S", "0", "-o", "1000"]),
    ("writes with drained flushes", 512 << 10,
     ["-w", "--pattern=9", "-c", "64", "-d", "8", "--flush-interval=16", "-S", "8k"]),
    ("writes with undrained flushes", 512 << 10,
     ["-w", "--pattern=11", "-c", "64", "-d", "8", "--flush-interval=16", "--no-drain"]),
    ("writethrough writes", 64 << 10,
     ["-w", "-t", "writethrough", "--pattern=3", "-c", "20", "-d", "2", "-s", "1k"]),
    ("unsafe writes", 64 << 10, ["-w", "-t", "unsafe", "--pattern=4", "-c", "20", "-d", "2"]),
    ("a write crossing the end fails", 130 << 10,
     ["-w", "--pattern=0x33", "-c", "40", "-d", "1", "-s", "4k", "-o", "112k"]),
    ("no requests", 64 << 10, ["-w", "-c", "0"]),
]


def run(tool, flags, image):
    p = subprocess.run([tool, "bench", "-f", "raw"] + flags + [image], capture_output=True,
                       text=True, timeout=120)
    return p.returncode, p.stdout.splitlines(), p.stderr.replace(os.path.basename(tool), "PROG")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--strata-img", required=True)
    ap.add_argument("--qemu-img", default=shutil.which("qemu-img"))
    args = ap.parse_args()
    if not args.qemu_img:
        print("SKIP: qemu-img not found (install qemu-utils)")
        return 77

    failures = 0
    with tempfile.TemporaryDirectory(dir="/dev/shm", prefix="strata-bench-diff-") as tmp:
        for name, size, flags in CASES:
            base = os.path.join(tmp, "base.raw")
            with open(base, "wb") as f:
                f.write(bytes(range(256)) * (size // 256))
            q_img, s_img = os.path.join(tmp, "q.raw"), os.path.join(tmp, "s.raw")
            shutil.copyfile(base, q_img)
            shutil.copyfile(base, s_img)
            q_rc, q_out, q_err = run(args.qemu_img, flags, q_img)
            s_rc, s_out, s_err = run(args.strata_img, flags, s_img)
            problems = []
            if q_rc != s_rc:
                problems.append(f"exit status {s_rc}, qemu-img {q_rc}")
            q_lines = [l for l in q_out if not RUN_LINE.match(l)]
            s_lines = [l for l in s_out if not RUN_LINE.match(l)]
            if q_lines != s_lines:
                problems.append(f"stdout {s_lines}\n   qemu-img: {q_lines}")
            if len(q_out) - len(q_lines) != len(s_out) - len(s_lines):
                problems.append(f"the 'Run completed' line: {s_out}")
            if q_err != s_err:
                problems.append(f"stderr {s_err!r}\n   qemu-img: {q_err!r}")
            if not filecmp.cmp(q_img, s_img, shallow=False):
                problems.append("the images differ")
            if problems:
                failures += 1
                print(f"FAIL {name}: bench {' '.join(flags)}\n   " + "\n   ".join(problems))
            else:
                print(f"ok   {name}")
    print(f"{len(CASES) - failures}/{len(CASES)} cases passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
