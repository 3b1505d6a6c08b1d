"""MCP servers' tools as agents of a Router, over the official MCP SDK (the ``mcp`` extra).

``async with open_mcp_agents(router, server, prefix="fs.") as tools:`` connects to an MCP
server (an ``mcp.StdioServerParameters`` to start a subprocess, a Streamable HTTP URL, or any
SDK transport), lists its tools and registers each one as an agent for intent
``prefix + tool name``, with the tool's description and input schema. Any transport serving
the router then reaches those tools. The MCP session is a task in a nursery of the block;
leaving the block unregisters the agents and closes the session.

Calls map through ``adapter``: a tool result becomes the response payload
(``structuredContent``, else ``{"content": [...], "text": ...}``), ``isError`` results become
AGENT_ERROR responses (or the original IntentusNet error when the server is intentus_trio),
an expired deadline AGENT_TIMEOUT, and a server that went away (a crashed subprocess, a
closed connection) AGENT_UNAVAILABLE; nothing a server does raises into the router. When the
server announces a changed tool list, the registrations follow it.

Tools can also be streaming agents (``streaming=``; by default those an intentus_trio server
marks as streaming). Their calls ask the server for progress and turn each
``notifications/progress`` into a chunk: the chunk itself when the server is intentus_trio
(its streaming agents report each chunk's JSON as the message), else
``{"progress": p, "total": t, "message": m}`` (``total`` and ``message`` when given). Chunks
come in ``progress`` order, all of them before the final response, which is the one ``call``
gives. At most ``progress_buffer`` chunks wait for a slow consumer; later ones are dropped
and counted in the final response's ``droppedProgress`` metadata: progress is informational,
the result is authoritative, and the SDK offers no way to slow the server down.
"""

from __future__ import annotations

import functools
import heapq
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Collection
from contextlib import asynccontextmanager
from typing import Any, cast

import anyio
import mcp_types as types
import pydantic
import trio
from mcp import Client
from mcp.shared.dispatcher import ProgressFnT
from mcp.shared.exceptions import MCPError
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from msgspec.structs import replace

from .. import __version__
from ..protocol.codec import loads
from ..protocol.errors import AgentError, AgentUnavailable, ConnectionFailure, MalformedMessage
from ..protocol.models import AgentResponse, IntentEnvelope, JsonObject
from ..routing.registry import Registration
from ..routing.router import Router
from .adapter import (
    META_AGENT,
    META_STREAMING,
    response_from_jsonrpc_error,
    response_from_tool_result,
    tool_call_params,
)

log = logging.getLogger("intentus_trio.mcp.client")

_PAGE_CAP = 100
#: What an MCP transport raises once its peer is gone.
_GONE = (anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream, OSError,
         trio.ClosedResourceError, trio.BrokenResourceError)
#: Chunks of one streamed call that may wait for a slow consumer, by default.
DEFAULT_PROGRESS_BUFFER = 128


class _ProgressChunks:
    """The progress notifications of one streamed call, handed out in order as chunks.

    The SDK runs each progress callback as a task of its own, so two may run in either
    order. The MCP spec makes ``progress`` increase with every notification: a heap keyed on
    it restores the order, and a value not above the last one handed out is a duplicate or
    stale, and dropped. The callback never waits (a waiting callback would only pile up SDK
    tasks): when ``limit`` chunks are already waiting, it drops the notification and counts it.
    """

    def __init__(self, limit: int, *, restore: bool) -> None:
        self.limit = limit
        self.restore = restore
        self.dropped = 0
        #: The call's response, or the exception it failed with; set once, at the end.
        self.outcome: AgentResponse | Exception | None = None
        self._heap: list[tuple[float, float | None, str | None]] = []
        self._queued: set[float] = set()
        self._last = float("-inf")
        self._changed = trio.Event()

    async def on_progress(self, progress: float, total: float | None, message: str | None) -> None:
        # No await before the chunk is queued: the SDK starts this task when the notification
        # arrives, and its first step must run before the call's result is handed over.
        if self.outcome is not None or not progress > self._last or progress in self._queued:
            return
        if len(self._heap) >= self.limit:
            self.dropped += 1
            return
        heapq.heappush(self._heap, (progress, total, message))
        self._queued.add(progress)
        self._changed.set()

    def finish(self, outcome: AgentResponse | Exception) -> None:
        if self.outcome is None:
            self.outcome = outcome
            self._changed.set()

    async def next(self) -> JsonObject | None:
        """The next chunk; None once the call is over and every queued chunk was handed out."""
        while not self._heap:
            if self.outcome is not None:
                return None
            await self._changed.wait()
            self._changed = trio.Event()
        progress, total, message = heapq.heappop(self._heap)
        self._queued.discard(progress)
        self._last = progress
        return self._chunk(progress, total, message)

    def _chunk(self, progress: float, total: float | None, message: str | None) -> JsonObject:
        if self.restore and total is None and message is not None:
            try:
                original = loads(message)
            except MalformedMessage:
                original = None
            if type(original) is dict:
                return original
        chunk: JsonObject = {"progress": float(progress)}
        if total is not None:
            chunk["total"] = float(total)
        if message is not None:
            chunk["message"] = message
        return chunk


class McpAgents:
    """The tools of one MCP server, registered as agents; made by ``open_mcp_agents``."""

    def __init__(
        self,
        router: Router,
        *,
        prefix: str,
        name: str | None,
        timeout: float | None,
        include: Collection[str] | None,
        streaming: bool | Collection[str] | None = None,
        progress_buffer: int = DEFAULT_PROGRESS_BUFFER,
    ) -> None:
        if progress_buffer < 1:
            raise ValueError("progress_buffer must be at least 1")
        self.router = router
        self.prefix = prefix
        self.timeout = timeout
        self.include = None if include is None else frozenset(include)
        self.streaming = streaming if isinstance(streaming, bool | None) else frozenset(streaming)
        self.progress_buffer = progress_buffer
        self._name = name
        self._client: Client | None = None
        #: Where streamed calls run (the nursery of ``open_mcp_agents``).
        self._calls: trio.Nursery | None = None
        #: tool name -> (the SDK's Tool, our registration)
        self._tools: dict[str, tuple[types.Tool, Registration]] = {}
        self._list_changed = trio.Event()
        self._tools_changed = trio.Event()
        #: Why calls fail at once (set when the session is over).
        self.unavailable: str | None = None

    @property
    def name(self) -> str:
        """The agents' name prefix: ``name=`` if given, else the server's name."""
        if self._name is None:
            info = self._client.server_info if self._client is not None else None
            self._name = info.name if info is not None and info.name else "mcp"
        return self._name

    @property
    def client(self) -> Client:
        """The SDK client (for what the bridge does not cover); raises once it is gone."""
        if self._client is None:
            raise trio.ClosedResourceError(self.unavailable or "the MCP session is closed")
        return self._client

    @property
    def tools(self) -> dict[str, Registration]:
        """Registrations by tool name."""
        return {tool: reg for tool, (_, reg) in self._tools.items()}

    def agent_name(self, tool: str) -> str:
        return f"{self.name}/{tool}"

    # ------------------------------------------------------------------ calls

    async def call(
        self, tool: str, env: IntentEnvelope, progress: ProgressFnT | None = None
    ) -> AgentResponse:
        """Call ``tool`` with ``env``'s payload; every outcome is a response.

        ``progress`` asks the server for progress and receives it (the SDK's callback).
        """
        agent = self.agent_name(tool)
        trace_id = env.metadata.trace_id
        client = self._client
        if client is None:
            return self._unavailable(tool, env)
        params = tool_call_params(env, tool=tool)
        meta = cast(types.RequestParamsMeta, params["_meta"])
        try:
            result = await client.call_tool(tool, params["arguments"],
                                            read_timeout_seconds=self.timeout,
                                            progress_callback=progress, meta=meta)
        except MCPError as exc:
            return response_from_jsonrpc_error(exc.code, exc.message, exc.data, tool=tool,
                                               agent=agent, trace_id=trace_id)
        except _GONE as exc:
            return AgentUnavailable(
                f"MCP server of agent {agent!r} is gone ({type(exc).__name__})",
                details={"agent": agent, "tool": tool},
            ).to_response(trace_id=trace_id, agent=agent)
        except pydantic.ValidationError:
            return AgentError(f"MCP tool {tool!r} returned a malformed result",
                              details={"agent": agent, "tool": tool}).to_response(
                trace_id=trace_id, agent=agent)
        wire = result.model_dump(by_alias=True, mode="json", exclude_none=True)
        return response_from_tool_result(wire, tool=tool, agent=agent, trace_id=trace_id)

    def _unavailable(self, tool: str, env: IntentEnvelope) -> AgentResponse:
        agent = self.agent_name(tool)
        return AgentUnavailable(
            f"MCP server of agent {agent!r} is unavailable: {self.unavailable or 'closed'}",
            details={"agent": agent, "tool": tool},
        ).to_response(trace_id=env.metadata.trace_id, agent=agent)

    async def stream(
        self, tool: str, env: IntentEnvelope
    ) -> AsyncGenerator[JsonObject | AgentResponse, None]:
        """Call ``tool``, yielding its progress as chunks, then the response ``call`` gives."""
        calls = self._calls
        if calls is None or self._client is None:
            yield await self.call(tool, env)
            return
        entry = self._tools.get(tool)
        chunks = _ProgressChunks(self.progress_buffer,
                                 restore=entry is not None and _from_intentus(entry[0]))
        # The call runs as a task of the session's nursery (a generator must not hold a
        # nursery across its yields); leaving the generator early cancels it.
        scope = trio.CancelScope()
        calls.start_soon(self._call_streamed, tool, env, chunks, scope)
        try:
            while (chunk := await chunks.next()) is not None:
                yield chunk
        finally:
            scope.cancel()
        outcome = chunks.outcome
        if isinstance(outcome, Exception):
            raise outcome  # a bug of the bridge: the router reports it as an agent crash
        assert outcome is not None
        if chunks.dropped:
            outcome = replace(outcome,
                                   metadata={**outcome.metadata, "droppedProgress": chunks.dropped})
        yield outcome

    async def _call_streamed(
        self, tool: str, env: IntentEnvelope, chunks: _ProgressChunks, scope: trio.CancelScope
    ) -> None:
        outcome: AgentResponse | Exception | None = None
        try:
            with scope:
                try:
                    outcome = await self.call(tool, env, chunks.on_progress)
                    # A notification that arrived just before the result has its callback
                    # task started but maybe not run yet: one checkpoint lets it queue first.
                    await trio.lowlevel.checkpoint()
                except Exception as exc:
                    outcome = exc
        finally:
            # Cancelled with the session (the block ends): the consumer still gets an answer.
            chunks.finish(outcome if outcome is not None else self._unavailable(tool, env))

    # ------------------------------------------------------------------ tool list

    async def refresh(self) -> None:
        """Re-list the server's tools and make the registrations match."""
        client = self.client
        listed: dict[str, types.Tool] = {}
        cursor: str | None = None
        for _ in range(_PAGE_CAP):
            page = await client.list_tools(cursor=cursor, cache_mode="refresh")
            for tool in page.tools:
                if self.include is None or tool.name in self.include:
                    listed[tool.name] = tool
            cursor = page.next_cursor
            if cursor is None:
                break
        before = {name: tool for name, (tool, _) in self._tools.items()}
        for tool_name, (tool, registration) in list(self._tools.items()):
            if listed.get(tool_name) != tool:
                self._unregister(tool_name, registration)
        for tool_name, tool in listed.items():
            if tool_name not in self._tools:
                self._register(tool)
        if before != {name: tool for name, (tool, _) in self._tools.items()}:
            self._tools_changed.set()
            self._tools_changed = trio.Event()

    async def wait_for_change(self) -> None:
        """Return after the next refresh that changed the registered tools."""
        await self._tools_changed.wait()

    def _streams(self, tool: types.Tool) -> bool:
        """Whether ``tool`` is registered as a streaming agent (see ``streaming=``)."""
        if self.streaming is None:
            return bool(tool.meta and tool.meta.get(META_STREAMING) is True)
        if isinstance(self.streaming, bool):
            return self.streaming
        return tool.name in self.streaming

    def _register(self, tool: types.Tool) -> None:
        call: Any = functools.partial(self.call, tool.name)
        streams = self._streams(tool)
        handler: Any = functools.partial(self.stream, tool.name) if streams else call
        try:
            registration = self.router.register(
                self.agent_name(tool.name),
                self.prefix + tool.name,
                handler,
                # non-streamed calls of a streaming tool ask for no progress
                call=call if streams else None,
                timeout=None,  # the MCP request carries the deadline
                description=tool.description or tool.title or f"MCP tool {tool.name!r}",
                input_schema=dict(tool.input_schema),
            )
        except ValueError as exc:
            log.warning("MCP tool %r not registered: %s", tool.name, exc)
            return
        self._tools[tool.name] = (tool, registration)

    def _unregister(self, tool_name: str, registration: Registration) -> None:
        del self._tools[tool_name]
        if self.router.registry.get(registration.agent) is registration:
            self.router.unregister(registration.agent)

    def unregister_all(self) -> None:
        for tool_name, (_, registration) in list(self._tools.items()):
            self._unregister(tool_name, registration)

    # ------------------------------------------------------------------ the session

    async def _on_message(self, message: Any) -> None:
        if isinstance(message, types.ServerNotification) and isinstance(
            message, types.ToolListChangedNotification
        ):
            self._list_changed.set()
        elif isinstance(message, Exception):
            log.debug("MCP session reported %s", type(message).__name__)

    async def run(
        self, target: Any, client_options: dict[str, Any],
        *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Hold the MCP session, following tool-list changes, until cancelled."""
        started = False
        failure: BaseException | None = None
        try:
            async with Client(target, message_handler=self._on_message, **client_options) as client:
                self._client = client
                await self.refresh()
                started = True
                task_status.started()
                await self._follow_changes(client)
        except BaseExceptionGroup as group:
            errors, others = group.split(Exception)
            if others is not None:
                # Cancellation or an interrupt goes on; errors that came with it (a session
                # that died while being torn down) are recorded, never raised past the user.
                if errors is not None:
                    self.unavailable = _describe(errors)
                raise others from None
            failure = group
        except Exception as exc:
            failure = exc
        finally:
            self._client = None
        reason = _describe(failure)
        self.unavailable = reason
        if not started:
            raise ConnectionFailure(f"cannot open the MCP session: {reason}") from failure
        log.warning("MCP session with %r ended: %s", self.name, reason)

    async def _follow_changes(self, client: Client) -> None:
        tools_caps = client.server_capabilities.tools
        if not (tools_caps and tools_caps.list_changed):
            await trio.sleep_forever()
        if client.protocol_version in MODERN_PROTOCOL_VERSIONS:
            async with client.listen(tools_list_changed=True) as subscription:
                async for _event in subscription:
                    await self._refresh_logged()
            await trio.sleep_forever()
        while True:
            await self._list_changed.wait()
            self._list_changed = trio.Event()
            await self._refresh_logged()

    async def _refresh_logged(self) -> None:
        try:
            await self.refresh()
        except (MCPError, pydantic.ValidationError, *_GONE) as exc:
            log.warning("cannot re-list the tools of %r: %s", self.name, exc)


def _from_intentus(tool: types.Tool) -> bool:
    """Whether an intentus_trio server lists ``tool`` (its progress messages are chunks)."""
    return bool(tool.meta and isinstance(tool.meta.get(META_AGENT), str))


def _describe(failure: BaseException | None) -> str:
    if failure is None:
        return "the MCP session ended"
    leaves = failure.exceptions if isinstance(failure, BaseExceptionGroup) else (failure,)
    return "; ".join(f"{type(e).__name__}: {e}" for e in leaves)[:500]


@asynccontextmanager
async def open_mcp_agents(
    router: Router,
    server: Any,
    *,
    prefix: str = "",
    name: str | None = None,
    timeout: float | None = 30.0,
    include: Collection[str] | None = None,
    mode: str = "auto",
    client_options: dict[str, Any] | None = None,
    streaming: bool | Collection[str] | None = None,
    progress_buffer: int = DEFAULT_PROGRESS_BUFFER,
) -> AsyncIterator[McpAgents]:
    """Register the tools of MCP ``server`` with ``router`` for the duration of the block.

    ``server``: what ``mcp.Client`` accepts (``StdioServerParameters``, an ``http(s)://``
    URL, an SDK transport or in-process server). ``prefix``: put before each tool name to
    make its intent name. ``name``: the agents are called ``<name>/<tool>`` (default: the
    server's name). ``timeout``: seconds per call. ``include``: register only these tools.
    ``mode``: the SDK's protocol negotiation (``"auto"`` or ``"legacy"``).
    ``streaming``: which tools are streaming agents, whose calls turn the server's progress
    into chunks: None (those the server marks as streaming), True (all), False (none), or
    tool names. ``progress_buffer``: chunks of one call that may wait for a slow consumer.
    Raises ``ConnectionFailure`` if the session cannot be opened.
    """
    options: dict[str, Any] = {
        "mode": mode,
        "client_info": types.Implementation(name="intentus-trio", version=__version__),
        **(client_options or {}),
    }
    agents = McpAgents(router, prefix=prefix, name=name, timeout=timeout, include=include,
                       streaming=streaming, progress_buffer=progress_buffer)
    try:
        async with trio.open_nursery() as nursery:
            agents._calls = nursery
            await nursery.start(agents.run, server, options)
            try:
                yield agents
            finally:
                agents.unregister_all()
                agents._calls = None
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
