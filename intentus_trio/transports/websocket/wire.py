"""What the WebSocket transport adds to the TransportEnvelope: headers and control frames.

Every WebSocket message is one TransportEnvelope as UTF-8 JSON text. Requests carry a
``requestId`` header chosen by the client; every reply frame repeats it, which is what lets
many calls share one connection. A few frames steer the connection rather than carry work:
subscribing to events, cancelling a call, granting stream credit. They are ordinary intent
frames marked by a ``control`` header, whose intent name is reserved
(``intentus.ws.<operation>``) and must agree with the header. Headers are never sealed, so
a server can tell a control frame before opening it; and a peer that does not know the
header routes the reserved intent, finds no agent and answers CAPABILITY_NOT_FOUND instead
of doing something else.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Any, Final

from ...protocol import headers as h
from ...protocol.enums import ErrorCode
from ...protocol.errors import IntentusError, ProtocolError, ValidationError
from ...protocol.factory import new_intent
from ...protocol.models import IntentEnvelope, JsonObject, TransportEnvelope

#: Header naming a control operation (``Control``).
CONTROL: Final = "control"
#: Header on pushed events, and field of subscribe/unsubscribe: the client's subscription id.
SUBSCRIPTION: Final = "subscription"
#: Header on pushed events: events the server dropped so far for this subscription.
DROPPED: Final = "dropped"
#: Header on requests: milliseconds left before the client gives up on the call.
TIMEOUT_MS: Final = h.TIMEOUT_MS
#: Header on stream requests: how many chunks the client will buffer before granting more.
WINDOW: Final = "window"
#: Value of the ``stream`` header on a request that wants a streamed reply.
STREAM_OPEN: Final = "open"
#: HTTP header of the opening handshake (both directions): the sender's frame size limit.
MAX_FRAME_HTTP_HEADER: Final = b"x-intentus-max-frame"

#: Prefix of the reserved intent names of control frames.
CONTROL_INTENT_PREFIX: Final = "intentus.ws."
MAX_SUBSCRIPTION_ID_CHARS: Final = 64
MAX_CREDIT: Final = 1_000_000


class Control(StrEnum):
    #: Payload ``{"subscription": id, "eventType": pattern}``; answered with a response.
    SUBSCRIBE = "subscribe"
    #: Payload ``{"subscription": id}``; answered with a response.
    UNSUBSCRIBE = "unsubscribe"
    #: Stop the call named by the ``requestId`` header; not answered.
    CANCEL = "cancel"
    #: Payload ``{"credit": n}``: the stream named by ``requestId`` may send n more chunks.
    CREDIT = "credit"


_CONTROLS = {c.value: c for c in Control}


class TooManySubscriptions(IntentusError):
    """The connection already holds the server's limit of subscriptions."""

    code = ErrorCode.RATE_LIMIT


def control_intent(op: Control, payload: JsonObject | None = None) -> IntentEnvelope:
    return new_intent(CONTROL_INTENT_PREFIX + op.value, payload or {}, source="intentus.ws")


def parse_control(frame: TransportEnvelope) -> tuple[Control, JsonObject]:
    """The operation and payload of an opened control frame (raises IntentusError)."""
    op = _CONTROLS.get(frame.headers.get(CONTROL, ""))
    if op is None:
        raise ProtocolError(
            "unknown control operation; expected one of " + "|".join(_CONTROLS),
            details={"supported": list(_CONTROLS)},
        )
    body = frame.body
    if not isinstance(body, IntentEnvelope) or body.intent.name != CONTROL_INTENT_PREFIX + op:
        raise ProtocolError(
            f"a {op.value!r} control frame must carry intent {CONTROL_INTENT_PREFIX + op!r}"
        )
    return op, body.payload


def _short_str(payload: JsonObject, key: str, limit: int) -> str:
    value = payload.get(key)
    if type(value) is not str or not 0 < len(value) <= limit:
        raise ValidationError(f"body.payload.{key}", f"expected a string of 1..{limit} characters")
    return value


def subscription_id(payload: JsonObject) -> str:
    return _short_str(payload, SUBSCRIPTION, MAX_SUBSCRIPTION_ID_CHARS)


def event_pattern(payload: JsonObject) -> str:
    return _short_str(payload, "eventType", 256)


def credit(payload: JsonObject) -> int:
    value: Any = payload.get("credit")
    if type(value) is not int or not 0 < value <= MAX_CREDIT:
        raise ValidationError("body.payload.credit", f"expected an integer in 1..{MAX_CREDIT}")
    return value


def _count(text: str | None, limit: int) -> int | None:
    # isascii: isdigit() also accepts digits int() refuses (superscripts, circled digits)
    if text is None or not (text.isascii() and text.isdigit()) or len(text) > 12:
        return None
    return min(int(text), limit)


def window(headers: Mapping[str, str]) -> int | None:
    """The stream window a client asked for; None when it does not do flow control."""
    value = _count(headers.get(WINDOW), MAX_CREDIT)
    return value if value else None


def parse_max_frame(headers: Iterable[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name.lower() == MAX_FRAME_HTTP_HEADER:
            text = value.decode("ascii", "replace").strip()
            n = _count(text, 1 << 40)
            return n if n else None
    return None
