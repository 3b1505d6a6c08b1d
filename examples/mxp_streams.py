"""MXP reliable streams: a server and a client in one trio program on 127.0.0.1.

    python examples/mxp_streams.py

Each stream is a ``trio.abc.HalfCloseableStream``: the client sends a request, finishes its
side with ``send_eof()``, and reads the answer until ``b""``. Many streams share one encrypted
connection; an urgent one (urgency 0) overtakes a bulk transfer (urgency 3, the default).
"""

from __future__ import annotations

import time

import trio

from intentus_trio.mxp import (
    Configuration,
    KeyPair,
    MxpConnection,
    MxpStream,
    ServerConfiguration,
    StreamResetError,
    allow_keys,
    mxp_connect,
    serve_mxp,
)


async def answer(stream: MxpStream) -> None:
    """Read the whole request, then answer with its size and first bytes in capitals."""
    request = bytearray()
    while chunk := await stream.receive_some():
        request += chunk
    if request == b"please reset":
        stream.reset(42)  # the client's read raises StreamResetError with code 42
        return
    await stream.send_all(b"%d bytes: %s" % (len(request), bytes(request[:20]).upper()))
    await stream.aclose()  # graceful: the answer is still delivered


async def handler(conn: MxpConnection) -> None:
    """One task per connection: one task per stream the client opens."""
    async with trio.open_nursery() as nursery:
        async for stream in conn.streams():  # ends when the client closes the connection
            nursery.start_soon(answer, stream)


async def call(conn: MxpConnection, request: bytes, urgency: int = 3) -> bytes:
    stream = await conn.open_stream(urgency=urgency)
    await stream.send_all(request)
    await stream.send_eof()
    reply = bytearray()
    while chunk := await stream.receive_some():
        reply += chunk
    await stream.aclose()
    return bytes(reply)


async def main() -> None:
    server_key, client_key = KeyPair.generate(), KeyPair.generate()
    config = ServerConfiguration(Configuration(server_key), allow_keys([client_key.public]))
    async with trio.open_nursery() as nursery:
        address = await nursery.start(serve_mxp, handler, ("127.0.0.1", 0), config)
        async with mxp_connect(address, server_key.public, static_key=client_key) as conn:
            print("client:", await call(conn, b"hello over a reliable stream"))

            # a bulk transfer and an urgent call at the same time, on one connection
            async def bulk() -> None:
                start = time.perf_counter()
                reply = await call(conn, bytes(8 << 20))
                print(f"client: bulk {reply!r} after {time.perf_counter() - start:.2f} s")

            async def urgent() -> None:
                await trio.sleep(0.05)
                start = time.perf_counter()
                reply = await call(conn, b"urgent", urgency=0)
                print(f"client: urgent {reply!r} after {time.perf_counter() - start:.3f} s")

            async with trio.open_nursery() as calls:
                calls.start_soon(bulk)
                calls.start_soon(urgent)

            try:
                await call(conn, b"please reset")
            except StreamResetError as exc:
                print(f"client: the server reset the stream (code {exc.error_code})")

            path = conn.path_stats()
            print(
                f"client: srtt {path.smoothed_rtt * 1e3:.2f} ms, cwnd {path.cwnd} bytes,"
                f" {path.packets_sent} packets sent, {path.packets_lost} lost"
            )
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main)
