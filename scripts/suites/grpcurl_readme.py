#!/usr/bin/env python3
"""Runs every grpcurl command of README.md against live services and checks what each prints.

Used by scripts/suites/20-grpcurl.sh, which starts a fresh producer (no demo source) and a
long-poll consumer reading from the earliest event, on free ports.

The commands are extracted, not retyped: every line of a ```bash fence that starts with `grpcurl`
(with its `\\` continuations and multi-line quoted JSON), and every inline `grpcurl ...` code
span. Only the address is rewritten (localhost:50051 -> the test producer, localhost:50061 -> the
test consumer), and streams get a short -max-time. The commands run in README order against one
model of the log (what was published, and so what every Poll and Subscribe must return), so
each check is exact: sequences, topics, payloads, cursors. Where a command would wait for an event
(a long poll at the head, a Subscribe), the test publishes one while it waits.

Commands for localhost:50052 go to a second producer that retains only --retention-events
events (the README starts one so, to show an expired cursor), with its own model of the log.
Commands for localhost:50053 go to --second-address, another address of the first producer (a
TCP forwarder, as the README's "Several producers, one log" sets up): a second producer of the
same log, so they are checked against the first producer's model, log_id included.

Where the README shows what a command prints, as the comment lines just above it indented by three
spaces or more (`#   ERROR:`), the output must be exactly that, line by line, up to runs of
whitespace; `...` in a shown line stands for any text (a log_id, a repeated message). Error
statuses are also checked by their details: the google.rpc.ErrorInfo reason and metadata, and the
BadRequest field.

Commands with -cacert go to a producer serving TLS with bearer tokens (--tls-producer), and
those with -cert/-key too to one asking for client certificates (--mtls-producer), each with
its own model of the log: the README's "Clients over TLS". Their certificate paths (certs/...,
as `producer dev-certs --out certs` writes them) are rewritten to --certs, and
$PUSHPULL_TOKEN in a header is --token. Such a command without an `authorization` header must be
refused with Unauthenticated and the ErrorInfo reason TOKEN_MISSING (but for list, describe and
health, which need no token).

Before running anything it checks that the README covers every RPC (list, describe, Publish,
Poll, long poll, Subscribe from the start and from now, GetStats, health) and shows the details
of an expired cursor and of a cursor beyond the head; --coverage-only stops there.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

PRODUCER_DEFAULT_PORT = "50051"
CONSUMER_DEFAULT_PORT = "50061"
# The README's second producer, with a small retention (--retention-events), on this port.
RETENTION_PRODUCER_PORT = "50052"
# The README's second address of the first producer's log (Several producers, one log).
SECOND_ADDRESS_PORT = "50053"
DEFAULT_HOSTS = ("localhost", "127.0.0.1")
# grpcurl flags that take a value (the others are booleans, or written -flag=value).
VALUE_FLAGS = {
    "-d", "-max-time", "-H", "-rpc-header", "-reflect-header", "-connect-timeout", "-format",
    "-import-path", "-proto", "-protoset", "-authority", "-keepalive-time", "-max-msg-sz",
    "-servername", "-cacert", "-cert", "-key", "-user-agent", "-protoset-out", "-msg-template",
}
SERVICE_RPCS = {
    "pushpull.v1.ProducerService": {"Publish", "Subscribe", "Poll"},
    "pushpull.v1.ConsumerService": {"GetStats"},
    "pushpull.v1.WebhookService": {"CreateWebhook", "GetWebhook", "ListWebhooks", "DeleteWebhook"},
    "grpc.health.v1.Health": {"Check", "Watch"},
}
LISTED = {
    "producer": ({"pushpull.v1.ProducerService", "pushpull.v1.WebhookService",
                  "grpc.health.v1.Health"},
                 {"pushpull.v1.ConsumerService"}),
    "consumer": ({"pushpull.v1.ConsumerService", "grpc.health.v1.Health"},
                 {"pushpull.v1.ProducerService"}),
}
LISTED["retention"] = LISTED["producer"]
LISTED["second"] = LISTED["producer"]
LISTED["tls"] = LISTED["producer"]
LISTED["mtls"] = LISTED["producer"]
# Where the README's TLS commands find their files (`producer dev-certs --out certs`).
CERTS_DIR = "certs/"
CERT_FLAGS = ("-cacert", "-cert", "-key")
TOKEN_VARIABLE = "$PUSHPULL_TOKEN"
# grpcurl exits 64 + the gRPC status code when a call fails.
EXIT_DEADLINE_EXCEEDED = 64 + 4
EXIT_OUT_OF_RANGE = 64 + 11
EXIT_UNAUTHENTICATED = 64 + 16
ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"
BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"


class CheckFailed(Exception):
    pass


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


@dataclass
class Command:
    line: int  # README line where the command starts
    text: str  # as written, continuations joined
    argv: list[str]
    flags: list[tuple[str, str | None]] = field(default_factory=list)
    positional: list[str] = field(default_factory=list)
    request: dict | None = None  # the -d JSON, parsed
    shown: list[str] = field(default_factory=list)  # the output the README shows, if any

    @property
    def target(self) -> str:
        host, _, port = self.positional[0].rpartition(":")
        if self.has_flag("-cacert"):
            # The README's TLS producer is on the default port too; the flags tell it apart.
            if host not in DEFAULT_HOSTS or port != PRODUCER_DEFAULT_PORT:
                return "unknown"
            return "mtls" if self.has_flag("-cert") else "tls"
        if host in DEFAULT_HOSTS and port == PRODUCER_DEFAULT_PORT:
            return "producer"
        if host in DEFAULT_HOSTS and port == CONSUMER_DEFAULT_PORT:
            return "consumer"
        if host in DEFAULT_HOSTS and port == RETENTION_PRODUCER_PORT:
            return "retention"
        if host in DEFAULT_HOSTS and port == SECOND_ADDRESS_PORT:
            return "second"
        return "unknown"

    @property
    def verb(self) -> str:
        return self.positional[1] if len(self.positional) > 1 else "list"

    @property
    def method(self) -> str:
        """`Service/Method` for calls, "" for list and describe."""
        if self.verb in ("list", "describe"):
            return ""
        service, _, method = self.verb.replace("/", ".").rpartition(".")
        return f"{service}/{method}"

    def flag(self, name: str) -> str | None:
        for flag, value in self.flags:
            if flag == name:
                return value
        return None

    def has_flag(self, name: str) -> bool:
        return any(flag == name for flag, _ in self.flags)

    @property
    def authorized(self) -> bool:
        """Whether it sends a token (`-H "authorization: Bearer ..."`)."""
        return any(flag in ("-H", "-rpc-header") and (value or "").lower().startswith(
            "authorization:") for flag, value in self.flags)

    @property
    def needs_token(self) -> bool:
        """Whether a producer with tokens refuses it without one: all but reflection and
        health."""
        return self.verb not in ("list", "describe") and not self.method.startswith("grpc.")

    def rewritten(self, addresses: dict[str, str], max_time: float, certs: str = "",
                  token: str = "") -> list[str]:
        address = addresses[self.target]
        argv = ["grpcurl"]
        for flag, value in self.flags:
            if flag == "-max-time":
                continue
            if flag in CERT_FLAGS and value and value.startswith(CERTS_DIR):
                value = f"{certs.rstrip('/')}/{value[len(CERTS_DIR):]}"
            if flag in ("-H", "-rpc-header") and value:
                value = value.replace(TOKEN_VARIABLE, token)
            argv += [flag] if value is None else [flag, value]
        argv += ["-max-time", str(max_time), address, *self.positional[1:]]
        return argv

    def key(self) -> str:
        """What this command demonstrates, for the coverage check."""
        if self.target in ("tls", "mtls"):
            what = self.method or self.verb
            refused = self.needs_token and not self.authorized
            return f"{self.target} {what}" + (" without a token" if refused else "")
        if self.verb == "list":
            return f"list {self.target}"
        if self.verb == "describe":
            return f"describe {self.target}"
        req = self.request or {}
        cursor = req.get("after_sequence", req.get("afterSequence"))
        if self.method == "pushpull.v1.ProducerService/Poll":
            shown = "\n".join(self.shown)
            for reason in ("CURSOR_EXPIRED", "CURSOR_AHEAD"):
                if f'"reason":"{reason}"' in shown:
                    return f"poll shows the details of {reason}"
            if req.get("max_wait", req.get("maxWait")) not in (None, "0s"):
                return "long poll"
            if cursor == 0:
                return "poll from the oldest"
            if cursor is not None and req.get("max_events", req.get("maxEvents")):
                return "poll from a cursor with max_events"
            return "poll (other)"
        if self.method == "pushpull.v1.ProducerService/Subscribe":
            return "subscribe from the start" if cursor == 0 else (
                "subscribe from now" if cursor is None else "subscribe from a cursor")
        return self.method


REQUIRED = [
    "list producer", "list consumer", "describe producer", "describe consumer",
    "pushpull.v1.ProducerService/Publish", "poll from the oldest",
    "poll from a cursor with max_events", "long poll", "subscribe from the start",
    "subscribe from now", "pushpull.v1.ConsumerService/GetStats", "grpc.health.v1.Health/Check",
    "poll shows the details of CURSOR_EXPIRED", "poll shows the details of CURSOR_AHEAD",
    "pushpull.v1.WebhookService/CreateWebhook", "pushpull.v1.WebhookService/GetWebhook",
    "pushpull.v1.WebhookService/ListWebhooks", "pushpull.v1.WebhookService/DeleteWebhook",
    "tls list", "tls pushpull.v1.ProducerService/Publish", "tls pushpull.v1.ProducerService/Poll",
    "tls pushpull.v1.ProducerService/Poll without a token",
    "mtls pushpull.v1.ProducerService/Poll",
]


def extract(readme: str) -> list[Command]:
    lines = readme.splitlines()
    texts: list[tuple[int, str, list[str]]] = []
    fence: str | None = None
    comments: list[str] = []  # the comment lines just above, in a fence
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if stripped.startswith("```"):
            fence = None if fence is not None else (stripped[3:].strip() or "text")
            comments = []
            i += 1
            continue
        if fence is not None and stripped.startswith("#"):
            comments.append(stripped)
            i += 1
            continue
        if fence in ("bash", "sh", "shell") and stripped.startswith("grpcurl "):
            start = i
            text = stripped
            # Go on while the line ends with a backslash, or a quoted argument (JSON) is open.
            while text.endswith("\\") or not _complete(text):
                i += 1
                if i >= len(lines) or lines[i].strip().startswith("```"):
                    raise SystemExit(f"README.md:{start + 1}: unterminated grpcurl command")
                if text.endswith("\\"):
                    text = text[:-1].rstrip() + " " + lines[i].strip()
                else:
                    text += "\n" + lines[i].strip()
            texts.append((start + 1, text, shown_output(comments)))
        elif fence is None:
            for match in re.finditer(r"`(grpcurl [^`]+)`", line):
                texts.append((i + 1, match.group(1), []))
        comments = []
        i += 1
    commands = []
    for line, text, shown in texts:
        commands.append(parse(line, text))
        commands[-1].shown = shown
    return commands


def shown_output(comments: list[str]) -> list[str]:
    """The output shown above a command: the last comment lines indented by 3 or more spaces."""
    shown: list[str] = []
    for comment in reversed(comments):
        body = comment[1:]
        if not body.startswith("   "):
            break
        shown.insert(0, body[3:])
    return shown


def same_output(shown: list[str], printed: str) -> str | None:
    """None if `printed` is the `shown` output (whitespace runs aside, `...` any text), else why."""
    got = [" ".join(line.split()) for line in printed.strip().splitlines()]
    want = [" ".join(line.split()) for line in shown]
    if len(got) != len(want):
        return f"{len(got)} lines printed, the README shows {len(want)}:\n{printed.strip()}"
    for number, (printed_line, shown_line) in enumerate(zip(got, want), 1):
        pattern = ".*".join(re.escape(part) for part in shown_line.split("..."))
        if not re.fullmatch(pattern, printed_line):
            return f"line {number} printed:\n  {printed_line}\nthe README shows:\n  {shown_line}"
    return None


def _complete(text: str) -> bool:
    try:
        shlex.split(text, comments=True)
        return True
    except ValueError:
        return False


def parse(line: int, text: str) -> Command:
    argv = shlex.split(text, comments=True)
    cmd = Command(line, text, argv)
    args = iter(argv[1:])
    for arg in args:
        if arg.startswith("-") and len(arg) > 1:
            name, eq, value = arg.partition("=")
            if eq:
                cmd.flags.append((name, value))
            elif name in VALUE_FLAGS:
                cmd.flags.append((name, next(args, None)))
            else:
                cmd.flags.append((name, None))
        else:
            cmd.positional.append(arg)
    data = cmd.flag("-d")
    if data is not None:
        if data.startswith("@"):
            raise SystemExit(f"README.md:{line}: -d @ (request from stdin) is not supported here")
        try:
            cmd.request = json.loads(data)
        except json.JSONDecodeError as err:
            raise SystemExit(f"README.md:{line}: -d is not valid JSON ({err}): {data}")
    return cmd


def json_objects(text: str) -> list[dict]:
    """grpcurl prints one pretty JSON object per response, one after another."""
    decoder = json.JSONDecoder()
    objects, pos = [], 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            return objects
        obj, pos = decoder.raw_decode(text, pos)
        objects.append(obj)


def u64(obj: dict, name: str) -> int:
    """grpcurl prints uint64 as strings and leaves out zero values."""
    return int(obj.get(name, "0"))


@dataclass
class Event:
    sequence: int
    topic: str
    payload: str  # base64, as grpcurl prints it

    @staticmethod
    def from_json(obj: dict) -> "Event":
        return Event(u64(obj, "sequence"), obj.get("topic", ""), obj.get("payload", ""))


@dataclass
class Log:
    """What the test knows of one producer's log: what was published and what it retains."""
    retention: int | None = None  # --retention-events; None: more than the test publishes
    published: list[Event] = field(default_factory=list)
    log_id: str | None = None

    @property
    def head(self) -> int:
        return len(self.published)

    @property
    def oldest(self) -> int:
        """The oldest retained sequence (1 while nothing has been dropped)."""
        return 1 if self.retention is None else max(1, self.head - self.retention + 1)

    def matching(self, req: dict, cursor: int) -> list[Event]:
        topics = req.get("topics") or []
        return [e for e in self.published
                if e.sequence > cursor and e.sequence >= self.oldest
                and (not topics or e.topic in topics)]

    def check_log_id(self, log_id: str) -> None:
        expect(log_id != "", "no logId")
        if self.log_id is None:
            self.log_id = log_id
        expect(log_id == self.log_id, f"logId changed: {log_id} after {self.log_id}")


def error_details(stderr: str) -> list[dict]:
    """The details grpcurl prints under `Details:`, one `N) {json}` line each."""
    return [json.loads(match[1])
            for match in re.finditer(r"^\s*\d+\)\s*(\{.*\})\s*$", stderr, re.M)]


class Runner:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.addresses = {"producer": args.producer, "consumer": args.consumer,
                          "retention": args.retention_producer, "second": args.second_address,
                          "tls": args.tls_producer, "mtls": args.mtls_producer}
        self.logs = {"producer": Log(), "retention": Log(retention=args.retention_events),
                     "tls": Log(), "mtls": Log()}
        self.printed = ""  # what the last command run printed, stdout then stderr

    def log(self, cmd: Command) -> Log:
        """The log a command reads; the consumer and the second address read the first
        producer's."""
        return self.logs.get(cmd.target, self.logs["producer"])

    def connection(self, target: str) -> list[str]:
        """The test's own grpcurl flags to reach a target: -plaintext, or TLS and the token."""
        if target not in ("tls", "mtls"):
            return ["-plaintext"]
        certs = self.args.certs.rstrip("/")
        flags = ["-cacert", f"{certs}/ca.pem", "-H", f"authorization: Bearer {self.args.token}"]
        if target == "mtls":
            flags += ["-cert", f"{certs}/client.pem", "-key", f"{certs}/client.key"]
        return flags

    # --- the test's own calls (not README commands) ---

    def publish_own(self, cmd: Command, topic: str, delay: float = 0.0) -> Event:
        """Publishes one event to the producer `cmd` talks to, as the test's fixture."""
        time.sleep(delay)
        log = self.log(cmd)
        payload = "Z3JwY3VybC1zdWl0ZQ=="  # "grpcurl-suite"
        request = json.dumps({"events": [{"topic": topic, "payload": payload}]})
        out = subprocess.run(
            ["grpcurl", *self.connection(cmd.target), "-max-time", "5", "-d", request,
             self.addresses[cmd.target], "pushpull.v1.ProducerService/Publish"],
            capture_output=True, text=True, timeout=10, check=True).stdout
        sequence = u64(json.loads(out), "firstSequence")
        expect(sequence == log.head + 1, f"fixture publish got sequence {sequence}")
        event = Event(sequence, topic, payload)
        log.published.append(event)
        return event

    # --- checks per kind of command ---

    def check(self, cmd: Command) -> str:
        if cmd.target == "unknown" or not self.addresses.get(cmd.target):
            raise CheckFailed(f"address {cmd.positional[0]} is none of localhost:"
                              f"{PRODUCER_DEFAULT_PORT}, localhost:{CONSUMER_DEFAULT_PORT}, "
                              f"localhost:{RETENTION_PRODUCER_PORT} (--retention-producer) and "
                              f"localhost:{SECOND_ADDRESS_PORT} (--second-address), or "
                              f"-cacert with localhost:{PRODUCER_DEFAULT_PORT} (--tls-producer)")
        if cmd.target in ("tls", "mtls"):
            expect(not cmd.has_flag("-plaintext"), "-plaintext with -cacert")
        else:
            expect(cmd.has_flag("-plaintext"), "the services speak plaintext: -plaintext is missing")
        self.printed = ""
        what = self.check_call(cmd)
        if cmd.shown:
            why = same_output(cmd.shown, self.printed)
            expect(why is None, f"the output differs from the one the README shows: {why}")
            what += f"; printed the {len(cmd.shown)} lines the README shows"
        return what

    def check_call(self, cmd: Command) -> str:
        if cmd.verb == "list":
            return self.check_list(cmd)
        if cmd.verb == "describe":
            return self.check_describe(cmd)
        if cmd.target in ("tls", "mtls") and cmd.needs_token and not cmd.authorized:
            return self.check_unauthenticated(cmd)
        handler = {
            "pushpull.v1.ProducerService/Publish": self.check_publish,
            "pushpull.v1.ProducerService/Poll": self.check_poll,
            "pushpull.v1.ProducerService/Subscribe": self.check_subscribe,
            "pushpull.v1.ConsumerService/GetStats": self.check_stats,
            "grpc.health.v1.Health/Check": self.check_health,
            "pushpull.v1.WebhookService/CreateWebhook": self.check_webhook,
            "pushpull.v1.WebhookService/GetWebhook": self.check_webhook,
            "pushpull.v1.WebhookService/ListWebhooks": self.check_webhook,
            "pushpull.v1.WebhookService/DeleteWebhook": self.check_webhook,
        }.get(cmd.method)
        expect(handler is not None, f"no check for method {cmd.method}: add one here")
        return handler(cmd)

    def run(self, cmd: Command, max_time: float | None = None) -> tuple[int, str, str, float]:
        argv = cmd.rewritten(self.addresses, max_time or self.args.unary_max_time,
                             self.args.certs or "", self.args.token or "")
        started = time.monotonic()
        done = subprocess.run(argv, capture_output=True, text=True,
                              timeout=(max_time or self.args.unary_max_time) + 10)
        self.printed = done.stdout + done.stderr
        return done.returncode, done.stdout, done.stderr, time.monotonic() - started

    def run_ok(self, cmd: Command) -> tuple[str, float]:
        rc, out, err, elapsed = self.run(cmd)
        expect(rc == 0, f"exit {rc}: {err.strip()}")
        return out, elapsed

    def check_list(self, cmd: Command) -> str:
        out, _ = self.run_ok(cmd)
        services = set(out.split())
        present, absent = LISTED[cmd.target]
        expect(present <= services, f"{sorted(present - services)} not listed: {sorted(services)}")
        expect(not absent & services, f"{sorted(absent & services)} listed but not served here")
        return f"lists {', '.join(sorted(present))}"

    def check_describe(self, cmd: Command) -> str:
        expect(len(cmd.positional) >= 3, "describe without a symbol")
        symbol = cmd.positional[2]
        out, _ = self.run_ok(cmd)
        expect(out.startswith(f"{symbol} is a "), f"unexpected output: {out[:200]}")
        if symbol in SERVICE_RPCS:
            rpcs = set(re.findall(r"rpc (\w+) \(", out))
            expect(rpcs == SERVICE_RPCS[symbol], f"rpcs {sorted(rpcs)}")
            return f"{symbol}: rpcs {', '.join(sorted(rpcs))}"
        fields = re.findall(r"^\s+[\w.<>, ]+ (\w+) = \d+;", out, re.M)
        expect(bool(fields), "a message with no fields")
        return f"{symbol}: fields {', '.join(fields)}"

    def check_publish(self, cmd: Command) -> str:
        log = self.log(cmd)
        events = (cmd.request or {}).get("events", [])
        expect(events, "a Publish with no events")
        out, _ = self.run_ok(cmd)
        resp = json.loads(out)
        first, last = u64(resp, "firstSequence"), u64(resp, "lastSequence")
        expect((first, last) == (log.head + 1, log.head + len(events)),
               f"got sequences {first}..{last}, expected {log.head + 1}..{log.head + len(events)}")
        log.check_log_id(resp.get("logId", ""))
        for event in events:
            log.published.append(Event(log.head + 1, event["topic"], event.get("payload", "")))
        return f"sequences {first}..{last}"

    def check_refused_cursor(self, cmd: Command, cursor: int) -> str:
        """A Poll whose cursor is beyond the head or expired: OUT_OF_RANGE with its details."""
        log = self.log(cmd)
        reason = "CURSOR_AHEAD" if cursor > log.head else "CURSOR_EXPIRED"
        rc, _, err, _ = self.run(cmd)
        expect(rc == EXIT_OUT_OF_RANGE and "Code: OutOfRange" in err,
               f"{reason}: expected OutOfRange (exit 75), got exit {rc}: {err}")
        details = error_details(err)
        info = next((d for d in details if d.get("@type") == ERROR_INFO), None)
        expect(info is not None, f"no google.rpc.ErrorInfo among the details: {err}")
        expect((info.get("domain"), info.get("reason")) == ("pushpull", reason),
               f"ErrorInfo domain {info.get('domain')}, reason {info.get('reason')}: "
               f"expected pushpull, {reason}")
        metadata = dict(info.get("metadata", {}))
        log.check_log_id(metadata.pop("log_id", ""))
        want = {"after_sequence": cursor, "field": "after_sequence", "head_sequence": log.head,
                "oldest_sequence": log.oldest}
        if reason == "CURSOR_EXPIRED":
            want["missed"] = log.oldest - 1 - cursor
        want = {key: str(value) for key, value in want.items()}
        expect(metadata == want, f"ErrorInfo metadata {metadata}, expected {want} and a log_id")
        bad = next((d for d in details if d.get("@type") == BAD_REQUEST), {})
        fields = [v.get("field") for v in bad.get("fieldViolations", [])]
        expect(fields == ["after_sequence"], f"BadRequest fields {fields}: expected after_sequence")
        return (f"OutOfRange, ErrorInfo {reason} {', '.join(f'{k}={v}' for k, v in want.items())}"
                f", BadRequest field after_sequence")

    def check_unauthenticated(self, cmd: Command) -> str:
        """A call without a token to a producer with tokens: Unauthenticated, TOKEN_MISSING,
        and nothing appended."""
        log = self.log(cmd)
        rc, _, err, _ = self.run(cmd)
        expect(rc == EXIT_UNAUTHENTICATED and "Code: Unauthenticated" in err,
               f"expected Unauthenticated (exit 80), got exit {rc}: {err}")
        info = next((d for d in error_details(err) if d.get("@type") == ERROR_INFO), None)
        expect(info is not None and (info.get("domain"), info.get("reason")) == (
            "pushpull", "TOKEN_MISSING"), f"ErrorInfo {info}: expected pushpull, TOKEN_MISSING")
        head = subprocess.run(
            ["grpcurl", *self.connection(cmd.target), "-max-time", "5",
             self.addresses[cmd.target], "pushpull.v1.ProducerService/Poll"],
            capture_output=True, text=True, timeout=10, check=True).stdout
        expect(u64(json.loads(head), "headSequence") == log.head,
               f"headSequence {head}: expected {log.head}, a refused call appends nothing")
        return "Unauthenticated, ErrorInfo TOKEN_MISSING"

    def check_poll(self, cmd: Command) -> str:
        log = self.log(cmd)
        req = cmd.request or {}
        cursor = req.get("after_sequence", req.get("afterSequence"))
        if cursor is not None and (int(cursor) > log.head or 0 < int(cursor) < log.oldest - 1):
            return self.check_refused_cursor(cmd, int(cursor))
        cursor = log.head if cursor is None else int(cursor)
        limit = int(req.get("max_events", req.get("maxEvents", 0))) or 1000
        max_wait = req.get("max_wait", req.get("maxWait"))
        wait_s = float(max_wait.rstrip("s")) if max_wait else 0.0
        expected = log.matching(req, cursor)
        fixture = None
        if wait_s > 0 and not expected:
            # A long poll at the head: publish while it waits; it must return that event at once.
            topic = (req.get("topics") or ["suite.grpcurl"])[0]
            fixture = threading.Thread(target=self.publish_own, args=(cmd, topic, 1.0))
            fixture.start()
        out, elapsed = self.run_ok(cmd)
        if fixture:
            fixture.join()
            expected = log.matching(req, cursor)
            expect(0.9 <= elapsed < wait_s - 0.5,
                   f"the long poll took {elapsed:.2f}s: it must return as soon as the event "
                   f"published after 1 s exists, well before max_wait {wait_s}s")
        else:
            expect(elapsed < 3, f"took {elapsed:.2f}s: events were waiting, it must return at once")
        resp = json.loads(out)
        log.check_log_id(resp.get("logId", ""))
        got = [Event.from_json(e) for e in resp.get("events", [])]
        want = expected[:limit]
        expect(got == want, f"events {[e.sequence for e in got]}, expected "
                            f"{[e.sequence for e in want]} (or topics/payloads differ)")
        next_cursor = want[-1].sequence if len(expected) > limit else log.head
        expect(u64(resp, "nextAfterSequence") == next_cursor,
               f"nextAfterSequence {u64(resp, 'nextAfterSequence')}, expected {next_cursor}")
        expect(u64(resp, "headSequence") == log.head, f"headSequence {u64(resp, 'headSequence')}")
        expect(u64(resp, "oldestSequence") == log.oldest,
               f"oldestSequence {u64(resp, 'oldestSequence')}, expected {log.oldest}")
        kind = f"long poll returned after {elapsed:.1f}s with" if fixture else "returned"
        return f"{kind} events {[e.sequence for e in got]}, nextAfterSequence {next_cursor}"

    def check_subscribe(self, cmd: Command) -> str:
        log = self.log(cmd)
        req = cmd.request or {}
        cursor = req.get("after_sequence", req.get("afterSequence"))
        cursor = log.head if cursor is None else int(cursor)
        argv = cmd.rewritten(self.addresses, self.args.stream_max_time, self.args.certs or "",
                             self.args.token or "")
        started = time.monotonic()
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # Wait for the first response (sent at once), then publish: a live event must follow.
        first = ""
        while proc.stdout and not _complete_json(first):
            line = proc.stdout.readline()
            if not line:
                break
            first += line
        expect(_complete_json(first), "no first response on the stream")
        topic = (req.get("topics") or ["suite.grpcurl"])[0]
        live = self.publish_own(cmd, topic)
        try:
            rest, err = proc.communicate(timeout=self.args.stream_max_time + 10)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise CheckFailed("the stream outlived -max-time")
        elapsed = time.monotonic() - started
        self.printed = first + rest + err
        expect(proc.returncode == EXIT_DEADLINE_EXCEEDED and "DeadlineExceeded" in err,
               f"expected the stream to run until -max-time (DeadlineExceeded, exit 68), got "
               f"exit {proc.returncode} after {elapsed:.1f}s: {err.strip()}")
        responses = json_objects(first + rest)
        got = []
        for resp in responses:
            log.check_log_id(resp.get("logId", ""))
            got += [Event.from_json(e) for e in resp.get("events", [])]
        want = log.matching(req, cursor)
        expect(want and want[-1] == live, "internal: the live event is not expected")
        expect(got == want, f"events {[e.sequence for e in got]}, expected "
                            f"{[e.sequence for e in want]} (or topics/payloads differ)")
        return (f"{len(responses)} responses, events {[e.sequence for e in got]} "
                f"(the last one published while subscribed), then DeadlineExceeded")

    def check_stats(self, cmd: Command) -> str:
        log = self.log(cmd)
        # The consumer reads by long poll: give it a moment to catch up with the last publish.
        for _ in range(20):
            out, _ = self.run_ok(cmd)
            stats = json.loads(out)
            if u64(stats, "eventsReceived") >= log.head:
                break
            time.sleep(0.25)
        expect(stats.get("mode") == self.args.consumer_mode, f"mode {stats.get('mode')}")
        expect(u64(stats, "eventsReceived") == log.head and u64(stats, "lastSequence") == log.head,
               f"eventsReceived {u64(stats, 'eventsReceived')}, lastSequence "
               f"{u64(stats, 'lastSequence')}: expected every one of the {log.head} events")
        expect(u64(stats, "eventsMissed") == 0 and u64(stats, "duplicatesDropped") == 0,
               f"missed {u64(stats, 'eventsMissed')}, duplicates {u64(stats, 'duplicatesDropped')}")
        expect(stats.get("connected") is True, "not connected")
        log.check_log_id(stats.get("logId", ""))
        if cmd.has_flag("-emit-defaults"):
            expect("eventsMissed" in stats and "reconnects" in stats,
                   "-emit-defaults did not print the zero counters")
        return f"{stats['mode']}: eventsReceived {log.head}, 0 missed, 0 duplicates"

    def check_webhook(self, cmd: Command) -> str:
        """WebhookService, in the README's order: create, get, list, delete one subscription."""
        out, _ = self.run_ok(cmd)
        answer = json.loads(out)
        method = cmd.method.rsplit("/", 1)[1]
        wanted = (cmd.request or {}).get("webhook_id")
        if method == "CreateWebhook":
            webhook = answer.get("webhook", {})
            expect(webhook.get("webhookId") == wanted, f"webhookId {webhook.get('webhookId')}")
            expect(answer.get("secret", "").startswith("whsec_"), "no whsec_ secret shown")
            expect(webhook.get("enabled") is True, "not enabled")
            self.webhook_secret = answer["secret"]
            return f"created {wanted}, secret shown once"
        if method == "GetWebhook":
            webhook = answer.get("webhook", {})
            expect(webhook.get("webhookId") == wanted, f"webhookId {webhook.get('webhookId')}")
            secret = getattr(self, "webhook_secret", "whsec_")
            expect(secret[6:] not in out, "Get shows the secret")
            return f"{wanted}: deliveredSequence {webhook.get('deliveredSequence', '0')}"
        if method == "ListWebhooks":
            ids = [w.get("webhookId") for w in answer.get("webhooks", [])]
            expect(bool(ids), "no subscriptions listed")
            return f"lists {', '.join(ids)}"
        expect(answer == {}, f"unexpected answer {answer}")
        return f"deleted {wanted}"

    def check_health(self, cmd: Command) -> str:
        out, _ = self.run_ok(cmd)
        status = json.loads(out).get("status")
        expect(status == "SERVING", f"status {status}")
        service = (cmd.request or {}).get("service", "")
        return f"{cmd.target} {service or '(overall)'}: SERVING"


def _complete_json(text: str) -> bool:
    try:
        json.loads(text)
        return True
    except json.JSONDecodeError:
        return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("readme")
    parser.add_argument("--producer", help="test producer host:port")
    parser.add_argument("--consumer", help="test consumer host:port")
    parser.add_argument("--retention-producer",
                        help="host:port of a second test producer, for localhost:50052")
    parser.add_argument("--retention-events", type=int,
                        help="that producer's --retention-events")
    parser.add_argument("--second-address",
                        help="host:port of another way to the first producer, for localhost:50053")
    parser.add_argument("--tls-producer",
                        help="host:port of a producer serving TLS with tokens, for -cacert")
    parser.add_argument("--mtls-producer",
                        help="host:port of one asking for client certificates, for -cert/-key")
    parser.add_argument("--certs", help="its `producer dev-certs` directory, for certs/")
    parser.add_argument("--token", help="a token with the scopes publish and read, for "
                        "$PUSHPULL_TOKEN")
    parser.add_argument("--consumer-mode", default="READ_MODE_LONG_POLL")
    parser.add_argument("--stream-max-time", type=float, default=3.0)
    parser.add_argument("--unary-max-time", type=float, default=15.0)
    parser.add_argument("--coverage-only", action="store_true")
    args = parser.parse_args()

    with open(args.readme, encoding="utf-8") as f:
        commands = extract(f.read())
    covered = {cmd.key() for cmd in commands}
    missing = [key for key in REQUIRED if key not in covered]
    print(f"{len(commands)} grpcurl commands in {args.readme}")
    if missing:
        print(f"FAIL: the README has no grpcurl command for: {', '.join(missing)}")
        print("0 passed, 1 failed")
        return 1
    if args.coverage_only:
        print("every RPC is covered")
        return 0

    runner = Runner(args)
    passed = failed = 0
    for cmd in commands:
        shown = " ".join(cmd.text.split())
        try:
            what = runner.check(cmd)
            passed += 1
            print(f"ok    README.md:{cmd.line}: {shown}\n        -> {what}")
        except (CheckFailed, subprocess.TimeoutExpired, json.JSONDecodeError) as err:
            failed += 1
            print(f"FAIL  README.md:{cmd.line}: {shown}\n        -> {err}")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
