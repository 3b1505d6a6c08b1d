"""The node side: a ROUTER for request/reply, an XPUB event hub, optionally a distributor.

Requests are served by a fixed pool of tasks (``pool.py``): the task that takes a request
also answers it, and another task takes over receiving only if that request's agent suspends.
So a request costs no task spawn and no channel hop, and the pool size bounds concurrency
(beyond it, requests wait in ZeroMQ's queues and the high-water mark pushes back on clients).
Bad input never stops the server: a message with a usable routing envelope gets an error
reply, one without is dropped and counted.
"""

from __future__ import annotations

import errno
import logging
import math
from collections.abc import Callable, Iterable
from contextlib import AbstractAsyncContextManager, ExitStack, aclosing, nullcontext
from typing import Any

import attrs
import trio
import zmq

from ...protocol.codec import DEFAULT_MAX_FRAME_BYTES, FrameCodec
from ...protocol.enums import TransportProtocol
from ...protocol.errors import (
    AgentUnavailable,
    IntentusError,
    MalformedMessage,
    PayloadTooLarge,
    TransportTimeout,
)
from ...protocol.models import TransportEnvelope
from ...routing.events import Subscription
from ...routing.router import Router
from ..framing import ClientFraming, FrameDispatcher, FrameProtector, call_timeout
from ..zmq_trio import DEFAULT_LINGER_MS, CloseWatch, TrioSocket
from . import wire
from .endpoints import Role, check_url, connectable, endpoint, split_tcp
from .pool import ServingPool, current_member
from .workers import Distributor

log = logging.getLogger("intentus_trio.zeromq")

#: Name under which a distributing node registers its worker pool with the router.
WORKERS_AGENT = "zmq-workers"

_BIND_ATTEMPTS = 32
_REPLY_BACKOFF_MAX = 0.05
#: How long a shutdown waits for libzmq to write out the last replies: the request
#: socket's linger, and a margin for libzmq's threads to report it.
_FLUSH_LIMIT = DEFAULT_LINGER_MS / 1000 + 1.0


@attrs.define
class ServerStats:
    """Counters of one node; plain ints so they can be exported as metrics."""

    requests: int = 0
    error_replies: int = 0
    #: Messages without a usable routing envelope (no delimiter, envelope too long).
    dropped_malformed: int = 0
    #: Replies whose client had gone, or whose queue stayed full past ``reply_timeout``.
    dropped_replies: int = 0
    streams_cancelled: int = 0
    #: Calls stopped by their deadline (the client's ``timeoutMs`` or ``max_call_timeout``).
    timeouts: int = 0
    #: Cancel requests for a stream that is not running (finished, or never existed).
    unknown_cancels: int = 0
    events_published: int = 0
    #: Events not published: too large, not sealable, or a payload JSON cannot hold.
    events_skipped: int = 0


class ZmqServer:
    """One node; ``serve`` is ``ZmqServer(router, **options).run(url)``."""

    def __init__(
        self,
        router: Router,
        *,
        protector: FrameProtector | None = None,
        require_emcl: bool = False,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        max_message_bytes: int | None = None,
        max_concurrency: int = 64,
        hwm: int = 1000,
        heartbeat: float | None = 2.0,
        shutdown_timeout: float = 5.0,
        reply_timeout: float = 30.0,
        max_call_timeout: float | None = 300.0,
        events: bool = True,
        events_url: str | None = None,
        event_buffer: int = 1024,
        distribute: str | Iterable[str] | None = None,
        work_url: str | None = None,
        results_url: str | None = None,
        lease_timeout: float = 30.0,
        max_attempts: int = 5,
        work_protector: FrameProtector | None = None,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        if protector is not None and distribute is not None and work_protector is None:
            # The node's protector answers clients; towards its workers the node is the
            # client, sealing requests. Never fall back to plaintext work silently.
            raise ValueError("a distributing node with a protector needs work_protector: the "
                             "protector (a client of the workers) that seals their work")
        self.router = router
        codec = FrameCodec(max_frame_bytes)
        self.dispatcher = FrameDispatcher(
            router, TransportProtocol.ZEROMQ, codec=codec, protector=protector,
            require_emcl=require_emcl,
        )
        self._event_framing = ClientFraming(
            TransportProtocol.ZEROMQ, codec=codec, protector=protector
        )
        self.codec = codec
        self.max_concurrency = max_concurrency
        self.shutdown_timeout = shutdown_timeout
        self.reply_timeout = reply_timeout
        self.max_call_timeout = max_call_timeout
        self.events = events
        self.event_buffer = event_buffer
        self._explicit: dict[Role, str | None] = {
            "events": events_url, "work": work_url, "results": results_url,
        }
        self._options = wire.common_options(
            hwm=hwm,
            max_message_bytes=max_message_bytes or max_frame_bytes * wire.MAXMSGSIZE_FACTOR,
            heartbeat=heartbeat,
        )
        self.distribute = (
            None if distribute is None
            else (distribute,) if isinstance(distribute, str) else tuple(distribute)
        )
        self.distributor: Distributor | None = None
        if self.distribute is not None:
            self.distributor = Distributor(
                lease_timeout=lease_timeout, max_attempts=max_attempts,
                protector=work_protector,
                max_frame_bytes=max_frame_bytes, hwm=hwm, heartbeat=heartbeat,
            )
        self.stats = ServerStats()
        #: The bound endpoints, set once ``run`` has started.
        self.urls: dict[str, str] = {}
        self._rpc: TrioSocket | None = None
        self._xpub: TrioSocket | None = None
        #: The scope in-flight work runs in; its deadline, set at shutdown, cuts that work off.
        self._work: trio.CancelScope | None = None
        self._streams: dict[tuple[bytes, ...], trio.CancelScope] = {}
        #: ``trio.current_time``; ``run`` reads its clock directly, which costs two calls less.
        self._now: Callable[[], float] = trio.current_time

    # ------------------------------------------------------------------ binding

    def _roles(self) -> list[Role]:
        roles: list[Role] = ["events"] if self.events else []
        if self.distributor is not None:
            roles += ["work", "results"]
        return roles

    def _bind(self, url: str, stack: ExitStack) -> dict[str, TrioSocket]:
        """Bind every socket; with ``tcp://host:0`` find a port whose offsets are free too."""
        check_url(url)
        roles = self._roles()
        retry = url.startswith("tcp://") and split_tcp(url)[1] == 0
        kinds: dict[str, int] = {"rpc": zmq.ROUTER, "events": zmq.XPUB,
                                 "work": zmq.PUSH, "results": zmq.PULL}
        for attempt in range(_BIND_ATTEMPTS):
            sockets: dict[str, TrioSocket] = {}
            try:
                rpc = sockets["rpc"] = TrioSocket.open(zmq.ROUTER, options=self._options)
                rpc.socket.setsockopt(zmq.ROUTER_MANDATORY, 1)
                rpc.socket.bind(url)
                bound = rpc.socket.getsockopt_string(zmq.LAST_ENDPOINT)
                urls = {"rpc": bound}
                for role in roles:
                    sock = sockets[role] = TrioSocket.open(kinds[role], options=self._options)
                    target = self._explicit[role] or endpoint(bound, role)
                    sock.socket.bind(target)
                    urls[role] = sock.socket.getsockopt_string(zmq.LAST_ENDPOINT)
            except (zmq.ZMQError, ValueError) as exc:
                for sock in sockets.values():
                    sock.close(0)
                taken = isinstance(exc, ValueError) or exc.errno == errno.EADDRINUSE
                if retry and taken and attempt + 1 < _BIND_ATTEMPTS:
                    continue
                raise
            for sock in sockets.values():
                stack.callback(sock.close)
            self.urls = {role: connectable(value) for role, value in urls.items()}
            return sockets
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------ running

    async def run(self, url: str, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled, then finish in-flight requests within ``shutdown_timeout``
        and return once their replies are written out (see ``_run_shielded``)."""
        with ExitStack() as stack:
            self._now = trio.lowlevel.current_clock().current_time
            sockets = self._bind(url, stack)
            self._rpc = sockets["rpc"]
            flush = CloseWatch(self._rpc)
            stack.callback(flush.discard)
            self._xpub = sockets.get("events")
            registration = None
            if self.distributor is not None and self.distribute is not None:
                self.distributor.attach(sockets["work"], sockets["results"])
                registration = self.router.register(
                    WORKERS_AGENT, self.distribute, self.distributor.request, timeout=None
                )
            # Requests are served inside a shield, so cancelling ``run`` stops intake and
            # then gives what is in flight a bounded time to finish.
            work = self._work = trio.CancelScope(shield=True)
            # The hub's subscription to the bus is open before ``run`` reports started, so
            # events published from then on go out.
            feed: AbstractAsyncContextManager[Subscription | None] = (
                nullcontext() if self._xpub is None
                else self.router.events.subscribe("*", buffer=self.event_buffer))
            try:
                async with feed as bus, trio.open_nursery() as nursery:
                    nursery.start_soon(self._run_shielded, work, flush, bus)
                    task_status.started(self.urls["rpc"])
                    try:
                        await trio.sleep_forever()
                    finally:
                        self._rpc.shutdown_receive()
                        work.deadline = trio.current_time() + self.shutdown_timeout
            finally:
                if registration is not None:
                    self.router.unregister(WORKERS_AGENT)

    async def _run_shielded(
        self, work: trio.CancelScope, flush: CloseWatch, bus: Subscription | None
    ) -> None:
        try:
            with work:
                async with trio.open_nursery() as helpers:
                    if self._xpub is not None and bus is not None:
                        helpers.start_soon(self._forward_events, self._xpub, bus)
                        helpers.start_soon(self._answer_subscriptions, self._xpub)
                    if self.distributor is not None:
                        helpers.start_soon(self.distributor.run)
                    assert self._rpc is not None
                    await ServingPool(self._rpc, self._handle, self.max_concurrency).run()
                    helpers.cancel_scope.cancel()
        finally:
            # The last replies may still sit in libzmq's queues: return (and let the process
            # exit) only once they are written out, or the linger has run out.
            with trio.CancelScope(shield=True, deadline=trio.current_time() + _FLUSH_LIMIT):
                await flush.close()

    # ------------------------------------------------------------------ requests

    async def _handle(self, frames: list[bytes]) -> None:
        self.stats.requests += 1
        try:
            split = frames.index(b"", 1)
        except ValueError:
            self.stats.dropped_malformed += 1
            return
        envelope = frames[: split + 1]
        if (split > wire.MAX_ENVELOPE_FRAMES
                or max(map(len, envelope)) > wire.MAX_ENVELOPE_FRAME_BYTES):
            self.stats.dropped_malformed += 1
            return
        dispatcher = self.dispatcher
        parts = len(frames) - split - 1
        if parts != 1:
            error = MalformedMessage(
                f"expected exactly one payload frame after the delimiter, got {parts}",
                details={"frames": parts},
            )
            await self._reply(envelope, dispatcher.error_frame(error), error=True)
            return
        payload = frames[-1]
        if payload[:1] == b"\x00" and payload == wire.CANCEL:
            self._cancel_stream(envelope)
            return
        try:
            frame = dispatcher.decode(payload)
        except IntentusError as exc:
            await self._reply(envelope, dispatcher.error_frame(exc, data=payload), error=True)
            return
        timeout = call_timeout(frame.headers, self.max_call_timeout)
        try:
            if frame.headers.get("stream") == wire.STREAM_OPEN:
                await self._stream(envelope, frame, timeout)
                return
            if timeout is None:
                reply = await dispatcher.handle_frame(frame)
            else:
                # The pool member's scope, not one per call, enforces the deadline (pool.py).
                async def expired() -> None:
                    await self._reply(envelope, self._timed_out(frame), request=frame)

                reply = await current_member().guarded(
                    self._now() + timeout, dispatcher.handle_frame(frame), expired)
        except trio.Cancelled:
            self._cut_off(envelope, frame)
            raise
        await self._reply(envelope, reply, request=frame)

    def _cut_off(self, envelope: list[bytes], frame: TransportEnvelope) -> None:
        """Answer a call the shutdown cancelled with AGENT_UNAVAILABLE, at once.

        Nothing else would answer it, and its caller would wait for its deadline or for the
        connection to drop, not knowing that the call did not finish. The reply is queued
        without waiting (this task is being cancelled): the request socket writes it out
        before it closes. Calls cancelled for another reason (their deadline, the client's
        cancel) are answered elsewhere or not at all.
        """
        work = self._work
        if work is None or not work.cancel_called or self._rpc is None:
            return
        error = AgentUnavailable("the node shut down before the call finished")
        data = self.codec.encode(self.dispatcher.error_frame(error, request=frame))
        self.stats.error_replies += 1
        try:
            self._rpc.send_nowait([*envelope, data])
        except trio.WouldBlock:
            self.stats.dropped_replies += 1
        except zmq.ZMQError as exc:
            if exc.errno != errno.EHOSTUNREACH:
                raise
            self.stats.dropped_replies += 1

    def _timed_out(self, frame: TransportEnvelope) -> TransportEnvelope:
        self.stats.timeouts += 1
        return self.dispatcher.error_frame(
            TransportTimeout("the call did not finish within its deadline"), request=frame)

    async def _stream(
        self, envelope: list[bytes], frame: TransportEnvelope, timeout: float | None
    ) -> None:
        key = tuple(envelope)
        deadline = trio.current_time() + timeout if timeout is not None else math.inf
        with trio.CancelScope(deadline=deadline) as scope:
            self._streams[key] = scope
            try:
                async with aclosing(self.dispatcher.handle_stream(frame)) as replies:
                    async for reply in replies:
                        await self._reply(envelope, reply, request=frame)
            finally:
                by_client = self._streams.get(key) is not scope
                if not by_client:
                    del self._streams[key]
        if scope.cancelled_caught:
            if by_client:
                self.stats.streams_cancelled += 1
            else:  # the deadline passed: the stream ends with TIMEOUT
                await self._reply(envelope, self._timed_out(frame), request=frame)

    def _cancel_stream(self, envelope: list[bytes]) -> None:
        scope = self._streams.pop(tuple(envelope), None)
        if scope is None:
            self.stats.unknown_cancels += 1
        else:
            scope.cancel()

    async def _reply(
        self,
        envelope: list[bytes],
        frame: TransportEnvelope,
        *,
        request: TransportEnvelope | None = None,
        error: bool = False,
    ) -> None:
        try:
            data = self.codec.encode(frame)
        except PayloadTooLarge as exc:
            error = True
            data = self.codec.encode(self.dispatcher.error_frame(exc, request=request))
        if error:
            self.stats.error_replies += 1
        message = [*envelope, data]
        assert self._rpc is not None
        try:
            self._rpc.send_nowait(message)
        except trio.WouldBlock:
            await self._send_later(message)
        except zmq.ZMQError as exc:
            if exc.errno != errno.EHOSTUNREACH:
                raise
            self.stats.dropped_replies += 1

    async def _send_later(self, message: list[bytes]) -> None:
        """Send a reply whose client's queue is full (a slow reader), or drop it.

        ROUTER's POLLOUT speaks for all clients at once, so this one is polled with a
        backoff until ``reply_timeout``.
        """
        assert self._rpc is not None
        delay = 0.0005
        with trio.move_on_after(self.reply_timeout):
            while True:
                await trio.sleep(delay)
                delay = min(delay * 2, _REPLY_BACKOFF_MAX)
                try:
                    self._rpc.send_nowait(message)
                    return
                except trio.WouldBlock:
                    continue
                except zmq.ZMQError as exc:
                    if exc.errno != errno.EHOSTUNREACH:
                        raise
                    break
        self.stats.dropped_replies += 1

    # ------------------------------------------------------------------ events

    async def _forward_events(self, xpub: TrioSocket, bus: Subscription) -> None:
        encode = self._event_framing.encode_event
        async for event in bus:
            try:
                data = encode(event)
            except (IntentusError, ValueError, TypeError):
                # Too large, a protector that will not seal it, or a payload JSON cannot
                # hold: this event is skipped, the node keeps publishing.
                self.stats.events_skipped += 1
                log.warning("event %r not published: it cannot be encoded", event.event_type)
                continue
            # XPUB never blocks: a subscriber whose queue is full misses the event.
            xpub.send_nowait([event.event_type.encode(), data])
            self.stats.events_published += 1

    async def _answer_subscriptions(self, xpub: TrioSocket) -> None:
        """Confirm each subscription: a welcome on the subscriber's private sync topic."""
        while True:
            frames = await xpub.receive()
            message = frames[0]
            if message[:1] == b"\x01" and message[1:].startswith(wire.SYNC_PREFIX):
                xpub.send_nowait([message[1:], b""])


async def serve(
    router: Router,
    url: str,
    *,
    task_status: Any = trio.TASK_STATUS_IGNORED,
    **options: Any,
) -> None:
    """Serve ``router`` at ``url`` until cancelled; see ``ZmqServer`` for the options."""
    await ZmqServer(router, **options).run(url, task_status=task_status)
