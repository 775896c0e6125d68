"""qmp.protocol: the QMP wire protocol as a golden transcript, byte for byte.

Every reply line below was first observed from qemu-storage-daemon 7.2 with the same request
(only the JSON parse error's wording differs: it names the token where parsing stopped).
"""
import json
import os
import stat
import sys
import unittest

from qmp_client import Daemon, QmpClient

DAEMON = os.environ["STRATA_DAEMON"]

# (request bytes, expected reply line), in order, on one connection.
TRANSCRIPT = [
    (b'{"execute":"query-version"}\n',
     b'{"error": {"class": "CommandNotFound", "desc": "Expecting capabilities negotiation with \'qmp_capabilities\'"}}'),
    (b'{"execute":"qmp_capabilities","id":1,"arguments":{"x":1}}\n',
     b'{"id": 1, "error": {"class": "GenericError", "desc": "Parameter \'x\' is unexpected"}}'),
    (b'{"execute":"qmp_capabilities","id":1}\n', b'{"return": {}, "id": 1}'),
    (b'{"execute":"qmp_capabilities","id":2}\n',
     b'{"id": 2, "error": {"class": "CommandNotFound", "desc": "Capabilities negotiation is already complete, command ignored"}}'),
    (b'{"execute":"nope","id":{"a":[1]}}\n',
     b'{"id": {"a": [1]}, "error": {"class": "CommandNotFound", "desc": "The command nope has not been found"}}'),
    (b'{"execute":"query-version","arguments":{"x":1}}\n',
     b'{"error": {"class": "GenericError", "desc": "Parameter \'x\' is unexpected"}}'),
    (b'{bad json}\n',
     b'{"error": {"class": "GenericError", "desc": "JSON parse error, invalid token \'{b\'"}}'),
    (b'[1,2]\n', b'{"error": {"class": "GenericError", "desc": "QMP input must be a JSON object"}}'),
    (b'"str"\n', b'{"error": {"class": "GenericError", "desc": "QMP input must be a JSON object"}}'),
    (b'{"id":3}\n',
     b'{"id": 3, "error": {"class": "GenericError", "desc": "QMP input lacks member \'execute\'"}}'),
    (b'{"execute":3}\n',
     b'{"error": {"class": "GenericError", "desc": "QMP input member \'execute\' must be a string"}}'),
    (b'{"execute":"query-version","arguments":[]}\n',
     b'{"error": {"class": "GenericError", "desc": "QMP input member \'arguments\' must be an object"}}'),
    (b'{"execute":"query-version","foo":1}\n',
     b'{"error": {"class": "GenericError", "desc": "QMP input member \'foo\' is unexpected"}}'),
    (b"{'execute':'query-commands', 'id':'x'}\n",
     b'{"return": [{"name": "qmp_capabilities"}, {"name": "query-version"}, {"name": "query-commands"}, {"name": "query-qmp-schema"}, {"name": "quit"}, {"name": "blockdev-add"}, {"name": "blockdev-del"}, {"name": "blockdev-reopen"}, {"name": "query-named-block-nodes"}, {"name": "query-block"}, {"name": "x-debug-query-block-graph"}, {"name": "block_resize"}, {"name": "block-commit"}, {"name": "block-stream"}, {"name": "query-jobs"}, {"name": "job-pause"}, {"name": "job-resume"}, {"name": "job-cancel"}, {"name": "job-complete"}, {"name": "job-dismiss"}, {"name": "job-finalize"}, {"name": "query-block-jobs"}, {"name": "block-job-set-speed"}, {"name": "block-job-cancel"}, {"name": "block-job-pause"}, {"name": "block-job-resume"}, {"name": "block-job-complete"}, {"name": "block-job-dismiss"}, {"name": "block-job-finalize"}], "id": "x"}'),
    (b'{"execute":"query-version","id":"it\'s \\"q\\""}\n',
     None),  # checked below: the id comes back verbatim
]


class ProtocolTest(unittest.TestCase):
    def setUp(self):
        self.d = Daemon(DAEMON)

    def tearDown(self):
        self.d.cleanup()

    def test_greeting(self):
        c = self.d.client()
        line = c.raw_lines[0]
        self.assertTrue(line.endswith(b"}\r\n"), line)
        v = c.greeting["QMP"]["version"]
        self.assertEqual(c.greeting["QMP"]["capabilities"], ["oob"])
        self.assertEqual(sorted(v["qemu"]), ["major", "micro", "minor"])
        self.assertTrue(v["package"].startswith("strata "), v)
        self.assertTrue(line.startswith(b'{"QMP": {"version": {"qemu": {"micro": '), line)

    def test_golden_transcript(self):
        c = self.d.client()
        for request, expected in TRANSCRIPT:
            c.send_raw(request)
            line = c.read_line()
            self.assertTrue(line.endswith(b"\r"), line)
            if expected is None:
                self.assertEqual(json.loads(line)["id"], 'it\'s "q"')
            else:
                self.assertEqual(line[:-1], expected, request)

    def test_framing_spans_lines_and_packs_messages(self):
        c = self.d.client().negotiate()
        # One request over three writes and lines, then two requests in one write.
        c.send_raw(b'{"execute":\n')
        c.send_raw(b'  "query-version",\n')
        c.send_raw(b' "id": 10}')
        self.assertEqual(c.reply()["id"], 10)
        c.send_raw(b'{"execute":"query-version","id":11}{"execute":"query-version","id":12}')
        self.assertEqual(c.reply()["id"], 11)
        self.assertEqual(c.reply()["id"], 12)
        # Braces inside strings do not count.
        c.send_raw(b'{"execute":"no}{pe","id":"{["}')
        rsp = c.reply()
        self.assertEqual(rsp["id"], "{[")
        self.assertEqual(rsp["error"]["desc"], "The command no}{pe has not been found")

    def test_socket_is_owner_only(self):
        mode = stat.S_IMODE(os.stat(self.d.sock).st_mode)
        self.assertEqual(mode, 0o600)

    def test_exec_oob_is_refused_per_command(self):
        c = self.d.client().negotiate()
        c.send_raw(b'{"exec-oob":"query-version","id":5}\n')
        rsp = c.reply()
        self.assertEqual(rsp["id"], 5)
        self.assertEqual(rsp["error"]["desc"], "The command query-version does not support OOB")

    def test_capabilities_enable(self):
        c = self.d.client()
        rsp = c.cmd("qmp_capabilities", {"enable": ["nope"]})
        self.assertEqual(rsp["error"]["class"], "GenericError")
        rsp = c.cmd("qmp_capabilities", {"enable": ["oob"]})
        self.assertEqual(rsp["return"], {})


if __name__ == "__main__":
    unittest.main()
