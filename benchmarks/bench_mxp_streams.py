"""MXP reliable streams over UDP on 127.0.0.1, against baselines measured in the same run.

Every server runs in its own process (the client is this process), so both sides have a core:

* 64-byte request/response on one stream vs raw trio UDP ping-pong (alternating batches);
* bulk one-way on one stream vs a raw trio UDP blast, and vs aioquic (if importable) bulk;
* connection setup + first response on a new socket (handshake, stream, 8-byte echo);
* 1 % loss (an impairment relay in its own process): p99 request latency vs the same relay
  without loss, and bulk goodput at 5 % loss;
* 10,000 open streams on one connection: resident memory of the client and the server.

Usage: python benchmarks/bench_mxp_streams.py [--quick]
The last line of output is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import attrs
import trio

sys.path.insert(0, str(Path(__file__).parent))

from _timing import emit, percentile

from intentus_trio.mxp.carrier import UdpCarrier, open_udp_carrier
from intentus_trio.mxp.client import mxp_connect
from intentus_trio.mxp.config import Configuration, ServerConfiguration, allow_any
from intentus_trio.mxp.driver import MxpConnection
from intentus_trio.mxp.listener import serve_mxp
from intentus_trio.mxp.noise import KeyPair
from intentus_trio.mxp.stream import MxpStream

ECHO, SINK, HOLD = b"E", b"S", b"H"
BLAST, REPORT = 0x01, 0x02
CHUNK = 65536


def rss_mb(pid: int | str = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


# --------------------------------------------------------------------------- child processes


async def _until_stdin_closes() -> None:
    stream = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    while await stream.receive_some(4096):
        pass


async def _serve_stream(stream: MxpStream, held: list[MxpStream]) -> None:
    # the client may go away mid-stream (closing its connection)
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        await _serve_mode(stream, held)


async def _serve_mode(stream: MxpStream, held: list[MxpStream]) -> None:
    mode = await stream.receive_some(1)
    if mode == ECHO:
        while data := await stream.receive_some():
            await stream.send_all(data)
        await stream.send_eof()
    elif mode == SINK:
        total = 0
        while data := await stream.receive_some():
            total += len(data)
        await stream.send_all(str(total).encode())
        await stream.send_eof()
    elif mode == HOLD:
        held.append(stream)  # kept open until the connection ends


async def _child_mxp(max_ack_delay: str = "") -> None:
    key = KeyPair.generate()
    config = ServerConfiguration(
        Configuration(
            key, idle_timeout=300.0, max_streams_bidi=20_000,
            **({"max_ack_delay": float(max_ack_delay)} if max_ack_delay else {}),
        ),
        allow_any,
    )

    async def handler(conn: MxpConnection) -> None:
        held: list[MxpStream] = []
        async with trio.open_nursery() as nursery:
            async for stream in conn.streams():
                nursery.start_soon(_serve_stream, stream, held)

    async with trio.open_nursery() as nursery:
        host, port = await nursery.start(serve_mxp, handler, ("127.0.0.1", 0), config)
        print(host, port, key.public.hex(), flush=True)
        await _until_stdin_closes()
        nursery.cancel_scope.cancel()


async def _child_raw() -> None:
    carrier = await open_udp_carrier(
        "127.0.0.1", 0, receive_buffer_size=1 << 20, send_buffer_size=1 << 20
    )
    received = 0

    async def serve() -> None:
        nonlocal received
        while True:
            await carrier.wait_readable()
            while (item := carrier.receive_nowait()) is not None:
                data = item[0]
                if data[0] == BLAST:
                    received += len(data)
                elif data[0] == REPORT:
                    carrier.send_nowait(str(received).encode(), item[1])
                    received = 0
                else:
                    carrier.send_nowait(data, item[1])

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve)
        host, port = carrier.local_address
        print(host, port, flush=True)
        await _until_stdin_closes()
        nursery.cancel_scope.cancel()


async def _child_relay(host: str, port: str, loss: str) -> None:
    from intentus_trio.testing.relay import open_udp_relay

    async with open_udp_relay((host, int(port)), loss=float(loss), seed=7) as relay:
        print(*relay.address, flush=True)
        await _until_stdin_closes()


def _aioquic_certificate(directory: str) -> tuple[str, str]:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    certfile, keyfile = os.path.join(directory, "c.pem"), os.path.join(directory, "k.pem")
    Path(certfile).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    Path(keyfile).write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return certfile, keyfile


async def _child_aioquic_server() -> None:
    # aioquic is a benchmark-only dependency (pip install aioquic)
    from aioquic.asyncio.protocol import (  # type: ignore[import-not-found,unused-ignore]
        QuicConnectionProtocol,
    )
    from aioquic.asyncio.server import serve  # type: ignore[import-not-found,unused-ignore]
    from aioquic.quic.configuration import (  # type: ignore[import-not-found,unused-ignore]
        QuicConfiguration,
    )
    from aioquic.quic.events import (  # type: ignore[import-not-found,unused-ignore]
        QuicEvent,
        StreamDataReceived,
    )

    class Sink(QuicConnectionProtocol):  # type: ignore[misc,unused-ignore]
        counts: dict[int, int]

        def quic_event_received(self, event: QuicEvent) -> None:
            if not hasattr(self, "counts"):
                self.counts = {}
            if isinstance(event, StreamDataReceived):
                total = self.counts.get(event.stream_id, 0) + len(event.data)
                self.counts[event.stream_id] = total
                if event.end_stream:
                    self._quic.send_stream_data(event.stream_id, str(total).encode(), True)
                    self.transmit()

    with tempfile.TemporaryDirectory() as directory:
        config = QuicConfiguration(is_client=False, alpn_protocols=["bench"])
        config.load_cert_chain(*_aioquic_certificate(directory))
        server = await serve("127.0.0.1", 0, configuration=config, create_protocol=Sink)
        transport: Any = server._transport
        port = transport.get_extra_info("sockname")[1]
        print("127.0.0.1", port, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        server.close()


async def _child_aioquic_client(host: str, port: str, size: str) -> None:
    import ssl

    from aioquic.asyncio.client import connect  # type: ignore[import-not-found,unused-ignore]
    from aioquic.quic.configuration import (  # type: ignore[import-not-found,unused-ignore]
        QuicConfiguration,
    )

    config = QuicConfiguration(is_client=True, alpn_protocols=["bench"], verify_mode=ssl.CERT_NONE)
    total = int(size)
    async with connect(host, int(port), configuration=config) as client:
        reader, writer = await client.create_stream()
        chunk = bytes(CHUNK)
        start = time.perf_counter()
        for _ in range(total // CHUNK):
            writer.write(chunk)
            await writer.drain()
        writer.write_eof()
        reply = await reader.read()
        elapsed = time.perf_counter() - start
    print(json.dumps({"seconds": elapsed, "bytes": int(reply)}), flush=True)


def _spawn(*args: str) -> tuple[subprocess.Popen[str], list[str]]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--child", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline().split()


def _stop(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.close()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


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


async def stream_round_trips(stream: MxpStream, n: int, size: int = 64) -> list[float]:
    payload = bytes(size)
    out = []
    clock = time.perf_counter
    for _ in range(n):
        start = clock()
        await stream.send_all(payload)
        got = 0
        while got < size:
            got += len(await stream.receive_some(size - got))
        out.append(clock() - start)
    return out


async def raw_blast(carrier: UdpCarrier, server: tuple[str, int], total: int) -> float:
    """Goodput (bytes/s) of 1200-byte datagrams sent as fast as trio can, counted by the
    receiver."""
    packet = bytes([BLAST]) + bytes(1199)
    start = time.perf_counter()
    for i in range(total // len(packet)):
        await carrier.send(packet, server)
        if i % 32 == 0:
            await trio.lowlevel.checkpoint()
    while True:
        carrier.send_nowait(bytes([REPORT]), server)
        with trio.move_on_after(0.2):
            await carrier.wait_readable()
            item = carrier.receive_nowait()
            if item is not None:
                return int(item[0]) / (time.perf_counter() - start)


async def stream_bulk(conn: MxpConnection, total: int) -> float:
    """Goodput (bytes/s) of one stream: until the server confirmed every byte."""
    stream = await conn.open_stream()
    chunk = bytes(CHUNK)
    start = time.perf_counter()
    await stream.send_all(SINK)
    for _ in range(total // CHUNK):
        await stream.send_all(chunk)
    await stream.send_eof()
    reply = b""
    while data := await stream.receive_some():
        reply += data
    elapsed = time.perf_counter() - start
    assert int(reply) == total // CHUNK * CHUNK, reply
    await stream.aclose()
    return total / elapsed


def aioquic_bulk(host: str, port: str, total: int) -> float | None:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", "aioquic-client", host, port, str(total)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if proc.returncode != 0:
        print("aioquic client failed:", proc.stderr[-500:], file=sys.stderr)
        return None
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return float(result["bytes"]) / float(result["seconds"])


async def echo_stream(conn: MxpConnection) -> MxpStream:
    stream = await conn.open_stream()
    await stream.send_all(ECHO)
    return stream


def us(samples: list[float]) -> dict[str, float]:
    return {
        "median_us": round(statistics.median(samples) * 1e6, 1),
        "p99_us": round(percentile(samples, 0.99) * 1e6, 1),
    }


async def main(quick: bool) -> None:
    figures: dict[str, Any] = {}
    rounds = 5 if quick else 10
    per_round = 100 if quick else 400
    bulk = (4 if quick else 24) << 20
    client_key = KeyPair.generate()
    children: list[subprocess.Popen[str]] = []

    def spawn(*args: str) -> list[str]:
        proc, line = _spawn(*args)
        children.append(proc)
        return line

    try:
        host, port, key_hex = spawn("mxp")
        server = (host, int(port))
        server_key = bytes.fromhex(key_hex)
        raw_host, raw_port = spawn("raw")
        raw_server = (raw_host, int(raw_port))
        config = Configuration(client_key, idle_timeout=300.0)

        # ---- request/response
        raw_carrier = await open_udp_carrier(
            "127.0.0.1", 0, receive_buffer_size=1 << 20, send_buffer_size=1 << 20
        )
        mxp_rr: list[float] = []
        raw_rr: list[float] = []
        async with mxp_connect(server, server_key, config) as conn:
            stream = await echo_stream(conn)
            await stream_round_trips(stream, 200)
            await raw_round_trips(raw_carrier, raw_server, 200)
            for _ in range(rounds):
                mxp_rr += await stream_round_trips(stream, per_round)
                raw_rr += await raw_round_trips(raw_carrier, raw_server, per_round)
            rr_ratio = statistics.median(mxp_rr) / statistics.median(raw_rr)
            figures["rr_64b"] = {"mxp": us(mxp_rr), "raw_udp": us(raw_rr)}
            figures["rr_64b_ratio"] = round(rr_ratio, 2)
            print(
                f"64 B request/response: MXP stream {us(mxp_rr)} vs raw UDP {us(raw_rr)}:"
                f" {rr_ratio:.2f}x (target <= 1.5x)"
            )

            # ---- bulk
            raw_rates, mxp_rates = [], []
            for _ in range(2 if quick else 3):
                raw_rates.append(await raw_blast(raw_carrier, raw_server, bulk))
                mxp_rates.append(await stream_bulk(conn, bulk))
            raw_rate, mxp_rate = max(raw_rates), max(mxp_rates)
            figures["bulk_mb_s"] = {
                "mxp": round(mxp_rate / 1e6, 1),
                "raw_udp_blast": round(raw_rate / 1e6, 1),
            }
            figures["bulk_vs_raw"] = round(mxp_rate / raw_rate, 2)
            print(
                f"bulk one-way: MXP {mxp_rate / 1e6:.1f} MB/s vs raw UDP blast"
                f" {raw_rate / 1e6:.1f} MB/s: {mxp_rate / raw_rate:.0%} (target >= 50%)"
            )
            path = conn.path_stats()
            print(
                f"  client path: cwnd {path.cwnd}, srtt {path.smoothed_rtt * 1e6:.0f} us,"
                f" sent {path.packets_sent}, lost {path.packets_lost},"
                f" spurious {path.spurious_losses}, PTOs {path.ptos}"
            )
        raw_carrier.close()

        try:
            import aioquic  # noqa: F401
        except ImportError:
            print("aioquic is not importable: skipping the aioquic baseline")
            figures["aioquic_mb_s"] = None
        else:
            q_host, q_port = spawn("aioquic-server")
            q_rate = aioquic_bulk(q_host, q_port, min(bulk, 8 << 20))
            figures["aioquic_mb_s"] = None if q_rate is None else round(q_rate / 1e6, 1)
            if q_rate is not None:
                figures["bulk_vs_aioquic"] = round(mxp_rate / q_rate, 2)
                print(
                    f"bulk vs aioquic: {q_rate / 1e6:.1f} MB/s:"
                    f" {mxp_rate / q_rate:.1f}x (target >= 4x)"
                )

        # ---- connection setup + first response
        setups: list[float] = []
        for _ in range(10 if quick else 40):
            start = time.perf_counter()
            async with mxp_connect(server, server_key, config) as conn:
                stream = await echo_stream(conn)
                await stream.send_all(bytes(8))
                got = 0
                while got < 8:
                    got += len(await stream.receive_some())
                setups.append(time.perf_counter() - start)
        figures["setup_first_response_ms"] = {
            "median": round(statistics.median(setups) * 1e3, 2),
            "best": round(min(setups) * 1e3, 2),
        }
        print(
            f"setup + first response: median {statistics.median(setups) * 1e3:.2f} ms,"
            f" best {min(setups) * 1e3:.2f} ms (target <= 3 ms)"
        )

        # ---- loss
        n = 1000 if quick else 4000
        # The default max_ack_delay (1 ms), and QUIC's default (25 ms) for comparison.
        for label, ack_delay in (("default", ""), ("max_ack_delay_25ms", "0.025")):
            if label == "default":
                t_host, t_port, t_key = host, port, server_key
            else:
                t_host, t_port, key2 = spawn("mxp", ack_delay)
                t_key = bytes.fromhex(key2)
            clean_host, clean_port = spawn("relay", t_host, t_port, "0")
            lossy_host, lossy_port = spawn("relay", t_host, t_port, "0.01")
            tuned = attrs.evolve(config, max_ack_delay=float(ack_delay)) if ack_delay else config
            clean: list[float] = []
            lossy: list[float] = []
            async with (
                mxp_connect((clean_host, int(clean_port)), t_key, tuned) as c1,
                mxp_connect((lossy_host, int(lossy_port)), t_key, tuned) as c2,
            ):
                s1, s2 = await echo_stream(c1), await echo_stream(c2)
                for _ in range(rounds):
                    clean += await stream_round_trips(s1, n // rounds)
                    lossy += await stream_round_trips(s2, n // rounds)
                lost = c2.path_stats().packets_lost
            p99_ratio = percentile(lossy, 0.99) / percentile(clean, 0.99)
            figures[f"loss_1pct_rr_{label}"] = {
                "relay_clean": us(clean),
                "relay_1pct": us(lossy),
                "p99_ratio": round(p99_ratio, 2),
            }
            print(
                f"request/response through a relay ({label}): clean {us(clean)},"
                f" 1% loss {us(lossy)} ({lost} packets lost): p99 {p99_ratio:.1f}x"
                " (target <= 3x)"
            )
        loss5_host, loss5_port = spawn("relay", host, port, "0.05")
        async with mxp_connect((loss5_host, int(loss5_port)), server_key, config) as conn:
            rate5 = await stream_bulk(conn, bulk // 4)
            path = conn.path_stats()
        figures["goodput_5pct_loss_mb_s"] = round(rate5 / 1e6, 2)
        print(
            f"bulk goodput at 5% loss: {rate5 / 1e6:.2f} MB/s"
            f" (lost {path.packets_lost}, cwnd {path.cwnd})"
        )

        # ---- 10,000 open streams
        base_rss = rss_mb()
        mxp_pid = children[0].pid
        server_base = rss_mb(mxp_pid)
        count = 10_000
        many = Configuration(client_key, idle_timeout=300.0)
        async with mxp_connect(server, server_key, many) as conn:
            streams = []
            start = time.perf_counter()
            for _ in range(count):
                stream = await conn.open_stream()
                await stream.send_all(HOLD)
                streams.append(stream)
            await trio.sleep(1.0)
            opened = time.perf_counter() - start
            client_rss, server_rss = rss_mb(), rss_mb(mxp_pid)
        figures["streams_10k"] = {
            "client_rss_mb": round(client_rss, 1),
            "client_growth_mb": round(client_rss - base_rss, 1),
            "server_rss_mb": round(server_rss, 1),
            "server_growth_mb": round(server_rss - server_base, 1),
            "seconds_to_open": round(opened, 2),
        }
        print(
            f"10,000 open streams: client RSS {client_rss:.1f} MB (+{client_rss - base_rss:.1f}),"
            f" server RSS {server_rss:.1f} MB (+{server_rss - server_base:.1f}) (target <= 128 MB)"
        )
        figures["load_average"] = round(os.getloadavg()[0], 2)
    finally:
        for proc in children:
            _stop(proc)
    emit("mxp_streams", figures)


def run_child(args: list[str]) -> None:
    kind, rest = args[0], args[1:]
    if kind == "mxp":
        trio.run(_child_mxp, rest[0] if rest else "")
    elif kind == "raw":
        trio.run(_child_raw)
    elif kind == "relay":
        trio.run(_child_relay, rest[0], rest[1], rest[2])
    elif kind == "aioquic-server":
        asyncio.run(_child_aioquic_server())
    elif kind == "aioquic-client":
        asyncio.run(_child_aioquic_client(rest[0], rest[1], rest[2]))
    else:
        raise SystemExit(f"unknown child {kind}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few seconds per figure")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child:
        run_child(options.child)
    else:
        trio.run(main, options.quick)
