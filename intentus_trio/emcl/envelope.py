"""The byte-exact core of EMCL v1: the AAD, the MAC, sealing with a given nonce.

Pure functions of their inputs, so test vectors come straight from them. The layout of
every byte is specified in docs/emcl-spec.md §5. ``AadBuilder`` produces the same bytes
with per-endpoint caches, for the hot path.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping, Sequence
from typing import Any, Final

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
_TIMESTAMP_BYTES: Final = 24  # every canonical timestamp
_LP_TIMESTAMP: Final = _u32(_TIMESTAMP_BYTES)
_SHORT: Final = 256
_SHORT_LENGTHS: Final = tuple(_u32(n) for n in range(_SHORT))


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



def mac_state(mac_key: bytes) -> Any:
    """The keyed BLAKE2b-256 of ``compute_mac`` before any input: ``copy()`` it and feed it
    AAD || nonce || tag (saves parsing arguments and keying a new hash per MAC)."""
    return _blake2b(key=mac_key, digest_size=MAC_BYTES)


def seal_bytes(
    enc_key: bytes, mac_key: bytes, nonce: bytes, plaintext: bytes, aad: bytes
) -> tuple[bytes, bytes]:
    """(ciphertext with tag, MAC) for a plaintext that already starts with its salt."""
    ciphertext = _sodium.aead_encrypt(plaintext, aad, nonce, enc_key)
    return ciphertext, compute_mac(mac_key, aad, nonce, ciphertext[-TAG_BYTES:])


class AadBuilder:
    """``build_aad`` with the constant parts cached: prefixes, negotiation, and for each set
    of header names (in the frame's order) the bound ones sorted, with their encodings.

    Without headers and chain the whole AAD of the last call is kept too: envelopes in a
    stream share their fields and, within a millisecond, their timestamp.
    Raises UnicodeEncodeError for strings that have no UTF-8 form (lone surrogates).
    """

    __slots__ = ("_last", "_last_aad", "_layouts", "_negotiations", "_prefixes")

    def __init__(self) -> None:
        self._prefixes: dict[tuple[str, str, str, str], bytes] = {}
        self._negotiations: dict[tuple[str, str], bytes] = {}
        self._layouts: dict[tuple[str, ...], tuple[bytes, tuple[tuple[str, bytes], ...]]] = {}
        self._last: tuple[str, str, str, str, str, tuple[str, str] | None] | None = None
        self._last_aad = b""

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
        bare = not headers and not chain
        if bare:
            fields = (key_id, message_type, sender, recipient, timestamp, negotiation)
            if fields == self._last:
                return self._last_aad
        prefix = self._prefixes.get((key_id, message_type, sender, recipient))
        if prefix is None:
            prefix = self._prefix(key_id, message_type, sender, recipient)
        ts = timestamp.encode()
        ts_length = _LP_TIMESTAMP if len(ts) == _TIMESTAMP_BYTES else _u32(len(ts))
        if negotiation is None:
            neg = b"\x00"
        else:
            neg = self._negotiations.get(negotiation) or self._negotiation(negotiation)
        if bare:
            self._last = fields
            self._last_aad = aad = b"".join((prefix, ts_length, ts, neg, _NO_HEADERS_NO_CHAIN))
            return aad
        parts = [prefix, ts_length, ts, neg]
        if headers:
            names = tuple(headers)
            layout = self._layouts.get(names) or self._layout(names)
            parts.append(layout[0])
            for name, encoded in layout[1]:
                value = headers[name].encode()
                size = len(value)
                parts.append(encoded)
                parts.append(_SHORT_LENGTHS[size] if size < _SHORT else _u32(size))
                parts.append(value)
        else:
            parts.append(b"\x00\x00\x00\x00")
        parts.append(chain_bytes(chain) if chain else b"\x00\x00\x00\x00")
        return b"".join(parts)

    def _prefix(self, key_id: str, message_type: str, sender: str, recipient: str) -> bytes:
        prefixes = self._prefixes
        prefix = aad_prefix(EMCL_VERSION, key_id, message_type, sender, recipient)
        if len(prefixes) >= _CACHE_LIMIT:
            prefixes.clear()
        prefixes[key_id, message_type, sender, recipient] = prefix
        return prefix

    def _layout(self, names: tuple[str, ...]) -> tuple[bytes, tuple[tuple[str, bytes], ...]]:
        """(u32(count), ((name, lp(name)), ...)) of the bound headers among ``names``."""
        bound = tuple((name, lps(name)) for name in sorted(names)
                      if name not in UNBOUND_HEADERS)
        layout = (_u32(len(bound)), bound)
        if len(self._layouts) >= _CACHE_LIMIT:
            self._layouts.clear()
        self._layouts[names] = layout
        return layout

    def _negotiation(self, negotiation: tuple[str, str]) -> bytes:
        neg = negotiation_bytes(negotiation)
        if len(self._negotiations) < _CACHE_LIMIT:
            self._negotiations[negotiation] = neg
        return neg
