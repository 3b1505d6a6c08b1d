"""Replays tests/emcl/vectors/emcl-v1.json, recomputing every value from the spec's formulas.

The checks below use PyNaCl's public API, hashlib and hmac directly — not the package's own
helpers — so they test the implementation against the written spec, not against itself.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import sys
from pathlib import Path
from typing import Any

import nacl.bindings as b
import pytest
from nacl.signing import VerifyKey

from intentus_trio.emcl import ChainSigner, Emcl, Keyring
from intentus_trio.emcl.failures import reason_of
from intentus_trio.keys import Ed25519KeyPair, X25519KeyPair
from intentus_trio.protocol.codec import emcl_from_json
from intentus_trio.protocol.errors import EMCLFailure

VECTORS_DIR = Path(__file__).parent / "vectors"
DATA: dict[str, Any] = json.loads((VECTORS_DIR / "emcl-v1.json").read_text())
NOW = 1_767_225_600.25


def u32(n: int) -> bytes:
    return n.to_bytes(4, "big")


def lp(x: bytes | str) -> bytes:
    data = x.encode() if isinstance(x, str) else x
    return u32(len(data)) + data


def hkdf32(salt: bytes, ikm: bytes, info: bytes) -> bytes:
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()


def b64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def spec_aad(v: dict[str, Any]) -> bytes:
    env = v["envelope"]
    out = b"intentus-trio emcl v1 aad\x00"
    for name in ("emclVersion", "keyId", "messageType", "sender", "recipient", "timestamp"):
        out += lp(env[name])
    neg = v["negotiation"]
    out += b"\x01" + lp(neg["minVersion"]) + lp(neg["maxVersion"])
    headers = sorted((k, val) for k, val in v["headers"].items()
                     if k not in ("emcl", "traceparent", "tracestate"))
    out += u32(len(headers))
    for k, val in headers:
        out += lp(k) + lp(val)
    out += u32(len(env["identityChain"]))
    for e in env["identityChain"]:
        out += lp(e["agentId"]) + lp(b64(e["publicKey"])) + lp(e["timestamp"]) + lp(
            b64(e["signature"]))
    return out


def keys_for(v: dict[str, Any]) -> tuple[bytes, bytes]:
    if v["mode"] == "group":
        master, kid = bytes.fromhex(v["masterKey"]), v["keyId"].encode()
        salt = b"intentus-trio emcl v1 group"
        return (hkdf32(salt, master, b"enc\x00" + kid), hkdf32(salt, master, b"mac\x00" + kid))
    shared = b.crypto_scalarmult(bytes.fromhex(v["receiverStaticPrivate"]),
                                 bytes.fromhex(v["senderStaticPublic"]))
    assert shared.hex() == v["sharedSecret"]
    assert shared == b.crypto_scalarmult(bytes.fromhex(v["senderStaticPrivate"]),
                                         bytes.fromhex(v["receiverStaticPublic"]))
    lo, hi = sorted((bytes.fromhex(v["senderStaticPublic"]),
                     bytes.fromhex(v["receiverStaticPublic"])))
    kid = "x." + hashlib.blake2b(b"intentus-trio emcl v1 pair key id" + lo + hi,
                                 digest_size=8).hexdigest()
    assert kid == v["keyId"]
    salt = b"intentus-trio emcl v1 pair"
    return hkdf32(salt, shared, b"enc\x00" + lo + hi), hkdf32(salt, shared, b"mac\x00" + lo + hi)


@pytest.mark.parametrize("v", DATA["vectors"], ids=lambda v: v["name"])
def test_vector_matches_the_spec(v: dict[str, Any]) -> None:
    enc_key, mac_key = keys_for(v)
    assert (enc_key.hex(), mac_key.hex()) == (v["encKey"], v["macKey"])
    env = v["envelope"]
    aad = spec_aad(v)
    assert aad.hex() == v["aad"]
    nonce, plaintext = bytes.fromhex(v["nonce"]), bytes.fromhex(v["plaintext"])
    assert b64(env["nonce"]) == nonce and len(nonce) == 24
    assert plaintext == bytes.fromhex(v["salt"]) + v["body"].encode()
    ciphertext = b.crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, aad, nonce, enc_key)
    assert ciphertext.hex() == v["ciphertext"] and b64(env["ciphertext"]) == ciphertext
    tag = ciphertext[-16:]
    assert tag.hex() == v["tag"]
    mac = hashlib.blake2b(aad + nonce + tag, key=mac_key, digest_size=32).digest()
    assert mac.hex() == v["mac"] and b64(env["hmac"]) == mac
    digest = hashlib.blake2b(plaintext, digest_size=32).digest()
    assert digest.hex() == v["bodyDigest"]
    link = bytes(32)
    for entry in env["identityChain"]:
        public, signature = b64(entry["publicKey"]), b64(entry["signature"])
        assert public.hex() == v["signingPublicKeys"][entry["agentId"]]
        message = (b"intentus-trio emcl v1 chain\x00" + link + digest + lp(entry["agentId"])
                   + lp(public) + lp(entry["timestamp"]))
        VerifyKey(public).verify(message, signature)
        link = hashlib.blake2b(lp(entry["agentId"]) + lp(public) + lp(entry["timestamp"])
                               + lp(signature), digest_size=32).digest()


def receiver(v: dict[str, Any]) -> Emcl:
    ring = Keyring(clock=lambda: NOW)
    if v["mode"] == "group":
        ring.add_group_key(v["keyId"], bytes.fromhex(v["masterKey"]))
    else:
        ring.set_static_key(X25519KeyPair.from_private(bytes.fromhex(v["receiverStaticPrivate"])))
        ring.add_peer(v["envelope"]["sender"], bytes.fromhex(v["senderStaticPublic"]))
    signer = None
    return Emcl(ring, v["receiver"], signer=signer)


def open_vector(v: dict[str, Any], envelope: dict[str, Any],
                headers: dict[str, str] | None = None) -> bytes:
    neg = v["negotiation"]
    return receiver(v).open(emcl_from_json(envelope), headers=v["headers"] if headers is None
                            else headers,
                            negotiation=(neg["minVersion"], neg["maxVersion"])).body


@pytest.mark.parametrize("v", DATA["vectors"], ids=lambda v: v["name"])
def test_implementation_opens_vector(v: dict[str, Any]) -> None:
    assert open_vector(v, v["envelope"]) == v["body"].encode()


@pytest.mark.parametrize("case", DATA["invalid"], ids=lambda c: c["name"])
def test_invalid_vectors_are_refused(case: dict[str, Any]) -> None:
    v = DATA["vectors"][case["vector"]]
    with pytest.raises(EMCLFailure) as info:
        open_vector(v, case["envelope"], case.get("headers"))
    assert reason_of(info.value) == case["reason"]


def test_reply_vector_is_bound_to_its_request() -> None:
    by_index = DATA["vectors"]
    for v in by_index:
        if "replyTo" in v:
            request = by_index[v["replyTo"]]["envelope"]
            assert v["headers"]["emclReplyTo"] == request["hmac"]
            assert v["envelope"]["recipient"] == request["sender"]
            assert v["envelope"]["keyId"] == request["keyId"]


def test_vectors_file_is_reproducible() -> None:
    sys.path.insert(0, str(VECTORS_DIR))
    try:
        import make_vectors  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(VECTORS_DIR))
    assert make_vectors.render() == (VECTORS_DIR / "emcl-v1.json").read_bytes()


def test_chain_signer_is_deterministic() -> None:
    key = Ed25519KeyPair.from_seed(bytes(32))
    signer = ChainSigner("a", key)
    one = signer.entry((), bytes(32), "2026-01-01T00:00:00.000Z")
    assert one == signer.entry((), bytes(32), "2026-01-01T00:00:00.000Z")
