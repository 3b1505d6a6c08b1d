"""Agents behind intentus_trio, offered to MCP clients (a desktop assistant, an IDE, an SDK).

    python examples/mcp_server.py           # demo: serve over Streamable HTTP, call it, exit
    python examples/mcp_server.py --stdio   # serve over stdin/stdout for an MCP client

The same agents can be described in a node TOML file and served with
``intentus-trio mcp --config node.toml`` (see docs/mcp.md). Needs the ``mcp`` extra.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator

import trio
from mcp import Client

from intentus_trio import AgentError, IntentEnvelope, Router
from intentus_trio.mcp.server import serve_http, serve_stdio
from intentus_trio.protocol.models import JsonObject

CITIES = {"paris": 18.5, "oslo": 4.0, "lima": 21.0}


async def forecast(env: IntentEnvelope) -> JsonObject:
    """Tomorrow's temperature for a city (a stand-in for a real agent)."""
    city = env.payload["city"].lower()
    if city not in CITIES:
        raise AgentError(f"no forecast for {env.payload['city']!r}",
                         details={"known": sorted(CITIES)})
    return {"city": city, "celsius": CITIES[city]}


async def countdown(env: IntentEnvelope) -> AsyncIterator[JsonObject]:
    """Count down from payload.start, one step every 0.1 s (a streaming agent)."""
    for n in range(int(env.payload.get("start", 3)), 0, -1):
        await trio.sleep(0.1)
        yield {"n": n}


def build_router() -> Router:
    router = Router(name="weather-node", default_timeout=10.0)
    router.register("forecaster", "forecast", forecast,
                    description="Tomorrow's temperature in a city.",
                    input_schema={"type": "object", "required": ["city"],
                                  "properties": {"city": {"type": "string", "minLength": 1}}})
    router.register("counter", "countdown", countdown,
                    description="Count down, reporting each step as progress.",
                    input_schema={"type": "object",
                                  "properties": {"start": {"type": "integer", "minimum": 1,
                                                           "maximum": 10}}})
    return router


async def demo() -> None:
    router = build_router()
    async with trio.open_nursery() as nursery:
        url = await nursery.start(serve_http, router, "http://127.0.0.1:0/mcp")
        print(f"MCP server at {url}")
        async with Client(url) as client:
            tools = await client.list_tools()
            print("tools:", ", ".join(tool.name for tool in tools.tools))
            result = await client.call_tool("forecast", {"city": "Oslo"})
            print("forecast Oslo ->", result.structured_content)
            result = await client.call_tool("forecast", {"city": "Atlantis"})
            print("forecast Atlantis -> isError:", result.is_error, result.content[0])

            async def on_progress(progress: float, total: float | None, message: str | None
                                  ) -> None:
                print(f"  progress {progress:.0f}: {message}")

            result = await client.call_tool("countdown", {"start": 3},
                                            progress_callback=on_progress)
            print("countdown ->", result.structured_content)
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    if "--stdio" in sys.argv[1:]:
        trio.run(serve_stdio, build_router())
    else:
        trio.run(demo)
