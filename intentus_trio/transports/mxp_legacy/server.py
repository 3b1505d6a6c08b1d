"""Serve a Router to existing MXP agents over plaintext MXP/UDP (one message per datagram).

One task owns the socket: it wakes, drains every queued datagram and never waits on an agent.
Calls go through a bounded queue to a fixed pool of worker tasks; when the queue is full the
Call is dropped and counted (its sender retransmits). Everything else is answered inline.

Every request type is answered once per (sender, message_id): replies are kept in a bounded
cache, so a retransmitted Call is answered from the cache instead of running the agent again,
and a duplicate of a Call still being worked on is dropped. Replies reuse the request's
message_id and trace_id, as MXP clients match replies by message_id.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Final

import attrs
import trio

from ...mxp.carrier import Address, DatagramCarrier, open_udp_carrier
from ...mxp.message import MessageFlags, MessageType, MxpDecodeError, MxpMessage, decode, encode
from ...protocol.codec import encodable_response
from ...protocol.errors import (
    AgentTimeout,
    IntentusError,
    PayloadTooLarge,
    ProtocolError,
    UnsupportedMessageType,
)
from ...protocol.factory import new_id
from ...protocol.models import IntentEnvelope
from ...routing.router import Router
from .payloads import (
    call_envelope,
    check_size,
    error_payload,
    event_from_payload,
    heartbeat_payload,
    json_object,
    response_payload,
)
from .trace import TRACE_IDS, TraceIdMap

__all__ = ["DEFAULT_EVENT_TYPE", "LegacyServerStats", "serve_legacy"]

DEFAULT_EVENT_TYPE: Final = "mxp.event"
"""The type given to Event payloads that do not name one."""

_DRAIN_BATCH = 64
_UNSUPPORTED_FLAGS = MessageFlags.COMPRESSED | MessageFlags.ENCRYPTED
_REQUESTS = frozenset({
    MessageType.CALL, MessageType.EVENT, MessageType.AGENT_HEARTBEAT,
    MessageType.AGENT_REGISTER, MessageType.AGENT_DISCOVER, MessageType.STREAM_OPEN,
    MessageType.STREAM_CHUNK, MessageType.STREAM_CLOSE,
})


@attrs.define
class LegacyServerStats:
    """Counters of one legacy server; pass an instance to `serve_legacy` to read them."""

    received: int = 0
    calls: int = 0
    events: int = 0
    heartbeats: int = 0
    replies_sent: int = 0
    errors_sent: int = 0
    acks_sent: int = 0
    duplicates: int = 0
    """Retransmitted requests answered again from the reply cache."""
    duplicates_in_progress: int = 0
    """Retransmitted Calls dropped because the original is still being handled."""
    saturated: int = 0
    """Calls dropped because every worker was busy and the queue was full."""
    ignored: int = 0
    """Responses, Acks and Errors that no request of this server asked for."""
    send_failed: int = 0
    dropped: dict[str, int] = attrs.Factory(dict)
    """Datagrams that are not one valid MXP message, by `DecodeErrorReason` value."""


@attrs.frozen
class _Job:
    message: MxpMessage
    peer: Address
    env: IntentEnvelope
    echo: str | None


_NO_REPLY: Final = b""
"""Reply-cache value of a request that was handled and has nothing to resend (an Event)."""


class _LegacyServer:
    def __init__(
        self,
        router: Router,
        carrier: DatagramCarrier,
        *,
        stats: LegacyServerStats,
        trace_ids: TraceIdMap,
        reply_cache_size: int,
        call_timeout: float | None,
        default_event_type: str,
        queue: trio.MemorySendChannel[_Job],
    ) -> None:
        self.router = router
        self.carrier = carrier
        self.stats = stats
        self.trace_ids = trace_ids
        # None: a Call still being handled; b"": handled, nothing to resend; else the reply.
        self.cache: OrderedDict[tuple[Address, int], bytes | None] = OrderedDict()
        self.cache_size = reply_cache_size
        self.call_timeout = math.inf if call_timeout is None else call_timeout
        self.default_event_type = default_event_type
        self.queue = queue
        host, port = carrier.local_address
        self.source = f"mxp-legacy://{f'[{host}]' if ':' in host else host}:{port}"

    # ------------------------------------------------------------------ sending

    def _send(self, data: bytes, peer: Address) -> None:
        try:
            self.carrier.send_nowait(data, peer)
        except OSError:
            self.stats.send_failed += 1

    def _remember(self, key: tuple[Address, int], reply: bytes | None) -> None:
        cache = self.cache
        cache[key] = reply
        cache.move_to_end(key)
        while len(cache) > self.cache_size:
            cache.popitem(last=False)

    def _reply(self, request: MxpMessage, peer: Address, kind: MessageType, payload: bytes) -> None:
        data = encode(MxpMessage(kind, payload, request.message_id, request.trace_id))
        self._remember((peer, request.message_id), data)
        self._send(data, peer)
        if kind is MessageType.ERROR:
            self.stats.errors_sent += 1
        else:
            self.stats.replies_sent += 1

    def _error(self, request: MxpMessage, peer: Address, exc: IntentusError) -> None:
        self._reply(request, peer, MessageType.ERROR, error_payload(exc))

    def _ack(self, request: MxpMessage, peer: Address) -> None:
        self._send(encode(MxpMessage(MessageType.ACK, b"", request.message_id,
                                     request.trace_id)), peer)
        self.stats.acks_sent += 1

    def _trace(self, message: MxpMessage) -> str:
        return self.trace_ids.from_wire(message.trace_id) if message.trace_id else new_id()

    # ------------------------------------------------------------------ receiving

    async def receive_loop(self) -> None:
        carrier = self.carrier
        while True:
            await carrier.wait_readable()
            for _ in range(_DRAIN_BATCH):
                item = carrier.receive_nowait()
                if item is None:
                    break
                self.handle_datagram(*item)

    def handle_datagram(self, data: bytes, peer: Address) -> None:
        """Decode and dispatch one datagram; never raises for anything a peer sends."""
        stats = self.stats
        stats.received += 1
        try:
            message = decode(data)
        except MxpDecodeError as exc:
            reason = exc.reason.value
            stats.dropped[reason] = stats.dropped.get(reason, 0) + 1
            return
        kind = message.type
        if kind not in _REQUESTS:
            stats.ignored += 1  # never answer an answer: two servers must not ping-pong
            return
        key = (peer, message.message_id)
        if message.flags & MessageFlags.REQUIRES_ACK:
            self._ack(message, peer)
        if key in self.cache:
            cached = self.cache[key]
            self.cache.move_to_end(key)
            if cached is None:
                stats.duplicates_in_progress += 1
            else:
                stats.duplicates += 1
                if cached:
                    self._send(cached, peer)
            return
        if message.flags & _UNSUPPORTED_FLAGS:
            self._error(message, peer, ProtocolError(
                "compressed or encrypted payloads are not supported by the legacy MXP adapter",
                details={"flags": int(message.flags)}))
        elif kind is MessageType.CALL:
            # Decoded here, not in a worker: malformed Calls never take a worker's place.
            try:
                env, echo = call_envelope(json_object(message.payload),
                                          trace_id=self._trace(message), source=self.source)
            except IntentusError as exc:
                self._error(message, peer, exc)
                return
            try:
                self.queue.send_nowait(_Job(message, peer, env, echo))
            except trio.WouldBlock:
                stats.saturated += 1
                return
            stats.calls += 1
            self._remember(key, None)
        elif kind is MessageType.EVENT:
            self._event(message, peer)
        elif kind is MessageType.AGENT_HEARTBEAT:
            stats.heartbeats += 1
            try:
                obj = json_object(message.payload) if message.payload else None
            except IntentusError:
                obj = None
            self._reply(message, peer, MessageType.RESPONSE, heartbeat_payload(obj))
        else:
            self._error(message, peer, UnsupportedMessageType(
                f"{message.type.label} is not supported by the legacy MXP adapter",
                details={"type": int(message.type)}))

    def _event(self, message: MxpMessage, peer: Address) -> None:
        try:
            event = event_from_payload(
                json_object(message.payload),
                default_type=self.default_event_type,
                event_id=f"mxp-{message.message_id:016x}",
                source=self.source,
                trace_id=self.trace_ids.from_wire(message.trace_id) if message.trace_id else None,
            )
        except IntentusError as exc:
            self._error(message, peer, exc)
            return
        self.stats.events += 1
        self.router.events.publish(event)
        # Remembered without a reply, so a retransmitted Event is not published twice.
        self._remember((peer, message.message_id), _NO_REPLY)

    # ------------------------------------------------------------------ calls

    async def worker(self, jobs: trio.MemoryReceiveChannel[_Job]) -> None:
        async for job in jobs:
            payload = await self._call(job.env, job.echo)
            self._reply(job.message, job.peer, MessageType.RESPONSE, payload)

    async def _call(self, env: IntentEnvelope, echo: str | None) -> bytes:
        trace_id = env.metadata.trace_id
        self.trace_ids.to_wire(trace_id)
        with trio.move_on_after(self.call_timeout):
            response = encodable_response(await self.router.route_intent(env))
            try:
                return check_size(response_payload(response, echo))
            except PayloadTooLarge as exc:
                return response_payload(exc.to_response(trace_id=trace_id), echo)
        return response_payload(AgentTimeout(
            f"no response within {self.call_timeout} s",
            details={"timeout": self.call_timeout}).to_response(trace_id=trace_id), echo)


async def serve_legacy(
    router: Router,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    task_status: trio.TaskStatus[Address] = trio.TASK_STATUS_IGNORED,
    carrier: DatagramCarrier | None = None,
    max_concurrency: int = 32,
    queue_size: int = 128,
    reply_cache_size: int = 1024,
    call_timeout: float | None = 30.0,
    default_event_type: str = DEFAULT_EVENT_TYPE,
    stats: LegacyServerStats | None = None,
    trace_ids: TraceIdMap = TRACE_IDS,
) -> None:
    """Answer legacy MXP messages on (host, port) until cancelled; plaintext, trusted networks only.

    Use with ``await nursery.start(serve_legacy, router, host, port)``, which returns the bound
    (host, port). ``carrier`` replaces the UDP socket (e.g. a `MemoryCarrier` in tests) and is
    not closed here. At most ``max_concurrency`` Calls run at once and ``queue_size`` wait;
    more are dropped. ``call_timeout`` bounds each Call (AGENT_TIMEOUT after it).
    """
    if max_concurrency < 1 or queue_size < 0 or reply_cache_size < 1:
        raise ValueError("max_concurrency and reply_cache_size must be >= 1, queue_size >= 0")
    own = carrier is None
    if carrier is None:
        carrier = await open_udp_carrier(host, port)
    send, receive = trio.open_memory_channel[_Job](queue_size)
    server = _LegacyServer(
        router, carrier,
        stats=stats if stats is not None else LegacyServerStats(),
        trace_ids=trace_ids, reply_cache_size=reply_cache_size, call_timeout=call_timeout,
        default_event_type=default_event_type, queue=send,
    )
    try:
        async with trio.open_nursery() as nursery, send, receive:
            for _ in range(max_concurrency):
                nursery.start_soon(server.worker, receive)
            task_status.started(carrier.local_address)
            await server.receive_loop()
    finally:
        if own:
            carrier.close()

