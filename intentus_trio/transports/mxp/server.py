"""The MXP server: ``await nursery.start(serve, router, "mxp://127.0.0.1:0")``.

Each connection's streams are served concurrently, each by a task of its own: read the
request message, route it through the ``FrameDispatcher``, write the reply. While an agent
works, the stream is watched: a client that resets it (deadline, cancellation) cancels the
agent. Garbage on one stream gets an ERROR reply on that stream and nothing else changes.

Shutdown (``serve`` cancelled) is graceful: new connections and streams are refused at once,
subscriptions end at once, running calls get ``shutdown_timeout`` seconds to finish and be
answered; calls still running then are cancelled and answered with an error, and every
connection is closed.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Iterable
from contextlib import aclosing, suppress
from typing import Any

import attrs
import trio
from msgspec.structs import replace

from ..._groups import unwrap_single
from ...mxp.config import allow_any, allow_keys
from ...mxp.driver import (
    PublicKeyLike,
    StaticKeyLike,
    public_key_bytes,
    static_keypair,
)
from ...mxp.message import MessageType, MxpMessage
from ...mxp.noise import KeyPair
from ...protocol import headers as h
from ...protocol.codec import DEFAULT_MAX_FRAME_BYTES, FrameCodec
from ...protocol.enums import MessageType as FrameType
from ...protocol.enums import TransportProtocol
from ...protocol.errors import (
    ConnectionFailure,
    IntentusError,
    PayloadTooLarge,
    ProtocolError,
    TransportTimeout,
    UnsupportedMessageType,
    ValidationError,
)
from ...protocol.models import AgentResponse, Event, IntentEnvelope, TransportEnvelope
from ...protocol.versions import negotiate
from ...routing.events import DEFAULT_SUBSCRIPTION_BUFFER
from ...routing.router import Router
from ..framing import (
    FrameDispatcher,
    FrameProtector,
    call_timeout,
    event_frame,
    response_frame,
)
from ..lifetime import shielded_nursery
from . import wire
from .backend import STREAM_ERRORS, Backend, ClientPolicy, MxpBackend, StreamConnection
from .endpoint import MxpEndpoint

log = logging.getLogger("intentus_trio.transports.mxp")

#: Seconds the last replies of a shutdown (error replies of calls cut off at the end of the
#: grace period, and any reply data the clients have not acknowledged yet) get to reach their
#: clients before the connections close; also how long a reply message being written when
#: its call is cut off may take to be finished.
FAREWELL_TIMEOUT = 1.0

WATCH_ERRORS: tuple[type[BaseException], ...] = (IntentusError, *STREAM_ERRORS)
_INTENT_TYPES = frozenset({FrameType.INTENT, FrameType.EMCL})
_FINAL = {MessageType.CALL: MessageType.RESPONSE, MessageType.EVENT: MessageType.RESPONSE,
          MessageType.STREAM_OPEN: MessageType.STREAM_CLOSE}


class _Call:
    """A running call: its deadline scope, which the end of a shutdown's grace period
    cancels, and the reply message being written, which no cancellation may cut in two: a
    final reply written after half a message would reach the client as garbage."""

    __slots__ = ("_writing", "broken", "scope")

    def __init__(self, scope: trio.CancelScope) -> None:
        self.scope = scope
        self._writing: trio.CancelScope | None = None
        #: A message was left half written: the stream can only be reset.
        self.broken = False

    def cut(self) -> None:
        """End the call; a message being written gets FAREWELL_TIMEOUT seconds to finish."""
        self.scope.cancel()
        writing = self._writing
        if writing is not None:
            writing.deadline = min(writing.deadline, trio.current_time() + FAREWELL_TIMEOUT)

    def drop(self) -> None:
        """The client is gone: stop at once, mid-message or not."""
        self.scope.cancel()
        if self._writing is not None:
            self._writing.cancel()

    async def send(self, stream: trio.abc.SendStream, data: bytes) -> None:
        """Write one whole message. Past the call's deadline (or a cut) a message already
        begun is finished, for at most FAREWELL_TIMEOUT seconds; if even that fails the call
        is ``broken`` and ends."""
        await trio.lowlevel.checkpoint_if_cancelled()
        with trio.CancelScope(shield=True,
                              deadline=self.scope.deadline + FAREWELL_TIMEOUT) as writing:
            self._writing = writing
            try:
                await stream.send_all(data)
            finally:
                self._writing = None
        if writing.cancelled_caught:
            self.broken = True
            self.scope.cancel()
            await trio.lowlevel.checkpoint()  # raises Cancelled


@attrs.define
class ServerStats:
    connections: int = 0
    streams: int = 0
    #: Streams answered with ERROR (garbage, bad checksum, wrong message type, oversize).
    refused: int = 0
    #: Calls whose client reset the stream (deadline or cancellation) before the reply.
    cancelled: int = 0
    timeouts: int = 0
    events_out: int = 0
    events_skipped: int = 0
    peak_active: int = 0


class MxpServer:
    """Serves ``router`` over MXP at ``url``; ``run`` is for ``nursery.start``.

    ``static_key`` is the server's identity (key pair, 32 bytes or a private key file from
    ``intentus-trio keygen x25519``); without one a key is generated for this run, and the
    bound URL (``url`` after ``run`` started) names its public half. ``client_keys`` (public
    keys or ``.pub`` files) restricts who may connect; ``client_policy`` decides freely;
    by default any client that completes the handshake is served.
    """

    def __init__(
        self,
        router: Router,
        url: str = "mxp://127.0.0.1:0",
        *,
        static_key: StaticKeyLike | None = None,
        client_keys: Iterable[PublicKeyLike] | None = None,
        client_policy: ClientPolicy | None = None,
        protector: FrameProtector | None = None,
        require_emcl: bool = False,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        max_call_timeout: float | None = 300.0,
        request_timeout: float = 10.0,
        shutdown_timeout: float = 5.0,
        subscription_buffer: int = DEFAULT_SUBSCRIPTION_BUFFER,
        backend: Backend | None = None,
        **options: Any,
    ) -> None:
        endpoint = MxpEndpoint.parse(url)
        self.key: KeyPair = static_keypair(static_key) if static_key is not None \
            else KeyPair.generate()
        if endpoint.key is not None and endpoint.key != self.key.public:
            raise ValueError("the URL's key is not the public half of static_key")
        if client_keys is not None and client_policy is not None:
            raise ValueError("give client_keys or client_policy, not both")
        if client_keys is not None:
            client_policy = allow_keys({public_key_bytes(k) for k in client_keys})
        self.client_policy: ClientPolicy = client_policy or allow_any
        self.endpoint = endpoint.with_key(self.key.public)
        self.router = router
        self.dispatcher = FrameDispatcher(router, TransportProtocol.MXP,
                                          codec=FrameCodec(max_frame_bytes),
                                          protector=protector, require_emcl=require_emcl)
        self.max_frame_bytes = max_frame_bytes
        self.max_call_timeout = max_call_timeout
        self.request_timeout = request_timeout
        self.shutdown_timeout = shutdown_timeout
        self.subscription_buffer = subscription_buffer
        self.backend: Backend = backend if backend is not None else MxpBackend()
        self.options = options
        self.stats = ServerStats()
        #: The bound URL (with the key), once listening.
        self.url: str | None = None
        self.connections: set[StreamConnection] = set()
        self._subscriptions: set[trio.CancelScope] = set()
        #: The running calls, which the end of the grace period cuts off.
        self._calls: set[_Call] = set()
        self._active = 0
        self._idle = trio.Event()
        self._draining = False
        #: The grace period is over: calls still running are cancelled.
        self._cut = False
        self._changed = trio.Event()

    @property
    def subscriptions(self) -> int:
        """Subscription streams being served now."""
        return len(self._subscriptions)

    async def wait_connections(self, count: int) -> None:
        """Wait until exactly ``count`` connections are being served."""
        while len(self.connections) != count:
            await self._changed.wait()

    async def wait_subscriptions(self, count: int) -> None:
        """Wait until exactly ``count`` subscription streams are being served."""
        while len(self._subscriptions) != count:
            await self._changed.wait()

    def _change(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    # ------------------------------------------------------------------ lifecycle

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Listen, report the bound URL to ``task_status``, serve until cancelled."""
        with unwrap_single():
            async with self.backend.listen(self.endpoint.address, self.key,
                                           self.client_policy, self.options) as listener:
                self.url = self.endpoint.with_port(listener.local_address[1]).url
                async with trio.open_nursery() as outer:
                    stop = trio.Event()
                    workers: trio.Nursery = await outer.start(shielded_nursery, stop)
                    workers.start_soon(self._accept_loop, listener, workers)
                    task_status.started(self.url)
                    try:
                        await trio.sleep_forever()
                    finally:
                        with trio.CancelScope(shield=True):
                            await self._shutdown()
                        listener.close()
                        stop.set()

    async def _accept_loop(self, listener: Any, workers: trio.Nursery) -> None:
        while True:
            try:
                conn = await listener.accept()
            except STREAM_ERRORS:
                return  # the listener was closed
            if self._draining:
                # Refused at once: its calls fail now instead of at the end of the shutdown.
                conn.close(0, "server shutting down")
                continue
            workers.start_soon(self._connection, conn)

    async def _shutdown(self) -> None:
        self._draining = True
        for scope in list(self._subscriptions):
            scope.cancel()
        if self._active:
            with trio.move_on_after(self.shutdown_timeout):
                await self._idle.wait()
        farewell = trio.current_time() + FAREWELL_TIMEOUT
        if self._active:
            # The grace period is over: the calls still running are cancelled, and each is
            # answered with an error rather than left to see its connection close.
            self._cut = True
            for call in list(self._calls):
                call.cut()
            with trio.move_on_at(farewell):
                await self._idle.wait()
        # A close abandons reply data the client has not acknowledged yet (it is never sent
        # again): replies written just before, lost on the way, would never arrive.
        with trio.move_on_at(farewell):
            async with trio.open_nursery() as nursery:
                for conn in list(self.connections):
                    flushed = getattr(conn, "wait_flushed", None)
                    if flushed is not None:
                        nursery.start_soon(flushed)
        for conn in list(self.connections):
            conn.close(0, "server shutting down")
        for call in list(self._calls):
            call.drop()  # a write still finishing a message ends with its connection

    # ------------------------------------------------------------------ connections

    async def _connection(self, conn: StreamConnection) -> None:
        self.connections.add(conn)
        self.stats.connections += 1
        self._change()
        try:
            async with trio.open_nursery() as streams:
                while True:
                    try:
                        stream = await conn.accept_stream()
                    except STREAM_ERRORS:
                        break
                    if self._draining:
                        # Refused at once (the client sees the reset, not a silence that
                        # lasts until the shutdown ends); the calls running go on.
                        await wire.abort(stream, wire.SHUTTING_DOWN)
                        continue
                    self._active += 1
                    self.stats.peak_active = max(self.stats.peak_active, self._active)
                    streams.start_soon(self._stream, stream)
        finally:
            self.connections.discard(conn)
            self._change()
            if not self._draining:
                conn.close(0, "")

    async def _stream(self, stream: trio.abc.HalfCloseableStream) -> None:
        self.stats.streams += 1
        try:
            reader = wire.MessageReader(stream, self.max_frame_bytes)
            request: MxpMessage | None = None
            with trio.move_on_after(self.request_timeout):
                try:
                    request = await reader.next()
                except IntentusError as exc:
                    await self._refuse(stream, exc, None)
                    return
            if request is None:
                await wire.abort(stream, wire.BAD_REQUEST)
                return
            if request.type not in wire.REQUESTS:
                await self._refuse(stream, UnsupportedMessageType(
                    f"a stream must start with Call, StreamOpen or Event, not "
                    f"{request.type.label}", details={"mxpType": request.type.label}), request)
                return
            await self._serve(stream, reader, request)
        except STREAM_ERRORS:
            await wire.abort(stream, wire.CANCELLED)
        except Exception:
            log.exception("MXP stream handler failed")
            await wire.abort(stream, wire.BAD_REQUEST)
        finally:
            self._release()

    def _release(self) -> None:
        """One stream fewer holds up shutdown."""
        self._active -= 1
        if self._active == 0:
            self._idle.set()
            self._idle = trio.Event()

    async def _refuse(self, stream: trio.abc.HalfCloseableStream, exc: IntentusError,
                      request: MxpMessage | None) -> None:
        """Answer a stream whose request cannot be read with ERROR, then end it."""
        self.stats.refused += 1
        data = None if request is None or isinstance(exc, PayloadTooLarge) else request.payload
        frame = self.dispatcher.error_frame(exc, data=data)
        mid = request.message_id if request is not None else 0
        trace = request.trace_id if request is not None else 0
        await self._send_final(stream, MessageType.ERROR, frame, mid, trace)

    async def _send_final(self, stream: trio.abc.HalfCloseableStream, kind: MessageType,
                          frame: TransportEnvelope | bytes, mid: int, trace: int) -> None:
        data = frame if isinstance(frame, bytes) else self.dispatcher.codec.encode(
            frame, limit=False)
        # While draining, the stream ends only when the client closes its side, having read
        # the reply: closing the connection sooner would abandon reply data not yet
        # acknowledged (lost datagrams are never sent again).
        confirm = self._draining
        stop = getattr(stream, "stop_sending", None)
        if stop is not None and not confirm:  # nothing more is read from this stream
            stop(wire.BAD_REQUEST if kind is MessageType.ERROR else 0)
        await stream.send_all(wire.message(kind, data, mid, trace, final=True))
        if confirm:
            await stream.send_eof()
            with suppress(*WATCH_ERRORS):
                while await stream.receive_some(65536):
                    pass  # whatever the client still sends is not read
        await stream.aclose()

    # ------------------------------------------------------------------ requests

    def _deadline(self, frame: TransportEnvelope) -> float | None:
        """Seconds this call may take: the client's timeoutMs, capped by max_call_timeout."""
        return call_timeout(frame.headers, self.max_call_timeout)

    async def _serve(self, stream: trio.abc.HalfCloseableStream, reader: wire.MessageReader,
                     request: MxpMessage) -> None:
        kind, mid, trace = request.type, request.message_id, request.trace_id
        final = _FINAL[kind]
        try:
            frame = self.dispatcher.decode(request.payload)
        except IntentusError as exc:
            await self._send_final(stream, final, self.dispatcher.error_frame(
                exc, data=request.payload), mid, trace)
            return
        if kind is MessageType.STREAM_OPEN and frame.headers.get(wire.CONTROL) == wire.SUBSCRIBE:
            await self._subscription(stream, reader, request, frame)
            return
        wanted = (FrameType.EVENT,) if kind is MessageType.EVENT else _INTENT_TYPES
        if frame.message_type not in wanted:
            await self._send_final(stream, final, self.dispatcher.error_frame(ProtocolError(
                f"a {kind.label} message cannot carry a {frame.message_type.value!r} frame"),
                request=frame), mid, trace)
            return
        if kind is MessageType.STREAM_OPEN:
            await self._stream_call(stream, reader, frame, mid, trace)
            return
        reply: list[bytes] = []

        async def call(_: _Call) -> None:
            reply.append(self.dispatcher.encode_reply(
                await self.dispatcher.handle_frame(frame), frame))

        outcome = await self._watched(reader, call, self._deadline(frame))
        if outcome in ("gone", "broken"):
            await wire.abort(stream, wire.CANCELLED)
        elif reply:
            await self._send_final(stream, final, reply[0], mid, trace)
        else:
            await self._send_final(stream, final, self._unfinished_frame(frame, outcome),
                                   mid, trace)

    def _unfinished_frame(self, frame: TransportEnvelope, outcome: str) -> TransportEnvelope:
        """The error reply to a call cut off by its deadline or by the end of a shutdown."""
        if outcome == "shutdown":
            return self.dispatcher.error_frame(ConnectionFailure(
                "the server shut down before the call finished",
                details={"reason": "shutdown"}), request=frame)
        self.stats.timeouts += 1
        return self.dispatcher.error_frame(
            TransportTimeout("the call did not finish within its deadline on the server"),
            request=frame)

    async def _stream_call(self, stream: trio.abc.HalfCloseableStream,
                           reader: wire.MessageReader, frame: TransportEnvelope,
                           mid: int, trace: int) -> None:
        final: list[bytes] = []
        codec = self.dispatcher.codec

        async def run(call: _Call) -> None:
            async with aclosing(self.dispatcher.handle_stream(frame)) as replies:
                async for reply in replies:
                    chunk = reply.headers.get(h.STREAM) == h.STREAM_CHUNK
                    try:
                        data = codec.encode(reply)
                    except PayloadTooLarge as exc:
                        data, chunk = codec.encode(self.dispatcher.error_frame(
                            exc, request=frame), limit=False), False
                    if not chunk:
                        final.append(data)  # sent once the stream is no longer watched
                        return
                    await call.send(stream, wire.message(MessageType.STREAM_CHUNK, data, mid,
                                                         trace))

        outcome = await self._watched(reader, run, self._deadline(frame))
        if outcome in ("gone", "broken"):
            await wire.abort(stream, wire.CANCELLED)
        elif final:
            await self._send_final(stream, MessageType.STREAM_CLOSE, final[0], mid, trace)
        else:
            await self._send_final(stream, MessageType.STREAM_CLOSE,
                                   self._unfinished_frame(frame, outcome), mid, trace)

    async def _watched(self, reader: wire.MessageReader,
                       work: Callable[[_Call], Awaitable[None]],
                       timeout: float | None, *, end_on_eof: bool = False) -> str:
        """Run ``work`` while watching the request stream; "done", "timeout", "shutdown"
        (the grace period of a shutdown ended first), "gone" (the client reset the stream,
        stopped reading it, broke the protocol or, with ``end_on_eof``, closed its side) or
        "broken" (a message was left half written): ``work`` was cancelled unless "done".
        Subscriptions (``end_on_eof``) are not cut at the end of the grace period: they end
        when the shutdown begins."""
        outcome = "done"
        scope = trio.CancelScope(
            deadline=math.inf if timeout is None else trio.current_time() + timeout)
        call = _Call(scope)
        async with trio.open_nursery() as nursery:

            def gone() -> None:
                nonlocal outcome
                if outcome != "gone":
                    outcome = "gone"
                    if not end_on_eof:
                        self.stats.cancelled += 1
                nursery.cancel_scope.cancel()
                call.drop()

            async def watch() -> None:
                try:
                    if await reader.next() is None and not end_on_eof:
                        return  # the client half-closed: it still wants the reply
                except WATCH_ERRORS:
                    pass
                gone()

            nursery.start_soon(watch)
            with scope:
                if not end_on_eof:
                    self._calls.add(call)
                    if self._cut:
                        call.cut()
                try:
                    await work(call)
                except STREAM_ERRORS as exc:
                    # A write failed: the client stopped reading (STOP_SENDING) or reset
                    # the stream. It no longer wants the reply, which is its right.
                    log.debug("MXP client gave up a stream: %s", wire.describe(exc))
                    gone()
                finally:
                    self._calls.discard(call)
            if call.broken and outcome != "gone":
                outcome = "broken"
            elif scope.cancelled_caught and outcome == "done":
                outcome = "shutdown" if self._cut else "timeout"
            nursery.cancel_scope.cancel()
        return outcome

    # ------------------------------------------------------------------ events

    async def _subscription(self, stream: trio.abc.HalfCloseableStream,
                            reader: wire.MessageReader, request: MxpMessage,
                            received: TransportEnvelope) -> None:
        mid = request.message_id
        dispatcher = self.dispatcher
        sealed = False
        try:
            frame, sealed = dispatcher.open_request(received)
            version = negotiate(frame.protocol_negotiation, dispatcher.supported)
            body = frame.body
            if not isinstance(body, IntentEnvelope) or body.intent.name != wire.SUBSCRIBE_INTENT:
                raise ProtocolError(f"a subscription is requested with the "
                                    f"{wire.SUBSCRIBE_INTENT!r} intent")
            pattern = body.payload.get("eventType")
            if not isinstance(pattern, str) or not 0 < len(pattern) <= 256:
                raise ValidationError("body.payload.eventType", "must be 1..256 characters")
        except IntentusError as exc:
            # Sealed once the request has been opened; a request that cannot be opened
            # gets a plain answer.
            await self._send_final(stream, MessageType.STREAM_CLOSE, _seal(
                dispatcher, dispatcher.error_frame(exc, request=received), received, sealed),
                mid, request.trace_id)
            return
        request_frame = received if sealed else None
        scope = trio.CancelScope()
        self._subscriptions.add(scope)
        self._change()
        self._release()  # a subscription never holds up shutdown
        # Set while a message is being written: one cut short by the end of the subscription
        # leaves the stream unreadable, so it is reset rather than ended.
        writing = False

        async def send(data: bytes) -> None:
            nonlocal writing
            writing = True
            await stream.send_all(data)
            writing = False

        try:
            with scope:
                if self._draining:
                    scope.cancel()
                async with self.router.events.subscribe(
                        pattern, buffer=self.subscription_buffer) as sub:
                    ack = AgentResponse.success({"subscribed": pattern}, agent=self.router.name,
                                                trace_id=body.metadata.trace_id)
                    reply = _seal(dispatcher, response_frame(
                        ack, TransportProtocol.MXP, request_id=str(mid), version=version),
                        request_frame, sealed)
                    await send(wire.message(
                        MessageType.RESPONSE, dispatcher.codec.encode(reply, limit=False),
                        mid, request.trace_id))

                    async def push(_: _Call) -> None:
                        async for event in sub:
                            data = self._event_bytes(event, sub.dropped, request_frame)
                            if data is None:
                                continue
                            await send(wire.message(
                                MessageType.EVENT, data, mid, wire.wire_trace(event.trace_id)))
                            self.stats.events_out += 1

                    await self._watched(reader, push, None, end_on_eof=True)
        finally:
            self._active += 1
            self._subscriptions.discard(scope)
            self._change()
        if writing:
            await wire.abort(stream, wire.SHUTTING_DOWN if self._draining else wire.CANCELLED)
        else:
            await stream.aclose()

    def _event_bytes(
        self, event: Event, dropped: int, request: TransportEnvelope | None
    ) -> bytes | None:
        """An event's frame; sealed for the subscriber, in reply to its subscribe request,
        when that was sealed (pair keys work: its key is the subscriber's)."""
        frame = event_frame(event, TransportProtocol.MXP)
        if dropped:
            frame = replace(frame, headers={**frame.headers, wire.DROPPED: str(dropped)})
        protector = self.dispatcher.protector
        try:
            if request is not None and protector is not None:
                frame = protector.seal(frame, reply_to=request)
            return self.dispatcher.codec.encode(frame)
        except (IntentusError, ValueError, TypeError) as exc:
            # Too large, no key to seal it, or a payload JSON cannot hold.
            self.stats.events_skipped += 1
            log.debug("event %r not forwarded: %s", event.event_type, exc)
            return None


def _seal(dispatcher: FrameDispatcher, reply: TransportEnvelope,
          request: TransportEnvelope | None, sealed: bool) -> TransportEnvelope:
    """Seal a reply to a sealed request (error replies to unopenable requests stay plain)."""
    protector = dispatcher.protector
    if not sealed or request is None or protector is None:
        return reply
    return protector.seal(reply, reply_to=request)


async def serve(
    router: Router,
    url: str = "mxp://127.0.0.1:0",
    *,
    task_status: Any = trio.TASK_STATUS_IGNORED,
    **options: Any,
) -> None:
    """Serve ``router`` at ``url`` until cancelled; reports the bound URL with the server's
    public key (port 0 picks a free port; without ``static_key`` a key is generated)."""
    await MxpServer(router, url, **options).run(task_status=task_status)
