"""The WebSocket client: one persistent connection carrying many concurrent calls.

A supervisor task owns the connection: it connects, runs the session (received frames are
routed by ``requestId`` to calls and by subscription id to subscriptions, straight from the
WebSocket library's reader task; a heartbeat task), and when the connection is lost fails
every in-flight call at once with CONNECTION_FAILURE, then reconnects with exponential
backoff and re-subscribes. Calls made while there is no connection wait for the outcome of
the next connection attempt, within their deadline.
"""

from __future__ import annotations

import itertools
import logging
import math
import random
import ssl
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager, suppress
from functools import partial
from typing import Any, Final, cast

import attrs
import trio
from msgspec.structs import replace
from trio_websocket import (
    CloseReason,
    ConnectionClosed,
    HandshakeError,
    WebSocketConnection,
    wrap_client_stream,
)

from ..._groups import unwrap_single
from ...protocol import headers as h
from ...protocol.codec import DEFAULT_MAX_FRAME_BYTES, FrameCodec, loads
from ...protocol.enums import ErrorCode, MessageType, TransportProtocol
from ...protocol.errors import (
    ConnectionFailure,
    IntentusError,
    PayloadTooLarge,
    TransportTimeout,
    as_response,
    raise_for_error,
    raise_for_outcome,
)
from ...protocol.models import AgentResponse, Event, IntentEnvelope, JsonObject, StreamChunk
from ..base import StreamItem
from ..deadlines import Deadlines
from ..framing import ClientFraming, FrameProtector, event_frame, reply_item, timeout_headers
from ..lifetime import RunsOnce
from . import wire
from .calls import ReplySlot, StreamSlot, WebSocketSubscription
from .endpoint import Endpoint
from .link import Link, describe_close
from .stream import DirectStream, deliver_messages

_RESPONSE: Final = MessageType.RESPONSE  # a module constant: faster than the enum lookup

log = logging.getLogger("intentus_trio.transports.websocket")

_UNSET: Any = object()
_NETWORK_ERRORS = (OSError, HandshakeError, ConnectionClosed, trio.BrokenResourceError,
                   trio.TooSlowError)

Stream = DirectStream | trio.SSLStream[trio.SocketStream]


@attrs.define
class ClientStats:
    attempts: int = 0
    connects: int = 0
    connect_failures: int = 0
    disconnects: int = 0
    #: Replies and events for calls or subscriptions that no longer exist (e.g. timed out).
    unmatched: int = 0
    #: Frames from the server that could not be decoded and named no call.
    malformed: int = 0


def _describe(exc: BaseException) -> str:
    if isinstance(exc, trio.TooSlowError):
        return "timed out"
    if isinstance(exc, ConnectionClosed):
        return describe_close(exc.reason)
    cause = exc.__cause__ if isinstance(exc, trio.BrokenResourceError) else None
    shown = cause or exc
    text = str(shown)
    return f"{type(shown).__name__}: {text}" if text else type(shown).__name__


def _leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    first = group.exceptions[0]
    return _leaf(first) if isinstance(first, BaseExceptionGroup) else first


def _request_id_of(message: str | bytes) -> str | None:
    """The ``requestId`` header of a frame that failed to decode, if it has one."""
    try:
        obj = loads(message)
    except IntentusError:
        return None
    headers = obj.get("headers") if type(obj) is dict else None
    rid = headers.get(h.REQUEST_ID) if type(headers) is dict else None
    return rid if type(rid) is str else None


def _slot_done(slot: ReplySlot) -> bool:
    return slot.done


def _count(text: str | None) -> int | None:
    if text is None or not (text.isascii() and text.isdigit()) or len(text) > 12:
        return None  # isascii: isdigit() also accepts digits int() refuses ("²")
    return int(text)


class _Session:
    """One established connection and the calls in flight on it."""

    def __init__(
        self, client: WebSocketClient, ws: WebSocketConnection, nursery: trio.Nursery,
        peer_max: int, stream: Stream,
    ) -> None:
        self.ws = ws
        self.nursery = nursery
        #: The largest frame the server accepts (and we send).
        self.peer_max = peer_max
        self.pending: dict[str, ReplySlot | StreamSlot] = {}
        self.ended = trio.Event()
        self.end_reason: str | None = None
        #: The peer is unresponsive: skip the closing handshake.
        self.dead = False
        self.alive = True
        self.started_at = trio.current_time()
        self.link = Link(ws, send_timeout=client.send_timeout,
                         close_timeout=client.close_timeout, on_broken=self.die,
                         direct=stream if isinstance(stream, DirectStream) else None)

    def end(self, reason: str) -> None:
        if self.end_reason is None:
            self.end_reason = reason
        self.ended.set()

    def die(self, reason: str) -> None:
        self.dead = True
        self.end(reason)


class WebSocketClient(RunsOnce):
    """A ``Transport`` over one persistent, multiplexed WebSocket connection.

    Use it as an async context manager (``async with open_client(url) as client``): the
    connection and its tasks live inside the block. ``timeout`` is every call's default
    deadline in seconds (None: no deadline).
    """

    protocol = "websocket"

    def __init__(
        self,
        url: str,
        *,
        timeout: float | None = 30.0,
        protector: FrameProtector | None = None,
        ssl_context: ssl.SSLContext | None = None,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        connect_timeout: float = 10.0,
        send_timeout: float = 10.0,
        close_timeout: float = 2.0,
        heartbeat_interval: float | None = 15.0,
        heartbeat_timeout: float = 10.0,
        reconnect: bool = True,
        backoff_initial: float = 0.1,
        backoff_max: float = 5.0,
        stream_window: int = 64,
        subscription_buffer: int = 256,
        message_queue_size: int = 4,
        extra_headers: Mapping[str, str] | None = None,
    ) -> None:
        self.endpoint = Endpoint.parse(url)
        if ssl_context is not None and not self.endpoint.secure:
            raise ValueError("ssl_context is only for wss:// URLs")
        if stream_window < 1 or subscription_buffer < 1 or max_frame_bytes < 1:
            raise ValueError("stream_window, subscription_buffer and max_frame_bytes must be >= 1")
        self.url = self.endpoint.url
        self.timeout = timeout
        self.ssl_context = ssl_context or (
            ssl.create_default_context() if self.endpoint.secure else None)
        self.max_frame_bytes = max_frame_bytes
        self.framing = ClientFraming(TransportProtocol.WEBSOCKET,
                                     codec=FrameCodec(max_frame_bytes), protector=protector)
        self.connect_timeout = connect_timeout
        self.send_timeout = send_timeout
        self.close_timeout = close_timeout
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_timeout = heartbeat_timeout
        self.reconnect = reconnect
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.stream_window = stream_window
        self.subscription_buffer = subscription_buffer
        self.message_queue_size = message_queue_size
        self._http_headers = [(k.encode(), v.encode()) for k, v in (extra_headers or {}).items()]
        self._http_headers.append((wire.MAX_FRAME_HTTP_HEADER, str(max_frame_bytes).encode()))
        self.stats = ClientStats()
        self._ids = itertools.count(1)
        self._sub_ids = itertools.count(1)
        self._subs: dict[str, WebSocketSubscription] = {}
        self._session: _Session | None = None
        self._changed = trio.Event()
        self._last_failure = "not connected yet"
        self._dead: str | None = None
        self._closed = False
        self._background = trio.CancelScope()
        self._stopped = trio.Event()
        #: Deadlines of unary calls waiting for their reply, served by one timer task.
        self._deadlines = Deadlines[ReplySlot](ReplySlot.expire, _slot_done)
        self._expiry = trio.CancelScope()

    # ------------------------------------------------------------------ lifecycle

    @asynccontextmanager
    async def _running(self) -> AsyncIterator[WebSocketClient]:
        with unwrap_single():
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._expire_calls)
                nursery.start_soon(self._supervise)
                try:
                    yield self
                finally:
                    await self._shut()

    async def aclose(self) -> None:
        """Close the connection and wait for the client's tasks to stop; in-flight calls end
        with CONNECTION_FAILURE and subscriptions' iterations end. Idempotent, and safe
        inside the client's own block (which it does not cancel)."""
        await self._shut()
        if self._started:
            await self._stopped.wait()

    async def _shut(self) -> None:
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        for sub in self._subs.values():
            sub.close()  # their iterations end, as leaving their blocks would end them
        if self._session is not None:
            # Let the supervisor close the connection politely; it stops after that.
            self._session.end("the transport was closed")
        else:
            self._background.cancel()
        self._notify()
        await trio.lowlevel.checkpoint()

    async def _expire_calls(self) -> None:
        with self._expiry:
            await self._deadlines.run()

    @property
    def connected(self) -> bool:
        return self._session is not None and self._session.alive

    def _check_open(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the transport is closed")
        if not self._started:
            raise RuntimeError("use the client as an async context manager (open_client)")

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_connected(self) -> None:
        """Wait until a connection is established (for tests and start-up ordering)."""
        while not self.connected:
            self._check_open()
            await self._changed.wait()

    # ------------------------------------------------------------------ supervisor

    async def _supervise(self) -> None:
        try:
            with self._background:
                failures = 0
                while not self._closed:
                    established, lived = await self._connect_once()
                    if self._closed:
                        break
                    if not self.reconnect:
                        if self._dead is None:  # the first attempt failed
                            self._give_up(self._last_failure,
                                          f"cannot reach {self.url}: {self._last_failure}")
                        break
                    failures = 0 if established and lived >= self.backoff_max else failures + 1
                    if failures:
                        delay = min(self.backoff_max, self.backoff_initial * 2 ** (failures - 1))
                        await trio.sleep(delay * (0.5 + random.random() / 2))
        finally:
            self._stopped.set()
            self._expiry.cancel()

    def _give_up(self, reason: str, message: str) -> None:
        """Without reconnection the first loss is final: fail what waits for a connection."""
        self._dead = reason
        for sub in self._subs.values():
            sub.fail(ConnectionFailure(message, details={"url": self.url, "reason": reason},
                                       retryable=False))
        self._notify()

    def _attempt_failed(self, reason: str) -> None:
        self._last_failure = reason
        self.stats.connect_failures += 1
        log.debug("connection to %s failed: %s", self.url, reason)
        self._notify()

    async def _open_stream(self) -> Stream:
        ep = self.endpoint
        tcp = await trio.open_tcp_stream(ep.host, ep.port)
        if self.ssl_context is None:
            return DirectStream(tcp, self.send_timeout)
        tls = trio.SSLStream(tcp, self.ssl_context, server_hostname=ep.host,
                             https_compatible=True)
        try:
            await tls.do_handshake()
        except BaseException:
            await trio.aclose_forcefully(tls)
            raise
        return tls

    async def _connect_once(self) -> tuple[bool, float]:
        """Connect and serve one session; returns (established, seconds it lived)."""
        self.stats.attempts += 1
        try:
            with trio.fail_after(self.connect_timeout):
                stream = await self._open_stream()
        except _NETWORK_ERRORS as exc:
            self._attempt_failed(_describe(exc))
            return False, 0.0
        session: _Session | None = None
        try:
            async with trio.open_nursery() as nursery:
                with trio.fail_after(self.connect_timeout):
                    ws = await wrap_client_stream(
                        nursery, cast(Any, stream), self.endpoint.host_header,
                        self.endpoint.resource,
                        extra_headers=self._http_headers,
                        message_queue_size=self.message_queue_size,
                        max_message_size=2 * self.max_frame_bytes,
                    )
                peer_max = wire.parse_max_frame(ws.handshake_headers) or self.max_frame_bytes
                session = _Session(self, ws, nursery, min(peer_max, self.max_frame_bytes),
                                   stream)
                await self._run_session(session)
        except BaseExceptionGroup as group:
            matched, rest = group.split(_NETWORK_ERRORS)
            if rest is not None:
                raise rest from None
            assert matched is not None
            if session is None:
                self._attempt_failed(_describe(_leaf(matched)))
        finally:
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(stream)
        if session is None:
            return False, 0.0
        return True, trio.current_time() - session.started_at

    async def _run_session(self, session: _Session) -> None:
        self._session = session
        self.stats.connects += 1
        subs = list(self._subs.values())
        self._notify()
        nursery = session.nursery
        if self.heartbeat_interval is not None:
            nursery.start_soon(self._keepalive, session)
        for sub in subs:
            nursery.start_soon(self._establish, session, sub)
        try:
            await deliver_messages(session.ws, nursery, partial(self._on_message, session),
                                   partial(self._on_closed, session))
            await session.ended.wait()
        finally:
            reason = session.end_reason or "connection closed"
            session.alive = False
            if self._session is session:
                self._session = None
            failure = ConnectionFailure(f"WebSocket connection lost: {reason}",
                                        details={"reason": reason})
            for slot in session.pending.values():
                slot.fail(failure)
            session.pending.clear()
            for sub in self._subs.values():
                sub.deactivate()
            self.stats.disconnects += 1
            self._last_failure = reason
            if not self.reconnect and not self._closed:
                # Now, not after the closing handshake: nothing has to wait for it.
                self._give_up(reason, f"WebSocket connection lost: {reason}")
            self._notify()
            # The library's reader task lives in this nursery too: close first, so the
            # closing handshake can complete, then stop our own tasks.
            await session.link.close(1000, abort=session.dead)
            nursery.cancel_scope.cancel()

    async def _keepalive(self, session: _Session) -> None:
        assert self.heartbeat_interval is not None
        while True:
            await trio.sleep(self.heartbeat_interval)
            if not await session.link.ping(self.heartbeat_timeout):
                session.die(f"no pong within {self.heartbeat_timeout} s")
                return

    def _on_closed(self, session: _Session, reason: CloseReason | None) -> None:
        session.end("closed by the server: " + describe_close(reason))

    async def _on_message(self, session: _Session, message: str | bytes) -> None:
        """Route one received frame; never waits on a consumer."""
        try:
            frame = self.framing.decode_frame(message)
        except IntentusError as exc:
            self._undecodable(session, message, exc)
            return
        headers = frame.headers
        if frame.message_type is _RESPONSE:
            rid = headers.get(h.REQUEST_ID)
            pending = session.pending
            slot = pending.get(rid) if rid is not None else None
            if slot is None:
                self.stats.unmatched += 1
                return
            try:
                item = reply_item(frame)
            except IntentusError as exc:
                slot.fail(exc)
                del pending[rid]  # type: ignore[arg-type]
                return
            if slot.deliver(item):
                del pending[rid]  # type: ignore[arg-type]
        elif frame.message_type is MessageType.EVENT and isinstance(frame.body, Event):
            sub = self._subs.get(headers.get(wire.SUBSCRIPTION, ""))
            if sub is None:
                self.stats.unmatched += 1
                return
            sub.push(frame.body, _count(headers.get(wire.DROPPED)))
        else:
            self.stats.unmatched += 1

    def _undecodable(self, session: _Session, message: str | bytes, exc: IntentusError) -> None:
        rid = _request_id_of(message)
        slot = session.pending.pop(rid, None) if rid is not None else None
        if slot is None:
            self.stats.malformed += 1
            log.warning("undecodable frame from %s: %s", self.url, exc.message)
        else:
            slot.fail(exc)

    # ------------------------------------------------------------------ calls

    async def _ready(self, deadline: float) -> _Session:
        """The live session, waiting for the next connection attempt if there is none."""
        while True:
            session = self._session
            if session is not None and session.alive and session.link.broken is None:
                return session
            if self._closed:
                raise ConnectionFailure("the transport was closed")
            if self._dead is not None:
                raise self._unreachable(self._dead)
            failures = self.stats.connect_failures
            changed = self._changed
            with trio.move_on_at(deadline):
                await changed.wait()
            if trio.current_time() >= deadline:
                raise TransportTimeout(f"not connected to {self.url} within the deadline",
                                       details={"reason": self._last_failure})
            if self._session is None and self.stats.connect_failures > failures:
                # Without reconnection, no later attempt will come: not worth retrying.
                raise ConnectionFailure(f"cannot connect to {self.url}: {self._last_failure}",
                                        details={"url": self.url, "reason": self._last_failure},
                                        retryable=self.reconnect)

    def _unreachable(self, reason: str) -> ConnectionFailure:
        return ConnectionFailure(f"cannot reach {self.url}: {reason}",
                                 details={"url": self.url, "reason": reason}, retryable=False)

    def _limit(self, timeout: float | None) -> tuple[float | None, float]:
        limit = self.timeout if timeout is _UNSET else timeout
        deadline = math.inf if limit is None else trio.current_time() + limit
        return limit, deadline

    @staticmethod
    def _timeout(limit: float | None) -> TransportTimeout:
        return TransportTimeout(f"no response within {limit} s", details={"timeout": limit})

    @classmethod
    def _timed_out(cls, limit: float | None, trace_id: str | None) -> AgentResponse:
        return cls._timeout(limit).to_response(trace_id=trace_id)

    def _next_id(self) -> str:
        return str(next(self._ids))

    @staticmethod
    def _text(data: bytes, limit: int) -> str:
        if len(data) > limit:
            raise PayloadTooLarge(len(data), limit)
        return data.decode()

    def _encode_intent(
        self, env: IntentEnvelope, rid: str, limit: int, deadline: float, *, stream: bool = False
    ) -> str:
        headers = timeout_headers(deadline)
        if stream:
            headers[h.STREAM] = wire.STREAM_OPEN
            headers[wire.WINDOW] = str(self.stream_window)
        return self._text(self.framing.encode_intent(env, request_id=rid, headers=headers), limit)

    def _encode_control(
        self, op: wire.Control, rid: str, limit: int, payload: JsonObject | None = None
    ) -> str:
        # The server answers subscribe and unsubscribe, never credit or cancel.
        data = self.framing.encode_intent(
            wire.control_intent(op, payload), request_id=rid, headers={wire.CONTROL: op.value},
            expect_reply=op is not wire.Control.CREDIT and op is not wire.Control.CANCEL)
        return self._text(data, limit)

    def _encode_event(self, event: Event, rid: str, limit: int) -> str:
        frame = event_frame(event, TransportProtocol.WEBSOCKET)
        frame = replace(frame, headers={**frame.headers, h.REQUEST_ID: rid})
        if self.framing.protector is not None:
            frame = self.framing.protector.seal(frame)
        return self._text(self.framing.codec.encode(frame), limit)

    async def _roundtrip(
        self,
        encode: Callable[[str, int], str],
        trace_id: str | None,
        limit: float | None,
        deadline: float,
        session: _Session | None = None,
    ) -> AgentResponse | IntentusError:
        """Send one request frame and wait for its reply, within ``deadline``.

        Returns the reply received, or the local failure (a timeout, a lost connection, an
        unreadable reply) as the exception naming it.

        On the usual path (connected, nothing else being written) no cancel scope is
        entered: the frame is written without waiting and the deadline timer settles the
        reply slot if the reply is late.
        """
        if session is None:
            session = self._session
            if session is None or not session.alive or session.link.broken is not None:
                ready: _Session | None = None
                with trio.move_on_at(deadline):
                    try:
                        ready = await self._ready(deadline)
                    except IntentusError as exc:
                        return exc
                if ready is None:
                    return self._timeout(limit)
                session = ready
        slot = ReplySlot(trace_id, limit)
        rid = self._next_id()
        try:
            text = encode(rid, session.peer_max)
        except IntentusError as exc:
            return exc
        link = session.link
        pending = session.pending
        pending[rid] = slot
        sent = False
        try:
            try:
                if not session.alive:
                    raise ConnectionFailure(
                        f"WebSocket connection lost: {session.end_reason}",
                        details={"reason": session.end_reason})
                if link.can_send_now():
                    await link.send(text)  # written at once, without waiting
                else:
                    with trio.move_on_at(deadline) as scope:
                        await link.send(text)
                    if scope.cancelled_caught:  # still waiting for its turn: nothing sent
                        return self._timeout(limit)
            except IntentusError as exc:
                return exc
            sent = True
            if deadline != math.inf:
                self._deadlines.add(deadline, slot)
            result = await slot.wait()
            return result if slot.error is None else slot.error
        finally:
            if pending.pop(rid, None) is not None:
                self._cancel_remote(session, rid, sent)

    def _cancel_remote(self, session: _Session, rid: str, sent: bool) -> None:
        """Tell the server to stop a call we no longer wait for (best effort)."""
        if sent and session.alive:
            session.nursery.start_soon(self._send_control, session, wire.Control.CANCEL, rid)

    async def _send_control(
        self, session: _Session, op: wire.Control, rid: str, payload: JsonObject | None = None
    ) -> None:
        # A failure means the connection is going; the reader reports that to the call.
        with suppress(IntentusError):
            await session.link.send(self._encode_control(op, rid, session.peer_max, payload))

    async def send_intent(
        self, env: IntentEnvelope, *, timeout: float | None = _UNSET
    ) -> AgentResponse:
        self._check_open()
        limit, deadline = self._limit(timeout)
        trace_id = env.metadata.trace_id
        result = await self._roundtrip(
            lambda rid, peer_max: self._encode_intent(env, rid, peer_max, deadline),
            trace_id, limit, deadline,
        )
        return as_response(result, trace_id)

    async def send_stream(
        self, env: IntentEnvelope, *, timeout: float | None = _UNSET
    ) -> AsyncGenerator[StreamItem, None]:
        self._check_open()
        limit, deadline = self._limit(timeout)
        trace_id = env.metadata.trace_id
        slot = StreamSlot(self.stream_window, trace_id)
        session: _Session | None = None
        rid = ""
        sent = finished = False
        failure: AgentResponse | None = None
        try:
            with trio.move_on_at(deadline):
                try:
                    session = await self._ready(deadline)
                    rid = self._next_id()
                    text = self._encode_intent(env, rid, session.peer_max, deadline, stream=True)
                    session.pending[rid] = slot
                    await session.link.send(text)
                    sent = True
                except IntentusError as exc:
                    failure = exc.to_response(trace_id=trace_id)
            if not sent or session is None:
                finished = True
                yield failure or self._timed_out(limit, trace_id)
                return
            taken = 0
            grant_every = max(1, self.stream_window // 2)
            while True:
                item: StreamItem | None = None
                with trio.move_on_at(deadline):
                    item = await slot.receive()
                if item is None:
                    yield self._timed_out(limit, trace_id)
                    return
                if not isinstance(item, StreamChunk):
                    finished = True
                    yield item
                    return
                taken += 1
                if taken >= grant_every:
                    with trio.move_on_at(deadline):
                        await self._send_control(session, wire.Control.CREDIT, rid,
                                                 {"credit": taken})
                    taken = 0
                yield item
        finally:
            if session is not None and rid:
                session.pending.pop(rid, None)
                if not finished:
                    self._cancel_remote(session, rid, sent)

    # ------------------------------------------------------------------ events

    async def publish_acked(self, event: Event, *, timeout: float | None = _UNSET) -> AgentResponse:
        """Publish ``event`` on the server's event bus; returns its acknowledgement
        (payload ``{"delivered": n}``) or an error response."""
        return as_response(await self._publish(event, timeout), event.trace_id)

    async def publish(self, event: Event, *, timeout: float | None = _UNSET) -> None:
        """Publish ``event``. Raises ``RemoteError`` (carrying the error response) when the
        server refuses it, and the local error (``TransportTimeout``, ``ConnectionFailure``,
        ...) when no acknowledgement comes."""
        raise_for_outcome(await self._publish(event, timeout))

    async def _publish(self, event: Event, timeout: float | None) -> AgentResponse | IntentusError:
        self._check_open()
        limit, deadline = self._limit(timeout)
        return await self._roundtrip(
            lambda rid, peer_max: self._encode_event(event, rid, peer_max),
            event.trace_id, limit, deadline,
        )

    async def _control_call(
        self, session: _Session, op: wire.Control, payload: JsonObject, timeout: float | None
    ) -> AgentResponse | IntentusError:
        limit, deadline = self._limit(timeout)
        return await self._roundtrip(
            lambda rid, peer_max: self._encode_control(op, rid, peer_max, payload),
            None, limit, deadline, session,
        )

    async def _establish(
        self, session: _Session, sub: WebSocketSubscription
    ) -> AgentResponse | IntentusError:
        outcome = await self._control_call(
            session, wire.Control.SUBSCRIBE,
            {wire.SUBSCRIPTION: sub.id, "eventType": sub.event_type}, _UNSET,
        )
        response = as_response(outcome, None)
        if response.ok:
            if self._subs.get(sub.id) is sub:
                if session.alive:
                    sub.activate()
                    self._notify()  # wakes a ``subscribe`` waiting for this
            elif session.alive:  # left the block while the server was subscribing it
                session.nursery.start_soon(self._send_control, session,
                                           wire.Control.UNSUBSCRIBE, self._next_id(),
                                           {wire.SUBSCRIPTION: sub.id})
        elif session.alive:
            log.warning("subscription to %r refused by %s: %s", sub.event_type, self.url,
                        response.error.message if response.error else "error")
        return outcome

    @asynccontextmanager
    async def subscribe(self, event_type: str) -> AsyncIterator[WebSocketSubscription]:
        """Receive events of ``event_type`` (exact or fnmatch pattern) inside the block.

        Entering waits for the server's acknowledgement (within the transport's timeout)
        while connected; a refusal raises ``RemoteError``. The subscription survives
        reconnections: it is re-established on every new connection. Without one to come
        (``reconnect=False`` after the connection was lost or could not be made), entering
        raises ``ConnectionFailure``, and so does iterating once the queued events are read.
        Iteration ends when the client closes.
        """
        self._check_open()
        if not 0 < len(event_type) <= 256:
            raise ValueError("event_type must have 1..256 characters")
        sub = WebSocketSubscription(str(next(self._sub_ids)), event_type,
                                    self.subscription_buffer)
        self._subs[sub.id] = sub
        try:
            deadline = trio.current_time() + (math.inf if self.timeout is None else self.timeout)
            session = self._session
            outcome = None
            if session is not None and session.alive:
                outcome = await self._establish(session, sub)
                response = as_response(outcome, None)
                if response.error is not None and response.error.code is not (
                    ErrorCode.TRANSPORT_ERROR
                ):
                    raise_for_error(response)
            if outcome is None or isinstance(outcome, ConnectionFailure):
                # Not connected, or the connection was lost meanwhile: wait for the next.
                with trio.move_on_at(deadline):
                    await self._wait_established(sub)
            yield sub
        finally:
            del self._subs[sub.id]
            was_active = sub.active
            sub.close()
            session = self._session
            if was_active and session is not None and session.alive:
                with trio.CancelScope(shield=True):
                    await self._control_call(session, wire.Control.UNSUBSCRIBE,
                                             {wire.SUBSCRIPTION: sub.id}, self.close_timeout)

    async def _wait_established(self, sub: WebSocketSubscription) -> None:
        """Wait until a connection carries ``sub``; raise if none will."""
        while not sub.active:
            if sub.failure is not None:
                raise sub.failure
            if self._closed:
                raise ConnectionFailure("the transport was closed")
            if self._dead is not None:
                raise self._unreachable(self._dead)
            await self._changed.wait()


def open_client(url: str, **options: Any) -> WebSocketClient:
    """``async with open_client("ws://host:port/") as transport: ...``"""
    return WebSocketClient(url, **options)
