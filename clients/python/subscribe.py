#!/usr/bin/env python3
"""Push: opens a Subscribe stream and prints each event as the producer sends it.

    python3 subscribe.py --after 0 --count 10 --timeout 30

--after SEQ is the cursor: events with a sequence greater than SEQ (0: from the oldest retained
event; left out: only events published from now on). It stops after --count events, after
--timeout seconds, or on Ctrl-C, and says which --after resumes where it stopped.
Events go to stdout (`sequence=N topic=T payload=P`), everything else to stderr.
Over TLS and with a token: --ca ca.pem [--cert c.pem --key c.key] --token T (connection.py).
Run ./generate.sh first.
"""

import argparse
import sys

import grpc

from pushpull.v1 import producer_pb2, producer_pb2_grpc

import connection


def main() -> int:
    parser = argparse.ArgumentParser(description="Subscribe to a pushpull producer (push).")
    parser.add_argument("--producer", default="localhost:50051", help="host:port of the producer")
    parser.add_argument("--after", type=int, help="cursor (0: from the oldest; default: from now)")
    parser.add_argument("--topics", default="", help="comma-separated topics (default: all)")
    parser.add_argument("--count", type=int, default=0, help="stop after this many events")
    parser.add_argument("--timeout", type=float, default=0, help="stop after this many seconds")
    connection.add_arguments(parser)
    args = parser.parse_args()

    request = producer_pb2.SubscribeRequest(topics=[t for t in args.topics.split(",") if t])
    if args.after is not None:
        request.after_sequence = args.after  # unset (not 0!) means "from now"
    cursor, received, first = args.after, 0, True
    with connection.open_channel(args) as channel:
        producer = producer_pb2_grpc.ProducerServiceStub(channel)
        # A deadline is how a client ends a stream after a while: the call fails with
        # DEADLINE_EXCEEDED, which here is a normal stop.
        stream = producer.Subscribe(request, timeout=args.timeout or None)
        try:
            for response in stream:
                if first:  # the producer answers at once, so this means "connected"
                    print(f"subscribed to log {response.log_id}, head_sequence "
                          f"{response.head_sequence}", file=sys.stderr, flush=True)
                    first = False
                for event in response.events:
                    print(f"sequence={event.sequence} topic={event.topic} "
                          f"payload={event.payload.decode(errors='replace')}", flush=True)
                    cursor, received = event.sequence, received + 1
                    if received == args.count:
                        stream.cancel()
                        break
                else:
                    # Past filtered-out events too: resuming from here never rescans them.
                    cursor = response.next_after_sequence
                    continue
                break
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                print(f"stream failed: {err.code().name}: {err.details()}", file=sys.stderr)
                return 1
        except KeyboardInterrupt:
            stream.cancel()
    print(f"stopped after {received} events; resume with --after {cursor}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
