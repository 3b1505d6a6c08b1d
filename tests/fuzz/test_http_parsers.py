"""Fuzzing what the HTTP transport reads from its peer.

Server side: JSON-RPC request objects, frames on the REST and stream endpoints, query
parameters. Client side: JSON-RPC replies, ``Retry-After``, and whatever body a server (or a
proxy in front of it) sends back, NDJSON streams and SSE event streams included. Each parser
returns a valid result or fails with its documented error; over a real socket, every bad
request gets a clear error reply and the server keeps serving.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import suppress
from datetime import UTC, datetime
from email.utils import format_datetime
from functools import partial
from typing import Any
from urllib.parse import quote

import attrs
import httpx
import pytest
import trio
from hypothesis import example, given, settings
from hypothesis import strategies as st

from intentus_trio.protocol.codec import (
    FrameCodec,
    dumps,
    frame_to_json,
    intent_to_json,
    loads,
    response_from_json,
    response_to_json,
)
from intentus_trio.protocol.enums import TransportProtocol
from intentus_trio.protocol.errors import IntentusError, PayloadTooLarge
from intentus_trio.protocol.factory import new_event, new_intent
from intentus_trio.protocol.models import AgentResponse, Event, StreamChunk
from intentus_trio.transports.framing import request_frame, response_frame
from intentus_trio.transports.http import HttpServer, ServerLimits, jsonrpc, open_client, serve
from intentus_trio.transports.http.client import _lines
from intentus_trio.transports.http.retry import RetryPolicy, parse_retry_after

from ..strategies import json_objects, json_values, responses
from ..transports.http_helpers import make_router
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

#: What a lone JSON-RPC error may say; INTERNAL_ERROR would mean an unexpected exception.
CLEAR_CODES = {jsonrpc.PARSE_ERROR, jsonrpc.INVALID_REQUEST, jsonrpc.METHOD_NOT_FOUND,
               jsonrpc.INVALID_PARAMS, jsonrpc.INTENT_FAILED}
JSON_HEADERS = {"content-type": "application/json"}

# ---------------------------------------------------------------------- inputs

versions = st.one_of(st.just("1.0"), st.builds("{}.{}".format, numberish, numberish),
                     st.text(max_size=8))
frame_header_names = st.sampled_from(
    ["timeoutMs", "stream", "seq", "requestId", "window", "control", "traceId", "emcl"])
frame_headers = st.dictionaries(frame_header_names | st.text(max_size=8), header_values,
                                max_size=4)
#: Intents that finish at once whatever their payload (no sleeping or endless agents).
quick_intents = st.one_of(
    st.builds(lambda name, payload: intent_to_json(new_intent(name, payload)),
              st.sampled_from(["echo", "fail", "nobody"]), json_objects),
    st.just(intent_to_json(new_intent("count", {"n": 2}))),
)


@st.composite
def frames_json(draw: st.DrawFn) -> Any:
    """A request frame as JSON, often valid, with hostile headers, versions or fields."""
    frame: dict[str, Any] = {
        "protocol": draw(st.sampled_from(["http", "INTENTUSNET/1.0", "websocket", "nope"])),
        "messageType": draw(st.sampled_from(["intent", "intent", "event", "response", "x"])),
        "body": draw(quick_intents),
    }
    if draw(st.booleans()):
        frame["headers"] = draw(frame_headers)
    if draw(st.booleans()):
        frame["protocolNegotiation"] = {"minVersion": draw(versions),
                                        "maxVersion": draw(versions)}
    if draw(st.integers(0, 3)) == 0:
        return draw(mutated_json(frame))
    return frame


frame_bodies = st.one_of(
    frames_json().map(dumps),
    st.tuples(frames_json().map(dumps), byte_mutations).map(lambda t: mutate(*t)),
    st.binary(max_size=200),
)


@st.composite
def rpc_requests(draw: st.DrawFn) -> Any:
    """JSON-RPC request objects: right or wrong in every member."""
    request: dict[str, Any] = {}
    if draw(st.integers(0, 4)):
        request["jsonrpc"] = draw(st.just("2.0") | json_values)
    if draw(st.integers(0, 4)):
        request["method"] = draw(st.sampled_from(sorted(jsonrpc.METHODS)) | json_values)
    if draw(st.booleans()):
        request["id"] = draw(st.integers() | st.text(max_size=300) | json_values)
    if draw(st.booleans()):
        method = request.get("method")
        if method == "intent":
            request["params"] = draw(quick_intents | mutated_json(draw(quick_intents)))
        elif method == "frame":
            request["params"] = draw(frames_json())
        else:
            request["params"] = draw(json_values)
    return request


rpc_messages = st.one_of(rpc_requests(), json_values, st.lists(rpc_requests(), max_size=4))

# ---------------------------------------------------------------------- JSON-RPC (unit)


def check_error_reply(reply: Any) -> AgentResponse:
    """A JSON-RPC error object whose ``data`` is an AgentResponse error; returns that."""
    assert type(reply) is dict
    assert reply["jsonrpc"] == "2.0"
    assert "id" in reply
    error = reply["error"]
    assert error["code"] in CLEAR_CODES, error
    assert error["message"] == jsonrpc._MESSAGES[error["code"]]
    response = response_from_json(error["data"], "data")
    assert response.error is not None
    assert 400 <= jsonrpc.status_of(reply) <= 599
    return response


@FAST
@given(rpc_messages)
def test_parse_call_gives_a_call_or_an_error_reply(message: Any) -> None:
    parsed = jsonrpc.parse_call(message)
    if isinstance(parsed, jsonrpc.Call):
        assert type(message) is dict and message["jsonrpc"] == "2.0"
        assert parsed.method in jsonrpc.METHODS
        assert parsed.params is None or type(parsed.params) in (dict, list)
        assert parsed.id is None or type(parsed.id) in (int, str)
        assert parsed.notification == ("id" not in message)
    else:
        check_error_reply(parsed)
        loads(dumps(parsed))  # the server can send it as it is


@FAST
@given(st.one_of(
    json_values,
    st.fixed_dictionaries({}, optional={"id": json_values, "result": json_values,
                                        "error": json_values}),
    st.builds(lambda code, message, data: {"error": {"code": code, "message": message,
                                                     "data": data}},
              json_values, json_values, json_values | responses.map(response_to_json)),
))
def test_response_of_reads_any_reply_element(item: Any) -> None:
    try:
        response = jsonrpc.response_of(item)
    except IntentusError:
        return
    assert isinstance(response, AgentResponse)


@FAST
@given(st.integers() | st.text(max_size=10) | st.none(), responses)
def test_response_of_round_trips_results_and_errors(request_id: Any, response: AgentResponse
                                                    ) -> None:
    sent = loads(dumps(jsonrpc.result(request_id, response_to_json(response))))
    assert jsonrpc.response_of(sent) == response_from_json(response_to_json(response))
    if response.error is not None:
        sent = loads(dumps(jsonrpc.error(request_id, jsonrpc.INTENT_FAILED, response)))
        assert jsonrpc.response_of(sent) == response_from_json(response_to_json(response))


# ---------------------------------------------------------------------- Retry-After (unit)

REFERENCE_NOW = datetime(2030, 1, 1, tzinfo=UTC)


@FAST
@given(st.one_of(
    st.none(),
    st.text(max_size=40),
    numberish,
    st.datetimes(timezones=st.just(UTC)).map(lambda d: format_datetime(d, usegmt=True)),
    st.tuples(st.datetimes(timezones=st.just(UTC)).map(
        lambda d: format_datetime(d, usegmt=True).encode()), byte_mutations).map(
        lambda t: mutate(*t).decode("latin-1")),
))
@example("²")
@example("①")
@example("Mon, 01 Jan 99999 00:00:00 GMT")
def test_parse_retry_after_is_a_wait_or_nothing(value: str | None) -> None:
    wait = parse_retry_after(value, now=REFERENCE_NOW)
    assert wait is None or (type(wait) is float and not math.isnan(wait) and wait >= 0)


@FAST
@given(st.integers(0, 10**9), st.datetimes(min_value=datetime(1990, 1, 1),
                                           max_value=datetime(2100, 1, 1)))
def test_parse_retry_after_reads_both_forms_exactly(seconds: int, when: datetime) -> None:
    assert parse_retry_after(f" {seconds} ") == seconds
    when = when.replace(microsecond=0, tzinfo=UTC)
    expected = max(0.0, (when - REFERENCE_NOW).total_seconds())
    assert parse_retry_after(format_datetime(when, usegmt=True), now=REFERENCE_NOW) == expected


# ---------------------------------------------------------------------- NDJSON/SSE lines (unit)


@attrs.frozen
class _Body:
    chunks: list[bytes]

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk


def _cut(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


@FAST
@given(st.lists(st.binary(max_size=30) | st.sampled_from([b"", b"\r", b"data: x\r"]),
                max_size=12),
       st.sampled_from([b"\n", b"\r\n"]), st.booleans(), st.lists(st.integers(0, 500)),
       st.integers(1, 40))
def test_stream_lines_do_not_depend_on_how_the_body_is_cut(
    lines: list[bytes], end: bytes, trailing: bool, cuts: list[int], limit: int
) -> None:
    body = end.join(lines) + (end if trailing and lines else b"")
    parts = body.split(b"\n")
    expected = [p.rstrip(b"\r") for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])
    longest = max(map(len, parts), default=0)

    async def read(chunks: list[bytes], size_limit: int) -> list[bytes]:
        return [line async for line in _lines(_Body(chunks), size_limit)]  # type: ignore[arg-type]

    assert trio.run(read, _cut(body, cuts), 1 << 20) == expected
    try:
        got = trio.run(read, _cut(body, cuts), limit)
    except PayloadTooLarge:
        assert longest > limit
    else:
        assert got == expected


# ---------------------------------------------------------------------- the real server

LIMITS = ServerLimits(max_body_bytes=64 * 1024, max_wait=0.05, max_call_timeout=5.0,
                      body_timeout=5.0)


async def _start_http(nursery: trio.Nursery) -> tuple[str, HttpServer]:
    router = make_router()
    server = HttpServer(router, limits=LIMITS)
    url = await nursery.start(partial(serve, router, "http://127.0.0.1:0", server=server,
                                      graceful_timeout=0.5))
    return url, server


@pytest.fixture(scope="module")
def http_server() -> Iterator[Served[tuple[str, HttpServer]]]:
    with serving_in_thread(_start_http) as served:
        yield served


@pytest.fixture(scope="module")
def http(http_server: Served[tuple[str, HttpServer]]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=http_server.value[0], timeout=10) as client:
        yield client


def still_serving(served: Served[Any], client: httpx.Client) -> None:
    served.check()
    reply = client.post("/jsonrpc", json={"jsonrpc": "2.0", "method": "ping", "id": "p"})
    assert reply.json() == {"jsonrpc": "2.0", "result": {"pong": True}, "id": "p"}
    env = new_intent("echo", {"still": "up"})
    frame = FrameCodec().encode(request_frame(env, TransportProtocol.HTTP))
    reply = client.post("/intent", content=frame, headers=JSON_HEADERS)
    assert reply.status_code == 200
    body = FrameCodec().decode(reply.content).body
    assert isinstance(body, AgentResponse) and body.payload == {"still": "up"}


def _bad_version_frame() -> Any:
    frame = frame_to_json(request_frame(new_intent("echo"), TransportProtocol.HTTP))
    frame["protocolNegotiation"] = {"minVersion": "².0", "maxVersion": "1.0"}
    return frame


def test_jsonrpc_endpoint_answers_every_message_clearly(
    http_server: Served[tuple[str, HttpServer]], http: httpx.Client
) -> None:
    @NETWORK
    @given(st.one_of(rpc_messages.map(dumps),
                     st.tuples(rpc_messages.map(dumps), byte_mutations).map(
                         lambda t: mutate(*t))))
    @example(dumps({"jsonrpc": "2.0", "method": "frame", "id": 1,
                    "params": _bad_version_frame()}))
    @example(dumps([{"jsonrpc": "2.0", "method": "intent", "id": [1]}]))
    def check(body: bytes) -> None:
        reply = http.post("/jsonrpc", content=body, headers=JSON_HEADERS)
        if reply.status_code == 204:
            assert reply.content == b""
        else:
            answer = reply.json()
            items = answer if type(answer) is list else [answer]
            assert items
            for item in items:
                if "error" in item:
                    check_error_reply(item)
                else:
                    assert item["jsonrpc"] == "2.0" and "result" in item
            if type(answer) is dict:
                assert reply.status_code == jsonrpc.status_of(answer)
        still_serving(http_server, http)

    check()


def _frames_of(reply: httpx.Response) -> list[Any]:
    """The reply frames of a REST or stream answer (one per NDJSON line)."""
    lines = [line for line in reply.content.split(b"\n") if line]
    assert lines, (reply.status_code, reply.content)
    codec = FrameCodec()
    return [codec.decode(line) for line in lines]


def test_rest_endpoints_answer_every_frame_clearly(
    http_server: Served[tuple[str, HttpServer]], http: httpx.Client
) -> None:
    def frame(headers: dict[str, str]) -> bytes:
        return dumps({**frame_to_json(request_frame(new_intent("echo"), TransportProtocol.HTTP)),
                      "headers": headers})

    @NETWORK
    @given(st.sampled_from(["/intent", "/", "/stream", "/tasks", "/events"]), frame_bodies)
    @example("/intent", frame({"timeoutMs": "²"}))
    @example("/stream", frame({"timeoutMs": "①"}))
    @example("/intent", dumps(_bad_version_frame()))
    def check(path: str, body: bytes) -> None:
        reply = http.post(path, content=body, headers=JSON_HEADERS)
        if path == "/tasks" and reply.status_code == 202:
            assert type(reply.json()["taskId"]) is str
        else:
            frames = _frames_of(reply)
            if path != "/stream":
                assert len(frames) == 1
            assert isinstance(frames[-1].body, AgentResponse)
            if reply.status_code >= 400:
                assert frames[-1].body.error is not None
        still_serving(http_server, http)

    check()


def test_paths_and_query_parameters_are_read_safely(
    http_server: Served[tuple[str, HttpServer]], http: httpx.Client
) -> None:
    env = new_intent("sleep", {"seconds": 3600})
    submitted = http.post("/tasks", content=FrameCodec().encode(
        request_frame(env, TransportProtocol.HTTP)), headers=JSON_HEADERS)
    assert submitted.status_code == 202
    status_url = submitted.json()["statusUrl"]

    @settings(NETWORK, max_examples=examples(15))
    @given(st.one_of(numberish, st.text(max_size=12),
                     st.sampled_from(["nan", "inf", "-inf", "1e400", "-0", "0x10"])),
           st.text(max_size=300), st.sampled_from(["GET", "POST", "DELETE"]),
           st.text(max_size=80) | st.sampled_from(["", "/cancel", "x/cancel", "x/y/z"]))
    def check(wait: str, event_type: str, method: str, task_path: str) -> None:
        reply = http.get(status_url, params={"wait": wait})
        assert reply.status_code == 200 and reply.json()["state"] == "running"
        reply = http.request(method, "/tasks/" + quote(task_path, safe="/"))
        assert reply.status_code in (404, 405), reply.status_code
        assert isinstance(_frames_of(reply)[0].body, AgentResponse)
        with http.stream("GET", "/events", params={"type": event_type}) as events:
            if 0 < len(event_type) <= 256:
                assert events.status_code == 200
                assert next(events.iter_bytes()).startswith(b": ready")
            else:
                assert events.status_code == 422
                events.read()
                assert isinstance(_frames_of(events)[0].body, AgentResponse)
        still_serving(http_server, http)

    check()


# ---------------------------------------------------------------------- the client


@attrs.define
class _Canned:
    """What the stand-in server answers to every request."""

    response: bytes = b"HTTP/1.1 500 X\r\ncontent-length: 0\r\n\r\n"
    requests: int = 0


_CONTENT_LENGTH = re.compile(rb"(?im)^content-length:\s*(\d+)\s*$")


async def _start_canned(canned: _Canned, nursery: trio.Nursery) -> str:
    async def handle(stream: trio.SocketStream) -> None:
        async with stream:
            data = b""
            with trio.move_on_after(5):
                while b"\r\n\r\n" not in data:
                    chunk = await stream.receive_some(65536)
                    if not chunk:
                        return
                    data += chunk
                head, _, body = data.partition(b"\r\n\r\n")
                match = _CONTENT_LENGTH.search(head)
                while match and len(body) < int(match.group(1)):
                    chunk = await stream.receive_some(65536)
                    if not chunk:
                        return
                    body += chunk
                canned.requests += 1
                with suppress(trio.BrokenResourceError):
                    await stream.send_all(canned.response)

    listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
    return f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"


def _reply_line(item: AgentResponse, headers: dict[str, str]) -> bytes:
    frame = response_frame(item, TransportProtocol.HTTP)
    return dumps({**frame_to_json(frame), "headers": headers})


reply_lines = st.one_of(
    st.builds(_reply_line, responses, st.dictionaries(
        st.sampled_from(["stream", "seq", "requestId"]), st.just("chunk") | header_values,
        max_size=3)),
    st.binary(max_size=40),
    json_values.map(dumps),
)
rpc_replies = st.lists(st.fixed_dictionaries(
    {"jsonrpc": st.just("2.0"),
     "id": st.integers(0, 2) | json_values},
    optional={"result": json_values | responses.map(response_to_json),
              "error": json_values}), max_size=4)
task_documents = st.fixed_dictionaries(
    {}, optional=dict.fromkeys(
        ("taskId", "state", "statusUrl", "submittedAt", "finishedAt", "reply"), json_values))
sse_lines = st.one_of(
    st.sampled_from([b": ready", b": ping", b"", b"id: 1", b"event: x", b"data:"]),
    reply_lines.map(lambda line: b"data: " + line),
    st.just(b"data: " + dumps(frame_to_json(response_frame(
        AgentResponse.success({}), TransportProtocol.HTTP))).replace(b'"response"', b'"event"')),
    st.binary(max_size=30).filter(lambda b: b"\n" not in b),
)


@st.composite
def canned_responses(draw: st.DrawFn) -> bytes:
    status = draw(st.sampled_from([200, 202, 400, 404, 413, 429, 500, 502, 503, 504]))
    media = draw(st.sampled_from([b"application/json", b"application/x-ndjson",
                                  b"text/event-stream", b"text/html"]))
    body: bytes = draw(st.one_of(
        st.binary(max_size=300),
        json_values.map(dumps),
        reply_lines,
        st.tuples(reply_lines, byte_mutations).map(lambda t: mutate(*t)),
        st.lists(reply_lines, max_size=5).map(b"\n".join),
        rpc_replies.map(dumps),
        task_documents.map(dumps),
        st.lists(sse_lines, max_size=8).map(lambda lines: b"\n".join(lines) + b"\n\n"),
    ))
    head = b"HTTP/1.1 %d Canned\r\ncontent-type: %s\r\nconnection: close\r\n" % (status, media)
    retry_after = draw(st.none() | header_values)
    if retry_after is not None:
        value = retry_after.strip(" \t").encode(draw(st.sampled_from(["utf-8", "latin-1"])),
                                                "ignore")
        if re.fullmatch(rb"[\x21-\x7e\x80-\xff]+", value):
            head += b"retry-after: " + value + b"\r\n"
    if draw(st.booleans()):
        head += b"content-length: %d\r\n" % len(body)
    return head + b"\r\n" + body


async def _exercise_client(url: str) -> None:
    """Every client call against one canned answer: each returns or raises IntentusError."""
    policy = RetryPolicy(max_attempts=2, base_delay=0.0, jitter=0.0, max_retry_after=0.01)
    async with open_client(url, timeout=3.0, retry=policy, resubscribe=False) as client:
        env = new_intent("echo", {"n": 1})
        response = await client.send_intent(env)
        assert isinstance(response, AgentResponse)
        batch = await client.send_batch([env, new_intent("echo")])
        assert len(batch) == 2 and all(isinstance(r, AgentResponse) for r in batch)
        items = [item async for item in client.send_stream(env)]
        assert items and isinstance(items[-1], AgentResponse)
        assert all(isinstance(item, StreamChunk) for item in items[:-1])
        for call in (client.health, partial(client.task_status, "t1"),
                     partial(client.publish, new_event("e"))):
            with suppress(IntentusError):
                await call()
        try:
            async with client.subscribe("e.*") as events:
                async for event in events:
                    assert isinstance(event, Event)
        except IntentusError:
            pass


def test_client_reads_any_answer_safely() -> None:
    canned = _Canned()
    with serving_in_thread(partial(_start_canned, canned)) as served:
        ok_line = dumps(frame_to_json(response_frame(AgentResponse.success({"a": 1}),
                                                     TransportProtocol.HTTP)))

        @settings(NETWORK, max_examples=examples(10))
        @given(canned_responses())
        @example(b"HTTP/1.1 503 X\r\nretry-after: \xc2\xb2\r\ncontent-length: 0\r\n\r\n")
        @example(b"HTTP/1.1 200 X\r\ncontent-type: application/json\r\n\r\n"
                 b'[{"jsonrpc": "2.0", "id": [0], "result": {}}]')
        @example(b"HTTP/1.1 200 X\r\ncontent-type: application/x-ndjson\r\n\r\n"
                 + dumps({**loads(ok_line), "headers": {"stream": "chunk", "seq": "\u00b2"}}))
        def check(response: bytes) -> None:
            canned.response = response
            trio.run(_exercise_client, served.value)
            served.check()

        check()
        assert canned.requests > 0


def test_stream_line_limit_is_a_clear_error() -> None:
    """A streamed line longer than the frame limit ends the stream with PAYLOAD_TOO_LARGE."""
    canned = _Canned(b"HTTP/1.1 200 X\r\ncontent-type: application/x-ndjson\r\n\r\n"
                     + b"x" * 300_000)
    with serving_in_thread(partial(_start_canned, canned)) as served:

        async def call() -> list[Any]:
            async with open_client(served.value, max_frame_bytes=100_000) as client:
                items = [item async for item in client.send_stream(new_intent("echo"))]
            return items

        (only,) = trio.run(call)
        assert only.error is not None
        assert only.error.details["transportCode"] == PayloadTooLarge.transport_code

