"""Benchmark: MXP message encode+decode of a 1 KB payload against a bare struct+xxh3 baseline.

The baseline does the irreducible work (pack the header, hash, append the checksum; unpack,
re-hash, compare, slice the payload) with no validation and no message object, so the ratio
shows what the codec's strictness and its attrs object cost. Both run in the same process, one
after the other, several rounds; the median round counts (absolute times vary run to run).

    python benchmarks/bench_mxp_message.py [--quick] [--payload 1024]

The last line of output is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import struct
import sys
import time
from collections.abc import Callable

import xxhash

from intentus_trio.mxp.message import MAGIC, MessageFlags, MessageType, MxpMessage, decode, encode

HEADER = struct.Struct("<IBBHQQQ")
CHECKSUM = struct.Struct("<Q")


def baseline_round_trip(payload: bytes) -> Callable[[], bytes]:
    xxh3 = xxhash.xxh3_64_intdigest

    def run() -> bytes:
        body = HEADER.pack(MAGIC, 0x10, 0x04, 0, 1, 2, len(payload)) + payload
        wire = body + CHECKSUM.pack(xxh3(body))
        length = HEADER.unpack_from(wire)[6]
        end = 32 + length
        if xxh3(memoryview(wire)[:end]) != CHECKSUM.unpack_from(wire, end)[0]:
            raise ValueError("checksum")
        return wire[32:end]

    return run


def codec_round_trip(payload: bytes) -> Callable[[], bytes]:
    message = MxpMessage(MessageType.CALL, payload, 1, 2, MessageFlags.REQUIRES_ACK)

    def run() -> bytes:
        return decode(encode(message)).payload

    return run


def time_per_call(fn: Callable[[], bytes], iterations: int) -> float:
    """Seconds per call over one round."""
    start = time.perf_counter()
    for _ in range(iterations):
        fn()
    return (time.perf_counter() - start) / iterations


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="few iterations (a smoke run)")
    parser.add_argument("--payload", type=int, default=1024, help="payload size in bytes")
    args = parser.parse_args(argv)

    iterations, rounds = (2_000, 3) if args.quick else (50_000, 7)
    payload = bytes(range(256)) * (args.payload // 256) + bytes(args.payload % 256)
    cases = {"baseline": baseline_round_trip(payload), "codec": codec_round_trip(payload)}
    if cases["baseline"]() != cases["codec"]() or cases["codec"]() != payload:
        raise SystemExit("codec and baseline disagree")

    samples: dict[str, list[float]] = {name: [] for name in cases}
    for fn in cases.values():  # warm up
        time_per_call(fn, iterations // 10 + 1)
    for _ in range(rounds):
        for name, fn in cases.items():
            samples[name].append(time_per_call(fn, iterations))

    median_us = {name: statistics.median(values) * 1e6 for name, values in samples.items()}
    ratio = median_us["codec"] / median_us["baseline"]
    print(f"payload {args.payload} B, {rounds} rounds x {iterations} encode+decode")
    for name in cases:
        rate = 1e6 / median_us[name]
        print(f"  {name:<8} {median_us[name]:7.2f} us  ({rate:,.0f}/s)")
    print(f"  codec / baseline = {ratio:.2f}x")
    figures = {
        "benchmark": "mxp_message_encode_decode",
        "payload_bytes": args.payload,
        "iterations": iterations,
        "rounds": rounds,
        "codec_us": round(median_us["codec"], 3),
        "baseline_us": round(median_us["baseline"], 3),
        "ratio": round(ratio, 3),
        "python": sys.version.split()[0],
        "quick": args.quick,
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
