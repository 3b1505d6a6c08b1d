"""Message layouts on the ZeroMQ sockets, shared by both ends.

Request/reply (DEALER or REQ -> ROUTER)::

    client sends      [requestId, b"", frame]        (a REQ client sends [b"", frame])
    ROUTER receives   [peer, requestId, b"", frame]
    ROUTER replies    [peer, requestId, b"", reply]  (the envelope is echoed, whatever it holds)

The frame is one UTF-8 JSON TransportEnvelope, exactly what the IntentusNet reference client
sends. Correlation lives in the ZeroMQ envelope, so even a reply to a frame that could not be
parsed (not JSON, oversize) reaches the right caller. A streamed request carries the header
``stream: open``; its reply is several messages with the same envelope (chunk frames, then a
final response). Control messages are single payload frames starting with a NUL byte, which no
JSON text can: ``\\x00cancel`` stops the stream of that requestId.

Events (XPUB -> SUB): ``[eventType, frame]``. Worker queue: see ``workers.py``.
"""

from __future__ import annotations

from typing import Any, Final

import zmq

#: Request header value asking for a streamed reply (header name ``stream``).
STREAM_OPEN: Final = "open"
STREAM_HEADERS: Final = {"stream": STREAM_OPEN}

CANCEL: Final = b"\x00cancel"

#: Prefix of the topic a subscriber uses to learn that its subscription is active.
SYNC_PREFIX: Final = b"\x00sync:"

#: Routing envelopes longer than this (frames before the delimiter) are dropped.
MAX_ENVELOPE_FRAMES: Final = 8
MAX_ENVELOPE_FRAME_BYTES: Final = 256

#: How much bigger than the frame limit a message may be before libzmq itself drops the
#: connection (``ZMQ_MAXMSGSIZE``); between the two limits the peer gets an error reply.
MAXMSGSIZE_FACTOR: Final = 2


def common_options(
    *, hwm: int, max_message_bytes: int, heartbeat: float | None
) -> dict[int, Any]:
    options: dict[int, Any] = {
        zmq.SNDHWM: hwm,
        zmq.RCVHWM: hwm,
        zmq.MAXMSGSIZE: max_message_bytes,
        zmq.RECONNECT_IVL: 100,
        zmq.RECONNECT_IVL_MAX: 2000,
    }
    if heartbeat:
        ms = max(1, int(heartbeat * 1000))
        options[zmq.HEARTBEAT_IVL] = ms
        options[zmq.HEARTBEAT_TIMEOUT] = 3 * ms
        options[zmq.HEARTBEAT_TTL] = 3 * ms
    return options
