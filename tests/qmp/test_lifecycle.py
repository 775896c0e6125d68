"""qmp.lifecycle: strata-daemon's command line, readiness, signals and start-up errors."""
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import unittest

from qmp_client import Daemon, QmpClient, make_image

DAEMON = os.environ["STRATA_DAEMON"]


def run(*args):
    return subprocess.run([DAEMON, *args], capture_output=True, text=True, timeout=20)


class CommandLineTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="qmp-cli-", dir="/dev/shm")

    def tearDown(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def test_help_and_version(self):
        r = run("--help")
        self.assertEqual(r.returncode, 0)
        self.assertIn("--blockdev", r.stdout)
        r = run("-V")
        self.assertEqual(r.returncode, 0)
        self.assertRegex(r.stdout, r"^strata-daemon version \d+\.\d+\.\d+\n$")

    def test_startup_errors_are_one_line_and_exit_1(self):
        nope = os.path.join(self.dir, "nope")
        sock = os.path.join(self.dir, "s.sock")
        img = os.path.join(self.dir, "d.img")
        make_image(img)
        cases = [
            (["--blockdev", f"driver=file,node-name=f1,filename={nope}"],
             f"strata-daemon: --blockdev driver=file,node-name=f1,filename={nope}: "
             f"Could not open '{nope}': No such file or directory\n"),
            (["--monitor", "chardev=zz"],
             'strata-daemon: --monitor chardev=zz: chardev "zz" not found\n'),
            (["--chardev", f"socket,path={sock},server=on,wait=off,id=c1",
              "--chardev", f"socket,path={sock}2,server=on,wait=off,id=c1"],
             f"strata-daemon: --chardev socket,path={sock}2,server=on,wait=off,id=c1: "
             "Duplicate ID 'c1' for chardev\n"),
            (["--bogus"], "strata-daemon: unrecognized option '--bogus'\n"),
            (["--blockdev", f"driver=file,node-name=f0,filename={img},bogus=1"],
             f"strata-daemon: --blockdev driver=file,node-name=f0,filename={img},bogus=1: "
             "Parameter 'bogus' is unexpected\n"),
            (["--blockdev", '{"driver":"file"'],
             'strata-daemon: --blockdev {"driver":"file": JSON parse error, premature EOI\n'),
            # Options apply in order: r0 names f0 before f0 exists.
            (["--blockdev", "driver=raw,node-name=r0,file=f0",
              "--blockdev", f"driver=file,node-name=f0,filename={nope}"],
             None),
        ]
        for args, expected in cases:
            r = run(*args)
            self.assertEqual(r.returncode, 1, args)
            self.assertEqual(r.stderr.count("\n"), 1, r.stderr)
            self.assertTrue(r.stderr.startswith("strata-daemon: "), r.stderr)
            if expected is not None:
                self.assertEqual(r.stderr, expected)
        self.assertFalse(os.path.exists(sock))

    def test_blockdev_json_and_keyval(self):
        img = os.path.join(self.dir, "d.img")
        make_image(img)
        d = Daemon(DAEMON, ["--blockdev", f"driver=file,node-name=f0,filename={img}",
                            "--blockdev", json.dumps({"driver": "raw", "node-name": "r0",
                                                      "file": "f0", "read-only": True})])
        try:
            with open(d.pidfile) as f:
                self.assertEqual(f.read(), f"{d.proc.pid}\n")
            c = d.client().negotiate()
            nodes = {n["node-name"]: n for n in c.cmd("query-named-block-nodes")["return"]}
            self.assertEqual(sorted(nodes), ["f0", "r0"])
            self.assertTrue(nodes["r0"]["ro"])
        finally:
            d.cleanup()

    def test_signals_shut_down_cleanly_with_clients_connected(self):
        img = os.path.join(self.dir, "d.qcow2")
        make_image(img, "qcow2", "4M")
        for sig in [signal.SIGTERM, signal.SIGINT, signal.SIGHUP]:
            d = Daemon(DAEMON, ["--blockdev", f"driver=file,node-name=f0,filename={img}",
                                "--blockdev", "driver=qcow2,node-name=q0,file=f0"])
            try:
                clients = [d.client().negotiate() for _ in range(5)]
                idle = d.client()  # still negotiating
                clients[0].send_raw(b'{"execute":"query-named-block-nodes"}')
                d.proc.send_signal(sig)
                self.assertEqual(d.wait(), 0, d.stderr)
                self.assertEqual(d.stderr, "")
                self.assertFalse(os.path.exists(d.sock))
                self.assertFalse(os.path.exists(d.pidfile))
                for c in clients[1:] + [idle]:
                    self.assertEqual(c.sock.recv(100), b"")  # closed by the daemon
            finally:
                d.cleanup()
            if shutil.which("qemu-img"):
                # The lock is released and the image is clean.
                r = subprocess.run(["qemu-img", "check", img], capture_output=True, text=True)
                self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_daemonize(self):
        sock = os.path.join(self.dir, "s.sock")
        pidfile = os.path.join(self.dir, "p.pid")
        r = run("--daemonize", "--chardev", f"socket,path={sock},server=on,wait=off,id=c",
                "--monitor", "chardev=c", "--pidfile", pidfile)
        self.assertEqual(r.returncode, 0, r.stderr)
        # Ready when the parent exits: the pid file and the socket exist already.
        with open(pidfile) as f:
            pid = int(f.read())
        c = QmpClient(sock).negotiate()
        self.assertEqual(c.cmd("quit")["return"], {})
        deadline = time.time() + 10
        while os.path.exists(pidfile) and time.time() < deadline:
            time.sleep(0.02)
        self.assertFalse(os.path.exists(pidfile))
        self.assertFalse(os.path.exists(sock))
        with self.assertRaises(ProcessLookupError):
            for _ in range(100):
                os.kill(pid, 0)
                time.sleep(0.02)

    def test_daemonize_reports_startup_failure(self):
        r = run("--daemonize", "--monitor", "chardev=zz")
        self.assertEqual(r.returncode, 1)
        self.assertEqual(r.stderr, 'strata-daemon: --monitor chardev=zz: chardev "zz" not found\n')


if __name__ == "__main__":
    unittest.main()
