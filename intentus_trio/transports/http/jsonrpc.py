"""JSON-RPC 2.0 messages of the HTTP transport (no I/O).

Methods:

* ``intent`` — params: an IntentEnvelope object; result: the AgentResponse object.
* ``frame`` — params: a TransportEnvelope object (intent or event, sealed or not); result:
  the reply frame. EMCL clients use this one, since only whole frames can be sealed.
* ``event.publish`` — params: an Event object; result: ``{"delivered": <count>}``.
* ``ping`` — no params; result: ``{"pong": true}``.

Every error object's ``data`` is the complete AgentResponse error, so the RFC-0007 code,
``retryable`` and ``details`` survive the trip; an intent that fails answers with code
``-32000`` and its AgentResponse in ``data``.

HTTP status: a batch is answered 200 (its calls may differ in outcome); a lone call is
answered with the status its error maps to (as on the REST endpoints), 400 for a message
that is not JSON or not a request, 204 for a notification.
"""

from __future__ import annotations

from typing import Any, Final

import attrs

from ...protocol.codec import response_from_json, response_to_json
from ...protocol.errors import (
    IntentusError,
    MalformedMessage,
    ProtocolError,
    UnsupportedMessageType,
    ValidationError,
)
from ...protocol.models import AgentResponse, JsonObject
from .wire import status_for

PARSE_ERROR: Final = -32700
INVALID_REQUEST: Final = -32600
METHOD_NOT_FOUND: Final = -32601
INVALID_PARAMS: Final = -32602
INTERNAL_ERROR: Final = -32603
#: The call was valid and carried out, and its AgentResponse is an error.
INTENT_FAILED: Final = -32000

METHODS: Final = frozenset({"intent", "frame", "event.publish", "ping"})

_MESSAGES: Final = {
    PARSE_ERROR: "Parse error",
    INVALID_REQUEST: "Invalid Request",
    METHOD_NOT_FOUND: "Method not found",
    INVALID_PARAMS: "Invalid params",
    INTERNAL_ERROR: "Internal error",
    INTENT_FAILED: "Intent failed",
}

_MAX_ID_CHARS: Final = 256


@attrs.frozen
class Call:
    """One well-formed request of a JSON-RPC message."""

    id: str | int | None
    method: str
    params: Any
    notification: bool


def error(
    request_id: str | int | None, code: int, response: AgentResponse
) -> JsonObject:
    """An error response whose ``data`` is the AgentResponse error."""
    return {
        "jsonrpc": "2.0",
        "error": {"code": code, "message": _MESSAGES[code], "data": response_to_json(response)},
        "id": request_id,
    }


def result(request_id: str | int | None, value: Any) -> JsonObject:
    return {"jsonrpc": "2.0", "result": value, "id": request_id}


def status_of(reply: JsonObject) -> int:
    """The HTTP status of a lone call's reply: 200, or the status of its error's data."""
    err = reply.get("error")
    if err is None:
        return 200
    if err["code"] in (PARSE_ERROR, INVALID_REQUEST):
        return 400
    return status_for(response_from_json(err["data"], "data"))


def code_for(exc: IntentusError) -> int:
    """The JSON-RPC code of a failure to decode or carry out a call."""
    if isinstance(exc, MalformedMessage):
        return PARSE_ERROR
    if isinstance(exc, ValidationError):
        return INVALID_PARAMS
    return INTENT_FAILED


def parse_call(obj: Any) -> Call | JsonObject:
    """A Call, or the error response for an element that is not a valid request."""
    if type(obj) is not dict or obj.get("jsonrpc") != "2.0":
        return error(None, INVALID_REQUEST, ProtocolError(
            'not a JSON-RPC 2.0 request object (expected "jsonrpc": "2.0")').to_response())
    notification = "id" not in obj
    request_id = obj.get("id")
    if not (request_id is None or type(request_id) is int
            or (type(request_id) is str and len(request_id) <= _MAX_ID_CHARS)):
        return error(None, INVALID_REQUEST, ValidationError(
            "id", "expected a string, an integer or null").to_response())
    method = obj.get("method")
    if type(method) is not str:
        return error(request_id, INVALID_REQUEST, ValidationError(
            "method", "expected a string").to_response())
    params = obj.get("params")
    if params is not None and type(params) not in (dict, list):
        return error(request_id, INVALID_REQUEST, ValidationError(
            "params", "expected an object or an array").to_response())
    if method not in METHODS:
        return error(request_id, METHOD_NOT_FOUND, UnsupportedMessageType(
            "unknown method; expected one of " + "|".join(sorted(METHODS)),
            details={"methods": sorted(METHODS)}).to_response())
    return Call(request_id, method, params, notification)


def response_of(item: Any) -> AgentResponse:
    """Read one JSON-RPC response element whose result or error is an AgentResponse."""
    if type(item) is not dict:
        raise ProtocolError("a JSON-RPC response element is not an object")
    if "result" in item:
        return response_from_json(item["result"], "result")
    err = item.get("error")
    if type(err) is not dict:
        raise ProtocolError("a JSON-RPC response has neither result nor error")
    data = err.get("data")
    if data is not None:
        try:
            return response_from_json(data, "error.data")
        except IntentusError:
            pass
    code, message = err.get("code"), err.get("message")
    return ProtocolError(
        f"JSON-RPC error {code}: {str(message)[:200]}",
        details={"jsonrpcCode": code if type(code) is int else None},
    ).to_response()
