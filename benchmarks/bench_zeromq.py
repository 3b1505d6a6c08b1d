"""ZeroMQ transport vs raw pyzmq, measured in the same run.

* request/reply: 64 B intent round trip, our DEALER client -> our node (separate process)
  against raw blocking pyzmq REQ -> REP (separate process); also the IntentusNet reference
  client shape (a blocking REQ socket) against our node.
* one-way worker queue: small intents submitted to a distributor, decoded and routed by 1 and
  then 2 worker processes, against raw pyzmq PUSH -> PULL of the same frames.

Usage: python benchmarks/bench_zeromq.py [--quick]. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

import trio
import zmq

from intentus_trio.protocol.enums import TransportProtocol
from intentus_trio.protocol.factory import new_intent
from intentus_trio.protocol.models import IntentEnvelope, JsonObject
from intentus_trio.routing.router import Router
from intentus_trio.transports.framing import ClientFraming
from intentus_trio.transports.zeromq import Distributor, open_client, run_worker, serve

PAYLOAD = {"data": "x" * 52}  # 64 bytes of JSON payload


def echo_router() -> Router:
    router = Router(name="bench")

    @router.agent("echo", "echo")
    async def echo(env: IntentEnvelope) -> JsonObject:
        return env.payload

    return router


# ---------------------------------------------------------------------- child processes


def child_raw_rep() -> None:
    sock = zmq.Context.instance().socket(zmq.REP)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    print(f"tcp://127.0.0.1:{port}", flush=True)
    while True:
        sock.send(sock.recv())


def child_raw_pull(url: str, count: int) -> None:
    sock = zmq.Context.instance().socket(zmq.PULL)
    sock.connect(url)
    done = zmq.Context.instance().socket(zmq.PUSH)
    done.connect(url.rsplit(":", 1)[0] + ":" + str(int(url.rsplit(":", 1)[1]) + 1))
    print("ready", flush=True)
    while True:
        for _ in range(count):
            sock.recv_multipart()
        done.send(b"done")


def child_node() -> None:
    async def main() -> None:
        async with trio.open_nursery() as nursery:
            url = await nursery.start(serve, echo_router(), "tcp://127.0.0.1:0")
            print(url, flush=True)

    trio.run(main)


def child_worker(work_url: str, results_url: str) -> None:
    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(
                lambda task_status: run_worker(
                    echo_router(), "", work_url=work_url, results_url=results_url,
                    task_status=task_status,
                )
            )
            print("ready", flush=True)

    trio.run(main)


def cpu_seconds(pid: int) -> float:
    """User+system CPU time of a process (all its threads), from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def spawn(*args: str) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--child", *args],
        stdout=subprocess.PIPE, text=True,
    )
    assert process.stdout is not None
    return process, process.stdout.readline().strip()


# ---------------------------------------------------------------------- request/reply


def raw_round_trips(url: str, n: int) -> list[float]:
    sock = zmq.Context.instance().socket(zmq.REQ)
    sock.connect(url)
    message = b"x" * 64
    sock.send(message)
    sock.recv()
    times = []
    for _ in range(n):
        start = time.perf_counter()
        sock.send(message)
        sock.recv()
        times.append(time.perf_counter() - start)
    sock.close(0)
    return times


def reference_round_trips(url: str, n: int) -> list[float]:
    """The IntentusNet reference client's shape: blocking REQ, one JSON frame, one reply."""
    sock = zmq.Context.instance().socket(zmq.REQ)
    sock.connect(url)
    frame = ClientFraming(TransportProtocol.INTENTUSNET_1_0).encode_intent(
        new_intent("echo", PAYLOAD)
    )
    times = []
    for _ in range(n + 1):
        start = time.perf_counter()
        sock.send(frame)
        json.loads(sock.recv())
        times.append(time.perf_counter() - start)
    sock.close(0)
    return times[1:]


async def our_round_trips(url: str, n: int) -> list[float]:
    env = new_intent("echo", PAYLOAD)
    async with open_client(url) as client:
        assert (await client.send_intent(env)).ok
        times = []
        for _ in range(n):
            start = time.perf_counter()
            response = await client.send_intent(env)
            times.append(time.perf_counter() - start)
        assert response.ok
    return times


def summary(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {
        "median_us": round(statistics.median(ordered) * 1e6, 1),
        "p99_us": round(ordered[int(len(ordered) * 0.99)] * 1e6, 1),
    }


def bench_reqrep(rounds: int, per_round: int) -> dict[str, Any]:
    raw_proc, raw_url = spawn("raw-rep")
    node_proc, node_url = spawn("node")
    try:
        raw: list[float] = []
        ours: list[float] = []
        reference: list[float] = []
        cpu = {"raw_client": 0.0, "raw_server": 0.0, "our_client": 0.0, "our_node": 0.0}
        for _ in range(rounds):  # interleaved so machine noise hits all alike
            c0, s0 = time.process_time(), cpu_seconds(raw_proc.pid)
            raw += raw_round_trips(raw_url, per_round)
            cpu["raw_client"] += time.process_time() - c0
            cpu["raw_server"] += cpu_seconds(raw_proc.pid) - s0
            c0, s0 = time.process_time(), cpu_seconds(node_proc.pid)
            ours += trio.run(our_round_trips, node_url, per_round)
            cpu["our_client"] += time.process_time() - c0
            cpu["our_node"] += cpu_seconds(node_proc.pid) - s0
            reference += reference_round_trips(node_url, per_round)
    finally:
        raw_proc.kill()
        node_proc.kill()
    calls = rounds * per_round
    out: dict[str, Any] = {
        "raw_pyzmq_req_rep": summary(raw), "ours_dealer_to_node": summary(ours),
        "reference_req_to_node": summary(reference),
        # CPU per round trip (process incl. its ZeroMQ I/O thread); less load-sensitive.
        "cpu_us_per_call": {k: round(v / calls * 1e6, 1) for k, v in cpu.items()},
    }
    out["ratio_median"] = round(
        out["ours_dealer_to_node"]["median_us"] / out["raw_pyzmq_req_rep"]["median_us"], 2)
    return out


# ---------------------------------------------------------------------- worker queue


def raw_push_pull(count: int, rounds: int) -> float:
    ctx = zmq.Context.instance()
    push = ctx.socket(zmq.PUSH)
    port = push.bind_to_random_port("tcp://127.0.0.1", min_port=20000, max_port=60000)
    done = ctx.socket(zmq.PULL)
    done.bind(f"tcp://127.0.0.1:{port + 1}")
    process, _ = spawn("raw-pull", f"tcp://127.0.0.1:{port}", str(count))
    frame = ClientFraming(TransportProtocol.ZEROMQ).encode_intent(new_intent("echo", PAYLOAD))
    try:
        best = 0.0
        for _ in range(rounds):
            start = time.perf_counter()
            for i in range(count):
                push.send_multipart([b"%x" % i, b"N", frame])
            done.recv()
            best = max(best, count / (time.perf_counter() - start))
    finally:
        process.kill()
        push.close(0)
        done.close(0)
    return best


async def queue_throughput(workers: int, count: int, rounds: int) -> tuple[float, float]:
    """Best items/s over ``rounds``, and the workers' CPU microseconds per item."""
    distributor = Distributor(max_queue=count)
    processes: list[subprocess.Popen[str]] = []
    best = 0.0
    worker_cpu = 0.0
    async with trio.open_nursery() as nursery:
        work_url, results_url = await nursery.start(
            distributor.serve, "tcp://127.0.0.1:0", "tcp://127.0.0.1:0")
        try:
            processes.extend(spawn("worker", work_url, results_url)[0] for _ in range(workers))
            envs = [new_intent("echo", PAYLOAD) for _ in range(count)]
            for _ in range(rounds):
                before = sum(cpu_seconds(p.pid) for p in processes)
                start = time.perf_counter()
                for env in envs:
                    await distributor.submit(env)
                await distributor.wait_idle()
                best = max(best, count / (time.perf_counter() - start))
                worker_cpu += sum(cpu_seconds(p.pid) for p in processes) - before
        finally:
            for process in processes:
                process.kill()
        nursery.cancel_scope.cancel()
    assert distributor.stats.redelivered == 0
    return best, worker_cpu / (rounds * count) * 1e6


def bench_queue(count: int, rounds: int) -> dict[str, Any]:
    raw = raw_push_pull(count, rounds)
    one, one_cpu = trio.run(queue_throughput, 1, count, rounds)
    two, _ = trio.run(queue_throughput, 2, count, rounds)
    return {
        "raw_pyzmq_push_pull_per_s": round(raw),
        "one_worker_per_s": round(one),
        "two_workers_per_s": round(two),
        "two_vs_one": round(two / one, 2),
        "one_worker_vs_raw": round(one / raw, 3),
        # What one worker could do with a whole core to itself.
        "worker_cpu_us_per_item": round(one_cpu, 1),
        "one_worker_cpu_bound_per_s": round(1e6 / one_cpu) if one_cpu else None,
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        role, *args = sys.argv[2:]
        if role == "raw-rep":
            child_raw_rep()
        elif role == "raw-pull":
            child_raw_pull(args[0], int(args[1]))
        elif role == "node":
            child_node()
        elif role == "worker":
            child_worker(args[0], args[1])
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="a few seconds")
    options = parser.parse_args()
    rounds, per_round = (3, 500) if options.quick else (7, 2000)
    count, queue_rounds = (10_000, 2) if options.quick else (40_000, 3)
    reqrep = bench_reqrep(rounds, per_round)
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    print(f"request/reply 64 B: raw pyzmq REQ/REP {reqrep['raw_pyzmq_req_rep']}, "
          f"ours {reqrep['ours_dealer_to_node']}, ratio {reqrep['ratio_median']} "
          f"(target <= 1.5); reference REQ client -> our node "
          f"{reqrep['reference_req_to_node']}; CPU us/call {reqrep['cpu_us_per_call']}")
    queue = bench_queue(count, queue_rounds)
    print(f"worker queue one-way: raw PUSH/PULL {queue['raw_pyzmq_push_pull_per_s']}/s, "
          f"1 worker {queue['one_worker_per_s']}/s (target >= 25000, "
          f"{queue['one_worker_vs_raw']} of raw), 2 workers {queue['two_workers_per_s']}/s "
          f"(x{queue['two_vs_one']}); worker CPU {queue['worker_cpu_us_per_item']} us/item "
          f"= {queue['one_worker_cpu_bound_per_s']}/s on a free core")
    print(json.dumps({"bench": "zeromq", "quick": options.quick, "reqrep": reqrep,
                      "queue": queue, "cpus": os.cpu_count(),
                      "load_average": round(os.getloadavg()[0], 2)}))


if __name__ == "__main__":
    main()
