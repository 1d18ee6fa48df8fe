#!/usr/bin/env python3
"""Publishes COUNT events in one Publish call and prints the sequence each one got.

    python3 publish.py --count 3 --topic demo.python --payload hello

prints one line per event, `sequence=1 topic=demo.python payload=hello 1`, in sequence order.
Over TLS and with a token: --ca ca.pem [--cert c.pem --key c.key] --token T (connection.py).
Run ./generate.sh first.
"""

import argparse
import sys

import grpc

from pushpull.v1 import producer_pb2, producer_pb2_grpc

import connection


def main() -> int:
    parser = argparse.ArgumentParser(description="Publish events to a pushpull producer.")
    parser.add_argument("--producer", default="localhost:50051", help="host:port of the producer")
    parser.add_argument("--count", type=int, default=3, help="events to publish (1-10,000)")
    parser.add_argument("--topic", default="demo.python")
    parser.add_argument("--payload", default="hello", help="event i gets the payload 'PAYLOAD i'")
    connection.add_arguments(parser)
    args = parser.parse_args()

    events = [
        producer_pb2.NewEvent(topic=args.topic, payload=f"{args.payload} {i}".encode())
        for i in range(1, args.count + 1)
    ]
    with connection.open_channel(args) as channel:
        producer = producer_pb2_grpc.ProducerServiceStub(channel)
        try:
            response = producer.Publish(producer_pb2.PublishRequest(events=events), timeout=10)
        except grpc.RpcError as err:
            print(f"publish failed: {err.code().name}: {err.details()}", file=sys.stderr)
            return 1

    # The events got first_sequence..=last_sequence, consecutively, in request order.
    for sequence, event in enumerate(events, start=response.first_sequence):
        print(f"sequence={sequence} topic={event.topic} payload={event.payload.decode()}")
    print(f"published {response.first_sequence}..{response.last_sequence} to log {response.log_id}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
