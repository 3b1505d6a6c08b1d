"""emcl_to_json / emcl_from_json: round trips, and the fast path agrees with the strict one."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from intentus_trio.protocol.codec import emcl_from_json, emcl_to_json
from intentus_trio.protocol.enums import MessageType
from intentus_trio.protocol.errors import ValidationError
from intentus_trio.protocol.models import EMCLEnvelope, IdentityEntry

short = st.text(max_size=40)
entries = st.builds(IdentityEntry, short, short, short, short)
envelopes = st.builds(
    EMCLEnvelope, short, st.text(max_size=300), short, short,
    st.lists(entries, max_size=3).map(tuple), st.none() | short, st.none() | short,
    st.none() | short, st.none() | short, st.none() | st.sampled_from(list(MessageType)),
)


@given(envelopes)
def test_round_trip(env: EMCLEnvelope) -> None:
    assert emcl_from_json(emcl_to_json(env)) == env


@pytest.mark.parametrize(("key", "value"), [
    ("emclVersion", 1), ("ciphertext", None), ("nonce", []), ("hmac", "x" * 257),
    ("keyId", 5), ("sender", "s" * 257), ("recipient", {}), ("timestamp", 1.5),
    ("messageType", "nope"), ("identityChain", {}), ("identityChain", [{"agentId": "a"}]),
])
def test_wrong_types_are_refused_with_the_field(key: str, value: object) -> None:
    good = emcl_to_json(EMCLEnvelope("1.0", "AA", "AA", "AA", (), "g1", "a", "b",
                                     "2026-01-01T00:00:00.000Z", MessageType.INTENT))
    good[key] = value
    with pytest.raises(ValidationError) as info:
        emcl_from_json(good)
    assert key in info.value.path
