#!/usr/bin/env python3
"""Bad input to strata-io and strata-img bench: each case must fail cleanly.

For every case the tool must exit non-zero, print the expected message, and leave the image
byte-for-byte unchanged. Where qemu-io / qemu-img fail the same way, the expected output is
theirs (run live on their own copy, program name substituted): Strata's texts are QEMU's texts.
Where Strata deliberately differs (its own usage text, features it does not have), the case
states the expected text itself.

Exit status: 0 pass, 1 fail, 77 skip (qemu-io or qemu-img missing).
"""

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile

TIMING = re.compile(r"^\S+ (bytes|KiB|MiB|GiB|TiB|PiB|EiB), \d+ ops; .* ops/sec\)$|"
                    r"^Run completed in ")

IMAGE_SIZE = 1 << 20

# Cases compared with the QEMU tool. {img} is the image, {dir} its directory.
QEMU_IO_CASES = [
    ("missing file", ["-f", "raw", "-c", "read 0 1", "{dir}/missing.raw"]),
    ("directory as image", ["-f", "raw", "-c", "read 0 1", "{dir}"]),
    ("unknown driver", ["-f", "bogus", "-c", "write 0 512", "{img}"]),
    ("invalid cache mode", ["-f", "raw", "-t", "bogus", "-c", "write 0 512", "{img}"]),
    ("invalid aio mode", ["-f", "raw", "-i", "bogus", "-c", "write 0 512", "{img}"]),
    ("invalid discard mode", ["-f", "raw", "-d", "bogus", "-c", "write 0 512", "{img}"]),
    ("force-share on a writable image", ["-f", "raw", "-U", "-c", "write 0 512", "{img}"]),
    ("--image-opts with -f", ["--image-opts", "-f", "raw", "-c", "write 0 512",
                              "driver=raw,file.filename={img}"]),
    ("-U against force-share=off", ["--image-opts", "-U", "-r", "-c", "read 0 512",
                                    "driver=raw,file.filename={img},force-share=off"]),
    ("write past the end", ["-f", "raw", "-c", "write -P 0x55 1M 512", "{img}"]),
    ("write across the end", ["-f", "raw", "-c", "write -P 0x55 1048064 1024", "{img}"]),
    ("zero write past the end", ["-f", "raw", "-c", "write -z 2M 4k", "{img}"]),
    ("discard past the end", ["-f", "raw", "-c", "discard 1M 4k", "{img}"]),
    ("aio write past the end", ["-f", "raw", "-c", "aio_write 1M 512", "-c", "aio_flush",
                                "-c", "write 7E 512", "{img}"]),
    ("pattern too large", ["-f", "raw", "-c", "write -P 0x1ff 0 512", "{img}"]),
    ("pattern not a number", ["-f", "raw", "-c", "write -P ab 0 512", "{img}"]),
    ("negative pattern", ["-f", "raw", "-c", "write -P -1 0 512", "{img}"]),
    ("write on a read-only image", ["-f", "raw", "-r", "-c", "write 0 512", "{img}"]),
    ("discard on a read-only image", ["-f", "raw", "-r", "-c", "discard 0 512", "{img}"]),
    ("truncate on a read-only image", ["-f", "raw", "-r", "-c", "truncate 2M", "{img}"]),
    ("unknown command", ["-f", "raw", "-c", "frobnicate 0 512", "{img}"]),
    ("too few arguments", ["-f", "raw", "-c", "write 0", "{img}"]),
    ("too many arguments", ["-f", "raw", "-c", "length 1", "-c", "truncate 1 2 3 4", "{img}"]),
    ("offset not a number", ["-f", "raw", "-c", "write abc 512", "{img}"]),
    ("unknown size suffix", ["-f", "raw", "-c", "write 0 12q", "{img}"]),
    ("size too large", ["-f", "raw", "-c", "write 0 99999999999999999999", "{img}"]),
    ("request too long", ["-f", "raw", "-c", "write 0 3G", "-c", "discard 0 3G", "{img}"]),
    ("-u without -z", ["-f", "raw", "-c", "write -u 0 512", "{img}"]),
    ("-z with -P", ["-f", "raw", "-c", "write -z -P 1 0 512", "{img}"]),
    ("invalid preallocation", ["-f", "raw", "-c", "truncate -m bogus 2M", "{img}"]),
    ("no file open", ["-c", "write 0 512"]),
    ("sleep needs a number", ["-f", "raw", "-c", "sleep 1k", "{img}"]),
]

# Cases where Strata's expected output is its own: (name, args, stderr, stdout prefix or None).
STRATA_IO_CASES = [
    ("unknown option", ["-Z", "-f", "raw", "-c", "write 0 512", "{img}"],
     "strata-io: invalid option -- 'Z'\n", "Usage: strata-io "),
    ("mistyped long option", ["--formt", "raw", "-c", "write 0 512", "{img}"],
     "strata-io: unrecognized option '--formt'\n", "Usage: strata-io "),
    ("option without its argument", ["-c", "write 0 512", "{img}", "-f"],
     "strata-io: option requires an argument -- 'f'\n", "Usage: strata-io "),
    ("two image operands", ["-f", "raw", "-c", "write 0 512", "{img}", "{img}"],
     "", "Usage: strata-io "),
    ("unknown command option", ["-f", "raw", "-c", "write -Z 0 512", "{img}"],
     "write: invalid option -- 'Z'\n",
     "write [-cCfnquz] [-P pattern] off len -- writes a number of bytes at a specified offset\n"),
    ("reopen with both -r and -w", ["-f", "raw", "-c", "reopen -r -w", "{img}"],
     "strata-io: Only one -r/-w option may be given\n", ""),
    ("snapshot mode is not supported", ["-s", "-f", "raw", "-c", "write 0 512", "{img}"],
     "strata-io: option '-s' is not supported\n", ""),
]

BENCH_CASES = [
    ("no image", ["-c", "10"]),
    ("two images", ["-c", "10", "{img}", "{img}"]),
    ("count not a number", ["-c", "abc", "-f", "raw", "{img}"]),
    ("count with a suffix", ["-c", "10k", "-f", "raw", "{img}"]),
    ("depth not a number", ["-d", "abc", "-f", "raw", "{img}"]),
    ("buffer size not a size", ["-s", "abc", "-f", "raw", "{img}"]),
    ("buffer size too large", ["-s", "3G", "-f", "raw", "{img}"]),
    ("negative offset", ["-o", "-1", "-f", "raw", "{img}"]),
    ("offset too large", ["-o", "8E", "-f", "raw", "{img}"]),
    ("step too large", ["-S", "3G", "-f", "raw", "{img}"]),
    ("pattern too large", ["--pattern=256", "-w", "-f", "raw", "{img}"]),
    ("unknown option", ["-Z", "-f", "raw", "{img}"]),
    ("unknown long option", ["--bogus", "-f", "raw", "{img}"]),
    ("missing argument", ["-f", "raw", "{img}", "-c"]),
    ("flush interval on a read test", ["--flush-interval=64", "-f", "raw", "{img}"]),
    ("flush interval below depth", ["-w", "-d", "8", "--flush-interval=4", "-f", "raw",
                                    "{img}"]),
    ("invalid aio mode", ["-i", "bogus", "-f", "raw", "{img}"]),
    ("invalid cache mode", ["-t", "bogus", "-f", "raw", "{img}"]),
    ("missing image", ["-c", "10", "-f", "raw", "{dir}/missing.raw"]),
    ("unknown driver", ["-c", "10", "-f", "bogus", "{img}"]),
    ("force-share on a write test", ["-w", "-U", "-c", "10", "-f", "raw", "{img}"]),
    ("--image-opts with -f", ["--image-opts", "-f", "raw", "driver=raw,file.filename={img}"]),
    ("writes past the end", ["-w", "--pattern=0x5a", "-c", "10", "-o", "1M", "-f", "raw",
                             "{img}"]),
]

STRATA_BENCH_CASES = [
    ("depth zero", ["-d", "0", "-c", "10", "-f", "raw", "{img}"],
     "strata-img: Invalid queue depth specified\n", ""),
]


def digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


class Runner:
    def __init__(self, tmp):
        self.tmp = tmp
        self.base = os.path.join(tmp, "base.raw")
        with open(self.base, "wb") as f:
            f.write(os.urandom(IMAGE_SIZE))
        self.base_digest = digest(self.base)
        self.failures = 0

    def run(self, tool, args):
        """Runs tool on a fresh copy of the image: (rc, stdout, stderr, image unchanged)."""
        img = os.path.join(self.tmp, "img.raw")
        shutil.copyfile(self.base, img)
        argv = [tool] + [a.format(img=img, dir=self.tmp) for a in args]
        p = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        unchanged = digest(img) == self.base_digest
        os.unlink(img)
        # Paths differ between runs only by the tool; keep them out of the comparison.
        out = p.stdout.replace(img, "IMG").replace(self.tmp, "DIR")
        err = p.stderr.replace(img, "IMG").replace(self.tmp, "DIR")
        return p.returncode, out, err, unchanged

    def check(self, name, ok, detail):
        if ok:
            print(f"ok   {name}")
        else:
            self.failures += 1
            print(f"FAIL {name}\n{detail}")


def filtered(text, prog):
    lines = [l for l in text.splitlines(keepends=True) if not TIMING.match(l.rstrip("\n"))]
    return "".join(lines).replace(prog, "PROG")


def compare_with_qemu(r, label, strata, qemu, cases):
    s_prog, q_prog = os.path.basename(strata), os.path.basename(qemu)
    for name, args in cases:
        s_rc, s_out, s_err, s_same = r.run(strata, args)
        q_rc, q_out, q_err, _ = r.run(qemu, args)
        s_out, s_err = filtered(s_out, s_prog), filtered(s_err, s_prog)
        q_out, q_err = filtered(q_out, q_prog), filtered(q_err, q_prog)
        problems = []
        if s_rc == 0:
            problems.append("exit status 0")
        if s_rc != q_rc:
            problems.append(f"exit status {s_rc}, {q_prog} {q_rc}")
        if s_err != q_err:
            problems.append(f"stderr {s_err!r}\n   {q_prog}: {q_err!r}")
        if s_out != q_out:
            problems.append(f"stdout {s_out!r}\n   {q_prog}: {q_out!r}")
        if not s_same:
            problems.append("the image changed")
        r.check(f"{label}: {name}", not problems, "   " + "\n   ".join(problems))


def check_own(r, label, tool, cases):
    for name, args, stderr, stdout in cases:
        rc, out, err, same = r.run(tool, args)
        problems = []
        if rc == 0:
            problems.append("exit status 0")
        if err != stderr:
            problems.append(f"stderr {err!r}, expected {stderr!r}")
        if stdout is not None and not out.startswith(stdout):
            problems.append(f"stdout {out[:200]!r}, expected to start with {stdout!r}")
        if stdout == "" and out:
            problems.append(f"stdout {out[:200]!r}, expected nothing")
        if not same:
            problems.append("the image changed")
        r.check(f"{label}: {name}", not problems, "   " + "\n   ".join(problems))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--strata-io", required=True)
    ap.add_argument("--strata-img", required=True)
    ap.add_argument("--qemu-io", default=shutil.which("qemu-io"))
    ap.add_argument("--qemu-img", default=shutil.which("qemu-img"))
    args = ap.parse_args()
    if not args.qemu_io or not args.qemu_img:
        print("SKIP: qemu-io/qemu-img not found (install qemu-utils)")
        return 77

    with tempfile.TemporaryDirectory(dir="/dev/shm", prefix="strata-bad-input-") as tmp:
        r = Runner(tmp)
        compare_with_qemu(r, "strata-io", args.strata_io, args.qemu_io, QEMU_IO_CASES)
        check_own(r, "strata-io", args.strata_io, STRATA_IO_CASES)
        bench = [(n, ["bench"] + a) for n, a in BENCH_CASES]
        compare_with_qemu(r, "strata-img bench", args.strata_img, args.qemu_img, bench)
        own_bench = [(n, ["bench"] + a, e, o) for n, a, e, o in STRATA_BENCH_CASES]
        check_own(r, "strata-img bench", args.strata_img, own_bench)
        total = (len(QEMU_IO_CASES) + len(STRATA_IO_CASES) + len(BENCH_CASES) +
                 len(STRATA_BENCH_CASES))
        print(f"{total - r.failures}/{total} cases passed")
        return 1 if r.failures else 0


if __name__ == "__main__":
    sys.exit(main())
