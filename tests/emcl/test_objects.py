"""``seal_object``/``open_object`` (the envelope's JSON object) and the hot path's caches.

The object path has its own inline checks; these tests hold it to the same refusals as the
model path, for every spelling pybase64's C extension or its pure-Python fallback decodes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pybase64
import pybase64._fallback
import pytest
from hypothesis import given
from hypothesis import strategies as st

from intentus_trio.emcl import ChainSigner, Emcl, Keyring, encoding, trust_origin
from intentus_trio.emcl import engine as engine_module
from intentus_trio.emcl.encoding import LAST_OK_1, LAST_OK_2, b64d, b64e, format_timestamp
from intentus_trio.emcl.envelope import (
    EMCL_VERSION,
    AadBuilder,
    bound_headers,
    build_aad,
    compute_mac,
)
from intentus_trio.emcl.failures import reason_of
from intentus_trio.emcl.keyring import derive_group_key
from intentus_trio.keys import Ed25519KeyPair
from intentus_trio.protocol.codec import emcl_from_json, emcl_to_json
from intentus_trio.protocol.enums import MessageType
from intentus_trio.protocol.errors import EMCLFailure

from .conftest import FakeClock

BODY = b'{"secret":"attack at dawn"}'
_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


@pytest.fixture(params=["c", "fallback"])
def decoder(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Both pybase64 implementations, wherever EMCL decodes base64."""
    if request.param == "fallback":
        monkeypatch.setattr(encoding, "_decode", pybase64._fallback.b64decode)
        monkeypatch.setattr(engine_module, "_b64decode", pybase64._fallback.b64decode)
    elif pybase64.b64decode is pybase64._fallback.b64decode:
        pytest.skip("pybase64's C extension is not installed")
    yield request.param


def sealed(alice: Emcl) -> dict[str, Any]:
    key = alice.keyring.sealing_key()
    assert key is not None
    obj = alice.seal_object(MessageType.INTENT, BODY, key=key, recipient="bob")
    return orjson.loads(orjson.dumps(obj))  # type: ignore[no-any-return]


def refused(bob: Emcl, obj: Any) -> str | None:
    with pytest.raises(EMCLFailure) as info:
        bob.open_object(obj)
    return reason_of(info.value)


def test_object_round_trip_and_agreement_with_the_model(pair: tuple[Emcl, Emcl],
                                                        clock: FakeClock) -> None:
    alice, bob = pair
    obj = sealed(alice)
    assert obj == emcl_to_json(emcl_from_json(obj))
    opened = bob.open_object(obj)
    assert (opened.body, opened.sender, opened.recipient, opened.message_type) == (
        BODY, "alice", "bob", MessageType.INTENT)
    assert opened.timestamp == pytest.approx(clock.now)
    # Each path opens what the other sealed, and the replay cache is shared.
    assert refused(bob, obj) == "replayed"
    key = alice.keyring.sealing_key()
    assert key is not None
    env = alice.seal(MessageType.INTENT, BODY, key=key, recipient="bob")
    assert bob.open_object(emcl_to_json(env)).body == BODY
    assert bob.open(emcl_from_json(sealed(alice))).body == BODY


@pytest.mark.parametrize("member", ["emclVersion", "ciphertext", "nonce", "hmac", "keyId",
                                    "sender", "recipient", "timestamp", "messageType",
                                    "identityChain"])
@pytest.mark.parametrize("value", [None, 1, 1.5, True, [], {}, b"AAAA", "x" * 300, "missing"])
def test_wrong_members_are_malformed(pair: tuple[Emcl, Emcl], member: str, value: object,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    alice, bob = pair
    obj = sealed(alice)
    if value == "missing":
        if member == "identityChain":
            return  # optional: an absent chain is an empty one
        del obj[member]
    elif member == "identityChain" and value == []:
        return  # the right value
    else:
        obj[member] = value
    decrypts: list[int] = []
    real = engine_module._decrypt
    monkeypatch.setattr(engine_module, "_decrypt", lambda *a: decrypts.append(1) or real(*a))
    expected = "tampered" if member == "ciphertext" and value == "x" * 300 else "malformed"
    assert refused(bob, obj) == expected
    assert decrypts == []
    assert bob.open_object(sealed(alice)).body == BODY


def test_objects_with_an_identity_chain(clock: FakeClock) -> None:
    signing = Ed25519KeyPair.generate()
    ring = Keyring(clock=clock)
    ring.add_group_key("g1", bytes(range(32)))
    alice = Emcl(ring, "alice", signer=ChainSigner("alice", signing))
    bob = Emcl(ring, "bob", chain_policy=trust_origin({"alice": signing.public}))
    obj = sealed(alice)
    assert [e["agentId"] for e in obj["identityChain"]] == ["alice"]
    assert [e.agent_id for e in bob.open_object(obj).chain] == ["alice"]
    # A chain is required here; without one, or with a changed one, the envelope is refused.
    assert refused(bob, {**sealed(Emcl(ring, "alice")), "identityChain": []}) == (
        "untrusted_chain")
    other = sealed(alice)
    other["identityChain"][0]["signature"] = obj["identityChain"][0]["signature"]
    assert refused(bob, other) == "tampered"


def test_other_shapes_are_malformed(pair: tuple[Emcl, Emcl]) -> None:
    alice, bob = pair
    for obj in ([], "envelope", None, {**sealed(alice), "messageType": "emcl"},
                {**sealed(alice), "messageType": "Intent"}):
        assert refused(bob, obj) == "malformed"
    obj = sealed(alice)
    del obj["identityChain"]
    assert bob.open_object(obj).body == BODY


def _respellings(text: str) -> list[str]:
    """Other spellings of the bytes ``text`` encodes that lenient decoders accept."""
    out = [text + "\n", " " + text, text[:4] + "\n" + text[4:], text.rstrip("=") or "A",
           text + "=", text + "====", text.replace("+", "-").replace("/", "_") + "-",
           text[:-4] + "=" + text[-4:]]
    if text.endswith("=="):
        last = text[-3]
        out += [text[:-3] + _ALPHABET[_ALPHABET.index(last) | bit] + "=="
                for bit in (1, 2, 4, 8)]
    elif text.endswith("="):
        last = text[-2]
        out += [text[:-2] + _ALPHABET[_ALPHABET.index(last) | bit] + "=" for bit in (1, 2)]
    return [s for s in out if s != text]


@pytest.mark.parametrize("member", ["ciphertext", "nonce", "hmac"])
@pytest.mark.parametrize("path", ["object", "model"])
def test_other_spellings_are_malformed(decoder: str, pair: tuple[Emcl, Emcl], member: str,
                                       path: str, clock: FakeClock) -> None:
    alice, bob = pair
    # Bodies of three lengths: ciphertexts with no, one and two "=".
    for body in (BODY, BODY + b" ", BODY + b"  "):
        key = alice.keyring.sealing_key()
        assert key is not None
        obj = orjson.loads(orjson.dumps(
            alice.seal_object(MessageType.INTENT, body, key=key, recipient="bob")))
        for other in _respellings(obj[member]):
            changed = {**obj, member: other}
            if path == "object":
                assert refused(bob, changed) == "malformed", (member, other)
            else:
                with pytest.raises(EMCLFailure) as info:
                    bob.open(emcl_from_json(changed))
                assert reason_of(info.value) == "malformed", (member, other)
        assert bob.open_object(obj).body == body
        clock.advance(0.001)


def test_canonical_spelling_tables() -> None:
    for table, free_bits in ((LAST_OK_1, 4), (LAST_OK_2, 2)):
        assert table == {c for i, c in enumerate(_ALPHABET) if i % (1 << free_bits) == 0}


def test_timestamp_caches(pair: tuple[Emcl, Emcl], clock: FakeClock) -> None:
    alice, bob = pair
    first = sealed(alice)
    assert refused(bob, {**sealed(alice), "timestamp": ""}) == "malformed"
    assert bob.open_object(first).body == BODY
    ts = first["timestamp"]
    arabic_digits = "\u0661\u0662\u0663"
    for bad in ["", ts[:-1] + "z", ts[:20] + "1x3Z", ts[:20] + arabic_digits + "Z", ts + " ",
                ts[:-1]]:
        assert refused(bob, {**sealed(alice), "timestamp": bad}) == "malformed", bad
    # Same second, other milliseconds; then later seconds: each parsed right.
    for step in (0.001, 0.25, 0.7, 1.0, 61.0):
        clock.advance(step)
        obj = sealed(alice)
        assert obj["timestamp"] == format_timestamp(clock.now)
        assert bob.open_object(obj).timestamp == pytest.approx(int(clock.now * 1000) / 1000)


names = st.sampled_from(["g1", "g2"]), st.sampled_from(["intent", "event"]), \
    st.sampled_from(["alice", "bob"]), st.sampled_from(["", "bob", "é"])
calls = st.tuples(
    *names, st.sampled_from(["2026-01-01T00:00:00.000Z", "2026-01-01T00:00:00.001Z", "x"]),
    st.sampled_from([None, ("1.0", "1.0"), ("1.0", "2.0")]),
    st.sampled_from([{}, {"requestId": "1"}, {"requestId": "2", "emcl": "1.0"},
                     {"traceId": "t", "contentType": "a/b", "requestId": "3"},
                     {"requestId": "3", "traceId": "t", "contentType": "a/b", "tracestate": "x"},
                     {"zé": "é" * 200, "a": "", "emclReplyTo": "r" * 300}]),
)


@given(st.lists(calls, max_size=30))
def test_aad_builder_matches_build_aad(sequence: list[Any]) -> None:
    builder = AadBuilder()
    for kid, mtype, sender, recipient, ts, neg, headers in sequence:
        assert builder(kid, mtype, sender, recipient, ts, neg, headers, ()) == build_aad(
            EMCL_VERSION, kid, mtype, sender, recipient, ts, neg, bound_headers(headers), ())


def test_mac_state_is_compute_mac() -> None:
    key = derive_group_key("g1", bytes(range(32)))
    for size in (0, 1, 100, 101, 102, 127, 128, 129, 200, 255, 256, 257, 1000):
        aad = bytes(range(256))[:size] * 1
        state = key.mac_state.copy()
        state.update(aad + bytes(24) + bytes(16))
        assert state.digest() == compute_mac(key.mac_key, aad, bytes(24), bytes(16))
    # The shared state is never fed.
    assert key.mac_state.digest() == compute_mac(key.mac_key, b"", b"", b"")


def test_b64_helpers_agree(decoder: str) -> None:
    for size in range(40):
        data = bytes(range(size))
        assert b64d(b64e(data)) == data
