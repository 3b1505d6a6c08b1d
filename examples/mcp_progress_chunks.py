"""An MCP tool's progress notifications as the chunks of a streamed IntentusNet call.

    python examples/mcp_progress_chunks.py

An MCP server written with the official SDK (here in the same process) has a tool that
reports progress while it works. Registered with ``streaming=True``, the tool is a streaming
agent: ``send_stream`` yields one chunk per progress notification, then the tool's result;
``send_intent`` still gets just the result. Needs the ``mcp`` extra.
"""

from __future__ import annotations

from contextlib import aclosing

import anyio
import trio
from mcp.server.mcpserver import Context, MCPServer

from intentus_trio import InProcessTransport, Router, StreamChunk, new_intent
from intentus_trio.mcp.client import open_mcp_agents


def build_server() -> MCPServer:
    server = MCPServer("indexer")

    @server.tool(description="Index some documents, reporting progress per document.")
    async def index(documents: list[str], ctx: Context) -> int:
        for done, name in enumerate(documents, 1):
            await anyio.sleep(0.05)  # the work
            await ctx.report_progress(done, len(documents), f"indexed {name}")
        return len(documents)

    return server


async def main() -> None:
    router = Router(name="host")
    documents = ["a.md", "b.md", "c.md"]
    async with open_mcp_agents(router, build_server(), streaming=True) as tools, \
            InProcessTransport(router) as transport:
        print("streaming agent:", tools.tools["index"].agent)
        request = new_intent("index", {"documents": documents})
        async with aclosing(transport.send_stream(request)) as items:
            async for item in items:
                if isinstance(item, StreamChunk):
                    print(f"chunk {item.seq}: {item.payload}")
                else:
                    print("final:", item.payload)
        response = await transport.send_intent(new_intent("index", {"documents": documents}))
        print("non-streamed:", response.payload)


if __name__ == "__main__":
    trio.run(main)
