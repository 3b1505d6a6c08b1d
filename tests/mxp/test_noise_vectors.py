"""The Noise implementation against the public cacophony vectors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from intentus_trio.mxp.noise import (
    CipherState,
    HandshakeState,
    KeyPair,
    NoiseDecryptError,
    NoiseError,
)

VECTORS = (
    Path(__file__).parents[2] / ".." / "shared" / "vectors" / "noise" / "cacophony-subset.json"
)


def _load() -> list[dict[str, Any]]:
    if not VECTORS.exists():
        return []
    vectors: list[dict[str, Any]] = json.loads(VECTORS.read_text())["vectors"]
    return vectors


def _kp(hexkey: str | None) -> KeyPair | None:
    return KeyPair.from_private(bytes.fromhex(hexkey)) if hexkey else None


def _hx(value: str | None) -> bytes | None:
    return bytes.fromhex(value) if value else None


@pytest.mark.skipif(not VECTORS.exists(), reason=f"Noise vectors not found at {VECTORS}")
@pytest.mark.parametrize("vector", _load(), ids=lambda v: v["protocol_name"])
def test_vector(vector: dict[str, Any]) -> None:
    name = vector["protocol_name"]
    init = HandshakeState(
        name,
        initiator=True,
        prologue=bytes.fromhex(vector["init_prologue"]),
        static=_kp(vector.get("init_static")),
        remote_static=_hx(vector.get("init_remote_static")),
        ephemeral=_kp(vector["init_ephemeral"]),
    )
    resp = HandshakeState(
        name,
        initiator=False,
        prologue=bytes.fromhex(vector["resp_prologue"]),
        static=_kp(vector.get("resp_static")),
        remote_static=_hx(vector.get("resp_remote_static")),
        ephemeral=_kp(vector["resp_ephemeral"]),
    )
    messages = vector["messages"]
    index = 0
    while not (init.is_complete and resp.is_complete):
        writer, reader = (init, resp) if index % 2 == 0 else (resp, init)
        msg = messages[index]
        payload = bytes.fromhex(msg["payload"])
        wire = writer.write_message(payload)
        assert wire.hex() == msg["ciphertext"], f"message {index}"
        assert reader.read_message(wire) == payload
        index += 1
    assert init.handshake_hash == resp.handshake_hash
    if "handshake_hash" in vector:
        assert init.handshake_hash.hex() == vector["handshake_hash"]
    i_send, i_recv = init.split()
    r_recv, r_send = resp.split()
    for i, msg in enumerate(messages[index:], start=index):
        send, recv = (i_send, r_recv) if i % 2 == 0 else (r_send, i_recv)
        payload = bytes.fromhex(msg["payload"])
        wire = send.encrypt_with_ad(b"", payload)
        assert wire.hex() == msg["ciphertext"], f"transport message {i}"
        assert recv.decrypt_with_ad(b"", wire) == payload


def test_decrypt_failure_keeps_nonce() -> None:
    a, b = CipherState(bytes(32)), CipherState(bytes(32))
    ct = a.encrypt_with_ad(b"ad", b"hello")
    with pytest.raises(NoiseDecryptError):
        b.decrypt_with_ad(b"ad", ct[:-1] + bytes([ct[-1] ^ 1]))
    assert b.n == 0
    assert b.decrypt_with_ad(b"ad", ct) == b"hello"


def test_rekey_changes_key_in_step() -> None:
    a, b = CipherState(bytes(32)), CipherState(bytes(32))
    a.rekey()
    b.rekey()
    assert a.k == b.k != bytes(32)
    assert b.decrypt_with_ad(b"", a.encrypt_with_ad(b"", b"x")) == b"x"


def test_ik_wrong_responder_key_fails() -> None:
    server = KeyPair.generate()
    impostor = KeyPair.generate()
    init = HandshakeState.initiator_ik(KeyPair.generate(), server.public, b"p")
    resp = HandshakeState.responder_ik(impostor, b"p")
    with pytest.raises(NoiseError):
        resp.read_message(init.write_message(b"hi"))
    with pytest.raises(NoiseError):
        resp.read_message(b"")


def test_ik_prologue_mismatch_fails() -> None:
    server = KeyPair.generate()
    init = HandshakeState.initiator_ik(KeyPair.generate(), server.public, b"v1")
    resp = HandshakeState.responder_ik(server, b"v2")
    with pytest.raises(NoiseDecryptError):
        resp.read_message(init.write_message())


def test_ik_round_trip_reports_remote_static_and_turns() -> None:
    server, client = KeyPair.generate(), KeyPair.generate()
    init = HandshakeState.initiator_ik(client, server.public)
    resp = HandshakeState.responder_ik(server)
    with pytest.raises(NoiseError):
        resp.write_message()
    assert resp.read_message(init.write_message(b"a")) == b"a"
    assert resp.remote_static == client.public
    assert init.read_message(resp.write_message(b"b")) == b"b"
    assert init.is_complete and resp.is_complete
    with pytest.raises(NoiseError):
        init.write_message()


def test_low_order_point_rejected() -> None:
    resp = HandshakeState.responder_ik(KeyPair.generate())
    with pytest.raises(NoiseError):
        resp.read_message(bytes(32) + bytes(48) + bytes(16))
