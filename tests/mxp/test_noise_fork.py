"""HandshakeState.fork: a trial copy shares nothing mutable with the original."""

from __future__ import annotations

import pytest

from intentus_trio.mxp.noise import HandshakeState, KeyPair, NoiseError


def test_a_failed_trial_on_a_fork_leaves_the_original_usable() -> None:
    server_key = KeyPair.generate()
    client = HandshakeState.initiator_ik(KeyPair.generate(), server_key.public)
    server = HandshakeState.responder_ik(server_key)
    server.read_message(client.write_message(b"hello"))
    reply = server.write_message(b"world")

    trial = client.fork()
    with pytest.raises(NoiseError):
        trial.read_message(reply[:-1] + bytes([reply[-1] ^ 1]))  # tampered: the fork fails
    assert client.fork().read_message(reply) == b"world"  # a fresh fork still succeeds
    assert client.read_message(reply) == b"world"  # and so does the original
    assert client.split()[0].k == server.split()[0].k
