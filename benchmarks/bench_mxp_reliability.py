"""Hot paths of the MXP reliability layers, against a raw trio UDP blast measured in the same run.

* ack: one ACK frame newly acknowledging two packets (1,000 in flight): loss detection, RTT,
  congestion control and releasing the stream data they carried.
* build: the assembler filling one 1,200-byte packet from a bulk stream, plus recording it.
* reassembly: one 1,150-byte STREAM frame into a receive stream and read out, in order and
  with reordering (each block of 16 frames arrives backwards).
* stack: two peers wired back to back without loss (no crypto, no sockets): every layer on both
  sides, per 1,200-byte packet. Its packet rate is compared with the raw trio UDP blast, i.e.
  the share of the per-datagram budget these layers leave for protection and I/O.

Usage: python benchmarks/bench_mxp_reliability.py [--quick]
The last line of output is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import trio.lowlevel

from benchmarks._timing import emit
from intentus_trio.mxp.congestion import NewReno
from intentus_trio.mxp.frames import Ack
from intentus_trio.mxp.recovery import AckTracker, Delivery, LossRecovery, SentPacket
from intentus_trio.mxp.scheduler import PacketAssembler
from intentus_trio.mxp.stream_frames import (
    STREAM_FRAME_CLASSES,
    decode_payload,
)
from intentus_trio.mxp.streams import ReceiveStream, SendStream, StreamLimits, StreamManager

PACKET = 1200
LIMIT = PACKET - 24  # room for a short header and the AEAD tag
FRAME = 1150


def per_op_us(fn: Callable[[], int], rounds: int) -> float:
    """Median over ``rounds`` of (time of one fn() call / operations it did)."""
    fn()
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        ops = fn()
        samples.append((time.perf_counter() - start) / ops * 1e6)
    return statistics.median(samples)


def _ack_bench(n: int) -> Callable[[], int]:
    """Time only the ACK processing, not the setup."""

    def run() -> int:
        recovery = LossRecovery(NewReno())
        recovery.cc.cwnd = 10**9
        stream = SendStream(0, 1 << 40)
        stream.write(bytes(FRAME * (n + 1000)))
        now = 0.0
        for pn in range(n + 1000):
            deliveries: list[tuple[Delivery, Any]] = []
            stream.write_frame(bytearray(), LIMIT, 1 << 40, deliveries)
            recovery.on_packet_sent(SentPacket(pn, now, PACKET, True, True, deliveries), now)
            now += 1e-5
        acks = [((0, pn + 1),) for pn in range(0, n, 2)]
        start = time.perf_counter()
        for ranges in acks:
            now += 2e-5
            recovery.on_ack_received(ranges, 0.0, now)
        elapsed = time.perf_counter() - start
        run.elapsed = elapsed  # type: ignore[attr-defined]
        return len(acks)

    return run


def timed_ack_us(n: int, rounds: int) -> float:
    fn = _ack_bench(n)
    samples = []
    for _ in range(rounds):
        ops = fn()
        samples.append(fn.elapsed / ops * 1e6)  # type: ignore[attr-defined]
    return statistics.median(samples)


def bench_build(n: int) -> int:
    streams = StreamManager(
        is_client=True, peer=StreamLimits(max_data=1 << 40, max_stream_data=1 << 40)
    )
    recovery = LossRecovery(NewReno())
    recovery.cc.cwnd = 10**12
    asm = PacketAssembler(streams, AckTracker(), recovery, None)
    sid = streams.open_stream()
    streams.write(sid, bytes(PACKET * (n + 10)))
    for pn in range(n):
        packet = asm.build(0.0, LIMIT)
        assert packet is not None
        asm.on_packet_sent(packet, pn, PACKET, 0.0)
    return n


def bench_reassembly(n: int, reorder: bool) -> int:
    chunk = bytes(FRAME)
    recv = ReceiveStream(0, window=1 << 40)
    order = list(range(n))
    if reorder:
        order = [i for block in range(0, n, 16) for i in reversed(range(block, min(n, block + 16)))]
    view = memoryview(chunk)
    for i in order:
        recv.on_data(i * FRAME, view, False)
        if recv.available:
            recv.read()
    return n


def bench_stack(n: int) -> int:
    """Both peers, every layer, lossless back-to-back; returns packets carrying stream data."""
    limits = StreamLimits(
        max_data=64 << 20,
        max_data_window=64 << 20,
        max_stream_data=32 << 20,
        max_stream_window=32 << 20,
        send_buffer=1 << 40,
    )
    peers = []
    for is_client in (True, False):
        recovery = LossRecovery(NewReno())
        acks = AckTracker()
        streams = StreamManager(is_client=is_client, local=limits, peer=limits, rtt=recovery.rtt)
        peers.append((PacketAssembler(streams, acks, recovery, None), streams, acks, recovery))
    sender, receiver = peers
    sid = sender[1].open_stream()
    total = n * FRAME
    sender[1].write(sid, bytes(total), fin=True)
    pns = [0, 0]
    now = 0.0
    received = 0
    packets = 0

    def deliver(to: tuple[Any, ...], payload: bytearray, pn: int) -> None:
        _, streams, acks, recovery = to
        frames = decode_payload(payload)
        acks.on_packet_received(pn, any(not isinstance(f, Ack) for f in frames), now)
        for frame in frames:
            if isinstance(frame, Ack):
                recovery.on_ack_received(frame.ranges, frame.delay * 1e-6, now)
            elif isinstance(frame, STREAM_FRAME_CLASSES):
                streams.handle_frame(frame, now)

    while received < total:
        now += 5e-6
        for side, (src, dst) in enumerate(((sender, receiver), (receiver, sender))):
            asm = src[0]
            while (packet := asm.build(now, LIMIT)) is not None:
                pn = pns[side]
                pns[side] += 1
                asm.on_packet_sent(packet, pn, PACKET, now)
                deliver(dst, packet.payload, pn)
                packets += side == 0
        received += len(receiver[1].read(sid, now=now))
    return packets


async def udp_blast(seconds: float) -> float:
    """Datagrams per second one trio task can send to another over loopback."""
    rx = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    await rx.bind(("127.0.0.1", 0))
    addr = rx.getsockname()
    payload = bytes(PACKET)
    received = 0
    done = trio.Event()

    async def receiver() -> None:
        nonlocal received
        while not done.is_set():
            await trio.lowlevel.wait_readable(rx)
            while True:
                try:
                    rx._sock.recv(2048)  # drain without a trio wakeup per datagram
                except BlockingIOError:
                    break
                received += 1

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(receiver)
        deadline = trio.current_time() + seconds
        while trio.current_time() < deadline:
            for _ in range(64):
                await tx.sendto(payload, addr)
            await trio.lowlevel.checkpoint()
        done.set()
        nursery.cancel_scope.cancel()
    elapsed = time.perf_counter() - start
    rx.close()
    tx.close()
    return received / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rounds = 3 if args.quick else 7
    n = 2000 if args.quick else 10000

    ack_us = timed_ack_us(n, rounds)
    build_us = per_op_us(lambda: bench_build(n), rounds)
    reasm_us = per_op_us(lambda: bench_reassembly(n, False), rounds)
    reorder_us = per_op_us(lambda: bench_reassembly(n, True), rounds)
    # the stack and the UDP blast alternate, so load on a shared machine hits both alike
    blasts: list[float] = []
    stacks: list[float] = []
    ratios: list[float] = []
    bench_stack(n // 10)
    for _ in range(rounds):
        blasts.append(trio.run(udp_blast, 0.3 if args.quick else 1.0))
        start = time.perf_counter()
        packets = bench_stack(n)
        stacks.append((time.perf_counter() - start) / packets * 1e6)
        ratios.append(1e6 / stacks[-1] / blasts[-1])
    blast = statistics.median(blasts)
    stack_us = statistics.median(stacks)
    stack_pps = 1e6 / stack_us
    figures = {
        "ack_us": round(ack_us, 2),
        "build_us": round(build_us, 2),
        "reassembly_in_order_us": round(reasm_us, 2),
        "reassembly_reordered_us": round(reorder_us, 2),
        "stack_us_per_packet": round(stack_us, 2),
        "stack_mb_per_s": round(stack_pps * FRAME / 1e6, 1),
        "udp_blast_dgram_per_s": round(blast),
        "stack_vs_udp_blast": round(statistics.median(ratios), 2),
    }
    print(f"raw trio UDP blast:           {blast:9.0f} datagrams/s")
    print(f"ACK processing (2 packets):   {ack_us:9.2f} µs per ACK")
    print(f"assemble one packet:          {build_us:9.2f} µs")
    print(f"reassembly, in order:         {reasm_us:9.2f} µs per frame")
    print(f"reassembly, reordered:        {reorder_us:9.2f} µs per frame")
    print(
        f"whole stack, both peers:      {stack_us:9.2f} µs per packet "
        f"({figures['stack_mb_per_s']} MB/s of stream data, "
        f"{figures['stack_vs_udp_blast']}x the raw UDP blast packet rate, median of lockstep"
        " rounds)"
    )
    emit("mxp_reliability", figures)


if __name__ == "__main__":
    main()
