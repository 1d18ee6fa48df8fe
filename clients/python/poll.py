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
Run ./generate.sh first.
"""

import argparse
import sys
import time

import grpc

from pushpull.v1 import producer_pb2, producer_pb2_grpc


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
    args = parser.parse_args()

    deadline = time.monotonic() + args.timeout if args.timeout else None
    cursor, log_id, received, polls = args.after, None, 0, 0
    with grpc.insecure_channel(args.producer) as channel:
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
                    print(f"poll failed: {err.code().name}: {err.details()}", file=sys.stderr)
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
    print(f"stopped after {polls} polls and {received} events; resume with --after {cursor}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
