"""A `Transport` to one legacy MXP peer over plaintext MXP/UDP.

Each call is one Call message in one datagram. UDP loses datagrams, so the Call is sent again
with the same message_id after a timeout that doubles up to a cap; our server answers every
copy from its reply cache, so an agent runs once per call. The reply is matched by
message_id; a Response that does not reuse it (MXP runtime agents send fresh ids) is matched
by the ``request_id`` its JSON echoes.

What the legacy mode cannot do: there are no subscriptions (`subscribe` raises
`LegacySubscriptionsUnsupported`), and a stream is one Call answered by its final response.
"""

from __future__ import annotations

import math
import os
import random
import socket
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from typing import Any, Final

import attrs
import trio

from ..._groups import unwrap_single
from ...mxp.carrier import Address, DatagramCarrier, open_udp_carrier
from ...mxp.message import MessageFlags, MessageType, MxpDecodeError, MxpMessage, decode, encode
from ...protocol.codec import loads
from ...protocol.errors import (
    ConnectionFailure,
    IntentusError,
    PayloadTooLarge,
    RemoteError,
    TransportTimeout,
)
from ...protocol.models import AgentResponse, Event, IntentEnvelope, StreamChunk
from .payloads import (
    PayloadStyle,
    call_payload,
    check_size,
    error_response,
    event_payload,
    reply_response,
)
from .trace import TRACE_IDS, TraceIdMap

__all__ = [
    "DEFAULT_TIMEOUT",
    "LegacyClientStats",
    "LegacyMxpClient",
    "LegacySubscriptionsUnsupported",
    "open_legacy_client",
]

DEFAULT_TIMEOUT: Final = 30.0
_UNSET: Any = object()
_DRAIN_BATCH = 64
_ANSWERS = frozenset({MessageType.RESPONSE, MessageType.ERROR, MessageType.ACK})


class LegacySubscriptionsUnsupported(NotImplementedError):
    """Legacy MXP/UDP has no subscriptions: a peer cannot be asked to push events to us."""


@attrs.define
class LegacyClientStats:
    calls: int = 0
    events: int = 0
    retransmits: int = 0
    replies: int = 0
    late_replies: int = 0
    """Replies to calls already answered, timed out or cancelled (e.g. duplicates)."""
    stray: int = 0
    """Datagrams from other addresses, or messages that are not answers."""
    dropped: dict[str, int] = attrs.Factory(dict)
    """Datagrams that are not one valid MXP message, by `DecodeErrorReason` value."""


class _Pending:
    __slots__ = ("acked", "done", "ends_on_ack", "reply")

    def __init__(self, *, ends_on_ack: bool = False) -> None:
        self.done = trio.Event()
        self.reply: MxpMessage | None = None
        self.acked = False
        self.ends_on_ack = ends_on_ack


class LegacyMxpClient:
    """The client half of the legacy MXP adapter; open it with `open_legacy_client`."""

    def __init__(
        self,
        carrier: DatagramCarrier,
        peer: Address,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        retransmit_after: float = 0.25,
        retransmit_max: float = 2.0,
        payload_style: PayloadStyle | str = PayloadStyle.ENVELOPE,
        event_acks: bool = False,
        trace_ids: TraceIdMap = TRACE_IDS,
    ) -> None:
        if not 0 < retransmit_after <= retransmit_max:
            raise ValueError("need 0 < retransmit_after <= retransmit_max")
        self.carrier = carrier
        self.peer = peer
        self.timeout = timeout
        self.retransmit_after = retransmit_after
        self.retransmit_max = retransmit_max
        self.payload_style = PayloadStyle(payload_style)
        self.event_acks = event_acks
        self.trace_ids = trace_ids
        self.stats = LegacyClientStats()
        self._pending: dict[int, _Pending] = {}
        self._by_request_id: dict[str, int] = {}
        self._random = random.Random(os.urandom(16))
        self._closed = False

    # ------------------------------------------------------------------ receiving

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Receive answers until the carrier closes (`open_legacy_client` runs this)."""
        carrier = self.carrier
        task_status.started()
        while True:
            try:
                await carrier.wait_readable()
                for _ in range(_DRAIN_BATCH):
                    item = carrier.receive_nowait()
                    if item is None:
                        break
                    self._on_datagram(*item)
            except trio.ClosedResourceError:
                return

    def _on_datagram(self, data: bytes, source: Address) -> None:
        stats = self.stats
        if source != self.peer:
            stats.stray += 1
            return
        try:
            message = decode(data)
        except MxpDecodeError as exc:
            reason = exc.reason.value
            stats.dropped[reason] = stats.dropped.get(reason, 0) + 1
            return
        if message.type not in _ANSWERS:
            stats.stray += 1
            return
        pending = self._pending.get(message.message_id)
        if pending is None and message.type is MessageType.RESPONSE:
            pending = self._by_echo(message.payload)
        if pending is None or pending.reply is not None:
            stats.late_replies += 1
            return
        if message.type is MessageType.ACK:
            pending.acked = True
            if not pending.ends_on_ack:
                return
        stats.replies += 1
        pending.reply = message
        pending.done.set()

    def _by_echo(self, payload: bytes) -> _Pending | None:
        """The call a Response with a fresh message_id answers, by its ``request_id`` echo."""
        if not self._by_request_id or b'"request_id"' not in payload:
            return None
        try:
            obj = loads(payload)
        except IntentusError:
            return None
        request_id = obj.get("request_id") if type(obj) is dict else None
        message_id = self._by_request_id.get(request_id) if type(request_id) is str else None
        return None if message_id is None else self._pending.get(message_id)

    # ------------------------------------------------------------------ sending

    def _check_open(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the legacy MXP client is closed")

    def _limit(self, timeout: float | None) -> float:
        limit = self.timeout if timeout is _UNSET else timeout
        return math.inf if limit is None else limit

    def _new_id(self) -> int:
        while True:
            message_id = self._random.getrandbits(64)
            if message_id and message_id not in self._pending:
                return message_id

    def _send(self, data: bytes) -> None:
        try:
            self.carrier.send_nowait(data, self.peer)
        except trio.ClosedResourceError:
            raise ConnectionFailure("the legacy MXP client was closed") from None
        except OSError as exc:
            raise ConnectionFailure(f"cannot send to {self.peer[0]}:{self.peer[1]}: "
                                    f"{os.strerror(exc.errno or 0)}") from None

    async def _exchange(
        self, data: bytes, message_id: int, pending: _Pending, limit: float
    ) -> MxpMessage | None:
        """Send ``data`` until answered or ``limit`` seconds pass (then None)."""
        deadline = trio.current_time() + limit
        interval = self.retransmit_after
        self._pending[message_id] = pending
        try:
            self._send(data)
            while True:
                with trio.move_on_at(min(deadline, trio.current_time() + interval)):
                    await pending.done.wait()
                if pending.reply is not None:
                    return pending.reply
                if self._closed:
                    raise ConnectionFailure("the legacy MXP client was closed")
                if trio.current_time() >= deadline:
                    return None
                # An Ack says the peer has the request: stop pressing it.
                interval = self.retransmit_max if pending.acked else min(
                    interval * 2, self.retransmit_max)
                self.stats.retransmits += 1
                self._send(data)
        finally:
            del self._pending[message_id]

    @contextmanager
    def _echo(self, request_id: str, message_id: int) -> Iterator[None]:
        self._by_request_id[request_id] = message_id
        try:
            yield
        finally:
            if self._by_request_id.get(request_id) == message_id:
                del self._by_request_id[request_id]

    async def send_intent(
        self, env: IntentEnvelope, *, timeout: float | None = _UNSET
    ) -> AgentResponse:
        """Call the peer; failures (timeout, oversize, MXP Error) come back as error responses."""
        self._check_open()
        limit = self._limit(timeout)
        trace_id = env.metadata.trace_id
        try:
            payload = check_size(call_payload(env, self.payload_style))
        except PayloadTooLarge as exc:
            return exc.to_response(trace_id=trace_id)
        message_id = self._new_id()
        data = encode(MxpMessage(MessageType.CALL, payload, message_id,
                                 self.trace_ids.to_wire(trace_id)))
        self.stats.calls += 1
        try:
            with self._echo(env.metadata.request_id, message_id):
                reply = await self._exchange(data, message_id, _Pending(), limit)
        except IntentusError as exc:
            return exc.to_response(trace_id=trace_id)
        if reply is None:
            return TransportTimeout(
                f"no response from {self.peer[0]}:{self.peer[1]} within {limit} s",
                details={"timeout": limit, "retransmits": self.stats.retransmits},
            ).to_response(trace_id=trace_id)
        if reply.type is MessageType.ERROR:
            return error_response(reply.payload, trace_id=trace_id)
        return reply_response(reply.payload, trace_id=trace_id)

    async def send_stream(
        self, env: IntentEnvelope, *, timeout: float | None = _UNSET
    ) -> AsyncGenerator[StreamChunk | AgentResponse, None]:
        """One Call answered by one final response: the legacy protocol has no chunk semantics."""
        yield await self.send_intent(env, timeout=timeout)

    def subscribe(self, event_type: str) -> AbstractAsyncContextManager[AsyncIterator[Event]]:
        raise LegacySubscriptionsUnsupported(
            "legacy MXP/UDP has no subscriptions: a peer cannot be asked to send us events; "
            "serve a Router with serve_legacy and let MXP agents publish Events to it instead"
        )

    async def publish(self, event: Event, *, timeout: float | None = _UNSET) -> None:
        """Send an Event message.

        Fire-and-forget unless the client was opened with ``event_acks=True``: then the Event
        asks for an Ack (REQUIRES_ACK) and is retransmitted until one comes, raising
        `TransportTimeout` if none does and `RemoteError` if the peer answers with an Error.
        """
        self._check_open()
        data = check_size(event_payload(event))
        message_id = self._new_id()
        trace = self.trace_ids.to_wire(event.trace_id) if event.trace_id is not None else 0
        flags = MessageFlags.REQUIRES_ACK if self.event_acks else MessageFlags.NONE
        data = encode(MxpMessage(MessageType.EVENT, data, message_id, trace, flags))
        self.stats.events += 1
        if not self.event_acks:
            self._send(data)
            await trio.lowlevel.checkpoint()
            return
        limit = self._limit(timeout)
        reply = await self._exchange(data, message_id, _Pending(ends_on_ack=True), limit)
        if reply is None:
            raise TransportTimeout(f"no Ack for an Event within {limit} s")
        if reply.type is MessageType.ERROR:
            raise RemoteError(error_response(reply.payload, trace_id=event.trace_id or ""))

    async def aclose(self) -> None:
        """Stop accepting calls; calls in flight end with CONNECTION_FAILURE."""
        if not self._closed:
            self._closed = True
            for pending in self._pending.values():
                pending.done.set()
        await trio.lowlevel.checkpoint()

    async def __aenter__(self) -> LegacyMxpClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


async def _resolve(host: str, port: int) -> tuple[Address, str]:
    """The numeric peer address and the wildcard address of its family to bind to."""
    infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    if not infos:
        raise OSError(f"cannot resolve {host!r}")
    family, _, _, _, sockaddr = infos[0]
    peer = (str(sockaddr[0]), int(sockaddr[1]))
    if family == socket.AF_INET6 and len(sockaddr) == 4 and sockaddr[3]:
        peer = (f"{sockaddr[0]}%{sockaddr[3]}", peer[1])
    return peer, "::" if family == socket.AF_INET6 else "0.0.0.0"


@asynccontextmanager
async def open_legacy_client(
    host: str,
    port: int,
    *,
    carrier: DatagramCarrier | None = None,
    **options: Any,
) -> AsyncIterator[LegacyMxpClient]:
    """A `LegacyMxpClient` to the MXP peer at (host, port); plaintext, trusted networks only.

    Binds an ephemeral UDP port unless ``carrier`` is given (e.g. a `MemoryCarrier`, with
    ``host`` then taken as the peer's address as it is). Options: ``timeout`` (30 s per call),
    ``retransmit_after``/``retransmit_max`` (0.25 s doubling to 2 s), ``payload_style``
    ("envelope" for our server, "flat" for MXP runtime agents), ``event_acks``, ``trace_ids``.
    """
    own = carrier is None
    if carrier is None:
        peer, bind_host = await _resolve(host, port)
        carrier = await open_udp_carrier(bind_host, 0)
    else:
        peer = (host, port)
    client = LegacyMxpClient(carrier, peer, **options)
    try:
        with unwrap_single():
            async with trio.open_nursery() as nursery:
                await nursery.start(client.run)
                try:
                    yield client
                finally:
                    await client.aclose()
                    nursery.cancel_scope.cancel()
    finally:
        if own:
            carrier.close()
