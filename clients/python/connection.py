"""The connection every example opens: plaintext, TLS or mutual TLS, with or without a token.

Each example calls `add_arguments(parser)` and then `open_channel(args)`:

    --ca ca.pem                  TLS, trusting this CA (the producer's --tls-cert is signed by it)
    --tls                        TLS, trusting the system's roots (a public certificate)
    --cert client.pem --key client.key
                                 mutual TLS: the certificate shown to a producer started with
                                 --tls-client-ca (implies TLS)
    --token T                    bearer token (default: the PUSHPULL_TOKEN environment variable,
                                 which, unlike the flag, stays out of process listings)

The token goes on every call as the metadata `authorization: Bearer <token>`, added by a client
interceptor rather than as grpc call credentials: grpcio only sends call credentials over TLS, and
a producer on loopback may check tokens without TLS. A producer with tokens answers a call without
one UNAUTHENTICATED, and one whose token lacks the scope (publish, read) PERMISSION_DENIED; the
examples print that code and the producer's message and exit 1.
"""

from __future__ import annotations

import argparse
import os
import sys

import grpc


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("connection (TLS, token)")
    group.add_argument("--ca", help="CA certificate (PEM) to trust: connect with TLS")
    group.add_argument("--tls", action="store_true",
                       help="connect with TLS, trusting the system's roots")
    group.add_argument("--cert", help="client certificate (PEM) for mutual TLS (needs --key)")
    group.add_argument("--key", help="the client certificate's private key (PEM)")
    group.add_argument("--token", default=os.environ.get("PUSHPULL_TOKEN"),
                       help="bearer token (default: $PUSHPULL_TOKEN)")


def open_channel(args: argparse.Namespace) -> grpc.Channel:
    """A channel to args.producer as the flags ask; exits with a message on contradictory ones."""
    if bool(args.cert) != bool(args.key):
        sys.exit("--cert and --key go together (mutual TLS needs both)")
    if args.ca or args.tls or args.cert:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=read(args.ca),
            private_key=read(args.key),
            certificate_chain=read(args.cert),
        )
        channel = grpc.secure_channel(args.producer, credentials)
    else:
        channel = grpc.insecure_channel(args.producer)
    if args.token:
        channel = grpc.intercept_channel(channel, BearerToken(args.token))
    return channel


def read(path: str | None) -> bytes | None:
    if path is None:
        return None
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as err:
        sys.exit(f"cannot read {path}: {err.strerror}")


class _Details(grpc.ClientCallDetails):
    def __init__(self, details: grpc.ClientCallDetails, metadata: list[tuple[str, str]]):
        self.method = details.method
        self.timeout = details.timeout
        self.metadata = metadata
        self.credentials = details.credentials
        self.wait_for_ready = getattr(details, "wait_for_ready", None)
        self.compression = getattr(details, "compression", None)


class BearerToken(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                  grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Adds `authorization: Bearer <token>` to the metadata of every call."""

    def __init__(self, token: str):
        self.header = ("authorization", f"Bearer {token}")

    def _details(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        return _Details(details, [*(details.metadata or []), self.header])

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation, details, requests):
        return continuation(self._details(details), requests)

    def intercept_stream_stream(self, continuation, details, requests):
        return continuation(self._details(details), requests)
