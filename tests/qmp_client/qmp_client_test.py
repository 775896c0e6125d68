#!/usr/bin/env python3
"""strata-qmp against the real qemu-storage-daemon 7.2.

Each case starts qemu-storage-daemon on a fresh temporary directory with a QMP socket and two
nodes: f0 (driver file, on a 1 MiB qcow2 image) and q0 (qcow2 over f0). The case then runs
strata-qmp and checks its output and exit status.

Events: qemu-storage-daemon emits few events on its own. The shell case triggers them with a
blockdev-create job (JOB_STATUS_CHANGE created/running/.../concluded); part of them arrive after
the command's reply, while the shell waits for input, which is what the case checks.

Exit status: 0 pass, 1 fail, 77 skip (qemu-storage-daemon missing).
"""

import argparse
import json
import os
import re
import select
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

MiB = 1 << 20


class Daemon:
    def __init__(self, d):
        self.dir = d
        self.sock = os.path.join(d, "qmp.sock")
        self.image = os.path.join(d, "a.qcow2")
        subprocess.run(["qemu-img", "create", "-f", "qcow2", self.image, str(MiB)],
                       check=True, capture_output=True, timeout=30)
        pidfile = os.path.join(d, "pid")
        self.proc = subprocess.Popen(
            ["qemu-storage-daemon",
             "--blockdev", f"driver=file,node-name=f0,filename={self.image}",
             "--blockdev", "driver=qcow2,node-name=q0,file=f0",
             "--chardev", f"socket,path={self.sock},server=on,wait=off,id=m0",
             "--monitor", "chardev=m0", "--pidfile", pidfile],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 20
        while not os.path.exists(pidfile):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("qemu-storage-daemon did not start: " +
                                   self.proc.stderr.read().decode(errors="replace"))
            time.sleep(0.02)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Failure(Exception):
    pass


def check(cond, what, *details):
    if not cond:
        raise Failure(what + "".join("\n--- " + str(d) for d in details))


class Cases:
    def __init__(self, qmp, daemon):
        self.qmp = qmp
        self.d = daemon

    def run(self, *args, stdin=None):
        r = subprocess.run([self.qmp, *args], input=stdin, capture_output=True, text=True,
                           timeout=30)
        return r.returncode, r.stdout, r.stderr

    def cmd(self, *args):
        return self.run(self.d.sock, *args)

    def named_nodes(self):
        rc, out, err = self.cmd("query-named-block-nodes", "flat=true")
        check(rc == 0, "query-named-block-nodes failed", err)
        return {n["node-name"]: n for n in json.loads(out)}

    # ---- one-shot commands ----

    def oneshot_success(self):
        rc, out, err = self.cmd("query-version")
        check(rc == 0, f"exit status {rc}", err)
        v = json.loads(out)
        check(v["qemu"]["major"] == 7, "not the version object", out)
        check(out.startswith("{\n  \""), "not pretty-printed", out)
        nodes = self.named_nodes()
        check(nodes["q0"]["drv"] == "qcow2" and nodes["f0"]["drv"] == "file", "nodes", nodes)

    def oneshot_events(self):
        # blockdev-create emits created and running synchronously, before its reply.
        def create(*opts, n):
            return self.run(*opts, self.d.sock, "blockdev-create", f"job-id=j{n}", "options.driver=file",
                            f"options.filename={self.d.dir}/e{n}.img", "options.size=4096")
        rc, out, err = create(n=1)
        check(rc == 0 and out == "{}\n", f"exit status {rc}", out, err)
        events = [json.loads(l) for l in err.splitlines()]
        check([e["data"]["status"] for e in events] == ["created", "running"],
              "events before the reply not on stderr", err)
        check(all(e["event"] == "JOB_STATUS_CHANGE" and "seconds" in e["timestamp"]
                  for e in events), "events malformed", err)
        rc, out, err = create("-q", n=2)
        check(rc == 0 and out == "{}\n" and err == "", "-q did not drop the events", out, err)

    def command_not_found(self):
        rc, out, err = self.cmd("no-such-command")
        check(rc == 1, f"exit status {rc}, want 1", err)
        check(out == "", "stdout not empty", out)
        check(err == "strata-qmp: CommandNotFound: The command no-such-command has not been "
              "found\n", "stderr", err)

    def generic_error(self):
        rc, out, err = self.cmd("blockdev-del", "node-name=nope")
        check(rc == 1, f"exit status {rc}, want 1", err)
        check(err == "strata-qmp: GenericError: Failed to find node with node-name='nope'\n",
              "stderr", err)
        # A command the server rejects leaves it running and usable.
        check("q0" in self.named_nodes(), "daemon unusable after an error")

    def connect_error(self):
        rc, out, err = self.run(os.path.join(self.d.dir, "missing.sock"), "query-version")
        check(rc == 1, f"exit status {rc}, want 1", err)
        check("Failed to connect to" in err and "No such file or directory" in err, "stderr", err)

    def usage(self):
        rc, out, err = self.run()
        check(rc == 2 and "Usage: strata-qmp" in err, f"no arguments: exit status {rc}", err)
        rc, out, err = self.cmd("graph", "--format", "png")
        check(rc == 2 and "unknown format 'png'" in err, f"bad format: exit status {rc}", err)
        rc, out, err = self.cmd("blockdev-add", "driver")
        check(rc == 1 and "Expected '=' after parameter 'driver'" in err, "bad keyval", err)

    # ---- arguments ----

    def keyval_typing(self):
        img = os.path.join(self.d.dir, "b.raw")
        with open(img, "wb") as f:
            f.truncate(MiB)
        # Booleans, nesting by dots, strings.
        rc, out, err = self.cmd("blockdev-add", "driver=raw", "node-name=r1", "read-only=true",
                                "file.driver=file", f"file.filename={img}")
        check(rc == 0, "blockdev-add with dotted keys failed", err)
        nodes = self.named_nodes()
        check(nodes["r1"]["ro"] is True and nodes["r1"]["drv"] == "raw", "r1", nodes.get("r1"))
        # Numbers: block_resize wants an integer size; a JSON-quoted number is sent as a string
        # and the daemon says so.
        rc, out, err = self.cmd("block_resize", "node-name=f0", 'size="2097152"')
        check(rc == 1 and "Invalid parameter type for 'size', expected: integer" in err,
              "a quoted number was not sent as a string", rc, err)
        rc, out, err = self.cmd("block_resize", "node-name=q0", f"size={2 * MiB}")
        check(rc == 0, "block_resize with a number failed", err)
        check(self.named_nodes()["q0"]["image"]["virtual-size"] == 2 * MiB, "size not applied")

    def raw_json(self):
        rc, out, err = self.cmd("blockdev-add", json.dumps(
            {"driver": "raw", "node-name": "r2", "file": "f0", "read-only": True}))
        check(rc == 0, "blockdev-add with raw JSON failed", err)
        check(self.named_nodes()["r2"]["ro"] is True, "r2 not read-only")
        rc, out, err = self.cmd("blockdev-add", '{"driver": "raw"')
        check(rc == 1 and "not valid JSON" in err, "bad JSON accepted", rc, err)

    # ---- the shell ----

    def shell(self):
        new_img = os.path.join(self.d.dir, "new.img")
        p = subprocess.Popen([self.qmp, self.d.sock], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
        try:
            p.stdin.write(("query-version\n"
                           "no-such-command\n"
                           "blockdev-add driver=raw node-name=r3 file=f0 read-only=true\n"
                           '{"execute": "query-named-block-nodes", "arguments": {"flat": true},'
                           ' "id": "raw-1"}\n'
                           "help\n"
                           f"blockdev-create job-id=j1 options.driver=file "
                           f"options.filename='{new_img}' options.size=1048576\n").encode())
            # The job's last events come after its reply, while the shell waits for input:
            # read until the job has concluded, with stdin still open.
            out = b""
            deadline = time.monotonic() + 15
            while b'"concluded"' not in out and time.monotonic() < deadline:
                ready, _, _ = select.select([p.stdout], [], [], 0.5)
                if ready:
                    chunk = os.read(p.stdout.fileno(), 65536)
                    if not chunk:
                        break
                    out += chunk
            check(b'"concluded"' in out, "no concluded event while idle", out)
            # The last reply so far is blockdev-create's; the concluded event came after it.
            check(out.rindex(b"\n{}\n") < out.index(b'"concluded"'),
                  "the concluded event did not come while the shell was idle", out)
            rest, err = p.communicate(b"job-dismiss id=j1\n", timeout=15)
            out = (out + rest).decode()
            err = err.decode()
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        check(p.returncode == 0, f"shell exit status {p.returncode}", err)
        check('"major": 7' in out, "query-version reply missing", out)
        check("error: CommandNotFound: The command no-such-command has not been found" in out,
              "error line missing", out)
        check('"node-name": "r3"' in out, "raw JSON request's reply missing", out)
        check("Server commands:" in out and "blockdev-add" in out, "help missing", out)
        for status in ("created", "running", "concluded", "null"):
            check(f'"status":"{status}"' in out, f"event for {status} missing", out)
        events = [json.loads(l) for l in out.splitlines() if l.startswith('{"data"')]
        check(all(e["event"] == "JOB_STATUS_CHANGE" and "timestamp" in e for e in events),
              "events malformed", events)
        check(os.path.getsize(new_img) == MiB, "blockdev-create did not run")

    def shell_tty(self):
        """On a terminal: readline's prompt, an event redrawn above it, history saved."""
        import pty
        home = os.path.join(self.d.dir, "home")
        os.mkdir(home)
        pid, fd = pty.fork()
        if pid == 0:
            os.environ["HOME"] = home
            os.environ["TERM"] = "dumb"
            os.execv(self.qmp, [self.qmp, self.d.sock])
        out = b""

        def read_until(token, seconds=10):
            nonlocal out
            deadline = time.monotonic() + seconds
            while token not in out and time.monotonic() < deadline:
                ready, _, _ = select.select([fd], [], [], 0.2)
                if ready:
                    try:
                        out += os.read(fd, 65536)
                    except OSError:
                        break
            return token in out

        try:
            check(read_until(b"(strata-qmp) "), "no prompt", out)
            os.write(fd, b"query-version\r")
            check(read_until(b'"major": 7'), "no reply", out)
            # Events while idle: a job's last events come after its reply. Each is put above
            # the prompt, which is drawn again beneath it.
            os.write(fd, f"blockdev-create job-id=j2 options.driver=file "
                         f"options.filename={self.d.dir}/t.img options.size=4096\r".encode())
            check(read_until(b'"concluded"'), "no event shown while idle", out)
            read_until(b"never", seconds=0.3)
            check(re.search(rb'"concluded"[^\n]*\n\(strata-qmp\) $', out),
                  "prompt not redrawn after the event", out)
            os.write(fd, b"\x04")  # Ctrl-D
            _, status = os.waitpid(pid, 0)
            pid = 0
            check(os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, "exit status", status)
            hist = open(os.path.join(home, ".strata_qmp_history")).read()
            check("query-version" in hist, "history not saved", hist)
        finally:
            os.close(fd)
            if pid:
                os.kill(pid, 9)
                os.waitpid(pid, 0)

    def shell_quit(self):
        rc, out, err = self.run(self.d.sock, stdin="quit\nquery-version\n")
        check(rc == 0, f"exit status {rc} after quit", out, err)
        check(out == "{}\n", "quit's reply", out)
        check(self.d.proc.wait(timeout=10) == 0, "daemon did not quit")

    # ---- the graph ----

    def graph_dot(self):
        out_file = os.path.join(self.d.dir, "g.dot")
        for args in ([], ["--format", "dot"], ["-o", out_file]):
            rc, out, err = self.cmd("graph", *args)
            check(rc == 0, f"graph {args} failed", err)
            text = open(out_file).read() if "-o" in args else out
            check(text.startswith("digraph strata {"), "not DOT", text)
            check('label="q0\\nqcow2\\nrw"' in text and 'label="f0\\nfile\\nrw"' in text,
                  "nodes missing", text)
            check('[label="file\\nperm: resize, write, consistent-read\\nshared: '
                  'write-unchanged, consistent-read"]' in text, "edge missing", text)
        # dot itself accepts it.
        subprocess.run(["dot", "-Tplain", out_file], check=True, capture_output=True, timeout=30)

    def graph_svg(self):
        if shutil.which("dot") is None:
            raise Failure("Graphviz's dot is missing")
        out_file = os.path.join(self.d.dir, "g.svg")
        rc, out, err = self.cmd("graph", "--format", "svg", "-o", out_file)
        check(rc == 0, "graph --format svg failed", err)
        root = ET.parse(out_file).getroot()
        check(root.tag.endswith("svg"), "not SVG", root.tag)
        texts = [t.text for t in root.iter() if t.tag.endswith("text")]
        check("q0" in texts and "qcow2" in texts and "f0" in texts, "labels missing", texts)
        rc, out, err = self.cmd("graph", "--format=svg")
        check(rc == 0 and ET.fromstring(out.encode()).tag.endswith("svg"), "SVG on stdout", err)


CASES = [n for n in vars(Cases) if not n.startswith("_") and n not in ("run", "cmd",
                                                                         "named_nodes")]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--strata-qmp", required=True)
    ap.add_argument("case", choices=CASES)
    args = ap.parse_args()
    if shutil.which("qemu-storage-daemon") is None or shutil.which("qemu-img") is None:
        print("SKIP: qemu-storage-daemon or qemu-img missing")
        return 77
    with tempfile.TemporaryDirectory(prefix="strata-qmp-") as d:
        daemon = Daemon(d)
        try:
            getattr(Cases(args.strata_qmp, daemon), args.case)()
        except Failure as e:
            print(f"FAIL {args.case}: {e}")
            return 1
        finally:
            daemon.stop()
    print(f"PASS {args.case}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
