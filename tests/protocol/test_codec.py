"""The frame codec: round trips, schemas, reference-client shapes and bad input."""

from __future__ import annotations

import contextlib
from typing import Any

import attrs
import jsonschema
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from referencing import Registry, Resource

from intentus_trio import (
    AgentResponse,
    ErrorCode,
    FrameCodec,
    IntentEnvelope,
    IntentusError,
    MalformedMessage,
    MessageType,
    PayloadTooLarge,
    Priority,
    RoutingStrategy,
    TransportEnvelope,
    TransportProtocol,
    UnsupportedMessageType,
    ValidationError,
    new_intent,
)
from intentus_trio.protocol import codec
from intentus_trio.protocol.schemas import SCHEMA_NAMES, load_schema

from ..strategies import events, frames, intents, responses

CODEC = FrameCodec()


def _validator(name: str) -> jsonschema.Draft202012Validator:
    registry: Registry[Any] = Registry().with_resources(
        (load_schema(n)["$id"], Resource.from_contents(load_schema(n))) for n in SCHEMA_NAMES
    )
    return jsonschema.Draft202012Validator(load_schema(name), registry=registry)


FRAME_SCHEMA = _validator("transport-envelope")


def reference_intent_json() -> dict[str, Any]:
    """An IntentEnvelope exactly as the IntentusNet reference client serialises one."""
    return {
        "version": "1.0",
        "intent": {"name": "summarize", "version": "1.0"},
        "payload": {"text": "hello"},
        "context": {
            "sourceAgent": "cli",
            "timestamp": "2026-01-01T00:00:00+00:00",
            "priority": "high",
            "tags": ["a"],
        },
        "metadata": {
            "requestId": "6d2b1f4e-7e1a-4c53-9f0a-0b6c8d1f2e3a",
            "source": "cli",
            "createdAt": "2026-01-01T00:00:00+00:00",
            "traceId": "0f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a",
            "identityChain": [],
        },
        "routing": {"strategy": "fallback", "targetAgent": "agent-b", "fallbackAgents": ["c"]},
        "routingMetadata": {"decisionPath": [], "retries": 0},
    }


# --------------------------------------------------------------------------- round trips


@settings(max_examples=300)
@given(frames())
def test_frame_round_trip_is_identity(frame: TransportEnvelope) -> None:
    data = CODEC.encode(frame)
    decoded = CODEC.decode(data)
    assert decoded == frame
    assert CODEC.encode(decoded) == data


@settings(max_examples=200)
@given(frames())
def test_encoded_frames_satisfy_the_shipped_schema(frame: TransportEnvelope) -> None:
    FRAME_SCHEMA.validate(orjson.loads(CODEC.encode(frame)))


@given(intents)
def test_intent_schema(env: IntentEnvelope) -> None:
    _validator("intent-envelope").validate(orjson.loads(orjson.dumps(codec.intent_to_json(env))))


@given(responses)
def test_response_schema(resp: AgentResponse) -> None:
    _validator("agent-response").validate(orjson.loads(orjson.dumps(codec.response_to_json(resp))))


@given(events)
def test_event_round_trip(event: Any) -> None:
    assert codec.event_from_json(codec.event_to_json(event)) == event


def test_keys_are_camel_case_and_enums_are_strings() -> None:
    env = new_intent("x", {"k": 1}, priority=Priority.HIGH, strategy=RoutingStrategy.BROADCAST)
    obj = codec.intent_to_json(env)
    assert obj["context"]["priority"] == "high"
    assert obj["routing"]["strategy"] == "broadcast"
    assert set(obj["metadata"]) == {"requestId", "source", "createdAt", "traceId", "identityChain"}
    assert set(obj) == {
        "version",
        "intent",
        "payload",
        "context",
        "metadata",
        "routing",
        "routingMetadata",
    }


def test_schema_rejects_what_the_codec_rejects() -> None:
    bad = {"protocol": "http", "messageType": "intent", "headers": {}, "body": {"version": 1}}
    with pytest.raises(jsonschema.ValidationError):
        FRAME_SCHEMA.validate(bad)
    with pytest.raises(ValidationError):
        CODEC.decode(orjson.dumps(bad))


# --------------------------------------------------------------------------- liberal decoding


def test_reference_http_frame_without_headers_or_negotiation() -> None:
    raw = {"protocol": "INTENTUSNET/1.0", "messageType": "intent", "body": reference_intent_json()}
    frame = CODEC.decode(orjson.dumps(raw))
    assert frame.protocol is TransportProtocol.INTENTUSNET_1_0
    assert frame.protocol_negotiation is None
    assert frame.headers == {}
    assert isinstance(frame.body, IntentEnvelope)
    assert frame.body.routing.target_agent == "agent-b"
    assert frame.body.routing.strategy is RoutingStrategy.FALLBACK
    assert frame.body.context.priority is Priority.HIGH
    FRAME_SCHEMA.validate(raw)


def test_reference_websocket_emcl_frame() -> None:
    raw = {
        "protocol": "INTENTUSNET/1.0",
        "messageType": "emcl",
        "headers": {},
        "body": {
            "emclVersion": "1.0",
            "ciphertext": "AAAA",
            "nonce": "bm9uY2U",
            "hmac": "aG1hYw",
            "identityChain": [],
        },
    }
    frame = CODEC.decode(orjson.dumps(raw))
    assert frame.message_type is MessageType.EMCL
    FRAME_SCHEMA.validate(raw)


def test_minimal_intent_gets_defaults() -> None:
    body = reference_intent_json()
    del body["routing"], body["routingMetadata"], body["context"]["tags"]
    del body["context"]["priority"], body["metadata"]["identityChain"]
    env = codec.intent_from_json(body)
    assert env.context.priority is Priority.NORMAL
    assert env.routing.strategy is RoutingStrategy.DIRECT
    assert env.routing.fallback_agents == ()


def test_reference_response_shape_decodes() -> None:
    raw = {
        "version": "1.0",
        "status": "error",
        "payload": None,
        "metadata": {"agent": "a", "traceId": "t"},
        "error": {"code": "AGENT_TIMEOUT", "message": "slow", "retryable": True, "details": {}},
    }
    resp = codec.response_from_json(raw)
    assert resp.error is not None and resp.error.code is ErrorCode.AGENT_TIMEOUT
    assert resp.trace_id == "t"
    assert codec.response_to_json(resp) == raw


# --------------------------------------------------------------------------- strict decoding


def _frame(body: Any, **extra: Any) -> bytes:
    return orjson.dumps({"protocol": "http", "messageType": "intent", "body": body, **extra})


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda b: b.pop("intent"), "body.intent"),
        (lambda b: b["intent"].update(name=5), "body.intent.name"),
        (lambda b: b["context"].update(priority="urgent"), "body.context.priority"),
        (lambda b: b["context"].update(tags="a"), "body.context.tags"),
        (lambda b: b["metadata"].pop("traceId"), "body.metadata.traceId"),
        (lambda b: b["routing"].update(strategy=1), "body.routing.strategy"),
        (lambda b: b["routingMetadata"].update(retries=-1), "body.routingMetadata.retries"),
        (lambda b: b["routingMetadata"].update(retries=True), "body.routingMetadata.retries"),
        (lambda b: b.update(payload=[1]), "body.payload"),
        (lambda b: b["intent"].update(name="x" * 257), "body.intent.name"),
        (lambda b: b["context"].update(tags=["t"] * 257), "body.context.tags"),
    ],
)
def test_wrong_fields_are_validation_errors(mutate: Any, field: str) -> None:
    body = reference_intent_json()
    mutate(body)
    with pytest.raises(ValidationError) as info:
        CODEC.decode(_frame(body))
    assert info.value.path == field
    assert info.value.to_error_info().code is ErrorCode.VALIDATION_ERROR


def test_malformed_json_and_non_objects() -> None:
    for data in (b"{", b"\xff\xfe", b"[1,2]", b'"frame"', b""):
        with pytest.raises((MalformedMessage, ValidationError)):
            CODEC.decode(data)
    with pytest.raises(MalformedMessage) as info:
        CODEC.decode(b'{"protocol": "http", ')
    assert info.value.to_error_info().details["transportCode"] == "MALFORMED_MESSAGE"


def test_unknown_message_type() -> None:
    with pytest.raises(UnsupportedMessageType) as info:
        CODEC.decode(orjson.dumps({"protocol": "http", "messageType": "error", "body": {}}))
    error = info.value.to_error_info()
    assert error.code is ErrorCode.PROTOCOL_ERROR
    assert error.details["transportCode"] == "UNSUPPORTED_MESSAGE_TYPE"


def test_headers_must_be_strings() -> None:
    with pytest.raises(ValidationError):
        CODEC.decode(_frame(reference_intent_json(), headers={"traceId": 1}))


def test_oversize_is_refused_before_parsing() -> None:
    small = FrameCodec(max_frame_bytes=100)
    data = _frame(reference_intent_json())
    with pytest.raises(PayloadTooLarge) as info:
        small.decode(data)
    assert info.value.details == {"size": len(data), "limit": 100}
    assert info.value.to_error_info().details["transportCode"] == "PAYLOAD_TOO_LARGE"
    with pytest.raises(PayloadTooLarge):
        small.decode("é" * 60)  # 120 bytes of UTF-8 in 60 characters
    with pytest.raises(PayloadTooLarge):
        small.encode(
            TransportEnvelope(
                TransportProtocol.HTTP, MessageType.INTENT, new_intent("x", {"pad": "y" * 200})
            )
        )


def test_error_messages_never_quote_the_input() -> None:
    secret = "s3cr3t-value"
    for data in (
        b'{"secret": "' + secret.encode() + b'"',
        _frame({"secret": secret}),
        orjson.dumps({"protocol": secret, "messageType": "intent", "body": {}}),
    ):
        with pytest.raises(IntentusError) as info:
            CODEC.decode(data)
        assert secret not in str(info.value)
        assert secret not in orjson.dumps(codec.error_to_json(info.value.to_error_info())).decode()


# --------------------------------------------------------------------------- fuzzing


@settings(max_examples=500)
@given(st.binary(max_size=300))
def test_random_bytes_only_raise_intentus_errors(data: bytes) -> None:
    with contextlib.suppress(IntentusError):
        CODEC.decode(data)


@settings(max_examples=500)
@given(frames(), st.data())
def test_mutated_frames_only_raise_intentus_errors(frame: TransportEnvelope, data: Any) -> None:
    raw = bytearray(CODEC.encode(frame))
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(raw) - 1))
        raw[pos] = data.draw(st.integers(0, 255))
    with contextlib.suppress(IntentusError):
        CODEC.decode(bytes(raw))


@settings(max_examples=300)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=5),
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.dictionaries(
                st.sampled_from(
                    [
                        "protocol",
                        "messageType",
                        "headers",
                        "body",
                        "intent",
                        "name",
                        "context",
                        "metadata",
                        "payload",
                        "version",
                        "status",
                        "error",
                    ]
                ),
                inner,
                max_size=6,
            )
        ),
        max_leaves=20,
    )
)
def test_structured_garbage_only_raises_intentus_errors(obj: Any) -> None:
    with contextlib.suppress(IntentusError):
        codec.frame_from_json(obj)


@attrs.frozen
class _Record:
    name: str
    count: int = 0
    tags: tuple[str, ...] = ()


@given(st.text(), st.integers(), st.lists(st.text()).map(tuple))
def test_fast_constructor_matches_the_attrs_init(name: str, count: int, tags: tuple[str, ...]
                                                 ) -> None:
    from intentus_trio.protocol._fastnew import fast_constructor

    built = fast_constructor(_Record)(name, count, tags)
    expected = _Record(name, count, tags)
    assert built == expected and type(built) is _Record and hash(built) == hash(expected)
