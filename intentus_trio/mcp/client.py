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
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from typing import Any, cast

import anyio
import mcp_types as types
import pydantic
import trio
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from .. import __version__
from ..protocol.errors import AgentError, AgentUnavailable, ConnectionFailure
from ..protocol.models import AgentResponse, IntentEnvelope
from ..routing.registry import Registration
from ..routing.router import Router
from .adapter import (
    response_from_jsonrpc_error,
    response_from_tool_result,
    tool_call_params,
)

log = logging.getLogger("intentus_trio.mcp.client")

_PAGE_CAP = 100
#: What an MCP transport raises once its peer is gone.
_GONE = (anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream, OSError,
         trio.ClosedResourceError, trio.BrokenResourceError)


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
    ) -> None:
        self.router = router
        self.prefix = prefix
        self.timeout = timeout
        self.include = None if include is None else frozenset(include)
        self._name = name
        self._client: Client | None = None
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

    async def call(self, tool: str, env: IntentEnvelope) -> AgentResponse:
        """Call ``tool`` with ``env``'s payload; every outcome is a response."""
        agent = self.agent_name(tool)
        trace_id = env.metadata.trace_id
        client = self._client
        if client is None:
            return AgentUnavailable(
                f"MCP server of agent {agent!r} is unavailable: {self.unavailable or 'closed'}",
                details={"agent": agent, "tool": tool},
            ).to_response(trace_id=trace_id, agent=agent)
        params = tool_call_params(env, tool=tool)
        meta = cast(types.RequestParamsMeta, params["_meta"])
        try:
            result = await client.call_tool(tool, params["arguments"],
                                            read_timeout_seconds=self.timeout, meta=meta)
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

    def _register(self, tool: types.Tool) -> None:
        try:
            registration = self.router.register(
                self.agent_name(tool.name),
                self.prefix + tool.name,
                functools.partial(self.call, tool.name),
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
) -> AsyncIterator[McpAgents]:
    """Register the tools of MCP ``server`` with ``router`` for the duration of the block.

    ``server``: what ``mcp.Client`` accepts (``StdioServerParameters``, an ``http(s)://``
    URL, an SDK transport or in-process server). ``prefix``: put before each tool name to
    make its intent name. ``name``: the agents are called ``<name>/<tool>`` (default: the
    server's name). ``timeout``: seconds per call. ``include``: register only these tools.
    ``mode``: the SDK's protocol negotiation (``"auto"`` or ``"legacy"``).
    Raises ``ConnectionFailure`` if the session cannot be opened.
    """
    options: dict[str, Any] = {
        "mode": mode,
        "client_info": types.Implementation(name="intentus-trio", version=__version__),
        **(client_options or {}),
    }
    agents = McpAgents(router, prefix=prefix, name=name, timeout=timeout, include=include)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(agents.run, server, options)
            try:
                yield agents
            finally:
                agents.unregister_all()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
