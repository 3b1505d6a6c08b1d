"""The WebSocket client's reply slot: one waiter, woken by the reply, a failure or expiry."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from intentus_trio import AgentResponse, StreamChunk
from intentus_trio.protocol.errors import ConnectionFailure, ProtocolError, TransportTimeout
from intentus_trio.transports.websocket.calls import ReplySlot


async def test_the_reply_wakes_the_waiter() -> None:
    slot = ReplySlot("t1", 5.0)
    reply = AgentResponse.success({"n": 1}, trace_id="t1")
    got: list[AgentResponse] = []
    async with trio.open_nursery() as nursery:
        async def waiter() -> None:
            got.append(await slot.wait())

        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        assert not slot.done and not got
        assert slot.deliver(reply)
    assert got == [reply] and slot.done and slot.error is None
    # A second reply for the same call changes nothing.
    assert slot.deliver(AgentResponse.success({"n": 2}))
    assert await slot.wait() == reply


async def test_a_failure_or_expiry_settles_the_call_with_its_error() -> None:
    slot = ReplySlot("t2", 1.5)
    async with trio.open_nursery() as nursery:
        results: list[AgentResponse] = []

        async def waiter() -> None:
            results.append(await slot.wait())

        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        slot.expire()
    assert results[0].error is not None
    assert results[0].error.details["transportCode"] == "TIMEOUT"
    assert results[0].metadata.get("traceId") == "t2"
    slot.fail(ConnectionFailure("late"))  # the first settlement stands
    assert isinstance(slot.error, TransportTimeout)

    chunked = ReplySlot(None)
    chunked.deliver(StreamChunk(0, {}))
    assert isinstance(chunked.error, ProtocolError)


async def test_a_cancelled_waiter_leaves_the_slot_usable(
    autojump_clock: trio.testing.MockClock,
) -> None:
    slot = ReplySlot(None)
    with trio.move_on_after(1) as scope:
        await slot.wait()
    assert scope.cancelled_caught
    reply = AgentResponse.success({})
    slot.deliver(reply)  # nobody waits now: kept for the next wait
    assert await slot.wait() == reply


async def test_a_slot_has_one_waiter() -> None:
    slot = ReplySlot(None)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(slot.wait)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(RuntimeError):
            await slot.wait()
        slot.deliver(AgentResponse.success({}))
