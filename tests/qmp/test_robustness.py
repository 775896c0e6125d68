"""qmp.robustness: bad input, oversized messages, many clients, clients that vanish, and
SIGTERM under load, at the sizes issue 5 names (a 100 MiB message, 100 clients at once)."""
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import unittest

from qmp_client import Daemon, QmpClient, make_image

DAEMON = os.environ["STRATA_DAEMON"]
MIB = 1 << 20


def memory_kib(pid):
    """The process's resident set now and its peak (VmRSS, VmHWM), in KiB."""
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value.split()
    return int(fields["VmRSS"][0]), int(fields["VmHWM"][0])


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

    def test_100_mib_message_is_refused_with_bounded_memory(self):
        other = self.d.client().negotiate()
        c = self.d.client().negotiate()
        rss_before, _ = memory_kib(self.d.proc.pid)
        # 100 MiB inside one string: over the 64 MiB cap. The other client is served meanwhile.
        chunk = b"x" * MIB
        c.send_raw(b'{"execute":"query-version","id":"')
        for i in range(100):
            c.send_raw(chunk)
            if i % 25 == 0:
                self.assertIn("return", other.cmd("query-version"))
        c.send_raw(b'"}\n')
        rsp = c.reply()
        self.assertEqual(rsp, {"error": {"class": "GenericError",
                                         "desc": "JSON token size limit exceeded"}})
        # The rest of the oversized message was skipped; the session goes on.
        self.assertIn("return", c.cmd("query-version"))
        self.assertIn("return", other.cmd("query-version"))
        rss_after, peak = memory_kib(self.d.proc.pid)
        # At most the cap (64 MiB) was held for the message, plus slack for the allocator;
        # and it was given back once the message was discarded. A sanitizer build keeps freed
        # buffers in quarantine, so there only the peak is checked, loosely.
        if os.environ.get("STRATA_SANITIZED", "0") == "0":
            self.assertLess(peak - rss_before, 72 * 1024, (rss_before, peak))
            self.assertLess(rss_after - rss_before, 8 * 1024, (rss_before, rss_after))
        else:
            self.assertLess(peak - rss_before, 128 * 1024, (rss_before, peak))

    def test_deep_nesting_is_refused(self):
        c = self.d.client().negotiate()
        c.send_raw(b"[" * 2000 + b"]" * 2000 + b"\n")
        rsp = c.reply()
        self.assertEqual(rsp["error"]["desc"], "JSON nesting depth limit exceeded")
        self.assertIn("return", c.cmd("query-version"))

    def test_hundred_clients_at_once(self):
        clients = [self.d.client() for _ in range(100)]
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


def qemu_img(*args):
    return subprocess.run(["qemu-img", *args], capture_output=True, text=True, timeout=30)


@unittest.skipUnless(shutil.which("qemu-img"), "needs qemu-img (qemu-utils)")
class ShutdownUnderLoadTest(unittest.TestCase):
    """SIGTERM while many clients issue commands: nodes added and deleted, qcow2 images resized
    (the daemon's way of writing metadata, for now), clients vanishing. The daemon exits 0,
    removes its socket and pid file, and leaves every image clean, unlocked and not dirty."""

    CLIENTS = 20

    def client_load(self, d, index, stop, errors):
        try:
            c = d.client().negotiate()
            img = d.path(f"extra{index}.qcow2")
            n = 0
            while not stop.is_set():
                n += 1
                # Pipelined, as a busy client sends them; only the last reply is waited for.
                batch = [
                    {"execute": "blockdev-add", "arguments": {
                        "driver": "qcow2", "node-name": f"x{index}",
                        "file": {"driver": "file", "filename": img}}},
                    {"execute": "block_resize",
                     "arguments": {"node-name": f"x{index}", "size": (8 + n % 8) * MIB}},
                    {"execute": "query-named-block-nodes", "arguments": {"flat": True}},
                    {"execute": "block_resize",
                     "arguments": {"node-name": f"q{index % 2}", "size": (8 + n % 4) * MIB}},
                    {"execute": "blockdev-del", "arguments": {"node-name": f"x{index}"}},
                    {"execute": "x-debug-query-block-graph", "id": n},
                ]
                c.send_raw("".join(json.dumps(r) for r in batch))
                if index % 5 == 0 and n == 3:
                    c.close()  # vanishes with commands in flight
                    c = d.client().negotiate()
                    continue
                while c.reply().get("id") != n:
                    pass
        except (EOFError, ConnectionError, OSError):
            pass  # the daemon closed the connection: it is shutting down
        except Exception as e:  # noqa: BLE001 - reported by the test
            errors.append(repr(e))

    def test_sigterm_under_load(self):
        d = None
        try:
            d = Daemon(DAEMON)
            images = [d.path(f"q{i}.qcow2") for i in range(2)]
            for i, img in enumerate(images):
                make_image(img, "qcow2", "8M")
            for i in range(self.CLIENTS):
                make_image(d.path(f"extra{i}.qcow2"), "qcow2", "8M")
            c = d.client().negotiate()
            for i, img in enumerate(images):
                add = c.cmd("blockdev-add", {"driver": "qcow2", "node-name": f"q{i}", "file": {
                    "driver": "file", "node-name": f"f{i}", "filename": img}})
                self.assertEqual(add, {"return": {}, "id": add["id"]})
            stop, errors = threading.Event(), []
            threads = [threading.Thread(target=self.client_load, args=(d, i, stop, errors))
                       for i in range(self.CLIENTS)]
            for t in threads:
                t.start()
            time.sleep(1.5)
            d.proc.send_signal(signal.SIGTERM)
            code = d.wait(timeout=15)
            stop.set()
            for t in threads:
                t.join(10)
            self.assertEqual((code, d.stderr), (0, ""))
            self.assertEqual(errors, [])
            self.assertFalse(os.path.exists(d.sock))
            self.assertFalse(os.path.exists(d.pidfile))
            for img in images + [d.path(f"extra{i}.qcow2") for i in range(self.CLIENTS)]:
                check = qemu_img("check", img)
                self.assertEqual(check.returncode, 0, img + check.stdout + check.stderr)
                info = qemu_img("info", "--output=json", img)  # no -U: fails if locked
                self.assertEqual(info.returncode, 0, info.stderr)
                self.assertFalse(json.loads(info.stdout)["dirty-flag"], img)
        finally:
            if d:
                d.cleanup()


if __name__ == "__main__":
    unittest.main()
