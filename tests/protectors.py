"""A stand-in FrameProtector for transport tests: real EMCL lives in intentus_trio.emcl.

It 'seals' a body as base64 JSON with an HMAC-SHA256 tag under a fixed key. That proves the
plumbing (every frame sealed and opened, nothing readable on the wire, tampering and wrong
keys detected, sealed replies) and protects nothing: nothing is encrypted.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from msgspec.structs import replace

from intentus_trio import EMCLEnvelope, EMCLFailure, MessageType, TransportEnvelope
from intentus_trio.protocol import headers as h
from intentus_trio.protocol.codec import body_from_json, body_to_json, dumps, loads


class StandInProtector:
    """Counts what it seals and opens; a different ``key`` cannot open its frames."""

    def __init__(self, key: bytes | str = b"test-only-key") -> None:
        self.key = key.encode() if isinstance(key, str) else key
        self.sealed = 0
        self.opened = 0

    def _tag(self, text: str) -> str:
        return hmac.new(self.key, text.encode(), hashlib.sha256).hexdigest()

    def seal(
        self,
        frame: TransportEnvelope,
        *,
        reply_to: TransportEnvelope | None = None,
        expect_reply: bool = True,
    ) -> TransportEnvelope:
        self.sealed += 1
        text = base64.b64encode(dumps(body_to_json(frame.body))).decode()
        body = EMCLEnvelope("1.0", text, "n", self._tag(text), message_type=frame.message_type)
        return replace(frame, body=body, headers={**frame.headers, h.EMCL: "1.0"})

    def open(self, frame: TransportEnvelope) -> TransportEnvelope:
        body = frame.body
        if not isinstance(body, EMCLEnvelope) or not hmac.compare_digest(
            body.hmac, self._tag(body.ciphertext)
        ):
            raise EMCLFailure("cannot open this frame", details={"reason": "bad_tag"})
        self.opened += 1
        mtype = body.message_type or frame.message_type
        if mtype is MessageType.EMCL:
            mtype = MessageType.INTENT
        inner = body_from_json(mtype, loads(base64.b64decode(body.ciphertext)))
        headers = {k: v for k, v in frame.headers.items() if k != h.EMCL}
        return replace(frame, body=inner, message_type=mtype, headers=headers)
