"""Runs a list of qemu-io invocations through qemu-io and through strata-io on fresh copies of
one raw image and compares both transcripts with a golden file (see golden.py)."""

import os

import golden

IMAGE_SIZE = 1 << 20


def transcript(tool, cases):
    """cases: [(title, [tool arguments, "t.raw" included])]. Each case starts on a fresh image."""
    with golden.temp_dir() as test_dir:
        t = golden.Transcript(test_dir)
        for title, args in cases:
            golden.create_raw(os.path.join(test_dir, "t.raw"), IMAGE_SIZE)
            t.run(title, [tool] + args)
        return t.text()


def main(description, cases):
    args = golden.parse_args(description)
    golden.require_qemu_tools()
    texts = {"qemu-io": transcript("qemu-io", cases),
             "strata-io": transcript(os.path.abspath(args.strata_io), cases)}
    return golden.compare(args.golden, texts, args.update)
