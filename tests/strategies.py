"""Hypothesis strategies for the wire model (shared by the test suites)."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from intentus_trio import (
    AgentResponse,
    EMCLEnvelope,
    ErrorCode,
    ErrorInfo,
    Event,
    IdentityEntry,
    IntentContext,
    IntentEnvelope,
    IntentMetadata,
    IntentRef,
    MessageType,
    Priority,
    ProtocolNegotiation,
    ResponseStatus,
    RoutingMetadata,
    RoutingOptions,
    RoutingStrategy,
    TransportEnvelope,
    TransportProtocol,
)

names = st.text(max_size=40)
short_lists = st.lists(names, max_size=5).map(tuple)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
json_objects: st.SearchStrategy[dict[str, Any]] = st.dictionaries(
    st.text(max_size=10), json_values, max_size=5
)

intents = st.builds(
    IntentEnvelope,
    version=names,
    intent=st.builds(IntentRef, names, names),
    payload=json_objects,
    context=st.builds(IntentContext, names, names, st.sampled_from(Priority), short_lists),
    metadata=st.builds(IntentMetadata, names, names, names, names, short_lists),
    routing=st.builds(
        RoutingOptions, st.sampled_from(RoutingStrategy), st.none() | names, short_lists
    ),
    routing_metadata=st.builds(
        RoutingMetadata, short_lists, st.integers(min_value=0, max_value=1000)
    ),
)

errors = st.builds(
    ErrorInfo, st.sampled_from(ErrorCode), st.text(max_size=60), st.booleans(), json_objects
)

responses = st.builds(
    AgentResponse,
    version=names,
    status=st.sampled_from(ResponseStatus),
    payload=st.none() | json_objects,
    metadata=json_objects,
    error=st.none() | errors,
)

events = st.builds(Event, names, json_objects, names, names, names, st.none() | names)

emcl_envelopes = st.builds(
    EMCLEnvelope,
    emcl_version=names,
    ciphertext=st.text(max_size=100),
    nonce=names,
    hmac=names,
    identity_chain=st.lists(st.builds(IdentityEntry, names, names, names, names), max_size=3).map(
        tuple
    ),
    key_id=st.none() | names,
    sender=st.none() | names,
    recipient=st.none() | names,
    timestamp=st.none() | names,
    message_type=st.none() | st.sampled_from(MessageType),
)

header_maps = st.dictionaries(
    st.text(max_size=20).filter(lambda k: k != "emcl"), st.text(max_size=40), max_size=6
)
negotiations = st.none() | st.builds(
    ProtocolNegotiation,
    st.from_regex(r"\A[0-9]{1,3}\.[0-9]{1,3}\Z"),
    st.from_regex(r"\A[0-9]{1,3}\.[0-9]{1,3}\Z"),
)


@st.composite
def frames(draw: st.DrawFn) -> TransportEnvelope:
    kind = draw(st.sampled_from(MessageType))
    headers = draw(header_maps)
    body: Any
    if kind is MessageType.INTENT:
        body = draw(intents)
    elif kind is MessageType.RESPONSE:
        body = draw(responses)
    elif kind is MessageType.EVENT:
        body = draw(events)
    else:
        body = draw(emcl_envelopes)
    if draw(st.booleans()) and kind is not MessageType.EMCL:
        body = draw(emcl_envelopes)
        headers = {**headers, "emcl": "1.0"}
    return TransportEnvelope(
        draw(st.sampled_from(TransportProtocol)), kind, body, headers, draw(negotiations)
    )
