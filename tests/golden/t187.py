#!/usr/bin/env python3
"""Golden test after QEMU iotest 187: reopen -r/-w and writes.

A write to an image opened read-only fails with "Block node is read-only"; reopen -w makes
writes succeed, reopen -r blocks them again (strata-io first gives up its own WRITE, as qemu-io
does); the same starting read-write; the data written while writable stays readable.
"""

import sys

from qemu_io_script import main

C = "-c"
# Every write goes to its own offset, so stdout shows which ones succeeded (stderr is recorded
# apart from stdout and cannot show the order), and the reads check what the image holds.
CASES = [
    ("read-only at start, then -w, then -r",
     ["-f", "raw", "-r", C, "write -P 0x11 0 4k", C, "reopen -w", C, "write -P 0x22 4k 4k",
      C, "reopen -r", C, "write -P 0x33 8k 4k", C, "read -P 0 0 4k", C, "read -P 0x22 4k 4k",
      C, "read -P 0 8k 4k", "t.raw"]),
    ("read-write at start, then -r, then -w",
     ["-f", "raw", C, "write -P 0x11 0 4k", C, "reopen -r", C, "write -P 0x22 4k 4k",
      C, "reopen -w", C, "write -P 0x33 8k 4k", C, "read -P 0x11 0 4k", C, "read -P 0 4k 4k",
      C, "read -P 0x33 8k 4k", "t.raw"]),
    ("open -r command, then -w",
     [C, "open -r -o driver=raw t.raw", C, "write 0 4k", C, "reopen -w", C, "write 4k 4k"]),
    ("reopen without options keeps the mode",
     ["-f", "raw", "-r", C, "reopen", C, "write 0 4k", C, "reopen -w", C, "reopen",
      C, "write 4k 4k", "t.raw"]),
    ("read-only through -o, and back",
     ["-f", "raw", C, "reopen -o read-only=on", C, "write 0 4k", C, "reopen -o read-only=off",
      C, "write 4k 4k", "t.raw"]),
    ("-o read-only=on while this tool still holds WRITE",
     ["-f", "raw", C, "write 0 4k", C, "reopen -o read-only", C, "write 4k 4k", "t.raw"]),
    ("aio write, then reopen -r waits for it",
     ["-f", "raw", C, "aio_write -P 0x44 0 4k", C, "reopen -r", C, "read -P 0x44 0 4k",
      "t.raw"]),
    ("cache modes",
     ["-f", "raw", C, "reopen -c unsafe", C, "write 0 4k", C, "reopen -c writethrough",
      C, "write 4k 4k", C, "reopen -c writeback -r", C, "write 8k 4k", C, "reopen -c bogus",
      "t.raw"]),
]

if __name__ == "__main__":
    sys.exit(main(__doc__, CASES))
