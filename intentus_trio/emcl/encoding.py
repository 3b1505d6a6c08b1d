"""Field encodings of EMCL v1: strict base64, timestamps, length prefixes.

Receivers accept exactly one spelling of every value (see docs/emcl-spec.md §3): standard
base64 (RFC 4648 §4) with its ``=`` padding and zero unused trailing bits, and timestamps of
the form ``YYYY-MM-DDTHH:MM:SS.sssZ``. Base64 goes through pybase64 (SIMD C, several times
faster than ``binascii`` on ciphertexts). Its validating decoder refuses every character
outside the alphabet and misplaced padding; ``b64d`` adds what it leaves out, the unused
bits (one character to look at), and checks the length and padding itself, so the result
does not depend on how a pybase64 version or its pure-Python fallback treats padding.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from typing import Final

import pybase64

_decode = pybase64.b64decode
#: Characters whose 6-bit value has its low 4 bits zero: the last data character before
#: "==" (one byte in the last group of four).
LAST_OK_1: Final = frozenset("AQgw")
#: ... its low 2 bits zero: the last data character before "=" (two bytes in the group).
LAST_OK_2: Final = frozenset("AEIMQUYcgkosw048")
_TIMESTAMP: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z")

#: Standard base64 with padding, as ``str``.
b64e: Final = pybase64.b64encode_as_string


def b64d(text: str) -> bytes | None:
    """Decode canonical padded standard base64; None for any other spelling."""
    try:
        data = _decode(text, None, True)
    except (ValueError, TypeError):  # binascii.Error is a ValueError
        return None
    return data if b64_canonical(text, len(data)) else None


def b64_canonical(text: str, size: int) -> bool:
    """Whether ``text``, which pybase64's validating decoder turned into ``size`` bytes, is
    the one canonical spelling of them: whole groups of four, padded exactly as needed, no
    character skipped, zero unused bits."""
    chars = len(text)
    if chars & 3:
        return False
    if text[-1:] != "=":
        return size == chars // 4 * 3
    if text[-2] == "=":
        return text[-3] in LAST_OK_1 and size == chars // 4 * 3 - 2
    return text[-2] in LAST_OK_2 and size == chars // 4 * 3 - 1


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
