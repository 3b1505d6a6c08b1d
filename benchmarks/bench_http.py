"""HTTP transport vs a bare hypercorn(trio) ASGI echo + httpx, measured in the same run.

Each server runs in its own process (``--serve``), the clients in this one, so the two
cores are shared the same way for both. Runs alternate between baseline and ours to
spread drift. Targets (issue 4):

* sequential ~1 KB intent round trip, median <= 1.15x the baseline's;
* 16 concurrent callers: throughput >= 0.9x the baseline's;
* a JSON-RPC batch of 50 intents <= 10x one intent's round trip;
* keep-alive: one TCP connection for 1,000 sequential calls (counted by the server).

Usage: ``python benchmarks/bench_http.py [--quick]``; the last line is JSON.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import trio

from intentus_trio.protocol.codec import dumps
from intentus_trio.protocol.enums import TransportProtocol
from intentus_trio.protocol.factory import new_intent
from intentus_trio.protocol.models import IntentEnvelope, JsonObject
from intentus_trio.routing.router import Router
from intentus_trio.transports.framing import request_frame
from intentus_trio.transports.http import HttpTransport, RetryPolicy, serve

LIMITS = httpx.Limits(max_connections=32, max_keepalive_connections=32, keepalive_expiry=15)


# --------------------------------------------------------------------------- servers


async def echo_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The baseline: a bare ASGI app that answers with the request body."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def echo_agent(env: IntentEnvelope) -> JsonObject:
    return env.payload


async def run_server(kind: str) -> None:
    async with trio.open_nursery() as nursery:
        if kind == "baseline":
            from hypercorn.config import Config
            from hypercorn.trio import serve as hypercorn_serve

            config = Config()
            config.bind = ["127.0.0.1:0"]
            config.accesslog = None
            config.errorlog = None
            config.keep_alive_timeout = 30
            binds = await nursery.start(
                lambda task_status: hypercorn_serve(echo_app, config, mode="asgi",
                                                    task_status=task_status))
            url = binds[0]
        else:
            router = Router()
            router.register("echo", "echo", echo_agent)
            url = await nursery.start(serve, router, "http://127.0.0.1:0")
        print(url, flush=True)
        await trio.to_thread.run_sync(sys.stdin.read)  # until the parent closes our stdin
        nursery.cancel_scope.cancel()


def start_server(kind: str) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve", kind],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    return process, process.stdout.readline().strip()


# --------------------------------------------------------------------------- measurements


def kb_intent() -> IntentEnvelope:
    """An intent whose encoded frame is about 1 KB."""
    env = new_intent("echo", {"text": ""})
    size = len(dumps(_frame_json(env)))
    return new_intent("echo", {"text": "x" * max(0, 1024 - size)})


def _frame_json(env: IntentEnvelope) -> Any:
    from intentus_trio.protocol.codec import frame_to_json

    return frame_to_json(request_frame(env, TransportProtocol.HTTP))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc)."""
    import os
    from pathlib import Path

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def sequential(call: Callable[[], Awaitable[None]], n: int) -> list[float]:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        await call()
        times.append(time.perf_counter() - start)
    return times


async def concurrent(call: Callable[[], Awaitable[None]], callers: int, each: int) -> float:
    async def worker() -> None:
        for _ in range(each):
            await call()

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(callers):
            nursery.start_soon(worker)
    return callers * each / (time.perf_counter() - start)


async def main(quick: bool) -> dict[str, Any]:
    rounds = 4 if quick else 10
    seq_n = 200 if quick else 1000
    conc_each = 25 if quick else 100
    batch_n = 20 if quick else 100
    env = kb_intent()
    frame = dumps(_frame_json(env))
    base_proc, base_url = start_server("baseline")
    ours_proc, ours_url = start_server("ours")
    seq_base: list[float] = []
    seq_ours: list[float] = []
    tput_base: list[float] = []
    tput_ours: list[float] = []
    try:
        async with httpx.AsyncClient(limits=LIMITS, trust_env=False) as raw, \
                HttpTransport(ours_url, retry=RetryPolicy()) as client:
            headers = {"content-type": "application/json", "accept": "application/json"}

            async def base_call() -> None:
                reply = await raw.post(base_url + "/intent", content=frame, headers=headers)
                reply.raise_for_status()

            async def ours_call() -> None:
                response = await client.send_intent(env)
                assert response.ok

            for call in (base_call, ours_call):  # warm up: connections, caches
                await sequential(call, 50)
            before = (await client.health())["connections"]
            cpu = {"baseline": [0.0, 0.0], "ours": [0.0, 0.0]}  # [server, client]
            for _ in range(rounds):
                for name, proc, call, times in (("baseline", base_proc, base_call, seq_base),
                                                ("ours", ours_proc, ours_call, seq_ours)):
                    server0, client0 = cpu_seconds(proc.pid), time.process_time()
                    times += await sequential(call, seq_n // rounds)
                    cpu[name][0] += cpu_seconds(proc.pid) - server0
                    cpu[name][1] += time.process_time() - client0
            after = await client.health()
            for _ in range(rounds):
                tput_base.append(await concurrent(base_call, 16, conc_each))
                tput_ours.append(await concurrent(ours_call, 16, conc_each))

            batch = [env] * 50
            batch_times = []
            single_times = []
            for _ in range(batch_n):
                start = time.perf_counter()
                replies = await client.send_batch(batch)
                batch_times.append(time.perf_counter() - start)
                assert all(r.ok for r in replies)
                single_times += await sequential(ours_call, 5)
    finally:
        for process in (base_proc, ours_proc):
            assert process.stdin is not None
            process.stdin.close()
            process.wait(timeout=10)

    med_base, med_ours = statistics.median(seq_base), statistics.median(seq_ours)
    tb, to = statistics.median(tput_base), statistics.median(tput_ours)
    med_batch, med_single = statistics.median(batch_times), statistics.median(single_times)
    return {
        "bench": "http",
        "quick": quick,
        "seq_median_us": {"baseline": round(med_base * 1e6, 1), "ours": round(med_ours * 1e6, 1)},
        "seq_ratio": round(med_ours / med_base, 3),
        "seq_target": 1.15,
        "seq_p99_us": {"baseline": round(_p99(seq_base) * 1e6, 1),
                       "ours": round(_p99(seq_ours) * 1e6, 1)},
        "concurrent16_rps": {"baseline": round(tb), "ours": round(to)},
        "concurrent16_ratio": round(to / tb, 3),
        "concurrent16_target": 0.9,
        "batch50_median_us": round(med_batch * 1e6, 1),
        "single_median_us": round(med_single * 1e6, 1),
        "batch50_ratio": round(med_batch / med_single, 2),
        "batch50_target": 10,
        "cpu_us_per_call": {name: {"server": round(v[0] / len(seq_base) * 1e6, 1),
                                   "client": round(v[1] / len(seq_base) * 1e6, 1)}
                            for name, v in cpu.items()},
        "keepalive_new_connections": after["connections"] - before,
        "keepalive_calls": len(seq_ours),
    }


def _p99(values: list[float]) -> float:
    return sorted(values)[int(len(values) * 0.99) - 1]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few seconds")
    parser.add_argument("--serve", choices=["baseline", "ours"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        trio.run(run_server, args.serve)
        sys.exit(0)
    import json

    figures = trio.run(main, args.quick)
    print(f"sequential 1 KB: baseline {figures['seq_median_us']['baseline']} us, "
          f"ours {figures['seq_median_us']['ours']} us, ratio {figures['seq_ratio']} "
          f"(target <= 1.15)")
    print(f"16 callers: baseline {figures['concurrent16_rps']['baseline']}/s, "
          f"ours {figures['concurrent16_rps']['ours']}/s, ratio {figures['concurrent16_ratio']} "
          f"(target >= 0.9)")
    print(f"batch of 50: {figures['batch50_median_us']} us = {figures['batch50_ratio']}x one "
          f"intent (target <= 10)")
    print(f"CPU per sequential call (server, client): {figures['cpu_us_per_call']}")
    print(f"keep-alive: {figures['keepalive_new_connections']} new connections for "
          f"{figures['keepalive_calls']} sequential calls")
    print(json.dumps(figures))
