"""HTTP client with real EMCL: retried calls and repeated questions about sealed tasks.

A server refuses a sealed frame it has seen before, and a client opens the sealed reply to a
request only once; retries and task documents (which repeat the reply) must live with both.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from intentus_trio.emcl import EmclProtector, Keyring, Role
from intentus_trio.keys import generate_master_key
from intentus_trio.protocol.enums import ErrorCode
from intentus_trio.protocol.errors import AgentUnavailable, EMCLFailure, RemoteError
from intentus_trio.protocol.factory import new_intent
from intentus_trio.protocol.models import IntentEnvelope, JsonObject
from intentus_trio.routing.router import Router
from intentus_trio.transports.http import HttpTransport, RetryPolicy, open_client
from intentus_trio.transports.http import client as http_client

from ..transports.http_helpers import running_server

FAST = RetryPolicy(max_attempts=3, base_delay=0.01, jitter=0.0)


def group_protectors() -> tuple[EmclProtector, EmclProtector]:
    """A client and a server protector sharing one group key."""
    ring = Keyring()
    ring.add_group_key("g1", generate_master_key())
    return (EmclProtector(ring, "c1", role=Role.CLIENT),
            EmclProtector(ring, "server", role=Role.SERVER))


class Agents:
    """``flaky`` fails its first call with a retryable AgentUnavailable, then succeeds."""

    def __init__(self) -> None:
        self.flaky_calls = 0
        self.router = Router(name="emcl-http")
        self.router.register("flaky", "flaky", self.flaky)
        self.router.register("echo", "echo", self.echo)

    async def flaky(self, env: IntentEnvelope) -> JsonObject:
        self.flaky_calls += 1
        if self.flaky_calls == 1:
            raise AgentUnavailable("not yet")
        return {"calls": self.flaky_calls}

    async def echo(self, env: IntentEnvelope) -> JsonObject:
        return {"echo": env.payload}


@asynccontextmanager
async def sealed(**options: Any) -> AsyncIterator[tuple[HttpTransport, Agents]]:
    """A sealed client (``options``) of a server that requires EMCL."""
    client_protector, server = group_protectors()
    agents = Agents()
    async with (
        running_server(agents.router, protector=server, require_emcl=True) as (url, _),
        open_client(url, protector=client_protector, timeout=10.0, **options) as transport,
    ):
        yield transport, agents


# ---------------------------------------------------------------- retries


async def test_idempotent_retry_of_a_sealed_intent_runs_the_agent_again() -> None:
    async with sealed(retry=FAST, idempotent=True) as (transport, agents):
        response = await transport.send_intent(new_intent("flaky"))
    assert response.error is None, response.error
    assert response.payload == {"calls": 2}
    assert agents.flaky_calls == 2


async def test_idempotent_retry_of_a_sealed_batch_runs_it_again() -> None:
    async with sealed(retry=FAST, idempotent=True) as (transport, agents):
        replies = await transport.send_batch([new_intent("flaky"), new_intent("echo", {"i": 1})])
    assert [r.error for r in replies] == [None, None]
    assert [r.payload for r in replies] == [{"calls": 2}, {"echo": {"i": 1}}]
    assert agents.flaky_calls == 2


# ---------------------------------------------------------------- tasks


async def test_a_finished_sealed_task_can_be_asked_about_again() -> None:
    async with sealed() as (transport, _):
        info = await transport.submit_task(new_intent("echo", {"t": 1}))
        done = await transport.task_status(info.task_id, wait=5)
        assert done.state == "completed"
        assert done.response is not None and done.response.payload == {"echo": {"t": 1}}

        again = await transport.task_status(info.task_id)
        assert again.state == "completed" and again.response == done.response
        after_cancel = await transport.cancel_task(info.task_id)
        assert after_cancel.state == "completed" and after_cancel.response == done.response

        await transport.forget_task(info.task_id)
        with pytest.raises(RemoteError) as caught:
            await transport.task_status(info.task_id)
        assert caught.value.response.error is not None
        assert caught.value.response.error.code is ErrorCode.VALIDATION_ERROR


async def test_only_the_latest_sealed_task_responses_are_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(http_client, "_MAX_TASK_REPLIES", 1)
    async with sealed() as (transport, _):
        first = await transport.submit_task(new_intent("echo", {"t": 1}))
        await transport.task_status(first.task_id, wait=5)
        second = await transport.submit_task(new_intent("echo", {"t": 2}))
        await transport.task_status(second.task_id, wait=5)

        kept = await transport.task_status(second.task_id)
        assert kept.response is not None and kept.response.payload == {"echo": {"t": 2}}
        with pytest.raises(EMCLFailure) as caught:
            await transport.task_status(first.task_id)
        assert caught.value.details["reason"] == "unmatched_reply"

        # forgetting needs no response, so it works without the kept one
        await transport.forget_task(first.task_id)
        with pytest.raises(RemoteError):
            await transport.task_status(first.task_id)
