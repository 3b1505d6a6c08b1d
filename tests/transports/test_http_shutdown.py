"""Graceful shutdown: in-flight requests finish within the grace period, later ones are
cancelled by its deadline, and nothing is left running."""

from __future__ import annotations

from functools import partial

import pytest
import trio

from intentus_trio.protocol.enums import TransportCode
from intentus_trio.protocol.factory import new_event, new_intent
from intentus_trio.protocol.models import IntentEnvelope, JsonObject
from intentus_trio.transports.http import RetryPolicy, open_client, serve

from .http_helpers import make_router, running_server


async def test_in_flight_requests_finish_or_are_cancelled_by_the_deadline() -> None:
    router = make_router()
    started = trio.Semaphore(0)
    finished: list[float] = []
    cancelled: list[float] = []

    async def work(env: IntentEnvelope) -> JsonObject:
        seconds = env.payload["seconds"]
        started.release()
        try:
            await trio.sleep(seconds)
        except trio.Cancelled:
            cancelled.append(seconds)
            raise
        finished.append(seconds)
        return {"done": seconds}

    router.register("work", "work", work)
    results: dict[float, object] = {}
    async with trio.open_nursery() as outer:
        server_scope = trio.CancelScope()

        async def run_server(task_status: trio.TaskStatus[str]) -> None:
            with server_scope:
                await serve(router, "http://127.0.0.1:0", graceful_timeout=0.5,
                            task_status=task_status)

        url = await outer.start(run_server)
        async with open_client(url, retry=RetryPolicy(max_attempts=1)) as client:

            async def call(seconds: float) -> None:
                results[seconds] = await client.send_intent(
                    new_intent("work", {"seconds": seconds}))

            async with trio.open_nursery() as calls:
                calls.start_soon(call, 0.2)
                calls.start_soon(call, 30.0)
                await started.acquire()
                await started.acquire()
                begun = trio.current_time()
                server_scope.cancel()  # shutdown begins with both requests in flight
            stopped_after = trio.current_time() - begun

            # New connections are refused once the listeners are closed.
            refused = await client.send_intent(new_intent("work", {"seconds": 0}))
    assert finished == [0.2] and cancelled == [30.0]
    short = results[0.2]
    assert getattr(short, "payload", None) == {"done": 0.2}
    long = results[30.0]
    assert long.error is not None  # type: ignore[attr-defined]
    assert long.error.details["transportCode"] in (  # type: ignore[attr-defined]
        TransportCode.CONNECTION_FAILURE, TransportCode.TIMEOUT)
    assert stopped_after < 3.0
    assert refused.error is not None
    assert refused.error.details["transportCode"] == TransportCode.CONNECTION_FAILURE


async def test_serve_reports_bind_errors_unwrapped() -> None:
    router = make_router()
    async with trio.open_nursery() as nursery:
        url = await nursery.start(partial(serve, router, "http://127.0.0.1:0"))
        try:
            await nursery.start(partial(serve, router, url))
        except OSError:
            pass
        else:
            raise AssertionError("binding a used port must fail")
        nursery.cancel_scope.cancel()


async def test_closing_the_client_inside_its_block_leaves_the_block_running() -> None:
    reached = []
    async with running_server() as (url, _):
        async with open_client(url) as client:
            assert (await client.send_intent(new_intent("echo", {"a": 1}))).ok
            async with trio.open_nursery() as mine:
                mine.start_soon(client.aclose)
                await client.aclose()  # twice, and concurrently: idempotent
                await trio.lowlevel.checkpoint()  # the caller's block goes on
            reached.append("after close")
            with pytest.raises(trio.ClosedResourceError, match="closed"):
                await client.send_intent(new_intent("echo"))
            with pytest.raises(trio.ClosedResourceError):
                async with client.subscribe("x"):
                    pass
        reached.append("after exit")
    assert reached == ["after close", "after exit"]


async def test_subscription_ends_when_the_client_closes() -> None:
    rest: list[object] | None = None
    async with running_server() as (url, _), open_client(url) as client, \
            client.subscribe("news") as events:
        await client.publish(new_event("news", {"n": 1}))
        with trio.fail_after(5):
            assert (await events.__anext__()).payload == {"n": 1}
        await client.aclose()
        with trio.fail_after(5):
            rest = [e async for e in events]
    assert rest == []
