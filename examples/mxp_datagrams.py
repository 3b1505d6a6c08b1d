"""MXP secure datagrams: a server and a client in one trio program on 127.0.0.1.

    python examples/mxp_datagrams.py

The server proves its static X25519 key; the client must know it in advance (here it is
generated in-process; in a deployment it comes from ``intentus-trio keygen x25519``).
"""

from __future__ import annotations

import trio

from intentus_trio.mxp import (
    Configuration,
    ConnectionClosedError,
    ErrorCode,
    KeyPair,
    MxpConnection,
    ServerConfiguration,
    allow_keys,
    mxp_connect,
    serve_mxp,
)


async def shout(conn: MxpConnection) -> None:
    """Per-connection handler: echo each datagram in capitals until the client leaves."""
    print(f"server: client {conn.remote_static_key.hex()[:16]}… from {conn.remote_address}")
    async for data in conn:  # ends quietly when the client closes with NO_ERROR
        await conn.send_datagram(data.upper())
    reason = conn.close_reason
    assert reason is not None
    print(f"server: client left ({ErrorCode(reason.error_code).name}, by peer: {reason.by_peer})")


async def main() -> None:
    server_key = KeyPair.generate()
    client_key = KeyPair.generate()
    server_config = ServerConfiguration(
        Configuration(server_key, idle_timeout=10.0),
        client_policy=allow_keys([client_key.public]),  # only this client may connect
    )
    async with trio.open_nursery() as nursery:
        address = await nursery.start(serve_mxp, shout, ("127.0.0.1", 0), server_config)
        print(f"server: listening on {address[0]}:{address[1]}")

        client_config = Configuration(client_key, keepalive_interval=2.0)
        async with mxp_connect(address, server_key.public, client_config) as conn:
            print(f"client: connected, datagrams up to {conn.max_datagram_size} bytes")
            for word in (b"hello", b"secure", b"datagrams"):
                await conn.send_datagram(word)
                # datagrams are unreliable: a real application retries or tolerates loss
                with trio.move_on_after(1.0):
                    print("client: got", await conn.receive_datagram())
            conn.request_key_update()
            await conn.send_datagram(b"fresh keys")
            print("client: got", await conn.receive_datagram(timeout=1.0))

        # a client the server does not know is refused with a reason
        try:
            async with mxp_connect(address, server_key.public, connect_timeout=2.0):
                pass
        except ConnectionClosedError as exc:
            assert exc.error_code == ErrorCode.ACCESS_DENIED
            print(f"stranger: {exc}")
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main)
