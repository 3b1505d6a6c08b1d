"""What client and server of the HTTP transport agree on: paths, media types, statuses.

One table maps an error response to its HTTP status, so a plain HTTP client (curl, a load
balancer's health check, a proxy's retry rule) can act on the status while the body always
carries the complete AgentResponse.
"""

from __future__ import annotations

from typing import Final

from ...protocol.enums import ErrorCode, TransportCode
from ...protocol.models import AgentResponse

INTENT_PATH: Final = "/intent"
ROOT_PATH: Final = "/"
JSONRPC_PATH: Final = "/jsonrpc"
STREAM_PATH: Final = "/stream"
EVENTS_PATH: Final = "/events"
TASKS_PATH: Final = "/tasks"
HEALTH_PATH: Final = "/healthz"

JSON: Final = "application/json"
NDJSON: Final = "application/x-ndjson"
SSE: Final = "text/event-stream"

#: Request header asking the server to seal the frames of an event stream (EMCL).
EMCL_EVENTS_HEADER: Final = "x-intentus-emcl"

_BY_CODE: Final[dict[ErrorCode, int]] = {
    ErrorCode.VALIDATION_ERROR: 422,
    ErrorCode.AGENT_ERROR: 500,
    ErrorCode.ROUTING_ERROR: 404,
    ErrorCode.CAPABILITY_NOT_FOUND: 404,
    ErrorCode.AGENT_TIMEOUT: 504,
    ErrorCode.AGENT_UNAVAILABLE: 503,
    ErrorCode.PROTOCOL_ERROR: 400,
    ErrorCode.TRANSPORT_ERROR: 502,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.RATE_LIMIT: 429,
    ErrorCode.INTERNAL_AGENT_ERROR: 500,
    ErrorCode.PAYLOAD_TOO_LARGE: 413,
    ErrorCode.WORKFLOW_ABORTED: 409,
    ErrorCode.EMCL_FAILURE: 400,
}

_BY_TRANSPORT_CODE: Final[dict[str, int]] = {
    TransportCode.MALFORMED_MESSAGE.value: 400,
    TransportCode.PAYLOAD_TOO_LARGE.value: 413,
    TransportCode.TIMEOUT.value: 504,
    TransportCode.CONNECTION_FAILURE.value: 502,
    TransportCode.UNSUPPORTED_VERSION.value: 400,
    TransportCode.UNSUPPORTED_MESSAGE_TYPE.value: 400,
}


def status_for(response: AgentResponse) -> int:
    """The HTTP status that announces ``response`` (200 for success)."""
    error = response.error
    if error is None:
        return 200 if response.ok else 500
    transport_code = error.details.get("transportCode")
    if type(transport_code) is str:
        status = _BY_TRANSPORT_CODE.get(transport_code)
        if status is not None:
            return status
    return _BY_CODE.get(error.code, 500)


#: Statuses that say the server did not process the request: safe to retry any call.
NOT_PROCESSED_STATUSES: Final = frozenset({429, 503})
#: Statuses after which a retry may repeat work: retried for idempotent calls only.
MAYBE_PROCESSED_STATUSES: Final = frozenset({502, 504})
