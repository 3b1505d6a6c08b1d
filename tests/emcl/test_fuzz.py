"""Random and mutated envelopes: always an EMCLFailure, never a crash, never an acceptance."""

from __future__ import annotations

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from intentus_trio.emcl import Emcl, EmclProtector, Keyring, ReplayGuard, Role
from intentus_trio.protocol.codec import FrameCodec
from intentus_trio.protocol.enums import TransportProtocol
from intentus_trio.protocol.errors import EMCLFailure, IntentusError
from intentus_trio.protocol.factory import new_intent
from intentus_trio.protocol.models import EMCLEnvelope, IdentityEntry
from intentus_trio.transports.framing import request_frame

from .conftest import T0, FakeClock

CLOCK = FakeClock(T0)
RING = Keyring(clock=CLOCK)
RING.add_group_key("g1", b"m" * 32)
CLIENT = EmclProtector(RING, "client", role=Role.CLIENT)
CODEC = FrameCodec()


def fresh_server() -> EmclProtector:
    return EmclProtector(RING, "server", role=Role.SERVER,
                         engine=Emcl(RING, "server", replay=ReplayGuard()))


GOOD = CODEC.encode(CLIENT.seal(request_frame(new_intent("echo", {"n": 1}),
                                              TransportProtocol.HTTP)))

texts = st.text(max_size=60)
b64ish = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=+/",
                 max_size=120)
entries = st.builds(IdentityEntry, texts, b64ish, texts, b64ish)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.builds(
    EMCLEnvelope, st.sampled_from(["1.0", "1", ""]) | texts, b64ish, b64ish, b64ish,
    st.lists(entries, max_size=3).map(tuple), st.none() | st.sampled_from(["g1", "x"]),
    st.none() | texts, st.none() | texts, st.none() | texts,
))
def test_random_envelopes_are_refused(env: EMCLEnvelope) -> None:
    server = fresh_server()
    frame = CLIENT.seal(request_frame(new_intent("echo"), TransportProtocol.HTTP))
    try:
        server.open(frame.__class__(frame.protocol, frame.message_type, env, frame.headers,
                                    frame.protocol_negotiation))
    except EMCLFailure:
        pass
    else:
        raise AssertionError("a random envelope was accepted")


def mutate(data: bytes, positions: list[int], values: list[int]) -> bytes:
    raw = bytearray(data)
    for pos, val in zip(positions, values, strict=False):
        raw[pos % len(raw)] = val
    return bytes(raw)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(min_value=0), min_size=1, max_size=4),
       st.lists(st.integers(min_value=0, max_value=255), min_size=1, max_size=4))
def test_mutated_frames_are_refused(positions: list[int], values: list[int]) -> None:
    data = mutate(GOOD, positions, values)
    server = fresh_server()
    try:
        frame = CODEC.decode(data)
        server.open(frame)
    except IntentusError:
        pass
    else:
        # Only a mutation that left every authenticated value intact opens: a change in an
        # unbound part (the ``protocol`` field, an unknown or defaulted key, whitespace).
        good, got = CODEC.decode(GOOD), CODEC.decode(data)
        assert got.body == good.body
        assert {k: v for k, v in got.headers.items() if k not in ("traceparent", "tracestate")} \
            == good.headers
        assert got.protocol_negotiation == good.protocol_negotiation
    # The receiver keeps working.
    fresh = CLIENT.seal(request_frame(new_intent("echo"), TransportProtocol.HTTP))
    assert server.open(CODEC.decode(CODEC.encode(fresh))).body is not None


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["emclVersion", "ciphertext", "nonce", "hmac", "keyId", "sender",
                        "recipient", "timestamp", "messageType"]),
       st.sampled_from(["emclVersion", "ciphertext", "nonce", "hmac", "keyId", "sender",
                        "recipient", "timestamp", "messageType"]))
def test_swapped_fields_are_refused(a: str, b: str) -> None:
    obj = orjson.loads(GOOD)
    body = obj["body"]
    if body[a] == body[b]:
        return
    body[a], body[b] = body[b], body[a]
    server = fresh_server()
    try:
        server.open(CODEC.decode(orjson.dumps(obj)))
    except IntentusError:
        pass
    else:
        raise AssertionError("a frame with swapped fields was accepted")
