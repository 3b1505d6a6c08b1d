"""MXP transport benchmark, against baselines measured in the same run.

* sequential round trip of a ~1 KB intent over the MXP transport (a new stream per call on
  one pooled connection: Call -> router -> echo agent -> Response);
* raw MXP stream echo of the same number of bytes, two ways: a new stream per round trip
  (what the transport does underneath, minus frames and routing) and ping-pong on one
  long-lived stream (the floor of the driver);
* the HTTP and WebSocket transports' round trip of the same intent;
* 200 concurrent calls in flight on one MXP connection: all must succeed; throughput.

Blocks of each measurement alternate so machine noise hits all alike. Servers and clients
share one trio run on 127.0.0.1. Usage: ``python benchmarks/bench_mxp_transport.py
[--quick]``; the last line is JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).parent))

from _timing import emit, percentile

from intentus_trio.mxp import (
    Configuration,
    MxpConnection,
    ServerConfiguration,
    allow_any,
    mxp_connect,
    serve_mxp,
)
from intentus_trio.mxp.noise import KeyPair
from intentus_trio.protocol.enums import TransportProtocol
from intentus_trio.protocol.factory import new_intent
from intentus_trio.protocol.models import IntentEnvelope, JsonObject
from intentus_trio.routing.router import Router
from intentus_trio.transports.framing import ClientFraming
from intentus_trio.transports.mxp import MxpServer
from intentus_trio.transports.mxp import open_client as open_mxp

Call = Callable[[], Awaitable[Any]]


async def echo(env: IntentEnvelope) -> JsonObject:
    return env.payload


def one_kb_intent() -> IntentEnvelope:
    env = new_intent("echo", {"data": ""})
    size = len(ClientFraming(TransportProtocol.MXP).encode_intent(env, request_id="1"))
    return new_intent("echo", {"data": "x" * max(0, 1024 - size)})


async def raw_echo(conn: MxpConnection) -> None:
    """Echo every stream of a connection until its end."""
    async def one(stream: Any) -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            while data := await stream.receive_some():
                await stream.send_all(data)
            await stream.aclose()

    async with trio.open_nursery() as nursery:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            while True:
                nursery.start_soon(one, await conn.accept_stream())


async def read_exactly(stream: Any, size: int) -> None:
    got = 0
    while got < size:
        data = await stream.receive_some()
        if not data:
            raise RuntimeError("echo stream ended early")
        got += len(data)


@contextlib.asynccontextmanager
async def baselines(router: Router) -> AsyncIterator[dict[str, str]]:
    """Start HTTP and WebSocket servers for ``router`` (those whose extras are installed)."""
    urls: dict[str, str] = {}
    async with trio.open_nursery() as nursery:
        for name, module, url in (("http", "intentus_trio.transports.http", "http://127.0.0.1:0"),
                                  ("websocket", "intentus_trio.transports.websocket",
                                   "ws://127.0.0.1:0/")):
            try:
                serve = __import__(module, fromlist=["serve"]).serve
            except ImportError:
                continue
            urls[name] = await nursery.start(serve, router, url)
        yield urls
        nursery.cancel_scope.cancel()


async def measure(calls: dict[str, Call], rounds: int, per_round: int) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for fn in calls.values():
        for _ in range(50):
            await fn()
    clock = time.perf_counter
    for _ in range(rounds):
        for name, fn in calls.items():
            out = samples[name]
            for _ in range(per_round):
                start = clock()
                await fn()
                out.append(clock() - start)
    return samples


async def main(quick: bool) -> None:
    rounds, per_round = (6, 100) if quick else (20, 250)
    router = Router(name="bench")
    router.register("echo", "echo", echo)
    env = one_kb_intent()
    size = len(ClientFraming(TransportProtocol.MXP).encode_intent(env, request_id="1")) + 40
    blob = b"x" * size
    key = KeyPair.generate()
    raw_config = ServerConfiguration(Configuration(KeyPair.generate()), allow_any)
    async with trio.open_nursery() as nursery:
        mxp_url = await nursery.start(MxpServer(router, static_key=key).run)
        raw_addr = await nursery.start(serve_mxp, raw_echo, ("127.0.0.1", 0), raw_config)
        async with baselines(router) as others, \
                open_mxp(mxp_url) as mxp, \
                mxp_connect(raw_addr, raw_config.connection.static_key.public) as raw, \
                contextlib.AsyncExitStack() as stack:
            pinned = await raw.open_stream()

            async def ping_pong() -> None:
                await pinned.send_all(blob)
                await read_exactly(pinned, size)

            async def stream_per_call() -> None:
                stream = await raw.open_stream()
                await stream.send_all(blob)
                await read_exactly(stream, size)
                await stream.aclose()

            async def mxp_call() -> None:
                response = await mxp.send_intent(env)
                assert response.ok, response

            calls: dict[str, Call] = {"mxp_intent": mxp_call,
                                      "raw_stream_per_call": stream_per_call,
                                      "raw_ping_pong": ping_pong}
            for name, url in others.items():
                from intentus_trio.transports.registry import open_transport

                transport = await stack.enter_async_context(open_transport(url))

                async def other_call(t: Any = transport) -> None:
                    response = await t.send_intent(env)
                    assert response.ok, response

                calls[f"{name}_intent"] = other_call
            samples = await measure(calls, rounds, per_round)

            concurrent = 200
            start = time.perf_counter()
            results: list[bool] = []

            async def one_call() -> None:
                results.append((await mxp.send_intent(env)).ok)

            async with trio.open_nursery() as burst:
                for _ in range(concurrent):
                    burst.start_soon(one_call)
            burst_s = time.perf_counter() - start
            connections = mxp.pool.stats.connects
        nursery.cancel_scope.cancel()

    figures: dict[str, Any] = {"intent_bytes": size - 40}
    print(f"{'round trip':<22}{'median µs':>12}{'p99 µs':>12}")
    for name, values in samples.items():
        median = statistics.median(values) * 1e6
        figures[f"{name}_median_us"] = round(median, 1)
        figures[f"{name}_p99_us"] = round(percentile(values, 0.99) * 1e6, 1)
        print(f"{name:<22}{median:>12.1f}{percentile(values, 0.99) * 1e6:>12.1f}")
    base = figures["mxp_intent_median_us"]
    for name in samples:
        if name != "mxp_intent":
            ratio = base / figures[f"{name}_median_us"]
            figures[f"mxp_vs_{name}"] = round(ratio, 2)
            print(f"MXP intent / {name}: {ratio:.2f}x")
    figures["concurrent_calls"] = concurrent
    figures["concurrent_ok"] = sum(results)
    figures["concurrent_calls_per_s"] = round(concurrent / burst_s)
    figures["connections"] = connections
    print(f"{concurrent} concurrent calls on {connections} connection(s): {sum(results)} ok, "
          f"{concurrent / burst_s:,.0f} calls/s")
    emit("mxp_transport", figures)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few seconds")
    trio.run(main, parser.parse_args().quick)
