"""``HttpTransport``: the client side, one ``httpx.AsyncClient`` (keep-alive pool) per transport.

Calls return AgentResponses whatever happens: a remote error response arrives unchanged
(whatever its HTTP status), and local failures become TRANSPORT_ERROR responses
(CONNECTION_FAILURE, TIMEOUT, PAYLOAD_TOO_LARGE, MALFORMED_MESSAGE). Each call has one
deadline (``timeout``) covering every attempt and every wait between attempts; the retry
rules are in ``retry.py``. Task helpers and ``publish`` raise ``IntentusError`` instead,
since they have no AgentResponse to return.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, aclosing, asynccontextmanager
from functools import partial
from types import TracebackType
from typing import Any, Final, TypeVar
from urllib.parse import quote

import attrs
import httpx
import trio

from ..._groups import lone_exception
from ...protocol.codec import (
    DEFAULT_MAX_FRAME_BYTES,
    FrameCodec,
    dumps,
    frame_to_json,
    intent_to_json,
    loads,
)
from ...protocol.enums import TransportProtocol
from ...protocol.errors import (
    ConnectionFailure,
    IntentusError,
    MalformedMessage,
    PayloadTooLarge,
    ProtocolError,
    RemoteError,
    TransportTimeout,
)
from ...protocol.models import AgentResponse, Event, IntentEnvelope, StreamChunk
from ..base import StreamItem
from ..framing import ClientFraming, FrameProtector, request_frame, timeout_headers
from . import jsonrpc, wire
from .retry import RetryPolicy, parse_retry_after

T = TypeVar("T")
_UNSET: Any = object()
_JSON_HEADERS: Final = httpx.Headers({"content-type": wire.JSON, "accept": wire.JSON})
_NDJSON_HEADERS: Final = httpx.Headers({"content-type": wire.JSON, "accept": wire.NDJSON})
#: Opened responses of finished sealed tasks a client keeps (the oldest goes beyond this).
_MAX_TASK_REPLIES: Final = 1024

#: httpx ``auth=``: an ``httpx.Auth``, a ``(user, password)`` pair, or a function that
#: takes and returns the ``httpx.Request`` (add a signature or a token there).
AuthHook = httpx.Auth | tuple[str, str] | Callable[[httpx.Request], httpx.Request]


@attrs.frozen
class TaskInfo:
    """A long-running task as the server last reported it."""

    task_id: str
    #: ``running``, ``succeeded``, ``failed``, ``cancelled`` or ``completed`` (sealed reply).
    state: str
    status_url: str
    submitted_at: str
    finished_at: str | None
    #: The final response once the task finished.
    response: AgentResponse | None

    @property
    def finished(self) -> bool:
        return self.state != "running"


class _Failed(Exception):
    """One attempt failed; ``retry`` is None (never), "always" or "idempotent"."""

    def __init__(self, error: IntentusError, retry: str | None) -> None:
        super().__init__(error.message)
        self.error = error
        self.retry = retry


@attrs.frozen
class _Answer:
    status: int
    headers: httpx.Headers
    body: bytes


class HttpTransport:
    """The HTTP transport client; use ``async with HttpTransport(url) as t`` or ``open_client``.

    ``url`` is the server's base URL (``http://host:port`` or with a path prefix). Options:
    ``timeout`` (per call, all attempts), per-phase ``connect_timeout``/``read_timeout``/
    ``write_timeout``/``pool_timeout``, ``headers`` sent on every request, ``auth``
    (see AuthHook), ``retry`` (a RetryPolicy), ``idempotent`` (may intents be retried
    after they might have run), connection pool bounds, TLS (``verify``: an
    ``ssl.SSLContext``, a CA bundle path or a bool; ``cert``: a client certificate),
    ``http2``, ``protector`` (EMCL), ``max_frame_bytes``, ``event_buffer`` (events queued per
    subscription) and ``resubscribe`` (re-open a subscription's event stream when it ends).
    """

    protocol = "http"

    def __init__(
        self,
        url: str,
        *,
        timeout: float | None = 30.0,
        connect_timeout: float | None = 5.0,
        read_timeout: float | None = None,
        write_timeout: float | None = None,
        pool_timeout: float | None = None,
        headers: Mapping[str, str] | None = None,
        auth: AuthHook | None = None,
        retry: RetryPolicy | None = None,
        idempotent: bool = False,
        max_connections: int = 32,
        max_keepalive_connections: int = 32,
        keepalive_expiry: float = 15.0,
        verify: Any = True,
        cert: Any = None,
        http2: bool = False,
        protector: FrameProtector | None = None,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        event_buffer: int = 64,
        resubscribe: bool = True,
        rng: random.Random | None = None,
    ) -> None:
        base = url.rstrip("/")
        if not base.startswith(("http://", "https://")):
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.url = base
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.idempotent = idempotent
        self.event_buffer = event_buffer
        self.resubscribe = resubscribe
        self._rng = rng or random.Random()
        self._framing = ClientFraming(
            TransportProtocol.HTTP, codec=FrameCodec(max_frame_bytes), protector=protector
        )
        self._max_bytes = max_frame_bytes
        #: Opened responses of finished sealed tasks, by task id, until ``forget_task``.
        self._task_replies: OrderedDict[str, AgentResponse] | None = (
            None if protector is None else OrderedDict())
        self._client = httpx.AsyncClient(
            headers=dict(headers or {}),
            auth=auth,
            timeout=httpx.Timeout(connect=connect_timeout, read=read_timeout,
                                  write=write_timeout, pool=pool_timeout),
            limits=httpx.Limits(max_connections=max_connections,
                                max_keepalive_connections=max_keepalive_connections,
                                keepalive_expiry=keepalive_expiry),
            verify=verify,
            cert=cert,
            http2=http2,
            trust_env=False,
        )
        # Parsed once: httpx would parse a URL string on every request.
        self._urls = {name: httpx.URL(base + path) for name, path in (
            ("intent", wire.INTENT_PATH), ("jsonrpc", wire.JSONRPC_PATH),
            ("stream", wire.STREAM_PATH), ("events", wire.EVENTS_PATH),
            ("tasks", wire.TASKS_PATH), ("health", wire.HEALTH_PATH))}
        self._closed = False
        #: Where subscription readers run: a nursery of its own task, so that closing the
        #: transport cancels them and never the caller's block.
        self._nursery: trio.Nursery | None = None
        self._stopped = trio.Event()
        self._close_done = trio.Event()
        self._nursery_manager: AbstractAsyncContextManager[None] | None = None

    # ------------------------------------------------------------------ lifetime

    async def __aenter__(self) -> HttpTransport:
        if self._nursery_manager is not None:
            raise RuntimeError("an HttpTransport is entered once")
        self._nursery_manager = self._lifetime()
        await self._nursery_manager.__aenter__()
        return self

    @asynccontextmanager
    async def _lifetime(self) -> AsyncIterator[None]:
        async with trio.open_nursery() as outer:
            self._nursery = await outer.start(self._background)
            yield

    async def _background(self, *, task_status: trio.TaskStatus[trio.Nursery]) -> None:
        try:
            async with trio.open_nursery() as nursery:
                task_status.started(nursery)
                await trio.sleep_forever()
        finally:
            self._stopped.set()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        await self.aclose()
        manager = self._nursery_manager
        if manager is None:
            return False
        try:
            return bool(await manager.__aexit__(exc_type, exc, tb))
        except BaseExceptionGroup as group:
            lone = lone_exception(group)
            if lone is None:
                raise
            if lone is exc:
                return False  # the body's own exception goes on unwrapped
            raise lone from None

    async def aclose(self) -> None:
        """Close the transport: subscriptions end, calls in flight end with
        CONNECTION_FAILURE, later calls raise ``trio.ClosedResourceError``. Safe inside the
        ``async with`` block (only the transport's own tasks are cancelled) and idempotent."""
        if self._closed:
            await self._close_done.wait()
            return
        self._closed = True
        with trio.CancelScope(shield=True):
            if self._nursery is not None:
                self._nursery.cancel_scope.cancel()
                await self._stopped.wait()
            await self._client.aclose()
        self._close_done.set()

    def _check_open(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the transport is closed")

    # ------------------------------------------------------------------ one exchange

    async def _exchange(
        self,
        method: str,
        url: httpx.URL,
        content: bytes | None,
        headers: httpx.Headers,
        params: Mapping[str, str] | None = None,
    ) -> _Answer:
        """One HTTP request; failures raise _Failed saying whether a retry is safe."""
        try:
            request = self._client.build_request(method, url, content=content,
                                                 headers=headers, params=params)
            response = await self._client.send(request, stream=True)
            try:
                body = await self._read_limited(response)
            finally:
                await response.aclose()
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise _Failed(ConnectionFailure(f"cannot connect: {type(exc).__name__}",
                                            details={"url": self.url}), "always") from None
        except httpx.TimeoutException as exc:
            raise _Failed(TransportTimeout(f"HTTP {type(exc).__name__}",
                                           details={"url": self.url}), "idempotent") from None
        except httpx.HTTPError as exc:
            raise _Failed(ConnectionFailure(f"connection failed: {type(exc).__name__}",
                                            details={"url": self.url}), "idempotent") from None
        except IntentusError as exc:
            raise _Failed(exc, None) from None
        return _Answer(response.status_code, response.headers, body)

    async def _read_limited(self, response: httpx.Response) -> bytes:
        length = response.headers.get("content-length")
        if length is not None and length.isdigit():
            if int(length) > self._max_bytes:
                raise PayloadTooLarge(int(length), self._max_bytes)
            return await response.aread()
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > self._max_bytes:
                raise PayloadTooLarge(size, self._max_bytes)
            chunks.append(chunk)
        return b"".join(chunks)

    async def _call(
        self,
        method: str,
        url: httpx.URL,
        content: bytes | None,
        decode: Callable[[_Answer], tuple[T, bool]],
        failed: Callable[[IntentusError], T],
        *,
        limit: float | None,
        idempotent: bool,
        headers: httpx.Headers = _JSON_HEADERS,
        params: Mapping[str, str] | None = None,
        reseal: Callable[[], bytes] | None = None,
    ) -> T:
        """Exchange with retries under one deadline; ``decode`` returns (value, retryable).

        ``content`` is the first attempt's body; ``reseal`` makes the body of every later one,
        since a server refuses a sealed (EMCL) frame it has already received as a replay.
        """
        deadline = None if limit is None else trio.current_time() + limit
        policy = self.retry
        attempt = 0
        while True:
            attempt += 1
            retry_after: float | None = None
            remaining = None if deadline is None else deadline - trio.current_time()
            try:
                if remaining is None:
                    answer = await self._exchange(method, url, content, headers, params)
                else:
                    with trio.fail_after(max(remaining, 0.0)):
                        answer = await self._exchange(method, url, content, headers, params)
            except trio.TooSlowError:
                return failed(TransportTimeout(f"no response within {limit} s",
                                               details={"timeout": limit, "attempts": attempt}))
            except _Failed as failure:
                value = failed(failure.error)
                retry = failure.retry == "always" or (failure.retry == "idempotent"
                                                      and idempotent)
            else:
                value, retryable = decode(answer)
                status = answer.status
                if status in wire.NOT_PROCESSED_STATUSES:
                    retry = True
                    retry_after = parse_retry_after(answer.headers.get("retry-after"))
                else:
                    retry = idempotent and (retryable or status in wire.MAYBE_PROCESSED_STATUSES)
            if not retry or attempt >= policy.max_attempts:
                return value
            wait = policy.backoff(attempt, self._rng)
            if retry_after is not None:
                if retry_after > policy.max_retry_after:
                    return value
                wait = max(wait, retry_after)
            if deadline is not None and trio.current_time() + wait >= deadline:
                return value
            await trio.sleep(wait)
            if reseal is not None:
                try:
                    content = reseal()
                except IntentusError as exc:
                    return failed(exc)

    # ------------------------------------------------------------------ decoding

    def _reply(self, answer: _Answer, trace_id: str | None) -> AgentResponse:
        """The AgentResponse in a reply frame; a body that is no frame becomes an error."""
        try:
            item = self._framing.decode_reply(answer.body)
        except IntentusError as exc:
            if answer.status >= 400:
                return _http_failure(answer.status, trace_id)
            return exc.to_response(trace_id=trace_id)
        if isinstance(item, StreamChunk):
            return ProtocolError("a stream chunk where a response was expected").to_response(
                trace_id=trace_id)
        return item

    # ------------------------------------------------------------------ Transport

    async def send_intent(
        self,
        env: IntentEnvelope,
        *,
        timeout: float | None = _UNSET,
        idempotent: bool | None = None,
    ) -> AgentResponse:
        """POST the intent frame to /intent; ``idempotent=True`` allows more retries."""
        self._check_open()
        trace_id = env.metadata.trace_id
        limit = self.timeout if timeout is _UNSET else timeout
        framing = self._framing
        frame_headers = _timeout_headers(limit)
        try:
            data = framing.encode_intent(env, headers=frame_headers)
        except IntentusError as exc:
            return exc.to_response(trace_id=trace_id)
        reseal = (None if framing.protector is None
                  else partial(framing.encode_intent, env, headers=frame_headers))

        def decode(answer: _Answer) -> tuple[AgentResponse, bool]:
            reply = self._reply(answer, trace_id)
            return reply, reply.error is not None and reply.error.retryable

        def failed(exc: IntentusError) -> AgentResponse:
            return exc.to_response(trace_id=trace_id)

        return await self._call(
            "POST", self._urls["intent"], data, decode, failed,
            limit=limit,
            idempotent=self.idempotent if idempotent is None else idempotent,
            reseal=reseal,
        )

    async def send_batch(
        self,
        envs: Sequence[IntentEnvelope],
        *,
        timeout: float | None = _UNSET,
        idempotent: bool | None = None,
    ) -> list[AgentResponse]:
        """Several intents in one JSON-RPC batch request; responses in the order of ``envs``."""
        self._check_open()
        if not envs:
            return []
        protector = self._framing.protector
        reseal = None if protector is None else partial(_sealed_batch, protector, envs)
        try:
            if reseal is None:
                data = dumps([{"jsonrpc": "2.0", "method": "intent",
                               "params": intent_to_json(env), "id": index}
                              for index, env in enumerate(envs)])
            else:
                data = reseal()
        except IntentusError as exc:
            return [exc.to_response(trace_id=env.metadata.trace_id) for env in envs]

        def failed(exc: IntentusError) -> list[AgentResponse]:
            return [exc.to_response(trace_id=env.metadata.trace_id) for env in envs]

        def decode(answer: _Answer) -> tuple[list[AgentResponse], bool]:
            try:
                replies = loads(answer.body)
            except IntentusError as exc:
                if answer.status >= 400:
                    return [_http_failure(answer.status, e.metadata.trace_id) for e in envs], False
                return failed(exc), False
            if type(replies) is dict:  # the batch as a whole was refused
                whole = (self._reply(answer, None) if "messageType" in replies
                         else self._jsonrpc_item(replies, None))
                return [whole] * len(envs), whole.error is not None and whole.error.retryable
            if type(replies) is not list:
                return failed(MalformedMessage("a JSON-RPC batch reply must be an array")), False
            by_id: dict[int, Any] = {}
            for item in replies:
                # Our ids are the indexes: any other id (a list, say) answers no call of ours.
                if type(item) is dict and type(item.get("id")) is int:
                    by_id[item["id"]] = item
            out: list[AgentResponse] = []
            for index, env in enumerate(envs):
                item = by_id.get(index)
                if item is None:
                    out.append(ProtocolError("the batch reply lacks this call's response",
                                             details={"id": index}).to_response(
                        trace_id=env.metadata.trace_id))
                else:
                    out.append(self._jsonrpc_item(item, env.metadata.trace_id))
            retryable = any(r.error is not None and r.error.retryable for r in out)
            return out, retryable

        return await self._call(
            "POST", self._urls["jsonrpc"], data, decode, failed,
            limit=self.timeout if timeout is _UNSET else timeout,
            idempotent=self.idempotent if idempotent is None else idempotent,
            reseal=reseal,
        )

    def _jsonrpc_item(self, item: Any, trace_id: str | None) -> AgentResponse:
        try:
            if (self._framing.protector is not None and type(item) is dict
                    and type(item.get("result")) is dict):
                reply = self._framing.decode_reply(dumps(item["result"]))
                if isinstance(reply, StreamChunk):
                    raise ProtocolError("a stream chunk where a response was expected")
                return reply
            return jsonrpc.response_of(item)
        except IntentusError as exc:
            return exc.to_response(trace_id=trace_id)

    async def send_stream(
        self, env: IntentEnvelope, *, timeout: float | None = _UNSET
    ) -> AsyncGenerator[StreamItem, None]:
        """POST the intent to /stream and yield its chunks, then one final response.

        Only failures before the request was sent are retried; a stream in progress is not.
        """
        self._check_open()
        trace_id = env.metadata.trace_id
        limit = self.timeout if timeout is _UNSET else timeout
        deadline = None if limit is None else trio.current_time() + limit
        try:
            data = self._framing.encode_intent(env, headers=_timeout_headers(limit))
        except IntentusError as exc:
            yield exc.to_response(trace_id=trace_id)
            return
        response: httpx.Response | None = None
        failure: IntentusError | None = None
        for attempt in range(1, self.retry.max_attempts + 1):
            try:
                with trio.fail_after(_remaining(deadline)):
                    request = self._client.build_request(
                        "POST", self._urls["stream"], content=data, headers=_NDJSON_HEADERS)
                    response = await self._client.send(request, stream=True)
                break
            except trio.TooSlowError:
                failure = TransportTimeout(f"no response within {limit} s",
                                           details={"timeout": limit})
                break
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                failure = ConnectionFailure(f"cannot connect: {type(exc).__name__}",
                                            details={"url": self.url})
            except httpx.HTTPError as exc:
                failure = ConnectionFailure(f"connection failed: {type(exc).__name__}",
                                            details={"url": self.url})
                break
            wait = self.retry.backoff(attempt, self._rng)
            if attempt == self.retry.max_attempts or (
                    deadline is not None and trio.current_time() + wait >= deadline):
                break
            await trio.sleep(wait)
        if response is None:
            assert failure is not None
            yield failure.to_response(trace_id=trace_id)
            return
        try:
            async with aclosing(_lines(response, self._max_bytes)) as lines:
                while True:
                    try:
                        with trio.fail_after(_remaining(deadline)):
                            line = await lines.__anext__()
                    except StopAsyncIteration:
                        yield ConnectionFailure(
                            "the stream ended before its final response").to_response(
                            trace_id=trace_id)
                        return
                    try:
                        item = self._framing.decode_reply(line)
                    except IntentusError as exc:
                        yield (_http_failure(response.status_code, trace_id)
                               if response.status_code >= 400
                               else exc.to_response(trace_id=trace_id))
                        return
                    yield item
                    if isinstance(item, AgentResponse):
                        return
        except trio.TooSlowError:
            yield TransportTimeout(f"stream not finished within {limit} s",
                                   details={"timeout": limit}).to_response(trace_id=trace_id)
        except IntentusError as exc:
            yield exc.to_response(trace_id=trace_id)
        except httpx.HTTPError as exc:
            yield ConnectionFailure(f"stream broken: {type(exc).__name__}").to_response(
                trace_id=trace_id)
        finally:
            with trio.CancelScope(shield=True):
                await response.aclose()

    @asynccontextmanager
    async def subscribe(self, event_type: str) -> AsyncIterator[AsyncIterator[Event]]:
        """Events of ``event_type`` (exact or pattern) from the server's SSE stream.

        Entering waits until the server confirms the subscription (within ``timeout``), so
        events published after entry are received; it raises IntentusError on failure.
        When the stream ends or breaks later (the server restarted, the network failed), the
        subscription is re-opened with the retry policy's backoff until it succeeds or the
        block exits; events published meanwhile are not seen. With ``resubscribe=False``
        iteration ends instead.
        """
        self._check_open()
        nursery = self._nursery
        if nursery is None:
            raise RuntimeError("enter the transport (async with) before subscribing")
        send_channel, receive_channel = trio.open_memory_channel[Event](self.event_buffer)
        reader = _EventReader(self, event_type, send_channel)
        nursery.start_soon(reader.run)
        try:
            with trio.move_on_after(self.timeout if self.timeout is not None else float("inf")):
                await reader.ready.wait()
            if reader.failure is not None:
                raise reader.failure
            if not reader.ready.is_set():
                raise TransportTimeout("the event subscription was not confirmed in time",
                                       details={"timeout": self.timeout})
            yield _Events(receive_channel, reader)
        finally:
            # Stop the reader before closing its channel: a reader blocked on a full buffer
            # would otherwise fail on the closed channel and take the client down with it.
            reader.scope.cancel()
            with trio.CancelScope(shield=True):
                await reader.done.wait()
            receive_channel.close()

    async def publish(self, event: Event, *, timeout: float | None = _UNSET) -> None:
        """POST an event frame to /events; raises IntentusError if it was not accepted
        within ``timeout`` (default: the transport's)."""
        self._check_open()
        framing = self._framing
        data = framing.encode_event(event)
        reseal = None if framing.protector is None else partial(framing.encode_event, event)

        def decode(answer: _Answer) -> tuple[AgentResponse | IntentusError, bool]:
            reply = self._reply(answer, event.trace_id)
            return reply, reply.error is not None and reply.error.retryable

        def failed(exc: IntentusError) -> AgentResponse | IntentusError:
            return exc

        reply = await self._call("POST", self._urls["events"], data, decode, failed,
                                 limit=self.timeout if timeout is _UNSET else timeout,
                                 idempotent=False, reseal=reseal)
        if isinstance(reply, IntentusError):
            raise reply  # a local failure keeps its own type (TransportTimeout, ...)
        if reply.error is not None:
            raise RemoteError(reply)

    # ------------------------------------------------------------------ tasks

    def _task_url(self, task_id: str, action: str = "") -> httpx.URL:
        return httpx.URL(f"{self._urls['tasks']}/{quote(task_id, safe='')}{action}")

    def _task_info(
        self, answer: _Answer
    ) -> tuple[TaskInfo | AgentResponse | IntentusError, bool]:
        if answer.status not in (200, 202):
            reply = self._reply(answer, None)
            return reply, reply.error is not None and reply.error.retryable
        try:
            obj = loads(answer.body)
            if type(obj) is not dict:
                return MalformedMessage("not a task status document"), False
            task_id = str(obj["taskId"])
            reply_json = obj.get("reply")
            response = None
            if reply_json is not None:
                response = self._task_reply(task_id, reply_json)
            info = TaskInfo(task_id, str(obj["state"]), str(obj["statusUrl"]),
                            str(obj["submittedAt"]), obj.get("finishedAt"), response)
        except IntentusError as exc:
            return exc, False
        except (KeyError, TypeError):
            return MalformedMessage("not a task status document"), False
        return info, False

    def _task_reply(self, task_id: str, reply_json: Any) -> AgentResponse:
        """A finished task's response. A sealed reply opens once (EMCL refuses a second
        reply to the same request), so with EMCL the opened response is kept for later
        questions about the task."""
        replies = self._task_replies
        if replies is not None:
            kept = replies.get(task_id)
            if kept is not None:
                return kept
        item = self._framing.decode_reply(dumps(reply_json))
        if isinstance(item, StreamChunk):
            raise ProtocolError("a task reply cannot be a stream chunk")
        if replies is not None:
            replies[task_id] = item
            if len(replies) > _MAX_TASK_REPLIES:
                replies.popitem(last=False)
        return item

    def _task_gone(self, answer: _Answer) -> tuple[AgentResponse | None, bool]:
        """The answer to DELETE /tasks/<id>: nothing to read unless it is an error."""
        if answer.status == 200:
            return None, False
        reply = self._reply(answer, None)
        return reply, reply.error is not None and reply.error.retryable

    async def _task_call(
        self, method: str, url: httpx.URL, content: bytes | None,
        decode: Callable[[_Answer], tuple[T | AgentResponse | IntentusError, bool]], *,
        idempotent: bool, limit: float | None, params: Mapping[str, str] | None = None,
        reseal: Callable[[], bytes] | None = None,
    ) -> T:
        def failed(exc: IntentusError) -> T | AgentResponse | IntentusError:
            return exc

        result = await self._call(method, url, content, decode, failed, limit=limit,
                                  idempotent=idempotent, params=params, reseal=reseal)
        if isinstance(result, IntentusError):
            raise result  # a local failure keeps its own type (TransportTimeout, ...)
        if isinstance(result, AgentResponse):
            raise RemoteError(result)
        return result

    async def submit_task(
        self, env: IntentEnvelope, *, timeout: float | None = _UNSET
    ) -> TaskInfo:
        """Start ``env`` as a long-running task on the server (202 Accepted)."""
        self._check_open()
        framing = self._framing
        data = framing.encode_intent(env)
        reseal = None if framing.protector is None else partial(framing.encode_intent, env)
        return await self._task_call("POST", self._urls["tasks"], data, self._task_info,
                                     idempotent=False, reseal=reseal,
                                     limit=self.timeout if timeout is _UNSET else timeout)

    async def task_status(
        self, task_id: str, *, wait: float = 0.0, timeout: float | None = _UNSET
    ) -> TaskInfo:
        """The task's state; with ``wait`` the server holds the answer until it finishes."""
        self._check_open()
        limit = self.timeout if timeout is _UNSET else timeout
        if limit is not None and wait > 0:
            limit += wait
        params = {"wait": f"{wait:g}"} if wait > 0 else None
        return await self._task_call("GET", self._task_url(task_id), None, self._task_info,
                                     idempotent=True, limit=limit, params=params)

    async def cancel_task(self, task_id: str, *, timeout: float | None = _UNSET) -> TaskInfo:
        """Cancel a running task; its record stays, in state ``cancelled``."""
        self._check_open()
        return await self._task_call("POST", self._task_url(task_id, "/cancel"), b"",
                                     self._task_info, idempotent=True,
                                     limit=self.timeout if timeout is _UNSET else timeout)

    async def forget_task(self, task_id: str, *, timeout: float | None = _UNSET) -> None:
        """Cancel the task if it runs and delete its record (and the response kept here)."""
        self._check_open()
        await self._task_call("DELETE", self._task_url(task_id), None, self._task_gone,
                              idempotent=True,
                              limit=self.timeout if timeout is _UNSET else timeout)
        if self._task_replies is not None:
            self._task_replies.pop(task_id, None)

    async def run_task(
        self, env: IntentEnvelope, *, timeout: float | None = None, poll: float = 10.0
    ) -> AgentResponse:
        """Submit ``env`` as a task and long-poll until it finishes (``timeout``: no bound)."""
        self._check_open()
        trace_id = env.metadata.trace_id
        deadline = None if timeout is None else trio.current_time() + timeout
        try:
            info = await self.submit_task(env)
            while not info.finished:
                wait = poll if deadline is None else min(poll, _remaining(deadline))
                if wait <= 0:
                    raise TransportTimeout(f"task not finished within {timeout} s",
                                           details={"timeout": timeout, "taskId": info.task_id})
                info = await self.task_status(info.task_id, wait=wait)
        except RemoteError as exc:
            return exc.response
        except IntentusError as exc:
            return exc.to_response(trace_id=trace_id)
        if self._task_replies is not None:
            self._task_replies.pop(info.task_id, None)  # its id never reaches the caller
        assert info.response is not None
        return info.response

    async def health(self, *, timeout: float | None = _UNSET) -> dict[str, Any]:
        """The server's /healthz document (raises IntentusError if it is unreachable)."""
        self._check_open()

        def decode(answer: _Answer) -> tuple[dict[str, Any] | IntentusError, bool]:
            try:
                obj = loads(answer.body)
            except IntentusError as exc:
                return exc, False
            if type(obj) is not dict:
                return MalformedMessage("not a health document"), False
            return obj, False

        def failed(exc: IntentusError) -> dict[str, Any] | IntentusError:
            return exc

        result = await self._call("GET", self._urls["health"], None, decode, failed,
                                  limit=self.timeout if timeout is _UNSET else timeout,
                                  idempotent=True)
        if isinstance(result, IntentusError):
            raise result  # no health document: the local error (TransportTimeout, ...)
        return result


def _sealed_batch(protector: FrameProtector, envs: Sequence[IntentEnvelope]) -> bytes:
    """A JSON-RPC batch of sealed intent frames (method ``frame``), their ids the indexes."""
    return dumps([{"jsonrpc": "2.0", "method": "frame", "id": index,
                   "params": frame_to_json(protector.seal(
                       request_frame(env, TransportProtocol.HTTP)))}
                  for index, env in enumerate(envs)])


def _timeout_headers(limit: float | None) -> dict[str, str]:
    """The frame header telling the server how long the call may take (all attempts)."""
    return {} if limit is None else timeout_headers(trio.current_time() + limit)


def _remaining(deadline: float | None) -> float:
    return float("inf") if deadline is None else max(0.0, deadline - trio.current_time())


def _http_failure(status: int, trace_id: str | None) -> AgentResponse:
    """An HTTP error whose body is not ours (a proxy's page, say)."""
    return ConnectionFailure(
        f"HTTP {status} without a reply frame", details={"httpStatus": status},
        retryable=status in wire.NOT_PROCESSED_STATUSES,
    ).to_response(trace_id=trace_id)


async def _lines(response: httpx.Response, limit: int) -> AsyncGenerator[bytes, None]:
    """Lines of a streamed body (without line ends); a line longer than ``limit`` fails."""
    buffer = b""
    async for chunk in response.aiter_bytes():
        if b"\n" not in chunk:
            buffer += chunk
        else:
            # one split per chunk: cutting lines off the front one by one is quadratic
            *lines, buffer = (buffer + chunk).split(b"\n")
            for line in lines:
                yield line.rstrip(b"\r")
        if len(buffer) > limit:
            raise PayloadTooLarge(len(buffer), limit)
    if buffer:
        yield buffer


class _Events:
    """The async iterator ``subscribe`` yields, with the state of its event stream."""

    def __init__(self, channel: trio.MemoryReceiveChannel[Event], reader: _EventReader) -> None:
        self._channel = channel
        self._reader = reader

    @property
    def active(self) -> bool:
        """Whether the server currently confirms the subscription."""
        return self._reader.active

    @property
    def established(self) -> int:
        """How many times the server has confirmed it (1 + successful re-subscriptions)."""
        return self._reader.established

    async def wait_active(self) -> None:
        """Return once the subscription is confirmed (again)."""
        while not self._reader.active:
            await self._reader.changed.wait()

    async def wait_inactive(self) -> None:
        """Return once its event stream is lost (or ended)."""
        while self._reader.active:
            await self._reader.changed.wait()

    def __aiter__(self) -> _Events:
        return self

    async def __anext__(self) -> Event:
        try:
            return await self._channel.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise StopAsyncIteration from None


class _EventReader:
    """The task behind one subscription: reads SSE, decodes event frames, queues events."""

    def __init__(
        self, transport: HttpTransport, event_type: str,
        channel: trio.MemorySendChannel[Event],
    ) -> None:
        self.transport = transport
        self.event_type = event_type
        self.channel = channel
        self.ready = trio.Event()
        self.done = trio.Event()
        self.failure: IntentusError | None = None
        self.scope = trio.CancelScope()
        self.established = 0
        self._active = False
        #: Set (and replaced) whenever ``active`` changes.
        self.changed = trio.Event()

    @property
    def active(self) -> bool:
        return self._active

    def _set_active(self, active: bool) -> None:
        if active:
            self.established += 1
            self.ready.set()
        self._active = active
        self.changed.set()
        self.changed = trio.Event()

    async def run(self) -> None:
        try:
            with self.scope:
                retry = 0
                while True:
                    confirmed_before = self.established
                    failure = await self._read_once()
                    if not self.ready.is_set():
                        # Never confirmed: ``subscribe`` raises this on entry.
                        self.failure = failure or ConnectionFailure(
                            "the event stream closed before the subscription was confirmed")
                        return
                    if not self.transport.resubscribe or self.transport._closed:
                        return
                    # A stream the server confirmed starts the backoff over.
                    retry = 1 if self.established > confirmed_before else retry + 1
                    await trio.sleep(self.transport.retry.backoff(retry, self.transport._rng))
        finally:
            self.channel.close()
            self.ready.set()
            self.done.set()

    async def _read_once(self) -> IntentusError | None:
        """Read one event stream until it ends; the failure that ended it, if any."""
        try:
            await self._read()
        except IntentusError as exc:
            return exc
        except httpx.HTTPError as exc:
            return ConnectionFailure(f"event stream failed: {type(exc).__name__}")
        except BaseExceptionGroup as group:
            lone = lone_exception(group)
            return ConnectionFailure(f"event stream failed: {type(lone or group).__name__}")
        finally:
            if self._active:
                self._set_active(False)
        return None

    async def _read(self) -> None:
        t = self.transport
        headers = {"accept": wire.SSE}
        if t._framing.protector is not None:
            headers[wire.EMCL_EVENTS_HEADER] = "1"
        request = t._client.build_request(
            "GET", t._urls["events"], params={"type": self.event_type}, headers=headers,
            timeout=httpx.Timeout(connect=t._client.timeout.connect, read=None, write=None,
                                  pool=t._client.timeout.pool))
        response = await t._client.send(request, stream=True)
        try:
            if response.status_code != 200:
                body = await t._read_limited(response)
                raise RemoteError(t._reply(_Answer(response.status_code, response.headers,
                                                   body), None))
            data: list[bytes] = []
            async with aclosing(_lines(response, t._max_bytes)) as lines:
                async for line in lines:
                    if not line:
                        if data:
                            await self._deliver(b"\n".join(data))
                            data = []
                    elif line.startswith(b":"):
                        if line[1:].strip() == b"ready" and not self._active:
                            self._set_active(True)
                    elif line.startswith(b"data:"):
                        data.append(line[5:].lstrip(b" "))
        finally:
            with trio.CancelScope(shield=True):
                await response.aclose()

    async def _deliver(self, data: bytes) -> None:
        frame = self.transport._framing.decode_frame(data)
        if isinstance(frame.body, Event):
            await self.channel.send(frame.body)


def open_client(url: str, **options: Any) -> HttpTransport:
    """``async with open_client("http://127.0.0.1:8080") as transport: ...``"""
    return HttpTransport(url, **options)
