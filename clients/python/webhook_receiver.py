#!/usr/bin/env python3
"""Webhooks: an HTTP endpoint the producer POSTs events to, each delivery's signature checked.

    python3 webhook_receiver.py --listen 127.0.0.1:8080 --after 0 --count 10

It listens on --listen, registers a webhook subscription for itself on the producer over gRPC
(WebhookService.CreateWebhook, replacing any subscription of the same --webhook-id, so every
start goes on from the --after it is given), and prints the events of each delivery. --after SEQ
is the cursor: events with a sequence greater than SEQ (0: from the oldest retained event; left
out: only events published from now on). It stops after --count events, after --timeout
seconds, or on Ctrl-C, deletes its subscription (so the producer stops POSTing to an address
nobody listens on) and says which --after resumes where it stopped.
Events go to stdout (`sequence=N topic=T payload=P`), everything else to stderr: a line
`registered ...` once the subscription exists, and one line per delivery with what it answered.
Over TLS and with a token: --ca ca.pem [--cert c.pem --key c.key] --token T (connection.py).
Run ./generate.sh first.

Each delivery is signed per Standard Webhooks (standardwebhooks.com): headers webhook-id,
webhook-timestamp and webhook-signature, an HMAC-SHA256 over "id.timestamp.body" with the
subscription's secret. The `standardwebhooks` package checks them: a delivery that fails is
answered 401 (the producer retries it), one that passes 200. The producer delivers at least
once: a batch may come again, so events up to the last accepted sequence are dropped.
--fail-first N answers 500 to the first N signed deliveries, to watch the producer retry them
(every retry carries the same webhook-id).
"""

import argparse
import base64
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import grpc
from standardwebhooks import Webhook, WebhookVerificationError

from pushpull.v1 import webhook_pb2, webhook_pb2_grpc

import connection


class Receiver:
    """What the handler needs: the verifier, the cursor and the counts."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.verifier: Webhook | None = None  # set once the subscription (and secret) exists
        self.cursor = 0  # the last sequence accepted: anything up to it is a duplicate
        self.received = 0
        self.fail_first = args.fail_first

    def handle(self, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
        """One delivery: the HTTP status to answer and what came of it (for the log)."""
        try:
            # The body exactly as received: the signature covers these bytes.
            envelope = self.verifier.verify(body, headers)
        except WebhookVerificationError as err:
            return 401, f"bad signature: {err}"
        if envelope.get("type") != "pushpull.events":
            return 200, f"ignored type {envelope.get('type')!r}"
        batch = envelope["data"]
        events = batch["events"]
        span = f"events {events[0]['sequence']}..{events[-1]['sequence']}" if events else "empty"
        if self.fail_first > 0:
            self.fail_first -= 1
            return 500, f"{span}, failed on purpose (--fail-first)"
        if batch["after_sequence"] > self.cursor:
            # The producer's cursor was ahead of ours (it skipped an expired range, or this
            # receiver registered with a later --after before): a Poll fetches what is missing.
            print(f"missed events {self.cursor + 1}..{batch['after_sequence']}: fetch them with "
                  f"poll.py --after {self.cursor}", file=sys.stderr)
        accepted = duplicates = 0
        for event in events:
            if event["sequence"] <= self.cursor:
                duplicates += 1  # delivered before: at least once means it may come again
                continue
            if self.done():
                break  # past --count: the next start's --after gets it again
            payload = event["payload"]
            if event["encoding"] == "base64":  # a payload that is not UTF-8
                payload = base64.b64decode(payload).decode(errors="replace")
            print(f"sequence={event['sequence']} topic={event['topic']} payload={payload}",
                  flush=True)
            self.cursor, self.received = event["sequence"], self.received + 1
            accepted += 1
        if not self.done():
            # Past filtered-out events too: resuming from here never rescans them.
            self.cursor = max(self.cursor, batch["next_after_sequence"])
        return 200, f"{span}, accepted {accepted}" + \
            (f", dropped {duplicates} duplicates" if duplicates else "")

    def done(self) -> bool:
        return bool(self.args.count) and self.received >= self.args.count


def handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        # HTTP/1.0 (the default): one request per connection, so one thread serves everybody.

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            status, why = receiver.handle(body, dict(self.headers))
            print(f"delivery {self.headers.get('webhook-id')}: {status} {why}",
                  file=sys.stderr, flush=True)
            answer = why.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args) -> None:
            pass  # the delivery line above says what matters

    return Handler


def main() -> int:
    parser = argparse.ArgumentParser(description="Receive a pushpull producer's webhooks.")
    parser.add_argument("--producer", default="localhost:50051", help="host:port of the producer")
    parser.add_argument("--listen", default="127.0.0.1:8080",
                        help="host:port to listen on (port 0: any free one)")
    parser.add_argument("--url", help="URL the producer POSTs to (default: http://LISTEN/webhook)")
    parser.add_argument("--webhook-id", default="python-receiver", help="the subscription's id")
    parser.add_argument("--after", type=int, help="cursor (0: from the oldest; default: from now)")
    parser.add_argument("--topics", default="", help="comma-separated topics (default: all)")
    parser.add_argument("--secret", default="",
                        help="signing secret, whsec_<base64> (default: the producer makes one)")
    parser.add_argument("--count", type=int, default=0, help="stop after this many events")
    parser.add_argument("--timeout", type=float, default=0, help="stop after this many seconds")
    parser.add_argument("--fail-first", type=int, default=0,
                        help="answer 500 to the first N signed deliveries")
    connection.add_arguments(parser)
    args = parser.parse_args()

    receiver = Receiver(args)
    host, port = args.listen.rsplit(":", 1)
    server = HTTPServer((host, int(port)), handler(receiver))
    server.timeout = 0.2  # how often the loop below looks at --count and --timeout
    url = args.url or f"http://{host}:{server.server_address[1]}/webhook"

    request = webhook_pb2.CreateWebhookRequest(
        webhook_id=args.webhook_id, url=url, topics=[t for t in args.topics.split(",") if t],
        secret=args.secret, replace=True)
    if args.after is not None:
        request.after_sequence = args.after  # unset (not 0!) means "from now"
    deadline = time.monotonic() + args.timeout if args.timeout else None
    with connection.open_channel(args) as channel, server:
        webhooks = webhook_pb2_grpc.WebhookServiceStub(channel)
        try:
            response = webhooks.CreateWebhook(request, timeout=10)
        except grpc.RpcError as err:
            print(f"register failed: {err.code().name}: {err.details()}", file=sys.stderr)
            return 1
        # The secret is in this response only (or it is ours); deliveries may come from now on.
        receiver.verifier = Webhook(response.secret)
        receiver.cursor = response.webhook.delivered_sequence
        print(f"registered webhook {response.webhook.webhook_id} at {url} from --after "
              f"{receiver.cursor} (log {response.webhook.log_id})", file=sys.stderr, flush=True)
        try:
            while not receiver.done() and not (deadline and time.monotonic() >= deadline):
                server.handle_request()
        except KeyboardInterrupt:
            pass
        try:
            webhooks.DeleteWebhook(
                webhook_pb2.DeleteWebhookRequest(webhook_id=args.webhook_id), timeout=10)
        except grpc.RpcError as err:
            print(f"delete failed: {err.code().name}: {err.details()}", file=sys.stderr)
    print(f"stopped after {receiver.received} events; resume with --after {receiver.cursor}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
