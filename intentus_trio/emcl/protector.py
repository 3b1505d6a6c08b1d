"""``EmclProtector``: EMCL for any transport, through the ``FrameProtector`` hook.

``seal`` serialises a frame's body, seals it and marks the frame with the ``emcl`` header;
``open`` reverses it. The AAD binds the frame's headers (except hop-by-hop tracing headers)
and its version negotiation, so neither can be changed in transit.

``role`` says which way this endpoint talks, so a request can never be accepted as a reply
or the reverse: a ``client`` seals intents and events and opens responses, a ``server`` the
opposite, a ``peer`` both. A server replies with the key and to the agent of the request it
answers: transports that go through ``FrameDispatcher`` get this automatically (the request
is remembered per task between ``open`` and the final reply's ``seal``); others may pass the
``ReplyTo`` from ``open_request`` to ``seal`` explicitly.
"""

from __future__ import annotations

import contextvars
from enum import StrEnum
from typing import Final

import orjson
from attrs import frozen

from ..protocol import headers as h
from ..protocol.codec import body_from_json, body_to_json
from ..protocol.enums import MessageType
from ..protocol.errors import EMCLFailure, IntentusError
from ..protocol.models import EMCLEnvelope, TransportEnvelope
from .chain import ChainPolicy, ChainSigner
from .clock import Clock
from .engine import Emcl, Opened
from .envelope import EMCL_VERSION
from .failures import Reason, failure
from .keyring import Keyring
from .replay import ReplayGuard

_REQUEST_TYPES: Final = frozenset({MessageType.INTENT, MessageType.EVENT})
_RESPONSE_TYPES: Final = frozenset({MessageType.RESPONSE})
_ALL_TYPES: Final = _REQUEST_TYPES | _RESPONSE_TYPES
#: How many unanswered requests one task remembers (nested in-process calls).
_MAX_PENDING: Final = 64


class Role(StrEnum):
    CLIENT = "client"
    SERVER = "server"
    PEER = "peer"


_SEALS = {Role.CLIENT: _REQUEST_TYPES, Role.SERVER: _RESPONSE_TYPES, Role.PEER: _ALL_TYPES}
_OPENS = {Role.CLIENT: _RESPONSE_TYPES, Role.SERVER: _REQUEST_TYPES, Role.PEER: _ALL_TYPES}


@frozen
class ReplyTo:
    """Whom a reply goes to, and with which key (the request's)."""

    sender: str
    key_id: str


class EmclProtector:
    """A ``FrameProtector`` sealing frame bodies with EMCL (see the module docstring).

    ``peer_id``, when set, is the only agent this endpoint talks to: it is the recipient of
    everything sealed (and selects a pair key for it), and the only sender accepted.
    """

    def __init__(
        self,
        keyring: Keyring,
        agent_id: str,
        *,
        peer_id: str | None = None,
        role: Role | str = Role.PEER,
        clock: Clock | None = None,
        replay: ReplayGuard | None = None,
        signer: ChainSigner | None = None,
        chain_policy: ChainPolicy | None = None,
        require_chain: bool = False,
        engine: Emcl | None = None,
    ) -> None:
        self.engine = engine or Emcl(
            keyring, agent_id, clock=clock, replay=replay, signer=signer,
            chain_policy=chain_policy, require_chain=require_chain,
        )
        self.agent_id = self.engine.agent_id
        self.peer_id = peer_id
        self.role = Role(role)
        self._seals = _SEALS[self.role]
        self._opens = _OPENS[self.role]
        self._pending: contextvars.ContextVar[tuple[ReplyTo, ...]] = contextvars.ContextVar(
            f"emcl_pending_{id(self)}", default=()
        )

    @property
    def keyring(self) -> Keyring:
        return self.engine.keyring

    # ------------------------------------------------------------------ sealing

    def seal(
        self, frame: TransportEnvelope, *, reply_to: ReplyTo | None = None
    ) -> TransportEnvelope:
        body = frame.body
        mtype = frame.message_type
        if isinstance(body, EMCLEnvelope):
            raise ValueError("this frame is already sealed")
        if mtype not in self._seals:
            raise ValueError(f"a {self.role.value} endpoint does not seal {mtype.value} frames")
        headers = dict(frame.headers)
        if reply_to is None and mtype is MessageType.RESPONSE:
            reply_to = self._take_pending(headers.get(h.STREAM) != h.STREAM_CHUNK)
        keyring = self.engine.keyring
        if reply_to is not None:
            key = keyring.lookup(reply_to.key_id) or keyring.sealing_key(reply_to.sender)
            recipient = reply_to.sender
        else:
            key = keyring.sealing_key(self.peer_id)
            recipient = self.peer_id or ""
        if key is None:
            raise failure(Reason.NO_KEY)
        headers[h.EMCL] = EMCL_VERSION
        neg = frame.protocol_negotiation
        env = self.engine.seal(
            mtype, orjson.dumps(body_to_json(body)), key=key, recipient=recipient,
            headers=headers, negotiation=None if neg is None else (neg.min_version,
                                                                   neg.max_version),
        )
        return TransportEnvelope(frame.protocol, mtype, env, headers, neg)

    # ------------------------------------------------------------------ opening

    def open_request(self, frame: TransportEnvelope) -> tuple[TransportEnvelope, ReplyTo]:
        """Open a frame and return whom to reply to, without remembering it per task."""
        opened, out = self._open(frame)
        return out, ReplyTo(opened.sender, opened.key.key_id)

    def open(self, frame: TransportEnvelope) -> TransportEnvelope:
        opened, out = self._open(frame)
        if opened.message_type in _REQUEST_TYPES and MessageType.RESPONSE in self._seals:
            pending = self._pending.get()
            self._pending.set((*pending[-(_MAX_PENDING - 1):],
                               ReplyTo(opened.sender, opened.key.key_id)))
        return out

    def open_envelope(self, frame: TransportEnvelope) -> Opened:
        """Authenticate and decrypt a sealed frame, returning the engine's result."""
        env = frame.body
        if not isinstance(env, EMCLEnvelope) or frame.headers.get(h.EMCL) != env.emcl_version:
            raise failure(Reason.MALFORMED)
        neg = frame.protocol_negotiation
        return self.engine.open(
            env, headers=frame.headers,
            negotiation=None if neg is None else (neg.min_version, neg.max_version),
            outer_type=frame.message_type, accept=self._opens, expected_sender=self.peer_id,
        )

    def _open(self, frame: TransportEnvelope) -> tuple[Opened, TransportEnvelope]:
        opened = self.open_envelope(frame)
        mtype = opened.message_type
        try:
            body = body_from_json(mtype, orjson.loads(opened.body))
        except (IntentusError, orjson.JSONDecodeError):
            raise failure(Reason.MALFORMED) from None
        headers = {k: v for k, v in frame.headers.items() if k != h.EMCL}
        return opened, TransportEnvelope(frame.protocol, mtype, body, headers,
                                         frame.protocol_negotiation)

    def _take_pending(self, final: bool) -> ReplyTo | None:
        pending = self._pending.get()
        if not pending:
            return None
        if final:
            self._pending.set(pending[:-1])
        return pending[-1]


def emcl_reason(exc: BaseException) -> str | None:
    """The ``reason`` of an EMCLFailure, else None."""
    if isinstance(exc, EMCLFailure):
        value = exc.details.get("reason")
        return value if isinstance(value, str) else None
    return None
