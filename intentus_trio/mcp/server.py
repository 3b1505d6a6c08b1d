"""An MCP server in front of a Router, built on the official MCP SDK (the ``mcp`` extra).

Every intent the router publishes (see ``catalog``) is a tool; ``tools/call`` routes through
the router (or through ``transport=`` if given, e.g. an EMCL-protected client of the node
that owns the agents) and the reply is mapped by ``adapter``. Arguments are checked against
the registration's ``input_schema`` first (``jsonschema``, which the SDK depends on).

Streaming agents report each chunk as a progress notification (``progress`` = chunk count,
``message`` = the chunk's JSON) to clients that asked for progress; the final result holds
``{"chunks": [...]}`` unless the agent ended with a response of its own, the same shape as
a non-streamed call. An MCP ``notifications/cancelled`` (or a dropped HTTP request) cancels
the handler and with it the agent's call. Registration changes reach clients as
``notifications/tools/list_changed`` (handshake protocol versions, on the connection's
standalone channel) or as ``subscriptions/listen`` events (2026-07-28 clients).

Run it with ``serve_stdio`` or ``await nursery.start(serve_http, router, url)``, or embed
``McpServer`` yourself (``async with McpServer(router) as bridge: ... bridge.server``).
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import AsyncIterator, Mapping
from contextlib import aclosing, asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import attrs
import jsonschema  # type: ignore[import-untyped,unused-ignore]
import mcp_types as types
import trio
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel.server import NotificationOptions, Server
from mcp.server.models import InitializationOptions
from mcp.server.session import ServerSession
from mcp.server.subscriptions import InMemorySubscriptionBus, ListenHandler, ToolsListChanged
from mcp.shared.exceptions import MCPError
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from msgspec.structs import replace
from starlette.applications import Starlette

from .. import __version__
from ..protocol.codec import encodable_response, error_to_json
from ..protocol.errors import CapabilityNotFound, IntentusError, ValidationError
from ..protocol.models import AgentResponse, IntentEnvelope, StreamChunk
from ..routing.registry import Registration
from ..routing.router import Router
from ..transports.base import StreamItem, Transport
from .adapter import (
    INVALID_PARAMS,
    McpProtocolError,
    exception_result,
    progress_of,
    tool_result,
)
from .adapter import (
    envelope_from_tool_call as _envelope_from_tool_call,
)
from .catalog import ANY_OBJECT, listed, tool_schema, tool_specs

log = logging.getLogger("intentus_trio.mcp.server")

#: Upper bound on handshake-era connections remembered for list-changed notifications.
DEFAULT_MAX_SESSIONS = 10_000
_SESSION_HEADER = "mcp-session-id"
_MAX_ERROR_TEXT = 300


class _Server(Server[Any]):
    """The SDK server, advertising ``tools.listChanged`` on every transport."""

    def create_initialization_options(
        self,
        notification_options: NotificationOptions | None = None,
        experimental_capabilities: dict[str, dict[str, Any]] | None = None,
        extensions: dict[str, dict[str, Any]] | None = None,
    ) -> InitializationOptions:
        return super().create_initialization_options(
            notification_options or NotificationOptions(tools_changed=True),
            experimental_capabilities,
            extensions,
        )


@attrs.define(eq=False)
class _Scope:
    """One run of the SDK server (a stdio or in-memory connection, or the HTTP manager)."""


class _InputValidator:
    """Checks payloads against registrations' input schemas, compiling each schema once."""

    def __init__(self) -> None:
        self._cache: weakref.WeakKeyDictionary[Registration, Any] = weakref.WeakKeyDictionary()

    def _validator(self, registration: Registration) -> Any:
        try:
            return self._cache[registration]
        except KeyError:
            pass
        schema = tool_schema(registration)
        if schema == ANY_OBJECT:  # payloads are always objects
            self._cache[registration] = None
            return None
        cls = jsonschema.validators.validator_for(schema)
        try:
            cls.check_schema(schema)
            validator: Any = cls(schema)
        except jsonschema.SchemaError:
            log.warning("agent %r has an invalid input schema; not validating its input",
                        registration.agent)
            validator = None
        self._cache[registration] = validator
        return validator

    def check(self, registration: Registration, payload: Any) -> ValidationError | None:
        validator = self._validator(registration)
        if validator is None or validator.is_valid(payload):
            return None
        error = jsonschema.exceptions.best_match(validator.iter_errors(payload))
        if error is None:
            return None
        path = "".join(f"[{p!r}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
        # The message may quote the caller's own arguments back to it: that is what lets a
        # model correct the call.
        return ValidationError(f"arguments{path}", error.message[:_MAX_ERROR_TEXT])


class McpServer:
    """The MCP face of ``router``: use as ``async with McpServer(router) as bridge``.

    Inside the block ``bridge.server`` is the SDK's low-level ``Server`` (serve it with any
    SDK transport) and registration changes are announced to connected clients.

    ``transport``: send calls through it instead of straight into the router (the router's
    registry still supplies the tool list). ``validate_input``: check arguments against the
    input schema. ``route_unlisted``: route calls to names only wildcard registrations match.
    ``intent_version``: the intent version of calls that do not name one in ``_meta``.
    """

    def __init__(
        self,
        router: Router,
        *,
        name: str | None = None,
        version: str = __version__,
        instructions: str | None = None,
        transport: Transport | None = None,
        validate_input: bool = True,
        route_unlisted: bool = True,
        intent_version: str = "1.0",
        max_sessions: int = DEFAULT_MAX_SESSIONS,
    ) -> None:
        self.router = router
        self.transport = transport
        self.validate_input = validate_input
        self.route_unlisted = route_unlisted
        self.intent_version = intent_version
        self.max_sessions = max_sessions
        self._validator = _InputValidator()
        self._bus = InMemorySubscriptionBus()
        self._listen = ListenHandler(self._bus)
        #: Handshake-era connections: (server run, HTTP session id) -> a session bound to it.
        self._sessions: dict[tuple[_Scope, str | None], ServerSession] = {}
        self._changed = trio.Event()
        self._nursery: trio.Nursery | None = None
        self.server: Server[Any] = _Server(
            name or router.name,
            version=version,
            instructions=instructions,
            lifespan=self._lifespan,
            get_tool_input_schema=self._input_schema,
            on_list_tools=self._list_tools,
            on_call_tool=self._call_tool,
            on_subscriptions_listen=self._listen,
        )
        self.server.add_notification_handler(
            "notifications/initialized", types.NotificationParams, self._initialized
        )

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> McpServer:
        if self._nursery is not None:
            raise RuntimeError("this McpServer is already running")
        manager = trio.open_nursery()
        self._nursery = await manager.__aenter__()
        self._manager = manager
        await self._nursery.start(self.run)
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        assert self._nursery is not None
        self._nursery.cancel_scope.cancel()
        try:
            await self._manager.__aexit__(None, None, None)
        finally:
            self._nursery = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Announce registration changes until cancelled (``__aenter__`` starts this)."""
        unsubscribe = self.router.registry.on_change(self._registry_changed)
        try:
            task_status.started()
            while True:
                await self._changed.wait()
                self._changed = trio.Event()
                await self._announce()
        finally:
            unsubscribe()
            self._listen.close()

    def _registry_changed(self) -> None:
        self._changed.set()

    async def _announce(self) -> None:
        await self._bus.publish(ToolsListChanged())
        for key, session in list(self._sessions.items()):
            with trio.move_on_after(5) as scope:
                await session.send_tool_list_changed()
            if scope.cancelled_caught:
                log.info("dropping an MCP session that did not take a notification in 5 s")
                self._sessions.pop(key, None)

    @asynccontextmanager
    async def _lifespan(self, _server: Server[Any]) -> AsyncIterator[_Scope]:
        scope = _Scope()
        try:
            yield scope
        finally:
            for key in [k for k in self._sessions if k[0] is scope]:
                del self._sessions[key]

    async def _initialized(
        self, ctx: ServerRequestContext[Any, Any], _params: types.NotificationParams
    ) -> None:
        self._remember(ctx)

    def _remember(self, ctx: ServerRequestContext[Any, Any]) -> None:
        """Remember a handshake-era connection, to send it list-changed notifications."""
        if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS or not isinstance(
            ctx.lifespan_context, _Scope
        ):
            return
        headers = getattr(ctx.request, "headers", None)
        session_id = headers.get(_SESSION_HEADER) if headers is not None else None
        key = (ctx.lifespan_context, session_id)
        if key in self._sessions:
            return
        self._sessions[key] = ctx.session
        while len(self._sessions) > self.max_sessions:
            del self._sessions[next(iter(self._sessions))]

    # ------------------------------------------------------------------ tools

    def tools(self) -> list[types.Tool]:
        """The tools as the SDK models them (what ``tools/list`` returns)."""
        return [types.Tool.model_validate(spec, by_name=False)
                for spec in tool_specs(self.router.registry, version=self.intent_version)]

    async def _list_tools(
        self, ctx: ServerRequestContext[Any, Any], _params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        # A client that lists tools wants to hear of changes (and may have raced the
        # change against its own notifications/initialized).
        self._remember(ctx)
        return types.ListToolsResult(tools=self.tools())

    def _input_schema(self, name: str) -> Mapping[str, Any] | None:
        found = self.router.registry.resolve(name, self.intent_version)
        return tool_schema(found[0]) if found else None

    def _resolve(self, env: IntentEnvelope) -> Registration:
        """The registration ``env`` goes to; raises McpProtocolError for an unknown tool."""
        name = env.intent.name
        if not self.route_unlisted and env.routing.target_agent is None and not listed(
            self.router.registry, name, env.intent.version
        ):
            raise McpProtocolError(INVALID_PARAMS, f"Unknown tool: {name}")
        try:
            return self.router.candidates(env)[0]
        except IntentusError as exc:
            unknown = isinstance(exc, CapabilityNotFound)
            message = f"Unknown tool: {name}" if unknown else exc.message
            raise McpProtocolError(INVALID_PARAMS, message,
                                   {"error": error_to_json(exc.to_error_info())}) from None

    async def _call_tool(
        self, ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        raw_meta = ctx.params.get("_meta") if ctx.params is not None else None
        try:
            call = _envelope_from_tool_call(
                params.name, params.arguments, raw_meta if isinstance(raw_meta, Mapping) else None,
                source=_source(ctx), version=self.intent_version,
            )
            env = call.envelope
            registration = self._resolve(env)
            if self.validate_input:
                invalid = self._validator.check(registration, env.payload)
                if invalid is not None:
                    return _model(exception_result(invalid, trace_id=env.metadata.trace_id))
            if registration.streaming:
                response = await self._stream(ctx, env)
            elif self.transport is not None:
                response = await self.transport.send_intent(env)
            else:
                response = await self.router.route_intent(env)
            return _model(tool_result(response, tool=params.name))
        except McpProtocolError as exc:
            raise MCPError(exc.code, exc.message, exc.data) from None
        except ValidationError as exc:
            raise MCPError(INVALID_PARAMS, exc.message) from None

    async def _stream(
        self, ctx: ServerRequestContext[Any, Any], env: IntentEnvelope
    ) -> AgentResponse:
        """Run a streaming agent, reporting chunks as progress; returns the final response."""
        stream = (self.transport.send_stream(env) if self.transport is not None
                  else self.router.route_stream(env))
        chunks: list[Any] = []
        final: StreamItem | None = None
        async with aclosing(stream) as items:
            async for item in items:
                if isinstance(item, StreamChunk):
                    try:
                        progress, message = progress_of(item)
                    except TypeError:
                        # A chunk JSON cannot hold ends the stream with INTERNAL_AGENT_ERROR
                        # (the response standing in for one that carried the chunk).
                        return encodable_response(AgentResponse.success(
                            item.payload, trace_id=env.metadata.trace_id))
                    chunks.append(item.payload)
                    await ctx.session.report_progress(progress, None, message)
                else:
                    final = item
                    break
        if not isinstance(final, AgentResponse):
            raise MCPError(types.INTERNAL_ERROR, "the stream ended without a response")
        if final.ok and final.payload == {"chunks": len(chunks)}:
            # The router's summary of a stream that ended without a response of its own.
            final = replace(final, payload={"chunks": chunks})
        return final


def _model(result: Mapping[str, Any]) -> types.CallToolResult:
    return types.CallToolResult.model_validate(result, by_name=False)


def _source(ctx: ServerRequestContext[Any, Any]) -> str:
    params = ctx.session.client_params
    info = params.client_info if params is not None else None
    return f"mcp:{info.name}"[:256] if info is not None and info.name else "mcp"


# --------------------------------------------------------------------------- serving


async def serve_stdio(router: Router, **options: Any) -> None:
    """Serve ``router`` over this process's stdin/stdout until stdin closes."""
    from mcp.server.stdio import stdio_server

    async with McpServer(router, **options) as bridge, stdio_server() as (read, write):
        await bridge.server.run(read, write, bridge.server.create_initialization_options())


def http_app(bridge: McpServer, *, path: str = "/mcp", host: str = "127.0.0.1",
             stateless: bool = False, json_response: bool = False) -> Starlette:
    """The Streamable HTTP ASGI app of ``bridge``, answering at ``path``.

    Its ASGI lifespan runs the SDK's session manager: a host that mounts it must forward
    lifespan events (or run ``bridge.server.session_manager.run()`` around serving).
    With a loopback ``host`` the SDK refuses other Host/Origin headers (DNS rebinding).
    """
    return bridge.server.streamable_http_app(
        streamable_http_path=path, host=host, stateless_http=stateless,
        json_response=json_response,
    )


class McpMount:
    """An ASGI app answering MCP at ``path`` (and below it) and passing the rest to ``app``.

    Mounts the MCP endpoint on another ASGI app, such as the HTTP transport's ``HttpApp``;
    serve it with any ASGI server running under trio. Its lifespan runs the SDK's session
    manager around ``app``'s own lifespan, so the host must send lifespan events (hypercorn
    does).
    """

    def __init__(self, bridge: McpServer, app: Any, *, path: str = "/mcp",
                 host: str = "127.0.0.1", **options: Any) -> None:
        self.app = app
        self.path = path.rstrip("/") or "/"
        self.mcp = http_app(bridge, path=self.path, host=host, **options)

    def _is_mcp(self, scope: Mapping[str, Any]) -> bool:
        path = scope.get("path", "")
        return bool(path == self.path or path.startswith(self.path + "/"))

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            async with self.mcp.router.lifespan_context(self.mcp):
                await self.app(scope, receive, send)
        elif self._is_mcp(scope):
            await self.mcp(scope, receive, send)
        else:
            await self.app(scope, receive, send)


async def serve_http(
    router: Router,
    url: str = "http://127.0.0.1:0/mcp",
    *,
    stateless: bool = False,
    json_response: bool = False,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
    **options: Any,
) -> None:
    """Serve ``router`` over Streamable HTTP (hypercorn, trio worker) until cancelled.

    For ``await nursery.start(serve_http, router, url)``: reports the URL clients connect
    to (port 0 becomes the bound port; the path is the MCP endpoint, ``/mcp`` by default).
    """
    from hypercorn.config import Config
    from hypercorn.trio import serve

    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"serve_http needs an http://host:port/path URL, not {url!r}")
    host = parts.hostname
    path = parts.path or "/mcp"
    config = Config()
    config.bind = [f"[{host}]:{parts.port or 0}" if ":" in host else f"{host}:{parts.port or 0}"]
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = 2.0
    async with McpServer(router, **options) as bridge, trio.open_nursery() as nursery:
        app = http_app(bridge, path=path, host=host, stateless=stateless,
                       json_response=json_response)
        binds: list[str] = await nursery.start(serve, app, config)
        task_status.started(f"{binds[0]}{path}")
