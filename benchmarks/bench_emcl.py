"""EMCL seal + open of a 1 KB body, against bare PyNaCl AEAD in the same run.

Figures (per seal + open, median and p99 of single-operation timings; variants interleaved
so they see the same machine load):

* ``bare_pynacl``  nacl.bindings XChaCha20-Poly1305 encrypt + decrypt of 1024 bytes
                   (fresh nonce) — the baseline the target ratio refers to.
* ``raw_sodium``   the same through ``intentus_trio.emcl._sodium`` (libsodium via cffi).
* ``emcl``         end to end with JSON: a 1 KB JSON object -> JSON bytes -> sealed
                   EMCLEnvelope -> wire JSON -> parsed envelope -> authenticated, decrypted,
                   replay-checked -> parsed JSON object.
* ``emcl_frame``   the transport path: an IntentEnvelope (~1 KB JSON) in a frame ->
                   EmclProtector.seal -> FrameCodec.encode -> decode -> EmclProtector.open
                   (includes the protocol model codec).

Targets: ``emcl`` median <= 20 us and <= 2x ``bare_pynacl``. ``--quick`` runs a few seconds,
``--profile`` prints where the ``emcl`` time goes. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import os
import pstats
import statistics
import sys
import time
from collections.abc import Callable

import nacl.bindings as nb
import orjson

from intentus_trio.emcl import Emcl, EmclProtector, Keyring, Role, _sodium
from intentus_trio.keys import generate_master_key
from intentus_trio.protocol.codec import FrameCodec, emcl_from_json, emcl_to_json
from intentus_trio.protocol.enums import MessageType, TransportProtocol
from intentus_trio.protocol.factory import new_intent
from intentus_trio.transports.framing import request_frame

BODY_BYTES = 1024


def one_kb_object() -> dict[str, object]:
    obj: dict[str, object] = {"task": "summarise", "lang": "en", "text": ""}
    filler = BODY_BYTES - len(orjson.dumps(obj))
    obj["text"] = "x" * filler
    assert len(orjson.dumps(obj)) == BODY_BYTES
    return obj


def build() -> dict[str, Callable[[], object]]:
    key, data = os.urandom(32), os.urandom(BODY_BYTES)

    def bare_pynacl() -> object:
        nonce = os.urandom(24)
        sealed = nb.crypto_aead_xchacha20poly1305_ietf_encrypt(data, None, nonce, key)
        return nb.crypto_aead_xchacha20poly1305_ietf_decrypt(sealed, None, nonce, key)

    def raw_sodium() -> object:
        nonce = os.urandom(24)
        return _sodium.aead_decrypt(_sodium.aead_encrypt(data, b"", nonce, key), b"", nonce, key)

    ring = Keyring()
    ring.add_group_key("g1", generate_master_key())
    sender, receiver = Emcl(ring, "alice"), Emcl(ring, "bob")
    group_key = ring.sealing_key()
    assert group_key is not None
    obj = one_kb_object()
    dumps, loads = orjson.dumps, orjson.loads
    intent = MessageType.INTENT

    def emcl() -> object:
        env = sender.seal(intent, dumps(obj), key=group_key, recipient="bob")
        wire = dumps(emcl_to_json(env))
        opened = receiver.open(emcl_from_json(loads(wire)))
        return loads(opened.body)

    client = EmclProtector(ring, "client", role=Role.CLIENT)
    server = EmclProtector(ring, "server", role=Role.SERVER)
    codec = FrameCodec()
    env = new_intent("summarise", {"text": "x" * 600})
    frame = request_frame(env, TransportProtocol.HTTP, request_id="1")

    def emcl_frame() -> object:
        return server.open(codec.decode(codec.encode(client.seal(frame))))

    assert emcl() == obj
    return {"bare_pynacl": bare_pynacl, "raw_sodium": raw_sodium, "emcl": emcl,
            "emcl_frame": emcl_frame}


def measure(funcs: dict[str, Callable[[], object]], rounds: int, per_round: int
            ) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {name: [] for name in funcs}
    clock = time.perf_counter_ns
    for _ in range(rounds):
        for name, func in funcs.items():
            out = samples[name]
            for _ in range(per_round):
                t0 = clock()
                func()
                out.append((clock() - t0) / 1000)
    return samples


def sizes() -> dict[str, int]:
    ring = Keyring()
    ring.add_group_key("g1", generate_master_key())
    client = EmclProtector(ring, "client", role=Role.CLIENT)
    codec = FrameCodec()
    obj = one_kb_object()
    env = new_intent("summarise", obj)
    frame = request_frame(env, TransportProtocol.HTTP, request_id="1")
    plain, sealed = codec.encode(frame), codec.encode(client.seal(frame))
    engine = Emcl(ring, "alice")
    key = ring.sealing_key()
    assert key is not None
    bare_env = orjson.dumps(emcl_to_json(engine.seal(MessageType.INTENT, orjson.dumps(obj),
                                                     key=key, recipient="bob")))
    return {"body_bytes": BODY_BYTES, "envelope_bytes": len(bare_env),
            "envelope_overhead_bytes": len(bare_env) - BODY_BYTES,
            "frame_plain_bytes": len(plain), "frame_sealed_bytes": len(sealed),
            "frame_overhead_bytes": len(sealed) - len(plain)}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few seconds")
    parser.add_argument("--profile", action="store_true", help="profile the emcl path")
    args = parser.parse_args(argv)
    funcs = build()
    rounds, per_round = (20, 200) if args.quick else (60, 500)
    measure(funcs, 2, 200)  # warm up
    gc.collect()
    gc.freeze()
    samples = measure(funcs, rounds, per_round)
    figures: dict[str, object] = {"benchmark": "emcl", "quick": args.quick}
    print(f"{'variant':<12} {'median us':>10} {'p99 us':>9}")
    for name, values in samples.items():
        values.sort()
        median = statistics.median(values)
        p99 = values[int(len(values) * 0.99)]
        figures[f"{name}_median_us"] = round(median, 2)
        figures[f"{name}_p99_us"] = round(p99, 2)
        print(f"{name:<12} {median:>10.2f} {p99:>9.2f}")
    bare = figures["bare_pynacl_median_us"]
    ratio = float(figures["emcl_median_us"]) / float(bare)  # type: ignore[arg-type]
    figures["ratio_emcl_vs_bare"] = round(ratio, 2)
    figures["ratio_emcl_frame_vs_bare"] = round(
        float(figures["emcl_frame_median_us"]) / float(bare), 2)  # type: ignore[arg-type]
    figures["target_median_us"] = 20.0
    figures["target_ratio"] = 2.0
    figures["meets_targets"] = bool(float(figures["emcl_median_us"]) <= 20.0  # type: ignore[arg-type]
                                    and ratio <= 2.0)
    figures.update(sizes())
    print(f"emcl / bare PyNaCl AEAD: {ratio:.2f}x (target <= 2x; median target <= 20 us)")
    print(f"size: {figures['body_bytes']} B body -> {figures['envelope_bytes']} B envelope "
          f"(+{figures['envelope_overhead_bytes']} B); frame {figures['frame_plain_bytes']} -> "
          f"{figures['frame_sealed_bytes']} B (+{figures['frame_overhead_bytes']} B)")
    if args.profile:
        emcl = funcs["emcl"]
        profiler = cProfile.Profile()
        profiler.runcall(lambda: [emcl() for _ in range(20000)])
        pstats.Stats(profiler, stream=sys.stdout).sort_stats("tottime").print_stats(15)
    print(orjson.dumps(figures).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
