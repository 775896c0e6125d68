"""A minimal QMP client and daemon launcher for the tests (python3-qemu.qmp is not in Debian 12).

QmpClient speaks the wire protocol: it reads the greeting, sends requests, and reads lines,
queueing events, until the reply with the request's id arrives. Daemon starts strata-daemon
(or qemu-storage-daemon, for differential tests) with a QMP socket and a pid file and waits for
the pid file: the daemon's readiness signal.
"""
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time


class QmpClient:
    def __init__(self, path, timeout=10.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.buf = b""
        self.events = []
        self.raw_lines = []
        self.greeting = self.read_message()
        self.next_id = 0

    def read_line(self):
        while b"\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("connection closed")
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        self.raw_lines.append(line + b"\n")
        return line

    def read_message(self):
        return json.loads(self.read_line())

    def send_raw(self, data):
        self.sock.sendall(data if isinstance(data, bytes) else data.encode())

    def reply(self):
        """The next reply (return or error), queueing events that come before it."""
        while True:
            msg = self.read_message()
            if "event" in msg:
                self.events.append(msg)
            else:
                return msg

    def cmd(self, execute, arguments=None, with_id=True):
        req = {"execute": execute}
        if arguments is not None:
            req["arguments"] = arguments
        if with_id:
            self.next_id += 1
            req["id"] = self.next_id
        self.send_raw(json.dumps(req) + "\n")
        rsp = self.reply()
        if with_id:
            assert rsp.get("id") == req["id"], (req, rsp)
        return rsp

    def negotiate(self):
        rsp = self.cmd("qmp_capabilities")
        assert rsp.get("return") == {}, rsp
        return self

    def close(self):
        self.sock.close()


def strip_id(rsp):
    return {k: v for k, v in rsp.items() if k != "id"}


class Daemon:
    """strata-daemon or qemu-storage-daemon in a temporary directory."""

    def __init__(self, binary, extra_args=(), qsd=False):
        self.dir = tempfile.mkdtemp(prefix="qmp-test-", dir="/dev/shm")
        self.sock = os.path.join(self.dir, "qmp.sock")
        self.pidfile = os.path.join(self.dir, "daemon.pid")
        args = [binary]
        args += ["--chardev", f"socket,path={self.sock},server=on,wait=off,id=m0",
                 "--monitor", "chardev=m0", "--pidfile", self.pidfile]
        args += list(extra_args)
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.time() + 10
        while not os.path.exists(self.pidfile):
            if self.proc.poll() is not None:
                out, err = self.proc.communicate()
                raise RuntimeError(f"daemon exited {self.proc.returncode}: {err.decode()}")
            if time.time() > deadline:
                self.proc.kill()
                raise RuntimeError("daemon did not become ready")
            time.sleep(0.01)

    def path(self, name):
        return os.path.join(self.dir, name)

    def client(self):
        return QmpClient(self.sock)

    def wait(self, timeout=10):
        out, err = self.proc.communicate(timeout=timeout)
        self.stderr = err.decode()
        return self.proc.returncode

    def cleanup(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def make_image(path, fmt="raw", size="1M"):
    if shutil.which("qemu-img"):
        subprocess.run(["qemu-img", "create", "-q", "-f", fmt, path, size], check=True)
    else:
        assert fmt == "raw"
        with open(path, "wb") as f:
            f.truncate(1 << 20)
