"""Fuzzing what the ZeroMQ transport reads off its sockets: multipart requests at a node,
replies at a client, event messages at a subscriber, work items at a worker and results at a
distributor. Each message is answered with an error reply under its own envelope, or dropped
and counted, as the transport documents; the receiving end keeps serving."""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from functools import partial
from typing import Any

import attrs
import pytest
import trio
import zmq
from hypothesis import example, given
from hypothesis import strategies as st

from intentus_trio.protocol.codec import FrameCodec, dumps, frame_to_json, intent_to_json
from intentus_trio.protocol.enums import TransportProtocol
from intentus_trio.protocol.factory import new_event, new_intent
from intentus_trio.protocol.models import AgentResponse, Event, IntentEnvelope, StreamChunk
from intentus_trio.transports.framing import (
    ClientFraming,
    event_frame,
    request_frame,
    response_frame,
)
from intentus_trio.transports.zeromq import ZmqServer, open_client, wire
from intentus_trio.transports.zeromq.client import EventStream
from intentus_trio.transports.zeromq.workers import ACK, RENEW, RESULT, Distributor, Worker
from intentus_trio.transports.zmq_trio import TrioSocket

from ..strategies import json_objects, responses
from ..transports.zmq_helpers import make_router
from .serving import Served, serving_in_thread
from .strategies import byte_mutations, fuzzing, header_values, mutate, mutated_json

NETWORK = fuzzing(15)
TIMEOUT_MS = 10_000
CODEC = FrameCodec()
FINAL = b"\xfe final \xfe"

# ---------------------------------------------------------------------- inputs

#: Intents that finish at once whatever their payload (no sleeping or endless agents).
quick_intents = st.one_of(
    st.builds(lambda name, payload: intent_to_json(new_intent(name, payload)),
              st.sampled_from(["echo", "nobody"]), json_objects),
    st.just(intent_to_json(new_intent("count", {"n": 2}))),
)


@st.composite
def frame_bytes(draw: st.DrawFn) -> bytes:
    """A request frame: valid, with hostile headers or versions, mutated, or not JSON."""
    frame: dict[str, Any] = {
        "protocol": draw(st.sampled_from(["zeromq", "INTENTUSNET/1.0", "x"])),
        "messageType": draw(st.sampled_from(["intent", "intent", "event", "response", "x"])),
        "headers": draw(st.dictionaries(st.sampled_from(["timeoutMs", "stream", "requestId"]),
                                        header_values | st.just("open"), max_size=3)),
        "body": draw(quick_intents),
    }
    if draw(st.booleans()):
        frame["protocolNegotiation"] = {"minVersion": draw(header_values),
                                        "maxVersion": draw(st.just("1.0") | header_values)}
    kind = draw(st.integers(0, 5))
    if kind == 0:
        return dumps(draw(mutated_json(frame)))
    if kind == 1:
        return mutate(dumps(frame), draw(byte_mutations))
    if kind == 2:
        return draw(st.binary(max_size=80))
    return dumps(frame)


#: Frames of a routing envelope: short ids, empty delimiters, the cancel control, long ones.
envelope_frames = st.one_of(st.binary(max_size=6), st.just(b""), st.just(wire.CANCEL),
                            st.binary(min_size=250, max_size=300))
multipart = st.one_of(
    st.builds(lambda rid, data: [rid, b"", data], st.binary(min_size=1, max_size=6),
              frame_bytes()),
    st.lists(envelope_frames | frame_bytes(), min_size=1, max_size=12),
)


def receive(sock: zmq.Socket[bytes], served: Served[Any]) -> list[bytes]:
    """The next message on ``sock``; fails at once if the peer under test has crashed."""
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    while not sock.poll(20):
        served.check()
        assert time.monotonic() < deadline, "no message in time"
    return sock.recv_multipart()


def _good_request(rid: bytes, payload: dict[str, Any]) -> list[bytes]:
    data = CODEC.encode(request_frame(new_intent("echo", payload), TransportProtocol.ZEROMQ))
    return [rid, b"", data]


@pytest.fixture
def dealer() -> Iterator[zmq.Socket[bytes]]:
    context: zmq.Context[Any] = zmq.Context.instance()
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, TIMEOUT_MS)
    sock.setsockopt(zmq.SNDTIMEO, TIMEOUT_MS)
    try:
        yield sock
    finally:
        sock.close(0)


# ---------------------------------------------------------------------- the node


async def _start_node(nursery: trio.Nursery) -> ZmqServer:
    server = ZmqServer(make_router(), max_frame_bytes=16384, shutdown_timeout=0.5,
                       max_call_timeout=5.0)
    await nursery.start(server.run, "tcp://127.0.0.1:0")
    return server


def test_node_answers_or_counts_every_message(dealer: zmq.Socket[bytes]) -> None:
    with serving_in_thread(_start_node) as served:
        server = served.value
        dealer.connect(server.urls["rpc"])
        timeout_frame = dumps({**frame_to_json(request_frame(
            new_intent("echo"), TransportProtocol.ZEROMQ)), "headers": {"timeoutMs": "²"}})

        @NETWORK
        @given(st.lists(multipart, max_size=6))
        @example([[b"t", b"", timeout_frame]])
        def check(messages: list[list[bytes]]) -> None:
            served.check()
            before = attrs.evolve(server.stats)
            for message in messages:
                dealer.send_multipart(message)
            dealer.send_multipart(_good_request(FINAL, {"final": True}))
            while True:
                reply = receive(dealer, served)
                # A reply repeats its request's envelope; its payload is always a frame.
                assert b"" in reply
                body = CODEC.decode(reply[-1]).body
                assert isinstance(body, AgentResponse)
                if reply[:2] == [FINAL, b""]:
                    assert body.payload == {"final": True}
                    break
            served.check()
            stats = server.stats
            assert stats.requests == before.requests + len(messages) + 1
            assert stats.dropped_malformed + stats.unknown_cancels >= (
                before.dropped_malformed + before.unknown_cancels)

        check()


# ---------------------------------------------------------------------- the client


@attrs.define
class _Script:
    """The stand-in node's answer to every request: multipart messages after the peer id,
    with any ``RID`` frame replaced by the request's id."""

    replies: list[list[bytes]] = attrs.Factory(list)


async def _start_stand_in(script: _Script, nursery: trio.Nursery) -> str:
    sock = TrioSocket.open(zmq.ROUTER, linger_ms=0)
    sock.socket.bind("tcp://127.0.0.1:0")
    url = sock.socket.getsockopt_string(zmq.LAST_ENDPOINT)

    async def answer() -> None:
        with sock:
            while True:
                request = await sock.receive()
                peer, rid = request[0], request[1] if len(request) > 1 else b""
                for reply in script.replies:
                    await sock.send([peer, *(rid if f == b"RID" else f for f in reply)])

    nursery.start_soon(answer)
    return url


def _reply_bytes(item: AgentResponse, headers: dict[str, str]) -> bytes:
    return dumps({**frame_to_json(response_frame(item, TransportProtocol.ZEROMQ)),
                  "headers": headers})


reply_payloads = st.one_of(
    st.builds(_reply_bytes, responses, st.dictionaries(
        st.sampled_from(["stream", "seq"]), st.just("chunk") | header_values, max_size=2)),
    st.binary(max_size=40),
    st.tuples(st.builds(_reply_bytes, responses, st.just({})), byte_mutations).map(
        lambda t: mutate(*t)),
)
scripted_replies = st.lists(st.one_of(
    st.builds(lambda data: [b"RID", b"", data], reply_payloads),
    st.lists(st.just(b"RID") | envelope_frames | reply_payloads, min_size=1, max_size=5),
), max_size=4)


async def _exercise_client(url: str) -> None:
    async with open_client(url, timeout=0.05) as client:
        response = await client.send_intent(new_intent("echo"))
        assert isinstance(response, AgentResponse)
        items = [item async for item in client.send_stream(new_intent("count"))]
        assert items and isinstance(items[-1], AgentResponse)
        assert all(isinstance(item, StreamChunk) for item in items[:-1])


def test_client_reads_any_reply_safely() -> None:
    script = _Script()
    with serving_in_thread(partial(_start_stand_in, script)) as served:
        chunk = _reply_bytes(AgentResponse.success({}), {"stream": "chunk", "seq": "²"})

        @NETWORK
        @given(scripted_replies)
        @example([[b"RID", b"", chunk]])
        def check(replies: list[list[bytes]]) -> None:
            script.replies = replies
            trio.run(_exercise_client, served.value)
            served.check()

        check()


# ---------------------------------------------------------------------- subscribers


def _event_bytes(event: Event) -> bytes:
    return CODEC.encode(event_frame(event, TransportProtocol.ZEROMQ))


event_messages = st.one_of(
    st.builds(lambda event: [event.event_type.encode(), _event_bytes(event)],
              st.builds(new_event, st.sampled_from(["a.b", "a.c", "b"]), json_objects)),
    st.lists(st.binary(max_size=20) | frame_bytes(), max_size=4),
    st.builds(lambda data: [b"a.b", data], reply_payloads),
)


def test_event_stream_takes_only_its_events() -> None:
    async def accept_all(pattern: str, messages: list[list[bytes]]) -> None:
        sock = TrioSocket.open(zmq.SUB, linger_ms=0)
        with sock:
            stream = EventStream(sock, pattern, ClientFraming(TransportProtocol.ZEROMQ))
            for message in messages:
                event = stream._accept(message)
                assert event is None or isinstance(event, Event)
                if event is not None:
                    assert event.event_type in (("a.b", "a.c") if pattern == "a.*" else ("a.b",))
            assert stream.received + stream.skipped == len(messages)

    @NETWORK
    @given(st.sampled_from(["a.*", "a.b"]), st.lists(event_messages, max_size=6))
    def check(pattern: str, messages: list[list[bytes]]) -> None:
        trio.run(accept_all, pattern, messages)

    check()


# ---------------------------------------------------------------------- workers


@attrs.frozen
class _Sockets:
    """A PUSH and a PULL bound in the test's thread, for a worker or distributor to use."""

    push: zmq.Socket[bytes]
    pull: zmq.Socket[bytes]

    @property
    def push_url(self) -> str:
        return str(self.push.getsockopt_string(zmq.LAST_ENDPOINT))

    @property
    def pull_url(self) -> str:
        return str(self.pull.getsockopt_string(zmq.LAST_ENDPOINT))


@pytest.fixture
def sockets() -> Iterator[_Sockets]:
    context: zmq.Context[Any] = zmq.Context.instance()
    push, pull = context.socket(zmq.PUSH), context.socket(zmq.PULL)
    for sock in (push, pull):
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVTIMEO, TIMEOUT_MS)
        sock.setsockopt(zmq.SNDTIMEO, TIMEOUT_MS)
    try:
        yield _Sockets(push, pull)
    finally:
        push.close(0)
        pull.close(0)


work_items = st.one_of(
    st.builds(lambda wid, kind, data: [wid, kind, data], st.binary(max_size=6),
              st.sampled_from([RESULT, b"N", b"", b"?"]), frame_bytes()),
    st.lists(st.binary(max_size=8) | frame_bytes(), min_size=1, max_size=5),
)


def test_worker_runs_or_counts_every_work_item(sockets: _Sockets) -> None:
    worker = Worker(make_router(), renew_interval=60.0)
    sockets.push.bind("tcp://127.0.0.1:0")
    sockets.pull.bind("tcp://127.0.0.1:0")

    async def start(nursery: trio.Nursery) -> None:
        await nursery.start(worker.run, sockets.push_url, sockets.pull_url)

    with serving_in_thread(start) as served:

        @NETWORK
        @given(st.lists(work_items, max_size=6))
        @example([[b"w", RESULT, dumps({**frame_to_json(request_frame(
            new_intent("echo"), TransportProtocol.ZEROMQ)), "protocolNegotiation": {
                "minVersion": "².0", "maxVersion": "1.0"}})]])
        def check(items: list[list[bytes]]) -> None:
            for item in items:
                sockets.push.send_multipart(item)
            sockets.push.send_multipart([FINAL, RESULT, _good_request(b"", {"w": 1})[2]])
            while True:
                message = receive(sockets.pull, served)
                assert message[0] in (RESULT, ACK, RENEW)
                if message[0] == RESULT:
                    assert len(message) == 3
                    assert isinstance(CODEC.decode(message[2]).body, AgentResponse)
                    if message[1] == FINAL:
                        break
            served.check()

        check()
        assert worker.stats.received > 0


@attrs.define
class _Distributing:
    distributor: Distributor
    work_url: str
    results_url: str
    token: trio.lowlevel.TrioToken
    nursery: trio.Nursery

    def request(self, env: IntentEnvelope) -> queue.Queue[AgentResponse]:
        """Start ``distributor.request(env)`` on the server's loop; its answer arrives in
        the queue."""
        out: queue.Queue[AgentResponse] = queue.Queue()

        async def run() -> None:
            out.put(await self.distributor.request(env))

        trio.from_thread.run_sync(self.nursery.start_soon, run, trio_token=self.token)
        return out


async def _start_distributor(nursery: trio.Nursery) -> _Distributing:
    distributor = Distributor(lease_timeout=30.0)
    work_url, results_url = await nursery.start(
        distributor.serve, "tcp://127.0.0.1:0", "tcp://127.0.0.1:0")
    return _Distributing(distributor, work_url, results_url,
                         trio.lowlevel.current_trio_token(), nursery)


results = st.one_of(
    st.builds(lambda kind, wid, data: [kind, wid, data],
              st.sampled_from([RESULT, ACK, RENEW, b"", b"?"]),
              st.just(b"WID") | st.binary(max_size=4), reply_payloads),
    st.lists(st.just(b"WID") | st.binary(max_size=6) | reply_payloads, min_size=1, max_size=5),
)


def test_distributor_reads_any_result_safely() -> None:
    with serving_in_thread(_start_distributor) as served:
        handle = served.value
        context: zmq.Context[Any] = zmq.Context.instance()
        fake_worker, results_out = context.socket(zmq.PULL), context.socket(zmq.PUSH)
        try:
            for sock in (fake_worker, results_out):
                sock.setsockopt(zmq.LINGER, 0)
                sock.setsockopt(zmq.RCVTIMEO, TIMEOUT_MS)
                sock.setsockopt(zmq.SNDTIMEO, TIMEOUT_MS)
            fake_worker.connect(handle.work_url)
            results_out.connect(handle.results_url)

            @NETWORK
            @given(st.lists(results, max_size=6))
            def check(messages: list[list[bytes]]) -> None:
                answer = handle.request(new_intent("echo", {"d": 1}))
                work_id, _, _ = receive(fake_worker, served)
                for message in messages:
                    results_out.send_multipart([work_id if f == b"WID" else f for f in message])
                good = _reply_bytes(AgentResponse.success({"d": 1}), {})
                results_out.send_multipart([RESULT, work_id, good])
                assert isinstance(answer.get(timeout=TIMEOUT_MS / 1000), AgentResponse)
                served.check()

            check()
        finally:
            fake_worker.close(0)
            results_out.close(0)
        assert handle.distributor.backlog == 0
