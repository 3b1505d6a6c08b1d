"""Interop with the independent ``noiseprotocol`` package (a test-only peer)."""

from __future__ import annotations

from typing import Any

import pytest

from intentus_trio.mxp.noise import MXP_PROTOCOL_NAME, HandshakeState, KeyPair

noise_connection = pytest.importorskip("noise.connection", reason="noiseprotocol not installed")

PROLOGUE = b"interop-prologue"


def _their_side(initiator: bool, static: KeyPair, remote: bytes | None) -> Any:
    conn = noise_connection.NoiseConnection.from_name(MXP_PROTOCOL_NAME.encode())
    if initiator:
        conn.set_as_initiator()
    else:
        conn.set_as_responder()
    conn.set_prologue(PROLOGUE)
    conn.set_keypair_from_private_bytes(noise_connection.Keypair.STATIC, static.private)
    if remote is not None:
        conn.set_keypair_from_public_bytes(noise_connection.Keypair.REMOTE_STATIC, remote)
    conn.start_handshake()
    return conn


def test_our_initiator_their_responder() -> None:
    ours, theirs = KeyPair.generate(), KeyPair.generate()
    init = HandshakeState.initiator_ik(ours, theirs.public, PROLOGUE)
    resp = _their_side(False, theirs, None)
    assert bytes(resp.read_message(init.write_message(b"hello"))) == b"hello"
    assert init.read_message(bytes(resp.write_message(b"world"))) == b"world"
    assert init.is_complete and resp.handshake_finished
    assert init.handshake_hash == resp.get_handshake_hash()
    send, recv = init.split()
    for i in range(5):
        msg = b"to-them %d" % i
        assert resp.decrypt(send.encrypt_with_ad(b"", msg)) == msg
        back = b"to-us %d" % i
        assert recv.decrypt_with_ad(b"", resp.encrypt(back)) == back


def test_their_initiator_our_responder() -> None:
    ours, theirs = KeyPair.generate(), KeyPair.generate()
    init = _their_side(True, theirs, ours.public)
    resp = HandshakeState.responder_ik(ours, PROLOGUE)
    assert resp.read_message(bytes(init.write_message(b"ping"))) == b"ping"
    assert resp.remote_static == theirs.public
    assert bytes(init.read_message(resp.write_message(b"pong"))) == b"pong"
    assert resp.is_complete and init.handshake_finished
    assert resp.handshake_hash == init.get_handshake_hash()
    recv, send = resp.split()
    for i in range(5):
        msg = b"from-them %d" % i
        assert recv.decrypt_with_ad(b"", init.encrypt(msg)) == msg
        back = b"from-us %d" % i
        assert init.decrypt(send.encrypt_with_ad(b"", back)) == back
