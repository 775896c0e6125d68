#!/usr/bin/env python3
"""Differential test of strata-img commit against qemu-img 7.2's commit.

Each case builds the same images twice with qemu-img and qemu-io, in two directories, and runs
`qemu-img commit` in one and `strata-img commit` in the other with the same arguments. Then:
  - exit status, stdout and stderr are equal (program name aside);
  - every image compares equal to its twin (`qemu-img compare`: the content, not the layout);
  - every image passes `qemu-img check`;
  - a top image that was emptied (no -d, no -b) reads as its backing file and has nothing
    allocated of its own (`qemu-img map`: no range at depth 0).
The matrix: qcow2 chains two and three deep, different cluster sizes per layer, a base smaller
than the top (it grows), zero and discarded ranges and compressed clusters in the top, v2 and
extended-L2 tops, a top with an internal snapshot, -d, -b with an intermediate image (by recorded, relative and absolute name),
a raw base, cache modes, -q. Error cases compare texts and statuses the same way, including the
lock errors while qemu-io holds one of the images.

Progress, which depends on timing and so is not compared byte for byte:
  - -p: stdout is frames "    (X.XX/100%)\\r", then "\\n" and "Image committed.\\n"; the first
    frame is 0.00, the last 100.00, the figures never go down, and after the first a new figure
    is more than 1 point from the previous one unless it is 100 (QEMU's rule). The same checks
    hold for qemu-img's output;
  - --progress=json: stderr is JSON lines with exactly offset, len and elapsed; offsets and
    elapsed never go down; the last line has offset == len == the image size; at most about
    ten lines a second;
  - -r: a rate-limited commit takes at least the time the rate implies;
  - SIGUSR1 during a rate-limited commit prints one "    (X.XX/100%)" line on stderr, for both
    tools.

Exit status: 0 pass, 1 fail, 77 skip (qemu-img or qemu-io missing).
"""

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

MiB = 1 << 20
FRAME = re.compile(r"    \((\d+\.\d\d)/100%\)")


def sh(cmd, cwd):
    subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, timeout=60)


def create(d, name, size, opts="", fmt="qcow2", backing=None, backing_fmt="qcow2"):
    args = ["qemu-img", "create", "-f", fmt]
    if opts:
        args += ["-o", opts]
    if backing:
        args += ["-b", backing, "-F", backing_fmt]
    sh(args + [name, str(size)], d)


def qemu_io(d, image, *cmds, fmt="qcow2"):
    args = ["qemu-io", "-f", fmt]
    for c in cmds:
        args += ["-c", c]
    sh(args + [image], d)


# ---- the images of each case: (build function, commit arguments, images, emptied top) ----

def two_deep(d, base_opts="", top_opts="", base_size=8 * MiB, top_size=8 * MiB):
    create(d, "base.qcow2", base_size, base_opts)
    if base_size >= 6 * MiB:
        qemu_io(d, "base.qcow2", "write -P 1 0 3M", "write -P 2 5M 1M")
    else:
        qemu_io(d, "base.qcow2", "write -P 1 0 1M", "write -P 2 1536k 512k")
    create(d, "top.qcow2", top_size, top_opts, backing="base.qcow2")
    qemu_io(d, "top.qcow2", "write -P 3 64k 128k", "write -P 4 1M 1M", "write -z 2M 256k",
            "discard 2560k 128k", "write -P 5 6M 17k", "write -P 6 7M 64k")


def grows(d):
    two_deep(d, base_size=2 * MiB, top_size=8 * MiB)


def compressed(d):
    create(d, "base.qcow2", 4 * MiB)
    qemu_io(d, "base.qcow2", "write -P 1 0 4M")
    create(d, "top.qcow2", 4 * MiB, backing="base.qcow2")
    qemu_io(d, "top.qcow2", "write -c -P 7 0 64k", "write -c -P 8 1M 192k", "write -P 9 3M 4k")


def three_deep(d):
    create(d, "base.qcow2", 8 * MiB, "cluster_size=4k")
    qemu_io(d, "base.qcow2", "write -P 1 0 8M")
    create(d, "mid.qcow2", 8 * MiB, "cluster_size=16k", backing="base.qcow2")
    qemu_io(d, "mid.qcow2", "write -P 2 1M 2M", "write -z 4M 1M")
    create(d, "top.qcow2", 8 * MiB, backing="mid.qcow2")
    qemu_io(d, "top.qcow2", "write -P 3 2M 2M", "write -z 5M 64k", "write -P 4 7M 12k")


def raw_base(d):
    create(d, "base.raw", 4 * MiB, fmt="raw")
    qemu_io(d, "base.raw", "write -P 1 0 4M", fmt="raw")
    create(d, "top.qcow2", 4 * MiB, backing="base.raw", backing_fmt="raw")
    qemu_io(d, "top.qcow2", "write -P 2 64k 1M", "write -z 2M 64k", "discard 3M 64k")


def top_snapshot(d):
    """An internal snapshot in the top: emptying must leave the snapshot's clusters alone."""
    two_deep(d)
    sh(["qemu-img", "snapshot", "-c", "snap", "top.qcow2"], d)
    qemu_io(d, "top.qcow2", "write -P 7 1M 64k", "write -P 8 4M 128k")


def no_backing(d):
    create(d, "top.qcow2", 4 * MiB)
    qemu_io(d, "top.qcow2", "write -P 2 0 64k")
    create(d, "plain.raw", MiB, fmt="raw")


TWO = ["base.qcow2", "top.qcow2"]
THREE = ["base.qcow2", "mid.qcow2", "top.qcow2"]
CASES = [
    # name, build, args, images, emptied top (reads as its backing afterwards)
    ("default", two_deep, ["-f", "qcow2", "top.qcow2"], TWO, True),
    ("quiet", two_deep, ["-q", "-f", "qcow2", "top.qcow2"], TWO, True),
    ("drop", two_deep, ["-d", "-f", "qcow2", "top.qcow2"], TWO, False),
    ("cache_none", two_deep, ["-t", "none", "-f", "qcow2", "top.qcow2"], TWO, True),
    ("cache_unsafe", two_deep, ["-t", "unsafe", "-f", "qcow2", "top.qcow2"], TWO, True),
    ("base_c512_top_c2m", lambda d: two_deep(d, "cluster_size=512", "cluster_size=2M"),
     ["-f", "qcow2", "top.qcow2"], TWO, True),
    ("base_c2m_top_c4k", lambda d: two_deep(d, "cluster_size=2M", "cluster_size=4k"),
     ["-f", "qcow2", "top.qcow2"], TWO, True),
    ("top_v2", lambda d: two_deep(d, top_opts="compat=0.10"), ["-f", "qcow2", "top.qcow2"], TWO,
     True),
    ("top_extended_l2", lambda d: two_deep(d, top_opts="extended_l2=on"),
     ["-f", "qcow2", "top.qcow2"], TWO, True),
    ("base_grows", grows, ["-f", "qcow2", "top.qcow2"], TWO, True),
    ("compressed", compressed, ["-f", "qcow2", "top.qcow2"], TWO, True),
    ("top_snapshot", top_snapshot, ["-f", "qcow2", "top.qcow2"], TWO, True),
    ("chain3_top_into_mid", three_deep, ["-f", "qcow2", "top.qcow2"], THREE, True),
    ("chain3_b_base", three_deep, ["-f", "qcow2", "-b", "base.qcow2", "top.qcow2"], THREE, False),
    ("chain3_b_mid_relative", three_deep, ["-f", "qcow2", "-b", "./mid.qcow2", "top.qcow2"],
     THREE, False),
    ("chain3_b_base_absolute", three_deep, ["-f", "qcow2", "-b", "{dir}/base.qcow2", "top.qcow2"],
     THREE, False),
    ("raw_base", raw_base, ["-f", "qcow2", "top.qcow2"], ["base.raw", "top.qcow2"], True),
    ("image_opts", two_deep, ["--image-opts", "driver=qcow2,file.filename=top.qcow2"], TWO, True),
    # Errors: same text, same status, images unchanged.
    ("err_no_backing", no_backing, ["-f", "qcow2", "top.qcow2"], ["top.qcow2"], False),
    ("err_no_backing_p", no_backing, ["-p", "-f", "qcow2", "top.qcow2"], ["top.qcow2"], False),
    ("err_raw", no_backing, ["-f", "raw", "plain.raw"], ["top.qcow2"], False),
    ("err_missing", no_backing, ["-f", "qcow2", "nonexistent.qcow2"], [], False),
    ("err_b_self", three_deep, ["-f", "qcow2", "-b", "top.qcow2", "top.qcow2"], THREE, False),
    ("err_b_unknown", three_deep, ["-f", "qcow2", "-b", "other.qcow2", "top.qcow2"], THREE, False),
    ("err_cache", no_backing, ["-t", "bogus", "-f", "qcow2", "top.qcow2"], [], False),
    ("err_rate_suffix", no_backing, ["-r", "1x", "top.qcow2"], [], False),
    ("err_rate_negative", no_backing, ["-r", "-5", "top.qcow2"], [], False),
    ("err_rate_huge", no_backing, ["-r", "99999999999999999999", "top.qcow2"], [], False),
    ("err_no_file", no_backing, [], [], False),
    ("err_two_files", no_backing, ["top.qcow2", "plain.raw"], [], False),
    ("err_unknown_option", no_backing, ["-Z", "top.qcow2"], [], False),
    ("err_missing_arg", no_backing, ["-r"], [], False),
    ("err_image_opts_and_f", no_backing,
     ["--image-opts", "-f", "qcow2", "driver=qcow2,file.filename=top.qcow2"], [], False),
]


def run(tool, args, cwd, timeout=120):
    # Bytes, decoded without newline translation: -p's frames end in "\r".
    p = subprocess.run([tool, "commit"] + args, cwd=cwd, capture_output=True, timeout=timeout)
    name = os.path.basename(tool)
    stdout, stderr = p.stdout.decode(), p.stderr.decode()
    return p.returncode, stdout, stderr.replace(name + ":", "PROG:").replace(
        f"'{name} --help'", "'PROG --help'")


def fmt_of(image):
    return "raw" if image.endswith(".raw") else "qcow2"


def check_images(dq, ds, images, emptied, problems):
    for image in images:
        fmt = fmt_of(image)
        p = subprocess.run(["qemu-img", "compare", "-f", fmt, "-F", fmt, os.path.join(dq, image),
                            os.path.join(ds, image)], capture_output=True, text=True, timeout=60)
        if p.returncode != 0:
            problems.append(f"{image} differs from qemu-img's twin: {p.stdout.strip()}")
        if fmt == "qcow2":
            p = subprocess.run(["qemu-img", "check", "-f", "qcow2", image], cwd=ds,
                               capture_output=True, text=True, timeout=60)
            if p.returncode != 0:
                problems.append(f"{image} fails qemu-img check: {p.stdout.strip()}")
    if emptied:
        top = images[-1]
        p = subprocess.run(["qemu-img", "map", "-f", "qcow2", "--output=json", top], cwd=ds,
                           capture_output=True, text=True, timeout=60, check=True)
        own = [e for e in json.loads(p.stdout) if e["depth"] == 0 and e["present"]]
        if own:
            problems.append(f"{top} still holds data of its own: {own}")
        p = subprocess.run(["qemu-img", "compare", "-f", "qcow2", "-F", fmt_of(images[-2]), top,
                            images[-2]], cwd=ds, capture_output=True, text=True, timeout=60)
        if p.returncode != 0:
            problems.append(f"{top} does not read as its backing file: {p.stdout.strip()}")


def run_case(case, qemu_img, strata_img, root, failures):
    name, build, args, images, emptied = case
    dq, ds = os.path.join(root, name, "q"), os.path.join(root, name, "s")
    problems = []
    for d in (dq, ds):
        os.makedirs(d)
        build(d)
    want = run(qemu_img, [a.replace("{dir}", dq) for a in args], dq)
    got = run(strata_img, [a.replace("{dir}", ds) for a in args], ds)
    want = (want[0], want[1], want[2].replace(dq, "DIR"))
    got = (got[0], got[1], got[2].replace(ds, "DIR"))
    for label, w, g in zip(("status", "stdout", "stderr"), want, got):
        if w != g:
            problems.append(f"{label}:\n    qemu-img:   {w!r}\n    strata-img: {g!r}")
    check_images(dq, ds, images, emptied and want[0] == 0, problems)
    if problems:
        failures.append((name, problems))


# ---- lock errors: qemu-io holds one image of each twin while the tools commit ----

LOCK_CASES = [
    # name, qemu-io arguments holding the image
    ("top_written", ["-f", "qcow2", "top.qcow2"]),
    ("base_read_unshared", ["-r", "-f", "qcow2", "base.qcow2"]),
    ("base_written", ["-f", "qcow2", "base.qcow2"]),
]


def run_held(tool, holder_args, d):
    holder = subprocess.Popen(["qemu-io"] + holder_args, cwd=d, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        holder.stdin.write("read 0 512\n")
        holder.stdin.flush()
        holder.stdout.readline()  # "read 512/512 bytes ...": the image is open
        return run(tool, ["-f", "qcow2", "top.qcow2"], d)
    finally:
        holder.stdin.write("quit\n")
        holder.stdin.close()
        holder.wait(timeout=30)


def lock_cases(qemu_img, strata_img, root, failures):
    for name, holder_args in LOCK_CASES:
        dq, ds = os.path.join(root, "lock_" + name, "q"), os.path.join(root, "lock_" + name, "s")
        problems = []
        for d in (dq, ds):
            os.makedirs(d)
            two_deep(d)
        want, got = run_held(qemu_img, holder_args, dq), run_held(strata_img, holder_args, ds)
        for label, w, g in zip(("status", "stdout", "stderr"), want, got):
            if w != g:
                problems.append(f"{label}:\n    qemu-img:   {w!r}\n    strata-img: {g!r}")
        check_images(dq, ds, TWO, False, problems)
        if problems:
            failures.append(("lock_" + name, problems))


# ---- progress ----

def frames_problems(stdout):
    """What is wrong with -p's stdout, or []."""
    tail = "\r\nImage committed.\n"
    if not stdout.endswith(tail):
        return [f"does not end with the last frame, a newline and the message: {stdout!r}"]
    pieces = stdout[:-len(tail) + 1].split("\r")  # the last frame keeps its "\r"
    if pieces[-1] != "" or not all(FRAME.fullmatch(p) for p in pieces[:-1]):
        return [f"not a sequence of frames: {stdout!r}"]
    figures = [float(FRAME.fullmatch(p).group(1)) for p in pieces[:-1]]
    problems = []
    if figures[0] != 0.0 or figures[-1] != 100.0:
        problems.append(f"frames run from {figures[0]} to {figures[-1]}")
    for a, b in zip(figures, figures[1:]):
        if b < a:
            problems.append(f"the figure goes down: {a} -> {b}")
        if b != a and b != 100.0 and b - a <= 1.0:
            problems.append(f"a frame for a step of at most 1 point: {a} -> {b}")
    return problems


def progress_cases(qemu_img, strata_img, root, failures):
    d = os.path.join(root, "progress")
    os.makedirs(d)
    for tool in (qemu_img, strata_img):
        two_deep(d)
        status, out, err = run(tool, ["-p", "-f", "qcow2", "top.qcow2"], d)
        problems = frames_problems(out) if status == 0 else [f"status {status}: {err!r}"]
        if problems:
            failures.append((f"frames ({os.path.basename(tool)})", problems))

    # JSON lines, slowed down by -r so that several are printed: the top holds 1.25 MiB of
    # data, at 2 MiB/s about 0.6 s.
    two_deep(d)
    start = time.monotonic()
    status, out, err = run(strata_img, ["--progress=json", "-r", "2M", "-f", "qcow2",
                                        "top.qcow2"], d)
    wall = time.monotonic() - start
    problems = [] if status == 0 and out == "Image committed.\n" else [f"status {status} {out!r}"]
    lines = [json.loads(line) for line in err.splitlines()]
    if len(lines) < 3:
        problems.append(f"expected a few lines, got {err!r}")
    for a, b in zip(lines, lines[1:]):
        if b["offset"] < a["offset"] or b["elapsed"] < a["elapsed"]:
            problems.append(f"goes backwards: {a} -> {b}")
    for line in lines:
        if sorted(line) != ["elapsed", "len", "offset"]:
            problems.append(f"keys: {line}")
    if lines and (lines[-1]["offset"] != 8 * MiB or lines[-1]["len"] != 8 * MiB):
        problems.append(f"last line: {lines[-1]}")
    if len(lines) > wall * 10 + 3:
        problems.append(f"{len(lines)} lines in {wall:.2f} s")
    if wall < 0.4:
        problems.append(f"rate limit not applied: {wall:.2f} s")
    if problems:
        failures.append(("progress json", problems))

    # SIGUSR1: one line on stderr, from both tools.
    for tool in (qemu_img, strata_img):
        two_deep(d)
        p = subprocess.Popen([tool, "commit", "-r", "1M", "-f", "qcow2", "top.qcow2"], cwd=d,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(0.4)
        p.send_signal(signal.SIGUSR1)
        out, err = p.communicate(timeout=60)
        if p.returncode != 0 or not FRAME.fullmatch(err.rstrip("\n")) or err.count("\n") != 1:
            failures.append((f"sigusr1 ({os.path.basename(tool)})",
                             [f"status {p.returncode}, stderr {err!r}"]))


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
    # Not /dev/shm: -t none needs O_DIRECT, which tmpfs refuses.
    with tempfile.TemporaryDirectory() as d:
        for case in CASES:
            run_case(case, args.qemu_img, strata_img, d, failures)
        lock_cases(args.qemu_img, strata_img, d, failures)
        progress_cases(args.qemu_img, strata_img, d, failures)
    for name, problems in failures:
        print(f"FAIL: {name}")
        for p in problems:
            print(f"  {p}")
    total = len(CASES) + len(LOCK_CASES) + 5
    print(f"{total - len(failures)} passed, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
