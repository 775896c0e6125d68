"""qmp.events: Strata's storage-access event, __org.strata_BLOCK_STORAGE_ACCESS.

A node opened with auto-read-only=on keeps its storage read-only until a parent needs to write;
each switch is announced to every client, after the switch committed and before the reply of
the command that caused it.
"""
import os
import subprocess
import tempfile
import unittest

from qmp_client import Daemon, make_image, strip_id

DAEMON = os.environ["STRATA_DAEMON"]
EVENT = "__org.strata_BLOCK_STORAGE_ACCESS"


def access_events(client):
    """The storage-access events a client has received so far, as (node, read-write), and
    forgets them."""
    seen = [(e["data"]["node-name"], e["data"]["read-write"])
            for e in client.events if e["event"] == EVENT]
    for e in client.events:
        if e["event"] == EVENT:
            assert sorted(e["data"]) == ["node-name", "read-write"], e
            assert sorted(e["timestamp"]) == ["microseconds", "seconds"], e
    client.events.clear()
    return seen


class StorageAccessEventTest(unittest.TestCase):
    def setUp(self):
        self.d = Daemon(DAEMON)
        self.img = self.d.path("q.qcow2")
        make_image(self.img, "qcow2")
        self.c = self.d.client().negotiate()
        self.other = self.d.client().negotiate()

    def tearDown(self):
        self.c.close()
        self.other.close()
        self.d.cleanup()

    def ok(self, execute, arguments=None):
        self.assertEqual(strip_id(self.c.cmd(execute, arguments)), {"return": {}},
                         (execute, arguments))

    def reopen_q0(self, read_only):
        self.ok("blockdev-reopen", {"options": [{"driver": "qcow2", "node-name": "q0",
                                                 "file": "f0", "read-only": read_only}]})

    def test_reopen_switches_and_every_client_hears_it(self):
        self.ok("blockdev-add", {"driver": "file", "node-name": "f0", "filename": self.img,
                                 "auto-read-only": True})
        self.ok("blockdev-add", {"driver": "qcow2", "node-name": "q0", "file": "f0",
                                 "read-only": True})
        self.assertEqual(access_events(self.c), [])
        self.reopen_q0(False)
        self.assertEqual(access_events(self.c), [("f0", True)])
        self.reopen_q0(False)  # no switch, no event
        self.assertEqual(access_events(self.c), [])
        self.reopen_q0(True)
        self.assertEqual(access_events(self.c), [("f0", False)])
        self.other.cmd("query-version")  # reads what arrived meanwhile
        self.assertEqual(access_events(self.other), [("f0", True), ("f0", False)])

    def test_a_writer_attached_and_gone(self):
        self.ok("blockdev-add", {"driver": "file", "node-name": "f0", "filename": self.img,
                                 "auto-read-only": True})
        self.ok("blockdev-add", {"driver": "qcow2", "node-name": "q0", "file": "f0",
                                 "read-only": False})
        self.assertEqual(access_events(self.c), [("f0", True)])
        self.ok("blockdev-del", {"node-name": "q0"})
        self.assertEqual(access_events(self.c), [("f0", False)])
        # block_resize's temporary user holds RESIZE for the time of the command.
        self.ok("block_resize", {"node-name": "f0", "size": 1 << 20})
        self.assertEqual(access_events(self.c), [("f0", True), ("f0", False)])

    def test_refused_upgrade_on_read_only_storage_sends_no_event(self):
        mnt = tempfile.mkdtemp(prefix="qmp-ro-", dir="/dev/shm")
        src = self.d.path("ro-src")
        os.mkdir(src)
        img = os.path.join(src, "ro.qcow2")
        make_image(img, "qcow2")
        bound = subprocess.run(["mount", "--bind", src, mnt], capture_output=True)
        if bound.returncode != 0:
            os.rmdir(mnt)
            self.skipTest(f"no bind mount here: {bound.stderr.decode().strip()}")
        try:
            subprocess.run(["mount", "-o", "remount,ro,bind", mnt], check=True)
            ro_img = os.path.join(mnt, "ro.qcow2")
            self.ok("blockdev-add", {"driver": "file", "node-name": "f0", "filename": ro_img,
                                     "auto-read-only": True})
            self.ok("blockdev-add", {"driver": "qcow2", "node-name": "q0", "file": "f0",
                                     "read-only": True})
            rsp = strip_id(self.c.cmd("blockdev-reopen", {"options": [
                {"driver": "qcow2", "node-name": "q0", "file": "f0", "read-only": False}]}))
            self.assertEqual(rsp["error"]["class"], "GenericError", rsp)
            desc = rsp["error"]["desc"]
            self.assertIn("auto-read-only", desc)
            self.assertIn("Read-only file system", desc)
            self.assertEqual(access_events(self.c), [])
            nodes = {n["node-name"]: n for n in self.c.cmd("query-named-block-nodes")["return"]}
            self.assertEqual(nodes["q0"]["ro"], True)
            self.assertEqual(nodes["f0"]["x-storage-read-write"], False)
            self.ok("blockdev-del", {"node-name": "q0"})
            self.ok("blockdev-del", {"node-name": "f0"})
        finally:
            subprocess.run(["umount", mnt], check=False)
            os.rmdir(mnt)


if __name__ == "__main__":
    unittest.main()
