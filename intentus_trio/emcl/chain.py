"""The identity chain: one Ed25519-signed entry per agent that sealed or forwarded a body.

Entry ``i`` signs (docs/emcl-spec.md §6) a link to entry ``i-1`` (the BLAKE2b-256 of its
encoding; zeros for the origin), the body digest (BLAKE2b-256 of the sealed plaintext, which
starts with 16 secret random bytes so the signatures reveal nothing about the body), and its
own agent id, public key and timestamp. Removing, reordering or moving entries between
bodies breaks a signature or a link.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from typing import Final

from ..keys import Ed25519KeyPair, verify_signature
from ..protocol.models import IdentityEntry
from .encoding import b64d, b64e, lp, lps

CHAIN_CONTEXT: Final = b"intentus-trio emcl v1 chain\x00"
ORIGIN_LINK: Final = bytes(32)

#: Decides whether a verified chain (origin first) is trusted.
ChainPolicy = Callable[[Sequence[IdentityEntry]], bool]


def body_digest(plaintext: bytes) -> bytes:
    return hashlib.blake2b(plaintext, digest_size=32).digest()


def entry_bytes(agent_id: str, public_key: bytes, timestamp: str, signature: bytes) -> bytes:
    """The canonical encoding of an entry (also its part of the AAD)."""
    return lps(agent_id) + lp(public_key) + lps(timestamp) + lp(signature)


def entry_link(entry: IdentityEntry) -> bytes | None:
    """BLAKE2b-256 of an entry's encoding; None if its binary fields do not decode."""
    public, signature = b64d(entry.public_key), b64d(entry.signature)
    if public is None or signature is None:
        return None
    return hashlib.blake2b(
        entry_bytes(entry.agent_id, public, entry.timestamp, signature), digest_size=32
    ).digest()


def signed_message(link: bytes, digest: bytes, agent_id: str, public_key: bytes,
                   timestamp: str) -> bytes:
    return CHAIN_CONTEXT + link + digest + lps(agent_id) + lp(public_key) + lps(timestamp)


class ChainSigner:
    """One agent's identity: appends its signed entry to a chain."""

    def __init__(self, agent_id: str, key: Ed25519KeyPair) -> None:
        self.agent_id = agent_id
        self.key = key
        self._public_b64 = b64e(key.public)

    def entry(
        self, chain: Sequence[IdentityEntry], digest: bytes, timestamp: str
    ) -> IdentityEntry:
        link = ORIGIN_LINK
        if chain:
            found = entry_link(chain[-1])
            if found is None:
                raise ValueError("cannot extend a chain whose last entry is malformed")
            link = found
        msg = signed_message(link, digest, self.agent_id, self.key.public, timestamp)
        return IdentityEntry(self.agent_id, self._public_b64, timestamp,
                             b64e(self.key.sign(msg)))


def verify_chain(chain: Sequence[IdentityEntry], digest: bytes) -> bool:
    """Whether every signature and link of ``chain`` holds for a body with ``digest``."""
    link = ORIGIN_LINK
    for entry in chain:
        public, signature = b64d(entry.public_key), b64d(entry.signature)
        if public is None or signature is None or len(public) != 32 or len(signature) != 64:
            return False
        msg = signed_message(link, digest, entry.agent_id, public, entry.timestamp)
        if not verify_signature(public, msg, signature):
            return False
        link = hashlib.blake2b(
            entry_bytes(entry.agent_id, public, entry.timestamp, signature), digest_size=32
        ).digest()
    return True


def trust_origin(keys: Mapping[str, bytes]) -> ChainPolicy:
    """A policy: the chain's origin is one of these agents, with exactly this public key."""
    expected = {agent: b64e(bytes(pub)) for agent, pub in keys.items()}

    def policy(chain: Sequence[IdentityEntry]) -> bool:
        return bool(chain) and expected.get(chain[0].agent_id) == chain[0].public_key

    return policy


def trust_every_hop(keys: Mapping[str, bytes]) -> ChainPolicy:
    """A policy: every hop is a known agent with exactly its known public key."""
    expected = {agent: b64e(bytes(pub)) for agent, pub in keys.items()}

    def policy(chain: Sequence[IdentityEntry]) -> bool:
        return bool(chain) and all(expected.get(e.agent_id) == e.public_key for e in chain)

    return policy
