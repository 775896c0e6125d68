"""qmp.demo: the README's run command (scripts/demo.sh) and every command it prints.

demo.sh runs with STRATA_DEMO_NO_BUILD=1 on this build's binaries and a private demo directory.
The test pastes each printed strata-qmp command as it is printed and checks what it answers,
then stops the daemon both ways the script offers (the printed quit command, and Ctrl-C).
"""
import json
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
import unittest

DAEMON = os.environ["STRATA_DAEMON"]
BUILD = os.path.dirname(os.path.dirname(DAEMON))
DEMO = os.path.join(os.path.dirname(__file__), "..", "..", "scripts", "demo.sh")


class DemoTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="demo-", dir="/dev/shm")
        env = dict(os.environ, STRATA_DEMO_NO_BUILD="1", STRATA_BUILD_DIR=BUILD,
                   STRATA_DEMO_DIR=self.dir)
        # A session of its own, like a terminal's foreground job: Ctrl-C goes to the group.
        self.proc = subprocess.Popen(["bash", DEMO], env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True)
        self.output = []
        for line in self.proc.stdout:
            self.output.append(line)
            if line.startswith("Stop it with"):
                self.output.append(self.proc.stdout.readline())
                break
        self.printed = [line.strip() for line in self.output
                        if line.startswith("  ") and "strata-qmp" in line]

    def tearDown(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc.stdout.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def paste(self, command, stdin=None):
        return subprocess.run(shlex.split(command), input=stdin, capture_output=True, text=True,
                              timeout=20)

    def finish(self):
        rest = self.proc.stdout.read()
        self.assertEqual(self.proc.wait(timeout=15), 0, "".join(self.output) + rest)
        left = set(os.listdir(self.dir))
        self.assertLessEqual({"base.qcow2", "overlay.qcow2"}, left)
        self.assertLessEqual(left, {"base.qcow2", "overlay.qcow2", "graph.svg"})
        self.assertFalse(os.path.exists(os.path.join(self.dir, "qmp.sock")))
        self.assertFalse(os.path.exists(os.path.join(self.dir, "strata-daemon.pid")))
        if shutil.which("qemu-img"):
            for name in ["base.qcow2", "overlay.qcow2"]:
                r = subprocess.run(["qemu-img", "check", os.path.join(self.dir, name)],
                                   capture_output=True, text=True)
                self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_printed_commands_work_when_pasted(self):
        by_tail = {}
        for command in self.printed:
            words = shlex.split(command)
            by_tail[" ".join(words[2:3])] = command
        self.assertEqual(sorted(by_tail), ["", "graph", "query-block", "query-named-block-nodes",
                                           "quit"], self.printed)

        r = self.paste(by_tail["query-named-block-nodes"])
        self.assertEqual(r.returncode, 0, r.stderr)
        nodes = {n["node-name"]: n for n in json.loads(r.stdout)}
        self.assertEqual(sorted(nodes), ["base", "base-file", "overlay", "overlay-file"])
        self.assertTrue(nodes["base"]["ro"])
        self.assertFalse(nodes["overlay"]["ro"])
        self.assertEqual(nodes["overlay"]["backing_file_depth"], 1)
        # auto-read-only: the base's file is open read-only (nobody writes it), the overlay's
        # read-write (the overlay node may write).
        self.assertTrue(nodes["base-file"]["auto-read-only"])
        self.assertFalse(nodes["base-file"]["x-storage-read-write"])
        self.assertTrue(nodes["overlay-file"]["x-storage-read-write"])

        r = self.paste(by_tail["query-block"])
        self.assertEqual(r.returncode, 0, r.stderr)

        # The shell, fed the commands the script suggests.
        hint = next(line for line in self.output if "blockdev-add" in line).strip()
        shell_input = "x-debug-query-block-graph\n" + hint.rstrip(")") + "\n"
        r = self.paste(by_tail[""], stdin=shell_input)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn('"edges"', r.stdout)
        self.assertNotIn("error", r.stdout + r.stderr)

        r = self.paste(by_tail["graph"])
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(os.path.join(self.dir, "graph.svg")) as f:
            svg = f.read()
        self.assertIn("<svg", svg)
        for name in ["base", "overlay", "overlay-file"]:
            self.assertIn(name.replace("-", "&#45;"), svg)  # Graphviz escapes "-"

        r = self.paste(by_tail["quit"])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.finish()

    def test_ctrl_c_stops_it_cleanly(self):
        time.sleep(0.2)
        os.killpg(self.proc.pid, signal.SIGINT)
        self.finish()


if __name__ == "__main__":
    unittest.main()
