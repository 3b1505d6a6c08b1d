"""The server's ASGI application: plain ASGI, no framework, one small handler per endpoint.

Every body is read incrementally and refused as soon as it passes the limit (or at once
when ``Content-Length`` announces too much), within a deadline. Every error answer is a
complete AgentResponse: in a reply frame on the REST endpoints, in ``error.data`` on the
JSON-RPC endpoint. See ``docs/transports/http.md`` for the endpoints.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, MutableMapping
from contextlib import aclosing
from typing import Any, Final
from urllib.parse import parse_qs

import attrs
import trio

from ...protocol import headers as h
from ...protocol.codec import (
    FrameCodec,
    dumps,
    encodable_reply,
    encodable_response,
    event_from_json,
    frame_from_json,
    frame_to_json,
    intent_from_json,
    loads,
    response_to_json,
)
from ...protocol.enums import ErrorCode, MessageType, TransportProtocol
from ...protocol.errors import (
    AgentUnavailable,
    EMCLFailure,
    IntentusError,
    PayloadTooLarge,
    ProtocolError,
    TransportTimeout,
    ValidationError,
)
from ...protocol.models import AgentResponse, TransportEnvelope
from ...routing.router import Router
from ..framing import (
    FrameDispatcher,
    FrameProtector,
    call_timeout,
    event_frame,
    response_frame,
)
from . import jsonrpc, wire
from .tasks import StoreFull, TaskRecord, TaskState, TaskStore
from .watch import DisconnectWatch

log = logging.getLogger("intentus_trio.http.server")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Handler = Callable[[Scope, Receive, Send], Awaitable[None]]

_JSON_HEADERS: Final = [(b"content-type", wire.JSON.encode())]
_LEGACY = TransportProtocol.INTENTUSNET_1_0
_MAX_WAIT: Final = 60.0
_MAX_PEERS_TRACKED: Final = 4096


class ClientGone(Exception):
    """The client disconnected before the request was read."""


@attrs.define
class ServerLimits:
    """Bounds on what one request may cost the server."""

    #: Largest request body (and reply frame) in bytes.
    max_body_bytes: int = 4 * 1024 * 1024
    #: Deadline for receiving a whole request body, in seconds (408 when exceeded).
    body_timeout: float = 30.0
    #: Most calls in one JSON-RPC batch.
    max_batch: int = 1000
    #: Calls of one batch carried out at once.
    batch_concurrency: int = 32
    #: Interval of SSE keep-alive comments on event streams, in seconds.
    heartbeat: float = 15.0
    #: Longest ``?wait=`` a task status query may ask for, in seconds.
    max_wait: float = _MAX_WAIT
    #: Longest a REST or stream call may run, in seconds, whatever the client's
    #: ``timeoutMs`` header asks (None: only the client's deadline bounds it).
    max_call_timeout: float | None = 300.0


@attrs.define
class ServerStats:
    requests: int = 0
    #: Distinct client (address, port) pairs seen, i.e. TCP connections (while < 4096).
    connections: int = 0
    tasks_submitted: int = 0
    #: Calls answered with TIMEOUT because their deadline passed.
    timeouts: int = 0
    #: Calls and streams cancelled because their client disconnected before the answer.
    abandoned: int = 0
    #: Events not sent to a subscriber's stream: too large, or no key to seal them.
    events_skipped: int = 0


class _Exit(Exception):
    """An early answer was sent; stop handling the request."""


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


def _is_json(content_type: bytes | None) -> bool:
    if content_type is None:
        return False
    media = content_type.split(b";", 1)[0].strip().lower()
    return media in (b"application/json", b"application/json-rpc") or (
        media.startswith(b"application/") and media.endswith(b"+json")
    )


class HttpApp:
    """The ASGI application of ``serve``; usable with any ASGI server running under trio."""

    def __init__(
        self,
        router: Router,
        *,
        protector: FrameProtector | None = None,
        require_emcl: bool = False,
        limits: ServerLimits | None = None,
        tasks: TaskStore | None = None,
    ) -> None:
        self.router = router
        self.limits = limits or ServerLimits()
        self.codec = FrameCodec(self.limits.max_body_bytes)
        self.dispatcher = FrameDispatcher(
            router, TransportProtocol.HTTP, codec=self.codec, protector=protector,
            require_emcl=require_emcl,
        )
        self.tasks = tasks if tasks is not None else TaskStore()
        self.stats = ServerStats()
        #: Set when the server starts draining: streams end, health turns 503.
        self.closing = trio.Event()
        self.task_nursery: trio.Nursery | None = None
        #: Cancels calls whose clients disconnect; ``HttpServer`` runs its service task.
        self.watch = DisconnectWatch()
        self._peers: set[tuple[Any, ...]] = set()
        self._routes: dict[str, dict[str, Handler]] = {
            wire.INTENT_PATH: {"POST": self._frame_endpoint},
            wire.ROOT_PATH: {"POST": self._frame_endpoint},
            wire.JSONRPC_PATH: {"POST": self._jsonrpc_endpoint},
            wire.STREAM_PATH: {"POST": self._stream_endpoint},
            wire.EVENTS_PATH: {"POST": self._frame_endpoint, "GET": self._events_endpoint},
            wire.TASKS_PATH: {"POST": self._submit_task},
            wire.HEALTH_PATH: {"GET": self._health},
        }
        self._batch_limiter = trio.CapacityLimiter(self.limits.batch_concurrency)

    # ------------------------------------------------------------------ ASGI entry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        stats = self.stats
        stats.requests += 1
        client = scope.get("client")
        if client is not None and len(self._peers) < _MAX_PEERS_TRACKED:
            peer = tuple(client)
            if peer not in self._peers:
                self._peers.add(peer)
                stats.connections += 1
        try:
            await self._dispatch(scope, receive, send)
        except* (_Exit, ClientGone):
            pass
        except* (trio.BrokenResourceError, trio.BusyResourceError, trio.ClosedResourceError):
            # The client left while we answered (the server's reader closed the socket).
            pass

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        methods = self._routes.get(path)
        try:
            if methods is None:
                if path.startswith(wire.TASKS_PATH + "/"):
                    await self._task_endpoint(scope, receive, send)
                    return
                raise _NotFound
            handler = methods.get(scope["method"])
            if handler is None:
                await self._method_not_allowed(scope, receive, send, list(methods))
                return
            await handler(scope, receive, send)
        except _NotFound:
            await self._error(send, receive, 404, ProtocolError(
                "no such endpoint", details={"path": path[:256]}), drain=True)

    # ------------------------------------------------------------------ bodies and answers

    async def _read_body(
        self, scope: Scope, receive: Receive, send: Send, *, rpc: bool = False
    ) -> bytes:
        """The request body, refused past the size limit or the deadline (raises _Exit)."""
        limit = self.limits.max_body_bytes
        length = _header(scope, b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await self._error(send, receive, 413, PayloadTooLarge(int(length), limit),
                              drain=True, rpc=rpc)
            raise _Exit
        message = await receive()
        if message["type"] != "http.request":
            raise ClientGone
        body: bytes = message.get("body", b"")
        if not message.get("more_body", False):
            if len(body) > limit:
                await self._error(send, receive, 413, PayloadTooLarge(len(body), limit), rpc=rpc)
                raise _Exit
            return body
        chunks = [body]
        size = len(body)
        with trio.move_on_after(self.limits.body_timeout) as scope_:
            while True:
                if size > limit:
                    await self._error(send, receive, 413, PayloadTooLarge(size, limit),
                                      drain=True, rpc=rpc)
                    raise _Exit
                message = await receive()
                if message["type"] != "http.request":
                    raise ClientGone
                chunk = message.get("body", b"")
                chunks.append(chunk)
                size += len(chunk)
                if not message.get("more_body", False):
                    break
        if scope_.cancelled_caught:
            await self._error(send, receive, 408, TransportTimeout(
                f"request body not received within {self.limits.body_timeout} s",
                details={"timeout": self.limits.body_timeout}), drain=True, rpc=rpc)
            raise _Exit
        if size > limit:
            await self._error(send, receive, 413, PayloadTooLarge(size, limit), rpc=rpc)
            raise _Exit
        return b"".join(chunks)

    async def _read_json_body(
        self, scope: Scope, receive: Receive, send: Send, *, rpc: bool = False
    ) -> bytes:
        if not _is_json(_header(scope, b"content-type")):
            await self._error(send, receive, 415, ProtocolError(
                "expected Content-Type: application/json",
                details={"contentType": (_header(scope, b"content-type") or b"")
                         .decode("latin-1")[:128]}), drain=True, rpc=rpc)
            raise _Exit
        return await self._read_body(scope, receive, send, rpc=rpc)

    @staticmethod
    async def _respond(
        send: Send,
        status: int,
        data: bytes,
        headers: list[tuple[bytes, bytes]] = _JSON_HEADERS,
    ) -> None:
        await send({"type": "http.response.start", "status": status,
                    "headers": [*headers, (b"content-length", str(len(data)).encode())]})
        await send({"type": "http.response.body", "body": data})

    async def _respond_draining(
        self, send: Send, receive: Receive, status: int, data: bytes,
        headers: list[tuple[bytes, bytes]],
    ) -> None:
        """Answer before the body was read: discard what still arrives while answering.

        The server's queue towards the application is bounded; without a reader, a client
        still sending would block the connection's teardown.
        """
        async def drain() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        async with trio.open_nursery() as nursery:
            nursery.start_soon(drain)
            await self._respond(send, status, data, [*headers, (b"connection", b"close")])
            nursery.cancel_scope.deadline = trio.current_time() + 1.0

    async def _error(
        self,
        send: Send,
        receive: Receive,
        status: int,
        exc: IntentusError,
        *,
        drain: bool = False,
        headers: list[tuple[bytes, bytes]] = _JSON_HEADERS,
        rpc: bool = False,
    ) -> None:
        """Answer with ``exc``'s error response: in a reply frame, or a JSON-RPC error."""
        if rpc:
            data = dumps(jsonrpc.error(None, jsonrpc.INVALID_REQUEST, exc.to_response()))
        else:
            data = self.codec.encode(response_frame(exc.to_response(), TransportProtocol.HTTP))
        if drain:
            await self._respond_draining(send, receive, status, data, headers)
        else:
            await self._respond(send, status, data, headers)

    async def _method_not_allowed(
        self, scope: Scope, receive: Receive, send: Send, allowed: list[str]
    ) -> None:
        await self._error(send, receive, 405, ProtocolError(
            f"method {scope['method'][:16]} not allowed here",
            details={"allowed": allowed}), drain=True,
            headers=[*_JSON_HEADERS, (b"allow", ", ".join(allowed).encode())])

    def _decode_failure(
        self, exc: IntentusError, data: bytes
    ) -> tuple[TransportEnvelope, int]:
        """The reply frame and status for request bytes that are not a usable frame."""
        reply = self.dispatcher.error_frame(exc, data=data)
        # a reference client's frame gets its protocol back, and 200 (it discards error bodies)
        status = 200 if reply.protocol is _LEGACY else wire.status_for(exc.to_response())
        return reply, status

    def _reply_status(self, request: TransportEnvelope, reply: TransportEnvelope) -> int:
        """200 for legacy clients (they discard error bodies) and sealed replies (the
        status would disclose what EMCL hides); otherwise the error's own status."""
        body = reply.body
        if request.protocol is _LEGACY or not isinstance(body, AgentResponse):
            return 200
        return wire.status_for(body)

    async def _send_frame(self, send: Send, status: int, reply: TransportEnvelope) -> None:
        try:
            data = self.codec.encode(reply)
        except PayloadTooLarge as exc:
            status = 500
            data = self.codec.encode(response_frame(exc.to_response(), reply.protocol))
        await self._respond(send, status, data)

    # ------------------------------------------------------------------ REST: frames

    async def _frame_endpoint(self, scope: Scope, receive: Receive, send: Send) -> None:
        """POST /intent, POST / and POST /events: one frame in, one reply frame out."""
        frame = await self._read_frame(scope, receive, send)
        reply = await self._attended(frame, receive)
        await self._send_frame(send, self._reply_status(frame, reply), reply)

    async def _read_frame(self, scope: Scope, receive: Receive, send: Send) -> TransportEnvelope:
        """The request's frame; one that does not decode is answered here (raises _Exit)."""
        data = await self._read_json_body(scope, receive, send)
        try:
            return self.codec.decode(data, MessageType.INTENT)
        except IntentusError as exc:
            reply, status = self._decode_failure(exc, data)
            await self._send_frame(send, status, reply)
            raise _Exit from None

    def _timed_out(self, timeout: float | None, what: str = "call") -> TransportTimeout:
        self.stats.timeouts += 1
        return TransportTimeout(f"the {what} did not finish within its deadline",
                                details={"timeout": timeout})

    async def _attended(self, frame: TransportEnvelope, receive: Receive) -> TransportEnvelope:
        """``handle_frame`` under the call's deadline, cancelled if its client leaves.

        The deadline is the client's ``timeoutMs`` capped by ``max_call_timeout``; when it
        passes the reply is a TIMEOUT error.
        """
        timeout = call_timeout(frame.headers, self.limits.max_call_timeout)
        reply: TransportEnvelope | None = None

        async def handle() -> None:
            nonlocal reply
            reply = await self.dispatcher.handle_frame(frame)

        await self._unless_gone(receive, handle, timeout)
        if reply is None:
            reply = self.dispatcher.error_frame(self._timed_out(timeout), request=frame)
        return reply

    async def _unless_gone(
        self, receive: Receive, work: Callable[[], Awaitable[None]], timeout: float | None = None
    ) -> None:
        """Run ``work`` for at most ``timeout`` seconds; raise ClientGone if the client
        disconnects first (its work is cancelled then)."""
        deadline = math.inf if timeout is None else trio.current_time() + timeout
        call = await self.watch.attend(receive, work, deadline)
        if call.gone:
            self.stats.abandoned += 1
            raise ClientGone

    # ------------------------------------------------------------------ JSON-RPC

    async def _jsonrpc_endpoint(self, scope: Scope, receive: Receive, send: Send) -> None:
        data = await self._read_json_body(scope, receive, send, rpc=True)
        try:
            message = loads(data)
        except IntentusError as exc:
            out: Any = jsonrpc.error(None, jsonrpc.PARSE_ERROR, exc.to_response())
            await self._respond(send, 400, dumps(out))
            return
        if type(message) is list:
            if not message or len(message) > self.limits.max_batch:
                out = jsonrpc.error(None, jsonrpc.INVALID_REQUEST, ValidationError(
                    "batch", f"expected 1 to {self.limits.max_batch} calls").to_response())
                await self._respond(send, 400, dumps(out))
                return
            replies: list[Any] = []

            async def batch() -> None:
                replies.extend(await self._batch(message))

            await self._unless_gone(receive, batch)
            if not replies:
                await self._respond(send, 204, b"", [])
                return
            await self._respond(send, 200, dumps(replies))
            return
        parsed = jsonrpc.parse_call(message)
        if not isinstance(parsed, jsonrpc.Call):
            await self._respond(send, jsonrpc.status_of(parsed), dumps(parsed))
            return
        call = parsed
        answer: list[Any] = []

        async def single() -> None:
            answer.append(await self._call(call))

        await self._unless_gone(receive, single)
        reply = answer[0]
        if parsed.notification:
            await self._respond(send, 204, b"", [])
        else:
            await self._respond(send, jsonrpc.status_of(reply), dumps(reply))

    async def _batch(self, calls: list[Any]) -> list[Any]:
        replies: list[Any] = [None] * len(calls)

        async def one(index: int, call: jsonrpc.Call) -> None:
            async with self._batch_limiter:
                reply = await self._call(call)
            if not call.notification:
                replies[index] = reply

        async with trio.open_nursery() as nursery:
            for index, item in enumerate(calls):
                parsed = jsonrpc.parse_call(item)
                if isinstance(parsed, jsonrpc.Call):
                    nursery.start_soon(one, index, parsed)
                else:
                    replies[index] = parsed
        return [reply for reply in replies if reply is not None]

    async def _call(self, call: jsonrpc.Call) -> Any:
        """Carry out one JSON-RPC call within ``max_call_timeout``; never raises for bad
        input."""
        timeout = self.limits.max_call_timeout
        with trio.move_on_after(math.inf if timeout is None else timeout):
            try:
                return await self._carry_out(call)
            except IntentusError as exc:
                return jsonrpc.error(call.id, jsonrpc.code_for(exc), exc.to_response())
            except Exception:
                log.exception("JSON-RPC method %s failed", call.method)
                return jsonrpc.error(call.id, jsonrpc.INTERNAL_ERROR, ProtocolError(
                    "internal error while carrying out the call").to_response())
        return jsonrpc.error(call.id, jsonrpc.INTENT_FAILED,
                             self._timed_out(timeout).to_response())

    async def _carry_out(self, call: jsonrpc.Call) -> Any:
        method, params = call.method, call.params
        if method == "ping":
            return jsonrpc.result(call.id, {"pong": True})
        if method == "frame":
            frame = frame_from_json(params)
            reply = encodable_reply(await self.dispatcher.handle_frame(frame))
            body = reply.body
            if isinstance(body, AgentResponse) and body.error is not None:
                return jsonrpc.error(call.id, jsonrpc.INTENT_FAILED, body)
            return jsonrpc.result(call.id, frame_to_json(reply))
        if self.dispatcher.require_emcl:
            raise EMCLFailure("this endpoint accepts EMCL-sealed frames only (method 'frame')",
                              details={"reason": "plaintext"})
        if method == "intent":
            response = encodable_response(
                await self.router.route_intent(intent_from_json(params, "params")))
            if response.error is not None:
                return jsonrpc.error(call.id, jsonrpc.INTENT_FAILED, response)
            return jsonrpc.result(call.id, response_to_json(response))
        # event.publish
        event = event_from_json(params, "params")
        return jsonrpc.result(call.id, {"delivered": self.router.events.publish(event)})

    # ------------------------------------------------------------------ streams

    async def _stream_endpoint(self, scope: Scope, receive: Receive, send: Send) -> None:
        """POST /stream: reply frames as NDJSON lines (or SSE events), chunks then final."""
        frame = await self._read_frame(scope, receive, send)
        sse = (_header(scope, b"accept") or b"").find(wire.SSE.encode()) >= 0
        media = wire.SSE if sse else wire.NDJSON

        timeout = call_timeout(frame.headers, self.limits.max_call_timeout)
        started = finished = False

        def gone() -> None:
            if not finished:
                self.stats.abandoned += 1

        async with trio.open_nursery() as nursery:
            nursery.start_soon(_cancel_on_disconnect, receive, nursery.cancel_scope, gone)
            with trio.move_on_after(math.inf if timeout is None else timeout) as expiry:
                async with aclosing(self.dispatcher.handle_stream(frame)) as frames:
                    async for reply in frames:
                        started = await self._stream_line(send, frame, reply, media, started)
            if expiry.cancelled_caught:
                reply = self.dispatcher.error_frame(self._timed_out(timeout, "stream"),
                                                    request=frame)
                await self._stream_line(send, frame, reply, media, started)
            # Every frame is out: a disconnect noticed from here on abandons nothing.
            finished = True
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            nursery.cancel_scope.cancel()

    async def _stream_line(
        self,
        send: Send,
        request: TransportEnvelope,
        reply: TransportEnvelope,
        media: str,
        started: bool,
    ) -> bool:
        """Send one reply frame of a stream (starting the response first); returns True."""
        try:
            line = self.codec.encode(reply)
        except PayloadTooLarge as exc:
            line = self.codec.encode(response_frame(exc.to_response(), request.protocol))
        chunk = b"data: " + line + b"\n\n" if media == wire.SSE else line + b"\n"
        if not started:
            # Only a stream that fails at once can still choose its status.
            chunked = reply.headers.get(h.STREAM) == h.STREAM_CHUNK
            status = 200 if chunked else self._reply_status(request, reply)
            await send({"type": "http.response.start", "status": status, "headers": [
                (b"content-type", media.encode()), (b"cache-control", b"no-store")]})
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
        return True

    # ------------------------------------------------------------------ events

    async def _events_endpoint(self, scope: Scope, receive: Receive, send: Send) -> None:
        """GET /events?type=<pattern>: a server-sent event stream of event frames."""
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        types = query.get("type")
        if not types or not 0 < len(types[0]) <= 256:
            await self._error(send, receive, 422, ValidationError(
                "type", "expected one event type or pattern of 1 to 256 characters"))
            return
        sealed = _header(scope, wire.EMCL_EVENTS_HEADER.encode()) not in (None, b"", b"0")
        protector = self.dispatcher.protector
        if sealed and protector is None:
            await self._error(send, receive, 400, EMCLFailure(
                "EMCL is not configured on this endpoint", details={"reason": "not_configured"}))
            return
        if not sealed and self.dispatcher.require_emcl:
            await self._error(send, receive, 400, EMCLFailure(
                "this endpoint sends sealed event streams only (send x-intentus-emcl: 1)",
                details={"reason": "plaintext"}))
            return
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", wire.SSE.encode()), (b"cache-control", b"no-store")]})
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_cancel_on_disconnect, receive, nursery.cancel_scope)
            nursery.start_soon(_cancel_on_event, self.closing, nursery.cancel_scope)
            async with self.router.events.subscribe(types[0]) as subscription:
                await send({"type": "http.response.body", "body": b": ready\n\n",
                            "more_body": True})
                while True:
                    with trio.move_on_after(self.limits.heartbeat):
                        event = await subscription.receive()
                        frame = event_frame(event, TransportProtocol.HTTP)
                        try:
                            if sealed and protector is not None:
                                frame = protector.seal(frame)
                            data = (b"id: " + event.event_id.encode() + b"\ndata: "
                                    + self.codec.encode(frame) + b"\n\n")
                        except (IntentusError, ValueError, TypeError) as exc:
                            # Too large, no key to seal it, or a payload JSON cannot hold:
                            # skip it, keep the stream.
                            self.stats.events_skipped += 1
                            log.debug("event %r not sent: %s", event.event_type, exc)
                            continue
                        await send({"type": "http.response.body", "body": data,
                                    "more_body": True})
                        continue
                    await send({"type": "http.response.body", "body": b": ping\n\n",
                                "more_body": True})
        with trio.CancelScope(shield=True), trio.move_on_after(1.0):
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    # ------------------------------------------------------------------ tasks

    async def _submit_task(self, scope: Scope, receive: Receive, send: Send) -> None:
        """POST /tasks: start an intent frame as a task; 202 with its id and status URL."""
        frame = await self._read_frame(scope, receive, send)
        if frame.message_type not in (MessageType.INTENT, MessageType.EMCL):
            await self._error(send, receive, 400, ProtocolError(
                "a task is submitted with an intent frame",
                details={"messageType": frame.message_type.value}))
            return
        nursery = self.task_nursery
        if nursery is None or self.closing.is_set():
            await self._error(send, receive, 503, AgentUnavailable(
                "the server is not accepting tasks"))
            return
        try:
            record = self.tasks.start(nursery, self._task_runner(frame),
                                      self._cancelled_reply(frame))
        except StoreFull:
            await self._error(send, receive, 429, _RateLimited(
                f"all {self.tasks.max_tasks} task slots are running"),
                headers=[*_JSON_HEADERS, (b"retry-after", b"1")])
            return
        self.stats.tasks_submitted += 1
        location = f"{wire.TASKS_PATH}/{record.task_id}".encode()
        await self._respond(send, 202, dumps(self._task_json(record)),
                            [*_JSON_HEADERS, (b"location", location)])

    def _task_runner(
        self, frame: TransportEnvelope
    ) -> Callable[[], Awaitable[tuple[TransportEnvelope, TaskState]]]:
        async def run() -> tuple[TransportEnvelope, TaskState]:
            reply = await self.dispatcher.handle_frame(frame)
            body = reply.body
            if not isinstance(body, AgentResponse):
                return reply, TaskState.COMPLETED
            return reply, TaskState.SUCCEEDED if body.error is None else TaskState.FAILED

        return run

    def _cancelled_reply(self, frame: TransportEnvelope) -> Callable[[], TransportEnvelope]:
        def build() -> TransportEnvelope:
            exc = _TaskCancelled("the task was cancelled before it finished")
            return self.dispatcher.error_frame(exc, request=frame)

        return build

    @staticmethod
    def _task_json(record: TaskRecord) -> dict[str, Any]:
        return {
            "taskId": record.task_id,
            "state": record.state.value,
            "statusUrl": f"{wire.TASKS_PATH}/{record.task_id}",
            "submittedAt": record.submitted_at,
            "finishedAt": record.finished_at,
            "reply": None if record.reply is None else frame_to_json(record.reply),
        }

    async def _task_endpoint(self, scope: Scope, receive: Receive, send: Send) -> None:
        """GET /tasks/{id}[?wait=s], POST /tasks/{id}/cancel, DELETE /tasks/{id}."""
        rest = scope["path"][len(wire.TASKS_PATH) + 1:]
        task_id, _, action = rest.partition("/")
        method = scope["method"]
        if action not in ("", "cancel") or len(task_id) > 64:
            raise _NotFound
        allowed = ["POST"] if action == "cancel" else ["GET", "DELETE"]
        if method not in allowed:
            await self._method_not_allowed(scope, receive, send, allowed)
            return
        if method == "DELETE":
            record = self.tasks.discard(task_id)
        elif action == "cancel":
            record = self.tasks.cancel(task_id)
            if record is not None and not record.finished:
                with trio.move_on_after(1.0):
                    await record.done.wait()
        else:
            record = self.tasks.get(task_id)
            if record is not None and not record.finished:
                await self._wait_task(scope, record)
        if record is None:
            await self._error(send, receive, 404, ValidationError(
                "taskId", "unknown or expired task"), drain=True)
            return
        await self._respond(send, 200, dumps(self._task_json(record)))

    async def _wait_task(self, scope: Scope, record: TaskRecord) -> None:
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        try:
            wait = min(float(query.get("wait", ["0"])[0]), self.limits.max_wait)
        except ValueError:
            wait = 0.0
        if wait > 0:
            with trio.move_on_after(wait):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_cancel_on_event, self.closing, nursery.cancel_scope)
                    await record.done.wait()
                    nursery.cancel_scope.cancel()

    # ------------------------------------------------------------------ health

    async def _health(self, scope: Scope, receive: Receive, send: Send) -> None:
        draining = self.closing.is_set()
        body = {
            "status": "draining" if draining else "ok",
            "agents": len(self.router.registry),
            "requests": self.stats.requests,
            "connections": self.stats.connections,
            "tasks": {"stored": len(self.tasks), "running": self.tasks.running},
        }
        await self._respond(send, 503 if draining else 200, dumps(body))


class _NotFound(Exception):
    pass


class _TaskCancelled(IntentusError):
    code = ErrorCode.WORKFLOW_ABORTED


class _RateLimited(IntentusError):
    code = ErrorCode.RATE_LIMIT
    default_retryable = True


async def _cancel_on_disconnect(
    receive: Receive, scope: trio.CancelScope, on_gone: Callable[[], None] | None = None
) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    if on_gone is not None:
        on_gone()
    scope.cancel()


async def _cancel_on_event(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()
