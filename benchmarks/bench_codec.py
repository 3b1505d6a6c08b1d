"""Frame codec: a TransportEnvelope with a ~1 KB IntentEnvelope body, encode + decode.

Baseline, same run: orjson alone on the same JSON object (the floor: parsing and
serialising without building or validating any model object). ``decode`` is the msgspec
fast path every valid frame takes; ``python_decoder`` times the hand-written decoder that
decides the frames the fast path declines. Also times building a new IntentEnvelope (fresh
ids and timestamps).

    python benchmarks/bench_codec.py [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).parent))

from _timing import emit, sample_sync, summary_us

from intentus_trio import (
    FrameCodec,
    TransportEnvelope,
    TransportProtocol,
    new_intent,
)
from intentus_trio.protocol.codec import frame_from_json, frame_to_json, loads
from intentus_trio.transports.framing import request_frame


def sample_frame() -> TransportEnvelope:
    payload = {
        "document": "lorem ipsum dolor sit amet " * 10,
        "options": {"language": "en", "maxTokens": 256, "temperature": 0.2},
        "items": [{"id": i, "score": i / 10} for i in range(8)],
    }
    env = new_intent("summarize", payload, tags=["batch", "nightly"], target_agent="writer")
    return request_frame(env, TransportProtocol.HTTP, request_id="req-1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    n = 3_000 if parser.parse_args().quick else 30_000

    codec = FrameCodec()
    frame = sample_frame()
    data = codec.encode(frame)
    assert codec.decode(data) == frame
    body_size = len(orjson.dumps(frame_to_json(frame)["body"]))
    obj = orjson.loads(data)

    ours = sample_sync(lambda: codec.decode(codec.encode(frame)), n)
    raw = sample_sync(lambda: orjson.loads(orjson.dumps(obj)), n)
    enc = sample_sync(lambda: codec.encode(frame), n)
    dec = sample_sync(lambda: codec.decode(data), n)
    slow = sample_sync(lambda: frame_from_json(loads(data)), n)
    build = sample_sync(lambda: new_intent("summarize", {"k": 1}), n)

    med = statistics.median
    figures = {
        "frame_bytes": len(data),
        "body_bytes": body_size,
        "encode_decode": summary_us(ours),
        "encode": summary_us(enc),
        "decode": summary_us(dec),
        "python_decoder": summary_us(slow),
        "orjson_only": summary_us(raw),
        "ratio_to_orjson": round(med(ours) / med(raw), 2),
        "new_intent": summary_us(build),
    }
    print(f"frame {len(data)} B (body {body_size} B)")
    print(f"  codec encode+decode  median {figures['encode_decode']['median_us']:.2f} µs"
          "   (target <= 20)")
    print(f"  decode (fast path)   median {figures['decode']['median_us']:.2f} µs"
          f"   python decoder {figures['python_decoder']['median_us']:.2f} µs")
    print(f"  orjson only          median {figures['orjson_only']['median_us']:.2f} µs"
          f"   ratio {figures['ratio_to_orjson']}x")
    print(f"new_intent()           median {figures['new_intent']['median_us']:.2f} µs"
          "   (target <= 10)")
    emit("codec", figures)


if __name__ == "__main__":
    main()
