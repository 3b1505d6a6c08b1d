"""Benchmark: the round-trip cost of an MCP ``tools/call`` into a Router, against a direct call.

Same run, same echo agent and ~64-byte payload, one call at a time, each call timed:

* ``direct``: ``router.route_intent(env)`` (the baseline);
* ``memory-jsonrpc``: the official SDK client and our MCP server joined by the SDK's in-memory
  streams (handshake protocol: full JSON-RPC, pydantic models both ways);
* ``memory-direct``: the SDK's in-process 2026-07-28 path (no JSON-RPC framing);
* ``stdio``: the SDK's stdio client and ``python -m intentus_trio.mcp`` as a subprocess.

    python benchmarks/bench_mcp.py [--quick] [--calls N]

Needs the ``mcp`` extra. The last line of output is one JSON object with the figures
(median and p99 in microseconds, and each path's median as a multiple of ``direct``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import trio
from mcp import Client, StdioServerParameters

from intentus_trio import Router, new_intent
from intentus_trio.mcp.server import McpServer
from intentus_trio.samples import register_samples

PAYLOAD = {"text": "x" * 64}
ROOT = Path(__file__).resolve().parents[1]


async def timed(call: Callable[[], Awaitable[object]], calls: int) -> list[float]:
    for _ in range(max(10, calls // 10)):  # warm up
        await call()
    samples = []
    for _ in range(calls):
        start = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - start)
    return samples


async def check_echo(client: Client) -> None:
    result = await client.call_tool("echo", PAYLOAD)
    if result.is_error or result.structured_content != PAYLOAD:
        raise SystemExit(f"unexpected tools/call result: {result}")


async def run(calls: int, stdio_calls: int) -> dict[str, list[float]]:
    router = register_samples(Router(name="bench"))
    out: dict[str, list[float]] = {}

    async def direct() -> object:
        return await router.route_intent(new_intent("echo", PAYLOAD))

    out["direct"] = await timed(direct, calls)
    async with McpServer(router) as bridge:
        for name, mode in (("memory-jsonrpc", "legacy"), ("memory-direct", "auto")):
            async with Client(bridge.server, mode=mode) as client:
                await check_echo(client)
                out[name] = await timed(lambda c=client: c.call_tool("echo", PAYLOAD), calls)
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "node.toml"
        config.write_text('samples = true\n[node]\nname = "bench"\n')
        params = StdioServerParameters(
            command=sys.executable, args=["-m", "intentus_trio.mcp", "--config", str(config)],
            cwd=str(ROOT), env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        async with Client(params) as client:
            await check_echo(client)
            out["stdio"] = await timed(lambda: client.call_tool("echo", PAYLOAD), stdio_calls)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="few calls (a smoke run)")
    parser.add_argument("--calls", type=int, help="calls per path (default 2000, quick 200)")
    args = parser.parse_args(argv)
    calls = args.calls or (200 if args.quick else 2000)
    samples = trio.run(run, calls, calls)

    base = statistics.median(samples["direct"])
    figures: dict[str, object] = {"benchmark": "mcp", "calls": calls}
    print(f"{'path':<16}{'median µs':>12}{'p99 µs':>12}{'x direct':>10}")
    for name, values in samples.items():
        ordered = sorted(values)
        median = statistics.median(ordered)
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
        ratio = median / base
        print(f"{name:<16}{median * 1e6:>12,.1f}{p99 * 1e6:>12,.1f}{ratio:>10,.1f}")
        key = name.replace("-", "_")
        figures[f"{key}_median_us"] = round(median * 1e6, 1)
        figures[f"{key}_p99_us"] = round(p99 * 1e6, 1)
        if name != "direct":
            figures[f"{key}_vs_direct"] = round(ratio, 1)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
