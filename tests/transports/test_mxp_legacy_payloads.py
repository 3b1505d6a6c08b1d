"""Legacy MXP JSON shapes and the trace id mapping, without any network."""

from __future__ import annotations

import uuid

import orjson
import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from intentus_trio.protocol.enums import ErrorCode
from intentus_trio.protocol.errors import MalformedMessage, ValidationError
from intentus_trio.protocol.factory import new_intent
from intentus_trio.protocol.models import AgentResponse
from intentus_trio.routing.router import Router
from intentus_trio.transports.mxp_legacy import (
    LegacyServerStats,
    TraceIdMap,
    trace_text,
    wire_trace,
)
from intentus_trio.transports.mxp_legacy.payloads import (
    PayloadStyle,
    call_envelope,
    call_payload,
    error_response,
    json_object,
    reply_response,
    response_payload,
)
from intentus_trio.transports.mxp_legacy.server import _LegacyServer

from .test_mxp_legacy_helpers import SERVER, exchange, raw_decode, raw_encode, sim_pair

U64 = st.integers(min_value=0, max_value=(1 << 64) - 1)


def test_uuid_maps_like_the_reference_generate_id() -> None:
    # The reference takes the first 8 bytes of a UUID v4, little-endian.
    value = uuid.UUID("01020304-0506-0708-090a-0b0c0d0e0f10")
    assert wire_trace(str(value)) == 0x0807060504030201


@given(U64)
def test_unknown_wire_trace_round_trips(wire: int) -> None:
    assert wire_trace(trace_text(wire)) == wire
    assert TraceIdMap().from_wire(wire) == trace_text(wire)


@given(st.one_of(st.uuids().map(str), st.text(max_size=64)))
def test_remembered_trace_round_trips(trace: str) -> None:
    table = TraceIdMap()
    assert table.from_wire(table.to_wire(trace)) == trace


def test_trace_table_is_bounded() -> None:
    table = TraceIdMap(size=2)
    first = table.to_wire("a")
    table.to_wire("b")
    table.to_wire("c")
    assert len(table) == 2
    assert table.from_wire(first) == trace_text(first)  # forgotten, still reversible
    with pytest.raises(ValueError):
        TraceIdMap(size=0)


def test_call_shapes() -> None:
    full = new_intent("echo", {"a": 1}, trace_id="t-1")
    env, echo = call_envelope(orjson.loads(call_payload(full)), trace_id="header", source="s")
    assert env == full and echo is None

    env, echo = call_envelope({"intent": {"name": "x", "version": "2.0"}, "payload": {"b": 2},
                               "routing": {"targetAgent": "agent-7"}},
                              trace_id="header", source="peer")
    assert (env.intent.name, env.intent.version, env.payload) == ("x", "2.0", {"b": 2})
    assert env.metadata.trace_id == "header" and env.context.source_agent == "peer"
    assert env.routing.target_agent == "agent-7" and echo is None

    runtime = {"type": "debug", "error": "E0502", "request_id": "r-1"}
    env, echo = call_envelope(runtime, trace_id="h", source="peer")
    assert env.intent.name == "debug" and env.payload == runtime
    assert env.metadata.request_id == "r-1" and echo == "r-1"

    with pytest.raises(ValidationError):
        call_envelope({"nothing": 1}, trace_id="h", source="s")
    with pytest.raises(ValidationError):
        call_envelope({"intent": ""}, trace_id="h", source="s")
    with pytest.raises(ValidationError):
        call_envelope({"intent": "x", "context": []}, trace_id="h", source="s")


def test_flat_call_payload() -> None:
    env = new_intent("code_review", {"code": "x"})
    assert orjson.loads(call_payload(env, PayloadStyle.FLAT)) == {
        "type": "code_review", "code": "x", "request_id": env.metadata.request_id}


def test_reply_shapes() -> None:
    ours = AgentResponse.success({"k": 1}, agent="a", trace_id="t")
    assert reply_response(response_payload(ours, "r"), trace_id="other") == ours
    theirs = reply_response(b'{"agent": "Bot", "status": "complete"}', trace_id="t")
    assert theirs.ok and theirs.payload == {"agent": "Bot", "status": "complete"}
    assert theirs.metadata == {"agent": "Bot", "traceId": "t"}
    assert reply_response(b"[1]", trace_id="t").payload == {"value": [1]}
    bad = reply_response(b"not json", trace_id="t")
    assert bad.error is not None and bad.error.details["transportCode"] == "MALFORMED_MESSAGE"
    broken = reply_response(b'{"version": "1.0", "status": "error", "error": 3}', trace_id="t")
    assert broken.error is not None and broken.error.code is ErrorCode.PROTOCOL_ERROR


def test_error_shapes() -> None:
    ours = error_response(b'{"error": "slow down", "code": "RATE_LIMIT", "retryable": true}',
                          trace_id="t")
    assert ours.error is not None and ours.error.code is ErrorCode.RATE_LIMIT
    assert ours.error.retryable and ours.trace_id == "t"
    garbage = error_response(b"\x00", trace_id="t")
    assert garbage.error is not None and garbage.error.code is ErrorCode.PROTOCOL_ERROR
    with pytest.raises(MalformedMessage):
        json_object(b"1")


async def test_server_call_timeout_backstop(autojump_clock: trio.testing.MockClock) -> None:
    async with sim_pair(call_timeout=2.0, client_options={"timeout": 10.0}) as s:
        s.echo.gate = trio.Event()  # never set: the agent hangs
        response = await s.client.send_intent(new_intent("echo"))
        assert response.error is not None and response.error.code is ErrorCode.AGENT_TIMEOUT
        assert trio.current_time() == pytest.approx(2.0, abs=0.01)


async def test_reply_cache_is_bounded(autojump_clock: trio.testing.MockClock) -> None:
    async with sim_pair(reply_cache_size=2) as s:
        peer = s.net.bind(("10.0.0.3", 0))
        body = orjson.dumps({"intent": "echo"})
        for message_id in (1, 2, 3):
            await exchange(peer, raw_encode(0x10, body, message_id, 1))
        await exchange(peer, raw_encode(0x10, body, 3, 1))
        assert s.echo.calls == 3 and s.stats.duplicates == 1
        await exchange(peer, raw_encode(0x10, body, 1, 1), SERVER)  # forgotten: runs again
        assert s.echo.calls == 4


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["intent", "type", "payload", "metadata", "context", "eventType",
                         "request_id", "name", "version", "traceId", "routing", "x"]),
        inner, max_size=4),
    max_leaves=12,
)


class _Sink:
    local_address = ("10.0.0.1", 9000)

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send_nowait(self, data: bytes, address: tuple[str, int]) -> bool:
        self.sent.append(data)
        return True


@given(st.sampled_from([0x01, 0x02, 0x03, 0x10, 0x11, 0x12, 0x20, 0xF0, 0xF1]),
       st.integers(0, 15), st.one_of(JSON.map(orjson.dumps), st.binary(max_size=64)))
def test_server_never_raises_on_any_message(type_: int, flags: int, payload: bytes) -> None:
    send, _receive = trio.open_memory_channel[object](10)
    sink = _Sink()
    server = _LegacyServer(Router(), sink, stats=LegacyServerStats(),  # type: ignore[arg-type]
                           trace_ids=TraceIdMap(), reply_cache_size=8, call_timeout=1.0,
                           default_event_type="e", queue=send)  # type: ignore[arg-type]
    server.handle_datagram(raw_encode(type_, payload, 1, 2, flags), ("10.0.0.2", 1))
    for data in sink.sent:
        assert raw_decode(data).message_id == 1
