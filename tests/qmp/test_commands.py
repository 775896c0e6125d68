"""qmp.commands: each command's success and error cases, with QEMU's classes and texts."""
import os
import unittest

from qmp_client import Daemon, make_image, strip_id

DAEMON = os.environ["STRATA_DAEMON"]


def error(cls, desc):
    return {"error": {"class": cls, "desc": desc}}


class CommandsTest(unittest.TestCase):
    def setUp(self):
        self.d = Daemon(DAEMON)
        self.img = self.d.path("d.img")
        make_image(self.img)
        self.c = self.d.client().negotiate()

    def tearDown(self):
        self.c.close()
        self.d.cleanup()

    def check(self, execute, arguments, expected):
        self.assertEqual(strip_id(self.c.cmd(execute, arguments)), expected, (execute, arguments))

    def test_query_version_matches_greeting(self):
        rsp = self.c.cmd("query-version")
        self.assertEqual(rsp["return"], self.c.greeting["QMP"]["version"])

    def test_query_commands_lists_every_command(self):
        names = [e["name"] for e in self.c.cmd("query-commands")["return"]]
        self.assertEqual(names, ["qmp_capabilities", "query-version", "query-commands", "quit",
                                 "blockdev-add", "blockdev-del", "query-named-block-nodes"])
        self.check("query-commands", {"x": 1}, error("GenericError", "Parameter 'x' is unexpected"))

    def test_blockdev_add_and_del(self):
        f0 = {"driver": "file", "node-name": "f0", "filename": self.img}
        self.check("blockdev-add", f0, {"return": {}})
        self.check("blockdev-add", f0, error("GenericError", "Duplicate nodes with node-name='f0'"))
        self.check("blockdev-add", {"driver": "file", "node-name": "f1",
                                    "filename": self.d.path("nope")},
                   error("GenericError",
                         f"Could not open '{self.d.path('nope')}': No such file or directory"))
        self.check("blockdev-add", {"driver": "raw", "node-name": "r0", "file": 7},
                   error("GenericError",
                         "Invalid parameter type for 'file', expected: BlockdevRef"))
        self.check("blockdev-add", {"driver": "raw", "node-name": "r0", "file": "f0"},
                   {"return": {}})
        self.check("blockdev-del", {"node-name": "f0"},
                   error("GenericError", "Block device f0 is in use"))
        self.check("blockdev-del", {"node-name": "zz"},
                   error("GenericError", "Failed to find node with node-name='zz'"))
        self.check("blockdev-del", {}, error("GenericError", "Parameter 'node-name' is missing"))
        self.check("blockdev-del", {"node-name": 3},
                   error("GenericError",
                         "Invalid parameter type for 'node-name', expected: string"))
        # An unexpected argument is refused before anything is deleted.
        self.check("blockdev-del", {"node-name": "r0", "x": 1},
                   error("GenericError", "Parameter 'x' is unexpected"))
        self.check("blockdev-del", {"node-name": "r0"}, {"return": {}})
        self.check("blockdev-del", {"node-name": "f0"}, {"return": {}})
        self.assertEqual(self.c.cmd("query-named-block-nodes")["return"], [])

    def test_query_named_block_nodes(self):
        self.check("blockdev-add", {"driver": "file", "node-name": "f0", "filename": self.img,
                                    "auto-read-only": True, "read-only": False,
                                    "cache": {"direct": False, "no-flush": True},
                                    "detect-zeroes": "on"}, {"return": {}})
        self.check("blockdev-add", {"driver": "raw", "node-name": "r0", "file": "f0",
                                    "read-only": True}, {"return": {}})
        nodes = self.c.cmd("query-named-block-nodes", {"flat": True})["return"]
        by_name = {n["node-name"]: n for n in nodes}
        self.assertEqual(sorted(by_name), ["f0", "r0"])
        f0, r0 = by_name["f0"], by_name["r0"]
        self.assertEqual(f0["drv"], "file")
        self.assertEqual(f0["file"], self.img)
        self.assertEqual(f0["ro"], False)
        self.assertEqual(f0["auto-read-only"], True)
        # Nobody writes: auto-read-only keeps the storage read-only.
        self.assertEqual(f0["x-storage-read-write"], False)
        self.assertEqual(f0["detect_zeroes"], "on")
        self.assertEqual(f0["cache"], {"writeback": True, "direct": False, "no-flush": True})
        self.assertEqual(f0["image"], {"virtual-size": 1048576, "filename": self.img,
                                       "format": "file"})
        self.assertEqual(r0["ro"], True)
        self.assertEqual(r0["drv"], "raw")
        self.assertEqual(r0["backing_file_depth"], 0)
        self.assertEqual(r0["encrypted"], False)
        for key in ["bps", "bps_rd", "bps_wr", "iops", "iops_rd", "iops_wr", "write_threshold"]:
            self.assertEqual(r0[key], 0)
        self.check("query-named-block-nodes", {"flat": "yes"},
                   error("GenericError", "Invalid parameter type for 'flat', expected: boolean"))
        self.check("query-named-block-nodes", {"x": 1},
                   error("GenericError", "Parameter 'x' is unexpected"))

    def test_backing_chain(self):
        base, top = self.d.path("base.qcow2"), self.d.path("top.qcow2")
        make_image(base, "qcow2")
        import subprocess
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2",
                        top], check=True)
        self.check("blockdev-add", {"driver": "qcow2", "node-name": "q0",
                                    "file": {"driver": "file", "filename": top}},
                   {"return": {}})
        nodes = self.c.cmd("query-named-block-nodes")["return"]
        q0 = [n for n in nodes if n["node-name"] == "q0"][0]
        self.assertEqual(q0["backing_file_depth"], 1)
        self.assertEqual(q0["image"]["format"], "qcow2")
        self.assertEqual(q0["image"]["backing-image"]["filename"], base)
        flat = self.c.cmd("query-named-block-nodes", {"flat": True})["return"]
        q0 = [n for n in flat if n["node-name"] == "q0"][0]
        self.assertNotIn("backing-image", q0["image"])

    def test_quit_replies_then_exits(self):
        self.check("quit", None, {"return": {}})
        self.assertEqual(self.d.wait(), 0)
        self.assertFalse(os.path.exists(self.d.sock))
        self.assertFalse(os.path.exists(self.d.pidfile))


if __name__ == "__main__":
    unittest.main()
