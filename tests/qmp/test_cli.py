"""qmp.cli: strata-daemon's command line against qemu-storage-daemon 7.2's.

The chardev and monitor forms a QMP monitor needs (a socket path, a caller's fd, --qmp), with
QSD's texts for what QSD refuses too, and clear ones for what strata-daemon refuses on its own
(server=off, wait=on, NBD and exports). Every start-up error is one line (plus QEMU's hint line
where QEMU prints one), exit status 1, and leaves nothing behind: no socket, no pid file, no
lock on an image.
"""
import json
import os
import shutil
import socket
import stat
import subprocess
import tempfile
import time
import unittest

from qmp_client import QmpClient, make_image

DAEMON = os.environ["STRATA_DAEMON"]
HAVE_QEMU_IMG = shutil.which("qemu-img") is not None


def run(*args, **kwargs):
    return subprocess.run([DAEMON, *args], capture_output=True, text=True, timeout=20, **kwargs)


def wait_for(predicate, timeout=10):
    deadline = time.time() + timeout
    while not predicate():
        if time.time() > deadline:
            return False
        time.sleep(0.01)
    return True


class CliTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="qmp-cli-", dir="/dev/shm")
        self.sock = os.path.join(self.dir, "s.sock")
        self.pidfile = os.path.join(self.dir, "d.pid")

    def tearDown(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def start(self, *args, pass_fds=()):
        """Starts the daemon in the foreground and waits for its pid file."""
        proc = subprocess.Popen([DAEMON, *args, "--pidfile", self.pidfile], pass_fds=pass_fds,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.addCleanup(lambda: proc.poll() is None and (proc.kill(), proc.wait()))
        ok = wait_for(lambda: os.path.exists(self.pidfile) or proc.poll() is not None)
        if not ok or proc.poll() is not None:
            self.fail(proc.stderr.read() if ok else "no pid file")
        return proc

    def quit(self, proc, path):
        c = QmpClient(path).negotiate()
        self.assertEqual(c.cmd("quit")["return"], {})
        out, err = proc.communicate(timeout=10)
        self.assertEqual((proc.returncode, err), (0, b""))

    def test_startup_errors(self):
        s = self.sock
        chardev = f"socket,path={s},server=on,wait=off,id=c"
        cases = [
            # QSD 7.2's texts, observed.
            (["--chardev", chardev, "--monitor", "chardev=c", "--monitor", "chardev=c"],
             "--monitor chardev=c: Device 'c' is in use"),
            (["--monitor", "chardev=c,mode=readline"],
             '--monitor chardev=c,mode=readline: chardev "c" not found'),
            (["--monitor", "chardev=c,bogus=1"],
             "--monitor chardev=c,bogus=1: Parameter 'bogus' is unexpected"),
            (["--chardev", chardev, "--monitor", "chardev=c,mode=readline"],
             "--monitor chardev=c,mode=readline: Only QMP is supported"),
            (["--chardev", chardev, "--monitor", "chardev=c,mode=bogus"],
             "--monitor chardev=c,mode=bogus: Parameter 'mode' does not accept value 'bogus'"),
            (["--chardev", chardev, "--monitor", "chardev=c,pretty=maybe"],
             "--monitor chardev=c,pretty=maybe: Parameter 'pretty' expects 'on' or 'off'"),
            (["--chardev", chardev, "--monitor", "c,pretty"],
             "--monitor c,pretty: Expected '=' after parameter 'pretty'"),
            (["--chardev", "socket,fd=99,server=on,wait=off,id=c"],
             "--chardev socket,fd=99,server=on,wait=off,id=c: "
             "File descriptor '99' is not a socket"),
            (["--chardev", "socket,fd=abc,server=on,wait=off,id=c"],
             "--chardev socket,fd=abc,server=on,wait=off,id=c: Unable to parse FD number abc"),
            (["--chardev", chardev + ",bogus=1"],
             f"--chardev {chardev},bogus=1: Invalid parameter 'bogus'"),
            (["--chardev", f"socket,path={s},server=on,wait=off"],
             f"--chardev socket,path={s},server=on,wait=off: chardev: no id specified"),
            (["--chardev", chardev + ",fd=3"],
             f"--chardev {chardev},fd=3: None or one of 'path', 'fd' or 'host' option required."),
            (["--chardev", f"socket,path={s},server=maybe,wait=off,id=c"],
             f"--chardev socket,path={s},server=maybe,wait=off,id=c: "
             "Parameter 'server' expects 'on' or 'off'"),
            (["--chardev", f"socket,path={self.dir}/no/s.sock,server=on,wait=off,id=c"],
             f"--chardev socket,path={self.dir}/no/s.sock,server=on,wait=off,id=c: "
             f"Failed to bind socket to {self.dir}/no/s.sock: No such file or directory"),
            (["--chardev", chardev, "--pidfile", f"{self.dir}/no/p"],
             f"cannot create PID file: Could not create '{self.dir}/no/p': "
             "No such file or directory"),
            (["foo"], "foo: Unexpected argument"),
            (["--monitor"], "option '--monitor' requires an argument"),
            # strata-daemon's own refusals.
            (["--chardev", f"socket,path={s},server=off,id=c"],
             f"--chardev socket,path={s},server=off,id=c: "
             "server=off is not supported: strata-daemon only listens (use server=on)"),
            (["--chardev", f"socket,path={s},id=c"],
             f"--chardev socket,path={s},id=c: "
             "server=off is not supported: strata-daemon only listens (use server=on)"),
            (["--chardev", f"socket,path={s},server=on,wait=on,id=c"],
             f"--chardev socket,path={s},server=on,wait=on,id=c: wait=on is not supported: "
             "strata-daemon does not wait for a client before starting (use wait=off)"),
            (["--chardev", f"socket,path={s},server=on,id=c"],
             f"--chardev socket,path={s},server=on,id=c: wait=on (the default with server=on) "
             "is not supported: strata-daemon does not wait for a client before starting "
             "(use wait=off)"),
            (["--chardev", "socket,host=::1,port=4444,server=on,wait=off,id=c"],
             "--chardev socket,host=::1,port=4444,server=on,wait=off,id=c: "
             "Parameter 'host' is not supported by strata-daemon"),
            (["--chardev", "socket,server=on,wait=off,id=c"],
             "--chardev socket,server=on,wait=off,id=c: chardev: socket: 'path' or 'fd' is "
             "required"),
            (["--chardev", "file,path=x,id=c"],
             "--chardev file,path=x,id=c: chardev backend 'file' is not supported: "
             "QMP is served on sockets only"),
            (["--qmp", f"tcp:localhost:4444"],
             "--qmp tcp:localhost:4444: only unix:<path> is supported (or use --chardev with fd=)"),
            (["--qmp", f"unix:{s},wait=on"],
             f"--qmp unix:{s},wait=on: wait=on is not supported: strata-daemon does not wait "
             "for a client before starting (use wait=off)"),
            (["--nbd-server", "addr.type=unix,addr.path=n.sock"],
             "--nbd-server addr.type=unix,addr.path=n.sock: not supported yet: strata-daemon "
             "has no NBD server so far"),
            (["--export", "type=nbd,id=e0,node-name=q0"],
             "--export type=nbd,id=e0,node-name=q0: not supported yet: strata-daemon has no "
             "exports so far"),
            (["--object", "secret,id=s0,data=x"],
             "--object secret,id=s0,data=x: not supported yet: strata-daemon has no object "
             "types so far"),
        ]
        for args, expected in cases:
            with self.subTest(args=args):
                r = run(*args, cwd=self.dir)
                self.assertEqual(r.returncode, 1)
                self.assertEqual(r.stderr, f"strata-daemon: {expected}\n")
                self.assertEqual(os.listdir(self.dir), [])

    def test_bad_identifier_gets_qemus_hint_line(self):
        r = run("--chardev", f"socket,path={self.sock},server=on,wait=off,id=1c")
        self.assertEqual(r.returncode, 1)
        self.assertEqual(r.stderr.splitlines(), [
            f"strata-daemon: --chardev socket,path={self.sock},server=on,wait=off,id=1c: "
            "Parameter 'id' expects an identifier",
            "Identifiers consist of letters, digits, '-', '.', '_', starting with a letter."])
        self.assertFalse(os.path.exists(self.sock))

    def test_help_lists_every_form(self):
        r = run("--help")
        self.assertEqual(r.returncode, 0)
        for text in ["--chardev socket,path=<path>,server=on,wait=off,id=<id>",
                     "--chardev socket,fd=<fd>,server=on,wait=off,id=<id>",
                     "--monitor [chardev=]<id>[,id=<name>][,mode=control][,pretty=on|off]",
                     "--qmp unix:<path>", "--nbd-server, --export, --object",
                     "not supported yet"]:
            self.assertIn(text, r.stdout)

    def test_qmp_shorthand(self):
        proc = self.start("--qmp", f"unix:{self.sock}", "--qmp", f"unix:{self.sock}2")
        self.assertEqual(stat.S_IMODE(os.stat(self.sock).st_mode), 0o600)
        c = QmpClient(self.sock + "2").negotiate()
        self.assertIn("return", c.cmd("query-version"))
        self.quit(proc, self.sock)
        self.assertEqual(os.listdir(self.dir), [])

    def test_listening_fd_passed_by_the_caller(self):
        # libvirt's way: the caller binds (and maybe listens), the daemon serves the fd.
        for listening in [True, False]:
            with self.subTest(listening=listening):
                listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                listener.bind(self.sock)
                if listening:
                    listener.listen()
                fd = listener.fileno()
                proc = self.start("--chardev", f"socket,fd={fd},server=on,wait=off,id=c",
                                  "--monitor", "chardev=c", pass_fds=[fd])
                listener.close()
                self.quit(proc, self.sock)
                # The socket file is the caller's: the daemon leaves it.
                self.assertTrue(os.path.exists(self.sock))
                os.unlink(self.sock)

    def test_fd_that_is_not_a_unix_stream_socket(self):
        for kind in [(socket.AF_INET, socket.SOCK_STREAM), (socket.AF_UNIX, socket.SOCK_DGRAM)]:
            s = socket.socket(*kind)
            fd = s.fileno()
            r = run("--chardev", f"socket,fd={fd},server=on,wait=off,id=c", pass_fds=[fd])
            s.close()
            self.assertEqual(r.returncode, 1)
            self.assertEqual(r.stderr, f"strata-daemon: --chardev socket,fd={fd},server=on,"
                             f"wait=off,id=c: File descriptor '{fd}' is not a Unix stream "
                             "socket\n")

    def test_monitor_keys_and_pretty_output(self):
        plain, pretty = self.sock, self.sock + "p"
        proc = self.start(
            "--chardev", f"socket,path={plain},server=yes,wait=no,id=c0",
            "--chardev", f"socket,path={pretty},server=on,wait=off,id=c1",
            "--monitor", "c0,id=m0,mode=control,pretty=off",
            "--monitor", "chardev=c1,id=m0,pretty=on")
        c = QmpClient(plain)
        self.assertEqual(c.raw_lines[0][:9], b'{"QMP": {')
        # pretty=on: QEMU's layout, byte for byte (observed on qemu-storage-daemon 7.2).
        raw = socket.socket(socket.AF_UNIX)
        raw.connect(pretty)
        raw.sendall(b'{"execute":"qmp_capabilities"}{"execute":"nope","id":[1]}')
        expected = (b'{\r\n    "return": {\r\n    }\r\n}\r\n'
                    b'{\r\n    "id": [\r\n        1\r\n    ],\r\n    "error": {\r\n'
                    b'        "class": "CommandNotFound",\r\n'
                    b'        "desc": "The command nope has not been found"\r\n    }\r\n}\r\n')
        data = b""
        while not data.endswith(b"found\"\r\n    }\r\n}\r\n"):
            chunk = raw.recv(65536)
            self.assertTrue(chunk, data)
            data += chunk
        greeting, rest = data.split(b"\r\n}\r\n", 1)
        self.assertTrue(greeting.startswith(b'{\r\n    "QMP": {\r\n        "version": {'))
        self.assertEqual(rest, expected)
        raw.close()
        self.quit(proc, plain)

    def test_startup_error_leaves_nothing_behind(self):
        img = os.path.join(self.dir, "d.qcow2")
        make_image(img, "qcow2" if HAVE_QEMU_IMG else "raw", "4M")
        fmt = "qcow2" if HAVE_QEMU_IMG else "raw"
        r = run("--chardev", f"socket,path={self.sock},server=on,wait=off,id=c",
                "--monitor", "c", "--qmp", f"unix:{self.sock}2", "--pidfile", self.pidfile,
                "--blockdev", f"driver=file,node-name=f0,filename={img}",
                "--blockdev", f"driver={fmt},node-name=q0,file=f0",
                # Options apply in order: q1 names f1 before f1 exists.
                "--blockdev", f"driver={fmt},node-name=q1,file=f1",
                "--blockdev", f"driver=file,node-name=f1,filename={img}")
        self.assertEqual(r.returncode, 1)
        self.assertEqual(r.stderr, f"strata-daemon: --blockdev driver={fmt},node-name=q1,file=f1: "
                         "Cannot find device='f1' nor node-name='f1'\n")
        self.assertEqual(os.listdir(self.dir), ["d.qcow2"])
        if HAVE_QEMU_IMG:
            # Not locked (no -U) and not dirty.
            info = subprocess.run(["qemu-img", "info", "--output=json", img],
                                  capture_output=True, text=True)
            self.assertEqual(info.returncode, 0, info.stderr)
            self.assertFalse(json.loads(info.stdout)["dirty-flag"])
            check = subprocess.run(["qemu-img", "check", img], capture_output=True, text=True)
            self.assertEqual(check.returncode, 0, check.stdout + check.stderr)

    def test_daemonize_good_start_with_relative_paths(self):
        # The daemon leaves the directory it started in (as QEMU does) and still removes its
        # socket and pid file, given relative, when it quits.
        r = run("--daemonize", "--qmp", "unix:s.sock", "--pidfile", "d.pid", cwd=self.dir)
        self.assertEqual((r.returncode, r.stderr), (0, ""))
        with open(self.pidfile) as f:
            pid = int(f.read())
        self.assertEqual(os.readlink(f"/proc/{pid}/cwd"), "/")
        c = QmpClient(self.sock).negotiate()
        self.assertEqual(c.cmd("quit")["return"], {})
        self.assertTrue(wait_for(lambda: not os.path.exists(f"/proc/{pid}")))
        self.assertEqual(os.listdir(self.dir), [])

    def test_daemonize_bad_start_exits_with_the_childs_status(self):
        r = run("--daemonize", "--qmp", f"unix:{self.sock}", "--pidfile", self.pidfile,
                "--blockdev", f"driver=file,node-name=f0,filename={self.dir}/nope")
        self.assertEqual(r.returncode, 1)
        self.assertEqual(r.stderr, f"strata-daemon: --blockdev driver=file,node-name=f0,"
                         f"filename={self.dir}/nope: Could not open '{self.dir}/nope': "
                         "No such file or directory\n")
        self.assertEqual(os.listdir(self.dir), [])

    def test_signal_during_startup_is_a_clean_shutdown(self):
        # SIGTERM as soon as the pid file exists: the daemon's handler is in place already.
        for _ in range(3):
            proc = self.start("--qmp", f"unix:{self.sock}")
            proc.terminate()
            _, err = proc.communicate(timeout=10)
            self.assertEqual((proc.returncode, err), (0, b""))
            self.assertEqual(os.listdir(self.dir), [])


if __name__ == "__main__":
    unittest.main()
