"""Field encodings of EMCL v1: strict base64url, timestamps, length prefixes.

Receivers accept exactly one spelling of every value (see docs/emcl-spec.md §3): base64url
without padding whose unused trailing bits are zero, and timestamps of the form
``YYYY-MM-DDTHH:MM:SS.sssZ``.
"""

from __future__ import annotations

import binascii
import re
import time
from datetime import UTC, datetime
from typing import Final

_TO_URL: Final = bytes.maketrans(b"+/", b"-_")
_FROM_URL: Final = bytes.maketrans(b"-_", b"+/")
_PAD: Final = (b"", b"", b"==", b"=")
# Characters whose 6-bit value has its low 4 (one byte left) or 2 (two bytes) bits zero.
_LAST_OK_1: Final = frozenset(b"AQgw")
_LAST_OK_2: Final = frozenset(b"AEIMQUYcgkosw048")
_TIMESTAMP: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z")


def b64e(data: bytes) -> str:
    """base64url without padding."""
    return binascii.b2a_base64(data, newline=False).rstrip(b"=").translate(_TO_URL).decode()


def b64d(text: str) -> bytes | None:
    """Decode canonical base64url without padding; None for any other spelling."""
    try:
        raw = text.encode("ascii")
    except (UnicodeEncodeError, AttributeError):
        return None
    n = len(raw)
    rem = n & 3
    if rem == 1 or b"=" in raw or b"+" in raw or b"/" in raw:
        return None
    if (rem == 2 and raw[-1] not in _LAST_OK_1) or (rem == 3 and raw[-1] not in _LAST_OK_2):
        return None
    try:
        data = binascii.a2b_base64(raw.translate(_FROM_URL) + _PAD[rem])
    except binascii.Error:
        return None
    # a2b_base64 skips characters outside the alphabet; a shorter result reveals them.
    if len(data) != (n * 3) >> 2:
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
