#!/usr/bin/env python3
"""Pull: a Poll loop that carries its cursor from one call to the next.

    python3 poll.py --after 0 --count 10                 # poll; wait --interval when caught up
    python3 poll.py --after 0 --max-wait 30 --timeout 60  # long poll: each call waits for events

--after SEQ is the cursor: events with a sequence greater than SEQ (0: from the oldest retained
event; left out: from the head, only new events). Each response's next_after_sequence is the
cursor of the next call. With --max-wait the producer holds each call until an event exists
(a long poll), so there is no interval to wait. Stops after --count events, or at the first
call that ends after --timeout seconds, or on Ctrl-C, and says which --after resumes.
Events go to stdout (`sequence=N topic=T payload=P`), everything else to stderr.
Over TLS and with a token: --ca ca.pem [--cert c.pem --key c.key] --token T (connection.py).
Run ./generate.sh first.

Errors: every error status of the producer carries, in its details, a google.rpc.ErrorInfo
whose `reason` is one of the ErrorReason names of proto/pushpull/v1/errors.proto and whose
`metadata` has the numbers a client needs. This loop branches on the reason, never on the
message text (which is for people and may be reworded):
  CURSOR_EXPIRED  retention dropped events after the cursor: resume from oldest_sequence - 1
                  and report the `missed` events (stderr: `cursor 1 has expired: 2 events
                  missed (oldest_sequence 4); resuming from --after 3`);
  CURSOR_AHEAD    the cursor is beyond the head: start over from 0 if it came from an earlier
                  log of a restarted producer, else stop (stderr: `poll refused: CURSOR_AHEAD:
                  --after 99 is beyond head_sequence=23 (oldest_sequence=4, log_id=...)`);
  anything else   stop, naming the reason, the field at fault (google.rpc.BadRequest) and
                  when to retry (google.rpc.RetryInfo), if the status has them.
"""

import argparse
import sys
import time

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from pushpull.v1 import errors_pb2, producer_pb2, producer_pb2_grpc

import connection

# ErrorInfo.reason travels as the enum value's name; the generated enum gives the names.
CURSOR_EXPIRED = errors_pb2.ErrorReason.Name(errors_pb2.CURSOR_EXPIRED)
CURSOR_AHEAD = errors_pb2.ErrorReason.Name(errors_pb2.CURSOR_AHEAD)


class Details:
    """The google.rpc details of a failed call, each None when the status lacks it.

    grpcio-status decodes them from the call's `grpc-status-details-bin` trailer (a
    google.rpc.Status); each detail is a google.protobuf.Any to unpack into its type.
    """

    def __init__(self, err: grpc.RpcError):
        self.info: error_details_pb2.ErrorInfo | None = None
        self.bad_request: error_details_pb2.BadRequest | None = None
        self.retry: error_details_pb2.RetryInfo | None = None
        status = rpc_status.from_call(err)  # None when the server sent no details
        for detail in status.details if status else []:
            for name, kind in (("info", error_details_pb2.ErrorInfo),
                               ("bad_request", error_details_pb2.BadRequest),
                               ("retry", error_details_pb2.RetryInfo)):
                if detail.Is(kind.DESCRIPTOR):
                    message = kind()
                    detail.Unpack(message)
                    setattr(self, name, message)
        if self.info and self.info.domain != "pushpull":
            self.info = None  # another service's reasons mean nothing here

    @property
    def reason(self) -> str:
        """The ErrorReason name, or "" without one (then only the status code tells)."""
        return self.info.reason if self.info else ""

    def number(self, key: str) -> int:
        """A numeric ErrorInfo.metadata value (sequences, counts): decimal strings."""
        return int(self.info.metadata[key])

    def describe(self, err: grpc.RpcError) -> str:
        """What a person needs: code, reason, the field at fault, when to retry, the message."""
        parts = [err.code().name] + ([self.reason] if self.reason else [])
        if self.bad_request and self.bad_request.field_violations:
            parts.append(f"field {self.bad_request.field_violations[0].field}")
        if self.retry:
            parts.append(f"retry in {self.retry.retry_delay.ToTimedelta().total_seconds():g}s")
        return f"{': '.join(parts)}: {err.details()}"


def main() -> int:
    parser = argparse.ArgumentParser(description="Poll a pushpull producer (pull, long poll).")
    parser.add_argument("--producer", default="localhost:50051", help="host:port of the producer")
    parser.add_argument("--after", type=int, help="cursor (0: from the oldest; default: the head)")
    parser.add_argument("--topics", default="", help="comma-separated topics (default: all)")
    parser.add_argument("--max-events", type=int, default=100, help="most events per Poll")
    parser.add_argument("--max-wait", type=float, default=0, help="long poll: seconds per call")
    parser.add_argument("--interval", type=float, default=1.0,
                        help="plain poll: seconds to wait when caught up")
    parser.add_argument("--count", type=int, default=0, help="stop after this many events")
    parser.add_argument("--timeout", type=float, default=0, help="stop after this many seconds")
    connection.add_arguments(parser)
    args = parser.parse_args()

    deadline = time.monotonic() + args.timeout if args.timeout else None
    cursor, log_id, received, polls, missed = args.after, None, 0, 0, 0
    with connection.open_channel(args) as channel:
        producer = producer_pb2_grpc.ProducerServiceStub(channel)
        try:
            while True:
                request = producer_pb2.PollRequest(
                    topics=[t for t in args.topics.split(",") if t], max_events=args.max_events)
                if cursor is not None:
                    request.after_sequence = cursor
                if args.max_wait:
                    request.max_wait.FromMilliseconds(int(args.max_wait * 1000))
                try:
                    response = producer.Poll(request, timeout=args.max_wait + 10)
                except grpc.RpcError as err:
                    details = Details(err)
                    meta = details.info.metadata if details.info else {}
                    if details.reason in (CURSOR_EXPIRED, CURSOR_AHEAD) and \
                            log_id is not None and meta["log_id"] != log_id:
                        # The producer restarted: our cursor belongs to its previous log.
                        print(f"new log {meta['log_id']}: starting over from its oldest event",
                              file=sys.stderr)
                        cursor, log_id = 0, None
                        continue
                    if details.reason == CURSOR_EXPIRED:
                        # Retention dropped the events after the cursor: say how many are lost,
                        # then go on from the oldest retained event.
                        oldest, gone = details.number("oldest_sequence"), details.number("missed")
                        print(f"cursor {meta['after_sequence']} has expired: {gone} events "
                              f"missed (oldest_sequence {oldest}); resuming from --after "
                              f"{oldest - 1}", file=sys.stderr)
                        cursor, missed = oldest - 1, missed + gone
                        continue
                    if details.reason == CURSOR_AHEAD:
                        print(f"poll refused: {CURSOR_AHEAD}: --after {meta['after_sequence']} is "
                              f"beyond head_sequence={meta['head_sequence']} (oldest_sequence="
                              f"{meta['oldest_sequence']}, log_id={meta['log_id']})",
                              file=sys.stderr)
                        return 1
                    print(f"poll failed: {details.describe(err)}", file=sys.stderr)
                    return 1
                polls += 1
                if log_id is not None and response.log_id != log_id:
                    # The producer restarted: a cursor of the old log means nothing in the new one.
                    print(f"new log {response.log_id}: starting over from its oldest event",
                          file=sys.stderr)
                    cursor, log_id = 0, None
                    continue
                log_id = response.log_id
                for event in response.events:
                    print(f"sequence={event.sequence} topic={event.topic} "
                          f"payload={event.payload.decode(errors='replace')}", flush=True)
                    cursor, received = event.sequence, received + 1
                    if received == args.count:
                        break
                else:
                    cursor = response.next_after_sequence
                if received == args.count or deadline and time.monotonic() >= deadline:
                    break
                caught_up = response.next_after_sequence >= response.head_sequence
                if caught_up and not args.max_wait:
                    pause = args.interval
                    if deadline:
                        pause = min(pause, max(0.0, deadline - time.monotonic()))
                    time.sleep(pause)
        except KeyboardInterrupt:
            pass
    lost = f" ({missed} missed)" if missed else ""
    print(f"stopped after {polls} polls and {received} events{lost}; resume with --after {cursor}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
