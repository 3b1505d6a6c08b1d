"""Frame codec: a TransportEnvelope with a ~1 KB IntentEnvelope body, encode + decode.

Baselines, same run: orjson alone on the same JSON object (the floor: parsing and
serialising without building or validating any model object), and a cattrs converter
producing the same model (the generated alternative). ``decode`` is the msgspec fast path
every valid frame takes; ``python_decoder`` times the hand-written decoder that decides the
frames the fast path declines. Also times building a new IntentEnvelope (fresh ids and
timestamps).

    python benchmarks/bench_codec.py [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

import cattrs
import orjson

sys.path.insert(0, str(Path(__file__).parent))

from _timing import emit, sample_sync, summary_us

from intentus_trio import (
    FrameCodec,
    IntentEnvelope,
    MessageType,
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


def cattrs_codec() -> tuple[Any, Any]:
    """A cattrs converter that reads and writes the same camelCase JSON as the codec."""
    from attrs import fields, has

    conv = cattrs.Converter(detailed_validation=False)

    def camel(name: str) -> str:
        head, *rest = name.split("_")
        return head + "".join(p.title() for p in rest)

    from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

    for cls in (IntentEnvelope, *{a.type for a in fields(IntentEnvelope) if has(a.type)}):
        renames = {a.name: override(rename=camel(a.name)) for a in fields(cls)}
        conv.register_structure_hook(cls, make_dict_structure_fn(cls, conv, **renames))
        conv.register_unstructure_hook(cls, make_dict_unstructure_fn(cls, conv, **renames))

    def encode(frame: TransportEnvelope) -> bytes:
        obj = {"protocol": frame.protocol.value, "messageType": frame.message_type.value,
               "headers": frame.headers, "body": conv.unstructure(frame.body)}
        return orjson.dumps(obj)

    def decode(data: bytes) -> TransportEnvelope:
        obj = orjson.loads(data)
        return TransportEnvelope(TransportProtocol(obj["protocol"]),
                                 MessageType(obj["messageType"]),
                                 conv.structure(obj["body"], IntentEnvelope), obj["headers"])

    return encode, decode


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
    c_encode, c_decode = cattrs_codec()
    assert c_decode(c_encode(frame)).body == frame.body

    ours = sample_sync(lambda: codec.decode(codec.encode(frame)), n)
    raw = sample_sync(lambda: orjson.loads(orjson.dumps(obj)), n)
    cat = sample_sync(lambda: c_decode(c_encode(frame)), n)
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
        "cattrs_converter": summary_us(cat),
        "ratio_to_orjson": round(med(ours) / med(raw), 2),
        "ratio_to_cattrs": round(med(ours) / med(cat), 2),
        "new_intent": summary_us(build),
    }
    print(f"frame {len(data)} B (body {body_size} B)")
    print(f"  codec encode+decode  median {figures['encode_decode']['median_us']:.2f} µs"
          "   (target <= 20)")
    print(f"  decode (fast path)   median {figures['decode']['median_us']:.2f} µs"
          f"   python decoder {figures['python_decoder']['median_us']:.2f} µs")
    print(f"  orjson only          median {figures['orjson_only']['median_us']:.2f} µs"
          f"   ratio {figures['ratio_to_orjson']}x")
    print(f"  cattrs converter     median {figures['cattrs_converter']['median_us']:.2f} µs"
          f"   ours/cattrs {figures['ratio_to_cattrs']}x")
    print(f"new_intent()           median {figures['new_intent']['median_us']:.2f} µs"
          "   (target <= 10)")
    emit("codec", figures)


if __name__ == "__main__":
    main()
