"""In-process round trip: InProcessTransport -> Router -> echo agent, envelope prebuilt.

Baseline, same run: a plain ``await handler(env)`` of the same agent. Two agents are
measured: one that builds its AgentResponse (as IntentusNet agents do; the headline figure)
and one that returns a plain dict (the router then builds the response, so the baseline
does less work than the measured path).

    python benchmarks/bench_inprocess.py [--quick]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).parent))

from _timing import emit, sample_async, summary_us

from intentus_trio import (
    AgentResponse,
    InProcessTransport,
    IntentEnvelope,
    Router,
    new_intent,
)


async def echo_response(env: IntentEnvelope) -> AgentResponse:
    return AgentResponse.success(env.payload, agent="echo", trace_id=env.metadata.trace_id)


async def echo_dict(env: IntentEnvelope) -> dict[str, Any]:
    return env.payload


async def measure(n: int, rounds: int) -> dict[str, Any]:
    router = Router()
    router.register("echo", "echo", echo_response)
    router.register("echo-dict", "echo.dict", echo_dict)
    transport = InProcessTransport(router)
    env = new_intent("echo", {"text": "hello"})
    env_dict = new_intent("echo.dict", {"text": "hello"})
    assert (await transport.send_intent(env)).ok
    results: dict[str, list[float]] = {k: [] for k in ("rt", "plain", "rt_dict", "plain_dict",
                                                        "rt_deadline")}
    for _ in range(rounds):
        results["plain"] += await sample_async(lambda: echo_response(env), n)
        results["rt"] += await sample_async(lambda: transport.send_intent(env), n)
        results["plain_dict"] += await sample_async(lambda: echo_dict(env_dict), n)
        results["rt_dict"] += await sample_async(lambda: transport.send_intent(env_dict), n)
        results["rt_deadline"] += await sample_async(
            lambda: transport.send_intent(env, timeout=30.0), n // 4)
    rt, plain = summary_us(results["rt"]), summary_us(results["plain"])
    rt_dict, plain_dict = summary_us(results["rt_dict"]), summary_us(results["plain_dict"])
    return {
        "round_trip": rt,
        "plain_call": plain,
        "ratio_median": round(statistics.median(results["rt"]) /
                              statistics.median(results["plain"]), 2),
        "dict_agent_round_trip": rt_dict,
        "dict_agent_plain_call": plain_dict,
        "dict_agent_ratio_median": round(statistics.median(results["rt_dict"]) /
                                         statistics.median(results["plain_dict"]), 2),
        "with_30s_deadline": summary_us(results["rt_deadline"]),
        "samples": len(results["rt"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    n, rounds = (5_000, 2) if args.quick else (50_000, 5)
    gc.collect()
    figures = trio.run(measure, n, rounds)
    print("in-process round trip (agent builds its response)")
    print(f"  transport->router->agent  median {figures['round_trip']['median_us']:.2f} µs"
          f"  p99 {figures['round_trip']['p99_us']:.2f} µs   (target <= 10 / <= 50)")
    print(f"  plain await handler(env)  median {figures['plain_call']['median_us']:.2f} µs")
    print(f"  ratio {figures['ratio_median']:.2f}x   (target <= 3x)")
    print("agent returning a dict (router builds the response)")
    print(f"  round trip median {figures['dict_agent_round_trip']['median_us']:.2f} µs, "
          f"plain {figures['dict_agent_plain_call']['median_us']:.2f} µs, "
          f"ratio {figures['dict_agent_ratio_median']:.2f}x")
    print(f"with a 30 s per-call deadline: median {figures['with_30s_deadline']['median_us']:.2f}"
          f" µs  p99 {figures['with_30s_deadline']['p99_us']:.2f} µs")
    emit("inprocess", figures)


if __name__ == "__main__":
    main()
