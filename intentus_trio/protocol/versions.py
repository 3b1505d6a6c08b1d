"""Protocol version negotiation: the highest version both sides support wins.

Versions are ``MAJOR.MINOR`` strings compared numerically. A peer that sends no
``protocolNegotiation`` (IntentusNet reference clients) is taken to speak exactly 1.0.
"""

from __future__ import annotations

from .errors import UnsupportedVersion, ValidationError
from .models import ProtocolNegotiation

#: The versions this implementation speaks.
SUPPORTED_VERSIONS = ProtocolNegotiation("1.0", "1.0")
#: What a peer without a negotiation block is assumed to speak.
LEGACY_VERSIONS = ProtocolNegotiation("1.0", "1.0")


def parse_version(text: str) -> tuple[int, int]:
    major, sep, minor = text.partition(".")
    # isascii: isdigit() also accepts digits int() refuses (superscripts, circled digits)
    if not (sep and text.isascii() and major.isdigit() and minor.isdigit() and len(text) <= 16):
        raise ValidationError("protocolNegotiation", f"not a MAJOR.MINOR version: {text[:16]!r}")
    return int(major), int(minor)


def negotiate(
    offered: ProtocolNegotiation | None,
    supported: ProtocolNegotiation = SUPPORTED_VERSIONS,
) -> str:
    """Return the highest version in both ranges, or raise ``UnsupportedVersion``."""
    offered = offered or LEGACY_VERSIONS
    if offered is supported or offered == supported:
        return supported.max_version
    lo_a, hi_a = parse_version(offered.min_version), parse_version(offered.max_version)
    lo_b, hi_b = parse_version(supported.min_version), parse_version(supported.max_version)
    if lo_a > hi_a:
        raise ValidationError("protocolNegotiation", "minVersion is above maxVersion")
    if max(lo_a, lo_b) > min(hi_a, hi_b):
        raise UnsupportedVersion(
            (offered.min_version, offered.max_version),
            (supported.min_version, supported.max_version),
        )
    best = min(hi_a, hi_b)
    return f"{best[0]}.{best[1]}"
