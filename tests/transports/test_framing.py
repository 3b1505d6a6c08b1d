"""The frame dispatcher every network server uses, and the client framing helper."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from msgspec.structs import replace

from intentus_trio import (
    AgentResponse,
    EMCLEnvelope,
    EMCLFailure,
    FrameCodec,
    MessageType,
    ProtocolNegotiation,
    Router,
    StreamChunk,
    TransportProtocol,
    new_event,
    new_intent,
)
from intentus_trio.protocol import codec
from intentus_trio.samples import register_samples
from intentus_trio.transports.framing import (
    ClientFraming,
    FrameDispatcher,
    request_frame,
)

from ..protectors import StandInProtector
from ..protocol.test_codec import reference_intent_json

ROUTER = register_samples(Router(name="node"))


def dispatcher(**options: Any) -> FrameDispatcher:
    return FrameDispatcher(ROUTER, TransportProtocol.HTTP, **options)


async def reply(data: bytes, d: FrameDispatcher | None = None) -> dict[str, Any]:
    out: dict[str, Any] = orjson.loads(await (d or dispatcher()).handle_bytes(data))
    return out


async def test_request_reply_through_client_framing() -> None:
    client = ClientFraming(TransportProtocol.HTTP)
    env = new_intent("upper", {"text": "a"})
    data = await dispatcher().handle_bytes(client.encode_intent(env, request_id="r-7"))
    frame = client.decode_frame(data)
    assert frame.headers["requestId"] == "r-7"
    assert frame.headers["traceId"] == env.metadata.trace_id
    assert frame.headers["protocolVersion"] == "1.0"
    item = client.decode_reply(data)
    assert isinstance(item, AgentResponse) and item.payload == {"text": "A"}


async def test_reference_client_frame_gets_the_shape_it_accepts() -> None:
    raw = {"protocol": "INTENTUSNET/1.0", "messageType": "intent",
           "body": {**reference_intent_json(), "intent": {"name": "echo", "version": "1.0"},
                    "routing": {"strategy": "direct", "targetAgent": None,
                                "fallbackAgents": []}}}
    out = await reply(orjson.dumps(raw))
    assert out["messageType"] == "response"
    assert out["protocol"] == "INTENTUSNET/1.0"
    body = codec.response_from_json(out["body"])
    assert body.ok and body.payload == {"text": "hello"}
    assert body.trace_id == raw["body"]["metadata"]["traceId"]


@pytest.mark.parametrize(
    ("data", "code", "transport_code"),
    [
        (b"{oops", "TRANSPORT_ERROR", "MALFORMED_MESSAGE"),
        (b'{"protocol":"http","messageType":"nope","body":{}}', "PROTOCOL_ERROR",
         "UNSUPPORTED_MESSAGE_TYPE"),
        (b'{"protocol":"http","messageType":"intent","body":{}}', "VALIDATION_ERROR", None),
        (b'{"protocol":"http","messageType":"response","headers":{},"body":'
         b'{"version":"1.0","status":"success"}}', "PROTOCOL_ERROR", None),
    ],
)
async def test_bad_frames_get_their_own_error(data: bytes, code: str,
                                              transport_code: str | None) -> None:
    out = await reply(data)
    assert out["messageType"] == "response"
    error = out["body"]["error"]
    assert error["code"] == code
    assert error["details"].get("transportCode") == transport_code


async def test_oversize_frame() -> None:
    d = dispatcher(codec=FrameCodec(max_frame_bytes=64))
    data = b'{"protocol":"http","messageType":"intent","body":{"pad":"' + b"x" * 100 + b'"}}'
    out = await reply(data, d)
    assert out["body"]["error"]["details"] == {
        "transportCode": "PAYLOAD_TOO_LARGE", "size": len(data), "limit": 64}


async def test_unsupported_version_keeps_trace_and_request_id() -> None:
    env = new_intent("echo")
    frame = replace(
        request_frame(env, TransportProtocol.HTTP, request_id="q"),
        protocol_negotiation=ProtocolNegotiation("2.0", "2.5"),
    )
    out = await reply(FrameCodec().encode(frame))
    assert out["headers"]["requestId"] == "q"
    assert out["body"]["metadata"]["traceId"] == env.metadata.trace_id
    assert out["body"]["error"]["details"]["supported"] == {"minVersion": "1.0",
                                                            "maxVersion": "1.0"}


async def test_trace_id_is_salvaged_from_an_invalid_frame() -> None:
    raw = reference_intent_json()
    del raw["payload"]
    out = await reply(orjson.dumps({"protocol": "http", "messageType": "intent", "body": raw}))
    assert out["body"]["error"]["code"] == "VALIDATION_ERROR"
    assert out["body"]["metadata"]["traceId"] == raw["metadata"]["traceId"]


@pytest.mark.parametrize("transport", [TransportProtocol.WEBSOCKET, TransportProtocol.ZEROMQ,
                                       TransportProtocol.MXP])
async def test_an_undecodable_reference_frame_is_answered_in_its_protocol(
    transport: TransportProtocol,
) -> None:
    # The reference client's AES-GCM EMCL body: refused, and answered so that client reads it.
    frame = {"protocol": "INTENTUSNET/1.0", "messageType": "emcl", "headers": {},
             "body": {"cipherText": "AAAA", "iv": "AAAA", "tag": "AAAA"}}
    out = await reply(orjson.dumps(frame), FrameDispatcher(ROUTER, transport))
    assert out["protocol"] == "INTENTUSNET/1.0" and out["messageType"] == "response"
    assert out["body"]["error"]["code"] == "VALIDATION_ERROR"
    plain = await reply(orjson.dumps({**frame, "protocol": transport.value}),
                        FrameDispatcher(ROUTER, transport))
    assert plain["protocol"] == transport.value


async def test_event_frames_are_published() -> None:
    client = ClientFraming(TransportProtocol.HTTP)
    async with ROUTER.events.subscribe("ping") as sub:
        out = await dispatcher().handle_bytes(client.encode_event(new_event("ping", {"n": 1})))
        assert (await sub.receive()).payload == {"n": 1}
    item = client.decode_reply(out)
    assert isinstance(item, AgentResponse) and item.payload == {"delivered": 1}


async def test_stream_frames() -> None:
    d = dispatcher()
    client = ClientFraming(TransportProtocol.HTTP)
    frame = request_frame(new_intent("count", {"n": 2}), TransportProtocol.HTTP, request_id="s")
    items = []
    async for out in d.handle_stream(frame):
        assert out.headers["requestId"] == "s"
        items.append(client.decode_reply(d.codec.encode(out)))
    assert items[:2] == [StreamChunk(0, {"i": 0}), StreamChunk(1, {"i": 1})]
    assert isinstance(items[2], AgentResponse) and items[2].payload == {"chunks": 2}


async def test_protector_seals_both_directions() -> None:
    d = dispatcher(protector=StandInProtector(), require_emcl=True)
    client = ClientFraming(TransportProtocol.HTTP, protector=StandInProtector())
    data = await d.handle_bytes(client.encode_intent(new_intent("echo", {"s": 1})))
    assert b'"emcl":"1.0"' in data and b'"s":1' not in data
    item = client.decode_reply(data)
    assert isinstance(item, AgentResponse) and item.payload == {"s": 1}


async def test_plaintext_refused_when_emcl_required() -> None:
    d = dispatcher(protector=StandInProtector(), require_emcl=True)
    plain = ClientFraming(TransportProtocol.HTTP)
    item = plain.decode_reply(await d.handle_bytes(plain.encode_intent(new_intent("echo"))))
    assert isinstance(item, AgentResponse) and item.error is not None
    assert item.error.code == "EMCL_FAILURE" and item.error.details == {"reason": "plaintext"}


async def test_sealed_frame_without_protector_and_tampering() -> None:
    sealed = ClientFraming(TransportProtocol.HTTP, protector=StandInProtector())
    data = sealed.encode_intent(new_intent("echo"))
    out = await reply(data)
    assert out["body"]["error"]["details"] == {"reason": "not_configured"}
    frame = FrameCodec().decode(data)
    assert isinstance(frame.body, EMCLEnvelope)
    tampered = FrameCodec().encode(
        replace(frame, body=replace(frame.body, hmac="0" * 64)))
    out = await reply(tampered, dispatcher(protector=StandInProtector()))
    assert out["body"]["error"] == {"code": "EMCL_FAILURE", "message": "cannot open this frame",
                                    "retryable": False, "details": {"reason": "bad_tag"}}
    out = await reply(data, dispatcher(protector=StandInProtector(b"another key")))
    assert out["body"]["error"]["details"] == {"reason": "bad_tag"}
    with pytest.raises(EMCLFailure):
        sealed.decode_frame(FrameCodec().encode(request_frame(new_intent("e"),
                                                              TransportProtocol.HTTP)))


@settings(max_examples=300)
@given(st.binary(max_size=200))
async def test_dispatcher_answers_any_bytes(data: bytes) -> None:
    out = orjson.loads(await dispatcher().handle_bytes(data))
    assert out["messageType"] == "response"
    assert out["body"]["status"] in ("success", "error")


def test_message_type_of_reply_frames() -> None:
    assert MessageType.RESPONSE.value == "response"
