"""IK's static-static DH is computed once per pair of static keys and then remembered."""

from __future__ import annotations

import pytest

from intentus_trio.mxp import noise
from intentus_trio.mxp.noise import HandshakeState, KeyPair


def handshake(client_key: KeyPair, server_key: KeyPair) -> tuple[bytes, bytes]:
    client = HandshakeState.initiator_ik(client_key, server_key.public)
    server = HandshakeState.responder_ik(server_key)
    server.read_message(client.write_message(b"hello"))
    client.read_message(server.write_message(b"world"))
    return client.split()[0].k, server.split()[0].k


def test_the_second_handshake_between_two_static_keys_skips_one_dh_per_side(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[bytes] = []
    real = noise.dh

    def counting(keypair: KeyPair, public: bytes) -> bytes:
        calls.append(public)
        return real(keypair, public)

    monkeypatch.setattr(noise, "dh", counting)
    client_key, server_key = KeyPair.generate(), KeyPair.generate()
    first = handshake(client_key, server_key)
    first_calls, calls[:] = len(calls), []
    second = handshake(client_key, server_key)
    assert first_calls == 8 and len(calls) == 6  # es, ee, se per side; ss remembered
    assert first[0] == first[1] and second[0] == second[1] and first[0] != second[0]


def test_a_key_pair_whose_halves_do_not_match_finds_nothing_remembered() -> None:
    client_key, server_key = KeyPair.generate(), KeyPair.generate()
    handshake(client_key, server_key)
    impostor = KeyPair(private=KeyPair.generate().private, public=client_key.public)
    client = HandshakeState.initiator_ik(impostor, server_key.public)
    server = HandshakeState.responder_ik(server_key)
    with pytest.raises(noise.NoiseError):
        server.read_message(client.write_message(b"hello"))


def test_the_memory_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(noise, "STATIC_SHARED_LIMIT", 4)
    monkeypatch.setattr(noise, "_STATIC_SHARED", {})
    server_key = KeyPair.generate()
    for _ in range(10):
        handshake(KeyPair.generate(), server_key)
    assert len(noise._STATIC_SHARED) == 4
