"""The WebSocket server: ``await nursery.start(serve, router, "ws://127.0.0.1:0")``.

Connections run in a nursery shielded from the caller's cancellation so that shutdown can
be graceful: when ``serve`` is cancelled it stops accepting, lets each connection finish
its running calls for up to ``shutdown_timeout`` seconds, closes them with code 1001, and
only then cancels whatever is left.
"""

from __future__ import annotations

import logging
import ssl
from typing import Any

import attrs
import trio
from trio_websocket import WebSocketRequest, wrap_server_stream

from ..._groups import unwrap_single
from ...protocol.codec import DEFAULT_MAX_FRAME_BYTES, FrameCodec
from ...protocol.enums import TransportProtocol
from ...protocol.models import Event
from ...routing.router import Router
from ..framing import FrameDispatcher, FrameProtector
from ..lifetime import shielded_nursery
from . import wire
from .connection import ServerConnection, event_push_frame
from .endpoint import Endpoint
from .stream import DirectStream

log = logging.getLogger("intentus_trio.transports.websocket")


#: Encoded event pushes kept for the other subscribers of the same event (count, size).
_CACHED_EVENTS = 64
_CACHED_EVENT_BYTES = 64 * 1024


@attrs.define
class ServerStats:
    connections: int = 0
    rejected: int = 0
    frames_in: int = 0
    #: Frames answered with MALFORMED_MESSAGE / VALIDATION_ERROR / PAYLOAD_TOO_LARGE etc.
    malformed: int = 0
    #: Connections closed because the client stopped reading or answering pings.
    aborted: int = 0
    #: Times a connection's reader paused because ``max_concurrent`` calls were running.
    stalls: int = 0
    timeouts: int = 0
    cancelled: int = 0
    peak_active: int = 0
    events_out: int = 0
    events_oversize: int = 0
    #: Events not pushed to a sealed subscription because they could not be sealed.
    events_unsealable: int = 0
    #: Events skipped because their payload cannot be encoded as JSON.
    events_unencodable: int = 0


class WebSocketServer:
    """Serves ``router`` over WebSocket at ``url``; ``run`` is for ``nursery.start``.

    Keep the object to read ``stats`` and ``connections`` while it runs.
    """

    def __init__(
        self,
        router: Router,
        url: str = "ws://127.0.0.1:0/",
        *,
        protector: FrameProtector | None = None,
        require_emcl: bool = False,
        ssl_context: ssl.SSLContext | None = None,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        max_connections: int = 1024,
        max_concurrent: int = 1024,
        max_subscriptions: int = 64,
        subscription_buffer: int = 256,
        heartbeat_interval: float | None = 15.0,
        heartbeat_timeout: float = 10.0,
        idle_timeout: float | None = 300.0,
        send_timeout: float = 10.0,
        handshake_timeout: float = 10.0,
        close_timeout: float = 2.0,
        max_call_timeout: float | None = 300.0,
        shutdown_timeout: float = 5.0,
        message_queue_size: int = 4,
    ) -> None:
        self.endpoint = Endpoint.parse(url)
        if self.endpoint.secure != (ssl_context is not None):
            raise ValueError("wss:// needs an ssl_context, and ws:// takes none")
        if min(max_connections, max_concurrent, max_subscriptions, subscription_buffer) < 1:
            raise ValueError("limits must be >= 1")
        self.router = router
        self.dispatcher = FrameDispatcher(router, TransportProtocol.WEBSOCKET,
                                          codec=FrameCodec(max_frame_bytes),
                                          protector=protector, require_emcl=require_emcl)
        self.ssl_context = ssl_context
        self.max_frame_bytes = max_frame_bytes
        self.max_connections = max_connections
        self.max_concurrent = max_concurrent
        self.max_subscriptions = max_subscriptions
        self.subscription_buffer = subscription_buffer
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_timeout = heartbeat_timeout
        self.idle_timeout = idle_timeout
        self.send_timeout = send_timeout
        self.handshake_timeout = handshake_timeout
        self.close_timeout = close_timeout
        self.max_call_timeout = max_call_timeout
        self.shutdown_timeout = shutdown_timeout
        self.message_queue_size = message_queue_size
        self.connections: set[ServerConnection] = set()
        self.stats = ServerStats()
        #: The bound URL, once listening.
        self.url: str | None = None
        self._draining = False
        self._drained = trio.Event()
        self._connections_changed = trio.Event()
        self._event_texts: dict[tuple[int, str, int], tuple[Event, int, str]] = {}

    def event_text(self, event: Event, sid: str, dropped: int) -> tuple[int, str]:
        """The encoded push of a plaintext ``event`` to subscription ``sid``: (bytes, text).

        Every subscriber of an event gets the same frame but for these two headers, and
        client subscription ids repeat across connections; so one publish to many
        subscribers encodes each distinct frame once.
        """
        key = (id(event), sid, dropped)
        hit = self._event_texts.get(key)
        if hit is not None and hit[0] is event:
            return hit[1], hit[2]
        data = self.dispatcher.codec.encode(event_push_frame(event, sid, dropped),
                                            limit=False)
        text = data.decode()
        if len(data) <= _CACHED_EVENT_BYTES:
            if len(self._event_texts) >= _CACHED_EVENTS:
                self._event_texts.clear()
            self._event_texts[key] = (event, len(data), text)
        return len(data), text

    async def wait_connections(self, count: int) -> None:
        """Wait until exactly ``count`` connections are open."""
        while len(self.connections) != count:
            await self._connections_changed.wait()

    def _connections_change(self) -> None:
        self._connections_changed.set()
        self._connections_changed = trio.Event()

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Listen, report the bound URL to ``task_status``, serve until cancelled."""
        with unwrap_single():
            async with trio.open_nursery() as outer:
                stop = trio.Event()
                workers: trio.Nursery = await outer.start(shielded_nursery, stop)
                listening = trio.CancelScope()
                try:
                    port = await workers.start(self._listen, listening, workers)
                    self.url = self.endpoint.with_port(port).url
                    task_status.started(self.url)
                    await trio.sleep_forever()
                finally:
                    with trio.CancelScope(shield=True):
                        await self._shutdown(listening)
                    stop.set()

    async def _listen(
        self, listening: trio.CancelScope, workers: trio.Nursery, *, task_status: Any
    ) -> None:
        with listening:
            host, port = self.endpoint.host, self.endpoint.port
            tcp = await trio.open_tcp_listeners(port, host=host)
            bound = tcp[0].socket.getsockname()[1]
            task_status.started(bound)
            if self.ssl_context is None:
                await trio.serve_listeners(self._accepted, tcp, handler_nursery=workers)
            else:
                tls = [trio.SSLListener(listener, self.ssl_context) for listener in tcp]
                await trio.serve_listeners(self._accepted, tls, handler_nursery=workers)

    async def _accepted(
        self, stream: trio.SocketStream | trio.SSLStream[trio.SocketStream]
    ) -> None:
        """One TCP (or TLS) connection: the opening handshake, then the WebSocket session."""
        plain = DirectStream(stream, self.send_timeout) if isinstance(
            stream, trio.SocketStream) else None
        try:
            async with trio.open_nursery() as nursery:
                request: WebSocketRequest | None = None
                with trio.move_on_after(self.handshake_timeout):
                    request = await wrap_server_stream(
                        nursery, plain or stream,
                        message_queue_size=self.message_queue_size,
                        max_message_size=2 * self.max_frame_bytes,
                    )
                if request is not None:
                    await self._handle(request, plain)
                nursery.cancel_scope.cancel()
        except Exception:
            # A bug here must cost one connection, never the server.
            log.exception("WebSocket connection failed")
        finally:
            await trio.aclose_forcefully(stream)

    async def _shutdown(self, listening: trio.CancelScope) -> None:
        self._draining = True
        listening.cancel()
        for conn in list(self.connections):
            conn.begin_drain()
        if self.connections:
            with trio.move_on_after(self.shutdown_timeout):
                await self._drained.wait()

    async def _handle(self, request: WebSocketRequest, plain: DirectStream | None) -> None:
        refusal = self._refusal(request)
        if refusal is not None:
            self.stats.rejected += 1
            status, text = refusal
            with trio.move_on_after(self.close_timeout):
                await request.reject(status, body=text.encode())
            return
        peer_max = wire.parse_max_frame(request.headers) or self.max_frame_bytes
        ws = await request.accept(
            extra_headers=[(wire.MAX_FRAME_HTTP_HEADER, str(self.max_frame_bytes).encode())])
        conn = ServerConnection(self, ws, peer_max, plain)
        self.connections.add(conn)
        self.stats.connections += 1
        self._connections_change()
        try:
            await conn.run()
        finally:
            self.connections.discard(conn)
            self._connections_change()
            if self._draining and not self.connections:
                self._drained.set()

    def _refusal(self, request: WebSocketRequest) -> tuple[int, str] | None:
        if self._draining:
            return 503, "server shutting down"
        if request.path.partition("?")[0] != self.endpoint.path:
            return 404, f"no WebSocket endpoint at this path; use {self.endpoint.path}"
        if len(self.connections) >= self.max_connections:
            return 503, "too many connections"
        return None


async def serve(
    router: Router,
    url: str = "ws://127.0.0.1:0/",
    *,
    task_status: Any = trio.TASK_STATUS_IGNORED,
    **options: Any,
) -> None:
    """Serve ``router`` at ``url`` until cancelled; reports the bound URL (port 0 works)."""
    await WebSocketServer(router, url, **options).run(task_status=task_status)
