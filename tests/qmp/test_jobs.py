"""qmp.jobs: the job commands as golden transcripts, and the same transcripts against
qemu-storage-daemon 7.2 (differential; skipped where it is not installed).

A transcript is every reply and every event in the order a client receives them, timestamps
checked and masked, and Strata's own storage-access events kept apart (QEMU has none). The
chain is three qcow2 images (format-0 <- format-1 <- format-2) over file nodes with
auto-read-only, as in iotest 247.
"""
import json
import os
import shutil
import subprocess
import tempfile
import unittest

from qmp_client import Daemon, strip_id

DAEMON = os.environ["STRATA_DAEMON"]
QSD = shutil.which("qemu-storage-daemon")
ACCESS_EVENT = "__org.strata_BLOCK_STORAGE_ACCESS"
MIB = 1 << 20


def make_chain(directory, count, size="4M", base_dir=None):
    """img-0 .. img-<count-1>, each backed by the previous one, each with 256 KiB of its own
    data at its own offset (pattern 0x10 + N at N * 512 KiB). Returns the paths. With
    `base_dir`, img-0 is the one made there before (by make_chain(base_dir, 1))."""
    paths = []
    for i in range(count):
        if i == 0 and base_dir:
            paths.append(os.path.join(base_dir, "img-0"))
            continue
        path = os.path.join(directory, f"img-{i}")
        cmd = ["qemu-img", "create", "-q", "-f", "qcow2"]
        if i > 0:
            cmd += ["-b", paths[-1], "-F", "qcow2"]
        subprocess.run(cmd + [path, size], check=True)
        subprocess.run(["qemu-io", "-c", f"write -P {0x10 + i} {i * 512}k 256k", path],
                       check=True, stdout=subprocess.DEVNULL)
        paths.append(path)
    return paths


def chain_blockdevs(paths, file0=None):
    """--blockdev arguments: file-N (auto-read-only) and format-N (qcow2, read-only, backing by
    reference). `file0` replaces file-0's options."""
    args = []
    for i, path in enumerate(paths):
        f = {"driver": "file", "node-name": f"file-{i}", "filename": path,
             "auto-read-only": True}
        if i == 0 and file0 is not None:
            f = dict(file0, **{"node-name": "file-0", "filename": path})
        q = {"driver": "qcow2", "node-name": f"format-{i}", "file": f"file-{i}",
             "read-only": True, "backing": f"format-{i - 1}" if i else None}
        args += ["--blockdev", json.dumps(f), "--blockdev", json.dumps(q)]
    return args


class Recorder:
    """Runs commands and waits for events, logging both in arrival order."""

    def __init__(self, client):
        self.c = client
        self.log = []
        self.access = []  # (node-name, read-write) of Strata's storage-access events
        self.waited = 0  # log entries before this one were searched by wait()

    def _take(self, event):
        assert sorted(event["timestamp"]) == ["microseconds", "seconds"], event
        if event["event"] == ACCESS_EVENT:
            self.access.append((event["data"]["node-name"], event["data"]["read-write"]))
            return
        self.log.append({"event": event["event"], "data": event.get("data")})

    def _drain(self):
        for event in self.c.events:
            self._take(event)
        self.c.events.clear()

    def cmd(self, execute, arguments=None):
        self._drain()
        self.waited = len(self.log)  # wait() looks at what this command causes, and later
        rsp = strip_id(self.c.cmd(execute, arguments))
        self._drain()
        self.log.append(rsp)
        return rsp

    def wait(self, name, status=None):
        """Returns the next event `name` (a JOB_STATUS_CHANGE with `status`) not waited for
        yet, reading until it arrives if it has not already."""
        def matches(e):
            return e.get("event") == name and (status is None or e["data"]["status"] == status)
        self._drain()
        while True:
            for i in range(self.waited, len(self.log)):
                if matches(self.log[i]):
                    self.waited = i + 1
                    return self.log[i]
            self.waited = len(self.log)
            msg = self.c.read_message()
            assert "event" in msg, msg
            self._take(msg)

    def statuses(self, job_id):
        return [e["data"]["status"] for e in self.log
                if e.get("event") == "JOB_STATUS_CHANGE" and e["data"]["id"] == job_id]


def status_event(job_id, status):
    return {"event": "JOB_STATUS_CHANGE", "data": {"status": status, "id": job_id}}


def error(desc, cls="GenericError"):
    return {"error": {"class": cls, "desc": desc}}


OK = {"return": {}}


class JobSession:
    """A daemon (strata-daemon or qemu-storage-daemon) over a fresh three-image chain."""

    def __init__(self, binary, count=3, file0=None):
        self.dir = tempfile.mkdtemp(prefix="qmp-jobs-", dir="/dev/shm")
        try:
            self.paths = make_chain(self.dir, count)
            self.d = Daemon(binary, chain_blockdevs(self.paths, file0))
        except BaseException:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise
        self.r = Recorder(self.d.client().negotiate())

    def close(self):
        self.r.c.close()
        self.d.cleanup()
        shutil.rmtree(self.dir, ignore_errors=True)


# Commands refused before anything happens, with QEMU's texts and classes: identical on both.
REFUSED = [
    ("block-commit", {"device": "nope"}, error("Device 'nope' not found", "DeviceNotFound")),
    ("block-commit", {"job-id": "j"}, error("Parameter 'device' is missing")),
    ("block-commit", {"device": "format-2", "job-id": "j", "speed": "x"},
     error("Invalid parameter type for 'speed', expected: integer")),
    ("block-commit", {"device": "format-2", "job-id": "j", "on-error": "bad"},
     error("Parameter 'on-error' does not accept value 'bad'")),
    ("block-commit", {"device": "format-2", "job-id": "j", "bogus": 1},
     error("Parameter 'bogus' is unexpected")),
    ("block-commit", {"device": "format-1", "job-id": "j", "top-node": "format-0"},
     error("Need a root block node")),
    ("block-commit", {"device": "format-2", "job-id": "j", "top-node": "format-1", "top": "x"},
     error("'top-node' and 'top' are mutually exclusive")),
    ("block-commit", {"device": "format-2", "job-id": "j", "top-node": "nope"},
     error("Cannot find device='' nor node-name='nope'")),
    ("block-commit", {"device": "format-2", "job-id": "j", "top-node": "file-1"},
     error("'file-1' is not in this backing file chain")),
    ("block-commit", {"device": "format-2", "job-id": "j", "top": "nope"},
     error("Top image file nope not found")),
    ("block-commit", {"device": "format-2", "job-id": "j", "top-node": "format-1",
                      "base-node": "format-0", "base": "x"},
     error("'base-node' and 'base' are mutually exclusive")),
    ("block-commit", {"device": "format-2", "job-id": "j", "top-node": "format-1",
                      "base-node": "format-2"},
     error("'format-2' is not in this backing file chain")),
    ("block-commit", {"device": "format-2", "job-id": "j", "top-node": "format-1",
                      "base-node": "nope"},
     error("Cannot find device='' nor node-name='nope'")),
    ("block-commit", {"device": "format-2", "job-id": "j", "top-node": "format-1",
                      "base": "nope"},
     error("Can't find 'nope' in the backing chain")),
    ("block-commit", {"device": "format-2", "job-id": "j", "top-node": "format-0"},
     error("cannot commit an image into itself")),
    ("block-commit", {"device": "format-2", "job-id": "j", "backing-file": "x"},
     error("'backing-file' specified, but 'top' is the active layer")),
    ("block-commit", {"device": "format-2", "top-node": "format-1"}, error("Invalid job ID ''")),
    ("block-commit", {"device": "format-2", "job-id": "1j", "top-node": "format-1"},
     error("Invalid job ID '1j'")),
    ("block-stream", {"device": "nope"}, error("Cannot find device='nope' nor node-name='nope'")),
    ("block-stream", {"device": "format-2", "base": "x", "base-node": "y"},
     error("'base' and 'base-node' cannot be specified at the same time")),
    ("block-stream", {"device": "format-2", "base": "x", "bottom": "y"},
     error("'base' and 'bottom' cannot be specified at the same time")),
    ("block-stream", {"device": "format-2", "bottom": "y", "base-node": "y"},
     error("'bottom' and 'base-node' cannot be specified at the same time")),
    ("block-stream", {"device": "format-2", "base": "nope"},
     error("Can't find 'nope' in the backing chain")),
    ("block-stream", {"device": "format-2", "base-node": "format-2"},
     error("Node 'format-2' is not a backing image of 'format-2'")),
    ("block-stream", {"device": "format-2", "base-node": "nope"},
     error("Cannot find device='' nor node-name='nope'")),
    ("block-stream", {"device": "format-2", "bottom": "file-1"},
     error("Node 'file-1' is not in a chain starting from 'format-2'")),
    ("block-stream", {"device": "format-2", "backing-file": "x"},
     error("backing file specified, but streaming the entire chain")),
    ("block-stream", {"device": "format-2"}, error("Invalid job ID ''")),
    ("query-jobs", {"x": 1}, error("Parameter 'x' is unexpected")),
    ("query-jobs", None, {"return": []}),
    ("query-block-jobs", None, {"return": []}),
    ("job-pause", {"id": "nope"}, error("Job not found")),
    ("job-resume", {"id": "nope"}, error("Job not found")),
    ("job-cancel", {"id": "nope"}, error("Job not found")),
    ("job-complete", {"id": "nope"}, error("Job not found")),
    ("job-finalize", {"id": "nope"}, error("Job not found")),
    ("job-dismiss", {"id": "nope"}, error("Job not found")),
    ("job-pause", {}, error("Parameter 'id' is missing")),
    ("block-job-pause", {"device": "nope"}, error("Block job 'nope' not found", "DeviceNotActive")),
    ("block-job-resume", {"device": "nope"},
     error("Block job 'nope' not found", "DeviceNotActive")),
    ("block-job-cancel", {"device": "nope"},
     error("Block job 'nope' not found", "DeviceNotActive")),
    ("block-job-cancel", {"device": "nope", "force": 1},
     error("Invalid parameter type for 'force', expected: boolean")),
    ("block-job-complete", {"device": "nope"},
     error("Block job 'nope' not found", "DeviceNotActive")),
    ("block-job-finalize", {"id": "nope"}, error("Block job 'nope' not found", "DeviceNotActive")),
    ("block-job-dismiss", {"id": "nope"}, error("Block job 'nope' not found", "DeviceNotActive")),
    ("block-job-set-speed", {"device": "nope", "speed": 1},
     error("Block job 'nope' not found", "DeviceNotActive")),
    ("block-job-set-speed", {"device": "nope"}, error("Parameter 'speed' is missing")),
]

# A commit that stops in pending and concluded (auto-finalize and auto-dismiss off), with the
# verbs each state refuses, in QEMU's texts.
COMMIT = {"device": "format-2", "job-id": "job0", "top-node": "format-1",
          "base-node": "format-0", "auto-finalize": False, "auto-dismiss": False}


def manual_lifecycle(r):
    r.cmd("block-commit", COMMIT)
    r.wait("BLOCK_JOB_PENDING")
    r.cmd("job-dismiss", {"id": "job0"})
    r.cmd("job-complete", {"id": "job0"})
    r.cmd("job-pause", {"id": "job0"})
    r.cmd("job-finalize", {"id": "job0"})
    r.cmd("job-finalize", {"id": "job0"})
    r.cmd("job-cancel", {"id": "job0"})
    r.cmd("block-job-dismiss", {"id": "job0"})
    r.cmd("query-jobs")


def manual_lifecycle_golden(length):
    return [
        status_event("job0", "created"), status_event("job0", "running"), OK,
        status_event("job0", "waiting"), status_event("job0", "pending"),
        {"event": "BLOCK_JOB_PENDING", "data": {"type": "commit", "id": "job0"}},
        error("Job 'job0' in state 'pending' cannot accept command verb 'dismiss'"),
        error("Job 'job0' in state 'pending' cannot accept command verb 'complete'"),
        error("Job 'job0' in state 'pending' cannot accept command verb 'pause'"),
        {"event": "BLOCK_JOB_COMPLETED", "data": {"device": "job0", "len": length,
                                                   "offset": length, "speed": 0,
                                                   "type": "commit"}},
        status_event("job0", "concluded"), OK,
        error("Job 'job0' in state 'concluded' cannot accept command verb 'finalize'"),
        error("Job 'job0' in state 'concluded' cannot accept command verb 'cancel'"),
        status_event("job0", "null"), OK,
        {"return": []},
    ]


# A running, speed-limited commit: the verbs that running and paused refuse, pause/resume, and
# cancel. Progress is masked (how much one slice copies differs).
SLOW = {"device": "format-2", "job-id": "s0", "top-node": "format-1", "speed": 1}


def paused_stream(r):
    r.cmd("block-commit", SLOW)
    r.cmd("job-complete", {"id": "s0"})
    r.cmd("job-finalize", {"id": "s0"})
    r.cmd("job-dismiss", {"id": "s0"})
    r.cmd("block-job-complete", {"device": "s0"})
    r.cmd("job-pause", {"id": "s0"})
    r.cmd("job-pause", {"id": "s0"})
    r.cmd("block-job-cancel", {"device": "s0"})
    r.cmd("block-job-set-speed", {"device": "s0", "speed": -1})
    r.cmd("block-job-cancel", {"device": "s0", "force": True})
    r.wait("JOB_STATUS_CHANGE", "null")


def paused_stream_golden():
    cancelled = {"event": "BLOCK_JOB_CANCELLED",
                 "data": {"device": "s0", "len": 4 * MIB, "offset": "*", "speed": 1,
                          "type": "commit"}}
    return [
        status_event("s0", "created"), status_event("s0", "running"), OK,
        error("Job 's0' in state 'running' cannot accept command verb 'complete'"),
        error("Job 's0' in state 'running' cannot accept command verb 'finalize'"),
        error("Job 's0' in state 'running' cannot accept command verb 'dismiss'"),
        error("Job 's0' in state 'running' cannot accept command verb 'complete'"),
        status_event("s0", "paused"), OK,
        error("Job is already paused"),
        error("The block job for device 's0' is currently paused"),
        error("Parameter 'speed' expects a non-negative value"),
        status_event("s0", "running"), status_event("s0", "aborting"), cancelled,
        status_event("s0", "concluded"), status_event("s0", "null"), OK,
    ]


def mask_progress(log):
    """Progress depends on how much a rate-limited slice copies: masked as "*"."""
    out = []
    for entry in log:
        entry = json.loads(json.dumps(entry))
        if entry.get("event") == "BLOCK_JOB_CANCELLED":
            entry["data"]["offset"] = "*"
        out.append(entry)
    return out


def active_commit(r, verb):
    """Active commit of the device node into format-0: ready, then `verb` (job-complete,
    block-job-cancel or job-cancel). Returns the nodes as they were while ready; the node
    listing is left out of the log (its paths and order differ between daemons)."""
    r.cmd("block-commit", {"device": "format-2", "base-node": "format-0", "job-id": "a0"})
    r.wait("BLOCK_JOB_READY")
    r.cmd("query-block-jobs")
    nodes = {n["node-name"]: n for n in r.c.cmd("query-named-block-nodes")["return"]}
    r.cmd(verb, {"device": "a0"} if verb == "block-job-cancel" else {"id": "a0"})
    r.wait("JOB_STATUS_CHANGE", "null")
    return nodes


def active_commit_golden(verb, length=512 << 10):
    progress = {"device": "a0", "len": length, "offset": length, "speed": 0, "type": "commit"}
    end = "BLOCK_JOB_CANCELLED" if verb == "job-cancel" else "BLOCK_JOB_COMPLETED"
    tail = [status_event("a0", "waiting"), status_event("a0", "pending"),
            {"event": end, "data": progress}]
    if verb == "job-cancel":
        tail = [status_event("a0", "aborting"), {"event": end, "data": progress}]
    return [status_event("a0", "created"), status_event("a0", "running"), OK,
            status_event("a0", "ready"), {"event": "BLOCK_JOB_READY", "data": progress},
            {"return": [{"auto-finalize": True, "io-status": "ok", "device": "a0",
                         "auto-dismiss": True, "busy": False, "len": length,
                         "offset": length, "status": "ready", "paused": False, "speed": 0,
                         "ready": True, "type": "commit"}]},
            OK] + tail + [status_event("a0", "concluded"), status_event("a0", "null")]


def event_order_insensitive(log):
    """QEMU sends a cancel's events after or before its reply depending on timing: compare
    the replies in order and the events in order, separately."""
    return ([e for e in log if "event" not in e], [e for e in log if "event" in e])


def run_script(binary, script):
    """Runs `script(recorder)` on a fresh daemon and returns the recorder."""
    session = JobSession(binary)
    try:
        script(session.r)
        return session.r
    finally:
        session.close()


class JobCommandsTest(unittest.TestCase):
    def run_on(self, binary, script):
        return run_script(binary, script)

    def test_refused_commands(self):
        session = JobSession(DAEMON)
        try:
            for execute, arguments, expected in REFUSED:
                with self.subTest(execute=execute, arguments=arguments):
                    self.assertEqual(session.r.cmd(execute, arguments), expected)
            self.assertEqual([e for e in session.r.log if "event" in e], [])
        finally:
            session.close()

    def test_negative_speed_creates_then_drops_the_job(self):
        r = self.run_on(DAEMON, lambda r: r.cmd("block-commit", dict(COMMIT, speed=-1)))
        self.assertEqual(r.log, [status_event("job0", "created"), status_event("job0", "null"),
                                 error("Parameter 'speed' expects a non-negative value")])

    def test_active_commit_pivots_to_base(self):
        session = JobSession(DAEMON)
        try:
            r = session.r
            nodes = active_commit(r, "job-complete")
            self.assertEqual(r.log, active_commit_golden("job-complete"))
            # While ready, top carries the job's dirty bitmap, as in QEMU.
            self.assertEqual(nodes["format-2"]["dirty-bitmaps"], [
                {"recording": True, "persistent": False, "busy": False, "granularity": 65536,
                 "count": 0}])
            after = {n["node-name"]: n for n in r.c.cmd("query-named-block-nodes")["return"]}
            self.assertNotIn("dirty-bitmaps", after["format-2"])
            self.assertEqual([n for n in after if n.startswith("#")], [])
            # Base took the place of a read-only top: read-only too, and its storage with it.
            self.assertTrue(after["format-0"]["ro"])
            self.assertFalse(after["file-0"]["x-storage-read-write"])
            self.assertEqual(r.access, [("file-0", True), ("file-0", False)])
            r.c.cmd("quit")
            session.d.wait()
            for path in session.paths:
                subprocess.run(["qemu-img", "check", "-q", path], check=True)
            # Base alone now reads as the whole chain did.
            subprocess.run(["qemu-img", "compare", "-q", "-F", "qcow2", session.paths[0],
                            session.paths[2]], check=True)
        finally:
            session.close()

    def test_soft_cancel_of_a_ready_active_commit_keeps_top_and_base_read_only(self):
        session = JobSession(DAEMON)
        try:
            r = session.r
            active_commit(r, "block-job-cancel")
            self.assertEqual(r.log, active_commit_golden("block-job-cancel"))
            after = {n["node-name"]: n for n in r.c.cmd("query-named-block-nodes")["return"]}
            # QEMU leaves base writable here; nobody writes it, so Strata does not.
            self.assertTrue(after["format-0"]["ro"])
            self.assertFalse(after["file-0"]["x-storage-read-write"])
        finally:
            session.close()

    def test_manual_finalize_and_dismiss(self):
        r = self.run_on(DAEMON, manual_lifecycle)
        self.assertEqual(r.log, manual_lifecycle_golden(4 * MIB))

    def test_verbs_on_a_running_and_paused_job(self):
        r = self.run_on(DAEMON, paused_stream)
        self.assertEqual(event_order_insensitive(mask_progress(r.log)),
                         event_order_insensitive(paused_stream_golden()))

    def test_query_shapes_while_paused(self):
        def script(r):
            r.cmd("block-commit", SLOW)
            r.cmd("job-pause", {"id": "s0"})
            r.cmd("query-jobs")
            r.cmd("query-block-jobs")
            r.cmd("job-cancel", {"id": "s0"})
            r.wait("JOB_STATUS_CHANGE", "null")
        r = self.run_on(DAEMON, script)
        jobs = [e for e in r.log if "return" in e and isinstance(e["return"], list)]
        job, block_job = jobs[0]["return"][0], jobs[1]["return"][0]
        self.assertEqual(sorted(job), ["current-progress", "id", "status", "total-progress",
                                       "type"])
        self.assertEqual((job["id"], job["status"], job["type"], job["total-progress"]),
                         ("s0", "paused", "commit", 4 * MIB))
        self.assertEqual(sorted(block_job), sorted(
            ["auto-finalize", "io-status", "device", "auto-dismiss", "busy", "len", "offset",
             "status", "paused", "speed", "ready", "type"]))
        self.assertEqual({k: block_job[k] for k in ("device", "paused", "status", "speed",
                                                    "ready", "type", "io-status", "len")},
                         {"device": "s0", "paused": True, "status": "paused", "speed": 1,
                          "ready": False, "type": "commit", "io-status": "ok", "len": 4 * MIB})

    def test_stream_completes_and_rebases(self):
        def script(r):
            r.cmd("block-stream", {"device": "format-2", "job-id": "s1",
                                   "base-node": "format-0"})
            r.wait("JOB_STATUS_CHANGE", "null")
            r.cmd("query-named-block-nodes", {"flat": True})
        r = self.run_on(DAEMON, script)
        self.assertEqual(r.log[:-1], [
            status_event("s1", "created"), status_event("s1", "running"), OK,
            status_event("s1", "waiting"), status_event("s1", "pending"),
            {"event": "BLOCK_JOB_COMPLETED", "data": {"device": "s1", "len": 4 * MIB,
                                                       "offset": 4 * MIB, "speed": 0,
                                                       "type": "stream"}},
            status_event("s1", "concluded"), status_event("s1", "null")])
        nodes = {n["node-name"]: n for n in r.log[-1]["return"]}
        # flat: no nested backing-image; the recorded backing file names format-0's image.
        self.assertEqual(nodes["format-2"]["backing_file"], nodes["format-0"]["file"])

    def test_schema_lists_the_job_commands_and_events(self):
        session = JobSession(DAEMON)
        try:
            schema = session.r.cmd("query-qmp-schema")["return"]
            names = {e["name"]: e for e in schema}
            for command in ["block-commit", "block-stream", "query-jobs", "job-pause",
                            "job-resume", "job-cancel", "job-complete", "job-finalize",
                            "job-dismiss", "query-block-jobs", "block-job-set-speed",
                            "block-job-cancel", "block-job-pause", "block-job-resume",
                            "block-job-complete", "block-job-finalize", "block-job-dismiss"]:
                self.assertEqual(names[command]["meta-type"], "command", command)
            for event in ["JOB_STATUS_CHANGE", "BLOCK_JOB_COMPLETED", "BLOCK_JOB_CANCELLED",
                          "BLOCK_JOB_ERROR", "BLOCK_JOB_READY", "BLOCK_JOB_PENDING"]:
                self.assertEqual(names[event]["meta-type"], "event", event)
            commit = names[names["block-commit"]["arg-type"]]
            self.assertEqual([m["name"] for m in commit["members"]][:3],
                             ["job-id", "device", "base-node"])
            self.assertIn("JobStatus", names)
            listed = [c["name"] for c in session.r.cmd("query-commands")["return"]]
            self.assertIn("block-job-set-speed", listed)
        finally:
            session.close()


@unittest.skipIf(QSD is None, "qemu-storage-daemon is not installed")
class JobDifferentialTest(unittest.TestCase):
    """The same transcripts against qemu-storage-daemon 7.2."""

    def run_on(self, binary, script):
        return run_script(binary, script)

    def test_refused_commands(self):
        for binary in (DAEMON, QSD):
            session = JobSession(binary)
            try:
                for execute, arguments, expected in REFUSED:
                    with self.subTest(binary=binary, execute=execute, arguments=arguments):
                        self.assertEqual(session.r.cmd(execute, arguments), expected)
            finally:
                session.close()

    def test_manual_finalize_and_dismiss(self):
        self.assertEqual(self.run_on(QSD, manual_lifecycle).log,
                         self.run_on(DAEMON, manual_lifecycle).log)

    def test_active_commit(self):
        for verb in ("job-complete", "block-job-cancel", "job-cancel"):
            with self.subTest(verb=verb):
                qsd = self.run_on(QSD, lambda r: active_commit(r, verb)).log
                self.assertEqual(event_order_insensitive(qsd),
                                 event_order_insensitive(active_commit_golden(verb)))
                strata = self.run_on(DAEMON, lambda r: active_commit(r, verb)).log
                self.assertEqual(event_order_insensitive(strata), event_order_insensitive(qsd))

    def test_verbs_on_a_running_and_paused_job(self):
        qsd = event_order_insensitive(mask_progress(self.run_on(QSD, paused_stream).log))
        strata = event_order_insensitive(mask_progress(self.run_on(DAEMON, paused_stream).log))
        self.assertEqual(qsd, strata)


if __name__ == "__main__":
    unittest.main()
