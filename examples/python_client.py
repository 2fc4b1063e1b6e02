#!/usr/bin/python3
"""Submit a drover job and wait for it to end, speaking the wire protocol.

A small client for droverd's client API written from docs/PROTOCOL.md alone,
as an example for people who want to talk to drover from another language.
It needs only ZeroMQ and msgpack (Debian: python3-zmq, python3-msgpack):

    python_client.py [--api ENDPOINT] JOBFILE [--input KEY=VALUE]...
                     [--timeout SECONDS]

It submits JOBFILE, asks for the job's status until the job has ended,
prints the final job as JSON (the `job` object of a `job` reply) and exits:

    0  the job COMPLETED
    1  the job ended otherwise (FAILED, CANCELLED), or the scheduler refused
       a request for another reason
    2  the job file was refused (validation errors are printed, one per line,
       as FILE:LINE:COL: error: MESSAGE) or the command line is wrong
    3  the scheduler did not answer a request within --timeout seconds

The socket is a DEALER rather than a REQ: a REQ socket insists on strict
send/receive alternation, so after a request that times out it can send
nothing more and has to be thrown away. A DEALER has no such state; the
client matches each reply to its request by the envelope's `id` and drops
stale replies. The socket is still recreated after a timeout, so that a
request queued for an absent scheduler is not delivered when it comes back.
"""

import argparse
import json
import os
import sys
import time

import msgpack
import zmq

PROTOCOL_VERSION = 1
MAX_JOB_FILE_BYTES = 1 << 20  # the scheduler refuses larger job files
TERMINAL_STATES = ("COMPLETED", "FAILED", "CANCELLED")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_AUTH = 4

PROG = "python_client"


class Unreachable(Exception):
    """The scheduler could not be reached or did not answer in time."""


class ErrorReply(Exception):
    """The scheduler answered with an `error` message."""

    def __init__(self, reply):
        super().__init__(reply.get("message", ""))
        self.code = reply.get("code", "")
        self.message = reply.get("message", "")
        self.details = reply.get("details") or []


class ApiClient:
    """One request at a time to droverd's client API over a DEALER socket."""

    def __init__(self, endpoint, timeout_s):
        self._endpoint = endpoint
        self._timeout_ms = max(1, int(timeout_s * 1000))
        self._context = zmq.Context.instance()
        self._socket = None
        self._next_id = 0
        self._connect()

    def close(self):
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None

    def _connect(self):
        self.close()
        socket = self._context.socket(zmq.DEALER)
        socket.setsockopt(zmq.LINGER, 0)
        # Queue nothing while no scheduler is connected: a request to an
        # absent scheduler then fails by timeout instead of waiting in a
        # queue and arriving much later.
        socket.setsockopt(zmq.IMMEDIATE, 1)
        socket.connect(self._endpoint)
        self._socket = socket

    def call(self, message_type, **fields):
        """Sends one request and returns the reply (a dict).

        Raises ErrorReply when the scheduler answers `error`, Unreachable
        when it does not answer within the timeout.
        """
        self._next_id += 1
        request_id = self._next_id
        request = {"v": PROTOCOL_VERSION, "type": message_type,
                   "id": request_id}
        request.update(fields)
        body = msgpack.packb(request, use_bin_type=True)
        deadline = time.monotonic() + self._timeout_ms / 1000.0

        # With IMMEDIATE set, the socket is writable only once a connection
        # to the scheduler exists.
        if not self._socket.poll(self._timeout_ms, zmq.POLLOUT):
            self._connect()
            raise Unreachable(f"the scheduler at {self._endpoint} cannot be "
                              f"reached")
        try:
            self._socket.send(body, zmq.NOBLOCK)
        except zmq.Again:
            self._connect()
            raise Unreachable(f"the scheduler at {self._endpoint} cannot be "
                              f"reached") from None

        while True:
            left_ms = int((deadline - time.monotonic()) * 1000)
            if left_ms <= 0 or not self._socket.poll(left_ms, zmq.POLLIN):
                break
            frames = self._socket.recv_multipart()
            # A DEALER request without a delimiter gets a one-frame reply;
            # the body is the last frame in any case.
            try:
                reply = msgpack.unpackb(frames[-1], raw=False,
                                        unicode_errors="replace")
            except Exception as e:  # noqa: BLE001 -- any undecodable reply
                raise ErrorReply({"code": "Corruption",
                                  "message": f"undecodable reply: {e}"})
            if not isinstance(reply, dict):
                continue
            reply_id = reply.get("id", 0)
            # id 0: the scheduler could not read our request's id at all.
            if reply_id not in (request_id, 0):
                continue  # the late answer to an earlier request
            if reply.get("type") == "error":
                raise ErrorReply(reply)
            return reply
        self._connect()  # drop the unanswered request
        raise Unreachable(f"the scheduler at {self._endpoint} did not answer "
                          f"within {self._timeout_ms / 1000:g} s")


def exit_code_for(error):
    if error.code in ("Unavailable", "Timeout"):
        return EXIT_UNREACHABLE
    if error.code == "InvalidArgument":
        return EXIT_USAGE
    if error.code == "PermissionDenied":
        return EXIT_AUTH
    return EXIT_FAILED


def report(error):
    print(f"{PROG}: {error.message or error.code}", file=sys.stderr)
    for line in error.details:
        print(line, file=sys.stderr)
    return exit_code_for(error)


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Submit a drover job file and wait for the job to end.")
    parser.add_argument(
        "--api", default=os.environ.get("DROVER_API", "tcp://127.0.0.1:7700"),
        metavar="ENDPOINT",
        help="the scheduler's client API endpoint (default: $DROVER_API or "
             "tcp://127.0.0.1:7700)")
    parser.add_argument("jobfile", metavar="JOBFILE", help="a TOML job file")
    parser.add_argument("--input", action="append", default=[],
                        metavar="KEY=VALUE",
                        help="override an input declared in [inputs]; "
                             "repeatable")
    parser.add_argument("--timeout", type=float, default=10.0,
                        metavar="SECONDS",
                        help="how long the scheduler may take to answer one "
                             "request (default: 10)")
    args = parser.parse_args(argv)
    if args.timeout <= 0:
        parser.error("--timeout must be a positive number of seconds")
    inputs = {}
    for item in args.input:
        key, sep, value = item.partition("=")
        if not sep or not key:
            parser.error(f"--input '{item}' must be KEY=VALUE")
        inputs[key] = value
    args.inputs = inputs
    return args


def read_job_file(path):
    """Returns the file's text (bytes if it is not UTF-8), or None."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_JOB_FILE_BYTES + 1)
    except OSError as e:
        print(f"{path}:0:0: error: cannot read the file: {e.strerror}",
              file=sys.stderr)
        return None
    if len(data) > MAX_JOB_FILE_BYTES:
        print(f"{path}:0:0: error: the file exceeds {MAX_JOB_FILE_BYTES} "
              f"bytes, the largest job file the scheduler accepts",
              file=sys.stderr)
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        # Sent as msgpack bin; the scheduler reports where the bad bytes are.
        return data


def main(argv):
    args = parse_args(argv)
    source = read_job_file(args.jobfile)
    if source is None:
        return EXIT_USAGE

    client = ApiClient(args.api, args.timeout)
    try:
        try:
            submitted = client.call("submit", source=source,
                                    file_name=args.jobfile,
                                    inputs=args.inputs)
        except ErrorReply as e:
            return report(e)
        job_id = submitted.get("job_id", "")
        print(f"{PROG}: submitted job {job_id}", file=sys.stderr)

        pause = 0.05
        while True:
            try:
                reply = client.call("status", job_id=job_id)
            except ErrorReply as e:
                return report(e)
            job = reply.get("job") or {}
            state = job.get("state", "")
            if state in TERMINAL_STATES:
                print(json.dumps(job, indent=2, ensure_ascii=False))
                if state != "COMPLETED":
                    if job.get("error"):
                        print(f"{PROG}: job {job_id} {state}: {job['error']}",
                              file=sys.stderr)
                    return EXIT_FAILED
                return EXIT_OK
            time.sleep(pause)
            pause = min(pause * 2, 0.5)
    except Unreachable as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return EXIT_UNREACHABLE
    finally:
        client.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
