#!/usr/bin/env python3
"""Differential test: the same qemu-io script through qemu-io and strata-io.

A seeded generator writes ~150 qemu-io commands (aligned and unaligned reads and writes with
patterns, write -z and -z -u, discard, flush, length, map, pattern checks that pass and some that
fail, -v dumps, out-of-range requests, parse errors, truncate, aio requests). Both tools run the
script on their own copy of one image. The test passes when

  - stdout matches line for line once the timing lines are removed (the only lines whose
    numbers may differ),
  - stderr matches once the program name is made the same,
  - the exit statuses match,
  - and the two images end byte-identical.

Exit status: 0 pass, 1 fail, 77 skip (qemu-io missing, or O_DIRECT unavailable for -t none).
"""

import argparse
import difflib
import filecmp
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile

# "4 KiB, 1 ops; 00.00 sec (7.050 MiB/sec and 1804.8489 ops/sec)"
TIMING = re.compile(r"^\S+ (bytes|KiB|MiB|GiB|TiB|PiB|EiB), \d+ ops; .* ops/sec\)$")

MiB = 1 << 20
KiB = 1 << 10

# variant -> (extra tool options, directory for the images, needs O_DIRECT)
VARIANTS = {
    "default": ([], "/dev/shm", False),
    "threads": (["-i", "threads"], "/dev/shm", False),
    "io_uring": (["-i", "io_uring"], "/dev/shm", False),
    "writeback": (["-t", "writeback"], "/dev/shm", False),
    "none": (["-t", "none"], "/var/tmp", True),
}


class Model:
    """What the image should hold, to pick pattern checks that pass."""

    def __init__(self, size):
        self.data = bytearray(size)
        self.extents = []  # (offset, length, byte) of past pattern writes

    @property
    def size(self):
        return len(self.data)

    def fill(self, off, length, byte):
        if off + length <= self.size:
            self.data[off:off + length] = bytes([byte]) * length

    def truncate(self, size):
        if size < self.size:
            del self.data[size:]
        else:
            self.data.extend(bytes(size - self.size))

    def uniform(self, off, length):
        """The byte [off, off+length) holds throughout, or None."""
        if length == 0 or off + length > self.size:
            return None
        chunk = self.data[off:off + length]
        return chunk[0] if chunk.count(chunk[0]) == length else None


class Generator:
    def __init__(self, seed, size):
        self.rnd = random.Random(seed)
        self.model = Model(size)

    def offset(self, aligned):
        if aligned:
            return self.rnd.randrange(0, self.model.size // 4096) * 4096
        return self.rnd.randrange(0, self.model.size - 1)

    def length(self, aligned, off):
        room = self.model.size - off
        if aligned:
            n = self.rnd.choice([512, 4096, 8192, 65536])
        else:
            n = self.rnd.randrange(1, 12000)
        return max(1, min(n, room))

    def size_arg(self, n):
        """Spell a size the way users do: with a suffix when it divides evenly."""
        if n and n % MiB == 0 and self.rnd.random() < 0.5:
            return f"{n // MiB}M"
        if n and n % KiB == 0 and self.rnd.random() < 0.5:
            return f"{n // KiB}k"
        return str(n)

    def write(self):
        aligned = self.rnd.random() < 0.5
        off = self.offset(aligned)
        n = self.length(aligned, off)
        byte = self.rnd.randrange(0, 256)
        fua = " -f" if self.rnd.random() < 0.1 else ""
        spelled = f"0x{byte:x}" if self.rnd.random() < 0.5 else str(byte)
        self.model.fill(off, n, byte)
        self.model.extents.append((off, n, byte))
        return f"write{fua} -P {spelled} {self.size_arg(off)} {self.size_arg(n)}"

    def zero(self):
        aligned = self.rnd.random() < 0.5
        off = self.offset(aligned)
        n = self.length(aligned, off)
        unmap = " -u" if self.rnd.random() < 0.5 else ""
        self.model.fill(off, n, 0)
        self.model.extents.append((off, n, 0))
        return f"write -z{unmap} {self.size_arg(off)} {self.size_arg(n)}"

    def discard(self):
        aligned = self.rnd.random() < 0.6
        off = self.offset(aligned)
        n = self.length(aligned, off)
        # With discard=unmap (qemu-io's default) the file driver punches a hole: zeroes.
        self.model.fill(off, n, 0)
        return f"discard {self.size_arg(off)} {self.size_arg(n)}"

    def check(self, expect_pass):
        candidates = [e for e in self.model.extents
                      if self.model.uniform(e[0], e[1]) is not None]
        if not candidates:
            return self.read_plain()
        off, n, _ = self.rnd.choice(candidates)
        if n > 1 and self.rnd.random() < 0.5:  # check a part of the extent
            skip = self.rnd.randrange(0, n)
            off, n = off + skip, self.rnd.randrange(1, n - skip + 1)
        byte = self.model.uniform(off, n)
        if not expect_pass:
            byte = (byte + 1 + self.rnd.randrange(0, 254)) % 256
        quiet = " -q" if self.rnd.random() < 0.3 else ""
        return f"read{quiet} -P {byte} {self.size_arg(off)} {self.size_arg(n)}"

    def read_plain(self):
        off = self.offset(self.rnd.random() < 0.5)
        n = self.length(False, off)
        return f"read {off} {n}"

    def dump(self):
        off = self.offset(False)
        n = max(1, min(self.rnd.randrange(1, 49), self.model.size - off))
        return f"read -v {off} {n}"

    def out_of_range(self):
        size = self.model.size
        off = self.rnd.choice([size, size - 1, size + 4096, size * 2, 7 * (1 << 60)])
        n = self.rnd.choice([1, 512, 4096])
        op = self.rnd.choice(["read", "write -P 7", "write -z", "discard", "aio_read"])
        suffix = ["aio_flush"] if op == "aio_read" else []
        return [f"{op} {off} {n}"] + suffix

    def truncate(self):
        size = self.model.size
        # Multiples of 512: qemu reports lengths in whole sectors, Strata in bytes.
        new = self.rnd.choice([size + 64 * KiB, size - 64 * KiB, size + 512, 4 * MiB])
        new = max(MiB, min(new, 8 * MiB))
        self.model.truncate(new)
        self.model.extents = [e for e in self.model.extents if e[0] + e[1] <= new]
        return [f"truncate {self.size_arg(new)}", "length"]

    def aio(self):
        off = self.offset(True)
        n = self.length(True, off)
        byte = self.rnd.randrange(0, 256)
        self.model.fill(off, n, byte)
        self.model.extents.append((off, n, byte))
        # One request at a time: completions in flight together may print in any order.
        return [f"aio_write -P {byte} {off} {n}", "aio_flush",
                f"aio_read -P {byte} {off} {n}", "aio_flush"]

    def parse_error(self):
        return self.rnd.choice([
            "read abc 512", "read 0 12q", "read -P 0x1ff 0 512", "write -P -1 0 512",
            "read 0 3G", "write 0 3G", "discard 0 3G", "write -u 0 512",
            "write -z -P 3 0 512", "read 0", "length 1", "read 0 99999999999999999999",
        ])

    def generate(self, count):
        kinds = [
            (self.write, 18), (self.zero, 7), (self.discard, 7),
            (lambda: self.check(True), 12), (lambda: self.check(False), 4),
            (self.read_plain, 5), (self.dump, 4), (self.out_of_range, 5),
            (self.truncate, 2), (self.aio, 3), (self.parse_error, 3),
            (lambda: "flush", 3), (lambda: "length", 2), (lambda: "map", 2),
        ]
        funcs = [k for k, _ in kinds]
        weights = [w for _, w in kinds]
        script = []
        while len(script) < count:
            cmd = self.rnd.choices(funcs, weights)[0]()
            script.extend(cmd if isinstance(cmd, list) else [cmd])
        script += ["map", "length", "flush"]
        return script


def run(tool, options, script, image):
    args = [tool, "-f", "raw"] + options
    for cmd in script:
        args += ["-c", cmd]
    args.append(image)
    p = subprocess.run(args, capture_output=True, text=True, timeout=300)
    return p.returncode, p.stdout, p.stderr


def normalize(stdout, stderr, prog):
    out = [l for l in stdout.splitlines() if not TIMING.match(l)]
    err = [l.replace(f"{prog}: ", "PROG: ") for l in stderr.splitlines()]
    return out, err


def direct_io_works(directory):
    try:
        fd, path = tempfile.mkstemp(dir=directory)
        os.close(fd)
        try:
            fd = os.open(path, os.O_RDWR | os.O_DIRECT)
            os.close(fd)
            return True
        finally:
            os.unlink(path)
    except OSError:
        return False


def show_diff(what, a, b):
    print(f"--- {what} differs (qemu-io vs strata-io):")
    for line in list(difflib.unified_diff(a, b, "qemu-io", "strata-io", lineterm=""))[:60]:
        print(line)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--strata-io", required=True)
    ap.add_argument("--qemu-io", default=shutil.which("qemu-io"))
    ap.add_argument("--variant", default="default", choices=sorted(VARIANTS))
    ap.add_argument("--seed", type=int, default=20241124)
    ap.add_argument("--count", type=int, default=150)
    ap.add_argument("--size", type=int, default=4 * MiB)
    ap.add_argument("--print-script", action="store_true")
    args = ap.parse_args()

    if not args.qemu_io:
        print("SKIP: qemu-io not found (install qemu-utils)")
        return 77
    options, directory, needs_direct = VARIANTS[args.variant]
    if needs_direct and not direct_io_works(directory):
        print(f"SKIP: O_DIRECT does not work in {directory}")
        return 77

    script = Generator(args.seed, args.size).generate(args.count)
    if args.print_script:
        print("\n".join(script))

    with tempfile.TemporaryDirectory(dir=directory, prefix="strata-io-diff-") as tmp:
        base = os.path.join(tmp, "base.raw")
        with open(base, "wb") as f:
            f.truncate(args.size)
        q_img = os.path.join(tmp, "qemu.raw")
        s_img = os.path.join(tmp, "strata.raw")
        shutil.copyfile(base, q_img)
        shutil.copyfile(base, s_img)

        q_rc, q_out, q_err = run(args.qemu_io, options, script, q_img)
        s_rc, s_out, s_err = run(args.strata_io, options, script, s_img)
        q_out, q_err = normalize(q_out, q_err, "qemu-io")
        s_out, s_err = normalize(s_out, s_err, os.path.basename(args.strata_io))

        ok = True
        if q_out != s_out:
            show_diff("stdout", q_out, s_out)
            ok = False
        if q_err != s_err:
            show_diff("stderr", q_err, s_err)
            ok = False
        if q_rc != s_rc:
            print(f"--- exit status differs: qemu-io {q_rc}, strata-io {s_rc}")
            ok = False
        if not filecmp.cmp(q_img, s_img, shallow=False):
            print(f"--- images differ: cmp {q_img} {s_img}")
            subprocess.run(["cmp", q_img, s_img])
            ok = False

    print(f"{'PASS' if ok else 'FAIL'}: {len(script)} commands, variant {args.variant}, "
          f"seed {args.seed}, {len(q_out)} output lines compared")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
