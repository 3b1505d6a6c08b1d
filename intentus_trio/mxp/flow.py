"""Flow control: credit granted by the peer (send side) and windows we grant (receive side).

The same two classes serve a connection (MAX_DATA / DATA_BLOCKED) and each stream
(MAX_STREAM_DATA / STREAM_DATA_BLOCKED): offsets are absolute byte counts, limits only grow.
A stalled reader simply stops consuming; its window closes, the peer's credit runs out and the
peer stops sending new data, with nothing lost and nothing retransmitted for it.
"""

from __future__ import annotations

from typing import Any

# Close codes for stream and flow-control violations (for ``events.ErrorCode`` to adopt).
FLOW_CONTROL_ERROR = 0x20
FINAL_SIZE_ERROR = 0x21
STREAM_LIMIT_ERROR = 0x22
STREAM_STATE_ERROR = 0x23


class FlowControlError(Exception):
    """The peer broke a limit we advertised; the connection must close with ``code``."""

    def __init__(self, message: str, code: int = FLOW_CONTROL_ERROR) -> None:
        super().__init__(message)
        self.code = code


class SendCredit:
    """How much the peer lets us send: ``limit`` from its MAX_*DATA frames, ``used`` by us.

    When we run out with data waiting we owe the peer a *_BLOCKED frame, once per limit, so a
    peer that forgot to update its window learns about it (and it helps debugging stalls).
    """

    __slots__ = ("_blocked_reported", "blocked_pending", "limit", "used")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.blocked_pending = False
        self._blocked_reported = -1

    @property
    def available(self) -> int:
        return self.limit - self.used

    def consume(self, size: int) -> None:
        if size > self.limit - self.used:
            raise ValueError("flow-control credit exceeded")
        self.used += size

    def update(self, limit: int) -> bool:
        """Apply the peer's new limit (limits never shrink); True if it grew."""
        if limit <= self.limit:
            return False
        self.limit = limit
        self.blocked_pending = False
        return True

    def note_blocked(self) -> None:
        """Data is waiting and no credit is left: owe one BLOCKED frame for this limit."""
        if self.used >= self.limit and self._blocked_reported != self.limit:
            self._blocked_reported = self.limit
            self.blocked_pending = True

    def take_blocked(self) -> int | None:
        """The limit to report in a BLOCKED frame, if one is owed."""
        if not self.blocked_pending:
            return None
        self.blocked_pending = False
        return self.limit


class ReceiveWindow:
    """The limit we advertise and when to raise it, with auto-tuning.

    ``highest`` is the largest offset the peer has used, ``consumed`` what the application has
    read. Once less than half a window of credit is left, we owe the peer a new limit
    ``consumed + window``. If that happens within ``2 * rtt`` of the previous update, the window
    is what limits the transfer (the peer drains it faster than we refresh it), so it doubles,
    up to ``max_window``.
    """

    __slots__ = (
        "_last_update_time",
        "_pending",
        "_resend",
        "consumed",
        "highest",
        "limit",
        "max_window",
        "updates_sent",
        "window",
    )

    def __init__(self, window: int, max_window: int | None = None) -> None:
        self.window = window
        self.max_window = max(window, max_window if max_window is not None else window)
        self.limit = window
        self.highest = 0
        self.consumed = 0
        self.updates_sent = 0
        self._pending = False
        self._resend = False
        self._last_update_time: float | None = None

    def on_received(self, offset_end: int) -> int:
        """The peer sent data up to ``offset_end``; return how far ``highest`` advanced.
        Raises FlowControlError past our limit."""
        if offset_end > self.limit:
            raise FlowControlError(f"peer sent up to {offset_end}, beyond the limit {self.limit}")
        if offset_end <= self.highest:
            return 0
        grown = offset_end - self.highest
        self.highest = offset_end
        return grown

    def on_consumed(self, size: int, now: float, rtt: float) -> None:
        """The application read ``size`` more bytes."""
        self.consumed += size
        if self._pending or self.limit - self.consumed > self.window // 2:
            return
        last = self._last_update_time
        if last is not None and now - last < 2 * rtt:
            self.window = min(self.window * 2, self.max_window)
        self._pending = True

    @property
    def update_pending(self) -> bool:
        return self._pending or self._resend

    def take_update(self, now: float) -> int | None:
        """The new limit to advertise in a MAX_*DATA frame, if one is owed."""
        if not (self._pending or self._resend):
            return None
        new = max(self.limit, self.consumed + self.window)
        if new == self.limit and not self._resend:
            self._pending = False
            return None
        self._pending = self._resend = False
        self.limit = new
        self.updates_sent += 1
        self._last_update_time = now
        return new

    def stop(self) -> None:
        """No more updates (the stream is finished or reset)."""
        self._pending = self._resend = False

    # Delivery: the token is the limit the lost or acked frame carried.
    def on_acked(self, token: Any) -> None:
        """Nothing to release: the frame only announced a number."""

    def on_lost(self, token: Any) -> None:
        if token == self.limit:
            self._resend = True
