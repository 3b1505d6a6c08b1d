"""EMCL seal + open of a 1 KB body, against bare PyNaCl AEAD in the same run.

Figures (per seal + open, median and p99 of single-operation timings; variants interleaved
round by round so they see the same machine load):

* ``bare_pynacl``  nacl.bindings XChaCha20-Poly1305 encrypt + decrypt of 1024 bytes
                   (fresh nonce) — the baseline the target ratio refers to.
* ``raw_cffi``     the same two libsodium calls through PyNaCl's cffi module directly, into
                   reused buffers (fresh nonce): the floor of any AEAD seal + open from Python.
* ``emcl``         end to end with JSON: a 1 KB JSON object -> JSON bytes -> sealed
                   envelope object (``Emcl.seal_object``) -> wire JSON -> parsed ->
                   authenticated, decrypted, replay-checked (``Emcl.open_object``) -> parsed
                   JSON object. JSON through the protocol codec's ``dumps``/``loads`` (msgspec
                   both ways), the functions every transport uses.
* ``emcl_model``   the same through the ``EMCLEnvelope`` model and the protocol codec
                   (``Emcl.seal``/``open``, ``emcl_to_json``/``emcl_from_json``).
* ``emcl_frame``   the transport path: an IntentEnvelope (~1 KB JSON) in a frame ->
                   EmclProtector.seal -> FrameCodec.encode -> decode -> EmclProtector.open
                   (includes the protocol model codec).

Targets: ``emcl`` median <= 20 us and <= 2x ``bare_pynacl``. ``--steps`` times every step of
the ``emcl`` path alone (same run, interleaved), ``--profile`` adds cProfile. ``--quick``
runs a few seconds. The last line is one JSON object.
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
from intentus_trio.emcl.encoding import b64d, b64e
from intentus_trio.keys import generate_master_key
from intentus_trio.protocol.codec import FrameCodec, dumps, emcl_from_json, emcl_to_json, loads
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


def engines() -> tuple[Emcl, Emcl, Keyring]:
    ring = Keyring()
    ring.add_group_key("g1", generate_master_key())
    return Emcl(ring, "alice"), Emcl(ring, "bob"), ring


def build() -> dict[str, Callable[[], object]]:
    key, data = os.urandom(32), os.urandom(BODY_BYTES)
    encrypt, decrypt, null = _sodium.encrypt_into, _sodium.decrypt_into, _sodium.NULL
    sealed_buf, opened_buf = _sodium.Scratch(), _sodium.Scratch()
    urandom = os.urandom

    def bare_pynacl() -> object:
        nonce = urandom(24)
        sealed = nb.crypto_aead_xchacha20poly1305_ietf_encrypt(data, None, nonce, key)
        return nb.crypto_aead_xchacha20poly1305_ietf_decrypt(sealed, None, nonce, key)

    def raw_cffi() -> object:
        nonce = urandom(24)
        size = BODY_BYTES + 16
        out = sealed_buf.get(size)
        encrypt(out, null, data, BODY_BYTES, b"", 0, null, nonce, key)
        back = opened_buf.get(BODY_BYTES)
        if decrypt(back, null, null, out, size, b"", 0, nonce, key):
            raise AssertionError("tag")
        return back

    sender, receiver, ring = engines()
    group_key = ring.sealing_key()
    assert group_key is not None
    obj = one_kb_object()
    intent = MessageType.INTENT

    def emcl() -> object:
        wire = dumps(sender.seal_object(intent, dumps(obj), key=group_key, recipient="bob"))
        return loads(receiver.open_object(loads(wire)).body)

    def emcl_model() -> object:
        env = sender.seal(intent, dumps(obj), key=group_key, recipient="bob")
        wire = dumps(emcl_to_json(env))
        return loads(receiver.open(emcl_from_json(loads(wire))).body)

    client = EmclProtector(ring, "client", role=Role.CLIENT)
    server = EmclProtector(ring, "server", role=Role.SERVER)
    codec = FrameCodec()
    env = new_intent("summarise", {"text": "x" * 600})
    frame = request_frame(env, TransportProtocol.HTTP, request_id="1")

    def emcl_frame() -> object:
        return server.open(codec.decode(codec.encode(client.seal(frame))))

    assert emcl() == obj and emcl_model() == obj
    return {"bare_pynacl": bare_pynacl, "raw_cffi": raw_cffi, "emcl": emcl,
            "emcl_model": emcl_model, "emcl_frame": emcl_frame}


def steps() -> dict[str, Callable[[], object]]:
    """Each step of the ``emcl`` path alone, on the values the real path produces."""
    sender, receiver, ring = engines()
    key = ring.sealing_key()
    assert key is not None
    obj = one_kb_object()
    body = orjson.dumps(obj)
    sealed = sender.seal_object(MessageType.INTENT, body, key=key, recipient="bob")
    wire = orjson.dumps(sealed)
    ciphertext = b64d(sealed["ciphertext"])
    nonce = b64d(sealed["nonce"])
    assert ciphertext is not None and nonce is not None
    plaintext = os.urandom(16) + body
    aad_args = ("g1", "intent", "alice", "bob", sealed["timestamp"], None, {}, ())
    aad = sender._aad(*aad_args)
    out = _sodium.Scratch()
    encrypt, decrypt, null, view = (_sodium.encrypt_into, _sodium.decrypt_into, _sodium.NULL,
                                    _sodium.view)
    size = len(plaintext) + 16
    guard = receiver.replay
    now = time.time()
    counter = iter(range(10**9))

    def replay_check_record() -> object:
        n = next(counter).to_bytes(24, "big")
        guard.check("alice", n, now, now)
        guard.record("alice", n, now, now)
        return None

    def mac() -> object:
        state = key.mac_state.copy()
        state.update(aad + nonce + ciphertext[-16:])
        return state.digest()

    def decrypt_only() -> object:
        buf = out.get(size)
        decrypt(buf, null, null, ciphertext, size, aad, len(aad), nonce, key.enc_key)
        return view(buf, size - 16)[16:]

    return {
        "json_dumps_body": lambda: dumps(obj),
        "urandom_40": lambda: os.urandom(40),
        "aad_build": lambda: sender._aad(*aad_args),
        "aead_encrypt": lambda: encrypt(out.get(size), null, plaintext, len(plaintext), aad,
                                        len(aad), null, nonce, key.enc_key),
        "mac_blake2b": mac,
        "b64_encode_ct": lambda: b64e(ciphertext),
        "seal_object_total": lambda: sender.seal_object(MessageType.INTENT, body, key=key,
                                                        recipient="bob"),
        "json_dumps_env": lambda: dumps(sealed),
        "json_loads_env": lambda: loads(wire),
        "b64_decode_ct": lambda: b64d(sealed["ciphertext"]),
        "replay_check_record": replay_check_record,
        "aead_decrypt": decrypt_only,
        "json_loads_body": lambda: loads(body),
    }


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


def timer_overhead() -> float:
    clock = time.perf_counter_ns
    values = []
    for _ in range(20000):
        t0 = clock()
        values.append(clock() - t0)
    return statistics.median(values) / 1000


def sizes() -> dict[str, int]:
    sender, _, ring = engines()
    client = EmclProtector(ring, "client", role=Role.CLIENT)
    codec = FrameCodec()
    obj = one_kb_object()
    env = new_intent("summarise", obj)
    frame = request_frame(env, TransportProtocol.HTTP, request_id="1")
    plain, sealed = codec.encode(frame), codec.encode(client.seal(frame))
    key = ring.sealing_key()
    assert key is not None
    bare_env = orjson.dumps(sender.seal_object(MessageType.INTENT, orjson.dumps(obj), key=key,
                                               recipient="bob"))
    return {"body_bytes": BODY_BYTES, "envelope_bytes": len(bare_env),
            "envelope_overhead_bytes": len(bare_env) - BODY_BYTES,
            "frame_plain_bytes": len(plain), "frame_sealed_bytes": len(sealed),
            "frame_overhead_bytes": len(sealed) - len(plain)}


def report(samples: dict[str, list[float]], figures: dict[str, object], prefix: str = ""
           ) -> None:
    print(f"{'variant':<22} {'median us':>10} {'p99 us':>9}")
    for name, values in samples.items():
        values.sort()
        median = statistics.median(values)
        p99 = values[int(len(values) * 0.99)]
        figures[f"{prefix}{name}_median_us"] = round(median, 2)
        if not prefix:
            figures[f"{name}_p99_us"] = round(p99, 2)
        print(f"{name:<22} {median:>10.2f} {p99:>9.2f}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few seconds")
    parser.add_argument("--steps", action="store_true", help="time each emcl step alone")
    parser.add_argument("--profile", action="store_true", help="cProfile the emcl path")
    args = parser.parse_args(argv)
    funcs = build()
    rounds, per_round = (20, 200) if args.quick else (60, 500)
    measure(funcs, 2, 200)  # warm up
    gc.collect()
    gc.freeze()
    figures: dict[str, object] = {"benchmark": "emcl", "quick": args.quick,
                                  "load_avg_1min": round(os.getloadavg()[0], 2),
                                  "timer_overhead_us": round(timer_overhead(), 3)}
    report(measure(funcs, rounds, per_round), figures)
    bare = float(figures["bare_pynacl_median_us"])  # type: ignore[arg-type]
    emcl = float(figures["emcl_median_us"])  # type: ignore[arg-type]
    ratio = emcl / bare
    for name in ("raw_cffi", "emcl", "emcl_model", "emcl_frame"):
        figures[f"ratio_{name}_vs_bare"] = round(
            float(figures[f"{name}_median_us"]) / bare, 2)  # type: ignore[arg-type]
    figures["target_median_us"] = 20.0
    figures["target_ratio"] = 2.0
    figures["meets_targets"] = emcl <= 20.0 and ratio <= 2.0
    figures.update(sizes())
    print(f"emcl / bare PyNaCl AEAD: {ratio:.2f}x (target <= 2x); emcl median {emcl:.2f} us "
          f"(target <= 20 us); timer overhead {figures['timer_overhead_us']} us per sample")
    print(f"size: {figures['body_bytes']} B body -> {figures['envelope_bytes']} B envelope "
          f"(+{figures['envelope_overhead_bytes']} B); frame {figures['frame_plain_bytes']} -> "
          f"{figures['frame_sealed_bytes']} B (+{figures['frame_overhead_bytes']} B)")
    if args.steps:
        parts = steps()
        measure(parts, 2, 200)
        print("\nsteps of the emcl path, each alone:")
        report(measure(parts, rounds // 2, per_round), figures, prefix="step_")
    if args.profile:
        profiled = funcs["emcl"]
        profiler = cProfile.Profile()
        profiler.runcall(lambda: [profiled() for _ in range(20000)])
        pstats.Stats(profiler, stream=sys.stdout).sort_stats("tottime").print_stats(15)
    print(orjson.dumps(figures).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
