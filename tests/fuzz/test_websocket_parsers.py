"""Fuzzing what the WebSocket transport reads from its peer: control frames and their
payloads, the ``window``/``dropped`` counts, the frame-size handshake header, and whole
messages on a real connection (each gets a clear reply; the connection and the server
keep serving). The client is fuzzed the same way against a stand-in server."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import suppress
from functools import partial
from typing import Any

import attrs
import pytest
import trio
from hypothesis import example, given, settings
from hypothesis import strategies as st
from msgspec.structs import replace
from trio_websocket import (
    ConnectionClosed,
    WebSocketRequest,
    open_websocket_url,
    serve_websocket,
)

from intentus_trio.protocol.codec import FrameCodec, dumps, frame_to_json, intent_to_json
from intentus_trio.protocol.enums import MessageType, TransportProtocol
from intentus_trio.protocol.errors import IntentusError, ValidationError
from intentus_trio.protocol.factory import new_event, new_intent
from intentus_trio.protocol.models import AgentResponse, StreamChunk, TransportEnvelope
from intentus_trio.transports.framing import event_frame, request_frame, response_frame
from intentus_trio.transports.websocket import WebSocketServer, open_client, wire
from intentus_trio.transports.websocket.client import _count, _request_id_of

from ..strategies import frames, json_objects, json_values, responses
from ..transports.ws_helpers import make_router
from .serving import Served, serving_in_thread
from .strategies import (
    byte_mutations,
    examples,
    fuzzing,
    header_values,
    mutate,
    mutated_json,
    numberish,
)

FAST = fuzzing(40)
NETWORK = fuzzing(15)

_HEADER_VALUE = re.compile(rb"[\x21-\x7e\x80-\xff]([\x20-\x7e\x80-\xff]*[\x21-\x7e\x80-\xff])?")
controls = st.sampled_from([c.value for c in wire.Control]) | st.text(max_size=12)
#: Bytes an HTTP header value may hold (what a peer's handshake can really carry).
header_bytes = st.one_of(
    numberish.map(lambda s: s.strip(" \t").encode()),
    st.binary(min_size=1, max_size=16),
).filter(lambda b: _HEADER_VALUE.fullmatch(b) is not None)

# ---------------------------------------------------------------------- unit


@st.composite
def control_frames(draw: st.DrawFn) -> TransportEnvelope:
    """Control frames: right, or with the header, intent name or payload wrong."""
    if draw(st.integers(0, 3)) == 0:
        frame = draw(frames())
        headers = {**frame.headers, wire.CONTROL: draw(controls)}
        return TransportEnvelope(frame.protocol, frame.message_type, frame.body, headers,
                                 frame.protocol_negotiation)
    op = draw(st.sampled_from(wire.Control))
    payload = draw(st.fixed_dictionaries({}, optional={
        "subscription": json_values | st.text(max_size=70),
        "eventType": json_values | st.text(max_size=300),
        "credit": json_values | st.integers(-5, 2 * wire.MAX_CREDIT),
    }))
    env = wire.control_intent(op, payload)
    if draw(st.booleans()):
        env = replace(env, intent=replace(
            env.intent, name=draw(st.sampled_from([wire.CONTROL_INTENT_PREFIX + c.value
                                                   for c in wire.Control]) | st.text())))
    header = op.value if draw(st.booleans()) else draw(controls)
    return request_frame(env, TransportProtocol.WEBSOCKET, headers={wire.CONTROL: header})


@FAST
@given(control_frames())
def test_parse_control_and_its_payload_fields(frame: TransportEnvelope) -> None:
    try:
        op, payload = wire.parse_control(frame)
    except IntentusError:
        return
    assert op.value == frame.headers[wire.CONTROL]
    assert type(payload) is dict
    for read in (wire.subscription_id, wire.event_pattern, wire.credit):
        try:
            value = read(payload)
        except ValidationError:
            continue
        if read is wire.credit:
            assert type(value) is int and 0 < value <= wire.MAX_CREDIT
        else:
            assert type(value) is str and 0 < len(value) <= 256


@FAST
@given(st.none() | header_values)
@example("²")
@example("①")
def test_counts_in_headers_are_numbers_or_absent(text: str | None) -> None:
    headers = {} if text is None else {wire.WINDOW: text}
    window = wire.window(headers)
    assert window is None or 0 < window <= wire.MAX_CREDIT
    dropped = _count(text)
    assert dropped is None or (type(dropped) is int and dropped >= 0)
    if text is not None and text.isascii() and text.isdigit() and len(text) <= 12:
        assert dropped == int(text)


@FAST
@given(st.lists(st.tuples(st.sampled_from([b"x-intentus-max-frame", b"X-Intentus-Max-Frame",
                                           b"other"]) | st.binary(max_size=8),
                          header_bytes | st.binary(max_size=20)), max_size=4))
@example([(b"x-intentus-max-frame", "²".encode())])
@example([(b"x-intentus-max-frame", b"\xb2")])
def test_max_frame_header_is_a_positive_size_or_absent(headers: list[tuple[bytes, bytes]]
                                                       ) -> None:
    size = wire.parse_max_frame(headers)
    assert size is None or 0 < size <= 1 << 40


@FAST
@given(st.one_of(st.binary(max_size=80), st.text(max_size=80), json_values.map(dumps),
                 st.builds(lambda rid: dumps({"headers": {"requestId": rid}}), json_values)))
def test_request_id_of_an_undecodable_frame(message: str | bytes) -> None:
    rid = _request_id_of(message)
    assert rid is None or type(rid) is str


# ---------------------------------------------------------------------- the real server


async def _start_server(nursery: trio.Nursery) -> tuple[str, WebSocketServer]:
    server = WebSocketServer(make_router(), "ws://127.0.0.1:0/", max_frame_bytes=16384,
                             shutdown_timeout=0.5, max_call_timeout=5.0)
    url = await nursery.start(server.run)
    return url, server


@pytest.fixture(scope="module")
def ws_server() -> Iterator[Served[tuple[str, WebSocketServer]]]:
    with serving_in_thread(_start_server) as served:
        yield served


#: Intents that finish at once whatever their payload (no sleeping or endless agents).
quick_intents = st.one_of(
    st.builds(lambda name, payload: intent_to_json(new_intent(name, payload)),
              st.sampled_from(["echo", "fail", "nobody"]), json_objects),
    st.just(intent_to_json(new_intent("count", {"n": 2}))),
    control_frames().map(lambda f: frame_to_json(f)["body"]),
)
ws_header_names = st.sampled_from(["requestId", "control", "window", "stream", "timeoutMs",
                                   "subscription", "seq"])


@st.composite
def request_messages(draw: st.DrawFn) -> str | bytes:
    frame: dict[str, Any] = {
        "protocol": draw(st.sampled_from(["websocket", "INTENTUSNET/1.0", "http", "x"])),
        "messageType": draw(st.sampled_from(["intent", "intent", "event", "response", "x"])),
        "headers": draw(st.dictionaries(ws_header_names, header_values | controls,
                                        max_size=4)),
        "body": draw(quick_intents),
    }
    if draw(st.booleans()):
        frame["protocolNegotiation"] = {
            "minVersion": draw(st.just("1.0") | numberish),
            "maxVersion": draw(st.just("1.0") | numberish)}
    kind = draw(st.integers(0, 5))
    if kind == 0:
        frame = draw(mutated_json(frame))
    if kind == 1:
        return mutate(dumps(frame), draw(byte_mutations)).decode("utf-8", "replace")
    if kind == 2:
        return draw(st.binary(max_size=100))
    return dumps(frame).decode()


def _good(rid: str) -> str:
    return FrameCodec().encode(request_frame(
        new_intent("echo", {"rid": rid}), TransportProtocol.WEBSOCKET,
        request_id=rid)).decode()


async def _talk(url: str, handshake: bytes | None, messages: list[str | bytes]) -> int:
    """Send ``messages`` then a good call; every reply until the good one must be a
    frame. Returns the number of replies."""
    codec = FrameCodec()
    headers = [] if handshake is None else [(wire.MAX_FRAME_HTTP_HEADER, handshake)]
    # A client may announce a frame limit below any reply: its calls then fail clearly.
    announced = wire.parse_max_frame(headers)
    too_small = announced is not None and announced < len(_good("final")) * 2
    replies = 0
    async with open_websocket_url(url, extra_headers=headers) as ws:
        for message in messages:
            await ws.send_message(message)
        await ws.send_message(_good("final"))
        with trio.fail_after(10):
            while True:
                frame = codec.decode(await ws.get_message())
                replies += 1
                assert frame.message_type in (MessageType.RESPONSE, MessageType.EVENT)
                if frame.headers.get("requestId") == "final":
                    assert isinstance(frame.body, AgentResponse)
                    error = frame.body.error
                    if too_small and error is not None:
                        assert error.details["transportCode"] == "PAYLOAD_TOO_LARGE"
                    else:
                        assert frame.body.payload == {"rid": "final"}
                    return replies


def test_server_answers_every_message_and_keeps_serving(
    ws_server: Served[tuple[str, WebSocketServer]],
) -> None:
    url, server = ws_server.value
    window_frame = dumps({**frame_to_json(request_frame(
        new_intent("count", {"n": 2}), TransportProtocol.WEBSOCKET, request_id="w")),
        "headers": {"requestId": "w", "stream": "open", "window": "²"}}).decode()

    @NETWORK
    @given(st.none() | header_bytes, st.lists(request_messages(), max_size=5))
    @example(None, [window_frame])
    @example("²".encode(), [])
    @example(b"1", [])
    @example(None, [_good("t").replace('"requestId"', '"timeoutMs":"\u00b2","requestId"')])
    def check(handshake: bytes | None, messages: list[str | bytes]) -> None:
        trio.run(_talk, url, handshake, messages)
        ws_server.check()

    check()
    assert server.stats.malformed > 0


# ---------------------------------------------------------------------- the client


@attrs.define
class _Script:
    """What the stand-in server sends: its handshake header, then for every request the
    replies, with ``RID`` replaced by the request's id (JSON-quoted)."""

    handshake: bytes | None = None
    replies: list[str | bytes] = attrs.Factory(list)


async def _start_stand_in(script: _Script, nursery: trio.Nursery) -> str:
    async def handler(request: WebSocketRequest) -> None:
        extra = [] if script.handshake is None else [(wire.MAX_FRAME_HTTP_HEADER,
                                                      script.handshake)]
        ws = await request.accept(extra_headers=extra)
        with suppress(ConnectionClosed):
            while True:
                message = await ws.get_message()
                rid = _request_id_of(message)
                for reply in script.replies:
                    if isinstance(reply, str):
                        reply = reply.replace('"RID"', dumps(rid).decode())
                    await ws.send_message(reply)

    server = await nursery.start(partial(serve_websocket, handler, "127.0.0.1", 0, None))
    return f"ws://127.0.0.1:{server.port}/"


def _reply(item: Any, headers: dict[str, str]) -> str:
    frame = (event_frame(item, TransportProtocol.WEBSOCKET)
             if not isinstance(item, AgentResponse)
             else response_frame(item, TransportProtocol.WEBSOCKET))
    text = dumps({**frame_to_json(frame), "headers": {**headers, "requestId": "RID"}})
    return text.decode()


reply_messages = st.one_of(
    st.builds(_reply, responses, st.dictionaries(
        st.sampled_from(["stream", "seq", "subscription", "dropped"]),
        st.just("chunk") | st.just("1") | header_values, max_size=3)),
    st.builds(_reply, st.builds(new_event, st.sampled_from(["e.x", "f"])),
              st.fixed_dictionaries({"subscription": st.just("1") | header_values,
                                     "dropped": header_values})),
    st.text(max_size=40),
    st.binary(max_size=40),
)


@st.composite
def scripts(draw: st.DrawFn) -> _Script:
    replies = draw(st.lists(reply_messages, max_size=4))
    if draw(st.booleans()):
        replies = [mutate(r.encode() if isinstance(r, str) else r,
                          draw(byte_mutations)).decode("utf-8", "replace") for r in replies]
    return _Script(draw(st.none() | header_bytes), replies)


async def _exercise_client(url: str) -> None:
    async with open_client(url, timeout=0.03, reconnect=False, heartbeat_interval=None,
                           close_timeout=0.2) as client:
        response = await client.send_intent(new_intent("echo"))
        assert isinstance(response, AgentResponse)
        items = [item async for item in client.send_stream(new_intent("count"))]
        assert items and isinstance(items[-1], AgentResponse)
        assert all(isinstance(item, StreamChunk) for item in items[:-1])
        with suppress(IntentusError):
            async with client.subscribe("e.*") as events:
                with trio.move_on_after(0.05):
                    async for _ in events:
                        pass


def test_client_reads_any_answer_safely() -> None:
    script = _Script()
    with serving_in_thread(partial(_start_stand_in, script)) as served:
        ack = _reply(AgentResponse.success({}), {})
        event = _reply(new_event("e.x"), {"subscription": "1", "dropped": "²"})

        @settings(NETWORK, max_examples=examples(10))
        @given(scripts())
        @example(_Script(None, [ack, event]))
        @example(_Script("²".encode(), [ack]))
        def check(case: _Script) -> None:
            script.handshake, script.replies = case.handshake, case.replies
            trio.run(_exercise_client, served.value)
            served.check()

        check()

