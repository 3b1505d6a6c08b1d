"""Regenerate ``emcl-v1.json``: EMCL v1 test vectors from fixed keys, nonces, salts and times.

    python tests/emcl/vectors/make_vectors.py          # rewrite the file
    python tests/emcl/vectors/make_vectors.py --check  # exit 1 if the file is out of date

The output is a pure function of the constants below, so running it twice gives the same
bytes. Every intermediate value (derived keys, AAD, plaintext, MAC) is included so another
implementation can find where it differs.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
from msgspec.structs import replace

from intentus_trio.emcl import ChainSigner, Emcl, Keyring, derive_pair_key
from intentus_trio.emcl.encoding import b64d, b64e
from intentus_trio.emcl.envelope import EMCL_VERSION, REPLY_TO_HEADER, bound_headers, build_aad
from intentus_trio.keys import Ed25519KeyPair, X25519KeyPair, x25519
from intentus_trio.protocol.codec import emcl_to_json
from intentus_trio.protocol.enums import MessageType
from intentus_trio.protocol.models import EMCLEnvelope

OUT = Path(__file__).with_name("emcl-v1.json")
NOW = 1_767_225_600.25  # 2026-01-01T00:00:00.250Z


def fixed(label: str, size: int = 32) -> bytes:
    """Deterministic bytes: BLAKE2b of a label (stands in for random keys and nonces)."""
    return hashlib.blake2b(label.encode(), digest_size=size).digest()


def fixed_random(label: str) -> Callable[[int], bytes]:
    """A ``random`` source for the engine that returns fixed bytes per call."""
    counter = iter(range(1_000))

    def random(n: int) -> bytes:
        return fixed(f"{label}/{next(counter)}", n)

    return random


HEADERS = {"contentType": "application/json", "traceId": "7d3b1a52-2c39-4c5e-9a0e-5b1f3b0c9e11",
           "requestId": "42", "emcl": "1.0", "traceparent": "00-unbound-hop-header-01"}
NEGOTIATION = ("1.0", "1.0")
INTENT_BODY = orjson.dumps({
    "version": "1.0", "intent": {"name": "summarise", "version": "1.0"},
    "payload": {"text": "The quick brown fox jumps over the lazy dog."},
    "context": {"sourceAgent": "alice", "timestamp": "2026-01-01T00:00:00.000Z",
                "priority": "normal", "tags": []},
    "metadata": {"requestId": "0c7f6d0e-6a3e-4d43-9b0a-8d7f2f0b1c55", "source": "alice",
                 "createdAt": "2026-01-01T00:00:00.000Z",
                 "traceId": "7d3b1a52-2c39-4c5e-9a0e-5b1f3b0c9e11", "identityChain": []},
    "routing": {"strategy": "direct", "targetAgent": None, "fallbackAgents": []},
    "routingMetadata": {"decisionPath": [], "retries": 0},
})
RESPONSE_BODY = orjson.dumps({
    "version": "1.0", "status": "success", "payload": {"summary": "A fox jumps."},
    "metadata": {"agent": "bob", "traceId": "7d3b1a52-2c39-4c5e-9a0e-5b1f3b0c9e11"},
    "error": None,
})


def clock() -> float:
    return NOW


def details(env: EMCLEnvelope, enc_key: bytes, mac_key: bytes, headers: dict[str, str],
            body: bytes) -> dict[str, Any]:
    """Every intermediate value of one sealed envelope."""
    raw_chain = [(e.agent_id, b64d(e.public_key), e.timestamp, b64d(e.signature))
                 for e in env.identity_chain]
    assert env.key_id and env.sender is not None and env.recipient is not None
    assert env.timestamp and env.message_type
    aad = build_aad(EMCL_VERSION, env.key_id, env.message_type.value, env.sender,
                    env.recipient, env.timestamp, NEGOTIATION, bound_headers(headers),
                    raw_chain)  # type: ignore[arg-type]
    nonce = b64d(env.nonce)
    ciphertext = b64d(env.ciphertext)
    assert nonce is not None and ciphertext is not None
    import nacl.bindings as b

    plaintext = b.crypto_aead_xchacha20poly1305_ietf_decrypt(ciphertext, aad, nonce, enc_key)
    assert plaintext[16:] == body
    mac = hashlib.blake2b(aad + nonce + ciphertext[-16:], key=mac_key, digest_size=32).digest()
    assert b64d(env.hmac) == mac
    return {
        "encKey": enc_key.hex(), "macKey": mac_key.hex(),
        "headers": headers, "boundHeaders": [list(p) for p in bound_headers(headers)],
        "negotiation": {"minVersion": NEGOTIATION[0], "maxVersion": NEGOTIATION[1]},
        "body": body.decode(), "salt": plaintext[:16].hex(), "plaintext": plaintext.hex(),
        "nonce": nonce.hex(), "aad": aad.hex(), "ciphertext": ciphertext.hex(),
        "tag": ciphertext[-16:].hex(), "mac": mac.hex(),
        "bodyDigest": hashlib.blake2b(plaintext, digest_size=32).hexdigest(),
        "envelope": emcl_to_json(env),
    }


def invalid_cases(env: EMCLEnvelope) -> Iterator[tuple[str, EMCLEnvelope, str]]:
    ct = b64d(env.ciphertext) or b""
    yield ("ciphertext bit flipped", replace(
        env, ciphertext=b64e(bytes([ct[0] ^ 1]) + ct[1:])), "tampered")
    yield ("recipient changed", replace(env, recipient="carol"), "tampered")
    yield ("timestamp changed", replace(env, timestamp="2026-01-01T00:00:00.251Z"),
           "tampered")
    yield ("messageType changed", replace(env, message_type=MessageType.EVENT), "tampered")
    yield ("unknown key id", replace(env, key_id="g9"), "unknown_key")
    yield ("base64url alphabet", replace(
        env, nonce=env.nonce.replace("+", "-").replace("/", "_") if "+" in env.nonce
        or "/" in env.nonce else "-" + env.nonce[1:]), "malformed")
    yield ("padding removed", replace(env, hmac=env.hmac.rstrip("=")), "malformed")
    yield ("tag bit flipped", replace(
        env, ciphertext=b64e(ct[:-1] + bytes([ct[-1] ^ 1]))), "tampered")
    yield ("wrong version", replace(env, emcl_version="2.0"), "malformed")


def build() -> dict[str, Any]:
    vectors: list[dict[str, Any]] = []
    invalid: list[dict[str, Any]] = []

    # 1. Group mode: alice -> bob, an intent.
    master = fixed("group master key")
    ring = Keyring(clock=clock)
    key = ring.add_group_key("g1", master)
    alice = Emcl(ring, "alice", random=fixed_random("group"))
    env = alice.seal(MessageType.INTENT, INTENT_BODY, key=key, recipient="bob",
                     headers=HEADERS, negotiation=NEGOTIATION)
    vectors.append({"name": "group key, intent alice -> bob", "mode": "group",
                    "masterKey": master.hex(), "keyId": "g1", "receiver": "bob",
                    **details(env, key.enc_key, key.mac_key, HEADERS, INTENT_BODY)})
    for name, bad, reason in invalid_cases(env):
        invalid.append({"name": name, "vector": 0, "envelope": emcl_to_json(bad),
                        "reason": reason})

    # 2. Pair mode: alice -> bob, an intent, and 3. bob's response bound to it.
    a_static = X25519KeyPair.from_private(fixed("alice x25519"))
    b_static = X25519KeyPair.from_private(fixed("bob x25519"))
    ring_a = Keyring(clock=clock)
    ring_a.set_static_key(a_static)
    ring_a.add_peer("bob", b_static.public)
    ring_b = Keyring(clock=clock)
    ring_b.set_static_key(b_static)
    ring_b.add_peer("alice", a_static.public)
    pair_key = ring_b.pair_key("alice")
    alice_key = ring_a.pair_key("bob")
    assert pair_key is not None and alice_key is not None
    assert pair_key.key_id == alice_key.key_id
    assert pair_key.enc_key == derive_pair_key(a_static, b_static.public).enc_key
    pair_statics = {"senderStaticPrivate": a_static.private.hex(),
                    "senderStaticPublic": a_static.public.hex(),
                    "receiverStaticPrivate": b_static.private.hex(),
                    "receiverStaticPublic": b_static.public.hex(),
                    "sharedSecret": x25519(a_static.private, b_static.public).hex()}
    request_headers = {"contentType": "application/json", "requestId": "43",
                       "traceId": "7d3b1a52-2c39-4c5e-9a0e-5b1f3b0c9e11", "emcl": "1.0"}
    alice_pair = Emcl(ring_a, "alice", random=fixed_random("pair-request"))
    request = alice_pair.seal(MessageType.INTENT, INTENT_BODY, key=alice_key, recipient="bob",
                              headers=request_headers, negotiation=NEGOTIATION)
    vectors.append({
        "name": "pair key, intent alice -> bob", "mode": "pair", **pair_statics,
        "keyId": pair_key.key_id, "receiver": "bob",
        **details(request, alice_key.enc_key, alice_key.mac_key, request_headers, INTENT_BODY),
    })
    bob = Emcl(ring_b, "bob", random=fixed_random("pair"))
    headers = {"contentType": "application/json", "protocolVersion": "1.0", "requestId": "43",
               "traceId": "7d3b1a52-2c39-4c5e-9a0e-5b1f3b0c9e11", "emcl": "1.0",
               REPLY_TO_HEADER: request.hmac}
    env2 = bob.seal(MessageType.RESPONSE, RESPONSE_BODY, key=pair_key, recipient="alice",
                    headers=headers, negotiation=NEGOTIATION)
    vectors.append({
        "name": "pair key, response bob -> alice in reply to vector 1", "mode": "pair",
        "senderStaticPrivate": b_static.private.hex(),
        "senderStaticPublic": b_static.public.hex(),
        "receiverStaticPrivate": a_static.private.hex(),
        "receiverStaticPublic": a_static.public.hex(),
        "sharedSecret": x25519(a_static.private, b_static.public).hex(),
        "keyId": pair_key.key_id, "receiver": "alice", "replyTo": 1,
        **details(env2, pair_key.enc_key, pair_key.mac_key, headers, RESPONSE_BODY),
    })
    invalid.append({"name": "bound to another request", "vector": 2,
                    "envelope": emcl_to_json(env2),
                    "headers": {**headers, REPLY_TO_HEADER: env.hmac}, "reason": "tampered"})
    invalid.append({"name": "reply binding removed", "vector": 2,
                    "envelope": emcl_to_json(env2),
                    "headers": {k: v for k, v in headers.items() if k != REPLY_TO_HEADER},
                    "reason": "tampered"})

    # 3. Identity chain: origin alice seals to gateway bob, bob forwards to carol.
    sign_a = Ed25519KeyPair.from_seed(fixed("alice ed25519"))
    sign_b = Ed25519KeyPair.from_seed(fixed("bob ed25519"))
    chain_ring = Keyring(clock=clock)
    hop_key = chain_ring.add_group_key("g1", master)
    origin = Emcl(chain_ring, "alice", signer=ChainSigner("alice", sign_a),
                  random=fixed_random("chain-origin"))
    gateway = Emcl(chain_ring, "bob", signer=ChainSigner("bob", sign_b),
                   random=fixed_random("chain-gateway"))
    first = origin.seal(MessageType.INTENT, INTENT_BODY, key=hop_key, recipient="bob",
                        headers={}, negotiation=NEGOTIATION)
    opened = gateway.open(first, negotiation=NEGOTIATION)
    forwarded = gateway.forward(opened, key=hop_key, recipient="carol", headers={},
                                negotiation=NEGOTIATION)
    vectors.append({
        "name": "identity chain alice -> bob -> carol (group key)", "mode": "group",
        "masterKey": master.hex(), "keyId": "g1", "receiver": "carol",
        "signingSeeds": {"alice": sign_a.seed.hex(), "bob": sign_b.seed.hex()},
        "signingPublicKeys": {"alice": sign_a.public.hex(), "bob": sign_b.public.hex()},
        **details(forwarded, hop_key.enc_key, hop_key.mac_key, {}, INTENT_BODY),
    })
    return {
        "description": "EMCL v1 test vectors (docs/emcl-spec.md). Binary values are hex here; "
                       "inside 'envelope' they are base64 as on the wire. "
                       "'mac' is keyed BLAKE2b-256 over aad || nonce || tag. Open each vector "
                       "with the receiver's clock at 'now'.",
        "emclVersion": EMCL_VERSION,
        "now": "2026-01-01T00:00:00.250Z",
        "windowSeconds": 120,
        "vectors": vectors,
        "invalid": invalid,
    }


def render() -> bytes:
    return orjson.dumps(build(), option=orjson.OPT_INDENT_2) + b"\n"


def main(argv: list[str]) -> int:
    data = render()
    if "--check" in argv:
        if not OUT.exists() or OUT.read_bytes() != data:
            print(f"{OUT} is out of date; run {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    OUT.write_bytes(data)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
