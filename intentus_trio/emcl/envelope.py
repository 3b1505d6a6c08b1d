"""The byte-exact core of EMCL v1: the AAD, the MAC, sealing with a given nonce.

Pure functions of their inputs, so test vectors come straight from them. The layout of
every byte is specified in docs/emcl-spec.md §5. ``AadBuilder`` produces the same bytes
with per-endpoint caches, for the hot path.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping, Sequence
from typing import Final

from . import _sodium
from .encoding import lp, lps

EMCL_VERSION: Final = "1.0"
AAD_CONTEXT: Final = b"intentus-trio emcl v1 aad\x00"
NONCE_BYTES: Final = _sodium.NONCE_BYTES
TAG_BYTES: Final = _sodium.TAG_BYTES
MAC_BYTES: Final = 32
SALT_BYTES: Final = 16
#: Frame header binding a response to the request it answers: the request's ``hmac``.
REPLY_TO_HEADER: Final = "emclReplyTo"
#: Frame headers that intermediaries may change and that the AAD therefore leaves out.
UNBOUND_HEADERS: Final = frozenset({"emcl", "traceparent", "tracestate"})

#: A decoded chain entry: (agentId, public key, timestamp, signature).
RawEntry = tuple[str, bytes, str, bytes]

_u32 = struct.Struct(">I").pack
_blake2b = hashlib.blake2b
_CACHE_LIMIT: Final = 256
_NO_HEADERS_NO_CHAIN: Final = bytes(8)


def bound_headers(headers: Mapping[str, str]) -> list[tuple[str, str]]:
    """The headers the AAD covers, sorted by name."""
    return sorted((k, v) for k, v in headers.items() if k not in UNBOUND_HEADERS)


def aad_prefix(version: str, key_id: str, message_type: str, sender: str, recipient: str) -> bytes:
    """The AAD up to the timestamp (constant for one key, type, sender and recipient)."""
    return b"".join((AAD_CONTEXT, lps(version), lps(key_id), lps(message_type), lps(sender),
                     lps(recipient)))


def negotiation_bytes(negotiation: tuple[str, str] | None) -> bytes:
    if negotiation is None:
        return b"\x00"
    return b"\x01" + lps(negotiation[0]) + lps(negotiation[1])


def chain_bytes(chain: Sequence[RawEntry]) -> bytes:
    parts = [_u32(len(chain))]
    for agent_id, public, ts, signature in chain:
        parts.append(lps(agent_id) + lp(public) + lps(ts) + lp(signature))
    return b"".join(parts)


def aad_tail(
    timestamp: str,
    negotiation: tuple[str, str] | None,
    headers: Sequence[tuple[str, str]],
    chain: Sequence[RawEntry],
) -> bytes:
    """The AAD from the timestamp on."""
    parts = [lps(timestamp), negotiation_bytes(negotiation), _u32(len(headers))]
    for name, value in headers:
        parts.append(lps(name))
        parts.append(lps(value))
    parts.append(chain_bytes(chain))
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


def compute_mac(mac_key: bytes, aad: bytes, nonce: bytes, tag: bytes) -> bytes:
    """Keyed BLAKE2b-256 over AAD || nonce || the AEAD tag (the ciphertext's last 16 bytes)."""
    return _blake2b(aad + nonce + tag, key=mac_key, digest_size=MAC_BYTES).digest()


def seal_bytes(
    enc_key: bytes, mac_key: bytes, nonce: bytes, plaintext: bytes, aad: bytes
) -> tuple[bytes, bytes]:
    """(ciphertext with tag, MAC) for a plaintext that already starts with its salt."""
    ciphertext = _sodium.aead_encrypt(plaintext, aad, nonce, enc_key)
    return ciphertext, compute_mac(mac_key, aad, nonce, ciphertext[-TAG_BYTES:])


class AadBuilder:
    """``build_aad`` with the constant parts cached (prefixes, negotiation, header names).

    Raises UnicodeEncodeError for strings that have no UTF-8 form (lone surrogates).
    """

    __slots__ = ("_names", "_negotiations", "_prefixes")

    def __init__(self) -> None:
        self._prefixes: dict[tuple[str, str, str, str], bytes] = {}
        self._negotiations: dict[tuple[str, str] | None, bytes] = {None: b"\x00"}
        self._names: dict[str, bytes] = {}

    def __call__(
        self,
        key_id: str,
        message_type: str,
        sender: str,
        recipient: str,
        timestamp: str,
        negotiation: tuple[str, str] | None,
        headers: Mapping[str, str],
        chain: Sequence[RawEntry],
    ) -> bytes:
        prefixes = self._prefixes
        prefix = prefixes.get((key_id, message_type, sender, recipient))
        if prefix is None:
            prefix = aad_prefix(EMCL_VERSION, key_id, message_type, sender, recipient)
            if len(prefixes) >= _CACHE_LIMIT:
                prefixes.clear()
            prefixes[key_id, message_type, sender, recipient] = prefix
        neg = self._negotiations.get(negotiation)
        if neg is None:
            neg = negotiation_bytes(negotiation)
            if len(self._negotiations) < _CACHE_LIMIT:
                self._negotiations[negotiation] = neg
        ts = timestamp.encode()
        if not headers and not chain:
            return b"".join((prefix, _u32(len(ts)), ts, neg, _NO_HEADERS_NO_CHAIN))
        parts = [prefix, _u32(len(ts)), ts, neg, b""]
        count = 0
        if headers:
            names = self._names
            for name in sorted(headers):
                if name in UNBOUND_HEADERS:
                    continue
                encoded = names.get(name)
                if encoded is None:
                    encoded = lps(name)
                    if len(names) < _CACHE_LIMIT:
                        names[name] = encoded
                value = headers[name].encode()
                parts.append(encoded)
                parts.append(_u32(len(value)))
                parts.append(value)
                count += 1
        parts[4] = _u32(count)
        parts.append(chain_bytes(chain) if chain else b"\x00\x00\x00\x00")
        return b"".join(parts)
