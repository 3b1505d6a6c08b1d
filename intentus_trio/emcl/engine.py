"""Sealing and opening EMCL envelopes (bytes in, envelopes out; frames are protector.py's job).

Opening checks, in this order, and stops at the first failure: structure and encodings,
key id, MAC (constant-time compare), then — the envelope now being authentic — direction,
reply binding, sender, recipient, timestamp window and nonce cache, and only then decrypts
(the AEAD tag is verified before any plaintext exists), verifies the identity chain and
records the nonce.

The hot path is one libsodium call per direction into a reused buffer, one keyed BLAKE2b
over the AAD, nonce and tag (copied from a keyed state), one SIMD base64 call per binary
field, AAD prefixes, header names and negotiation bytes from a cache, and the last
timestamp formatted or parsed remembered. ``seal_object``/``open_object`` work on the
envelope's JSON object directly; ``seal``/``open`` on the ``EMCLEnvelope`` model that frames
carry. An engine is used by one thread (trio: one run).
"""

from __future__ import annotations

import hmac
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any, Final, NamedTuple, Protocol

import pybase64

from ..protocol.codec import MAX_NAME_CHARS, emcl_from_json
from ..protocol.enums import MessageType
from ..protocol.errors import EMCLFailure, IntentusError
from ..protocol.models import EMCLEnvelope, IdentityEntry
from . import _sodium
from .chain import ChainPolicy, ChainSigner, body_digest, verify_chain
from .clock import Clock
from .encoding import (
    b64_canonical,
    b64d,
    b64e,
    format_timestamp,
    parse_timestamp,
)
from .envelope import (
    EMCL_VERSION,
    MAC_BYTES,
    NONCE_BYTES,
    REPLY_TO_HEADER,
    SALT_BYTES,
    TAG_BYTES,
    AadBuilder,
    RawEntry,
)
from .failures import Reason, failure
from .keyring import Keyring, SessionKey
from .replay import ReplayGuard

log = logging.getLogger("intentus_trio.emcl")

_REQUESTS: Final = frozenset({MessageType.INTENT, MessageType.EVENT, MessageType.EMCL})
_INNER: Final = {t.value: t for t in (MessageType.INTENT, MessageType.RESPONSE,
                                      MessageType.EVENT)}
_RESPONSE: Final = MessageType.RESPONSE
_EMPTY: Mapping[str, str] = {}
_FRESH: Final = NONCE_BYTES + SALT_BYTES
_MIN_CIPHERTEXT: Final = SALT_BYTES + TAG_BYTES
_compare = hmac.compare_digest
_b64decode = pybase64.b64decode
_encrypt = _sodium.encrypt_into
_decrypt = _sodium.decrypt_into
_NULL = _sodium.NULL
#: ``Opened(...)`` without the NamedTuple's Python-level ``__new__``.
_tuple_new = tuple.__new__
_new_envelope = EMCLEnvelope


class PendingReplies(Protocol):
    """Requests awaiting replies: request ``hmac`` -> the agent expected to answer ("" any)."""

    def get(self, binding: str, /) -> str | None: ...


class Opened(NamedTuple):
    """An authenticated, decrypted envelope."""

    message_type: MessageType
    #: The serialised body (plaintext without its salt).
    body: bytes
    #: The 16 random bytes sealed in front of the body.
    salt: bytes
    sender: str
    recipient: str
    key: SessionKey
    chain: tuple[IdentityEntry, ...]
    timestamp: float

    @property
    def plaintext(self) -> bytes:
        """The whole plaintext, salt included: what the chain signs and ``forward`` re-seals."""
        return self.salt + self.body


def _refuse(reason: Reason, key_id: object) -> EMCLFailure:
    log.debug("refused an EMCL envelope: %s (key id %.64r)", reason.value, key_id)
    return failure(reason)


def _raw_chain(chain: tuple[IdentityEntry, ...]) -> list[RawEntry]:
    raw: list[RawEntry] = []
    for e in chain:
        public, signature = b64d(e.public_key), b64d(e.signature)
        if public is None or signature is None:
            raise ValueError("malformed identity chain entry")
        raw.append((e.agent_id, public, e.timestamp, signature))
    return raw


def _chain_json(chain: tuple[IdentityEntry, ...]) -> list[dict[str, str]]:
    return [{"agentId": e.agent_id, "publicKey": e.public_key, "timestamp": e.timestamp,
             "signature": e.signature} for e in chain]


class Emcl:
    """One agent's EMCL endpoint: its keys, identity, clock, replay cache and chain policy.

    ``signer`` adds this agent's entry to the identity chain of everything it seals.
    ``chain_policy`` (if set) must accept the chain of every envelope opened; with
    ``require_chain`` an envelope without a chain is refused even without a policy.
    ``random`` supplies nonces and salts (tests and vectors pass a fixed source).
    """

    def __init__(
        self,
        keyring: Keyring,
        agent_id: str,
        *,
        clock: Clock | None = None,
        replay: ReplayGuard | None = None,
        signer: ChainSigner | None = None,
        chain_policy: ChainPolicy | None = None,
        require_chain: bool = False,
        random: Callable[[int], bytes] = os.urandom,
    ) -> None:
        if signer is not None and signer.agent_id != agent_id:
            raise ValueError("the chain signer must sign as this agent")
        self.keyring = keyring
        self.agent_id = agent_id
        self.clock = clock if clock is not None else keyring.clock
        self.replay = replay if replay is not None else ReplayGuard()
        self.signer = signer
        self.chain_policy = chain_policy
        self.require_chain = require_chain or chain_policy is not None
        self.random = random
        self._aad = AadBuilder()
        self._sealed = _sodium.Scratch()
        self._opened = _sodium.Scratch()
        self._ts_second = -1
        self._ts_prefix = ""
        self._ts_ms = -1
        self._ts_text = ""
        self._parsed_text: str | None = None
        self._parsed_value = 0.0
        self._second_prefix = ""
        self._second_value = 0.0

    def _parse_timestamp(self, text: str) -> float | None:
        # Consecutive envelopes mostly share their timestamp, or at least its second: the
        # caller checks the former, this skips the calendar for the latter.
        if len(text) == 24 and text[:20] == self._second_prefix:
            milli = text[20:23]
            if text[23] != "Z" or not (milli.isascii() and milli.isdigit()):
                return None
            value = self._second_value + int(milli) / 1000
        else:
            parsed = parse_timestamp(text)
            if parsed is None:
                return None
            value = parsed
            self._second_prefix = text[:20]
            self._second_value = value - int(text[20:23]) / 1000
        self._parsed_text = text
        self._parsed_value = value
        return value

    # ------------------------------------------------------------------ sealing

    def _timestamp(self) -> str:
        ms = int(self.clock() * 1000)
        return self._ts_text if ms == self._ts_ms else self._new_timestamp(ms)

    def _new_timestamp(self, ms: int) -> str:
        second, milli = divmod(ms, 1000)
        if second != self._ts_second:
            self._ts_prefix = format_timestamp(second)[:20]
            self._ts_second = second
        self._ts_ms = ms
        self._ts_text = text = f"{self._ts_prefix}{milli:03d}Z"
        return text

    def _fresh(self) -> tuple[bytes, bytes]:
        fresh = self.random(_FRESH)
        if len(fresh) != _FRESH:
            raise ValueError("the random source returned the wrong number of bytes")
        return fresh[:NONCE_BYTES], fresh[NONCE_BYTES:]

    def _seal_new(
        self,
        message_type: MessageType,
        body: bytes,
        key: SessionKey,
        recipient: str,
        headers: Mapping[str, str],
        negotiation: tuple[str, str] | None,
    ) -> tuple[str, str, str, str, tuple[IdentityEntry, ...]]:
        """(ciphertext, nonce, hmac, timestamp, chain) of a new envelope around ``body``."""
        nonce, salt = self._fresh()
        plaintext = salt + body
        timestamp = self._timestamp()
        if self.signer is None:
            chain: tuple[IdentityEntry, ...] = ()
        else:
            chain = (self.signer.entry((), body_digest(plaintext), timestamp),)
        ciphertext, nonce_text, mac = self._encrypt(message_type, plaintext, nonce, timestamp,
                                                    key, recipient, headers, negotiation, chain)
        return ciphertext, nonce_text, mac, timestamp, chain

    def seal(
        self,
        message_type: MessageType,
        body: bytes,
        *,
        key: SessionKey,
        recipient: str = "",
        headers: Mapping[str, str] = _EMPTY,
        negotiation: tuple[str, str] | None = None,
    ) -> EMCLEnvelope:
        """Seal a serialised body; the chain holds this agent's entry if it has a signer."""
        ciphertext, nonce, mac, timestamp, chain = self._seal_new(
            message_type, body, key, recipient, headers, negotiation)
        return _new_envelope(EMCL_VERSION, ciphertext, nonce, mac, chain, key.key_id,
                             self.agent_id, recipient, timestamp, message_type)

    def seal_object(
        self,
        message_type: MessageType,
        body: bytes,
        *,
        key: SessionKey,
        recipient: str = "",
        headers: Mapping[str, str] = _EMPTY,
        negotiation: tuple[str, str] | None = None,
    ) -> dict[str, Any]:
        """``seal``, returning the envelope's JSON object (what goes on the wire)."""
        ciphertext, nonce, mac, timestamp, chain = self._seal_new(
            message_type, body, key, recipient, headers, negotiation)
        return {"emclVersion": EMCL_VERSION, "ciphertext": ciphertext, "nonce": nonce,
                "hmac": mac, "identityChain": _chain_json(chain) if chain else [],
                "keyId": key.key_id, "sender": self.agent_id, "recipient": recipient,
                "timestamp": timestamp, "messageType": message_type._value_}

    def forward(
        self,
        opened: Opened,
        *,
        key: SessionKey,
        recipient: str = "",
        headers: Mapping[str, str] = _EMPTY,
        negotiation: tuple[str, str] | None = None,
    ) -> EMCLEnvelope:
        """Re-seal an opened envelope's exact plaintext for the next hop, extending its chain."""
        if self.signer is None:
            raise ValueError("forwarding needs a chain signer")
        timestamp = self._timestamp()
        plaintext = opened.plaintext
        entry = self.signer.entry(opened.chain, body_digest(plaintext), timestamp)
        nonce, _ = self._fresh()
        return self._seal(opened.message_type, plaintext, nonce, timestamp, key, recipient,
                          headers, negotiation, (*opened.chain, entry))

    def _seal(
        self,
        message_type: MessageType,
        plaintext: bytes,
        nonce: bytes,
        timestamp: str,
        key: SessionKey,
        recipient: str,
        headers: Mapping[str, str],
        negotiation: tuple[str, str] | None,
        chain: tuple[IdentityEntry, ...],
    ) -> EMCLEnvelope:
        ciphertext, nonce_text, mac = self._encrypt(
            message_type, plaintext, nonce, timestamp, key, recipient, headers, negotiation,
            chain)
        return _new_envelope(EMCL_VERSION, ciphertext, nonce_text, mac, chain, key.key_id,
                             self.agent_id, recipient, timestamp, message_type)

    def _encrypt(
        self,
        message_type: MessageType,
        plaintext: bytes,
        nonce: bytes,
        timestamp: str,
        key: SessionKey,
        recipient: str,
        headers: Mapping[str, str],
        negotiation: tuple[str, str] | None,
        chain: tuple[IdentityEntry, ...],
    ) -> tuple[str, str, str]:
        """(ciphertext, nonce, hmac) in their wire encodings."""
        if len(nonce) != NONCE_BYTES:
            raise ValueError("XChaCha20-Poly1305 takes a 24-byte nonce")
        aad = self._aad(key.key_id, message_type._value_, self.agent_id, recipient, timestamp,
                        negotiation, headers, _raw_chain(chain) if chain else ())
        size = len(plaintext) + TAG_BYTES
        out = self._sealed
        if size > out.size:
            out.get(size)
        _encrypt(out.buf, _NULL, plaintext, size - TAG_BYTES, aad, len(aad), _NULL, nonce,
                 key.enc_key)
        sealed = out.memory[:size]
        mac = key.mac_state.copy()
        mac.update(aad + nonce + sealed[size - TAG_BYTES:])
        return b64e(sealed), b64e(nonce), b64e(mac.digest())

    # ------------------------------------------------------------------ opening

    def open(
        self,
        env: EMCLEnvelope,
        *,
        headers: Mapping[str, str] = _EMPTY,
        negotiation: tuple[str, str] | None = None,
        outer_type: MessageType | None = None,
        accept: frozenset[MessageType] | None = None,
        expected_sender: str | None = None,
        replies: PendingReplies | None = None,
    ) -> Opened:
        """Authenticate and decrypt ``env`` or raise ``EMCLFailure`` with the reason.

        ``outer_type`` is the message type the frame claimed, ``accept`` the authenticated
        types this endpoint takes, ``expected_sender`` the only sender it takes. With
        ``replies``, a response must carry the ``emclReplyTo`` header naming one of them.
        """
        kid, sender, recipient = env.key_id, env.sender, env.recipient
        ts_text, mtype = env.timestamp, env.message_type
        if (kid is None or sender is None or recipient is None or ts_text is None
                or mtype is None or mtype is MessageType.EMCL):
            raise _refuse(Reason.MALFORMED, kid)
        return self._open(env.emcl_version, env.ciphertext, env.nonce, env.hmac,
                          env.identity_chain, kid, sender, recipient, ts_text, mtype, headers,
                          negotiation, outer_type, accept, expected_sender, replies)

    def open_object(
        self,
        obj: Mapping[str, Any],
        *,
        headers: Mapping[str, str] = _EMPTY,
        negotiation: tuple[str, str] | None = None,
        outer_type: MessageType | None = None,
        accept: frozenset[MessageType] | None = None,
        expected_sender: str | None = None,
        replies: PendingReplies | None = None,
    ) -> Opened:
        """``open`` for the envelope's parsed JSON object (as ``seal_object`` returns it)."""
        # The common shape, checked inline; anything else goes through the full decoder.
        try:
            version, ciphertext, nonce, mac, chain, kid, sender, recipient, ts_text, inner = (
                obj["emclVersion"], obj["ciphertext"], obj["nonce"], obj["hmac"],
                obj["identityChain"], obj["keyId"], obj["sender"], obj["recipient"],
                obj["timestamp"], obj["messageType"])
        except (KeyError, TypeError):
            pass
        else:
            # _open compares the version with the one string it may be.
            if (type(ciphertext) is str and type(nonce) is str and type(mac) is str
                    and type(chain) is list and not chain and type(kid) is str
                    and type(sender) is str and type(recipient) is str
                    and type(ts_text) is str and type(inner) is str
                    and len(kid) <= MAX_NAME_CHARS and len(sender) <= MAX_NAME_CHARS
                    and len(recipient) <= MAX_NAME_CHARS):
                mtype = _INNER.get(inner)
                if mtype is not None:
                    return self._open(version, ciphertext, nonce, mac, (), kid, sender,
                                      recipient, ts_text, mtype, headers, negotiation,
                                      outer_type, accept, expected_sender, replies)
        try:
            env = emcl_from_json(obj)
        except IntentusError:
            raise _refuse(Reason.MALFORMED, None) from None
        return self.open(env, headers=headers, negotiation=negotiation, outer_type=outer_type,
                         accept=accept, expected_sender=expected_sender, replies=replies)

    def _open(
        self,
        version: str,
        ciphertext_text: str,
        nonce_text: str,
        mac_text: str,
        chain: tuple[IdentityEntry, ...],
        kid: str,
        sender: str,
        recipient: str,
        ts_text: str,
        mtype: MessageType,
        headers: Mapping[str, str],
        negotiation: tuple[str, str] | None,
        outer_type: MessageType | None,
        accept: frozenset[MessageType] | None,
        expected_sender: str | None,
        replies: PendingReplies | None,
    ) -> Opened:
        # 1. Structure and canonical encodings (see encoding.py: the decoder refuses other
        # characters and misplaced padding; lengths and one character do the rest).
        try:
            nonce = _b64decode(nonce_text, None, True)
            tag = _b64decode(mac_text, None, True)
            ciphertext = _b64decode(ciphertext_text, None, True)
        except (ValueError, TypeError):
            raise _refuse(Reason.MALFORMED, kid) from None
        timestamp = (self._parsed_value if ts_text == self._parsed_text
                     else self._parse_timestamp(ts_text))
        size = len(ciphertext)
        if (version != EMCL_VERSION or timestamp is None
                or len(nonce) != NONCE_BYTES or not b64_canonical(nonce_text, NONCE_BYTES)
                or len(tag) != MAC_BYTES or not b64_canonical(mac_text, MAC_BYTES)
                or size < _MIN_CIPHERTEXT or not b64_canonical(ciphertext_text, size)):
            raise _refuse(Reason.MALFORMED, kid)
        raw_chain: list[RawEntry] = []
        if chain:
            for e in chain:
                public, signature = b64d(e.public_key), b64d(e.signature)
                if (public is None or len(public) != 32 or signature is None
                        or len(signature) != 64 or parse_timestamp(e.timestamp) is None):
                    raise _refuse(Reason.MALFORMED, kid)
                raw_chain.append((e.agent_id, public, e.timestamp, signature))
        # 2. Key.
        key = self.keyring.lookup(kid)
        if key is None:
            raise _refuse(Reason.UNKNOWN_KEY, kid)
        # 3-4. AAD and MAC.
        try:
            aad = self._aad(kid, mtype._value_, sender, recipient, ts_text, negotiation,
                            headers, raw_chain)
        except UnicodeEncodeError:
            raise _refuse(Reason.MALFORMED, kid) from None
        mac = key.mac_state.copy()
        mac.update(aad + nonce + ciphertext[size - TAG_BYTES:])
        if not _compare(mac.digest(), tag):
            raise _refuse(Reason.TAMPERED, kid)
        # Every field is authentic from here on. 5. Direction and reply binding.
        if outer_type is not None and outer_type is not mtype and not (
            outer_type is MessageType.EMCL and mtype is MessageType.INTENT
        ):
            raise _refuse(Reason.REFLECTED if (outer_type in _REQUESTS) != (mtype in _REQUESTS)
                          else Reason.TAMPERED, kid)
        if accept is not None and mtype not in accept:
            raise _refuse(Reason.REFLECTED, kid)
        if replies is not None and mtype is _RESPONSE:
            binding = headers.get(REPLY_TO_HEADER)
            answers = None if binding is None else replies.get(binding)
            if answers is None:
                raise _refuse(Reason.UNMATCHED_REPLY, kid)
            if answers and answers != sender:
                raise _refuse(Reason.UNEXPECTED_SENDER, kid)
        # 6. Sender. 7. Recipient.
        if key.peer is not None and sender != key.peer:
            raise _refuse(Reason.REFLECTED if sender == self.agent_id
                          else Reason.UNEXPECTED_SENDER, kid)
        if expected_sender is not None and sender != expected_sender:
            raise _refuse(Reason.REFLECTED if sender == self.agent_id
                          else Reason.UNEXPECTED_SENDER, kid)
        if recipient and recipient != self.agent_id:
            raise _refuse(Reason.MISDIRECTED, kid)
        # 8. Freshness.
        now = self.clock()
        replay = self.replay
        reason = replay.check(sender, nonce, timestamp, now)
        if reason is not None:
            raise _refuse(reason, kid)
        # 9. Decrypt (libsodium checks the tag before writing any plaintext).
        out = self._opened
        if size > out.size:
            out.get(size)
        if _decrypt(out.buf, _NULL, _NULL, ciphertext, size, aad, len(aad), nonce,
                    key.enc_key):
            raise _refuse(Reason.TAMPERED, kid)
        plain = out.whole
        salt = plain[:SALT_BYTES]
        body = plain[SALT_BYTES:size - TAG_BYTES]
        # 10. Identity chain. 11. Record.
        if (chain or self.require_chain) and not self._chain_trusted(chain, sender,
                                                                     salt + body):
            raise _refuse(Reason.UNTRUSTED_CHAIN, kid)
        replay.record(sender, nonce, timestamp, now)
        return _tuple_new(Opened, (mtype, body, salt, sender, recipient, key, chain, timestamp))

    def _chain_trusted(
        self, chain: tuple[IdentityEntry, ...], sender: str, plaintext: bytes
    ) -> bool:
        """The chain ends at the sender, every link and signature holds, the policy agrees."""
        return bool(chain) and chain[-1].agent_id == sender and verify_chain(
            chain, body_digest(plaintext)
        ) and (self.chain_policy is None or self.chain_policy(chain))
