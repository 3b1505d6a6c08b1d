"""Fuzzing the frame fields every transport reads the same way: the ``timeoutMs`` and ``seq``
headers and the protocol versions a peer offers. A server reads them before any agent runs,
so a value that fails the wrong way takes down a whole connection, or a ZeroMQ node."""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from intentus_trio.protocol import headers as h
from intentus_trio.protocol.enums import MessageType, TransportProtocol
from intentus_trio.protocol.errors import IntentusError, ValidationError
from intentus_trio.protocol.models import (
    AgentResponse,
    ProtocolNegotiation,
    StreamChunk,
    TransportEnvelope,
)
from intentus_trio.protocol.versions import SUPPORTED_VERSIONS, negotiate, parse_version
from intentus_trio.transports.framing import call_timeout, reply_item

from ..strategies import frames
from .strategies import fuzzing, header_values, numberish

FAST = fuzzing(40)

versions = st.one_of(st.builds("{}.{}".format, numberish, numberish), st.text(max_size=20),
                     st.from_regex(r"\A[0-9]{1,3}\.[0-9]{1,3}\Z"))


@FAST
@given(header_values, st.none() | st.floats(0, 1e6))
@example("²", None)
@example("①", 5.0)
def test_call_timeout_is_a_bound_or_the_cap(text: str, cap: float | None) -> None:
    timeout = call_timeout({h.TIMEOUT_MS: text}, cap)
    if text.isascii() and text.isdigit() and len(text) <= 12:
        expected = int(text) / 1000
        assert timeout == (expected if cap is None else min(expected, cap))
    else:
        assert timeout == cap


RESPONSE_FRAME = TransportEnvelope(TransportProtocol.HTTP, MessageType.RESPONSE,
                                   AgentResponse.success({"x": 1}), {}, None)


@FAST
@given(st.just(RESPONSE_FRAME) | frames(), st.booleans(), header_values)
@example(RESPONSE_FRAME, True, "²")
def test_reply_item_is_an_item_or_an_intentus_error(
    frame: TransportEnvelope, chunk: bool, seq: str
) -> None:
    headers = {**frame.headers, h.SEQUENCE: seq}
    if chunk:
        headers[h.STREAM] = h.STREAM_CHUNK
    frame = TransportEnvelope(frame.protocol, frame.message_type, frame.body, headers,
                              frame.protocol_negotiation)
    try:
        item = reply_item(frame)
    except IntentusError:
        return
    if chunk:
        assert isinstance(item, StreamChunk) and item.seq == int(seq)
    else:
        assert isinstance(item, AgentResponse)


@FAST
@given(versions)
@example("².0")
@example("1.①")
def test_parse_version_is_a_pair_or_a_validation_error(text: str) -> None:
    try:
        major, minor = parse_version(text)
    except ValidationError:
        return
    assert f"{major}.{minor}" == f"{int(text.split('.')[0])}.{int(text.split('.')[1])}"


@FAST
@given(st.integers(0, 999), st.integers(0, 999))
def test_parse_version_round_trips(major: int, minor: int) -> None:
    assert parse_version(f"{major}.{minor}") == (major, minor)


@FAST
@given(versions, versions)
@example("².0", "1.0")
def test_negotiate_picks_a_supported_version_or_refuses_clearly(low: str, high: str) -> None:
    try:
        chosen = negotiate(ProtocolNegotiation(low, high))
    except IntentusError:
        return
    assert parse_version(SUPPORTED_VERSIONS.min_version) <= parse_version(chosen)
    assert parse_version(chosen) <= parse_version(SUPPORTED_VERSIONS.max_version)
    assert parse_version(low) <= parse_version(chosen) <= parse_version(high)
