"""Router paths: resolution, strategies, deadlines, failures, tracing and streams."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import pytest
import trio

from intentus_trio import (
    AgentError,
    AgentResponse,
    ErrorCode,
    IntentEnvelope,
    Router,
    RoutingStrategy,
    StreamChunk,
    current_trace_id,
    new_intent,
)


def make_router() -> Router:
    router = Router()

    @router.agent("echo", "echo")
    async def echo(env: IntentEnvelope) -> dict[str, Any]:
        return {"echo": env.payload}

    return router


async def test_exact_name_routes_to_agent() -> None:
    response = await make_router().route_intent(new_intent("echo", {"a": 1}))
    assert response.ok
    assert response.payload == {"echo": {"a": 1}}
    assert response.metadata["agent"] == "echo"


async def test_unknown_intent_is_capability_not_found() -> None:
    response = await make_router().route_intent(new_intent("nope"))
    assert response.error is not None
    assert response.error.code is ErrorCode.CAPABILITY_NOT_FOUND
    assert response.error.details == {"intent": "nope", "version": "1.0"}
    assert not response.error.retryable


async def test_wildcards_and_specificity() -> None:
    router = Router()

    async def named(env: IntentEnvelope) -> dict[str, Any]:
        return {}

    router.register("any", "*", named)
    router.register("math", "math.*", named)
    router.register("add", "math.add", named)
    router.register("v2", "math.mul", named, version="2.*")
    assert (await router.route_intent(new_intent("math.add"))).metadata["agent"] == "add"
    assert (await router.route_intent(new_intent("math.sub"))).metadata["agent"] == "math"
    assert (await router.route_intent(new_intent("text"))).metadata["agent"] == "any"
    assert (await router.route_intent(new_intent("math.mul"))).metadata["agent"] == "math"
    assert (await router.route_intent(new_intent("math.mul", version="2.1"))).metadata[
        "agent"
    ] == "v2"
    router.unregister("add")
    assert (await router.route_intent(new_intent("math.add"))).metadata["agent"] == "math"


async def test_target_agent_is_honoured() -> None:
    router = Router()
    for name in ("a", "b"):

        async def handler(env: IntentEnvelope, name: str = name) -> dict[str, Any]:
            return {"by": name}

        router.register(name, "job", handler)
    assert (await router.route_intent(new_intent("job"))).payload == {"by": "a"}
    assert (await router.route_intent(new_intent("job", target_agent="b"))).payload == {"by": "b"}
    missing = await router.route_intent(new_intent("job", target_agent="zz"))
    assert missing.error is not None and missing.error.code is ErrorCode.ROUTING_ERROR
    router.register("other", "else", handler)
    wrong = await router.route_intent(new_intent("job", target_agent="other"))
    assert wrong.error is not None and wrong.error.code is ErrorCode.CAPABILITY_NOT_FOUND


async def test_fallback_chain_tries_agents_in_order() -> None:
    router = Router()
    calls: list[str] = []

    async def broken(env: IntentEnvelope) -> dict[str, Any]:
        calls.append("primary")
        raise AgentError("down", code=ErrorCode.AGENT_UNAVAILABLE, retryable=True)

    async def also_broken(env: IntentEnvelope) -> dict[str, Any]:
        calls.append("second")
        raise RuntimeError("boom")

    async def works(env: IntentEnvelope) -> dict[str, Any]:
        calls.append("third")
        return {"ok": True}

    router.register("primary", "job", broken)
    router.register("second", "job", also_broken)
    router.register("third", "job", works)
    response = await router.route_intent(
        new_intent("job", target_agent="primary", fallback_agents=["second", "third"])
    )
    assert response.ok and response.payload == {"ok": True}
    assert calls == ["primary", "second", "third"]
    assert response.metadata["decisionPath"] == ["primary", "second", "third"]
    assert response.metadata["retries"] == 2

    calls.clear()
    response = await router.route_intent(new_intent("job", strategy=RoutingStrategy.FALLBACK))
    assert calls == ["primary", "second", "third"] and response.ok

    calls.clear()
    response = await router.route_intent(new_intent("job", fallback_agents=["second"]))
    assert calls == ["primary", "second"]
    assert response.error is not None
    assert response.error.code is ErrorCode.INTERNAL_AGENT_ERROR


async def test_broadcast_and_parallel(autojump_clock: trio.testing.MockClock) -> None:
    router = Router()

    async def fast(env: IntentEnvelope) -> dict[str, Any]:
        await trio.sleep(1)
        return {"who": "fast"}

    slow_finished = []

    async def slow(env: IntentEnvelope) -> dict[str, Any]:
        await trio.sleep(10)
        slow_finished.append(True)
        return {"who": "slow"}

    async def failing(env: IntentEnvelope) -> dict[str, Any]:
        raise AgentError("nope")

    router.register("fast", "job", fast)
    router.register("slow", "job", slow)
    router.register("failing", "job", failing)

    start = trio.current_time()
    response = await router.route_intent(new_intent("job", strategy=RoutingStrategy.PARALLEL))
    assert response.payload == {"who": "fast"}
    assert trio.current_time() - start == pytest.approx(1)
    assert not slow_finished

    response = await router.route_intent(new_intent("job", strategy=RoutingStrategy.BROADCAST))
    assert response.ok
    assert response.payload is not None
    replies = response.payload["responses"]
    assert set(replies) == {"fast", "slow", "failing"}
    assert replies["failing"]["error"]["code"] == "AGENT_ERROR"
    assert replies["slow"]["payload"] == {"who": "slow"}


async def test_agent_deadline_maps_to_agent_timeout(autojump_clock: trio.testing.MockClock) -> None:
    router = Router()

    async def stuck(env: IntentEnvelope) -> dict[str, Any]:
        await trio.sleep_forever()
        raise AssertionError

    router.register("stuck", "stuck", stuck, timeout=2.5)
    start = trio.current_time()
    response = await router.route_intent(new_intent("stuck"))
    assert trio.current_time() - start == pytest.approx(2.5)
    assert response.error is not None
    assert response.error.code is ErrorCode.AGENT_TIMEOUT
    assert response.error.retryable


async def test_router_default_timeout_applies(autojump_clock: trio.testing.MockClock) -> None:
    router = Router(default_timeout=1.0)

    async def stuck(env: IntentEnvelope) -> None:
        await trio.sleep(5)

    router.register("stuck", "stuck", stuck)
    response = await router.route_intent(new_intent("stuck"))
    assert response.error is not None and response.error.code is ErrorCode.AGENT_TIMEOUT


async def test_crash_is_reported_without_quoting_the_exception(
    caplog: pytest.LogCaptureFixture,
) -> None:
    router = Router()

    async def crash(env: IntentEnvelope) -> dict[str, Any]:
        raise ValueError("secret-token-123")

    router.register("crash", "crash", crash)
    with caplog.at_level(logging.WARNING):
        response = await router.route_intent(new_intent("crash"))
    assert response.error is not None
    assert response.error.code is ErrorCode.INTERNAL_AGENT_ERROR
    assert "secret-token-123" not in response.error.message
    assert response.error.details == {"agent": "crash", "exception": "ValueError"}
    assert any(r.name == "intentus_trio.router" for r in caplog.records)


async def test_bad_return_type_is_an_error() -> None:
    router = Router()

    async def bad(env: IntentEnvelope) -> Any:
        return [1, 2]

    router.register("bad", "bad", bad)
    response = await router.route_intent(new_intent("bad"))
    assert response.error is not None
    assert response.error.code is ErrorCode.INTERNAL_AGENT_ERROR


async def test_agent_response_passes_through_with_trace() -> None:
    router = Router()

    async def custom(env: IntentEnvelope) -> AgentResponse:
        return AgentResponse.success({"v": 1}, metadata={"extra": True})

    router.register("custom", "custom", custom)
    env = new_intent("custom")
    response = await router.route_intent(env)
    assert response.metadata == {"agent": "custom", "traceId": env.metadata.trace_id, "extra": True}


async def test_trace_id_flows_into_nested_intents_and_response() -> None:
    router = make_router()
    seen: list[str | None] = []

    @router.agent("outer", "outer")
    async def outer(env: IntentEnvelope) -> dict[str, Any]:
        seen.append(current_trace_id())
        inner = new_intent("echo", {"from": "outer"})
        reply = await router.route_intent(inner)
        return {"innerTrace": inner.metadata.trace_id, "reply": reply.trace_id}

    env = new_intent("outer")
    response = await router.route_intent(env)
    trace = env.metadata.trace_id
    assert seen == [trace]
    assert response.payload == {"innerTrace": trace, "reply": trace}
    assert response.trace_id == trace
    assert current_trace_id() is None


async def test_registration_rules() -> None:
    router = make_router()
    with pytest.raises(ValueError, match="already registered"):
        router.register("echo", "x", make_router().registry.agents()[0].handler)

    def not_async(env: IntentEnvelope) -> None:
        return None

    with pytest.raises(TypeError):
        router.register("sync", "x", not_async)
    with pytest.raises(ValueError):
        router.register("none", [], make_router().registry.agents()[0].handler)
    changes: list[int] = []
    stop = router.registry.on_change(lambda: changes.append(1))
    router.unregister("echo")
    stop()
    with pytest.raises(KeyError):
        router.unregister("echo")
    assert changes == [1]


# --------------------------------------------------------------------------- streams


async def counting(env: IntentEnvelope) -> AsyncIterator[dict[str, Any]]:
    for i in range(env.payload["n"]):
        yield {"i": i}


async def test_stream_yields_chunks_then_one_response() -> None:
    router = Router()
    router.register("count", "count", counting)
    items = [item async for item in router.route_stream(new_intent("count", {"n": 3}))]
    assert items[:3] == [
        StreamChunk(0, {"i": 0}),
        StreamChunk(1, {"i": 1}),
        StreamChunk(2, {"i": 2}),
    ]
    assert isinstance(items[3], AgentResponse) and items[3].payload == {"chunks": 3}
    assert len(items) == 4


async def test_stream_agent_called_for_one_response_collects_chunks() -> None:
    router = Router()
    router.register("count", "count", counting)
    response = await router.route_intent(new_intent("count", {"n": 2}))
    assert response.payload == {"chunks": [{"i": 0}, {"i": 1}]}


async def test_a_streaming_agent_with_call_answers_plain_calls_in_one_go() -> None:
    router = Router()
    plain_calls: list[int] = []

    async def once(env: IntentEnvelope) -> dict[str, Any]:
        plain_calls.append(env.payload["n"])
        return {"total": env.payload["n"]}

    registration = router.register("count", "count", counting, call=once)
    assert registration.streaming and registration.call is once
    response = await router.route_intent(new_intent("count", {"n": 3}))
    assert response.payload == {"total": 3} and plain_calls == [3]
    items = [item async for item in router.route_stream(new_intent("count", {"n": 2}))]
    assert items[:2] == [StreamChunk(0, {"i": 0}), StreamChunk(1, {"i": 1})]
    assert plain_calls == [3]  # the stream ran the generator, not call
    with pytest.raises(TypeError):
        router.register("plain", "plain", once, call=once)  # call= needs a streaming handler
    with pytest.raises(TypeError):
        router.register("gen", "gen", counting, call=counting)  # call= is an async function


async def test_stream_failure_and_explicit_final_response() -> None:
    router = Router()

    async def fails_midway(env: IntentEnvelope) -> AsyncIterator[dict[str, Any]]:
        yield {"i": 0}
        raise AgentError("halfway", details={"at": 1})

    async def with_summary(env: IntentEnvelope) -> AsyncIterator[Any]:
        yield {"i": 0}
        yield AgentResponse.success({"total": 1})

    router.register("fails", "fails", fails_midway)
    router.register("summary", "summary", with_summary)
    items = [item async for item in router.route_stream(new_intent("fails"))]
    assert isinstance(items[0], StreamChunk)
    assert isinstance(items[1], AgentResponse) and items[1].error is not None
    assert items[1].error.details == {"at": 1}
    items = [item async for item in router.route_stream(new_intent("summary"))]
    assert isinstance(items[-1], AgentResponse) and items[-1].payload == {"total": 1}
    assert len(items) == 2


async def test_non_streaming_agent_streams_one_response() -> None:
    items = [item async for item in make_router().route_stream(new_intent("echo", {"x": 1}))]
    assert len(items) == 1 and isinstance(items[0], AgentResponse) and items[0].ok


async def test_stream_deadline(autojump_clock: trio.testing.MockClock) -> None:
    router = Router()

    async def slow(env: IntentEnvelope) -> AsyncIterator[dict[str, Any]]:
        for i in range(10):
            await trio.sleep(1)
            yield {"i": i}

    router.register("slow", "slow", slow, timeout=3.5)
    items = [item async for item in router.route_stream(new_intent("slow"))]
    assert [type(i).__name__ for i in items] == ["StreamChunk"] * 3 + ["AgentResponse"]
    final = items[-1]
    assert isinstance(final, AgentResponse) and final.error is not None
    assert final.error.code is ErrorCode.AGENT_TIMEOUT


async def test_closing_a_stream_early_closes_the_agent() -> None:
    router = Router()
    closed = trio.Event()

    async def endless(env: IntentEnvelope) -> AsyncIterator[dict[str, Any]]:
        try:
            i = 0
            while True:
                yield {"i": i}
                i += 1
        finally:
            closed.set()

    router.register("endless", "endless", endless)
    async with aclosing(router.route_stream(new_intent("endless"))) as items:
        async for item in items:
            assert isinstance(item, StreamChunk)
            if item.seq == 5:
                break
    assert closed.is_set()
