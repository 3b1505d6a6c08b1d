"""The Router: resolves an intent to agents and turns every outcome into an AgentResponse.

Strategies (``routing.strategy``):

* ``direct`` — ``targetAgent`` if given, else the best match; on an error response the
  ``fallbackAgents`` are tried in order.
* ``fallback`` — like direct, then every other matching agent, in order of specificity.
* ``broadcast`` — every matching agent concurrently; the reply aggregates all responses.
* ``parallel`` — every matching agent concurrently; the first success wins, the rest are
  cancelled.

While an agent runs, ``current_trace_id()`` returns the trace id of its intent, so intents it
sends (``new_intent``) and events it publishes join the same trace. Nothing an agent does
escapes as an exception: timeouts become AGENT_TIMEOUT, raised ``IntentusError``\\ s keep
their code, and anything else becomes INTERNAL_AGENT_ERROR without quoting the exception.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable
from contextlib import aclosing
from typing import Any, Final, TypeVar

import trio
from msgspec.structs import replace

from .._deadline import Timeout, run_with_timeout
from ..protocol.codec import response_to_json
from ..protocol.enums import ErrorCode, ResponseStatus, RoutingStrategy
from ..protocol.errors import (
    AgentTimeout,
    CapabilityNotFound,
    IntentusError,
    RoutingError,
)
from ..protocol.factory import trace_id_var
from ..protocol.models import (
    DEFAULT_ROUTING,
    AgentResponse,
    ErrorInfo,
    IntentEnvelope,
    JsonObject,
    StreamChunk,
)
from .events import EventBus
from .registry import IntentPattern, Registration, Registry

log = logging.getLogger("intentus_trio.router")

F = TypeVar("F", bound=Callable[..., Any])

_UNSET: Any = object()


def _patterns(intents: str | Iterable[str], version: str) -> tuple[IntentPattern, ...]:
    names = (intents,) if isinstance(intents, str) else tuple(intents)
    if not names:
        raise ValueError("an agent must handle at least one intent")
    return tuple(IntentPattern(name, version) for name in names)


# Module constants: an enum member looked up through its class costs ~0.1 µs on Python 3.11,
# a noticeable part of an in-process call.
_DIRECT: Final = RoutingStrategy.DIRECT
_SUCCESS: Final = ResponseStatus.SUCCESS


class Router:
    """Routes intents to registered agents; see the module docstring for the rules."""

    def __init__(
        self,
        *,
        name: str = "router",
        default_timeout: float | None = None,
        events: EventBus | None = None,
    ) -> None:
        self.name = name
        self.default_timeout = default_timeout
        self.registry = Registry()
        self.events = events if events is not None else EventBus()

    # ------------------------------------------------------------------ registration

    def register(
        self,
        agent: str,
        intents: str | Iterable[str],
        handler: Callable[[IntentEnvelope], Any],
        *,
        version: str = "*",
        timeout: float | None = _UNSET,
        description: str = "",
        input_schema: JsonObject | None = None,
        call: Callable[[IntentEnvelope], Awaitable[Any]] | None = None,
    ) -> Registration:
        """Register ``handler`` as agent ``agent`` for the given intent name patterns.

        ``handler`` is an ``async def`` taking the IntentEnvelope and returning a payload
        dict, an AgentResponse or None; or an async generator (a streaming agent) yielding
        chunk payloads and optionally a final AgentResponse. A streaming agent's
        non-streamed calls drain its stream, unless ``call`` (an ``async def`` like a plain
        handler) answers them in one go.
        """
        streaming = inspect.isasyncgenfunction(handler)
        if not streaming and not inspect.iscoroutinefunction(handler):
            raise TypeError("an agent handler must be an async function or async generator")
        if call is not None and not (streaming and inspect.iscoroutinefunction(call)):
            raise TypeError("call= is an async function, given with a streaming handler")
        registration = Registration(
            agent,
            _patterns(intents, version),
            handler,
            streaming,
            self.default_timeout if timeout is _UNSET else timeout,
            description,
            input_schema,
            call,
        )
        self.registry.add(registration)
        return registration

    def agent(
        self,
        agent: str,
        intents: str | Iterable[str],
        **options: Any,
    ) -> Callable[[F], F]:
        """Decorator form of ``register``."""

        def decorate(handler: F) -> F:
            self.register(agent, intents, handler, **options)
            return handler

        return decorate

    def unregister(self, agent: str) -> None:
        self.registry.remove(agent)

    # ------------------------------------------------------------------ resolution

    def candidates(self, env: IntentEnvelope) -> list[Registration]:
        """The agents ``env`` would be offered to, in order (may raise an IntentusError)."""
        name, version = env.intent.name, env.intent.version
        routing = env.routing
        matches = self.registry.resolve(name, version)
        if routing.target_agent is not None:
            target = self.registry.get(routing.target_agent)
            if target is None:
                raise RoutingError(
                    f"target agent {routing.target_agent!r} is not registered",
                    details={"targetAgent": routing.target_agent},
                )
            if not target.handles(name, version):
                raise CapabilityNotFound(
                    f"agent {target.agent!r} does not handle intent {name!r} v{version}",
                    details={"intent": name, "version": version, "targetAgent": target.agent},
                )
            chain = [target]
        elif matches:
            chain = [matches[0]]
        else:
            raise CapabilityNotFound(
                f"no agent handles intent {name!r} v{version}",
                details={"intent": name, "version": version},
            )
        strategy = routing.strategy
        if strategy is RoutingStrategy.BROADCAST or strategy is RoutingStrategy.PARALLEL:
            return list(matches) if routing.target_agent is None else chain
        for fallback in routing.fallback_agents:
            reg = self.registry.get(fallback)
            if reg is not None and reg not in chain and reg.handles(name, version):
                chain.append(reg)
        if strategy is RoutingStrategy.FALLBACK:
            chain.extend(r for r in matches if r not in chain)
        return chain

    # ------------------------------------------------------------------ request/response

    async def route_intent(self, env: IntentEnvelope) -> AgentResponse:
        """Deliver ``env`` to an agent and return its response; never raises IntentusError."""
        token = trace_id_var.set(env.metadata.trace_id)
        try:
            routing = env.routing
            if routing is DEFAULT_ROUTING or (
                routing.target_agent is None and not routing.fallback_agents
                and routing.strategy is _DIRECT
            ):
                # The common case: best match, no target, no fallbacks.
                matches = self.registry.resolve_ref(env.intent)
                if matches:
                    reg = matches[0]
                    if reg.streaming or reg.timeout is not None:
                        return await self.call_agent(reg, env)
                    # call_agent inline for a plain agent without a deadline: one
                    # coroutine less on the path of every call.
                    try:
                        result = await reg.handler(env)
                    except Exception as exc:
                        return self._failed(reg, env.metadata.trace_id, exc)
                    return self._as_response(result, reg, env.metadata.trace_id)
            try:
                chain = self.candidates(env)
            except IntentusError as exc:
                return exc.to_response(trace_id=env.metadata.trace_id)
            strategy = routing.strategy
            if strategy is RoutingStrategy.BROADCAST:
                return await self._broadcast(env, chain)
            if strategy is RoutingStrategy.PARALLEL:
                return await self._race(env, chain)
            response = await self.call_agent(chain[0], env)
            if response.status is ResponseStatus.SUCCESS or len(chain) == 1:
                return response
            return await self._fall_back(env, chain, response)
        finally:
            trace_id_var.reset(token)

    async def call_agent(self, reg: Registration, env: IntentEnvelope) -> AgentResponse:
        """Run one agent on ``env`` with its deadline; every outcome becomes a response."""
        trace_id = env.metadata.trace_id
        try:
            handler = reg.handler
            if reg.streaming:
                if reg.call is None:
                    return await self._drain_stream(reg, env)
                handler = reg.call
            if reg.timeout is None:
                result = await handler(env)
            else:
                result = await run_with_timeout(handler(env), reg.timeout)
        except Exception as exc:
            return self._failed(reg, trace_id, exc)
        return self._as_response(result, reg, trace_id)

    def _failed(self, reg: Registration, trace_id: str, exc: Exception) -> AgentResponse:
        """The response for an agent call that raised ``exc``."""
        if isinstance(exc, Timeout):
            return AgentTimeout(
                f"agent {reg.agent!r} did not answer within {reg.timeout} s",
                details={"agent": reg.agent, "timeout": reg.timeout},
            ).to_response(trace_id=trace_id, agent=reg.agent)
        if isinstance(exc, IntentusError):
            return exc.to_response(trace_id=trace_id, agent=reg.agent)
        return self._crashed(reg, trace_id, exc)

    def _as_response(self, result: Any, reg: Registration, trace_id: str) -> AgentResponse:
        if type(result) is dict or result is None:
            return AgentResponse(
                "1.0", _SUCCESS, result, {"agent": reg.agent, "traceId": trace_id}
            )
        if isinstance(result, AgentResponse):
            if "traceId" in result.metadata and "agent" in result.metadata:
                return result
            meta = {"agent": reg.agent, "traceId": trace_id, **result.metadata}
            return replace(result, metadata=meta)
        return self._crashed(
            reg, trace_id, TypeError(f"agent returned {type(result).__name__}, not a dict")
        )

    def _crashed(self, reg: Registration, trace_id: str, exc: BaseException) -> AgentResponse:
        log.warning("agent %r failed (traceId %s)", reg.agent, trace_id, exc_info=exc)
        error = ErrorInfo(
            ErrorCode.INTERNAL_AGENT_ERROR,
            f"agent {reg.agent!r} failed with {type(exc).__name__}",
            False,
            {"agent": reg.agent, "exception": type(exc).__name__},
        )
        return AgentResponse.failure(error, agent=reg.agent, trace_id=trace_id)

    async def _fall_back(
        self, env: IntentEnvelope, chain: list[Registration], first: AgentResponse
    ) -> AgentResponse:
        path = [chain[0].agent]
        response = first
        for reg in chain[1:]:
            path.append(reg.agent)
            response = await self.call_agent(reg, env)
            if response.ok:
                break
        meta = {**response.metadata, "decisionPath": path, "retries": len(path) - 1}
        return replace(response, metadata=meta)

    async def _broadcast(self, env: IntentEnvelope, chain: list[Registration]) -> AgentResponse:
        results: dict[str, AgentResponse] = {}

        async def one(reg: Registration) -> None:
            results[reg.agent] = await self.call_agent(reg, env)

        async with trio.open_nursery() as nursery:
            for reg in chain:
                nursery.start_soon(one, reg)
        ok = any(r.ok for r in results.values())
        payload = {
            "responses": {
                reg.agent: response_to_json(results[reg.agent]) for reg in chain
            }
        }
        meta = {"agent": self.name, "traceId": env.metadata.trace_id,
                "decisionPath": [reg.agent for reg in chain]}
        if ok:
            return AgentResponse("1.0", ResponseStatus.SUCCESS, payload, meta)
        error = ErrorInfo(ErrorCode.AGENT_ERROR, "every agent of the broadcast failed",
                          any(r.error is not None and r.error.retryable for r in results.values()),
                          payload)
        return AgentResponse("1.0", ResponseStatus.ERROR, None, meta, error)

    async def _race(self, env: IntentEnvelope, chain: list[Registration]) -> AgentResponse:
        winner: list[AgentResponse] = []
        failures: list[AgentResponse] = []

        async def one(reg: Registration, cancel: trio.CancelScope) -> None:
            response = await self.call_agent(reg, env)
            if response.ok and not winner:
                winner.append(response)
                cancel.cancel()
            elif not response.ok:
                failures.append(response)

        async with trio.open_nursery() as nursery:
            for reg in chain:
                nursery.start_soon(one, reg, nursery.cancel_scope)
        response = winner[0] if winner else failures[-1]
        meta = {**response.metadata, "decisionPath": [reg.agent for reg in chain]}
        return replace(response, metadata=meta)

    # ------------------------------------------------------------------ streaming

    async def route_stream(
        self, env: IntentEnvelope
    ) -> AsyncGenerator[StreamChunk | AgentResponse, None]:
        """Yield the chunks of ``env``'s reply, then exactly one final AgentResponse.

        A non-streaming agent yields just its response. Errors become that final response;
        a stream that ends without one gets ``{"chunks": <count>}`` as its final payload.
        Iterate with ``contextlib.aclosing`` if you may stop early.
        """
        token = trace_id_var.set(env.metadata.trace_id)
        try:
            try:
                reg = self.candidates(env)[0]
            except IntentusError as exc:
                yield exc.to_response(trace_id=env.metadata.trace_id)
                return
            if not reg.streaming:
                yield await self.call_agent(reg, env)
                return
            seq = 0
            async with aclosing(self._stream_agent(reg, env)) as items:
                async for item in items:
                    if isinstance(item, StreamChunk):
                        seq += 1
                    yield item
                    if isinstance(item, AgentResponse):
                        return
            yield AgentResponse(
                "1.0", ResponseStatus.SUCCESS, {"chunks": seq},
                {"agent": reg.agent, "traceId": env.metadata.trace_id},
            )
        finally:
            trace_id_var.reset(token)

    async def _stream_agent(
        self, reg: Registration, env: IntentEnvelope
    ) -> AsyncGenerator[StreamChunk | AgentResponse, None]:
        """Chunks, then an AgentResponse only if the agent gave one or failed."""
        trace_id = env.metadata.trace_id
        agen = reg.handler(env)
        deadline = None if reg.timeout is None else trio.current_time() + reg.timeout
        seq = 0
        try:
            while True:
                remaining = None if deadline is None else max(0.0, deadline - trio.current_time())
                try:
                    item = await run_with_timeout(agen.__anext__(), remaining)
                except StopAsyncIteration:
                    return
                if isinstance(item, AgentResponse):
                    yield self._as_response(item, reg, trace_id)
                    return
                if type(item) is not dict:
                    yield self._crashed(reg, trace_id, TypeError(
                        f"streaming agent yielded {type(item).__name__}, not a dict"))
                    return
                yield StreamChunk(seq, item)
                seq += 1
        except Timeout:
            yield AgentTimeout(
                f"agent {reg.agent!r} did not finish its stream within {reg.timeout} s",
                details={"agent": reg.agent, "timeout": reg.timeout, "chunks": seq},
            ).to_response(trace_id=trace_id, agent=reg.agent)
        except IntentusError as exc:
            yield exc.to_response(trace_id=trace_id, agent=reg.agent)
        except Exception as exc:
            yield self._crashed(reg, trace_id, exc)
        finally:
            with trio.CancelScope(shield=True):
                await agen.aclose()

    async def _drain_stream(self, reg: Registration, env: IntentEnvelope) -> AgentResponse:
        """A streaming agent called for one response: chunks are collected into the reply."""
        chunks: list[JsonObject] = []
        async with aclosing(self._stream_agent(reg, env)) as items:
            async for item in items:
                if isinstance(item, AgentResponse):
                    return item
                chunks.append(item.payload)
        return AgentResponse(
            "1.0", ResponseStatus.SUCCESS, {"chunks": chunks},
            {"agent": reg.agent, "traceId": env.metadata.trace_id},
        )
