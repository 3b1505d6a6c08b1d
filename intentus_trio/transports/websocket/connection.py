"""One accepted WebSocket connection on the server: its frames, its calls, its subscriptions.

Each received message is decoded in the WebSocket library's reader task and every request
is handed to a call worker of its own, so one slow agent never delays another call on the
same connection. Workers are kept for the next request once their call is done (a few
idle ones at most): handing a request to a waiting worker is a single task switch, the
cost a bare WebSocket echo pays too, where starting a task per request costs several.
Admission is bounded: past ``max_concurrent`` calls the reader stops reading, and TCP
carries the backpressure to the client. Replies go out through the Link (whole frames,
``send_timeout`` per frame); a client that stops reading is disconnected. Each
subscription is a task draining a bounded EventBus subscription that drops its oldest
event when the client falls behind.
"""

from __future__ import annotations

import logging
import math
from contextlib import aclosing, suppress
from typing import TYPE_CHECKING, Any

import trio
from msgspec.structs import replace
from trio_websocket import CloseReason, WebSocketConnection

from ...protocol import headers as h
from ...protocol.enums import TransportProtocol
from ...protocol.errors import (
    ConnectionFailure,
    IntentusError,
    MalformedMessage,
    PayloadTooLarge,
    ProtocolError,
    TransportTimeout,
    ValidationError,
)
from ...protocol.models import AgentResponse, Event, JsonObject, TransportEnvelope
from ...routing.events import Subscription
from ..deadlines import Deadlines
from ..framing import FrameProtector, call_timeout, event_frame, response_frame
from . import wire
from .link import Link, describe_close
from .stream import DirectStream, deliver_messages

if TYPE_CHECKING:
    from .server import WebSocketServer

log = logging.getLogger("intentus_trio.transports.websocket")


class _Call:
    """A request in progress: what it asked for, how to cancel it, its stream credit."""

    __slots__ = ("_more", "before", "credit", "done", "finished", "frame", "peer_cancelled",
                 "rid", "scope", "stream", "timed_out")

    def __init__(
        self, frame: TransportEnvelope, rid: str | None, stream: bool, window: int | None
    ) -> None:
        self.frame = frame
        self.rid = rid
        self.stream = stream
        #: The cancel scope the call runs in, while it runs.
        self.scope: trio.CancelScope | None = None
        self.peer_cancelled = False
        self.timed_out = False
        #: Answered (or given up), and its slot released.
        self.finished = False
        #: Chunks the client can still take; None when it does no flow control.
        self.credit = window
        self._more: trio.Event | None = None
        #: For requests without a requestId: the previous one's ``done`` (answers leave in
        #: arrival order) and this one's.
        self.before: trio.Event | None = None
        self.done: trio.Event | None = None

    def cancel(self) -> None:
        """The client cancelled the call: stop it, and do not answer."""
        self.peer_cancelled = True
        if self.scope is not None:
            self.scope.cancel()

    def expire(self) -> None:
        """The call's deadline passed: stop it, and answer TIMEOUT."""
        self.timed_out = True
        if self.scope is not None:
            self.scope.cancel()

    def grant(self, n: int) -> None:
        if self.credit is not None:
            self.credit += n
            if self._more is not None:
                self._more.set()

    async def take(self) -> None:
        if self.credit is None:
            return
        while self.credit <= 0:
            self._more = trio.Event()
            await self._more.wait()
        self.credit -= 1


def event_push_frame(event: Event, sid: str, dropped: int) -> TransportEnvelope:
    """The frame pushing ``event`` to subscription ``sid`` of a client."""
    frame = event_frame(event, TransportProtocol.WEBSOCKET)
    extra = {wire.SUBSCRIPTION: sid}
    if dropped:
        extra[wire.DROPPED] = str(dropped)
    return replace(frame, headers={**frame.headers, **extra})


def _call_finished(call: _Call) -> bool:
    return call.finished


#: Call workers kept waiting for the next request, per connection.
MAX_IDLE_WORKERS = 8


class ServerConnection:
    def __init__(
        self, server: WebSocketServer, ws: WebSocketConnection, peer_max: int,
        direct: DirectStream | None = None,
    ) -> None:
        self.server = server
        self.ws = ws
        self.dispatcher = server.dispatcher
        self.codec = server.dispatcher.codec
        #: The largest reply frame this client accepts.
        self.reply_limit = min(server.max_frame_bytes, peer_max)
        self.link = Link(ws, send_timeout=server.send_timeout,
                         close_timeout=server.close_timeout, on_broken=self._broken,
                         direct=direct)
        #: Idle workers wait on the receiving end; a request is handed over with
        #: ``send_nowait``, which succeeds only when one is waiting.
        self._jobs, self._job_queue = trio.open_memory_channel[_Call](0)
        self.idle_workers = 0
        self._deadlines = Deadlines[_Call](_Call.expire, _call_finished)
        self.calls: dict[str, _Call] = {}
        #: Requests being processed, with or without a requestId.
        self.active = 0
        self.subs: dict[str, tuple[trio.CancelScope, Subscription]] = {}
        self.capacity = trio.Semaphore(server.max_concurrent)
        self.scope = trio.CancelScope()
        #: Set when no more requests are read (closed, idle, draining, aborted).
        self.reading_ended = trio.Event()
        #: Cancels an admission wait in the reader when reading ends.
        self._admission_scope: trio.CancelScope | None = None
        self.last_activity = trio.current_time()
        self.stalled = False
        self.stalls = 0
        self.draining = False
        self.aborted = False
        self.close_code = 1000
        self.close_reason: str | None = None
        self._quiet = trio.Event()
        #: Replies to requests without a requestId leave in arrival order.
        self._uncorrelated_tail: trio.Event | None = None
        self._nursery: trio.Nursery | None = None

    # ------------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        try:
            with self.scope:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    nursery.start_soon(self._keepalive)
                    nursery.start_soon(self._deadlines.run)
                    await deliver_messages(self.ws, nursery, self._on_message, self._on_closed)
                    await self.reading_ended.wait()
                    if self.draining:
                        await self._drain()
                    nursery.cancel_scope.cancel()
        except Exception:
            # A bug here must cost one connection, never the server.
            log.exception("WebSocket connection handler failed")
            self.close_code, self.close_reason = 1011, "internal error"
        finally:
            await self.link.close(self.close_code, self.close_reason, abort=self.aborted)

    def end(self, code: int, reason: str) -> None:
        """Stop reading and close the connection with ``code``."""
        if self.close_reason is None:
            self.close_code, self.close_reason = code, reason
        self._stop_reading()

    def _stop_reading(self) -> None:
        self.reading_ended.set()
        if self._admission_scope is not None:
            self._admission_scope.cancel()

    def abort(self, code: int, reason: str) -> None:
        """Stop everything on this connection at once."""
        if self.close_reason is None:
            self.close_code, self.close_reason = code, reason
        self.aborted = True
        self.server.stats.aborted += 1
        log.info("WebSocket connection aborted: %s", reason)
        self._stop_reading()
        self.scope.cancel()

    def _broken(self, reason: str) -> None:
        self.abort(1008, reason)

    def begin_drain(self) -> None:
        """Graceful shutdown: take no new requests, let the running ones finish."""
        self.draining = True
        for scope, _ in self.subs.values():
            scope.cancel()
        self.end(1001, "server shutting down")

    async def _drain(self) -> None:
        while self.active:
            self._quiet = trio.Event()
            await self._quiet.wait()

    async def _keepalive(self) -> None:
        """The connection's one timer: heartbeats and the idle timeout."""
        interval = self.server.heartbeat_interval
        idle = self.server.idle_timeout
        next_ping = math.inf if interval is None else trio.current_time() + interval
        while True:
            idle_at = math.inf if idle is None else self.last_activity + idle
            await trio.sleep_until(min(next_ping, idle_at))
            now = trio.current_time()
            if idle is not None and now >= self.last_activity + idle:
                if self.active == 0 and not self.subs:
                    self.end(1001, "idle timeout")
                    return
                self.last_activity = now
            if interval is not None and now >= next_ping:
                next_ping = now + interval
                stalls = self.stalls
                if self.stalled:
                    continue  # our own reader is not reading: the pong may be queued
                if not await self.link.ping(self.server.heartbeat_timeout) and (
                    stalls == self.stalls and not self.stalled
                ):
                    self.abort(1001, f"no pong within {self.server.heartbeat_timeout} s")
                    return

    # ------------------------------------------------------------------ reading

    def _on_closed(self, reason: CloseReason | None) -> None:
        self.end(1000, describe_close(reason))

    async def _on_message(self, message: str | bytes) -> None:
        """Handle one received message (runs in the library's reader task)."""
        if self.reading_ended.is_set():
            return
        try:
            await self._handle_message(message)
        except Exception:
            # A bug here must cost one connection, never the server.
            log.exception("WebSocket frame handling failed")
            if self.close_reason is None:
                self.close_code, self.close_reason = 1011, "internal error"
            self._stop_reading()

    async def _handle_message(self, message: str | bytes) -> None:
        stats = self.server.stats
        self.last_activity = trio.current_time()
        stats.frames_in += 1
        if isinstance(message, bytes):
            stats.malformed += 1
            await self._reply_error(MalformedMessage(
                "binary WebSocket messages are not accepted: "
                "send each frame as one UTF-8 JSON text message"), data=message)
            return
        try:
            frame = self.dispatcher.decode(message)
        except IntentusError as exc:
            stats.malformed += 1
            await self._reply_error(exc, data=message)
            return
        headers = frame.headers
        if wire.CONTROL in headers:
            await self._control(frame)
            return
        rid = headers.get(h.REQUEST_ID)
        if rid is not None and rid in self.calls:
            await self._reply_error(ProtocolError(
                "this requestId is already in flight on this connection",
                details={"requestId": rid}), request=frame)
            return
        if await self._admit():
            self._start(frame, rid)

    async def _admit(self) -> bool:
        """Take a call slot, waiting while ``max_concurrent`` calls run; False if reading
        ended meanwhile."""
        try:
            self.capacity.acquire_nowait()
        except trio.WouldBlock:
            pass
        else:
            return True
        self.stalled = True
        self.stalls += 1
        self.server.stats.stalls += 1
        try:
            with trio.CancelScope() as self._admission_scope:
                if not self.reading_ended.is_set():
                    await self.capacity.acquire()
                    return True
            return False
        finally:
            self._admission_scope = None
            self.stalled = False

    def _start(self, frame: TransportEnvelope, rid: str | None) -> None:
        headers = frame.headers
        timeout = call_timeout(headers, self.server.max_call_timeout)
        stream = headers.get(h.STREAM) == wire.STREAM_OPEN
        call = _Call(frame, rid, stream, wire.window(headers) if stream else None)
        if timeout is not None:
            self._deadlines.add(self.last_activity + timeout, call)
        if rid is None:
            call.before, call.done = self._uncorrelated_tail, trio.Event()
            self._uncorrelated_tail = call.done
        else:
            self.calls[rid] = call
        self.active += 1
        stats = self.server.stats
        if self.active > stats.peak_active:
            stats.peak_active = self.active
        try:
            self._jobs.send_nowait(call)
        except trio.WouldBlock:
            assert self._nursery is not None
            self._nursery.start_soon(self._worker, call)

    # ------------------------------------------------------------------ calls

    async def _worker(self, first: _Call) -> None:
        """Run calls, one at a time: ``first``, then whatever comes while few workers wait.

        Calls run in a cancel scope that serves one call after another until one is
        cancelled (by its deadline, which the connection's timer serves, or by the
        client): entering a scope per call would cost more than the rest of the worker's
        bookkeeping together.
        """
        call: _Call | None = first
        try:
            while call is not None:
                reply: TransportEnvelope | None = None
                with trio.CancelScope() as scope:
                    while True:
                        reply = None
                        call.scope = scope
                        if call.peer_cancelled or call.timed_out:
                            scope.cancel()
                        if call.stream:
                            await self._stream(call)
                        else:
                            reply = await self.dispatcher.handle_frame(call.frame)
                        call.scope = None
                        if scope.cancel_called:
                            break  # cancelled just as it finished: this scope is spent
                        finished, call = call, None
                        await self._answer(finished, reply)
                        call = await self._next_call()
                        if call is None:
                            return
                assert call is not None
                call.scope = None
                if scope.cancelled_caught:
                    reply = self._interrupted(call)
                finished, call = call, None
                await self._answer(finished, reply)
                call = await self._next_call()
        finally:
            if call is not None:
                self._release(call)

    async def _next_call(self) -> _Call | None:
        """The next request handed to this worker; None: enough workers wait already."""
        if self.idle_workers >= MAX_IDLE_WORKERS:
            return None
        self.idle_workers += 1
        try:
            return await self._job_queue.receive()
        finally:
            self.idle_workers -= 1

    def _interrupted(self, call: _Call) -> TransportEnvelope | None:
        """The answer to a call stopped by its deadline; none if the client cancelled it."""
        if call.peer_cancelled:
            self.server.stats.cancelled += 1
            return None
        self.server.stats.timeouts += 1
        return self.dispatcher.error_frame(
            TransportTimeout("the call did not finish within its deadline",
                             details={"requestId": call.rid}), request=call.frame)

    async def _answer(self, call: _Call, reply: TransportEnvelope | None) -> None:
        try:
            if call.before is not None:
                await call.before.wait()
            if reply is not None:
                await self._send(reply, call.frame)
        finally:
            self._release(call)

    def _release(self, call: _Call) -> None:
        call.finished = True
        if call.done is not None:
            call.done.set()
        if call.rid is not None:
            self.calls.pop(call.rid, None)
        self.capacity.release()
        self.active -= 1
        if not self.active:
            self.last_activity = trio.current_time()
            self._quiet.set()

    async def _stream(self, call: _Call) -> None:
        if call.before is not None:
            await call.before.wait()
        frame = call.frame
        async with aclosing(self.dispatcher.handle_stream(frame)) as replies:
            async for reply in replies:
                if reply.headers.get(h.STREAM) == h.STREAM_CHUNK:
                    await call.take()
                if not await self._send(reply, frame):
                    return

    async def _send(self, reply: TransportEnvelope, request: TransportEnvelope) -> bool:
        """Send a reply frame (an oversize one becomes PAYLOAD_TOO_LARGE); False if it
        could not be sent as it was."""
        ok = True
        try:
            data = self.codec.encode(reply)
            if len(data) > self.reply_limit:
                raise PayloadTooLarge(len(data), self.reply_limit)
        except PayloadTooLarge as exc:
            ok = False
            data = self.codec.encode(self.dispatcher.error_frame(exc, request=request))
        try:
            await self.link.send(data.decode())
        except ConnectionFailure:
            return False
        return ok

    async def _reply_error(
        self,
        exc: IntentusError,
        *,
        data: str | bytes | None = None,
        request: TransportEnvelope | None = None,
    ) -> None:
        frame = self.dispatcher.error_frame(exc, data=data, request=request)
        with suppress(ConnectionFailure):
            await self.link.send(self.codec.encode(frame).decode())

    # ------------------------------------------------------------------ control

    async def _control(self, frame: TransportEnvelope) -> None:
        rid = frame.headers.get(h.REQUEST_ID)
        try:
            opened, sealed = self.dispatcher.open_request(frame)
            op, payload = wire.parse_control(opened)
            if op is wire.Control.CANCEL or op is wire.Control.CREDIT:
                call = self.calls.get(rid) if rid is not None else None
                amount = wire.credit(payload) if op is wire.Control.CREDIT else 0
                if call is not None:
                    if amount:
                        call.grant(amount)
                    else:
                        call.cancel()
                return
            if op is wire.Control.SUBSCRIBE:
                result = await self._subscribe(payload, frame if sealed else None)
            else:
                result = self._unsubscribe(payload)
        except IntentusError as exc:
            await self._reply_error(exc, request=frame)
            return
        trace_id = getattr(getattr(opened.body, "metadata", None), "trace_id", None)
        reply = response_frame(
            AgentResponse.success(result, agent=self.dispatcher.router.name, trace_id=trace_id),
            frame.protocol, request_id=rid,
        )
        if sealed and self.dispatcher.protector is not None:
            reply = self.dispatcher.protector.seal(reply, reply_to=frame)
        await self._send(reply, frame)

    async def _subscribe(
        self, payload: JsonObject, request: TransportEnvelope | None
    ) -> JsonObject:
        """Start a subscription; ``request`` is the subscribe frame as received if it was
        sealed (its events are then sealed for that subscriber)."""
        sid = wire.subscription_id(payload)
        pattern = wire.event_pattern(payload)
        if sid in self.subs:
            raise ValidationError("body.payload.subscription", "already subscribed under this id")
        limit = self.server.max_subscriptions
        if len(self.subs) >= limit:
            raise wire.TooManySubscriptions(
                f"at most {limit} subscriptions per connection", details={"limit": limit})
        assert self._nursery is not None
        scope, sub = await self._nursery.start(self._forward, sid, pattern, request)
        self.subs[sid] = (scope, sub)
        return {wire.SUBSCRIPTION: sid, "eventType": pattern}

    def _unsubscribe(self, payload: JsonObject) -> JsonObject:
        sid = wire.subscription_id(payload)
        entry = self.subs.pop(sid, None)
        if entry is None:
            return {wire.SUBSCRIPTION: sid, "removed": False}
        scope, sub = entry
        scope.cancel()
        return {wire.SUBSCRIPTION: sid, "removed": True, "dropped": sub.dropped}

    async def _forward(
        self, sid: str, pattern: str, request: TransportEnvelope | None, *, task_status: Any
    ) -> None:
        """Push the events of one subscription to the client, in order, until cancelled."""
        protector = self.dispatcher.protector
        stats = self.server.stats
        with trio.CancelScope() as scope:
            events = self.dispatcher.router.events
            async with events.subscribe(pattern, buffer=self.server.subscription_buffer) as sub:
                task_status.started((scope, sub))
                async for event in sub:
                    dropped = sub.dropped
                    try:
                        if request is not None and protector is not None:
                            size, text = self._sealed_event(event, sid, dropped, protector,
                                                            request)
                        else:
                            size, text = self.server.event_text(event, sid, dropped)
                    except TypeError as exc:
                        # A payload JSON cannot hold: skip the event, keep the connection.
                        stats.events_unencodable += 1
                        log.warning("event %r not pushed: %s", event.event_type, exc)
                        continue
                    except (IntentusError, ValueError) as exc:
                        # No key to seal it for this subscriber (retired meanwhile):
                        # skip the event, keep the connection and its calls.
                        stats.events_unsealable += 1
                        log.debug("event %r not pushed: %s", event.event_type, exc)
                        continue
                    if size > self.reply_limit:
                        stats.events_oversize += 1
                        continue
                    try:
                        await self.link.send(text)
                    except ConnectionFailure:
                        return
                    stats.events_out += 1

    def _sealed_event(
        self, event: Event, sid: str, dropped: int, protector: FrameProtector,
        request: TransportEnvelope,
    ) -> tuple[int, str]:
        """The event sealed for the subscriber, bound to its subscribe request (pair keys
        work: it goes under the subscriber's key, as a reply would)."""
        frame = protector.seal(event_push_frame(event, sid, dropped), reply_to=request)
        data = self.codec.encode(frame, limit=False)
        return len(data), data.decode()
