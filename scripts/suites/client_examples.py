#!/usr/bin/env python3
"""Runs a language's example programs (publish, subscribe, poll) against a live producer and
checks exactly what they print. Used by scripts/suites/30-python.sh and 40-typescript.sh.

Every client's examples share one command line and one output format:
  publish   --producer H:P --count N --topic T --payload P   -> `sequence=S topic=T payload=P i`
  subscribe --producer H:P [--after S] [--topics a,b] [--count N] [--timeout SECS]
  poll      --producer H:P [--after S] [--topics a,b] [--max-events N] [--max-wait SECS]
            [--interval SECS] [--count N] [--timeout SECS]
Events go to stdout as `sequence=S topic=T payload=P`, one per line; the last stderr line ends
with `resume with --after S` (poll's says `(N missed)` before it when a cursor expired).
subscribe writes `subscribed ...` to stderr once the stream is open.

poll reads the google.rpc.ErrorInfo in the status details of a failed Poll and branches on its
reason, and prints to stderr, from the ErrorInfo metadata alone (the message text has neither
the reason nor this wording, so a client that ignored the details fails these checks):
  CURSOR_EXPIRED -> `cursor A has expired: M events missed (oldest_sequence O); resuming from
                    --after O-1`, and goes on from there;
  CURSOR_AHEAD   -> `poll refused: CURSOR_AHEAD: --after A is beyond head_sequence=H
                    (oldest_sequence=O, log_id=L)`, and exits 1.

The producer must be fresh (sequence 1 comes next), have no demo source and keep --retention
events (its --retention-events, at least 14): the scenario publishes past it to expire a cursor. Each check compares the full list of printed
events with the expected one: exact sequences, in order, no duplicates, and each event's topic
and payload as published.

With --webhook, the language's webhook receiver is run too (scenario_webhooks):
  webhook --producer H:P --listen H:P --url U --webhook-id ID --after S --secret whsec_...
          --fail-first N --count N --timeout SECS
registers itself (CreateWebhook, replace), prints `registered ...` to stderr, verifies each
delivery with a Standard Webhooks library (401 if it fails), answers 500 to the first N signed
deliveries, prints the events it accepts like subscribe (duplicates dropped) and ends with
`resume with --after S`. The producer must run with short webhook retries (--webhook-retry-max
of a second or less) and allow loopback. The deliveries pass through a recording proxy here
(--url), so the checks see what went over the wire; the signature checks of this script use
the Python `standardwebhooks` package.

With --secure-producer (and --ca, --publish-token, --read-token), scenario_secure runs the
examples with their connection flags against a producer serving TLS and checking tokens:
  --ca PEM [--cert PEM --key PEM] [--token T]   (the token also from $PUSHPULL_TOKEN)
A call the producer refuses exits 1 and its stderr names the gRPC code (UNAUTHENTICATED,
PERMISSION_DENIED; UNAVAILABLE, or as the library has it, when the TLS handshake fails). --mtls-producer adds a producer
asking for client certificates (--tls-client-ca).
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

EVENT = re.compile(r"^sequence=(\d+) topic=(\S+) payload=(.*)$")


class Client:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.published: dict[int, tuple[str, str]] = {}  # sequence -> (topic, payload)
        self.passed = self.failed = 0
        self.tmp = Path(args.tmp)
        self.producer = args.producer
        self.connect: list[str] = []  # connection flags every example gets (--ca, --token...)
        self.env: dict[str, str] = {}  # and environment variables (PUSHPULL_TOKEN)

    def command(self, example: str, *options: str) -> list[str]:
        prefix = {"publish": self.args.publish, "subscribe": self.args.subscribe,
                  "poll": self.args.poll, "webhook": self.args.webhook}[example]
        return [*shlex.split(prefix), "--producer", self.producer, *self.connect, *options]

    def start(self, name: str, example: str, *options: str) -> subprocess.Popen:
        """Starts an example in the background; its output goes to files named after `name`."""
        out = open(self.tmp / f"{name}.out", "w")
        err = open(self.tmp / f"{name}.err", "w")
        proc = subprocess.Popen(self.command(example, *options), stdout=out, stderr=err,
                                cwd=self.args.cwd, env={**os.environ, **self.env})
        proc.name, proc.started = name, time.monotonic()  # type: ignore[attr-defined]
        return proc

    def finish(self, proc: subprocess.Popen, timeout: float = 60) -> tuple[int, list, str, float]:
        try:
            rc = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            rc = -9
        elapsed = time.monotonic() - proc.started  # type: ignore[attr-defined]
        out = (self.tmp / f"{proc.name}.out").read_text()  # type: ignore[attr-defined]
        err = (self.tmp / f"{proc.name}.err").read_text()  # type: ignore[attr-defined]
        return rc, parse_events(out, err), err, elapsed

    def run(self, name: str, example: str, *options: str) -> tuple[int, list, str, float]:
        return self.finish(self.start(name, example, *options))

    def wait_for_stderr(self, proc: subprocess.Popen, text: str, timeout: float = 20) -> bool:
        path = self.tmp / f"{proc.name}.err"  # type: ignore[attr-defined]
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if text in path.read_text():
                return True
            if proc.poll() is not None:
                return False
            time.sleep(0.05)
        return False

    def publish(self, name: str, count: int, topic: str) -> None:
        first = max(self.published, default=0) + 1
        rc, events, err, _ = self.run(name, "publish", "--count", str(count), "--topic", topic,
                                      "--payload", name)
        want = [(s, topic, f"{name} {i}") for i, s in enumerate(range(first, first + count), 1)]
        self.report(name, rc == 0 and events == want,
                    f"published {first}..{first + count - 1} on {topic}",
                    rc, events, want, err)
        for sequence, event_topic, payload in events:
            self.published[sequence] = (event_topic, payload)

    def expected(self, sequences) -> list[tuple[int, str, str]]:
        return [(s, *self.published[s]) for s in sequences if s in self.published]

    def check(self, name: str, result: tuple[int, list, str, float], sequences, what: str,
              resume: int | None = None, extra: tuple[bool, str] = (True, "")) -> None:
        rc, events, err, elapsed = result
        want = self.expected(sequences)
        ok = rc == 0 and events == want and extra[0]
        if resume is not None:
            ok = ok and err.rstrip().endswith(f"resume with --after {resume}")
            what += f", resume with --after {resume}"
        self.report(name, ok, f"{what} ({elapsed:.1f}s)", rc, events, want, err, extra[1])

    def expect(self, name: str, ok: bool, what: str, expected, got) -> None:
        """A check that is not a list of printed events: says what was expected and what came."""
        if ok:
            self.passed += 1
            print(f"ok    {name}: {what}")
            return
        self.failed += 1
        print(f"FAIL  {name}: {what}\n      expected {expected}\n      got      {got}")

    def report(self, name, ok, what, rc, events, want, err, note="") -> None:
        if ok:
            self.passed += 1
            print(f"ok    {name}: {what}")
            return
        self.failed += 1
        print(f"FAIL  {name}: {what} {note}\n      exit {rc}"
              f"\n      got      {[e[0] for e in events]}\n      expected {[e[0] for e in want]}"
              f"\n      got events {events[:4]}... expected {want[:4]}..."
              f"\n      stderr: {err.strip()[-600:]}")


def parse_events(out: str, err: str) -> list[tuple[int, str, str]]:
    events = []
    for line in out.splitlines():
        match = EVENT.match(line)
        if match:
            events.append((int(match[1]), match[2], match[3]))
        elif line.strip():
            events.append((-1, "unexpected stdout line", line))
    return events


def scenario(c: Client) -> None:
    c.publish("first-batch", 5, "demo.a")  # 1..5

    # Push from the start, from a cursor and from now; and a long poll waiting at the head.
    from_start = c.start("subscribe-from-0", "subscribe", "--after", "0", "--count", "12",
                         "--timeout", "30")
    from_cursor = c.start("subscribe-from-3", "subscribe", "--after", "3", "--count", "9",
                          "--timeout", "30")
    from_now = c.start("subscribe-from-now", "subscribe", "--count", "5", "--timeout", "30")
    long_poll = c.start("long-poll-at-head", "poll", "--after", "5", "--max-wait", "20",
                        "--count", "2", "--timeout", "30")
    # "From now" means from when the stream opened: publish only once it has.
    if not c.wait_for_stderr(from_now, "subscribed"):
        c.report("subscribe-from-now", False, "never said `subscribed`", from_now.poll(), [], [],
                 (c.tmp / "subscribe-from-now.err").read_text())
    time.sleep(0.5)  # the long poll is under way too (its cursor is fixed anyway)
    published_at = time.monotonic()
    c.publish("second-batch", 5, "demo.b")  # 6..10
    c.publish("third-batch", 2, "demo.a")  # 11..12

    c.check("subscribe --after 0", c.finish(from_start), range(1, 13),
            "push from the oldest: backlog 1..5, then 6..12 live", resume=12)
    c.check("subscribe --after 3", c.finish(from_cursor), range(4, 13),
            "push from cursor 3: 4..12", resume=12)
    c.check("subscribe (from now)", c.finish(from_now), range(6, 11),
            "push from now: 6..10 and not the backlog, stops after --count 5", resume=10)
    result = c.finish(long_poll)
    waited = time.monotonic() - published_at
    c.check("poll --max-wait 20 (long poll)", result, [6, 7],
            "long poll at the head: returns 6, 7 as soon as they are published", resume=7,
            extra=(waited < 10, f"ended {waited:.1f}s after the publish, max-wait was 20s"))

    # Pull: a cursor loop over several Polls, a topic filter, and a plain poll from the head.
    result = c.run("poll-batches-of-4", "poll", "--after", "0", "--max-events", "4",
                   "--count", "12", "--timeout", "20")
    polls = re.search(r"after (\d+) polls", result[2])
    c.check("poll --after 0 --max-events 4", result, range(1, 13),
            "pull 1..12 in batches of 4, cursor carried between calls", resume=12,
            extra=(bool(polls) and int(polls[1]) == 3, f"polls: {polls and polls[1]}, expected 3"))
    c.check("poll --topics demo.b", c.run("poll-topic", "poll", "--after", "0", "--topics",
                                          "demo.b", "--count", "5", "--timeout", "20"),
            range(6, 11), "pull one topic: only 6..10", resume=10)
    from_head = c.start("poll-from-head", "poll", "--interval", "0.2", "--count", "1",
                        "--timeout", "20")
    time.sleep(1.5)
    c.publish("fourth-batch", 1, "demo.c")  # 13
    c.check("poll (from the head, every 0.2 s)", c.finish(from_head), [13],
            "plain poll from the head: only 13, published while it polled", resume=13)
    c.check("subscribe --after 13 --timeout 1", c.run("subscribe-timeout", "subscribe", "--after",
                                                      "13", "--timeout", "1"),
            [], "nothing new: stops at its timeout, no event, exit 0", resume=13)

    # Errors, read from the status details: an expired cursor, then one beyond the head.
    retention = c.args.retention
    c.publish("fifth-batch", retention - 10, "demo.d")  # with 20: 14..23, 1..3 dropped, oldest 4
    head = max(c.published)
    oldest = head - retention + 1
    result = c.run("poll-expired", "poll", "--after", "1", "--count", str(retention),
                   "--timeout", "20")
    said = (f"cursor 1 has expired: {oldest - 2} events missed (oldest_sequence {oldest}); "
            f"resuming from --after {oldest - 1}")
    summary = f"and {retention} events ({oldest - 2} missed); resume"
    c.check("poll --after 1 (expired cursor)", result, range(oldest, head + 1),
            f"CURSOR_EXPIRED: says {oldest - 2} missed, resumes from oldest_sequence - 1",
            resume=head, extra=(said in result[2] and summary in result[2],
                                f"stderr lacks `{said}` or `{summary}`"))
    rc, events, err, elapsed = c.run("poll-ahead", "poll", "--after", "99", "--timeout", "5")
    said = (f"poll refused: CURSOR_AHEAD: --after 99 is beyond head_sequence={head} "
            f"(oldest_sequence={oldest}, log_id=")
    c.report("poll --after 99 (beyond the head)", rc == 1 and not events and said in err,
             f"CURSOR_AHEAD: exit 1, names head_sequence {head} ({elapsed:.1f}s)", rc, events, [],
             err, f"stderr lacks `{said}`")


class Recorder:
    """A proxy between the producer and the webhook receiver that keeps every delivery as it
    went over the wire: the signed headers, the body and the receiver's answer."""

    HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")

    def __init__(self, target: int):
        self.target = target  # the receiver's port on 127.0.0.1
        self.deliveries: list[dict] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                headers = {h: self.headers.get(h, "") for h in Recorder.HEADERS}
                status, answer = recorder.send(body, headers)
                recorder.deliveries.append({"headers": headers, "body": body, "status": status,
                                            "answer": answer})
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                except ConnectionError:
                    # The producer gave up on this POST: the receiver deleted its subscription
                    # on its way out (--count) and a delivery in flight is abandoned.
                    pass

            def log_message(self, format: str, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def send(self, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        """POSTs a delivery to the receiver: its status and answer (502 if it cannot be reached)."""
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.target, timeout=10)
            conn.request("POST", "/webhook", body,
                         {"Content-Type": "application/json", **headers})
            response = conn.getresponse()
            status, answer = response.status, response.read()
            conn.close()
            return status, answer
        except OSError as err:
            return 502, f"receiver unreachable: {err}".encode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def scenario_webhooks(c: Client) -> None:
    """The webhook receiver, against the producer's deliveries and against forged ones. Its
    Standard Webhooks library is the independent check of the producer's signatures."""
    from standardwebhooks import Webhook  # only this scenario needs it (requirements.txt)

    webhook_id = "suite-receiver"
    secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    head = max(c.published)
    c.publish("webhook-backlog", 3, "demo.w")  # head+1..head+3, before the receiver registers
    port = free_port()
    recorder = Recorder(port)
    after = head + 1  # from this cursor: head+2, head+3 are the backlog
    live, last = 7, 1  # published once it registered, and after the forged deliveries
    count = 2 + live + last
    receiver = c.start("webhook-receiver", "webhook", "--listen", f"127.0.0.1:{port}",
                       "--url", f"http://127.0.0.1:{recorder.port}/webhook",
                       "--webhook-id", webhook_id, "--after", str(after), "--secret", secret,
                       "--fail-first", "1", "--count", str(count), "--timeout", "40")
    if not c.wait_for_stderr(receiver, "registered"):
        c.expect("webhook receiver registers", False, "says `registered` within 20s",
                 "`registered ...` on stderr",
                 (c.tmp / "webhook-receiver.err").read_text().strip()[-600:])
    c.publish("webhook-live", live, "demo.w")  # head+4..head+10
    out = c.tmp / "webhook-receiver.out"
    end = time.monotonic() + 20
    while len(out.read_text().splitlines()) < count - last and time.monotonic() < end \
            and receiver.poll() is None:
        time.sleep(0.05)
    printed = len(out.read_text().splitlines())
    posts: dict[tuple[str, int], int] = {}  # (webhook-id, answer) -> how many POSTs
    for d in recorder.deliveries:
        key = (d["headers"]["webhook-id"], d["status"])
        posts[key] = posts.get(key, 0) + 1
    c.expect("webhook deliveries arrive", printed == count - last,
             f"backlog {after + 1}..{after + 2} and live {after + 3}..{after + 2 + live} printed "
             "by the receiver within 20s", f"{count - last} event lines",
             f"{printed}; POSTs (webhook-id, answer): times {posts}")

    # Forged deliveries, sent to the receiver directly: one the producer sent (2xx, its events
    # dropped as duplicates), the same with one byte of the body changed, with the timestamp
    # 10 minutes back (the package's tolerance is 5), and that re-signed with the right secret.
    delivered = [d for d in recorder.deliveries if 200 <= d["status"] < 300]
    if delivered:
        genuine = delivered[-1]
        body, headers = genuine["body"], genuine["headers"]
        at = body.index(b'"payload":"') + len(b'"payload":"')
        tampered = body[:at] + bytes([body[at] ^ 0x20]) + body[at + 1:]  # a letter's case
        stale = datetime.now(timezone.utc) - timedelta(minutes=10)
        signer = Webhook(secret)

        def signed(when: datetime) -> dict[str, str]:
            return {**headers, "webhook-timestamp": str(int(when.timestamp())),
                    "webhook-signature": signer.sign(headers["webhook-id"], when, body)}

        for name, forged_body, forged, status, says in [
            ("as delivered, again", body, headers, 200, "accepted 0, dropped"),
            ("one body byte changed", tampered, headers, 401, "No matching signature"),
            ("timestamp 10 min back", body,
             {**headers, "webhook-timestamp": str(int(stale.timestamp()))}, 401, "too old"),
            ("timestamp 10 min back, re-signed", body, signed(stale), 401, "too old"),
            ("re-signed now (control)", body, signed(datetime.now(timezone.utc)), 200,
             "accepted 0, dropped"),
        ]:
            got, answer = recorder.send(forged_body, forged)
            c.expect(f"webhook replay: {name}", got == status and says in answer.decode(),
                     f"receiver answers {status} `{says}...`", f"{status} `{says}...`",
                     f"{got} `{answer.decode()}`")
    else:
        c.expect("webhook replay", False, "a delivery answered 2xx to replay", "one", "none")

    c.publish("webhook-last", last, "demo.w")  # head+11: the receiver's --count
    if printed != count - last:
        receiver.send_signal(signal.SIGINT)  # it is not getting there: stop it now
    result = c.finish(receiver)
    c.check("webhook receiver", result, range(after + 1, after + count + 1),
            f"events {after + 1}..{after + count} printed once each, in order, every delivery "
            "verified by standardwebhooks", resume=after + count,
            extra=("failed:" not in result[2],
                   "stderr says something failed" if "failed:" in result[2] else ""))

    # What went over the wire: the first delivery answered 500 and came again with the same
    # webhook-id and data; the 2xx ones carry every event once, in order, batch after batch.
    wire = recorder.deliveries
    first = [(d["headers"]["webhook-id"], d["status"]) for d in wire[:2]]
    same_data = len(wire) >= 2 and \
        json.loads(wire[0]["body"])["data"] == json.loads(wire[1]["body"])["data"]
    c.expect("webhook redelivery", len(wire) >= 2 and wire[0]["status"] == 500 and
             200 <= wire[1]["status"] < 300 and first[0][0] == first[1][0] and same_data,
             "answered 500 (--fail-first 1), the producer POSTs the same batch again: same "
             "webhook-id, same data", f"[({webhook_id}_{after}_N, 500), (the same id, 200)]",
             f"{first}, same data: {same_data}")
    cursor, events, ids, bad_ids, unverified = after, [], set(), [], []
    for d in wire:
        data, headers = json.loads(d["body"])["data"], d["headers"]
        try:
            Webhook(secret).verify(d["body"], headers)
        except Exception as err:  # noqa: BLE001 - any failure is the finding
            unverified.append(f"{headers['webhook-id']}: {err}")
        if not 200 <= d["status"] < 300:
            continue
        if data["after_sequence"] != cursor or headers["webhook-id"] != \
                f"{webhook_id}_{data['after_sequence']}_{data['next_after_sequence']}":
            bad_ids.append((headers["webhook-id"], cursor))
        cursor = data["next_after_sequence"]
        events += [e["sequence"] for e in data["events"]]
        ids.add(headers["webhook-id"])
    want = list(range(after + 1, after + count + 1))
    c.expect("webhook batches on the wire", events == want and not bad_ids and not unverified,
             f"{len(ids)} batches answered 2xx carry {want[0]}..{want[-1]} once each, each "
             "starting at the previous one's next_after_sequence, webhook-id "
             f"`{webhook_id}_<after>_<next>`; all {len(wire)} POSTs verify with "
             "standardwebhooks here too",
             f"events {want}, no bad ids, all verified",
             f"events {events}, bad ids (id, cursor) {bad_ids}, unverified {unverified}")
    recorder.server.shutdown()


# The codes a connection that fails below gRPC (no TLS, a refused handshake) gets in the clients.
HANDSHAKE_FAILED = "UNAVAILABLE|CANCELED|INTERNAL"


def scenario_secure(c: Client) -> None:
    """The connection flags against producers serving TLS and checking tokens: with the CA and
    a token everything works, as with plaintext; a call without a token, with a token lacking
    the scope, in plaintext to a TLS port, or without a client certificate where one is asked
    for fails, exits 1 and names the gRPC code, and a refused publish appends nothing."""
    a = c.args
    ca, token = ["--ca", a.ca], ["--token", a.publish_token]
    c.producer = a.secure_producer
    c.connect = [*ca, *token]
    c.publish("tls-publish", 3, "demo.tls")  # 1..3
    c.connect = [*ca, "--token", a.read_token]
    c.check("tls subscribe --after 0 (read token)", c.run(
        "tls-subscribe", "subscribe", "--after", "0", "--count", "3", "--timeout", "20"),
        range(1, 4), "push over TLS with a read token: 1..3", resume=3)
    # The token from the environment instead of the flag.
    c.connect, c.env = ca, {"PUSHPULL_TOKEN": a.read_token}
    c.check("tls poll --after 0 (PUSHPULL_TOKEN)", c.run(
        "tls-poll", "poll", "--after", "0", "--max-wait", "5", "--count", "3", "--timeout", "20"),
        range(1, 4), "pull over TLS, the token from $PUSHPULL_TOKEN: 1..3", resume=3)
    c.env = {}

    def refused(name: str, example: str, connect: list[str], code: str, what: str,
                *options: str) -> None:
        """`code` may be `A|B`: how a failed TLS handshake surfaces differs between gRPC
        libraries (grpcio: UNAVAILABLE; connect-node: CANCELED or INTERNAL)."""
        c.connect = connect
        rc, events, err, elapsed = c.run(name, example, *options)
        named = any(f"{one}: " in err for one in code.split("|"))
        c.report(name, rc == 1 and not events and named,
                 f"{what}: exit 1, stderr names {code} ({elapsed:.1f}s)", rc, events, [], err,
                 f"stderr lacks {code}")

    publish = ("--count", "1", "--topic", "demo.tls", "--payload", "refused")
    refused("tls publish without a token", "publish", ca, "UNAUTHENTICATED",
            "no token", *publish)
    refused("tls publish with a read token", "publish", [*ca, "--token", a.read_token],
            "PERMISSION_DENIED", "the token lacks the publish scope", *publish)
    refused("tls publish with a wrong token", "publish", [*ca, "--token", "x" * 24],
            "UNAUTHENTICATED", "an unknown token", *publish)
    refused("tls subscribe without a token", "subscribe", ca, "UNAUTHENTICATED",
            "no token", "--after", "0", "--timeout", "10")
    refused("tls poll without a token", "poll", ca, "UNAUTHENTICATED", "no token",
            "--after", "0", "--timeout", "10")
    refused("plaintext publish to the TLS port", "publish", token, HANDSHAKE_FAILED,
            "no TLS where the producer speaks only TLS", *publish)
    c.connect = [*ca, *token]
    c.check("tls poll after the refusals", c.run(
        "tls-poll-again", "poll", "--after", "0", "--max-events", "10", "--count", "4",
        "--timeout", "1"), range(1, 4),
        "the refused publishes appended nothing: still 1..3", resume=3)

    if a.mtls_producer:
        c.producer = a.mtls_producer
        mtls = ["--cert", a.cert, "--key", a.key, *ca]
        c.connect = [*mtls, *token]
        c.published = {}
        c.publish("mtls-publish", 2, "demo.mtls")  # 1..2
        c.check("mtls poll --after 0", c.run(
            "mtls-poll", "poll", "--after", "0", "--count", "2", "--timeout", "20"),
            [1, 2], "pull over mutual TLS: 1..2", resume=2)
        refused("mtls publish without a client certificate", "publish", [*ca, *token],
                HANDSHAKE_FAILED, "the handshake fails without a client certificate", *publish)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--producer", required=True, help="host:port of a fresh producer")
    parser.add_argument("--publish", required=True, help="command prefix of the publish example")
    parser.add_argument("--subscribe", required=True)
    parser.add_argument("--poll", required=True)
    parser.add_argument("--webhook", help="command prefix of the webhook receiver example, if any")
    parser.add_argument("--cwd", default=".", help="directory to run the examples in")
    parser.add_argument("--tmp", required=True, help="directory for the examples' output")
    parser.add_argument("--retention", type=int, required=True,
                        help="the producer's --retention-events (at least 14)")
    parser.add_argument("--secure-producer",
                        help="host:port of a second fresh producer, serving TLS (a --tls-cert "
                        "signed by --ca) and checking tokens: runs scenario_secure too")
    parser.add_argument("--mtls-producer",
                        help="host:port of a producer asking for client certificates signed "
                        "by --ca (--tls-client-ca), with tokens as --secure-producer")
    parser.add_argument("--ca", help="the CA of the secure producers (PEM)")
    parser.add_argument("--cert", help="a client certificate signed by --ca (PEM)")
    parser.add_argument("--key", help="its key (PEM)")
    parser.add_argument("--publish-token", help="a token with the scopes publish and read")
    parser.add_argument("--read-token", help="a token with the scope read only")
    args = parser.parse_args()
    client = Client(args)
    scenario(client)
    if args.webhook:
        scenario_webhooks(client)
    passed, failed = client.passed, client.failed
    if args.secure_producer:
        secure = Client(args)
        scenario_secure(secure)
        passed, failed = passed + secure.passed, failed + secure.failed
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
