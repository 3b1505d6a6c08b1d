"""Sealing and opening: every kind of bad envelope is refused with its reason."""

from __future__ import annotations

import pytest
from msgspec.structs import replace

from intentus_trio.emcl import Emcl, Keyring, ReplayGuard
from intentus_trio.emcl import engine as engine_module
from intentus_trio.emcl.encoding import b64d, b64e, format_timestamp
from intentus_trio.emcl.failures import reason_of
from intentus_trio.keys import generate_master_key
from intentus_trio.protocol.enums import MessageType
from intentus_trio.protocol.errors import EMCLFailure
from intentus_trio.protocol.models import EMCLEnvelope

from .conftest import FakeClock

BODY = b'{"secret":"attack at dawn"}'
HEADERS = {"contentType": "application/json", "traceId": "t-1", "requestId": "r-1"}
NEG = ("1.0", "1.0")


def seal(sender: Emcl, **kw: object) -> EMCLEnvelope:
    options: dict[str, object] = {"key": sender.keyring.sealing_key(), "headers": HEADERS,
                                  "negotiation": NEG}
    options.update(kw)
    return sender.seal(MessageType.INTENT, BODY, **options)  # type: ignore[arg-type]


def refused(receiver: Emcl, env: EMCLEnvelope, **kw: object) -> str | None:
    options: dict[str, object] = {"headers": HEADERS, "negotiation": NEG}
    options.update(kw)
    with pytest.raises(EMCLFailure) as info:
        receiver.open(env, **options)  # type: ignore[arg-type]
    assert info.value.code.value == "EMCL_FAILURE"
    return reason_of(info.value)


def opens(receiver: Emcl, env: EMCLEnvelope, **kw: object) -> bytes:
    options: dict[str, object] = {"headers": HEADERS, "negotiation": NEG}
    options.update(kw)
    return receiver.open(env, **options).body  # type: ignore[arg-type]


def test_round_trip(pair: tuple[Emcl, Emcl]) -> None:
    alice, bob = pair
    env = seal(alice, recipient="bob")
    opened = bob.open(env, headers=HEADERS, negotiation=NEG, outer_type=MessageType.INTENT)
    assert opened.body == BODY
    assert (opened.sender, opened.recipient, opened.message_type) == ("alice", "bob",
                                                                      MessageType.INTENT)
    assert opened.key.key_id == "g1" and env.key_id == "g1"
    assert len(b64d(env.nonce) or b"") == 24 and len(b64d(env.hmac) or b"") == 32
    assert b"attack" not in (b64d(env.ciphertext) or b"")


def test_nonces_are_fresh(pair: tuple[Emcl, Emcl]) -> None:
    alice, _ = pair
    assert len({seal(alice).nonce for _ in range(100)}) == 100


# Every authenticated field, changed: the MAC fails before anything is decrypted. The MAC
# covers the AEAD tag (the ciphertext's last 16 bytes); a change before the tag fails the
# AEAD, which checks the tag before it writes any plaintext.
@pytest.mark.parametrize("field", ["ciphertext", "tag", "nonce", "hmac", "sender",
                                   "recipient", "timestamp", "message_type"])
def test_tampered_fields(pair: tuple[Emcl, Emcl], field: str, monkeypatch: pytest.MonkeyPatch,
                         clock: FakeClock) -> None:
    alice, bob = pair
    env = seal(alice)
    value = getattr(env, "ciphertext" if field == "tag" else field)
    if field in ("ciphertext", "tag", "nonce", "hmac"):
        raw = bytearray(b64d(value) or b"")
        raw[-3 if field == "tag" else len(raw) // 2] ^= 0x40
        changed: object = b64e(bytes(raw))
    elif field == "timestamp":
        changed = format_timestamp(clock.now + 1)
    elif field == "message_type":
        changed = MessageType.EVENT
    else:
        changed = value + "x"
    decrypts: list[int] = []
    real = engine_module._decrypt
    monkeypatch.setattr(engine_module, "_decrypt", lambda *a: decrypts.append(1) or real(*a))
    name = "ciphertext" if field == "tag" else field
    assert refused(bob, replace(env, **{name: changed})) == "tampered"
    assert decrypts == ([1] if field == "ciphertext" else [])
    assert opens(bob, env) == BODY  # the receiver keeps working


def test_tampered_headers_and_negotiation(pair: tuple[Emcl, Emcl]) -> None:
    alice, bob = pair
    env = seal(alice)
    assert refused(bob, env, headers={**HEADERS, "requestId": "r-2"}) == "tampered"
    assert refused(bob, env, headers={**HEADERS, "stream": "chunk"}) == "tampered"
    assert refused(bob, env, headers={k: v for k, v in HEADERS.items() if k != "traceId"}) \
        == "tampered"
    assert refused(bob, env, negotiation=("1.0", "2.0")) == "tampered"
    assert refused(bob, env, negotiation=None) == "tampered"
    # Hop-by-hop tracing headers are not bound.
    assert opens(bob, env, headers={**HEADERS, "traceparent": "00-abc-def-01"}) == BODY


def test_truncated_and_swapped(pair: tuple[Emcl, Emcl], clock: FakeClock) -> None:
    alice, bob = pair
    one = seal(alice)
    clock.advance(0.5)
    two = seal(alice)
    raw = b64d(one.ciphertext) or b""
    assert refused(bob, replace(one, ciphertext=b64e(raw[:-3]))) == "tampered"
    assert refused(bob, replace(one, ciphertext=b64e(raw + b"\x00"))) == "tampered"
    assert refused(bob, replace(one, ciphertext=one.ciphertext[:-4])) in ("tampered",
                                                                                "malformed")
    assert refused(bob, replace(one, ciphertext=one.ciphertext[:20])) == "malformed"
    assert refused(bob, replace(one, nonce=one.nonce[:-2])) == "malformed"
    assert refused(bob, replace(one, hmac=one.hmac[:-2])) == "malformed"
    for name in ("ciphertext", "nonce", "hmac", "timestamp"):
        assert refused(bob, replace(one, **{name: getattr(two, name)})) == "tampered"
    assert opens(bob, one) == BODY and opens(bob, two) == BODY


@pytest.mark.parametrize("change", [
    {"emcl_version": "2.0"}, {"key_id": None}, {"sender": None}, {"recipient": None},
    {"timestamp": None}, {"message_type": None}, {"message_type": MessageType.EMCL},
    {"timestamp": "yesterday"}, {"nonce": "not base64!"}, {"hmac": ""},
    {"ciphertext": "AA=="},
])
def test_malformed(pair: tuple[Emcl, Emcl], change: dict[str, object]) -> None:
    alice, bob = pair
    env = seal(alice)
    assert refused(bob, replace(env, **change)) == "malformed"
    assert opens(bob, env) == BODY


def test_unknown_retired_and_foreign_keys(pair: tuple[Emcl, Emcl], clock: FakeClock) -> None:
    alice, bob = pair
    env = seal(alice)
    assert refused(bob, replace(env, key_id="nope")) == "unknown_key"
    stranger_ring = Keyring(clock=clock)
    stranger_ring.add_group_key("g1", generate_master_key())  # same id, different key
    stranger = Emcl(stranger_ring, "mallory")
    assert refused(bob, seal(stranger)) == "tampered"
    bob.keyring.retire("g1")
    assert refused(bob, env) == "unknown_key"


def test_replayed(pair: tuple[Emcl, Emcl]) -> None:
    alice, bob = pair
    env = seal(alice)
    assert opens(bob, env) == BODY
    assert refused(bob, env) == "replayed"
    assert opens(bob, seal(alice)) == BODY


def test_stale_and_future(pair: tuple[Emcl, Emcl], clock: FakeClock) -> None:
    alice, bob = pair
    old = seal(alice)
    clock.advance(121)
    assert refused(bob, old) == "stale"
    early = seal(alice)
    clock.advance(-242)
    assert refused(bob, early) == "stale"
    clock.advance(121)
    assert opens(bob, seal(alice)) == BODY


def test_windows_are_configurable(group_keyring: Keyring, clock: FakeClock) -> None:
    alice = Emcl(group_keyring, "alice")
    bob = Emcl(group_keyring, "bob", replay=ReplayGuard(window=5))
    env = seal(alice)
    clock.advance(6)
    assert refused(bob, env) == "stale"


def test_reflected_and_misdirected(pair: tuple[Emcl, Emcl], group_keyring: Keyring) -> None:
    alice, bob = pair
    carol = Emcl(group_keyring, "carol")
    request = seal(alice, recipient="bob")
    # A request presented as a response (or to an endpoint that only takes responses).
    assert refused(bob, request, outer_type=MessageType.RESPONSE) == "reflected"
    assert refused(bob, request, accept=frozenset({MessageType.RESPONSE})) == "reflected"
    # Our own message sent back to us.
    assert refused(alice, request, expected_sender="bob") == "reflected"
    # Addressed to someone else.
    assert refused(carol, request) == "misdirected"
    assert refused(carol, request, expected_sender="dave") == "unexpected_sender"
    # Outer type changed between two request kinds: not a reflection, still refused.
    assert refused(bob, request, outer_type=MessageType.EVENT) == "tampered"
    # The IntentusNet spelling of a sealed intent is accepted.
    assert opens(bob, request, outer_type=MessageType.EMCL) == BODY


def test_open_never_raises_anything_else(pair: tuple[Emcl, Emcl]) -> None:
    alice, bob = pair
    env = seal(alice)
    for change in [{"sender": "\ud800"}, {"key_id": "\x00" * 300}, {"ciphertext": "é" * 40}]:
        with pytest.raises(EMCLFailure):
            bob.open(replace(env, **change), headers=HEADERS, negotiation=NEG)
