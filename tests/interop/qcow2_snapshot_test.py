#!/usr/bin/env python3
"""Reading qcow2 internal snapshots that qemu-img made, through strata-io's x-snapshot option.

qemu-img snapshot -c takes two snapshots between qemu-io writes (the second after a resize);
strata-io opens the image at each snapshot (by name and by id) read-only and finds the data of
that moment and its size; opening at a snapshot read-write and at an unknown snapshot fail with
clear texts; the active layer still reads its latest data.

Exit status: 0 pass, 1 fail, 77 skip (qemu tools missing).
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--strata-io", required=True)
    args = ap.parse_args()
    if shutil.which("qemu-img") is None or shutil.which("qemu-io") is None:
        print("qemu tools missing: skipped")
        return 77
    with tempfile.TemporaryDirectory() as d:
        img = os.path.join(d, "s.qcow2")
        steps = [
            ["qemu-img", "create", "-q", "-f", "qcow2", img, "8M"],
            ["qemu-io", "-f", "qcow2", "-c", "write -P 1 0 1M", "-c", "write -P 9 7M 64k", img],
            ["qemu-img", "snapshot", "-c", "first", img],
            ["qemu-io", "-f", "qcow2", "-c", "write -P 2 0 512k", "-c", "discard 7M 64k", img],
            ["qemu-img", "snapshot", "-c", "second", img],
            ["qemu-io", "-f", "qcow2", "-c", "write -P 3 512k 512k", img],
        ]
        for step in steps:
            r = run(step)
            if r.returncode != 0:
                print("setup failed:", step, r.stdout, r.stderr)
                return 1

        def strata(snapshot, cmds, read_only=True):
            opts = f"driver=qcow2,file.filename={img}"
            if snapshot is not None:
                opts += f",x-snapshot={snapshot}"
            argv = [args.strata_io, "--image-opts"] + (["-r"] if read_only else [])
            for c in cmds:
                argv += ["-c", c]
            return run(argv + [opts])

        failures = []

        def expect_ok(what, r):
            bad = "Pattern verification failed" in r.stdout or r.returncode != 0 or r.stderr
            if bad:
                failures.append(f"{what}: exit {r.returncode}: {r.stdout} {r.stderr}")

        expect_ok("snapshot 'first' by name",
                  strata("first", ["read -P 1 0 1M", "read -P 9 7M 64k", "read -P 0 1M 6M"]))
        expect_ok("snapshot 1 by id", strata("1", ["read -P 1 0 1M", "read -P 9 7M 64k"]))
        expect_ok("snapshot 'second'",
                  strata("second", ["read -P 2 0 512k", "read -P 1 512k 512k",
                                    "read -P 0 7M 64k"]))
        expect_ok("active layer", strata(None, ["read -P 2 0 512k", "read -P 3 512k 512k"]))
        length = strata("first", ["length"])
        if length.stdout.strip() != "8 MiB":
            failures.append(f"length at snapshot: {length.stdout!r}")
        rw = strata("first", ["read 0 1"], read_only=False)
        want = "x-snapshot can only be used with read-only images (read-only=on)"
        if rw.returncode == 0 or want not in rw.stderr:
            failures.append(f"read-write open at a snapshot: {rw.returncode} {rw.stderr!r}")
        missing = strata("nope", ["read 0 1"])
        if missing.returncode == 0 or "Can't find snapshot 'nope'" not in missing.stderr:
            failures.append(f"unknown snapshot: {missing.returncode} {missing.stderr!r}")
        for f in failures:
            print("FAIL", f)
        if failures:
            return 1
    print("snapshots read: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
