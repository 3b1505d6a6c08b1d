"""MCP for intentus_trio: intents as MCP tools, and MCP tools as agents.

``adapter`` and ``catalog`` are plain JSON and always importable. ``server`` (an MCP server
for a Router) and ``client`` (MCP servers' tools registered as agents) need the official MCP
SDK: ``pip install 'intentus-trio[mcp]'``.
"""

from .adapter import (
    McpProtocolError,
    ToolCall,
    envelope_from_tool_call,
    response_from_jsonrpc_error,
    response_from_tool_result,
    tool_call_params,
    tool_result,
)
from .catalog import tool_specs

__all__ = [
    "McpProtocolError",
    "ToolCall",
    "envelope_from_tool_call",
    "response_from_jsonrpc_error",
    "response_from_tool_result",
    "tool_call_params",
    "tool_result",
    "tool_specs",
]
