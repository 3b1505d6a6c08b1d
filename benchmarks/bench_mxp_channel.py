"""The MXP secure channel over UDP on 127.0.0.1, against its baselines measured in the same run.

* handshake to first datagram echo (new socket, Noise IK, one 8-byte echo), server in another
  process; server handshake cost in CPU time against the X25519 cost (PyNaCl) of this run;
* 64-byte datagram echo round trip vs raw trio UDP ping-pong, both against an echo server in a
  separate process, measured in alternating batches so machine load hits both alike;
* protect + unprotect of a 1200-byte packet vs bare AEAD seal + open (bench_mxp_protection).

Usage: python benchmarks/bench_mxp_channel.py [--quick]
The last line of output is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import trio
from nacl import bindings

sys.path.insert(0, str(Path(__file__).parent))

from _timing import emit, percentile
from bench_mxp_protection import measure as measure_protection

from intentus_trio.mxp.carrier import UdpCarrier, open_udp_carrier
from intentus_trio.mxp.client import mxp_connect
from intentus_trio.mxp.config import Configuration, ServerConfiguration, allow_any
from intentus_trio.mxp.driver import MxpConnection
from intentus_trio.mxp.listener import serve_mxp
from intentus_trio.mxp.noise import KeyPair

STATS_REQUEST = b"\x00stats"
# per side: one ephemeral key generation and four DH, of which the static-static one is
# remembered per peer (the benchmark's client reconnects with one key)
X25519_PER_HANDSHAKE = 4


# --------------------------------------------------------------------------- child processes


async def _until_stdin_closes() -> None:
    stream = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    while await stream.receive_some(4096):
        pass


async def _child_mxp() -> None:
    key = KeyPair.generate()
    config = ServerConfiguration(Configuration(key, idle_timeout=120.0), allow_any)

    async def echo(conn: MxpConnection) -> None:
        async for data in conn:
            if data == STATS_REQUEST:
                figures = {
                    "handshakes": conn.stats.handshakes_completed,
                    "cpu": time.process_time(),
                }
                data = json.dumps(figures).encode()
            await conn.send_datagram(data)

    async with trio.open_nursery() as nursery:
        host, port = await nursery.start(serve_mxp, echo, ("127.0.0.1", 0), config)
        print(host, port, key.public.hex(), flush=True)
        await _until_stdin_closes()
        nursery.cancel_scope.cancel()


async def _child_raw() -> None:
    carrier = await open_udp_carrier("127.0.0.1", 0)

    async def echo() -> None:
        while True:
            await carrier.wait_readable()
            while (item := carrier.receive_nowait()) is not None:
                carrier.send_nowait(item[0], item[1])

    async with trio.open_nursery() as nursery:
        nursery.start_soon(echo)
        host, port = carrier.local_address
        print(host, port, flush=True)
        await _until_stdin_closes()
        nursery.cancel_scope.cancel()


def _spawn(kind: str) -> tuple[subprocess.Popen[str], list[str]]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--child", kind],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline().split()


# --------------------------------------------------------------------------- measurements


async def raw_round_trips(carrier: UdpCarrier, server: tuple[str, int], n: int) -> list[float]:
    payload = bytes(64)
    out = []
    clock = time.perf_counter
    for _ in range(n):
        start = clock()
        carrier.send_nowait(payload, server)
        while True:
            await carrier.wait_readable()
            if carrier.receive_nowait() is not None:
                break
        out.append(clock() - start)
    return out


async def mxp_round_trips(conn: MxpConnection, n: int) -> list[float]:
    payload = bytes(64)
    out = []
    clock = time.perf_counter
    for _ in range(n):
        start = clock()
        await conn.send_datagram(payload)
        await conn.receive_datagram()
        out.append(clock() - start)
    return out


async def handshakes(
    server: tuple[str, int], server_key: bytes, config: Configuration, n: int
) -> list[float]:
    out = []
    clock = time.perf_counter
    for _ in range(n):
        start = clock()
        async with mxp_connect(server, server_key, config) as conn:
            await conn.send_datagram(b"12345678")
            await conn.receive_datagram()
        out.append(clock() - start)
    return out


async def server_stats(conn: MxpConnection) -> dict[str, float]:
    await conn.send_datagram(STATS_REQUEST)
    while True:
        data = await conn.receive_datagram()
        if data.startswith(b"{"):
            return json.loads(data)  # type: ignore[no-any-return]


async def handshake_load(
    server: tuple[str, int], server_key: bytes, config: Configuration, seconds: float
) -> dict[str, float]:
    """Concurrent handshakes for a while; the server reports its handshakes and CPU time."""
    async with mxp_connect(server, server_key, config) as probe:
        before = await server_stats(probe)
        done = 0
        start = time.perf_counter()

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() - start < seconds:
                async with mxp_connect(server, server_key, config):
                    done += 1

        async with trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(worker)
        wall = time.perf_counter() - start
        after = await server_stats(probe)
    count = after["handshakes"] - before["handshakes"]
    cpu = after["cpu"] - before["cpu"]
    return {
        "handshakes": count,
        "wall_per_s": count / wall,
        "server_cpu_us_per_handshake": cpu / count * 1e6,
        "server_capacity_per_s": count / cpu,
    }


def x25519_us(n: int) -> float:
    a, b = os.urandom(32), bindings.crypto_scalarmult_base(os.urandom(32))
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        for _ in range(20):
            bindings.crypto_scalarmult(a, b)
        samples.append((time.perf_counter() - start) / 20)
    return statistics.median(samples) * 1e6


async def run(quick: bool) -> dict[str, object]:
    figures: dict[str, object] = {"mode": "quick" if quick else "full"}
    batch, rounds = (200, 10) if quick else (500, 30)
    n_handshakes = 30 if quick else 200

    protection = measure_protection(200, 25) if quick else measure_protection(500, 101)
    figures["protect_us"] = protection["protect_us"]
    figures["bare_aead_us"] = protection["bare_us"]
    figures["ratio_protect_vs_bare"] = protection["ratio_protect_vs_bare"]

    x25519 = x25519_us(20 if quick else 100)
    figures["x25519_us"] = round(x25519, 2)

    mxp_proc, mxp_info = _spawn("mxp")
    raw_proc, raw_info = _spawn("raw")
    try:
        mxp_server = (mxp_info[0], int(mxp_info[1]))
        server_key = bytes.fromhex(mxp_info[2])
        raw_server = (raw_info[0], int(raw_info[1]))
        config = Configuration(KeyPair.generate(), idle_timeout=120.0)

        await handshakes(mxp_server, server_key, config, 5)  # warm-up
        hs = await handshakes(mxp_server, server_key, config, n_handshakes)
        figures["handshake_echo_median_ms"] = round(statistics.median(hs) * 1e3, 3)
        figures["handshake_echo_p99_ms"] = round(percentile(hs, 0.99) * 1e3, 3)
        figures["handshake_echo_best_ms"] = round(min(hs) * 1e3, 3)

        load = await handshake_load(mxp_server, server_key, config, 1.0 if quick else 3.0)
        figures["server_handshakes_per_s_wall"] = round(load["wall_per_s"], 1)
        figures["server_cpu_us_per_handshake"] = round(load["server_cpu_us_per_handshake"], 1)
        figures["server_handshake_capacity_per_s"] = round(load["server_capacity_per_s"], 1)
        ideal = 1e6 / (X25519_PER_HANDSHAKE * x25519)
        figures["x25519_bound_handshakes_per_s"] = round(ideal, 1)

        raw_carrier = await open_udp_carrier("127.0.0.1", 0)
        raw_all: list[float] = []
        mxp_all: list[float] = []
        ratios = []
        cpu = {"raw": 0.0, "mxp": 0.0}
        async with mxp_connect(mxp_server, server_key, config) as conn:
            await raw_round_trips(raw_carrier, raw_server, batch)
            await mxp_round_trips(conn, batch)
            for _ in range(rounds):
                start = time.process_time()
                raw = await raw_round_trips(raw_carrier, raw_server, batch)
                middle = time.process_time()
                ours = await mxp_round_trips(conn, batch)
                cpu["raw"] += middle - start
                cpu["mxp"] += time.process_time() - middle
                raw_all += raw
                mxp_all += ours
                ratios.append(statistics.median(ours) / statistics.median(raw))
        raw_carrier.close()
        figures["raw_udp_rtt_median_us"] = round(statistics.median(raw_all) * 1e6, 2)
        figures["mxp_rtt_median_us"] = round(statistics.median(mxp_all) * 1e6, 2)
        figures["mxp_rtt_p99_us"] = round(percentile(mxp_all, 0.99) * 1e6, 2)
        figures["raw_udp_rtt_p99_us"] = round(percentile(raw_all, 0.99) * 1e6, 2)
        figures["ratio_rtt_vs_raw"] = round(statistics.median(ratios), 3)
        # this process's CPU per round trip: the work each side adds, less sensitive to load
        figures["raw_client_cpu_us_per_rtt"] = round(cpu["raw"] / len(raw_all) * 1e6, 2)
        figures["mxp_client_cpu_us_per_rtt"] = round(cpu["mxp"] / len(mxp_all) * 1e6, 2)
    finally:
        for proc in (mxp_proc, raw_proc):
            assert proc.stdin is not None
            proc.stdin.close()
            proc.wait(timeout=10)
    figures["load_avg_1m"] = round(os.getloadavg()[0], 2)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a few seconds (CI smoke run)")
    parser.add_argument("--child", choices=["mxp", "raw"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "mxp":
        trio.run(_child_mxp)
        return
    if args.child == "raw":
        trio.run(_child_raw)
        return
    f = trio.run(run, args.quick)
    print(
        f"protect+unprotect 1200 B          {f['protect_us']} us "
        f"({f['ratio_protect_vs_bare']}x bare AEAD {f['bare_aead_us']} us; target <= 10 us)"
    )
    print(
        f"handshake + first echo            {f['handshake_echo_median_ms']} ms median "
        f"(best {f['handshake_echo_best_ms']}, p99 {f['handshake_echo_p99_ms']} ms; "
        "target <= 2 ms)"
    )
    print(f"X25519                            {f['x25519_us']} us")
    print(
        f"server CPU per handshake          {f['server_cpu_us_per_handshake']} us "
        f"(X25519 share: {X25519_PER_HANDSHAKE} x {f['x25519_us']} us)"
    )
    print(
        f"server handshake capacity         {f['server_handshake_capacity_per_s']}/s per core "
        f"(X25519 bound {f['x25519_bound_handshakes_per_s']}/s); "
        f"achieved {f['server_handshakes_per_s_wall']}/s with one client process"
    )
    print(
        f"64 B echo RTT: raw trio UDP       {f['raw_udp_rtt_median_us']} us "
        f"(p99 {f['raw_udp_rtt_p99_us']} us; client CPU {f['raw_client_cpu_us_per_rtt']} us)"
    )
    print(
        f"64 B echo RTT: MXP datagram       {f['mxp_rtt_median_us']} us "
        f"(p99 {f['mxp_rtt_p99_us']} us; client CPU {f['mxp_client_cpu_us_per_rtt']} us)"
    )
    print(f"ratio MXP / raw                   {f['ratio_rtt_vs_raw']}x (target <= 1.5x)")
    emit("mxp_channel", f)


if __name__ == "__main__":
    main()
