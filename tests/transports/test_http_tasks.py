"""Long-running tasks: submit (202), poll and long-poll, cancel, forget, bounds, expiry."""

from __future__ import annotations

import httpx
import pytest
import trio

from intentus_trio.protocol.codec import dumps, intent_to_json
from intentus_trio.protocol.enums import ErrorCode, MessageType, TransportProtocol
from intentus_trio.protocol.errors import RemoteError
from intentus_trio.protocol.factory import new_intent
from intentus_trio.protocol.models import AgentResponse, TransportEnvelope
from intentus_trio.transports.http import RetryPolicy, TaskState, TaskStore, open_client

from .http_helpers import running_server

HEADERS = {"content-type": "application/json"}


async def test_submit_poll_and_result() -> None:
    async with running_server() as (url, _), httpx.AsyncClient(base_url=url) as raw:
        frame = {"protocol": "http", "messageType": "intent",
                 "body": intent_to_json(new_intent("sleep", {"seconds": 0.1}))}
        reply = await raw.post("/tasks", headers=HEADERS, content=dumps(frame))
        assert reply.status_code == 202
        info = reply.json()
        assert reply.headers["location"] == info["statusUrl"]
        assert info["state"] == "running" and info["reply"] is None
        status = await raw.get(info["statusUrl"], params={"wait": "5"})
        assert status.status_code == 200
        done = status.json()
        assert done["state"] == "succeeded"
        assert done["reply"]["body"]["payload"] == {"slept": 0.1}
        assert done["finishedAt"] is not None


async def test_client_helpers() -> None:
    async with running_server() as (url, server), open_client(url) as client:
        response = await client.run_task(new_intent("echo", {"long": True}), timeout=10)
        assert response.payload == {"long": True}

        failed = await client.run_task(new_intent("fail"))
        assert failed.error is not None and failed.error.code is ErrorCode.AGENT_ERROR

        info = await client.submit_task(new_intent("sleep", {"seconds": 30}))
        assert not info.finished
        assert (await client.task_status(info.task_id)).state == "running"
        cancelled = await client.cancel_task(info.task_id)
        assert cancelled.state == "cancelled"
        assert cancelled.response is not None and cancelled.response.error is not None
        assert cancelled.response.error.code is ErrorCode.WORKFLOW_ABORTED
        assert server.app.tasks.running == 0

        await client.forget_task(info.task_id)
        with pytest.raises(RemoteError) as caught:
            await client.task_status(info.task_id)
        assert caught.value.response.error is not None
        assert caught.value.response.error.code is ErrorCode.VALIDATION_ERROR


async def test_long_poll_returns_when_wait_elapses() -> None:
    async with running_server() as (url, _), open_client(url) as client:
        info = await client.submit_task(new_intent("sleep", {"seconds": 30}))
        with trio.fail_after(5):
            still = await client.task_status(info.task_id, wait=0.2)
        assert still.state == "running"
        await client.cancel_task(info.task_id)


async def test_full_store_answers_429_with_retry_after() -> None:
    async with running_server(max_tasks=2) as (url, _), \
            open_client(url, retry=RetryPolicy(max_attempts=1)) as client, \
            httpx.AsyncClient(base_url=url) as raw:
        first = await client.submit_task(new_intent("sleep", {"seconds": 30}))
        await client.submit_task(new_intent("sleep", {"seconds": 30}))
        frame = {"protocol": "http", "messageType": "intent",
                 "body": intent_to_json(new_intent("echo"))}
        reply = await raw.post("/tasks", headers=HEADERS, content=dumps(frame))
        assert reply.status_code == 429
        assert reply.headers["retry-after"] == "1"
        assert reply.json()["body"]["error"]["code"] == "RATE_LIMIT"
        assert reply.json()["body"]["error"]["retryable"] is True
        # A finished task's slot is reused.
        await client.cancel_task(first.task_id)
        assert (await client.submit_task(new_intent("echo"))).task_id


async def test_tasks_are_cancelled_when_the_server_stops() -> None:
    async with running_server() as (url, server), open_client(url) as client:
        info = await client.submit_task(new_intent("sleep", {"seconds": 60}))
        record = server.app.tasks.get(info.task_id)
    assert record is not None and record.state is TaskState.CANCELLED


def _reply(ok: bool) -> TransportEnvelope:
    body = AgentResponse.success({}) if ok else AgentResponse.failure(
        RemoteError(AgentResponse.success({})).to_error_info())
    return TransportEnvelope(TransportProtocol.HTTP, MessageType.RESPONSE, body)


async def test_store_expiry_and_bounds_follow_trio_clock(autojump_clock: trio.abc.Clock) -> None:
    store = TaskStore(max_tasks=2, result_ttl=10.0)

    async def quick() -> tuple[TransportEnvelope, TaskState]:
        await trio.sleep(1)
        return _reply(True), TaskState.SUCCEEDED

    async def forever() -> tuple[TransportEnvelope, TaskState]:
        await trio.sleep_forever()
        raise AssertionError

    async with trio.open_nursery() as nursery:
        a = store.start(nursery, quick, lambda: _reply(False))
        b = store.start(nursery, forever, lambda: _reply(False))
        from intentus_trio.transports.http.tasks import StoreFull

        with pytest.raises(StoreFull):
            store.start(nursery, quick, lambda: _reply(False))
        await a.done.wait()
        assert a.state is TaskState.SUCCEEDED
        assert store.get(a.task_id) is a
        await trio.sleep(9.5)
        assert store.get(a.task_id) is a
        await trio.sleep(1)
        assert store.get(a.task_id) is None  # expired after result_ttl
        c = store.start(nursery, quick, lambda: _reply(False))
        # The store is full of a running task and c; a finished c is evicted for d.
        await c.done.wait()
        d = store.start(nursery, forever, lambda: _reply(False))
        assert store.get(c.task_id) is None
        assert len(store) == 2
        store.cancel(b.task_id)
        store.discard(d.task_id)
        await b.done.wait()
        assert b.state is TaskState.CANCELLED
        assert store.get(d.task_id) is None
