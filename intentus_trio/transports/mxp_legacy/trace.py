"""Trace ids between our UUID strings and the MXP header's unsigned 64-bit ``trace_id``.

The MXP reference implementation makes a trace id from the first 8 bytes of a random UUID,
read little-endian. We do the same for UUID-shaped trace ids, so a trace that starts here and
one that starts in an MXP agent look alike on the wire. Other strings are hashed (XXH3-64).

Going back, 64 bits cannot restore 128: a `TraceIdMap` remembers the strings it has sent
(bounded, most recent first), and an unknown number becomes the UUID text whose first 8 bytes
are that number and whose last 8 are zero. That text maps back to the same number, so a trace
id survives any number of trips through legacy agents: ``to_wire(from_wire(n)) == n`` always,
and ``from_wire(to_wire(s)) == s`` while ``s`` is still remembered.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict

import xxhash

__all__ = ["DEFAULT_TRACE_MAP_SIZE", "TRACE_IDS", "TraceIdMap", "trace_text", "wire_trace"]

DEFAULT_TRACE_MAP_SIZE = 4096
_ZERO_TAIL = bytes(8)


def wire_trace(trace_id: str) -> int:
    """The header trace id for ``trace_id`` (stateless; see the module docstring)."""
    try:
        raw = uuid.UUID(trace_id).bytes
    except ValueError:
        return int(xxhash.xxh3_64_intdigest(trace_id.encode("utf-8", "surrogatepass")))
    return int.from_bytes(raw[:8], "little")


def trace_text(wire: int) -> str:
    """The canonical string for a header trace id that no table remembers."""
    return str(uuid.UUID(bytes=wire.to_bytes(8, "little") + _ZERO_TAIL))


class TraceIdMap:
    """A bounded correlation table of trace ids sent as 64-bit header values."""

    def __init__(self, size: int = DEFAULT_TRACE_MAP_SIZE) -> None:
        if size < 1:
            raise ValueError("size must be at least 1")
        self.size = size
        self._texts: OrderedDict[int, str] = OrderedDict()

    def __len__(self) -> int:
        return len(self._texts)

    def to_wire(self, trace_id: str) -> int:
        """Map ``trace_id`` to its header value and remember it for `from_wire`."""
        wire = wire_trace(trace_id)
        texts = self._texts
        if texts.get(wire) != trace_id:
            texts[wire] = trace_id
        texts.move_to_end(wire)
        if len(texts) > self.size:
            texts.popitem(last=False)
        return wire

    def from_wire(self, wire: int) -> str:
        """The trace id string for a header value: remembered, else `trace_text`."""
        text = self._texts.get(wire)
        return text if text is not None else trace_text(wire)


TRACE_IDS = TraceIdMap()
"""The process-wide table the legacy client and server share by default, so a trace that
leaves through one and returns through the other gets its full string back."""
