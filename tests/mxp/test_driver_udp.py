"""The MXP trio driver over real UDP sockets on 127.0.0.1, through the impairment relay."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from intentus_trio.mxp.client import mxp_connect
from intentus_trio.mxp.driver import HandshakeError
from intentus_trio.mxp.events import ErrorCode
from intentus_trio.mxp.listener import mxp_listen, serve_mxp
from intentus_trio.mxp.noise import KeyPair
from intentus_trio.mxp.packet import is_long_header
from intentus_trio.mxp.stats import Drop
from intentus_trio.testing.netsim import LinkConditions
from intentus_trio.testing.relay import UdpRelay, open_udp_relay

from .driver_helpers import (
    SERVER_KEY,
    all_tasks,
    client_config,
    echo,
    echo_with_retry,
    server_config,
)

LOCAL = ("127.0.0.1", 0)


async def test_handshake_and_echo_through_an_impairing_relay() -> None:
    before = all_tasks()
    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_mxp, echo, LOCAL, server_config())
        async with open_udp_relay(
            server, loss=0.1, duplicate=0.1, reorder=0.2, reorder_delay=0.005, seed=11
        ) as relay:
            with trio.fail_after(20):
                async with mxp_connect(relay.address, SERVER_KEY.public, client_config()) as conn:
                    for i in range(40):
                        payload = f"over udp {i}".encode()
                        assert await echo_with_retry(conn, payload, wait=0.1) == payload
            stats = relay.stats
            assert stats.to_target.lost + stats.to_client.lost > 0
            assert stats.to_target.duplicated + stats.to_client.duplicated > 0
            assert stats.to_target.reordered + stats.to_client.reordered > 0
        nursery.cancel_scope.cancel()
    assert all_tasks() == before


async def test_wrong_server_key_fails_with_a_clear_reason() -> None:
    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_mxp, echo, LOCAL, server_config())
        with trio.fail_after(10), pytest.raises(HandshakeError) as info:
            async with mxp_connect(
                server, KeyPair.generate().public, client_config(), connect_timeout=1.0
            ):
                pass  # pragma: no cover
        assert "does not hold the expected static key" in str(info.value)
        assert info.value.error_code == ErrorCode.HANDSHAKE_TIMEOUT
        nursery.cancel_scope.cancel()


class CapturingRelay(UdpRelay):
    """Records every datagram it forwards to the target, and can send them again from the
    same upstream socket (so the server sees them from the client's apparent address)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.captured: list[tuple[Any, bytes]] = []

    def _send_to_target(self, session: Any, data: bytes) -> None:
        self.captured.append((session, data))
        super()._send_to_target(session, data)

    def replay(self, items: list[tuple[Any, bytes]]) -> None:
        for session, data in items:
            super()._send_to_target(session, data)


async def test_replayed_packets_captured_at_the_relay_are_dropped() -> None:
    async with (
        trio.open_nursery() as nursery,
        mxp_listen(LOCAL, server_config()) as listener,
    ):
        relay = CapturingRelay(listener.local_address, conditions=LinkConditions())
        relay_address = await nursery.start(relay.serve)
        with trio.fail_after(10):
            async with mxp_connect(relay_address, SERVER_KEY.public, client_config()) as conn:
                server_side = await listener.accept()
                for i in range(20):
                    await conn.send_datagram(f"once {i}".encode())
                    assert await server_side.receive_datagram() == f"once {i}".encode()
                await trio.sleep(0.1)  # let ACKs settle
                captured = list(relay.captured)
                short = [item for item in captured if not is_long_header(item[1])]
                initials = [item for item in captured if is_long_header(item[1])]
                assert len(short) >= 20 and initials
                drops_before = listener.stats.drops[Drop.REPLAY]
                relay.replay(captured)
                await relay.wait_until(lambda s: s.to_target.delivered >= 2 * len(captured))
                # the server keeps working, and saw each replayed 1-RTT packet as a replay
                await conn.send_datagram(b"fresh")
                assert await server_side.receive_datagram() == b"fresh"
                assert listener.stats.drops[Drop.REPLAY] - drops_before == len(short)
                assert server_side.driver_stats.received_dropped == 0
                assert len(listener.connections) == 1  # the replayed INITIAL made nothing new
                # nothing replayed reached the application
                with trio.move_on_after(0.2):
                    extra = await server_side.receive_datagram()
                    raise AssertionError(f"a replayed datagram was delivered: {extra!r}")
        nursery.cancel_scope.cancel()
