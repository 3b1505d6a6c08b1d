"""``EmclProtector``: EMCL for any transport, through the ``FrameProtector`` hook.

``seal`` serialises a frame's body, seals it and marks the frame with the ``emcl`` header;
``open`` reverses it. The AAD binds the frame's headers (except hop-by-hop tracing headers)
and its version negotiation, so neither can be changed in transit.

``role`` says which way this endpoint talks, so a request can never be accepted as a reply
or the reverse: a ``client`` seals intents and events and opens responses, a ``server`` the
opposite, a ``peer`` both.

Replies are bound to requests without any per-task state: the server passes the request
frame it received (still sealed) as ``seal(reply, reply_to=request)``, which seals for that
request's sender, under its key, with the bound header ``emclReplyTo`` set to the request's
MAC. The requesting endpoint remembers the MACs of the requests it sealed until their final
reply and refuses a response that does not name one of them (``unmatched_reply``); given the
request itself (``open(reply, request=...)``) it requires exactly that one.

A request opened with an identity chain keeps it for as long as its decoded body lives:
when that very object is sealed again by a protector with a chain signer (a router
forwarding it to a remote agent, which passes the envelope on unchanged), the original
plaintext is re-sealed with the chain extended by this hop (``Emcl.forward``), so the last
receiver can verify the whole path back to the origin.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from enum import StrEnum
from typing import Final

from ..protocol import headers as h
from ..protocol._fastnew import new_frame
from ..protocol.codec import body_from_json, dumps, loads, unencodable_reply
from ..protocol.enums import MessageType
from ..protocol.errors import EMCLFailure, IntentusError
from ..protocol.models import AgentResponse, EMCLEnvelope, TransportEnvelope
from .chain import ChainPolicy, ChainSigner
from .clock import Clock
from .engine import Emcl, Opened, PendingReplies
from .envelope import EMCL_VERSION, REPLY_TO_HEADER
from .failures import Reason, failure
from .keyring import Keyring
from .replay import ReplayGuard

_REQUEST_TYPES: Final = frozenset({MessageType.INTENT, MessageType.EVENT})
_RESPONSE_TYPES: Final = frozenset({MessageType.RESPONSE})
_ALL_TYPES: Final = _REQUEST_TYPES | _RESPONSE_TYPES
_RESPONSE: Final = MessageType.RESPONSE
#: Header names the protector adds and removes again on opening.
_INTERNAL_HEADERS: Final = frozenset({h.EMCL, REPLY_TO_HEADER})
#: Requests awaiting a reply, per protector (the oldest is forgotten beyond this).
DEFAULT_MAX_PENDING: Final = 65536
#: Events awaiting an acknowledgement (kept apart so unacknowledged events never push
#: out the requests of long streams).
DEFAULT_MAX_PENDING_EVENTS: Final = 4096


#: Bodies of chained requests opened in this process, by object identity (see the module
#: docstring); an entry goes when its body is garbage-collected.
_opened: dict[int, tuple[weakref.ref[object], Opened]] = {}


def _remember(body: object, opened: Opened) -> None:
    key = id(body)

    def forget(ref: weakref.ref[object]) -> None:
        entry = _opened.get(key)
        if entry is not None and entry[0] is ref:
            del _opened[key]

    _opened[key] = (weakref.ref(body, forget), opened)


def opened_as(body: object) -> Opened | None:
    """What opening produced ``body``, if it came with an identity chain and lives on."""
    entry = _opened.get(id(body))
    if entry is None or entry[0]() is not body:
        return None
    return entry[1]


class Role(StrEnum):
    CLIENT = "client"
    SERVER = "server"
    PEER = "peer"


#: Events flow both ways: clients publish them, servers push them to subscribers.
_SEALS = {Role.CLIENT: _REQUEST_TYPES, Role.SERVER: _RESPONSE_TYPES | {MessageType.EVENT},
          Role.PEER: _ALL_TYPES}
_OPENS = {Role.CLIENT: _RESPONSE_TYPES | {MessageType.EVENT}, Role.SERVER: _REQUEST_TYPES,
          Role.PEER: _ALL_TYPES}


class PendingRequests:
    """MACs of the requests an endpoint sealed, until their final reply; bounded, O(1)."""

    __slots__ = ("_events", "_intents", "max_events", "max_intents")

    def __init__(self, max_intents: int = DEFAULT_MAX_PENDING,
                 max_events: int = DEFAULT_MAX_PENDING_EVENTS) -> None:
        if max_intents <= 0 or max_events <= 0:
            raise ValueError("pending request limits must be positive")
        self.max_intents = max_intents
        self.max_events = max_events
        self._intents: OrderedDict[str, str] = OrderedDict()
        self._events: OrderedDict[str, str] = OrderedDict()

    def add(self, binding: str, recipient: str, *, event: bool = False) -> None:
        """Expect replies to the request whose ``hmac`` is ``binding``, from ``recipient``."""
        table, limit = ((self._events, self.max_events) if event
                        else (self._intents, self.max_intents))
        table[binding] = recipient
        if len(table) > limit:
            table.popitem(last=False)

    def get(self, binding: str, /) -> str | None:
        found = self._intents.get(binding)
        return found if found is not None else self._events.get(binding)

    def done(self, binding: str) -> None:
        """The final reply arrived: no further reply to that request is accepted."""
        if self._intents.pop(binding, None) is None:
            self._events.pop(binding, None)

    def __len__(self) -> int:
        return len(self._intents) + len(self._events)


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
        pending: PendingRequests | None = None,
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
        #: Requests sealed here and awaiting replies (only for roles that open responses).
        self.pending = pending if pending is not None else PendingRequests()
        self._tracks = _RESPONSE in self._opens

    @property
    def keyring(self) -> Keyring:
        return self.engine.keyring

    # ------------------------------------------------------------------ sealing

    def seal(
        self,
        frame: TransportEnvelope,
        *,
        reply_to: TransportEnvelope | None = None,
        expect_reply: bool = True,
    ) -> TransportEnvelope:
        """Seal ``frame``; a response answering a request takes that request, as received.

        An event pushed to a subscriber may name the subscribe request as ``reply_to`` too:
        it is then sealed for that subscriber alone, under its key (in pair mode the only
        key there is), and bound to its subscription.

        A request sealed with ``expect_reply=False`` (a control frame the peer never answers,
        one-way work) is not remembered as pending: it would only push out requests that do
        await replies, whose answers would then be refused as unmatched.
        """
        body = frame.body
        plaintext = None
        if type(body) is AgentResponse:
            try:
                plaintext = dumps(body)
            except TypeError as exc:  # an agent's reply JSON cannot hold: seal the error
                frame = unencodable_reply(frame, exc)
                body = frame.body
                plaintext = dumps(body)
        mtype = frame.message_type
        if isinstance(body, EMCLEnvelope):
            raise ValueError("this frame is already sealed")
        if mtype not in self._seals:
            raise ValueError(f"a {self.role.value} endpoint does not seal {mtype.value} frames")
        headers = dict(frame.headers)
        keyring = self.engine.keyring
        if reply_to is not None:
            request = reply_to.body
            if mtype is not _RESPONSE and mtype is not MessageType.EVENT:
                raise ValueError("only a response or a pushed event answers a request")
            if (not isinstance(request, EMCLEnvelope) or request.sender is None
                    or request.key_id is None):
                raise ValueError("reply_to must be the sealed request frame as received")
            recipient = request.sender
            key = keyring.lookup(request.key_id) or keyring.sealing_key(recipient)
            if key is not None and key.peer is not None and key.peer != recipient:
                # An opened request always passes this: its key belongs to its sender.
                raise ValueError("reply_to is not a request this endpoint has opened")
            headers[REPLY_TO_HEADER] = request.hmac
        else:
            key = keyring.sealing_key(self.peer_id)
            recipient = self.peer_id or ""
        if key is None:
            raise failure(Reason.NO_KEY)
        headers[h.EMCL] = EMCL_VERSION
        neg = frame.protocol_negotiation
        negotiation = None if neg is None else (neg.min_version, neg.max_version)
        received = None if reply_to is not None or self.engine.signer is None \
            else opened_as(body)
        if received is not None and received.message_type is mtype:
            env = self.engine.forward(received, key=key, recipient=recipient,
                                      headers=headers, negotiation=negotiation)
        else:
            env = self.engine.seal(mtype, plaintext or dumps(body), key=key,
                                   recipient=recipient, headers=headers,
                                   negotiation=negotiation)
        if self._tracks and expect_reply and reply_to is None and mtype is not _RESPONSE:
            self.pending.add(env.hmac, recipient, event=mtype is MessageType.EVENT)
        return new_frame(frame.protocol, mtype, env, headers, neg)

    # ------------------------------------------------------------------ opening

    def open(
        self, frame: TransportEnvelope, *, request: TransportEnvelope | None = None
    ) -> TransportEnvelope:
        """Open a sealed frame. A response must answer a pending request of ours — exactly
        ``request`` (the sealed frame as sent) when given."""
        opened = self.open_envelope(frame, request=request)
        mtype = opened.message_type
        try:
            # Parsed like the body of an unsealed frame.
            body = body_from_json(mtype, loads(opened.body))
        except IntentusError:
            raise failure(Reason.MALFORMED) from None
        if opened.chain and mtype is not _RESPONSE:
            _remember(body, opened)
        headers = dict(frame.headers)
        for name in _INTERNAL_HEADERS:
            headers.pop(name, None)
        if (mtype is _RESPONSE and self._tracks
                and headers.get(h.STREAM) != h.STREAM_CHUNK):
            self.pending.done(frame.headers[REPLY_TO_HEADER])
        return new_frame(frame.protocol, mtype, body, headers, frame.protocol_negotiation)

    def open_envelope(
        self, frame: TransportEnvelope, *, request: TransportEnvelope | None = None
    ) -> Opened:
        """Authenticate and decrypt a sealed frame, returning the engine's result."""
        env = frame.body
        if not isinstance(env, EMCLEnvelope) or frame.headers.get(h.EMCL) != env.emcl_version:
            raise failure(Reason.MALFORMED)
        replies: PendingReplies | None = None
        if request is not None:
            sent = request.body
            if not isinstance(sent, EMCLEnvelope):
                raise ValueError("request must be the sealed request frame as sent")
            replies = {sent.hmac: sent.recipient or ""}
        elif self._tracks:
            replies = self.pending
        neg = frame.protocol_negotiation
        return self.engine.open(
            env, headers=frame.headers,
            negotiation=None if neg is None else (neg.min_version, neg.max_version),
            outer_type=frame.message_type, accept=self._opens, expected_sender=self.peer_id,
            replies=replies,
        )


def emcl_reason(exc: BaseException) -> str | None:
    """The ``reason`` of an EMCLFailure, else None."""
    if isinstance(exc, EMCLFailure):
        value = exc.details.get("reason")
        return value if isinstance(value, str) else None
    return None
