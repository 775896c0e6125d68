#!/usr/bin/env python3
"""The QMP side of bench/stream_bench.sh: one timed block job on a running daemon.

    qmp_bench.py SOCKET COMMAND ARGS_JSON [TIMEOUT_S]

Connects to the daemon's QMP socket (strata-daemon or qemu-storage-daemon), negotiates
capabilities, sends COMMAND with ARGS_JSON (a job-starting command such as block-stream, with
a "job-id"), and waits for that job's JOB_STATUS_CHANGE "concluded" event (or, whichever comes
first, its BLOCK_JOB_COMPLETED). Prints two numbers: the seconds from sending the command to
that event, and to the job's JOB_STATUS_CHANGE "waiting" (its work is done; what follows is
the graph change at the end: for a stream, the new backing file written into the image), then
sends `quit`. A third number is the wall-clock time (seconds since the epoch) the command was
sent, from which the caller times the whole job up to the daemon's exit: both daemons flush
their images when they close, so that is the time until the result is on disk. A job that ends with an error (BLOCK_JOB_COMPLETED with "error", or a
command error reply) exits 1 with the message on stderr, so a benchmark cannot time a failure.
Python standard library only.
"""
import json
import socket
import sys
import time


class Qmp:
    def __init__(self, path, timeout):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.buf = b""

    def recv(self):
        """The next message, as a dict."""
        while b"\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("the daemon closed the connection")
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line) if line.strip() else self.recv()

    def send(self, command, args=None):
        msg = {"execute": command}
        if args:
            msg["arguments"] = args
        self.sock.sendall(json.dumps(msg).encode() + b"\n")


def fail(text):
    print(f"qmp_bench: {text}", file=sys.stderr)
    sys.exit(1)


def wait_reply(qmp, events):
    """The reply to the last command; events arriving before it go to `events`."""
    while True:
        msg = qmp.recv()
        if "event" in msg:
            events.append(msg)
            continue
        if "error" in msg:
            fail(f"error reply: {msg['error'].get('desc')}")
        return msg


def job_waiting(msg, job_id):
    data = msg.get("data", {})
    return msg.get("event") == "JOB_STATUS_CHANGE" and data.get("id") == job_id and \
        data.get("status") == "waiting"


def job_ended(msg, job_id):
    """Whether `msg` ends the job's timing; fails on a job error."""
    event, data = msg.get("event"), msg.get("data", {})
    if event == "BLOCK_JOB_COMPLETED" and data.get("device") == job_id:
        if "error" in data:
            fail(f"job failed: {data['error']}")
        return True
    return event == "JOB_STATUS_CHANGE" and data.get("id") == job_id and \
        data.get("status") == "concluded"


def main():
    if len(sys.argv) < 4:
        fail("usage: qmp_bench.py SOCKET COMMAND ARGS_JSON [TIMEOUT_S]")
    path, command, args = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    timeout = float(sys.argv[4]) if len(sys.argv) > 4 else 600.0
    qmp = Qmp(path, timeout)
    greeting = qmp.recv()
    if "QMP" not in greeting:
        fail(f"no QMP greeting: {greeting}")
    qmp.send("qmp_capabilities")
    wait_reply(qmp, [])
    job_id = args.get("job-id", args.get("device"))
    events = []
    start_wall = time.time()
    start = time.monotonic()
    qmp.send(command, args)
    wait_reply(qmp, events)
    waiting = None
    while True:
        if waiting is None and any(job_waiting(msg, job_id) for msg in events):
            waiting = time.monotonic() - start
        if any(job_ended(msg, job_id) for msg in events):
            break
        events = [qmp.recv()]
    elapsed = time.monotonic() - start
    print(f"{elapsed:.3f} {waiting if waiting is not None else elapsed:.3f} {start_wall:.6f}")
    qmp.send("quit")
    try:
        wait_reply(qmp, [])
    except (EOFError, OSError):
        pass  # the daemon may close before or right after its reply


if __name__ == "__main__":
    main()
