"""MCP tool calls as IntentEnvelopes and AgentResponses as MCP tool results (RFC-0007 §4.5).

A pure format adapter on plain JSON (the MCP wire shapes, camelCase keys): it needs no MCP
SDK, so both directions of the bridge and any other MCP stack can share it.

Requests: the tool name is the intent name, ``arguments`` the payload. From ``_meta`` it
reads the W3C ``traceparent`` (its trace-id becomes the envelope's trace id), the
``progressToken`` and a few ``intentus/...`` keys (``traceId``, ``targetAgent``,
``intentVersion``, ``priority``); ``traceparent``, ``tracestate`` and the progress token
also travel as TransportEnvelope headers for transports that carry them.

Replies follow the MCP spec (2025-11-25, *Tools / Error Handling*): a request naming no
known tool, or one that cannot be routed, is a JSON-RPC protocol error (-32602); anything
that goes wrong once a known tool was called (bad arguments, agent errors, timeouts,
unreachable agents) is a tool execution error, a ``CallToolResult`` with ``isError: true``,
so a model can read it and correct itself. The IntentusNet error object
(``code``, ``message``, ``retryable``, ``details``) rides in ``structuredContent.error``,
which lets the reverse direction restore it exactly.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any, Final

from attrs import frozen

from ..protocol.codec import MAX_NAME_CHARS, dumps, encodable_response, error_to_json
from ..protocol.enums import ErrorCode, Priority
from ..protocol.errors import IntentusError, ValidationError
from ..protocol.factory import new_intent
from ..protocol.models import AgentResponse, ErrorInfo, IntentEnvelope, JsonObject, StreamChunk

# --------------------------------------------------------------------------- names

#: ``_meta`` keys this adapter reads or writes (the ``intentus/`` prefix is ours).
META_TRACE_ID: Final = "intentus/traceId"
META_AGENT: Final = "intentus/agent"
META_TARGET_AGENT: Final = "intentus/targetAgent"
META_INTENT_VERSION: Final = "intentus/intentVersion"
META_PRIORITY: Final = "intentus/priority"
META_STREAMING: Final = "intentus/streaming"
META_PROGRESS_TOKEN: Final = "progressToken"
META_TRACEPARENT: Final = "traceparent"
META_TRACESTATE: Final = "tracestate"

#: TransportEnvelope header carrying the caller's MCP progress token.
PROGRESS_TOKEN_HEADER: Final = "mcpProgressToken"

#: JSON-RPC error codes used by MCP (the last two are the MCP SDKs' local codes).
PARSE_ERROR: Final = -32700
INVALID_REQUEST: Final = -32600
METHOD_NOT_FOUND: Final = -32601
INVALID_PARAMS: Final = -32602
INTERNAL_ERROR: Final = -32603
CONNECTION_CLOSED: Final = -32000
REQUEST_TIMEOUT: Final = -32001

#: Valid MCP tool names (2025-11-25: 1-128 of ASCII letters, digits, ``_``, ``-``, ``.``).
TOOL_NAME: Final = re.compile(r"[A-Za-z0-9._-]{1,128}")

#: Error codes that mean "no such tool here": answered with a JSON-RPC error, not a result.
PROTOCOL_ERROR_CODES: Final = {
    ErrorCode.CAPABILITY_NOT_FOUND: INVALID_PARAMS,
    ErrorCode.ROUTING_ERROR: INVALID_PARAMS,
}

_MAX_META_TEXT = 512
_NO_HEADERS: Mapping[str, str] = {}
_MAX_ERROR_MESSAGE = 2000
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_ERROR_CODES = {m.value: m for m in ErrorCode}
_PRIORITIES = {m.value: m for m in Priority}


def is_tool_name(name: str) -> bool:
    return TOOL_NAME.fullmatch(name) is not None


# --------------------------------------------------------------------------- trace context


def trace_id_from_traceparent(traceparent: str) -> str | None:
    """The W3C trace-id of ``traceparent`` written as a UUID string, or None if invalid."""
    match = _TRACEPARENT.fullmatch(traceparent.strip().lower())
    if match is None or match.group(1) == "ff" or match.group(2) == "0" * 32:
        return None
    h = match.group(2)
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def traceparent_for(trace_id: str) -> str | None:
    """A ``traceparent`` for ``trace_id`` if it is 32 hex digits (with or without dashes)."""
    h = trace_id.replace("-", "").lower()
    if len(h) != 32 or h == "0" * 32 or any(c not in "0123456789abcdef" for c in h):
        return None
    return f"00-{h}-{os.urandom(8).hex()}-01"


# --------------------------------------------------------------------------- requests


@frozen
class ToolCall:
    """A ``tools/call`` request read as an intent."""

    envelope: IntentEnvelope
    #: TransportEnvelope headers derived from ``_meta`` (trace context, progress token).
    headers: Mapping[str, str]
    progress_token: str | int | None = None


def _meta_text(meta: Mapping[str, Any], key: str) -> str | None:
    value = meta.get(key)
    if value is None:
        return None
    if type(value) is not str or not value or len(value) > _MAX_META_TEXT:
        raise ValidationError(f"_meta.{key}", f"expected a string of 1..{_MAX_META_TEXT} chars")
    return value


def envelope_from_tool_call(
    name: Any,
    arguments: Any,
    meta: Mapping[str, Any] | None = None,
    *,
    source: str = "mcp",
    version: str = "1.0",
) -> ToolCall:
    """Read ``tools/call`` params as an intent; raises ValidationError for malformed params."""
    if type(name) is not str or not 0 < len(name) <= MAX_NAME_CHARS:
        raise ValidationError("name", f"expected a tool name of 1..{MAX_NAME_CHARS} chars")
    if arguments is None:
        arguments = {}
    elif type(arguments) is not dict:
        raise ValidationError("arguments", "expected an object")
    if not meta:
        return ToolCall(new_intent(name, arguments, version=version, source=source), _NO_HEADERS)
    if not isinstance(meta, Mapping):
        raise ValidationError("_meta", "expected an object")
    headers: dict[str, str] = {}
    trace_id = _meta_text(meta, META_TRACE_ID)
    traceparent = _meta_text(meta, META_TRACEPARENT)
    if traceparent is not None:
        headers[META_TRACEPARENT] = traceparent
        trace_id = trace_id or trace_id_from_traceparent(traceparent)
        tracestate = _meta_text(meta, META_TRACESTATE)
        if tracestate is not None:
            headers[META_TRACESTATE] = tracestate
    token = meta.get(META_PROGRESS_TOKEN)
    if token is not None:
        if type(token) not in (str, int) or len(str(token)) > _MAX_META_TEXT:
            raise ValidationError("_meta.progressToken", "expected a string or an integer")
        headers[PROGRESS_TOKEN_HEADER] = str(token)
    priority = Priority.NORMAL
    raw_priority = meta.get(META_PRIORITY)
    if raw_priority is not None:
        if not isinstance(raw_priority, str) or raw_priority not in _PRIORITIES:
            raise ValidationError(f"_meta.{META_PRIORITY}", "expected low|normal|high")
        priority = _PRIORITIES[raw_priority]
    env = new_intent(
        name,
        arguments,
        version=_meta_text(meta, META_INTENT_VERSION) or version,
        source=source,
        priority=priority,
        target_agent=_meta_text(meta, META_TARGET_AGENT),
        trace_id=trace_id,
    )
    return ToolCall(env, headers, token)


def tool_call_params(
    env: IntentEnvelope,
    *,
    tool: str | None = None,
    progress_token: str | int | None = None,
) -> JsonObject:
    """``tools/call`` params for ``env`` (the client direction): trace context in ``_meta``."""
    meta: JsonObject = {META_TRACE_ID: env.metadata.trace_id}
    traceparent = traceparent_for(env.metadata.trace_id)
    if traceparent is not None:
        meta[META_TRACEPARENT] = traceparent
    if progress_token is not None:
        meta[META_PROGRESS_TOKEN] = progress_token
    return {"name": tool or env.intent.name, "arguments": env.payload, "_meta": meta}


# --------------------------------------------------------------------------- replies


class McpProtocolError(Exception):
    """A reply that MCP expresses as a JSON-RPC error rather than a tool result."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


def _response_meta(response: AgentResponse) -> JsonObject:
    meta: JsonObject = {}
    if response.trace_id is not None:
        meta[META_TRACE_ID] = response.trace_id
    agent = response.metadata.get("agent")
    if isinstance(agent, str):
        meta[META_AGENT] = agent
    return meta


def _text(value: Any) -> str:
    return dumps(value).decode()


def tool_result(response: AgentResponse, *, tool: str | None = None) -> JsonObject:
    """The ``CallToolResult`` for ``response``; raises McpProtocolError for "no such tool"."""
    response = encodable_response(response)
    meta = _response_meta(response)
    error = response.error
    if error is None and response.ok:
        payload = response.payload
        result: JsonObject = {"content": [{"type": "text", "text": _text(payload)}]}
        if payload is not None:
            result["structuredContent"] = payload
        if meta:
            result["_meta"] = meta
        return result
    if error is None:
        error = ErrorInfo(ErrorCode.INTERNAL_AGENT_ERROR, "error response without error info")
    code = PROTOCOL_ERROR_CODES.get(error.code)
    if code is not None:
        message = f"Unknown tool: {tool}" if tool and error.code is ErrorCode.CAPABILITY_NOT_FOUND \
            else error.message
        raise McpProtocolError(code, message, {"error": error_to_json(error)})
    return error_result(error, meta)


def error_result(error: ErrorInfo, meta: Mapping[str, Any] | None = None) -> JsonObject:
    """A tool execution error (``isError: true``) carrying ``error``."""
    hint = " (retryable)" if error.retryable else ""
    result: JsonObject = {
        "content": [{"type": "text", "text": f"{error.code.value}: {error.message}{hint}"}],
        "structuredContent": {"error": error_to_json(error)},
        "isError": True,
    }
    if meta:
        result["_meta"] = dict(meta)
    return result


def exception_result(exc: IntentusError, *, trace_id: str | None = None) -> JsonObject:
    """A tool execution error for ``exc`` (or a JSON-RPC error if it means "no such tool")."""
    return tool_result(exc.to_response(trace_id=trace_id))


def progress_of(chunk: StreamChunk) -> tuple[float, str]:
    """``(progress, message)`` of a progress notification reporting ``chunk``."""
    return float(chunk.seq + 1), _text(chunk.payload)


# --------------------------------------------------------------------------- the reverse


def _restore_error(value: Any) -> ErrorInfo | None:
    """An ErrorInfo written by ``error_result``/``tool_result``, if ``value`` is one."""
    if type(value) is not dict:
        return None
    raw_code = value.get("code")
    code = _ERROR_CODES.get(raw_code) if type(raw_code) is str else None
    message = value.get("message")
    if code is None or type(message) is not str:
        return None
    details = value.get("details")
    return ErrorInfo(code, message[:_MAX_ERROR_MESSAGE], value.get("retryable") is True,
                     details if type(details) is dict else {})


def _joined_text(content: Any) -> str:
    if type(content) is not list:
        return ""
    parts = [block["text"] for block in content
             if type(block) is dict and block.get("type") == "text"
             and type(block.get("text")) is str]
    return "\n".join(parts)


def response_from_tool_result(
    result: Mapping[str, Any],
    *,
    tool: str,
    agent: str | None = None,
    trace_id: str | None = None,
) -> AgentResponse:
    """An AgentResponse for a ``CallToolResult`` given as wire JSON.

    Success: ``structuredContent`` is the payload; without it the payload is
    ``{"content": [...], "text": "<the text blocks joined>"}``.
    """
    content = result.get("content")
    structured = result.get("structuredContent")
    if result.get("isError") is True:
        restored = _restore_error(structured.get("error")) if type(structured) is dict else None
        if restored is None:
            text = _joined_text(content) or f"MCP tool {tool!r} failed"
            restored = ErrorInfo(ErrorCode.AGENT_ERROR, text[:_MAX_ERROR_MESSAGE], False,
                                 {"tool": tool})
        return AgentResponse.failure(restored, agent=agent, trace_id=trace_id)
    if type(structured) is dict:
        payload: JsonObject = structured
    else:
        payload = {"content": content if type(content) is list else []}
        text = _joined_text(content)
        if text:
            payload["text"] = text
    return AgentResponse.success(payload, agent=agent, trace_id=trace_id)


#: JSON-RPC error code -> (ErrorCode, retryable), for errors a server or SDK returns.
_JSONRPC_ERRORS: Final = {
    INVALID_PARAMS: (ErrorCode.VALIDATION_ERROR, False),
    METHOD_NOT_FOUND: (ErrorCode.CAPABILITY_NOT_FOUND, False),
    CONNECTION_CLOSED: (ErrorCode.AGENT_UNAVAILABLE, True),
    REQUEST_TIMEOUT: (ErrorCode.AGENT_TIMEOUT, True),
}


def response_from_jsonrpc_error(
    code: int,
    message: str,
    data: Any = None,
    *,
    tool: str,
    agent: str | None = None,
    trace_id: str | None = None,
) -> AgentResponse:
    """An AgentResponse for a JSON-RPC error answering ``tools/call``."""
    restored = _restore_error(data.get("error")) if type(data) is dict else None
    if restored is None:
        error_code, retryable = _JSONRPC_ERRORS.get(code, (ErrorCode.AGENT_ERROR, False))
        restored = ErrorInfo(error_code, (message or "MCP error")[:_MAX_ERROR_MESSAGE], retryable,
                             {"tool": tool, "mcpCode": code})
    return AgentResponse.failure(restored, agent=agent, trace_id=trace_id)
