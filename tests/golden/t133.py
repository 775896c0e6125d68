#!/usr/bin/env python3
"""Golden test after QEMU iotest 133: what reopen -o may and may not change.

node-name and driver (also file.node-name and file.driver) cannot change, unchanged values are
accepted; -r/-w with read-only and -c with the cache options are refused; bad booleans for
read-only, auto-read-only, cache.direct and cache.no-flush; options the node does not have;
QemuOpts' short-form booleans; argument errors.
"""

import sys

from qemu_io_script import main


def one(command, *open_args):
    return (command if not open_args else f"{' '.join(open_args)}: {command}",
            ["-f", "raw", *open_args, "-c", command, "t.raw"])


CASES = [
    # node-name cannot change
    one("reopen -o node-name=foo"),
    one("reopen -o file.node-name=foo"),
    one("reopen -o backing.node-name=foo"),
    # unchanged node-name is fine, given again or left out
    ("open -o node-name=foo, reopen with it",
     ["-c", "open -o driver=raw,node-name=foo t.raw", "-c", "reopen -o node-name=foo"]),
    ("open -o file.node-name=foo, reopen with it",
     ["-c", "open -o driver=raw,file.node-name=foo t.raw", "-c", "reopen -o file.node-name=foo"]),
    ("open -o node-name=foo, reopen without it",
     ["-c", "open -o driver=raw,node-name=foo t.raw", "-c", "reopen"]),
    ("open -o file.node-name=foo, reopen without it",
     ["-c", "open -o driver=raw,file.node-name=foo t.raw", "-c", "reopen"]),
    # driver cannot change
    one("reopen -o driver=qcow2"),
    one("reopen -o file.driver=qcow2"),
    one("reopen -o backing.driver=file"),
    # unchanged driver is fine
    one("reopen -o driver=raw"),
    one("reopen -o file.driver=file"),
    one("reopen -o file.filename=t.raw"),
    one("reopen -o file.filename=other.raw"),
    # flags and their options together
    one("reopen -r -o read-only=on"),
    one("reopen -w -o read-only=on"),
    one("reopen -c none -o cache.direct=on"),
    one("reopen -c writeback -o cache.direct=on"),
    one("reopen -c directsync -o cache.no-flush=on"),
    one("reopen -r -w"),
    one("reopen -c bogus"),
    # invalid values
    one("reopen -o read-only=foo"),
    one("reopen -o cache.no-flush=bar"),
    one("reopen -o cache.direct=baz"),
    one("reopen -o auto-read-only=qux"),
    one("reopen -o discard=sometimes"),
    one("reopen -o detect-zeroes=unmap"),
    # valid generic options
    one("reopen -o auto-read-only=on,discard=unmap,detect-zeroes=on"),
    one("reopen -o cache.no-flush=on -o cache.direct=off"),
    one("reopen -o read-only=on -o read-only=off"),
    # what the node does not have, or cannot change
    one("reopen -o foo=bar"),
    one("reopen -o force-share=on"),
    one("reopen -o read-only=on,force-share=on"),
    one("reopen -o force-share=on", "-r", "-U"),
    # QemuOpts syntax
    one("reopen -o foo"),
    one("reopen -o nofoo"),
    one("reopen -o noread-only"),
    one("reopen -o ,"),
    one("reopen -o =x"),
    one("reopen -o cache.direct=on,,x"),
    # arguments
    one("reopen x"),
    one("reopen -x"),
    one("reopen -o"),
    ("reopen with no file open", ["-c", "reopen"]),
]

if __name__ == "__main__":
    sys.exit(main(__doc__, CASES))
