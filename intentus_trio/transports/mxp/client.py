"""The MXP client transport: every call on its own stream of a pooled MXP connection.

A call opens a stream with the urgency its intent's priority asks for, writes one request
message and reads the reply; a deadline or a cancellation resets the stream, which the
server turns into cancelling the agent, and the connection goes on carrying other calls.
Subscriptions are long-lived streams, re-opened (with backoff) after a connection is lost.
"""

from __future__ import annotations

import itertools
import logging
import math
import random
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

import trio

from ..._groups import unwrap_single
from ...mxp.driver import (
    PublicKeyLike,
    StaticKeyLike,
    public_key_bytes,
    static_keypair,
)
from ...mxp.message import MessageType, MxpMessage
from ...mxp.stream import StreamResetError, StreamStoppedError
from ...protocol.codec import DEFAULT_MAX_FRAME_BYTES, FrameCodec
from ...protocol.enums import ErrorCode, Priority, TransportProtocol
from ...protocol.errors import (
    ConnectionFailure,
    IntentusError,
    ProtocolError,
    TransportTimeout,
    as_response,
    raise_for_error,
    raise_for_outcome,
)
from ...protocol.factory import new_intent
from ...protocol.models import AgentResponse, Event, IntentEnvelope, StreamChunk
from ...routing.events import DEFAULT_SUBSCRIPTION_BUFFER
from ..base import StreamItem
from ..framing import ClientFraming, FrameProtector, timeout_headers
from ..lifetime import RunsOnce
from ..remote_subscription import RemoteSubscription
from . import wire
from .backend import STREAM_ERRORS, Backend, closed_reason
from .endpoint import MxpEndpoint
from .pool import Link, MxpPool

log = logging.getLogger("intentus_trio.transports.mxp")

_UNSET: Any = object()
_CALL_REPLIES = frozenset({MessageType.RESPONSE})
_STREAM_REPLIES = frozenset({MessageType.STREAM_CHUNK, MessageType.STREAM_CLOSE})
_SUBSCRIPTION_REPLIES = frozenset({MessageType.RESPONSE, MessageType.EVENT,
                                   MessageType.STREAM_CLOSE})


class MxpSubscription(RemoteSubscription):
    """An async iterator of the events of one subscription, across reconnections.

    Events wait in a bounded buffer that drops its oldest when full; ``dropped`` counts
    those and the server's own drops. Events published while no connection carries the
    subscription are not seen and not counted.
    """

    def __init__(self, event_type: str, buffer: int) -> None:
        super().__init__(event_type, buffer)
        self.scope = trio.CancelScope()


class MxpTransport(RunsOnce):
    """A ``Transport`` to the MXP server at ``url`` (``mxp://host:port?key=<public key>``).

    Use it as an async context manager (``async with open_client(url) as transport``).
    ``timeout`` is every call's default deadline in seconds (None: none). ``server_key``
    names the server's public key when the URL does not (bytes, key pair or ``.pub`` file);
    ``static_key`` is this client's identity (key pair, bytes or private key file; default:
    generated). ``pool`` shares connections between transports; without one the transport
    has its own, and ``connect_timeout``, ``connections_per_peer``, ``backend`` and the
    remaining options configure it (see ``MxpPool``).
    """

    protocol = "mxp"

    def __init__(
        self,
        url: str,
        *,
        timeout: float | None = 30.0,
        protector: FrameProtector | None = None,
        server_key: PublicKeyLike | None = None,
        static_key: StaticKeyLike | None = None,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        pool: MxpPool | None = None,
        connect_timeout: float = 10.0,
        connections_per_peer: int = 1,
        backend: Backend | None = None,
        subscription_buffer: int = DEFAULT_SUBSCRIPTION_BUFFER,
        backoff_initial: float = 0.1,
        backoff_max: float = 5.0,
        **options: Any,
    ) -> None:
        endpoint = MxpEndpoint.parse(url)
        if server_key is not None:
            endpoint = endpoint.with_key(public_key_bytes(server_key))
        if endpoint.key is None:
            raise ValueError("the server's public key is needed: mxp://host:port?key=<base64>"
                             " or server_key=")
        if max_frame_bytes < 1 or subscription_buffer < 1:
            raise ValueError("max_frame_bytes and subscription_buffer must be >= 1")
        if pool is not None and (static_key is not None or backend is not None or options):
            raise ValueError("static_key, backend and connection options belong to the pool")
        self.endpoint = endpoint
        self.url = endpoint.url
        self.timeout = timeout
        self.max_frame_bytes = max_frame_bytes
        self.framing = ClientFraming(TransportProtocol.MXP, codec=FrameCodec(max_frame_bytes),
                                     protector=protector)
        self._own_pool = pool is None
        self.pool = pool if pool is not None else MxpPool(
            static_key=static_keypair(static_key) if static_key is not None else None,
            connect_timeout=connect_timeout, connections_per_peer=connections_per_peer,
            backend=backend, **options)
        self.subscription_buffer = subscription_buffer
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self._ids = itertools.count(1)
        self._nursery: trio.Nursery | None = None
        #: Live subscriptions, which closing ends: one not acknowledged yet still runs in
        #: the subscribing task's cancel scopes, where cancelling the nursery does not reach.
        self._subscriptions: set[MxpSubscription] = set()
        self._stopped = trio.Event()
        self._closed = False

    # ------------------------------------------------------------------ lifecycle

    @asynccontextmanager
    async def _running(self) -> AsyncIterator[MxpTransport]:
        with unwrap_single():
            async with trio.open_nursery() as nursery:
                self._nursery = await nursery.start(self._background)
                try:
                    yield self
                finally:
                    await self.aclose()

    async def _background(self, *, task_status: trio.TaskStatus[trio.Nursery]) -> None:
        """The transport's tasks (its pool, subscriptions) in a nursery of their own task:
        closing cancels them and never the caller's block."""
        try:
            async with trio.open_nursery() as nursery:
                if self._own_pool:
                    await nursery.start(self._run_pool)
                task_status.started(nursery)
                await trio.sleep_forever()
        finally:
            self._stopped.set()

    async def _run_pool(self, *, task_status: trio.TaskStatus[None]) -> None:
        async with self.pool.running():
            task_status.started()
            await trio.sleep_forever()

    async def aclose(self) -> None:
        """Close the transport: its subscriptions (their iteration ends) and, if it owns the
        pool, its connections (calls in flight end with CONNECTION_FAILURE). Later calls raise
        ``trio.ClosedResourceError``. Safe inside the ``async with`` block and idempotent."""
        self._closed = True
        if self._nursery is None:
            await trio.lowlevel.checkpoint()
            return
        self._nursery.cancel_scope.cancel()
        for sub in list(self._subscriptions):
            sub.scope.cancel()
        with trio.CancelScope(shield=True):
            await self._stopped.wait()

    def _check_open(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the transport is closed")
        if not self._started:
            raise RuntimeError("use the transport as an async context manager (open_client)")

    @property
    def connected(self) -> bool:
        return bool(self.pool.links(self.endpoint))

    # ------------------------------------------------------------------ helpers

    def _limit(self, timeout: float | None) -> tuple[float | None, float]:
        limit = self.timeout if timeout is _UNSET else timeout
        return limit, math.inf if limit is None else trio.current_time() + limit

    @staticmethod
    def _timeout(limit: float | None) -> TransportTimeout:
        return TransportTimeout(f"no response within {limit} s", details={"timeout": limit})

    @classmethod
    def _timed_out(cls, limit: float | None, trace_id: str | None) -> AgentResponse:
        return cls._timeout(limit).to_response(trace_id=trace_id)

    def _lost(self, exc: BaseException) -> ConnectionFailure:
        if isinstance(exc, StreamResetError | StreamStoppedError) and (
                exc.error_code == wire.SHUTTING_DOWN):
            reason = "the server is shutting down and took no new call"
        else:
            reason = closed_reason(exc)
        return ConnectionFailure(f"MXP stream to {self.url} failed: {reason}",
                                 details={"url": self.url, "reason": reason})

    def _reply(self, msg: MxpMessage | None, mid: int,
               kinds: frozenset[MessageType]) -> StreamItem:
        """The item a reply message carries; raises IntentusError for anything else."""
        if msg is None:
            raise ConnectionFailure("the server closed the stream without a final reply")
        if msg.message_id != mid:
            raise ProtocolError(f"reply to message {msg.message_id}, expected {mid}")
        if msg.type not in kinds and msg.type is not MessageType.ERROR:
            raise ProtocolError(f"unexpected {msg.type.label} message in reply")
        return self.framing.decode_reply(msg.payload)

    async def _open(self, urgency: int, deadline: float) -> tuple[Link, Any]:
        link = await self.pool.link(self.endpoint, deadline)
        stream = await link.open_stream(urgency)
        return link, stream

    # ------------------------------------------------------------------ calls

    async def _exchange(
        self, kind: MessageType, payload: bytes, mid: int, trace_id: str | None,
        urgency: int, limit: float | None, deadline: float,
    ) -> AgentResponse | IntentusError:
        """One request message, one reply message, on a stream of its own.

        Returns the reply, or the local failure (a timeout, a lost stream, an unreadable
        reply) as the exception naming it."""
        link: Link | None = None
        stream: Any = None
        done = False
        response: AgentResponse | IntentusError | None = None
        try:
            with trio.move_on_at(deadline):
                try:
                    link, stream = await self._open(urgency, deadline)
                    link.in_flight += 1
                    await stream.send_all(wire.message(kind, payload, mid,
                                                       wire.wire_trace(trace_id)))
                    msg = await wire.MessageReader(stream, self.max_frame_bytes).next()
                    item = self._reply(msg, mid, _CALL_REPLIES)
                    if isinstance(item, StreamChunk):
                        raise ProtocolError("received a stream chunk for a unary call")
                    response = item
                    done = True
                except IntentusError as exc:
                    response = exc
                except STREAM_ERRORS as exc:
                    response = self._lost(exc)
            return response if response is not None else self._timeout(limit)
        finally:
            if link is not None:
                link.in_flight -= 1
            if stream is not None:
                await _finish(stream, done)

    async def send_intent(
        self, env: IntentEnvelope, *, timeout: float | None = _UNSET
    ) -> AgentResponse:
        self._check_open()
        limit, deadline = self._limit(timeout)
        trace_id = env.metadata.trace_id
        mid = next(self._ids)
        try:
            data = self.framing.encode_intent(env, request_id=str(mid),
                                              headers=timeout_headers(deadline))
        except IntentusError as exc:
            return exc.to_response(trace_id=trace_id)
        result = await self._exchange(MessageType.CALL, data, mid, trace_id,
                                      wire.URGENCY[env.context.priority], limit, deadline)
        return as_response(result, trace_id)

    async def send_stream(
        self, env: IntentEnvelope, *, timeout: float | None = _UNSET
    ) -> AsyncGenerator[StreamItem, None]:
        self._check_open()
        limit, deadline = self._limit(timeout)
        trace_id = env.metadata.trace_id
        mid = next(self._ids)
        link: Link | None = None
        stream: Any = None
        done = False
        failure: AgentResponse | None = None
        try:
            with trio.move_on_at(deadline):
                try:
                    data = self.framing.encode_intent(env, request_id=str(mid),
                                                      headers=timeout_headers(deadline))
                    link, stream = await self._open(wire.URGENCY[env.context.priority],
                                                    deadline)
                    link.in_flight += 1
                    await stream.send_all(wire.message(MessageType.STREAM_OPEN, data, mid,
                                                       wire.wire_trace(trace_id)))
                except IntentusError as exc:
                    failure = exc.to_response(trace_id=trace_id)
                except STREAM_ERRORS as exc:
                    failure = self._lost(exc).to_response(trace_id=trace_id)
            if stream is None or failure is not None:
                yield failure or self._timed_out(limit, trace_id)
                return
            reader = wire.MessageReader(stream, self.max_frame_bytes)
            while True:
                item: StreamItem | None = None
                with trio.move_on_at(deadline):
                    try:
                        msg = await reader.next()
                        item = self._reply(msg, mid, _STREAM_REPLIES)
                        if (msg is not None and msg.type is MessageType.STREAM_CHUNK) != (
                                isinstance(item, StreamChunk)):
                            raise ProtocolError("a stream chunk must travel as STREAM_CHUNK "
                                                "and the final response as STREAM_CLOSE")
                    except IntentusError as exc:
                        item = exc.to_response(trace_id=trace_id)
                    except STREAM_ERRORS as exc:
                        item = self._lost(exc).to_response(trace_id=trace_id)
                if item is None:
                    yield self._timed_out(limit, trace_id)
                    return
                if isinstance(item, StreamChunk):
                    yield item
                    continue
                done = item.error is None or item.error.code is not ErrorCode.TRANSPORT_ERROR
                yield item
                return
        finally:
            if link is not None:
                link.in_flight -= 1
            if stream is not None:
                await _finish(stream, done)

    # ------------------------------------------------------------------ events

    async def publish_acked(self, event: Event, *, timeout: float | None = _UNSET
                            ) -> AgentResponse:
        """Publish ``event`` on the server's event bus; returns its acknowledgement
        (payload ``{"delivered": n}``) or an error response."""
        return as_response(await self._publish(event, timeout), event.trace_id)

    async def publish(self, event: Event, *, timeout: float | None = _UNSET) -> None:
        """Publish ``event``. Raises ``RemoteError`` (carrying the error response) when the
        server refuses it, and the local error (``TransportTimeout``, ``ConnectionFailure``,
        ...) when no acknowledgement comes."""
        raise_for_outcome(await self._publish(event, timeout))

    async def _publish(self, event: Event, timeout: float | None
                       ) -> AgentResponse | IntentusError:
        self._check_open()
        limit, deadline = self._limit(timeout)
        mid = next(self._ids)
        try:
            data = self.framing.encode_event(event)
        except IntentusError as exc:
            return exc
        return await self._exchange(MessageType.EVENT, data, mid, event.trace_id,
                                    wire.URGENCY[Priority.NORMAL], limit, deadline)

    @asynccontextmanager
    async def subscribe(self, event_type: str) -> AsyncIterator[MxpSubscription]:
        """Receive events of ``event_type`` (exact or fnmatch pattern) inside the block.

        Entering waits (within the transport's timeout) for the server's acknowledgement; a
        refusal raises ``RemoteError``, an unreachable server does not: the subscription is
        established as soon as a connection can be made, and again after every loss.
        """
        self._check_open()
        if not 0 < len(event_type) <= 256:
            raise ValueError("event_type must have 1..256 characters")
        assert self._nursery is not None
        sub = MxpSubscription(event_type, self.subscription_buffer)
        self._subscriptions.add(sub)
        try:
            first: AgentResponse = await self._nursery.start(self._keep_subscribed, sub)
            if first.error is not None and first.error.code is not ErrorCode.TRANSPORT_ERROR:
                raise_for_error(first)
            yield sub
        finally:
            self._subscriptions.discard(sub)
            sub.scope.cancel()
            sub.close()

    async def _keep_subscribed(
        self, sub: MxpSubscription, *, task_status: trio.TaskStatus[AgentResponse]
    ) -> None:
        reported = False
        failures = 0

        def report(response: AgentResponse) -> None:
            nonlocal reported
            if not reported:
                reported = True
                task_status.started(response)

        try:
            with sub.scope:
                while True:
                    acked = await self._subscribe_once(sub, report)
                    failures = 0 if acked else failures + 1
                    delay = self.backoff_initial if acked else min(
                        self.backoff_max, self.backoff_initial * 2 ** (failures - 1))
                    await trio.sleep(delay * (0.5 + random.random() / 2))
            # The transport was closed (the block's own exit comes after the report): the
            # subscription is entered already ended, as every other one ends.
            report(ConnectionFailure("the transport was closed",
                                     details={"reason": "closed"}).to_response())
        finally:
            sub.close()  # the block was left or the transport closed: iteration ends

    async def _subscribe_once(self, sub: MxpSubscription, report: Any) -> bool:
        """Open one subscription stream and forward its events until it ends; True if the
        server acknowledged it."""
        mid = next(self._ids)
        env = new_intent(wire.SUBSCRIBE_INTENT, {"eventType": sub.event_type},
                         source="intentus-trio-mxp")
        stream: Any = None
        ack: StreamItem | None = None
        acked = False
        limit, deadline = self._limit(_UNSET)
        try:
            with trio.move_on_at(deadline):
                try:
                    data = self.framing.encode_intent(
                        env, request_id=str(mid), headers={wire.CONTROL: wire.SUBSCRIBE})
                    _, stream = await self._open(wire.URGENCY[Priority.NORMAL], deadline)
                    await stream.send_all(wire.message(MessageType.STREAM_OPEN, data, mid, 0))
                    reader = wire.MessageReader(stream, self.max_frame_bytes)
                    ack = self._reply(await reader.next(), mid, _SUBSCRIPTION_REPLIES)
                    if not isinstance(ack, AgentResponse) or ack.error is not None:
                        report(ack if isinstance(ack, AgentResponse) else
                               ProtocolError("bad subscription reply").to_response())
                        return False
                except IntentusError as exc:
                    report(exc.to_response())
                    return False
                except STREAM_ERRORS as exc:
                    report(self._lost(exc).to_response())
                    return False
            if stream is None or not isinstance(ack, AgentResponse):
                report(self._timed_out(limit, None))
                return False
            acked = True
            sub.activate()
            report(ack)
            await self._forward(sub, reader, mid)
            return True
        finally:
            sub.deactivate()
            if stream is not None:
                await _finish(stream, acked)

    async def _forward(self, sub: MxpSubscription, reader: wire.MessageReader, mid: int
                       ) -> None:
        while True:
            try:
                msg = await reader.next()
                if msg is None or msg.type is not MessageType.EVENT or msg.message_id != mid:
                    return
                frame = self.framing.decode_frame(msg.payload)
            except IntentusError as exc:
                log.warning("bad event from %s: %s", self.url, exc.message)
                return
            except STREAM_ERRORS:
                return
            if isinstance(frame.body, Event):
                sub.push(frame.body, _count(frame.headers.get(wire.DROPPED)))


async def _finish(stream: Any, graceful: bool) -> None:
    """Close a call's stream: gracefully after its final reply, else reset it."""
    if graceful:
        with suppress(*STREAM_ERRORS):
            await stream.aclose()
    else:
        await wire.abort(stream, wire.CANCELLED)


def _count(text: str | None) -> int | None:
    if text is None or not (text.isascii() and text.isdigit()) or len(text) > 12:
        return None  # isascii: isdigit() also accepts digits int() refuses ("²")
    return int(text)


def open_client(url: str, **options: Any) -> MxpTransport:
    """``async with open_client("mxp://127.0.0.1:4433?key=...") as transport: ...``"""
    return MxpTransport(url, **options)
