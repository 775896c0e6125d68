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
        self.assertEqual(names, ["qmp_capabilities", "query-version", "query-commands",
                                 "query-qmp-schema", "quit", "blockdev-add", "blockdev-del",
                                 "blockdev-reopen", "query-named-block-nodes", "query-block",
                                 "x-debug-query-block-graph", "block_resize", "block-commit",
                                 "block-stream", "query-jobs", "job-pause", "job-resume",
                                 "job-cancel", "job-complete", "job-dismiss", "job-finalize",
                                 "query-block-jobs", "block-job-set-speed", "block-job-cancel",
                                 "block-job-pause", "block-job-resume", "block-job-complete",
                                 "block-job-dismiss", "block-job-finalize"])
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

    def test_unknown_options_are_refused_before_anything_opens(self):
        missing = self.d.path("MISSING")
        self.check("blockdev-add", {"driver": "file", "node-name": "f0", "filename": missing,
                                    "bogus": 1},
                   error("GenericError", "Parameter 'bogus' is unexpected"))
        self.check("blockdev-add", {"driver": "raw", "node-name": "r0",
                                    "file": {"driver": "file", "filename": missing, "bogus": 1}},
                   error("GenericError", "Parameter 'file.bogus' is unexpected"))
        self.check("blockdev-add", {"driver": "raw", "node-name": "r0",
                                    "file": {"filename": missing}},
                   error("GenericError", "Parameter 'file.driver' is missing"))
        self.assertEqual(self.c.cmd("query-named-block-nodes")["return"], [])

    def add_qcow2(self, read_only=True):
        q = self.d.path("q.qcow2")
        make_image(q, "qcow2")
        self.check("blockdev-add", {"driver": "file", "node-name": "f0", "filename": q,
                                    "auto-read-only": True}, {"return": {}})
        self.check("blockdev-add", {"driver": "qcow2", "node-name": "q0", "file": "f0",
                                    "read-only": read_only}, {"return": {}})

    def test_blockdev_reopen(self):
        self.add_qcow2()
        q0 = {"driver": "qcow2", "node-name": "q0", "file": "f0"}
        self.check("blockdev-reopen", {"options": [dict(q0, **{"read-only": False})]},
                   {"return": {}})
        nodes = {n["node-name"]: n for n in self.c.cmd("query-named-block-nodes")["return"]}
        self.assertEqual(nodes["q0"]["ro"], False)
        self.assertEqual(nodes["f0"]["x-storage-read-write"], True)
        for args, desc in [
                ({}, "Parameter 'options' is missing"),
                ({"options": {}}, "Invalid parameter type for 'options', expected: array"),
                ({"options": [7]}, "Invalid parameter type for 'options[0]', expected: object"),
                ({"options": [{"node-name": "q0", "file": "f0"}]},
                 "Parameter 'options[0].driver' is missing"),
                ({"options": [dict(q0, bogus=1)]}, "Parameter 'options[0].bogus' is unexpected"),
                ({"options": [q0], "x": 1}, "Parameter 'x' is unexpected"),
                ({"options": [{"driver": "qcow2", "file": "f0"}]}, "node-name not specified"),
                ({"options": [dict(q0, **{"node-name": "nope"})]},
                 "Failed to find node with node-name='nope'"),
                ({"options": [dict(q0, file="nope")]}, "Cannot find device='' nor node-name='nope'"),
        ]:
            self.check("blockdev-reopen", args, error("GenericError", desc))
        # Every refused reopen left the node as it was: read-write.
        nodes = {n["node-name"]: n for n in self.c.cmd("query-named-block-nodes")["return"]}
        self.assertEqual(nodes["q0"]["ro"], False)
        self.check("blockdev-reopen", {"options": [q0]}, {"return": {}})
        nodes = {n["node-name"]: n for n in self.c.cmd("query-named-block-nodes")["return"]}
        self.assertEqual(nodes["q0"]["ro"], False)
        self.check("blockdev-reopen", {"options": [dict(q0, **{"read-only": True})]},
                   {"return": {}})
        nodes = {n["node-name"]: n for n in self.c.cmd("query-named-block-nodes")["return"]}
        self.assertEqual(nodes["q0"]["ro"], True)
        self.assertEqual(nodes["f0"]["x-storage-read-write"], False)

    def test_query_block_is_empty(self):
        self.check("query-block", None, {"return": []})
        self.add_qcow2()
        self.check("query-block", None, {"return": []})
        self.check("query-block", {"x": 1}, error("GenericError", "Parameter 'x' is unexpected"))

    def test_block_graph(self):
        self.add_qcow2()
        graph = self.c.cmd("x-debug-query-block-graph")["return"]
        # QEMU's ids (1 up, in creation order) and its reversed lists.
        self.assertEqual(graph["nodes"], [{"id": 2, "type": "block-driver", "name": "q0"},
                                          {"id": 1, "type": "block-driver", "name": "f0"}])
        self.assertEqual(graph["edges"], [{"parent": 2, "child": 1, "name": "file",
                                           "perm": ["consistent-read"],
                                           "shared-perm": ["write-unchanged",
                                                           "consistent-read"]}])
        self.check("blockdev-reopen", {"options": [{"driver": "qcow2", "node-name": "q0",
                                                    "file": "f0", "read-only": False}]},
                   {"return": {}})
        edge = self.c.cmd("x-debug-query-block-graph")["return"]["edges"][0]
        self.assertEqual(edge["perm"], ["resize", "write", "consistent-read"])
        self.check("x-debug-query-block-graph", {"x": 1},
                   error("GenericError", "Parameter 'x' is unexpected"))

    def test_block_resize(self):
        self.add_qcow2()
        for args, desc in [
                ({"node-name": "q0", "size": 2 << 20}, "Image is read-only"),
                ({"device": "q0", "size": 2 << 20}, "Cannot find device='q0' nor node-name=''"),
                ({"node-name": "nope", "size": 2 << 20},
                 "Cannot find device='' nor node-name='nope'"),
                ({"size": 2 << 20}, "Cannot find device='' nor node-name=''"),
                ({"node-name": "q0"}, "Parameter 'size' is missing"),
                ({"node-name": "q0", "size": -1}, "Parameter 'size' expects a >0 size"),
                ({"node-name": "q0", "size": "x"},
                 "Invalid parameter type for 'size', expected: integer"),
                ({"node-name": "q0", "size": 2 << 20, "x": 1}, "Parameter 'x' is unexpected"),
        ]:
            self.check("block_resize", args, error("GenericError", desc))
        self.check("blockdev-reopen", {"options": [{"driver": "qcow2", "node-name": "q0",
                                                    "file": "f0", "read-only": False}]},
                   {"return": {}})
        rsp = strip_id(self.c.cmd("block_resize", {"node-name": "f0", "size": 2 << 20}))
        self.assertEqual(rsp["error"]["class"], "GenericError")
        self.assertTrue(rsp["error"]["desc"].startswith(
            "Permission conflict on node 'f0': permissions 'resize' are both required by an "
            "unnamed block device (uses node 'f0' as 'root' child) and unshared by node 'q0' "
            "(uses node 'f0' as 'file' child)."), rsp)
        self.check("block_resize", {"node-name": "q0", "size": 2 << 20}, {"return": {}})
        size = {n["node-name"]: n["image"]["virtual-size"]
                for n in self.c.cmd("query-named-block-nodes")["return"]}
        self.assertEqual(size["q0"], 2 << 20)
        self.check("block_resize", {"device": "", "node-name": "q0", "size": 1 << 20},
                   {"return": {}})
        self.check("blockdev-add", {"driver": "null-co", "node-name": "n0"}, {"return": {}})
        self.check("block_resize", {"node-name": "n0", "size": 1 << 20},
                   error("GenericError", "Image format driver does not support resize"))

    def test_schema_lists_exactly_the_commands(self):
        schema = self.c.cmd("query-qmp-schema")["return"]
        by_name = {e["name"]: e for e in schema}
        self.assertEqual(len(by_name), len(schema), "names are unique")
        commands = [e["name"] for e in schema if e["meta-type"] == "command"]
        listed = [e["name"] for e in self.c.cmd("query-commands")["return"]]
        self.assertEqual(commands, listed)
        events = [e["name"] for e in schema if e["meta-type"] == "event"]
        self.assertEqual(events, ["__org.strata_BLOCK_STORAGE_ACCESS", "JOB_STATUS_CHANGE",
                                  "BLOCK_JOB_COMPLETED", "BLOCK_JOB_CANCELLED", "BLOCK_JOB_ERROR",
                                  "BLOCK_JOB_READY", "BLOCK_JOB_PENDING"])
        # Every type a command, event or type names is defined.
        for e in schema:
            refs = [e.get("arg-type"), e.get("ret-type"), e.get("element-type")]
            if e["meta-type"] in ("object", "alternate"):
                refs += [m["type"] for m in e["members"]]
            refs += [v["type"] for v in e.get("variants", [])]
            for ref in refs:
                if ref is not None:
                    self.assertIn(ref, by_name, (e["name"], ref))
        resize = by_name[by_name["block_resize"]["arg-type"]]
        self.assertEqual(resize["members"], [{"name": "device", "type": "str", "default": None},
                                             {"name": "node-name", "type": "str",
                                              "default": None},
                                             {"name": "size", "type": "int"}])
        event = by_name[by_name["__org.strata_BLOCK_STORAGE_ACCESS"]["arg-type"]]
        self.assertEqual(event["members"], [{"name": "node-name", "type": "str"},
                                            {"name": "read-write", "type": "bool"}])
        self.check("query-qmp-schema", {"x": 1},
                   error("GenericError", "Parameter 'x' is unexpected"))

    def test_quit_replies_then_exits(self):
        self.check("quit", None, {"return": {}})
        self.assertEqual(self.d.wait(), 0)
        self.assertFalse(os.path.exists(self.d.sock))
        self.assertFalse(os.path.exists(self.d.pidfile))


if __name__ == "__main__":
    unittest.main()
