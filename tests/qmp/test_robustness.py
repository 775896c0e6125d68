"""qmp.robustness: bad input, oversized messages, many clients, clients that vanish."""
import os
import socket
import subprocess
import unittest

from qmp_client import Daemon, QmpClient, make_image

DAEMON = os.environ["STRATA_DAEMON"]


class RobustnessTest(unittest.TestCase):
    def setUp(self):
        self.d = Daemon(DAEMON)

    def tearDown(self):
        self.d.cleanup()

    def assert_alive(self):
        c = self.d.client().negotiate()
        self.assertIn("return", c.cmd("query-version"))
        c.close()

    def test_malformed_json_keeps_the_session(self):
        c = self.d.client().negotiate()
        for bad in [b'{"execute": }\n', b'{"a" 1}\n', b'nul\n', b'}\n', b'{"execute":"x",}\n']:
            c.send_raw(bad)
            rsp = c.reply()
            self.assertEqual(rsp["error"]["class"], "GenericError", bad)
            self.assertTrue(rsp["error"]["desc"].startswith("JSON parse error"), rsp)
        self.assertIn("return", c.cmd("query-version"))

    def test_oversized_message_is_refused(self):
        other = self.d.client().negotiate()
        c = self.d.client().negotiate()
        # 65 MiB inside one string: over the 64 MiB cap.
        chunk = b"x" * (1 << 20)
        c.send_raw(b'{"execute":"query-version","id":"')
        for _ in range(65):
            c.send_raw(chunk)
        c.send_raw(b'"}\n')
        rsp = c.reply()
        self.assertEqual(rsp, {"error": {"class": "GenericError",
                                         "desc": "JSON token size limit exceeded"}})
        # The rest of the oversized message was skipped; the session goes on.
        self.assertIn("return", c.cmd("query-version"))
        self.assertIn("return", other.cmd("query-version"))

    def test_deep_nesting_is_refused(self):
        c = self.d.client().negotiate()
        c.send_raw(b"[" * 2000 + b"]" * 2000 + b"\n")
        rsp = c.reply()
        self.assertEqual(rsp["error"]["desc"], "JSON nesting depth limit exceeded")
        self.assertIn("return", c.cmd("query-version"))

    def test_fifty_clients_at_once(self):
        clients = [self.d.client() for _ in range(50)]
        for c in clients:
            c.send_raw(b'{"execute":"qmp_capabilities"}{"execute":"query-version","id":"v"}')
        for c in clients:
            self.assertEqual(c.reply(), {"return": {}})
            self.assertEqual(c.reply()["id"], "v")
        for c in clients:
            c.close()
        self.assert_alive()

    def test_client_vanishes_mid_command(self):
        img = self.d.path("d.img")
        make_image(img)
        for i in range(5):
            c = self.d.client().negotiate()
            c.send_raw(('{"execute":"blockdev-add","arguments":{"driver":"file",'
                        f'"node-name":"f{i}","filename":"{img}","read-only":true}}}}\n'
                        '{"execute":"query-named-block-nodes"}\n').encode())
            c.sock.shutdown(socket.SHUT_RDWR)
            c.close()
        c = self.d.client().negotiate()
        names = sorted(n["node-name"] for n in c.cmd("query-named-block-nodes")["return"])
        self.assertEqual(names, [f"f{i}" for i in range(5)])

    def test_client_that_never_reads(self):
        # A client that sends much and reads nothing must not stall the others.
        lazy = socket.socket(socket.AF_UNIX)
        lazy.connect(self.d.sock)
        lazy.sendall(b'{"execute":"qmp_capabilities"}')
        lazy.setblocking(False)
        try:
            for _ in range(2000):
                lazy.send(b'{"execute":"query-commands"}')
        except BlockingIOError:
            pass
        self.assert_alive()
        lazy.close()
        self.assert_alive()


if __name__ == "__main__":
    unittest.main()
