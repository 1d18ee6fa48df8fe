#!/usr/bin/env python3
"""A JetStream round trip through a NATS server, with nothing to install: the few text commands
of the NATS client protocol over a socket. For scripts/suites/55-compose-cluster.sh, which runs
it against the compose `cluster` profile's NATS nodes before any producer is involved.

    nats_smoke.py HOST:PORT [REPLICAS]

Checks the server's max_payload is 8 MB; creates a file stream kept on REPLICAS servers (3),
publishes a 2 MiB message (over NATS's default max_payload of 1 MB) and waits for its ack,
reads the stream's info back (1 message, the leader and REPLICAS - 1 replicas), deletes the
stream. Prints one line per step; exits 1 on the first failure.
"""

import json
import socket
import sys

MAX_PAYLOAD = 8 * 1024 * 1024
STREAM = "PUSHPULL_SMOKE"
SUBJECT = "pushpull-smoke.big"


class Nats:
    def __init__(self, address):
        host, port = address.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        self.reader = self.sock.makefile("rb")
        line = self.reader.readline()
        if not line.startswith(b"INFO "):
            raise RuntimeError(f"expected INFO, got {line!r}")
        self.info = json.loads(line[5:])
        self.sock.sendall(b'CONNECT {"verbose":false,"pedantic":false,"headers":false}\r\n'
                          b"SUB _INBOX.smoke.* 1\r\n")
        self.next = 0

    def request(self, subject, payload=b""):
        """Publishes payload to subject and returns the one reply, as bytes."""
        self.next += 1
        inbox = f"_INBOX.smoke.{self.next}"
        self.sock.sendall(f"PUB {subject} {inbox} {len(payload)}\r\n".encode() + payload + b"\r\n")
        while True:
            line = self.reader.readline()
            if not line:
                raise RuntimeError("the server closed the connection")
            if line.startswith(b"PING"):
                self.sock.sendall(b"PONG\r\n")
            elif line.startswith(b"-ERR"):
                raise RuntimeError(line.decode().strip())
            elif line.startswith(b"MSG "):
                # MSG <subject> <sid> [reply-to] <size>
                parts = line.split()
                body = self.reader.read(int(parts[-1]) + 2)[:-2]
                if parts[1].decode() == inbox:
                    return body

    def api(self, subject, body=None):
        """A JetStream API call: the answer as JSON, or an error if it is one."""
        payload = b"" if body is None else json.dumps(body).encode()
        answer = json.loads(self.request(subject, payload))
        if "error" in answer:
            raise RuntimeError(f"{subject}: {answer['error']}")
        return answer


def main():
    address = sys.argv[1]
    replicas = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    nats = Nats(address)
    info = nats.info
    print(f"  {info.get('server_name')} {info.get('version')}: max_payload {info.get('max_payload')}")
    if info.get("max_payload") != MAX_PAYLOAD:
        raise RuntimeError(f"max_payload is {info.get('max_payload')}, not {MAX_PAYLOAD}")
    if not info.get("jetstream"):
        raise RuntimeError("the server does not announce JetStream")

    # Left over from an interrupted run: gone first (an error only says there was none).
    try:
        nats.api(f"$JS.API.STREAM.DELETE.{STREAM}")
    except RuntimeError:
        pass
    nats.api(f"$JS.API.STREAM.CREATE.{STREAM}", {
        "name": STREAM, "subjects": ["pushpull-smoke.>"], "storage": "file",
        "num_replicas": replicas,
    })
    payload = bytes(i % 251 for i in range(2 * 1024 * 1024))
    ack = json.loads(nats.request(SUBJECT, payload))
    if ack.get("stream") != STREAM or ack.get("seq") != 1:
        raise RuntimeError(f"publish ack: {ack}")
    print(f"  stream {STREAM} (R{replicas}): a 2 MiB message stored, seq {ack['seq']}")

    stream = nats.api(f"$JS.API.STREAM.INFO.{STREAM}")
    cluster = stream.get("cluster", {})
    peers = [cluster.get("leader")] + [r["name"] for r in cluster.get("replicas", [])]
    print(f"  leader {cluster.get('leader')}, replicas {peers[1:]}, "
          f"{stream['state']['messages']} message(s), {stream['state']['bytes']} bytes")
    if stream["state"]["messages"] != 1:
        raise RuntimeError(f"stream state: {stream['state']}")
    if replicas > 1 and (not cluster.get("leader") or len(set(peers)) != replicas):
        raise RuntimeError(f"expected {replicas} peers, got {peers}")

    if not nats.api(f"$JS.API.STREAM.DELETE.{STREAM}").get("success"):
        raise RuntimeError("stream delete did not succeed")
    print(f"  stream {STREAM} deleted")


if __name__ == "__main__":
    try:
        main()
    except (OSError, RuntimeError, ValueError, KeyError) as error:
        print(f"nats_smoke: {error}", file=sys.stderr)
        sys.exit(1)
