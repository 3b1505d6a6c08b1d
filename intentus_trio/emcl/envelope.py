"""The byte-exact core of EMCL v1: the AAD, the MAC, sealing with a given nonce.

Pure functions of their inputs, so test vectors come straight from them. The layout of
every byte is specified in docs/emcl-spec.md §5.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Final

from . import _sodium
from .encoding import lp, lps

EMCL_VERSION: Final = "1.0"
AAD_CONTEXT: Final = b"intentus-trio emcl v1 aad\x00"
NONCE_BYTES: Final = _sodium.NONCE_BYTES
MAC_BYTES: Final = 32
SALT_BYTES: Final = 16
#: Frame headers that intermediaries may change and that the AAD therefore leaves out.
UNBOUND_HEADERS: Final = frozenset({"emcl", "traceparent", "tracestate"})

#: A decoded chain entry: (agentId, public key, timestamp, signature).
RawEntry = tuple[str, bytes, str, bytes]


def bound_headers(headers: Mapping[str, str]) -> list[tuple[str, str]]:
    """The headers the AAD covers, sorted by name."""
    return sorted((k, v) for k, v in headers.items() if k not in UNBOUND_HEADERS)


def aad_prefix(version: str, key_id: str, message_type: str, sender: str, recipient: str) -> bytes:
    """The AAD up to the timestamp (constant for one key, type, sender and recipient)."""
    return b"".join((AAD_CONTEXT, lps(version), lps(key_id), lps(message_type), lps(sender),
                     lps(recipient)))


def aad_tail(
    timestamp: str,
    negotiation: tuple[str, str] | None,
    headers: Sequence[tuple[str, str]],
    chain: Sequence[RawEntry],
) -> bytes:
    """The AAD from the timestamp on."""
    parts = [lps(timestamp)]
    if negotiation is None:
        parts.append(b"\x00")
    else:
        parts.append(b"\x01" + lps(negotiation[0]) + lps(negotiation[1]))
    parts.append(len(headers).to_bytes(4, "big"))
    for name, value in headers:
        parts.append(lps(name))
        parts.append(lps(value))
    parts.append(len(chain).to_bytes(4, "big"))
    for agent_id, public, ts, signature in chain:
        parts.append(lps(agent_id) + lp(public) + lps(ts) + lp(signature))
    return b"".join(parts)


def build_aad(
    version: str,
    key_id: str,
    message_type: str,
    sender: str,
    recipient: str,
    timestamp: str,
    negotiation: tuple[str, str] | None,
    headers: Sequence[tuple[str, str]],
    chain: Sequence[RawEntry],
) -> bytes:
    """The associated data: every field a receiver relies on, length-prefixed."""
    return (aad_prefix(version, key_id, message_type, sender, recipient)
            + aad_tail(timestamp, negotiation, headers, chain))


def compute_mac(mac_key: bytes, aad: bytes, nonce: bytes, ciphertext: bytes) -> bytes:
    """Keyed BLAKE2b-256 over AAD || nonce || ciphertext (tag included)."""
    return hashlib.blake2b(aad + nonce + ciphertext, key=mac_key, digest_size=MAC_BYTES).digest()


def seal_bytes(
    enc_key: bytes, mac_key: bytes, nonce: bytes, plaintext: bytes, aad: bytes
) -> tuple[bytes, bytes]:
    """(ciphertext with tag, MAC) for a plaintext that already starts with its salt."""
    ciphertext = _sodium.aead_encrypt(plaintext, aad, nonce, enc_key)
    return ciphertext, compute_mac(mac_key, aad, nonce, ciphertext)
