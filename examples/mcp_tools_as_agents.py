"""An MCP server's tools used as IntentusNet agents.

    python examples/mcp_tools_as_agents.py

It starts a small MCP server written with the official SDK (this same file run with
``--serve``) as a stdio subprocess, registers its tools as agents for intents ``calc.*``,
and calls them through an IntentusNet transport like any other agent. Needs the ``mcp``
extra.
"""

from __future__ import annotations

import json
import logging
import sys

import trio

from intentus_trio import InProcessTransport, Router, new_intent
from intentus_trio.protocol.codec import response_to_json


def serve() -> None:
    """The MCP server: two calculator tools (asyncio, as the SDK runs by default)."""
    from mcp.server.mcpserver import MCPServer

    server = MCPServer("calculator")

    @server.tool(description="Add two numbers.")
    def add(a: float, b: float) -> float:
        return a + b

    @server.tool(description="Divide a by b.")
    def divide(a: float, b: float) -> float:
        return a / b

    logging.disable(logging.ERROR)  # the tool's failure reaches the caller; skip the traceback
    server.run("stdio")


async def main() -> None:
    from mcp import StdioServerParameters

    from intentus_trio.mcp.client import open_mcp_agents

    router = Router(name="host")
    calculator = StdioServerParameters(command=sys.executable, args=[__file__, "--serve"])
    async with open_mcp_agents(router, calculator, prefix="calc.") as tools:
        print("registered:", ", ".join(r.agent for r in tools.tools.values()))
        async with InProcessTransport(router) as transport:
            for intent, payload in (("calc.add", {"a": 2, "b": 40}),
                                    ("calc.divide", {"a": 1, "b": 0}),
                                    ("calc.power", {"a": 2, "b": 8})):
                response = await transport.send_intent(new_intent(intent, payload))
                print(f"{intent} {payload} ->")
                print(json.dumps(response_to_json(response)["payload" if response.ok
                                                            else "error"], indent=2))


if __name__ == "__main__":
    if "--serve" in sys.argv[1:]:
        serve()
    else:
        trio.run(main)
