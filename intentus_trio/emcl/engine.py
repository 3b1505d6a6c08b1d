"""Sealing and opening EMCL envelopes (bytes in, bytes out; frames are protector.py's job).

Opening checks, in this order, and stops at the first failure: structure and encodings,
key id, MAC (constant-time compare), then — the envelope now being authentic — direction,
sender, recipient, timestamp window and nonce cache, and only then decrypts (the AEAD tag is
verified before any plaintext exists), verifies the identity chain and records the nonce.
"""

from __future__ import annotations

import hmac
import logging
import os
from collections.abc import Callable, Mapping
from typing import Final

from attrs import frozen

from ..protocol.enums import MessageType
from ..protocol.errors import EMCLFailure
from ..protocol.models import EMCLEnvelope, IdentityEntry
from . import _sodium
from .chain import ChainPolicy, ChainSigner, body_digest, verify_chain
from .clock import Clock
from .encoding import b64d, b64e, format_timestamp, parse_timestamp
from .envelope import (
    EMCL_VERSION,
    MAC_BYTES,
    NONCE_BYTES,
    SALT_BYTES,
    RawEntry,
    aad_prefix,
    aad_tail,
    bound_headers,
    compute_mac,
    seal_bytes,
)
from .failures import Reason, failure
from .keyring import Keyring, SessionKey
from .replay import ReplayGuard

log = logging.getLogger("intentus_trio.emcl")

_REQUESTS: Final = frozenset({MessageType.INTENT, MessageType.EVENT, MessageType.EMCL})
_EMPTY: Mapping[str, str] = {}
_compare = hmac.compare_digest
_PREFIX_CACHE: Final = 256
_decrypt = _sodium.aead_decrypt


@frozen
class Opened:
    """An authenticated, decrypted envelope."""

    message_type: MessageType
    #: The serialised body (plaintext without its salt).
    body: bytes
    #: The whole plaintext, salt included: what the chain signs and ``forward`` re-seals.
    plaintext: bytes
    sender: str
    recipient: str
    key: SessionKey
    chain: tuple[IdentityEntry, ...]
    timestamp: float


def _refuse(reason: Reason, key_id: str | None) -> EMCLFailure:
    log.debug("refused an EMCL envelope: %s (key id %.64r)", reason.value, key_id)
    return failure(reason)


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
        self._ts_second = -1
        self._ts_prefix = ""
        self._parsed_prefix = ""
        self._parsed_value = 0.0
        self._aad_prefixes: dict[tuple[str, str, str, str], bytes] = {}

    def _aad(self, key_id: str, mtype: str, sender: str, recipient: str, timestamp: str,
             negotiation: tuple[str, str] | None, headers: Mapping[str, str],
             chain: list[RawEntry]) -> bytes:
        cache = self._aad_prefixes
        prefix = cache.get((key_id, mtype, sender, recipient))
        if prefix is None:
            prefix = aad_prefix(EMCL_VERSION, key_id, mtype, sender, recipient)
            if len(cache) >= _PREFIX_CACHE:
                cache.clear()
            cache[key_id, mtype, sender, recipient] = prefix
        return prefix + aad_tail(timestamp, negotiation, bound_headers(headers), chain)

    def _parse_timestamp(self, text: str) -> float | None:
        # Most timestamps share their second with the previous one: skip the calendar then.
        if len(text) == 24 and text[:20] == self._parsed_prefix:
            milli = text[20:23]
            if text[23] == "Z" and milli.isascii() and milli.isdigit():
                return self._parsed_value + int(milli) / 1000
            return None
        value = parse_timestamp(text)
        if value is not None:
            self._parsed_prefix = text[:20]
            self._parsed_value = value - int(text[20:23]) / 1000
        return value

    # ------------------------------------------------------------------ sealing

    def _timestamp(self) -> str:
        ms = int(self.clock() * 1000)
        second, milli = divmod(ms, 1000)
        if second != self._ts_second:
            self._ts_prefix = format_timestamp(second)[:20]
            self._ts_second = second
        return f"{self._ts_prefix}{milli:03d}Z"

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
        fresh = self.random(NONCE_BYTES + SALT_BYTES)
        plaintext = fresh[NONCE_BYTES:] + body
        timestamp = self._timestamp()
        chain: tuple[IdentityEntry, ...] = ()
        if self.signer is not None:
            chain = (self.signer.entry((), body_digest(plaintext), timestamp),)
        return self._seal(message_type, plaintext, fresh[:NONCE_BYTES], timestamp, key,
                          recipient, headers, negotiation, chain)

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
        entry = self.signer.entry(opened.chain, body_digest(opened.plaintext), timestamp)
        return self._seal(opened.message_type, opened.plaintext, self.random(NONCE_BYTES),
                          timestamp, key, recipient, headers, negotiation,
                          (*opened.chain, entry))

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
        raw_chain: list[RawEntry] = []
        for e in chain:
            public, signature = b64d(e.public_key), b64d(e.signature)
            if public is None or signature is None:
                raise ValueError("malformed identity chain entry")
            raw_chain.append((e.agent_id, public, e.timestamp, signature))
        aad = self._aad(key.key_id, message_type.value, self.agent_id, recipient, timestamp,
                        negotiation, headers, raw_chain)
        ciphertext, mac = seal_bytes(key.enc_key, key.mac_key, nonce, plaintext, aad)
        return EMCLEnvelope(EMCL_VERSION, b64e(ciphertext), b64e(nonce), b64e(mac), chain,
                            key.key_id, self.agent_id, recipient, timestamp, message_type)

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
    ) -> Opened:
        """Authenticate and decrypt ``env`` or raise ``EMCLFailure`` with the reason.

        ``outer_type`` is the message type the frame claimed, ``accept`` the authenticated
        types this endpoint takes, ``expected_sender`` the only sender it takes.
        """
        kid = env.key_id
        sender, recipient = env.sender, env.recipient
        ts_text, mtype = env.timestamp, env.message_type
        if (env.emcl_version != EMCL_VERSION or kid is None or sender is None
                or recipient is None or ts_text is None or mtype is None
                or mtype is MessageType.EMCL):
            raise _refuse(Reason.MALFORMED, kid)
        nonce, tag, ciphertext = b64d(env.nonce), b64d(env.hmac), b64d(env.ciphertext)
        timestamp = self._parse_timestamp(ts_text)
        if (nonce is None or len(nonce) != NONCE_BYTES or tag is None or len(tag) != MAC_BYTES
                or ciphertext is None or len(ciphertext) < SALT_BYTES + _sodium.TAG_BYTES
                or timestamp is None):
            raise _refuse(Reason.MALFORMED, kid)
        chain = env.identity_chain
        raw_chain: list[RawEntry] = []
        for e in chain:
            public, signature = b64d(e.public_key), b64d(e.signature)
            if (public is None or len(public) != 32 or signature is None or len(signature) != 64
                    or parse_timestamp(e.timestamp) is None):
                raise _refuse(Reason.MALFORMED, kid)
            raw_chain.append((e.agent_id, public, e.timestamp, signature))
        key = self.keyring.lookup(kid)
        if key is None:
            raise _refuse(Reason.UNKNOWN_KEY, kid)
        try:
            aad = self._aad(kid, mtype.value, sender, recipient, ts_text, negotiation, headers,
                            raw_chain)
        except UnicodeEncodeError:
            raise _refuse(Reason.MALFORMED, kid) from None
        if not _compare(compute_mac(key.mac_key, aad, nonce, ciphertext), tag):
            raise _refuse(Reason.TAMPERED, kid)
        # Every field is authentic from here on.
        if outer_type is not None and outer_type is not mtype and not (
            outer_type is MessageType.EMCL and mtype is MessageType.INTENT
        ):
            raise _refuse(Reason.REFLECTED if (outer_type in _REQUESTS) != (mtype in _REQUESTS)
                          else Reason.TAMPERED, kid)
        if accept is not None and mtype not in accept:
            raise _refuse(Reason.REFLECTED, kid)
        if key.peer is not None and sender != key.peer:
            raise _refuse(Reason.REFLECTED if sender == self.agent_id
                          else Reason.UNEXPECTED_SENDER, kid)
        if expected_sender is not None and sender != expected_sender:
            raise _refuse(Reason.REFLECTED if sender == self.agent_id
                          else Reason.UNEXPECTED_SENDER, kid)
        if recipient and recipient != self.agent_id:
            raise _refuse(Reason.MISDIRECTED, kid)
        now = self.clock()
        replay = self.replay
        reason = replay.check(sender, nonce, timestamp, now)
        if reason is not None:
            raise _refuse(reason, kid)
        plaintext = _decrypt(ciphertext, aad, nonce, key.enc_key)
        if plaintext is None:
            raise _refuse(Reason.TAMPERED, kid)
        if (chain or self.require_chain) and not self._chain_trusted(chain, sender, plaintext):
            raise _refuse(Reason.UNTRUSTED_CHAIN, kid)
        replay.record(sender, nonce, timestamp, now)
        return Opened(mtype, plaintext[SALT_BYTES:], plaintext, sender, recipient, key, chain,
                      timestamp)

    def _chain_trusted(
        self, chain: tuple[IdentityEntry, ...], sender: str, plaintext: bytes
    ) -> bool:
        """The chain ends at the sender, every link and signature holds, the policy agrees."""
        return bool(chain) and chain[-1].agent_id == sender and verify_chain(
            chain, body_digest(plaintext)
        ) and (self.chain_policy is None or self.chain_policy(chain))
