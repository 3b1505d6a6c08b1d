"""HKDF-SHA256 (RFC 5869), the one key derivation EMCL uses.

PyNaCl has no HKDF; this is the RFC's two steps over the standard library's HMAC, checked
against the RFC's test vectors.
"""

from __future__ import annotations

import hashlib
import hmac

_HASH_LEN = 32


def hkdf_extract(salt: bytes, ikm: bytes) -> bytes:
    return hmac.digest(salt or bytes(_HASH_LEN), ikm, hashlib.sha256)


def hkdf_expand(prk: bytes, info: bytes, length: int) -> bytes:
    if not 0 < length <= 255 * _HASH_LEN:
        raise ValueError("HKDF-SHA256 output is 1 to 8160 bytes")
    out = b""
    block = b""
    counter = 1
    while len(out) < length:
        block = hmac.digest(prk, block + info + bytes((counter,)), hashlib.sha256)
        out += block
        counter += 1
    return out[:length]


def hkdf_sha256(ikm: bytes, salt: bytes, info: bytes, length: int = 32) -> bytes:
    return hkdf_expand(hkdf_extract(salt, ikm), info, length)
