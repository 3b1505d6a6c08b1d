"""An MCP server built with the official SDK's MCPServer, run as a stdio subprocess by tests.

Tools: ``add`` (structured result), ``shout`` (text result), ``oops`` (a tool error),
``slow`` (sleeps), ``die`` (the process exits at once, as a crash would) and ``grow``
(adds a tool ``extra`` and announces the changed list).
"""

from __future__ import annotations

import os

import anyio
from mcp.server.mcpserver import Context, MCPServer

server = MCPServer("sdk-test-server")


@server.tool(description="Add two integers.")
def add(a: int, b: int) -> int:
    return a + b


@server.tool(description="Upper-case a text.")
def shout(text: str) -> str:
    return text.upper()


@server.tool(description="Always fails.")
def oops() -> str:
    raise ValueError("it went wrong")


@server.tool(description="Sleep some seconds.")
async def slow(seconds: float) -> str:
    await anyio.sleep(seconds)
    return "done"


@server.tool(description="Exit the process at once.")
def die() -> str:
    os._exit(3)


def extra(text: str) -> str:
    return f"extra: {text}"


@server.tool(description="Register the tool 'extra' and announce it.")
async def grow(ctx: Context) -> str:
    server.add_tool(extra, description="Added at run time.")
    await ctx.notify_tools_changed()
    return "grown"


if __name__ == "__main__":
    server.run("stdio")
