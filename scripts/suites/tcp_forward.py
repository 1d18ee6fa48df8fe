#!/usr/bin/env python3
"""A TCP forwarder: listens on LISTEN (host:port) and copies each connection both ways to TARGET.

20-grpcurl.sh gives the test producer a second address with it, as a second producer of the same
log would have (README: "Several producers, one log"), where socat may not be installed. Runs
until killed.
"""

from __future__ import annotations

import asyncio
import sys


async def copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def main(listen: str, target: str) -> None:
    listen_host, listen_port = listen.rsplit(":", 1)
    target_host, target_port = target.rsplit(":", 1)

    async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            target_reader, target_writer = await asyncio.open_connection(target_host, int(target_port))
        except OSError:
            writer.close()
            return
        await asyncio.gather(copy(reader, target_writer), copy(target_reader, writer))

    server = await asyncio.start_server(forward, listen_host, int(listen_port))
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(f"usage: {sys.argv[0]} LISTEN_HOST:PORT TARGET_HOST:PORT")
    asyncio.run(main(sys.argv[1], sys.argv[2]))
