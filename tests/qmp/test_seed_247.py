"""qmp.seed_247: the seed scenario (QEMU iotest 247) through strata-daemon, end to end.

Five qcow2 images in a chain; file-N nodes with auto-read-only, format-N nodes read-only with
backing by reference. block-commit of format-2 (and format-1) into format-0 must:
  - give 247.out's sequence (created, running, return, waiting, pending, BLOCK_JOB_COMPLETED
    with offset = len, concluded, null), the same as qemu-storage-daemon's;
  - hold img-0's descriptor read-only before, read-write during, read-only after
    (/proc/PID/fdinfo), with Strata's storage-access events for file-0 (true, then false);
  - leave format-3 backed by format-0, format-0 read-only, and images that qemu-img checks
    clean and compares equal to a reference made by qemu-img commit.
Variants: the base on a read-only bind mount, the base without auto-read-only, another reader
of the base (iotest 249), a cancel midway, and on-error=stop over a fault-inject node.
"""
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import unittest

from qmp_client import Daemon
from test_jobs import (OK, QSD, Recorder, chain_blockdevs, error, make_chain,
                       status_event)

DAEMON = os.environ["STRATA_DAEMON"]
SIZE = 4 << 20
COMMIT = {"device": "format-4", "top-node": "format-2", "base-node": "format-0",
          "job-id": "job0"}
GOLDEN_247 = [
    status_event("job0", "created"), status_event("job0", "running"), OK,
    status_event("job0", "waiting"), status_event("job0", "pending"),
    {"event": "BLOCK_JOB_COMPLETED",
     "data": {"device": "job0", "len": SIZE, "offset": SIZE, "speed": 0, "type": "commit"}},
    status_event("job0", "concluded"), status_event("job0", "null"),
]


def fd_modes(pid, path):
    """The access modes ("ro"/"rw") of the daemon's descriptors open on `path`."""
    path = os.path.realpath(path)
    modes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") != path:
                continue
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                flags = int(re.search(r"flags:\s+([0-7]+)", f.read()).group(1), 8)
        except (OSError, AttributeError):
            continue
        modes.add({0: "ro", 1: "wo", 2: "rw"}[flags & 3])
    return sorted(modes)


def checksums(paths):
    out = {}
    for p in paths:
        with open(p, "rb") as f:
            out[p] = hashlib.sha256(f.read()).hexdigest()
    return out


def nodes_of(r):
    return {n["node-name"]: n for n in r.cmd("query-named-block-nodes")["return"]}


def backing_of(node):
    image = node["image"].get("backing-image")
    return image["filename"] if image else None


class Seed:
    """A daemon over a fresh five-image chain (or the caller's paths and blockdevs)."""

    def __init__(self, binary, extra=(), file0=None, base_dir=None):
        self.dir = tempfile.mkdtemp(prefix="qmp-247-", dir="/dev/shm")
        try:
            self.paths = make_chain(self.dir, 5, size="4M", base_dir=base_dir)
            self.d = Daemon(binary, chain_blockdevs(self.paths, file0) + list(extra))
        except BaseException:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise
        self.r = Recorder(self.d.client().negotiate())
        self.pid = self.d.proc.pid

    def quit(self):
        self.r.cmd("quit")
        self.d.wait()

    def close(self):
        self.r.c.close()
        self.d.cleanup()
        shutil.rmtree(self.dir, ignore_errors=True)


def qemu_img(*args, check=True):
    return subprocess.run(["qemu-img", *args], capture_output=True, text=True, check=check)


class Seed247Test(unittest.TestCase):
    def run_seed(self, binary):
        s = Seed(binary)
        try:
            self.assertEqual(fd_modes(s.pid, s.paths[0]), ["ro"])
            s.r.cmd("block-commit", COMMIT)
            s.r.wait("JOB_STATUS_CHANGE", "null")
            log, access = list(s.r.log), list(s.r.access)
            self.assertEqual(fd_modes(s.pid, s.paths[0]), ["ro"])
            nodes = nodes_of(s.r)
            self.assertEqual(backing_of(nodes["format-3"]), s.paths[0])
            self.assertEqual(nodes["format-0"]["ro"], True)
            s.quit()
            self.check_images(s)
            return log, access
        finally:
            s.close()

    def check_images(self, s):
        ref = os.path.join(s.dir, "ref")
        os.mkdir(ref)
        # The reference: the original images committed by qemu-img on copies (the chain was
        # made the same way in make_chain, so a new chain there is the same data).
        ref_paths = make_chain(ref, 5, size="4M")
        qemu_img("commit", "-q", "-b", ref_paths[0], ref_paths[2])
        qemu_img("rebase", "-u", "-f", "qcow2", "-b", ref_paths[0], "-F", "qcow2", ref_paths[3])
        for mine, theirs in ((s.paths[4], ref_paths[4]), (s.paths[0], ref_paths[0])):
            compared = qemu_img("compare", mine, theirs, check=False)
            self.assertEqual(compared.returncode, 0, compared.stdout + compared.stderr)
        for path in s.paths:
            checked = qemu_img("check", path, check=False)
            self.assertEqual(checked.returncode, 0, path + checked.stdout + checked.stderr)
        info = json.loads(qemu_img("info", "--output=json", s.paths[3]).stdout)
        self.assertEqual(info["backing-filename"], s.paths[0])

    def test_seed_commit_matches_247(self):
        log, access = self.run_seed(DAEMON)
        self.assertEqual(log, GOLDEN_247)
        self.assertEqual([a for a in access if a[0] == "file-0"],
                         [("file-0", True), ("file-0", False)])

    @unittest.skipIf(QSD is None, "qemu-storage-daemon is not installed")
    def test_seed_commit_differential(self):
        qsd_log, _ = self.run_seed(QSD)
        self.assertEqual(qsd_log, GOLDEN_247)

    def test_base_writable_only_while_the_job_runs(self):
        for binary in [DAEMON] + ([QSD] if QSD else []):
            with self.subTest(binary=binary):
                s = Seed(binary)
                try:
                    self.assertEqual(fd_modes(s.pid, s.paths[0]), ["ro"])
                    s.r.cmd("block-commit", dict(COMMIT, speed=1))
                    self.assertEqual(s.r.cmd("job-pause", {"id": "job0"}), OK)
                    self.assertEqual(fd_modes(s.pid, s.paths[0]), ["rw"])
                    self.assertEqual(fd_modes(s.pid, s.paths[1]), ["ro"])
                    s.r.cmd("block-job-set-speed", {"device": "job0", "speed": 0})
                    s.r.cmd("job-resume", {"id": "job0"})
                    s.r.wait("JOB_STATUS_CHANGE", "null")
                    self.assertEqual(fd_modes(s.pid, s.paths[0]), ["ro"])
                finally:
                    s.close()

    def test_cancel_midway_restores_the_chain(self):
        s = Seed(DAEMON)
        try:
            before = nodes_of(s.r)
            s.r.cmd("block-commit", dict(COMMIT, speed=1))
            self.assertEqual(s.r.cmd("block-job-cancel", {"device": "job0"}), OK)
            s.r.wait("JOB_STATUS_CHANGE", "null")
            self.assertEqual(s.r.statuses("job0"),
                             ["created", "running", "aborting", "concluded", "null"])
            cancelled = [e for e in s.r.log if e.get("event") == "BLOCK_JOB_CANCELLED"]
            self.assertEqual(len(cancelled), 1)
            after = nodes_of(s.r)
            self.assertEqual(sorted(after), sorted(before))
            self.assertEqual(backing_of(after["format-3"]), s.paths[2])
            self.assertEqual(after["format-0"]["ro"], True)
            self.assertEqual(fd_modes(s.pid, s.paths[0]), ["ro"])
            s.quit()
            for path in s.paths:
                self.assertEqual(qemu_img("check", path, check=False).returncode, 0, path)
            info = json.loads(qemu_img("info", "--output=json", s.paths[3]).stdout)
            self.assertEqual(info["backing-filename"], s.paths[2])
        finally:
            s.close()

    def test_quit_and_signals_cancel_a_running_job(self):
        for how in ("quit", "SIGTERM"):
            with self.subTest(how=how):
                s = Seed(DAEMON)
                try:
                    s.r.cmd("block-commit", dict(COMMIT, speed=1))
                    self.assertEqual(fd_modes(s.pid, s.paths[0]), ["rw"])
                    if how == "quit":
                        self.assertEqual(s.r.cmd("quit"), OK)
                    else:
                        s.d.proc.terminate()
                    self.assertEqual(s.d.wait(), 0, s.d.stderr)
                    for path in s.paths:
                        checked = qemu_img("check", path, check=False)
                        self.assertEqual(checked.returncode, 0, path + checked.stdout)
                    info = json.loads(qemu_img("info", "--output=json", s.paths[3]).stdout)
                    self.assertEqual(info["backing-filename"], s.paths[2])
                finally:
                    s.close()

    def test_base_on_read_only_mount(self):
        src = tempfile.mkdtemp(prefix="qmp-247-src-", dir="/dev/shm")
        mnt = tempfile.mkdtemp(prefix="qmp-247-ro-", dir="/dev/shm")
        mounted = False
        try:
            # img-0 is made in src, then seen through a read-only bind mount at mnt.
            make_chain(src, 1, size="4M")
            bound = subprocess.run(["mount", "--bind", src, mnt], capture_output=True)
            if bound.returncode != 0:
                self.skipTest(f"no bind mount here: {bound.stderr.decode().strip()}")
            mounted = True
            subprocess.run(["mount", "-o", "remount,ro,bind", mnt], check=True)
            s = Seed(DAEMON, base_dir=mnt)
            try:
                before = checksums(s.paths)
                rsp = s.r.cmd("block-commit", COMMIT)
                self.assertEqual(rsp["error"]["class"], "GenericError")
                self.assertIn("auto-read-only", rsp["error"]["desc"])
                self.assertIn("Read-only file system", rsp["error"]["desc"])
                self.assertEqual(s.r.statuses("job0"), ["created", "null"])
                nodes = nodes_of(s.r)
                self.assertEqual(backing_of(nodes["format-3"]), s.paths[2])
                self.assertEqual(nodes["format-0"]["ro"], True)
                s.quit()
                self.assertEqual(checksums(s.paths), before)
            finally:
                s.close()
        finally:
            if mounted:
                subprocess.run(["umount", mnt], check=False)
            os.rmdir(mnt)
            shutil.rmtree(src, ignore_errors=True)

    def test_base_without_auto_read_only(self):
        for binary in [DAEMON] + ([QSD] if QSD else []):
            with self.subTest(binary=binary):
                s = Seed(binary, file0={"driver": "file", "read-only": True})
                try:
                    before = checksums(s.paths)
                    self.assertEqual(s.r.cmd("block-commit", COMMIT),
                                     error("Block node is read-only"))
                    self.assertEqual(s.r.statuses("job0"), ["created", "null"])
                    s.quit()
                    self.assertEqual(checksums(s.paths), before)
                finally:
                    s.close()

    def test_another_reader_of_the_base_never_writes(self):
        """iotest 249: a raw node reading file-0 keeps read-only access through a failed and
        a successful commit."""
        reader = {"driver": "raw", "node-name": "reader", "file": "file-0", "read-only": True}
        s = Seed(DAEMON, extra=["--blockdev", json.dumps(reader)])
        try:
            def reader_perm():
                graph = s.r.cmd("x-debug-query-block-graph")["return"]
                ids = {n["id"]: n["name"] for n in graph["nodes"]}
                edges = [e for e in graph["edges"] if ids[e["parent"]] == "reader"]
                self.assertEqual(len(edges), 1)
                return edges[0]["perm"]
            self.assertNotIn("write", reader_perm())
            bad = s.r.cmd("block-commit", dict(COMMIT, **{"filter-node-name": "1234"}))
            self.assertEqual(bad["error"]["class"], "GenericError")
            self.assertNotIn("write", reader_perm())
            s.r.cmd("block-commit", dict(COMMIT, speed=1))
            s.r.cmd("job-pause", {"id": "job0"})
            self.assertNotIn("write", reader_perm())
            self.assertEqual(nodes_of(s.r)["reader"]["ro"], True)
            s.r.cmd("block-job-set-speed", {"device": "job0", "speed": 0})
            s.r.cmd("job-resume", {"id": "job0"})
            s.r.wait("JOB_STATUS_CHANGE", "null")
            self.assertEqual(s.r.statuses("job0")[-1], "null")
            self.assertFalse([e for e in s.r.log if e.get("event") == "BLOCK_JOB_CANCELLED"])
            self.assertNotIn("write", reader_perm())
            self.assertEqual(nodes_of(s.r)["reader"]["ro"], True)
        finally:
            s.close()

    def test_on_error_stop_pauses_then_resume_completes(self):
        # format-0's file is a fault-inject node that fails the first write to img-0 once.
        directory = tempfile.mkdtemp(prefix="qmp-247-fi-", dir="/dev/shm")
        try:
            paths = make_chain(directory, 3, size="4M")
            args = chain_blockdevs(paths)
            fault = {"driver": "fault-inject", "node-name": "fault-0", "file": "file-0",
                     "kind": "write", "nth": 1, "errno": "EIO"}
            q0 = json.loads(args[3])
            q0["file"] = "fault-0"
            args[3] = json.dumps(q0)
            args[2:2] = ["--blockdev", json.dumps(fault)]
            d = Daemon(DAEMON, args)
            try:
                r = Recorder(d.client().negotiate())
                r.cmd("block-commit", {"device": "format-2", "top-node": "format-1",
                                       "base-node": "format-0", "job-id": "job0",
                                       "on-error": "stop"})
                r.wait("BLOCK_JOB_ERROR")
                errors = [e for e in r.log if e.get("event") == "BLOCK_JOB_ERROR"]
                self.assertEqual(errors[0]["data"],
                                 {"device": "job0", "operation": "write", "action": "stop"})
                jobs = r.cmd("query-block-jobs")["return"]
                self.assertEqual((jobs[0]["status"], jobs[0]["io-status"]),
                                 ("paused", "failed"))
                self.assertEqual(r.cmd("job-resume", {"id": "job0"}), OK)
                r.wait("JOB_STATUS_CHANGE", "null")
                completed = [e for e in r.log if e.get("event") == "BLOCK_JOB_COMPLETED"]
                self.assertEqual(len(completed), 1)
                self.assertNotIn("error", completed[0]["data"])
                r.cmd("quit")
                d.wait()
                ref = os.path.join(directory, "ref")
                os.mkdir(ref)
                ref_paths = make_chain(ref, 3, size="4M")
                qemu_img("commit", "-q", "-b", ref_paths[0], ref_paths[1])
                compared = qemu_img("compare", paths[0], ref_paths[0], check=False)
                self.assertEqual(compared.returncode, 0, compared.stdout + compared.stderr)
            finally:
                d.cleanup()
        finally:
            shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    unittest.main()
