"""Group keys, pair keys from X25519, rotation with a grace period, retirement."""

from __future__ import annotations

import pytest

from intentus_trio.emcl import Emcl, Keyring, derive_group_key, derive_pair_key, pair_key_id
from intentus_trio.emcl.failures import reason_of
from intentus_trio.keys import X25519KeyPair, generate_master_key
from intentus_trio.protocol.enums import MessageType
from intentus_trio.protocol.errors import EMCLFailure

from .conftest import FakeClock


def roundtrip(a: Emcl, b: Emcl, peer: str | None = None) -> bytes:
    key = a.keyring.sealing_key(peer)
    assert key is not None
    env = a.seal(MessageType.INTENT, b"{}", key=key, recipient=peer or "")
    return b.open(env).body


def reason(a: Emcl, b: Emcl, peer: str | None = None) -> str | None:
    key = a.keyring.sealing_key(peer)
    assert key is not None
    env = a.seal(MessageType.INTENT, b"{}", key=key, recipient=peer or "")
    with pytest.raises(EMCLFailure) as info:
        b.open(env)
    return reason_of(info.value)


def test_group_derivation_is_deterministic_and_separated() -> None:
    master = generate_master_key()
    a, b = derive_group_key("g1", master), derive_group_key("g1", master)
    assert (a.enc_key, a.mac_key) == (b.enc_key, b.mac_key)
    assert a.enc_key != a.mac_key
    c = derive_group_key("g2", master)
    assert c.enc_key != a.enc_key  # the key id is bound into the derivation
    with pytest.raises(ValueError):
        derive_group_key("g1", b"too short")
    with pytest.raises(ValueError):
        derive_group_key("bad id!", master)


def test_pair_keys_agree_without_a_shared_secret(clock: FakeClock) -> None:
    a, b = X25519KeyPair.generate(), X25519KeyPair.generate()
    ka, kb = derive_pair_key(a, b.public), derive_pair_key(b, a.public)
    assert ka.key_id == kb.key_id == pair_key_id(a.public, b.public)
    assert (ka.enc_key, ka.mac_key) == (kb.enc_key, kb.mac_key)
    ring_a, ring_b = Keyring(clock=clock), Keyring(clock=clock)
    ring_a.set_static_key(a)
    ring_a.add_peer("bob", b.public)
    ring_b.set_static_key(b)
    ring_b.add_peer("alice", a.public)
    alice, bob = Emcl(ring_a, "alice"), Emcl(ring_b, "bob")
    assert roundtrip(alice, bob, "bob") == b"{}"
    assert roundtrip(bob, alice, "alice") == b"{}"
    # A third agent with its own static key cannot open alice->bob traffic.
    c = X25519KeyPair.generate()
    ring_c = Keyring(clock=clock)
    ring_c.set_static_key(c)
    ring_c.add_peer("alice", a.public)
    assert reason(alice, Emcl(ring_c, "bob"), "bob") == "unknown_key"


def test_pair_key_binds_the_sender(clock: FakeClock) -> None:
    a, b, m = (X25519KeyPair.generate() for _ in range(3))
    ring_b = Keyring(clock=clock)
    ring_b.set_static_key(b)
    ring_b.add_peer("alice", a.public)
    ring_b.add_peer("mallory", m.public)
    ring_m = Keyring(clock=clock)
    ring_m.set_static_key(m)
    ring_m.add_peer("bob", b.public)
    # mallory seals with her own pair key but claims to be alice.
    assert reason(Emcl(ring_m, "alice"), Emcl(ring_b, "bob"), "bob") == "unexpected_sender"


def test_low_order_peer_keys_give_no_pair_key(clock: FakeClock) -> None:
    ring = Keyring(clock=clock)
    ring.set_static_key(X25519KeyPair.generate())
    ring.add_peer("evil", bytes(32))
    assert ring.pair_key("evil") is None
    with pytest.raises(ValueError):
        ring.add_peer("short", b"123")


def test_group_rotation_with_grace(clock: FakeClock) -> None:
    m1, m2 = generate_master_key(), generate_master_key()
    ring_a, ring_b = Keyring(clock=clock), Keyring(clock=clock)
    ring_a.add_group_key("k1", m1)
    ring_b.add_group_key("k1", m1)
    alice, bob = Emcl(ring_a, "alice"), Emcl(ring_b, "bob")
    key1 = ring_a.sealing_key()
    assert key1 is not None
    in_flight = alice.seal(MessageType.INTENT, b"{}", key=key1)
    # bob rotates first: he seals with k2, still opens k1 during the grace period.
    ring_b.rotate_group_key("k2", m2, grace=60)
    assert ring_b.sealing_key() is not None and ring_b.sealing_key().key_id == "k2"  # type: ignore[union-attr]
    assert bob.open(in_flight).body == b"{}"
    assert reason(bob, alice) == "unknown_key"  # alice does not know k2 yet
    ring_a.rotate_group_key("k2", m2, grace=60)
    assert roundtrip(bob, alice) == b"{}"
    assert roundtrip(alice, bob) == b"{}"
    clock.advance(59)
    late = alice.seal(MessageType.INTENT, b"{}", key=key1)
    assert bob.open(late).body == b"{}"
    clock.advance(2)
    assert ring_b.lookup("k1") is None
    with pytest.raises(EMCLFailure) as info:
        bob.open(alice.seal(MessageType.INTENT, b"{}", key=key1))
    assert reason_of(info.value) == "unknown_key"
    assert roundtrip(alice, bob) == b"{}"


def test_retire_at_once(clock: FakeClock) -> None:
    ring = Keyring(clock=clock)
    ring.add_group_key("k1", generate_master_key())
    ring.rotate_group_key("k2", generate_master_key(), grace=None)
    assert ring.lookup("k1") is not None  # no grace limit: kept until retired
    ring.retire("k1")
    assert ring.lookup("k1") is None
    assert sorted(ring.key_ids()) == ["k2"]
    ring.retire("k2")
    assert ring.sealing_key() is None
    with pytest.raises(ValueError):
        ring.add_group_key("k3", generate_master_key()) and ring.add_group_key(
            "k3", generate_master_key())


def test_static_and_peer_rotation(clock: FakeClock) -> None:
    a1, a2, b1, b2 = (X25519KeyPair.generate() for _ in range(4))
    ring_a, ring_b = Keyring(clock=clock), Keyring(clock=clock)
    ring_a.set_static_key(a1)
    ring_a.add_peer("bob", b1.public)
    ring_b.set_static_key(b1)
    ring_b.add_peer("alice", a1.public)
    alice, bob = Emcl(ring_a, "alice"), Emcl(ring_b, "bob")
    old_key = ring_a.sealing_key("bob")
    assert old_key is not None
    in_flight = alice.seal(MessageType.INTENT, b"{}", key=old_key, recipient="bob")
    # alice rotates her static key; bob learns the new public key.
    ring_a.set_static_key(a2, grace=30)
    ring_b.add_peer("alice", a2.public, grace=30)
    assert bob.open(in_flight).body == b"{}"
    assert roundtrip(alice, bob, "bob") == b"{}"
    assert roundtrip(bob, alice, "alice") == b"{}"
    # bob rotates too.
    ring_b.set_static_key(b2, grace=30)
    ring_a.add_peer("bob", b2.public, grace=30)
    assert roundtrip(alice, bob, "bob") == b"{}"
    clock.advance(31)
    assert ring_b.lookup(old_key.key_id) is None
    assert roundtrip(alice, bob, "bob") == b"{}"
    ring_a.retire(pair_key_id(a2.public, b2.public))
    assert ring_a.pair_key("bob") is None
    ring_a.add_peer("carol", X25519KeyPair.generate().public)  # re-derivation keeps it retired
    assert ring_a.pair_key("bob") is None
    ring_a.remove_peer("carol")
