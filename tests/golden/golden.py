"""Shared pieces of the golden-output tests: run qemu-io and strata-io on the same commands,
normalise what may differ by design, and compare both with a checked-in expected file.

A transcript records, per tool invocation, a title line, its stdout, its stderr (each line
prefixed "E: ") and its exit status. Normalised away: the program name (qemu-io/strata-io ->
IO, qemu-img stays), timing lines, automatic node names (#block123 -> #blockN) and the
temporary directory (TEST_DIR).

A test passes when the qemu-io transcript and the strata-io transcript both equal the golden
file; it prints a unified diff for each one that does not. --update rewrites the golden file
from qemu-io's transcript (review the diff before committing it).

Exit status: 0 pass, 1 fail, 77 skip (qemu-io or qemu-img missing).
"""

import argparse
import difflib
import os
import re
import shutil
import subprocess
import sys
import tempfile

# "64 KiB, 1 ops; 00.00 sec (18.421 MiB/sec and 294.7323 ops/sec)"
TIMING = re.compile(r"^\S+ (bytes|KiB|MiB|GiB|TiB|PiB|EiB), \d+ ops; .* ops/sec\)$")
AUTO_NODE = re.compile(r"#block\d+")
PROG = re.compile(r"\b(qemu-io|strata-io)\b")

SKIP = 77


def parse_args(description):
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--strata-io", required=True)
    ap.add_argument("--golden", required=True, help="expected transcript")
    ap.add_argument("--update", action="store_true", help="rewrite the golden file from qemu-io")
    return ap.parse_args()


def require_qemu_tools():
    missing = [t for t in ("qemu-io", "qemu-img") if shutil.which(t) is None]
    if missing:
        print(f"skip: {', '.join(missing)} not installed")
        sys.exit(SKIP)


def normalise(text, test_dir):
    out = []
    for line in text.splitlines():
        line = line.replace(test_dir, "TEST_DIR")
        line = AUTO_NODE.sub("#blockN", line)
        line = PROG.sub("IO", line)
        if TIMING.match(line):
            line = "TIMING"
        out.append(line)
    return out


class Transcript:
    """Collects the normalised output of a sequence of tool runs."""

    def __init__(self, test_dir):
        self.test_dir = test_dir
        self.lines = []

    def title(self, text):
        self.lines.append(f"== {text}")

    def record(self, title, proc):
        """Adds a finished run (subprocess.CompletedProcess with text output)."""
        self.title(title)
        self.lines += normalise(proc.stdout, self.test_dir)
        self.lines += ["E: " + l for l in normalise(proc.stderr, self.test_dir)]
        self.lines.append(f"[exit {proc.returncode}]")

    def run(self, title, argv, timeout=60, **kwargs):
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              cwd=self.test_dir, stdin=subprocess.DEVNULL, **kwargs)
        self.record(title, proc)
        return proc

    def text(self):
        return "\n".join(self.lines) + "\n"


def compare(golden_path, transcripts, update):
    """transcripts: {tool name: text}; the one named 'qemu-io' seeds --update."""
    if update:
        with open(golden_path, "w") as f:
            f.write(transcripts["qemu-io"])
        print(f"updated {golden_path}")
    with open(golden_path) as f:
        expected = f.read()
    ok = True
    for tool, text in transcripts.items():
        if text == expected:
            print(f"{tool}: matches {os.path.basename(golden_path)}")
            continue
        ok = False
        print(f"{tool}: differs from {os.path.basename(golden_path)}:")
        sys.stdout.writelines(difflib.unified_diff(
            expected.splitlines(True), text.splitlines(True), "expected", tool))
    return 0 if ok else 1


def temp_dir():
    """A fresh directory for images: /dev/shm when it exists (small images, no disk I/O)."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    return tempfile.TemporaryDirectory(prefix="strata-golden-", dir=base)


def create_raw(path, size, fill=None):
    with open(path, "wb") as f:
        f.truncate(size)
        if fill is not None:
            f.write(bytes([fill]) * size)
