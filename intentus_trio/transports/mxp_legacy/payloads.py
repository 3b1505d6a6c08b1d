"""The JSON that legacy MXP messages carry, in the shapes existing MXP agents use.

MXP agents put one JSON object in each message's payload; there is no envelope standard, so
the shapes below are accepted liberally and normalised into our model, where the protocol
codec validates them as strictly as any other frame:

* Call, a full IntentEnvelope (camelCase, as our client sends by default);
* Call, compact: ``{"intent": "name" | {"name", "version"}, "payload": {...}}`` plus any
  envelope fields; missing ``context``/``metadata`` fields are filled in;
* Call, as the MXP agents runtime sends it: ``{"type": "<name>", ...}`` — the intent is
  ``type`` and the agent receives the whole object as its payload; a string ``request_id``
  becomes the request id and is echoed at the top level of the reply, where the runtime's
  coordinator looks for it to route the reply home.

Replies are the AgentResponse JSON (plus that ``request_id``). Protocol errors travel in MXP
Error messages as ``{"error": message, "code": CODE, "retryable": bool, "details": {...}}``,
a superset of the ``{"error", "code"}`` object the runtime's registry client reads.
"""

from __future__ import annotations

import enum
from typing import Any, Final

from ...protocol.codec import (
    MAX_NAME_CHARS,
    dumps,
    error_to_json,
    event_from_json,
    event_to_json,
    intent_from_json,
    intent_to_json,
    loads,
    response_from_json,
    response_to_json,
)
from ...protocol.enums import ErrorCode
from ...protocol.errors import (
    IntentusError,
    MalformedMessage,
    PayloadTooLarge,
    ProtocolError,
    ValidationError,
)
from ...protocol.factory import new_id, utc_now
from ...protocol.models import (
    PROTOCOL_VERSION,
    AgentResponse,
    ErrorInfo,
    Event,
    IntentEnvelope,
    JsonObject,
)

__all__ = [
    "MAX_LEGACY_PAYLOAD",
    "PayloadStyle",
    "call_envelope",
    "call_payload",
    "error_payload",
    "error_response",
    "event_from_payload",
    "event_payload",
    "heartbeat_payload",
    "json_object",
    "reply_response",
    "response_payload",
]

MAX_LEGACY_PAYLOAD: Final = 65_467
"""One message per UDP datagram: 65,507 bytes of IPv4 UDP payload minus 40 bytes of MXP."""

_CODES = {code.value: code for code in ErrorCode}


class PayloadStyle(enum.StrEnum):
    """How the legacy client writes a Call's JSON."""

    ENVELOPE = "envelope"
    """The full IntentEnvelope: what our server (and any IntentusNet-aware peer) reads."""
    FLAT = "flat"
    """``{"type": intent name, **payload, "request_id": ...}``: what MXP runtime agents read."""


def json_object(data: bytes) -> JsonObject:
    """Parse a payload that must be one JSON object (raises MalformedMessage)."""
    obj = loads(data)
    if type(obj) is not dict:
        raise MalformedMessage("the MXP payload is JSON but not an object")
    return obj


def _section(obj: JsonObject, key: str) -> JsonObject:
    value = obj.get(key)
    if value is None:
        return {}
    if type(value) is not dict:
        raise ValidationError(f"body.{key}", "expected an object")
    return value


def call_envelope(
    obj: JsonObject, *, trace_id: str, source: str
) -> tuple[IntentEnvelope, str | None]:
    """Normalise a Call's JSON into an IntentEnvelope; returns it and the ``request_id`` echo.

    ``trace_id`` is used when the JSON carries none (it comes from the MXP header).
    """
    echo = obj.get("request_id")
    echo = echo if type(echo) is str and len(echo) <= MAX_NAME_CHARS else None
    if "intent" in obj:
        intent = obj["intent"]
        full = dict(obj)
        full["intent"] = {"name": intent} if type(intent) is str else intent
        full.setdefault("payload", {})
    elif "type" in obj:
        name = obj["type"]
        if type(name) is not str or not name:
            raise ValidationError("body.type", "expected a non-empty string")
        full = {"intent": {"name": name}, "payload": obj}
    else:
        raise ValidationError("body", "a Call needs an 'intent' (or a 'type') field")
    now = utc_now()
    full.setdefault("version", PROTOCOL_VERSION)
    full["context"] = {"sourceAgent": source, "timestamp": now, **_section(obj, "context")}
    full["metadata"] = {
        "requestId": echo or new_id(),
        "source": source,
        "createdAt": now,
        "traceId": trace_id,
        **_section(obj, "metadata"),
    }
    env = intent_from_json(full)
    if not env.intent.name:
        raise ValidationError("body.intent.name", "expected a non-empty string")
    return env, echo


def call_payload(env: IntentEnvelope, style: PayloadStyle = PayloadStyle.ENVELOPE) -> bytes:
    if style is PayloadStyle.FLAT:
        obj: JsonObject = {
            "type": env.intent.name,
            **env.payload,
            "request_id": env.metadata.request_id,
        }
        return dumps(obj)
    return dumps(intent_to_json(env))


def response_payload(response: AgentResponse, request_id: str | None = None) -> bytes:
    obj = response_to_json(response)
    if request_id is not None:
        obj["request_id"] = request_id
    return dumps(obj)


def reply_response(data: bytes, *, trace_id: str) -> AgentResponse:
    """Interpret a Response message's payload.

    An AgentResponse (``version`` and ``status`` success|error) is taken as it is; any other
    JSON object is an MXP agent's own reply and becomes the payload of a success response.
    """
    try:
        obj = loads(data)
    except IntentusError as exc:
        return exc.to_response(trace_id=trace_id)
    if type(obj) is not dict:
        obj = {"value": obj}
    if obj.get("status") in ("success", "error") and type(obj.get("version")) is str:
        try:
            response = response_from_json(obj)
        except IntentusError as exc:
            return ProtocolError(
                f"the peer's response is not a valid AgentResponse: {exc.message}"
            ).to_response(trace_id=trace_id)
        if response.trace_id is None:
            response = AgentResponse(response.version, response.status, response.payload,
                                     {**response.metadata, "traceId": trace_id}, response.error)
        return response
    agent = obj.get("agent")
    return AgentResponse.success(
        obj, agent=agent if type(agent) is str else None, trace_id=trace_id
    )


def error_payload(error: IntentusError | ErrorInfo) -> bytes:
    info = error.to_error_info() if isinstance(error, IntentusError) else error
    out = error_to_json(info)
    return dumps({"error": out["message"], "code": out["code"], "retryable": out["retryable"],
                  "details": out["details"]})


def error_response(data: bytes, *, trace_id: str) -> AgentResponse:
    """The AgentResponse for an MXP Error message (ours, the runtime's, or anything)."""
    try:
        obj = loads(data)
    except IntentusError:
        obj = None
    if type(obj) is not dict:
        obj = {}
    message = obj.get("error")
    raw_code = obj.get("code")
    code = _CODES.get(raw_code) if type(raw_code) is str else None
    details = obj.get("details")
    details = dict(details) if type(details) is dict else {}
    if code is None and type(raw_code) is str:
        details["peerCode"] = raw_code[:MAX_NAME_CHARS]
    info = ErrorInfo(
        code or ErrorCode.PROTOCOL_ERROR,
        message[:65536] if type(message) is str else "the peer answered with an MXP Error",
        obj.get("retryable") is True,
        details,
    )
    return AgentResponse.failure(info, trace_id=trace_id)


def event_payload(event: Event) -> bytes:
    return dumps(event_to_json(event))


def event_from_payload(
    obj: JsonObject, *, default_type: str, event_id: str, source: str, trace_id: str | None
) -> Event:
    """An Event from our Event JSON, or from any object an MXP agent publishes.

    The type is ``eventType`` (or ``event_type``/``type``), else ``default_type``; the payload
    is ``payload`` when the object names its type and has one, else the whole object.
    """
    if all(k in obj for k in ("eventType", "payload", "eventId", "source", "timestamp")):
        event = event_from_json(obj)
        if event.trace_id is None:
            event = Event(event.event_type, event.payload, event.event_id, event.source,
                          event.timestamp, trace_id)
        return event
    event_type: Any = next((obj[k] for k in ("eventType", "event_type", "type") if k in obj),
                           None)
    payload: Any = obj
    if event_type is None:
        event_type = default_type
    elif type(obj.get("payload")) is dict:
        payload = obj["payload"]
    full = {
        "eventType": event_type,
        "payload": payload,
        "eventId": obj.get("eventId", event_id),
        "source": obj.get("source", source),
        "timestamp": obj.get("timestamp", utc_now()),
        "traceId": obj.get("traceId", trace_id),
    }
    return event_from_json(full)


def heartbeat_payload(obj: JsonObject | None) -> bytes:
    """The reply to AgentHeartbeat, in the shape the runtime's registry client reads."""
    agent_id = obj.get("agent_id") if obj is not None else None
    return dumps({
        "success": True,
        "needs_register": False,
        "agent_id": agent_id if type(agent_id) is str else "",
        "timestamp": utc_now(),
    })


def check_size(data: bytes) -> bytes:
    if len(data) > MAX_LEGACY_PAYLOAD:
        raise PayloadTooLarge(len(data), MAX_LEGACY_PAYLOAD)
    return data
