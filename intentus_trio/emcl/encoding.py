"""Field encodings of EMCL v1: strict base64, timestamps, length prefixes.

Receivers accept exactly one spelling of every value (see docs/emcl-spec.md §3): standard
base64 (RFC 4648 §4) with its ``=`` padding and zero unused trailing bits, and timestamps of
the form ``YYYY-MM-DDTHH:MM:SS.sssZ``. One strict ``a2b_base64`` call does the decoding and
every check except the trailing bits, which is a look at one character.
"""

from __future__ import annotations

import binascii
import re
import time
from datetime import UTC, datetime
from typing import Final

_b2a = binascii.b2a_base64
_a2b = binascii.a2b_base64
_Error = binascii.Error
# Characters whose 6-bit value has its low 4 (one byte left) or 2 (two bytes) bits zero.
_LAST_OK_1: Final = frozenset("AQgw")
_LAST_OK_2: Final = frozenset("AEIMQUYcgkosw048")
_TIMESTAMP: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z")


def b64e(data: bytes | bytearray | memoryview) -> str:
    """Standard base64 with padding."""
    return _b2a(data, newline=False).decode("ascii")


def b64d(text: str) -> bytes | None:
    """Decode canonical padded standard base64; None for any other spelling."""
    try:
        data = _a2b(text, strict_mode=True)
    except (_Error, ValueError, TypeError):
        return None
    # Strict mode checks the alphabet, the padding and the length, not the unused bits.
    if text[-1:] == "=" and (text[-3] not in _LAST_OK_1 if text[-2] == "="
                             else text[-2] not in _LAST_OK_2):
        return None
    return data


def format_timestamp(seconds: float) -> str:
    """``YYYY-MM-DDTHH:MM:SS.sssZ`` for a Unix time (truncated to the millisecond)."""
    ms = int(seconds * 1000)
    if ms < 0:
        raise ValueError("timestamps before 1970 are not representable")
    whole, milli = divmod(ms, 1000)
    t = time.gmtime(whole)
    return (f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T"
            f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}.{milli:03d}Z")


def parse_timestamp(text: str) -> float | None:
    """Unix seconds of a canonical timestamp, or None."""
    if len(text) != 24 or _TIMESTAMP.fullmatch(text) is None:
        return None
    try:
        dt = datetime(int(text[0:4]), int(text[5:7]), int(text[8:10]), int(text[11:13]),
                      int(text[14:16]), int(text[17:19]), tzinfo=UTC)
    except ValueError:
        return None
    return dt.timestamp() + int(text[20:23]) / 1000


def lp(data: bytes) -> bytes:
    """A 4-byte big-endian length, then the bytes."""
    return len(data).to_bytes(4, "big") + data


def lps(text: str) -> bytes:
    """``lp`` of a string's UTF-8 bytes."""
    data = text.encode()
    return len(data).to_bytes(4, "big") + data
