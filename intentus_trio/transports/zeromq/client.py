"""The client: one DEALER socket multiplexing every call, plus a SUB socket per subscription.

Calls are correlated by a request id in the ZeroMQ envelope (``wire.py``). There is no reader
task: one waiting caller at a time (the leader) receives replies and hands each to its owner;
the others wait on an Event, and a leader whose own reply has come wakes one of them to lead.
So a lone call costs no task switch beyond the socket's own wakeup. A call that times out
just forgets its id; its late reply is discarded and counted,
and the socket stays in use. ZeroMQ reconnects by itself. A request is only queued while the
socket monitor reports a live connection (``zmq_trio.Link``), so a call that could not be
sent before its deadline reports CONNECTION_FAILURE, and one sent but unanswered reports
TIMEOUT, or CONNECTION_FAILURE as soon as that connection drops (deadline or not: the node
can no longer answer it). The socket does not use ``ZMQ_IMMEDIATE``, which asks the same of
libzmq but discards the replies received and not yet read when the connection drops: without
it they stay readable, so a reply the node sent before closing reaches its caller even if the
client's loop was busy while the connection went away.

Without it, though, libzmq keeps the requests not yet written out across the drop and sends
them over the next connection: a node restarted on the same address would run calls whose
callers were told they failed (and may have retried them). So a drop ends the socket: the
replies it holds are read, it is closed without linger (discarding what it still queues) and
a fresh one connects in its place.

The client's tasks (the link's and the deadline timer) run in a trio system task, not in a
nursery of the task that enters the client: the client may then be closed from any task or
cancel scope, or opened with ``__aenter__`` and closed with ``aclose`` like any resource,
without leaving trio's nursery stack unbalanced.
"""

from __future__ import annotations

import itertools
import os
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from fnmatch import fnmatchcase
from types import TracebackType
from typing import Any

import attrs
import trio
import zmq

from ...protocol.codec import DEFAULT_MAX_FRAME_BYTES, FrameCodec
from ...protocol.enums import MessageType, TransportProtocol
from ...protocol.errors import (
    ConnectionFailure,
    IntentusError,
    ProtocolError,
    RemoteError,
    TransportError,
    TransportTimeout,
)
from ...protocol.models import AgentResponse, Event, IntentEnvelope, StreamChunk
from ..base import StreamItem
from ..deadlines import Deadlines
from ..framing import ClientFraming, FrameProtector, timeout_headers
from ..zmq_trio import Link, TrioSocket
from . import wire
from .endpoints import check_url, endpoint

_UNSET: Any = object()
_INF = float("inf")


@attrs.define
class ClientStats:
    requests: int = 0
    #: Replies whose request id is not waiting (it timed out or was cancelled).
    late_replies: int = 0
    #: Messages that are not [requestId, b"", frame].
    dropped_malformed: int = 0
    streams_overflowed: int = 0
    #: Live connections that dropped; each took with it the requests still queued for it.
    connections_lost: int = 0


class _Call:
    __slots__ = ("deadline", "done", "event", "expired", "items", "sent", "stream")

    def __init__(self, stream: bool, deadline: float) -> None:
        self.items: deque[StreamItem | IntentusError] = deque()
        #: Set while the caller waits as a follower: an item arrived, or it should lead.
        self.event: trio.Event | None = None
        self.stream = stream
        self.deadline = deadline
        self.expired = False
        self.done = False
        #: The request is queued: only a connection's drop then tells that no reply will come.
        self.sent = False

    def answered(self) -> bool:
        """Whether the call holds its final item (a stream's chunks are not final)."""
        items = self.items
        return bool(items) and not (self.stream and isinstance(items[-1], StreamChunk))


def _call_done(call: _Call) -> bool:
    return call.done


class ZmqClient:
    """A Transport to one ZeroMQ node (see the module docstring)."""

    protocol = "zeromq"

    def __init__(
        self,
        url: str,
        *,
        timeout: float | None = 30.0,
        protector: FrameProtector | None = None,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        max_message_bytes: int | None = None,
        hwm: int = 1000,
        heartbeat: float | None = 2.0,
        events_url: str | None = None,
        event_hwm: int = 1000,
        stream_buffer: int = 1024,
    ) -> None:
        self.url = check_url(url)
        self.timeout = timeout
        self.framing = ClientFraming(
            TransportProtocol.ZEROMQ, codec=FrameCodec(max_frame_bytes), protector=protector
        )
        self.events_url = events_url
        self.event_hwm = event_hwm
        self.stream_buffer = stream_buffer
        self.stats = ClientStats()
        self._options = wire.common_options(
            hwm=hwm,
            max_message_bytes=max_message_bytes or max_frame_bytes * wire.MAXMSGSIZE_FACTOR,
            heartbeat=heartbeat,
        )
        self._ids = itertools.count(1)
        self._calls: dict[bytes, _Call] = {}
        self._leader: _Call | None = None
        self._followers: dict[_Call, None] = {}
        self._sock: TrioSocket | None = None
        self._link: Link | None = None
        self._started = False
        self._closed = False
        #: Cancels the client's system task, which sets ``_stopped`` as it ends.
        self._scope = trio.CancelScope()
        self._stopped = trio.Event()
        self._error: Exception | None = None
        self._subscriptions: set[TrioSocket] = set()
        # Deadlines of waiting calls, served by one timer task: a cancel scope per call
        # would cost more than the rest of the call's trio overhead.
        self._deadlines = Deadlines[_Call](self._expire, _call_done)
        #: ``trio.current_time``; ``__aenter__`` reads its clock directly (two calls less).
        self._now: Callable[[], float] = trio.current_time
        self._nursery: trio.Nursery | None = None

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> ZmqClient:
        if self._started or self._closed:
            raise RuntimeError("the client is already open or closed")
        self._sock, self._link = self._open()
        self._started = True
        self._now = trio.lowlevel.current_clock().current_time
        trio.lowlevel.spawn_system_task(self._background, name=f"zeromq client {self.url}")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self.aclose()
        except Exception as error:
            if exc is None:
                raise
            # The block's own exception (a cancellation included) goes on; the client's
            # failure rides along as a note instead of replacing it.
            exc.add_note(f"the ZeroMQ client's tasks also failed: {error!r}")

    async def aclose(self) -> None:
        """Close every socket and wait for the client's tasks to stop; calls still waiting
        get CONNECTION_FAILURE. Idempotent, and safe from any task or cancel scope.

        Raises what made the client's tasks fail, if anything did (once).
        """
        self._close()
        if self._started:
            with trio.CancelScope(shield=True):
                await self._stopped.wait()
        else:
            await trio.lowlevel.checkpoint()
        error, self._error = self._error, None
        if error is not None:
            raise error

    async def _background(self) -> None:
        """The link's and the timer's tasks, until the client closes.

        A system task must not raise (trio would crash the run): a failure is kept for
        ``aclose`` to raise, and closes the client.
        """
        try:
            with self._scope:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    assert self._link is not None
                    nursery.start_soon(self._link.run)
                    nursery.start_soon(self._deadlines.run)
        except Exception as exc:
            # One task's failure comes out of the nursery as a group of one: keep the
            # exception itself, which is what callers of aclose can catch.
            while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
                inner = exc.exceptions[0]
                if not isinstance(inner, Exception):
                    break
                exc = inner
            self._error = exc
        finally:
            self._nursery = None
            self._close()
            self._stopped.set()

    def _open(self) -> tuple[TrioSocket, Link]:
        sock = TrioSocket.open(zmq.DEALER, options=self._options)
        link = None
        try:
            link = Link(sock, on_lost=self._connection_lost)
            sock.socket.connect(self.url)
        except BaseException:
            if link is not None:
                link.close()
            sock.close(0)
            raise
        return sock, link

    def _close(self) -> None:
        self._closed = True
        for sub in list(self._subscriptions):
            sub.close(0)
        if self._link is not None:
            self._link.close()
        if self._sock is not None:
            self._sock.close()
        self._scope.cancel()

    # ------------------------------------------------------------------ deadlines

    def _expire(self, call: _Call) -> None:
        if not call.items:
            call.expired = True
            self._wake(call)

    def _wake(self, call: _Call) -> None:
        """Make a waiting call look at its state (an item, a deadline, or leadership)."""
        event = call.event
        if event is not None:
            self._followers.pop(call, None)
            event.set()
        elif self._leader is call and self._sock is not None:
            self._sock.interrupt_receive()

    def _socket(self) -> TrioSocket:
        if self._closed or self._sock is None:
            raise trio.ClosedResourceError("the transport is closed")
        return self._sock

    def _connection_lost(self) -> None:
        """The live connection dropped (the node closed or died, or heartbeats timed out):
        every sent call still owed a reply gets CONNECTION_FAILURE, and the socket is
        replaced so that none of those requests is sent again.

        The node would send such a reply to a connection that no longer exists, so waiting
        for it (forever, without a deadline) helps no one. libzmq reports the drop after
        queueing every message that came over the connection, so what is queued is read and
        handed out first: a reply the node sent before it went still reaches its caller.
        The requests libzmq has not written out yet stay queued for the next connection;
        closing the socket without linger discards them, so a failure is not followed by a
        run on the node that takes the address next. A call whose deadline has passed
        reports TIMEOUT, as it would have a moment later.
        """
        sock, link, nursery = self._sock, self._link, self._nursery
        if self._closed or sock is None or sock.closed or link is None or nursery is None:
            return
        with suppress(trio.WouldBlock):
            while True:
                self._dispatch(sock.receive_nowait())
        self.stats.connections_lost += 1
        now = self._now()
        for call in self._calls.values():
            if call.sent and not call.expired and not call.answered():
                if call.deadline <= now and not call.items:
                    call.expired = True
                else:
                    call.items.append(ConnectionFailure(
                        f"the connection to {self.url} dropped before the reply came",
                        details={"url": self.url},
                    ))
            if call.items or call.expired:
                self._wake(call)
        # Callers still waiting to send see the closed link or socket and wait for the new
        # one; a leader receiving on the old socket sees it closed and finds its item.
        link.close()
        sock.close(0)
        try:
            self._sock, self._link = self._open()
        except BaseException:
            self._close()  # nothing is left to send on: the waiting callers must end
            raise
        nursery.start_soon(self._link.run)

    # ------------------------------------------------------------------ calls

    def _deadline(self, timeout: float | None) -> tuple[float | None, float]:
        limit = self.timeout if timeout is _UNSET else timeout
        return limit, _INF if limit is None else self._now() + limit

    def _start(self, sock: TrioSocket, call: _Call, message: list[bytes], deadline: float) -> bool:
        """Queue a call's request if the connection is up and the socket takes it now, and
        register the call.

        Registering after the send keeps the bookkeeping out of the round trip; it is still
        done before the caller first yields, so no reply can arrive unclaimed.
        """
        sent = False
        link = self._link
        if link is not None and link.up:
            try:
                sock.send_nowait(message)
                sent = call.sent = True
            except trio.WouldBlock:
                pass
        self._calls[message[0]] = call
        if deadline != _INF:
            self._deadlines.add(deadline, call)
        return sent

    async def _send(
        self, call: _Call, message: list[bytes], deadline: float, limit: float | None
    ) -> ConnectionFailure | None:
        """Queue ``message`` once a connection is up and the socket takes it; the failure if
        that does not happen before ``deadline``, or the client is closed meanwhile.

        A drop meanwhile replaces the socket and its link (closing the old ones): the
        request then waits for the next connection instead of being queued for it.
        """
        with trio.move_on_at(deadline):
            while not self._closed:
                link, sock = self._link, self._sock
                assert link is not None and sock is not None
                try:
                    await link.wait_up()
                    await sock.send(message)
                except trio.ClosedResourceError:
                    continue
                call.sent = True
                return None
            return ConnectionFailure("the transport was closed")
        return ConnectionFailure(
            f"no connection to {self.url} took the request within {limit} s",
            details={"timeout": limit},
        )

    def _dispatch(self, frames: list[bytes]) -> None:
        if len(frames) != 3 or frames[1]:
            self.stats.dropped_malformed += 1
            return
        call = self._calls.get(frames[0])
        if call is None:
            self.stats.late_replies += 1
            return
        item: StreamItem | IntentusError
        try:
            item = self.framing.decode_reply(frames[2])
        except IntentusError as exc:
            item = exc
        items = call.items
        if call.stream and len(items) >= self.stream_buffer:
            self.stats.streams_overflowed += 1
            items.clear()
            item = TransportError(
                f"the stream consumer fell more than {self.stream_buffer} chunks behind",
                details={"streamBuffer": self.stream_buffer},
            )
            del self._calls[frames[0]]
            self._cancel_remote(frames[0])
        items.append(item)
        if call.event is not None:
            self._wake(call)

    async def _next(self, call: _Call) -> StreamItem | IntentusError | None:
        """The call's next item; None at the deadline. Receives for everyone meanwhile."""
        items = call.items
        if not items:
            if call.expired:
                return None
            if await self._wait(call):
                return ConnectionFailure("the transport was closed during the call")
            if not items:
                return None
        return items.popleft()

    async def _wait(self, call: _Call) -> bool:
        """Until ``call`` has an item, leading or following; True if the client closed.

        A leader receives on the current socket: one replaced after a drop is closed, and
        every call it carried has its item by then.
        """
        items = call.items
        followers = self._followers
        try:
            while not items and not call.expired:
                if self._leader is None:
                    self._leader = call
                    sock = self._sock
                    assert sock is not None
                    try:
                        self._dispatch(await sock.receive())
                    except trio.WouldBlock:
                        continue  # interrupted: the deadline may have passed
                    except (trio.ClosedResourceError, trio.EndOfChannel):
                        if self._closed:
                            return True
                        continue  # the socket was replaced after a drop
                    finally:
                        self._leader = None
                else:
                    event = call.event = trio.Event()
                    followers[call] = None
                    try:
                        await event.wait()
                    finally:
                        call.event = None
                        followers.pop(call, None)
        finally:
            if self._leader is None and followers:
                # This caller stops receiving (done or cancelled): another one must lead.
                follower = next(iter(followers))
                del followers[follower]
                assert follower.event is not None
                follower.event.set()
        return False

    def _cancel_remote(self, request_id: bytes) -> None:
        sock, link = self._sock, self._link
        # A cancel queued with no connection up would reach only a later connection, whose
        # node never ran the stream.
        if sock is not None and not sock.closed and link is not None and link.up:
            # If the queue is full the cancel is skipped; the replies are then discarded.
            with suppress(trio.WouldBlock):
                sock.send_nowait([request_id, b"", wire.CANCEL])

    @staticmethod
    def _response(item: StreamItem | IntentusError | None, env: IntentEnvelope,
                  limit: float | None) -> AgentResponse:
        trace_id = env.metadata.trace_id
        if item is None:
            return TransportTimeout(
                f"no response within {limit} s", details={"timeout": limit}
            ).to_response(trace_id=trace_id)
        if isinstance(item, IntentusError):
            return item.to_response(trace_id=trace_id)
        if isinstance(item, StreamChunk):
            return ProtocolError("a stream chunk answered a plain request").to_response(
                trace_id=trace_id)
        return item

    async def send_intent(
        self, env: IntentEnvelope, *, timeout: float | None = _UNSET
    ) -> AgentResponse:
        sock = self._socket()
        limit, deadline = self._deadline(timeout)
        try:
            data = self.framing.encode_intent(env, headers=timeout_headers(deadline))
        except IntentusError as exc:
            return exc.to_response(trace_id=env.metadata.trace_id)
        request_id = b"%x" % next(self._ids)
        message = [request_id, b"", data]
        call = _Call(False, deadline)
        sent = self._start(sock, call, message, deadline)
        self.stats.requests += 1
        try:
            if not sent:
                failure = await self._send(call, message, deadline, limit)
                if failure is not None:
                    return failure.to_response(trace_id=env.metadata.trace_id)
            return self._response(await self._next(call), env, limit)
        finally:
            call.done = True
            del self._calls[request_id]

    async def send_stream(
        self, env: IntentEnvelope, *, timeout: float | None = _UNSET
    ) -> AsyncGenerator[StreamItem, None]:
        sock = self._socket()
        limit, deadline = self._deadline(timeout)
        try:
            data = self.framing.encode_intent(
                env, headers={**wire.STREAM_HEADERS, **timeout_headers(deadline)})
        except IntentusError as exc:
            yield exc.to_response(trace_id=env.metadata.trace_id)
            return
        request_id = b"%x" % next(self._ids)
        message = [request_id, b"", data]
        call = _Call(True, deadline)
        sent = self._start(sock, call, message, deadline)
        self.stats.requests += 1
        finished = False
        try:
            if not sent:
                failure = await self._send(call, message, deadline, limit)
                if failure is not None:
                    finished = True
                    yield failure.to_response(trace_id=env.metadata.trace_id)
                    return
            expected = 0
            while True:
                item = await self._next(call)
                if isinstance(item, StreamChunk):
                    if item.seq != expected:
                        item = ProtocolError(
                            f"stream chunk {item.seq} arrived where {expected} was due",
                            details={"expected": expected, "seq": item.seq},
                        )
                    else:
                        expected += 1
                        yield item
                        continue
                finished = isinstance(item, AgentResponse)
                yield self._response(item, env, limit)
                return
        finally:
            call.done = True
            if self._calls.pop(request_id, None) is not None and not finished:
                self._cancel_remote(request_id)

    # ------------------------------------------------------------------ events

    async def publish(self, event: Event, *, timeout: float | None = _UNSET) -> None:
        """Hand ``event`` to the node's event bus and wait (within ``timeout``, default the
        transport's) for its acknowledgement.

        There is no response to carry a failure, so one is raised: ``RemoteError`` for an
        error reply, ``ConnectionFailure``/``TransportTimeout`` when the node is unreachable.
        """
        sock = self._socket()
        limit, deadline = self._deadline(timeout)
        data = self.framing.encode_event(event)
        request_id = b"%x" % next(self._ids)
        message = [request_id, b"", data]
        call = _Call(False, deadline)
        sent = self._start(sock, call, message, deadline)
        try:
            if not sent:
                failure = await self._send(call, message, deadline, limit)
                if failure is not None:
                    raise failure
            item = await self._next(call)
        finally:
            call.done = True
            del self._calls[request_id]
        if item is None:
            raise TransportTimeout(f"no acknowledgement within {limit} s")
        if isinstance(item, IntentusError):
            raise item
        if isinstance(item, AgentResponse) and item.error is not None:
            raise RemoteError(item)

    @asynccontextmanager
    async def subscribe(self, event_type: str) -> AsyncIterator[AsyncIterator[Event]]:
        """Events of ``event_type`` (exact or fnmatch pattern) published after entry.

        Entering waits until the node confirms the subscription (raising ConnectionFailure
        if it does not within the transport's timeout), so no event published after the
        ``async with`` line is missed for lack of a subscription.
        """
        self._socket()
        url = self.events_url or endpoint(self.url, "events")
        sub = TrioSocket.open(zmq.SUB, linger_ms=0,
                              options={**self._options, zmq.RCVHWM: self.event_hwm})
        self._subscriptions.add(sub)
        try:
            sub.socket.connect(url)
            stream = EventStream(sub, event_type, self.framing)
            limit, deadline = self._deadline(_UNSET)
            with trio.move_on_at(deadline):
                await stream.synchronise()
            if not stream.synchronised:
                raise ConnectionFailure(
                    f"the event hub at {url} did not confirm a subscription within {limit} s"
                )
            yield stream
        finally:
            self._subscriptions.discard(sub)
            sub.close(0)


class EventStream:
    """Events from one SUB socket; ZeroMQ filters by prefix, this by the exact pattern."""

    def __init__(self, sock: TrioSocket, event_type: str, framing: ClientFraming) -> None:
        self.event_type = event_type
        self.received = 0
        #: Messages skipped: undecodable, or of a type the prefix let through.
        self.skipped = 0
        self.synchronised = False
        self._sock = sock
        self._framing = framing
        self._pattern = any(c in event_type for c in "*?[")
        prefix = event_type
        for i, c in enumerate(event_type):
            if c in "*?[":
                prefix = event_type[:i]
                break
        self._token = wire.SYNC_PREFIX + os.urandom(8).hex().encode()
        sock.socket.setsockopt(zmq.SUBSCRIBE, prefix.encode())
        sock.socket.setsockopt(zmq.SUBSCRIBE, self._token)
        self._early: deque[list[bytes]] = deque()

    async def synchronise(self) -> None:
        """Wait for the hub's welcome on our private topic (sent after our subscriptions)."""
        while True:
            frames = await self._sock.receive()
            if frames[0] == self._token:
                self.synchronised = True
                self._sock.socket.setsockopt(zmq.UNSUBSCRIBE, self._token)
                return
            self._early.append(frames)

    def _accept(self, frames: list[bytes]) -> Event | None:
        if len(frames) != 2:
            self.skipped += 1
            return None
        try:
            frame = self._framing.decode_frame(frames[1])
        except IntentusError:
            self.skipped += 1
            return None
        event = frame.body
        if frame.message_type is not MessageType.EVENT or not isinstance(event, Event):
            self.skipped += 1
            return None
        if self._pattern:
            wanted = fnmatchcase(event.event_type, self.event_type)
        else:
            wanted = event.event_type == self.event_type
        if not wanted:
            self.skipped += 1
            return None
        self.received += 1
        return event

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> Event:
        while True:
            if self._early:
                frames = self._early.popleft()
            else:
                try:
                    frames = await self._sock.receive()
                except trio.ClosedResourceError:
                    raise StopAsyncIteration from None
            event = self._accept(frames)
            if event is not None:
                return event


@asynccontextmanager
async def open_client(url: str, **options: Any) -> AsyncIterator[ZmqClient]:
    """``async with open_client("tcp://host:port") as transport: ...``"""
    async with ZmqClient(url, **options) as client:
        yield client
