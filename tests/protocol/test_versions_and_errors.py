"""Version negotiation and the one mapping from exceptions to error responses."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from intentus_trio import (
    SUPPORTED_VERSIONS,
    AgentError,
    AgentResponse,
    ConnectionFailure,
    ErrorCode,
    ErrorInfo,
    MalformedMessage,
    PayloadTooLarge,
    ProtocolNegotiation,
    RemoteError,
    ResponseStatus,
    TransportTimeout,
    UnsupportedVersion,
    ValidationError,
    negotiate,
    raise_for_error,
)
from intentus_trio.protocol.versions import parse_version


def test_missing_negotiation_means_legacy_1_0() -> None:
    assert negotiate(None) == "1.0"


def test_highest_common_version_wins() -> None:
    ours = ProtocolNegotiation("1.0", "1.4")
    assert negotiate(ProtocolNegotiation("1.2", "2.0"), ours) == "1.4"
    assert negotiate(ProtocolNegotiation("0.9", "1.1"), ours) == "1.1"
    assert (
        negotiate(ProtocolNegotiation("1.10", "1.10"), ProtocolNegotiation("1.2", "1.10")) == "1.10"
    )


versions = st.tuples(st.integers(0, 5), st.integers(0, 12))


@given(versions, versions, versions, versions)
def test_negotiation_matches_a_brute_force_model(
    a: tuple[int, int], b: tuple[int, int], c: tuple[int, int], d: tuple[int, int]
) -> None:
    lo1, hi1 = sorted([a, b])
    lo2, hi2 = sorted([c, d])
    offered = ProtocolNegotiation(f"{lo1[0]}.{lo1[1]}", f"{hi1[0]}.{hi1[1]}")
    supported = ProtocolNegotiation(f"{lo2[0]}.{lo2[1]}", f"{hi2[0]}.{hi2[1]}")
    common = [
        (x, y) for x in range(6) for y in range(13) if lo1 <= (x, y) <= hi1 and lo2 <= (x, y) <= hi2
    ]
    if common:
        best = max(common)
        assert negotiate(offered, supported) == f"{best[0]}.{best[1]}"
    else:
        with pytest.raises(UnsupportedVersion) as info:
            negotiate(offered, supported)
        details = info.value.to_error_info().details
        assert details["supported"] == {
            "minVersion": supported.min_version,
            "maxVersion": supported.max_version,
        }
        assert details["transportCode"] == "UNSUPPORTED_VERSION"


def test_no_overlap_is_a_clear_protocol_error() -> None:
    with pytest.raises(UnsupportedVersion) as info:
        negotiate(ProtocolNegotiation("2.0", "3.0"))
    error = info.value.to_error_info()
    assert error.code is ErrorCode.PROTOCOL_ERROR
    assert not error.retryable
    assert "2.0..3.0" in error.message and "1.0..1.0" in error.message
    assert SUPPORTED_VERSIONS.max_version == "1.0"


@pytest.mark.parametrize("text", ["1", "a.b", "1.", ".1", "1.2.3", "-1.0", "1.0" + "0" * 20])
def test_bad_version_strings(text: str) -> None:
    with pytest.raises(ValidationError):
        parse_version(text)


def test_inverted_range_is_rejected() -> None:
    with pytest.raises(ValidationError):
        negotiate(ProtocolNegotiation("1.5", "1.0"), ProtocolNegotiation("1.0", "2.0"))


@pytest.mark.parametrize(
    ("exc", "code", "transport_code", "retryable"),
    [
        (ConnectionFailure("refused"), "TRANSPORT_ERROR", "CONNECTION_FAILURE", True),
        (TransportTimeout("late"), "TRANSPORT_ERROR", "TIMEOUT", True),
        (PayloadTooLarge(10, 5), "TRANSPORT_ERROR", "PAYLOAD_TOO_LARGE", False),
        (MalformedMessage("bad"), "TRANSPORT_ERROR", "MALFORMED_MESSAGE", False),
    ],
)
def test_transport_errors_map_to_rfc_shape(
    exc: ConnectionFailure, code: str, transport_code: str, retryable: bool
) -> None:
    response = exc.to_response(trace_id="trace-1")
    assert response.status is ResponseStatus.ERROR
    assert response.payload is None
    assert response.trace_id == "trace-1"
    assert response.error is not None
    assert response.error.code == code
    assert response.error.details["transportCode"] == transport_code
    assert response.error.retryable is retryable


def test_agent_error_keeps_its_chosen_code() -> None:
    error = AgentError(
        "quota", code=ErrorCode.RATE_LIMIT, retryable=True, details={"retryAfter": 3}
    ).to_error_info()
    assert (error.code, error.retryable, error.details) == (
        ErrorCode.RATE_LIMIT,
        True,
        {"retryAfter": 3},
    )


def test_remote_errors_pass_through_unchanged() -> None:
    info = ErrorInfo(ErrorCode.UNAUTHORIZED, "no", False, {"x": 1})
    response = AgentResponse.failure(info, agent="a", trace_id="t")
    with pytest.raises(RemoteError) as raised:
        raise_for_error(response)
    assert raised.value.to_error_info() is info
    assert raised.value.response is response
    ok = AgentResponse.success({"v": 1})
    assert raise_for_error(ok) is ok
