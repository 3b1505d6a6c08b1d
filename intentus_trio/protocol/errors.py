"""Exceptions for failures, and their one mapping to RFC-0007 error responses.

Each exception knows its ``ErrorCode``, whether a retry can help, and (for transport
failures) its ``transportCode``. ``to_error_info`` is the only place an exception becomes
wire data. Messages are written by this package and never quote payloads or secrets.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from .enums import ErrorCode, TransportCode
from .models import AgentResponse, ErrorInfo, JsonObject


class IntentusError(Exception):
    """Base class of every error this package raises about a call."""

    code: ClassVar[ErrorCode] = ErrorCode.INTERNAL_AGENT_ERROR
    default_retryable: ClassVar[bool] = False
    transport_code: ClassVar[TransportCode | None] = None

    def __init__(
        self,
        message: str,
        *,
        details: Mapping[str, Any] | None = None,
        retryable: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details: JsonObject = dict(details) if details else {}
        self.retryable = self.default_retryable if retryable is None else retryable

    def to_error_info(self) -> ErrorInfo:
        details = self.details
        if self.transport_code is not None:
            details = {"transportCode": self.transport_code.value, **details}
        return ErrorInfo(self.code, self.message, self.retryable, details)

    def to_response(
        self, *, trace_id: str | None = None, agent: str | None = None
    ) -> AgentResponse:
        return AgentResponse.failure(self.to_error_info(), agent=agent, trace_id=trace_id)


class TransportError(IntentusError):
    """The message could not be carried (RFC-0007 §8)."""

    code = ErrorCode.TRANSPORT_ERROR


class ConnectionFailure(TransportError):
    transport_code = TransportCode.CONNECTION_FAILURE
    default_retryable = True


class TransportTimeout(TransportError):
    transport_code = TransportCode.TIMEOUT
    default_retryable = True


class PayloadTooLarge(TransportError):
    transport_code = TransportCode.PAYLOAD_TOO_LARGE

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"frame of {size} bytes exceeds the limit of {limit} bytes",
            details={"size": size, "limit": limit},
        )


class MalformedMessage(TransportError):
    """Bytes that are not a frame at all (not JSON, not UTF-8, not an object)."""

    transport_code = TransportCode.MALFORMED_MESSAGE


class ProtocolError(IntentusError):
    """A well-formed frame this endpoint cannot speak."""

    code = ErrorCode.PROTOCOL_ERROR


class UnsupportedVersion(ProtocolError):
    transport_code = TransportCode.UNSUPPORTED_VERSION

    def __init__(self, offered: tuple[str, str], supported: tuple[str, str]) -> None:
        super().__init__(
            f"no common protocol version: peer offers {offered[0]}..{offered[1]}, "
            f"this endpoint supports {supported[0]}..{supported[1]}",
            details={
                "offered": {"minVersion": offered[0], "maxVersion": offered[1]},
                "supported": {"minVersion": supported[0], "maxVersion": supported[1]},
            },
        )


class UnsupportedMessageType(ProtocolError):
    transport_code = TransportCode.UNSUPPORTED_MESSAGE_TYPE


class ValidationError(IntentusError):
    """A frame whose fields have the wrong type, size or are missing."""

    code = ErrorCode.VALIDATION_ERROR

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}", details={"field": path, "reason": reason})
        self.path = path
        self.reason = reason


class CapabilityNotFound(IntentusError):
    code = ErrorCode.CAPABILITY_NOT_FOUND


class RoutingError(IntentusError):
    code = ErrorCode.ROUTING_ERROR


class AgentTimeout(IntentusError):
    code = ErrorCode.AGENT_TIMEOUT
    default_retryable = True


class AgentUnavailable(IntentusError):
    code = ErrorCode.AGENT_UNAVAILABLE
    default_retryable = True


class AgentError(IntentusError):
    """Raised by an agent to fail a call with a chosen code, message and details."""

    code = ErrorCode.AGENT_ERROR

    def __init__(
        self,
        message: str,
        *,
        code: ErrorCode = ErrorCode.AGENT_ERROR,
        details: Mapping[str, Any] | None = None,
        retryable: bool = False,
    ) -> None:
        super().__init__(message, details=details, retryable=retryable)
        self._code = code

    def to_error_info(self) -> ErrorInfo:
        return ErrorInfo(self._code, self.message, self.retryable, self.details)


class RateLimited(IntentusError):
    """Too many requests, tasks or subscriptions; retry later (``retryAfter`` in details)."""

    code = ErrorCode.RATE_LIMIT
    default_retryable = True


class Unauthorized(IntentusError):
    code = ErrorCode.UNAUTHORIZED


class EMCLFailure(IntentusError):
    code = ErrorCode.EMCL_FAILURE


class RemoteError(IntentusError):
    """An error response received from a peer, raised by ``raise_for_error``."""

    def __init__(self, response: AgentResponse) -> None:
        error = response.error
        message = error.message if error is not None else "error response without error info"
        super().__init__(message, retryable=bool(error and error.retryable))
        self.response = response

    def to_error_info(self) -> ErrorInfo:
        if self.response.error is not None:
            return self.response.error
        return super().to_error_info()


def raise_for_error(response: AgentResponse) -> AgentResponse:
    """Return ``response`` if it succeeded, else raise ``RemoteError`` carrying it."""
    if response.error is not None or not response.ok:
        raise RemoteError(response)
    return response


def as_response(result: AgentResponse | IntentusError, trace_id: str | None) -> AgentResponse:
    """A call's outcome as a response: a local failure becomes its error response."""
    return result.to_response(trace_id=trace_id) if isinstance(result, IntentusError) else result


def raise_for_outcome(result: AgentResponse | IntentusError) -> AgentResponse:
    """``raise_for_error`` for a call's outcome: a local failure is raised as itself."""
    if isinstance(result, IntentusError):
        raise result
    return raise_for_error(result)
