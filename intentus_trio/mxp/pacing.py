"""A token-bucket pacer: spreads a window's worth of packets over a round trip.

Without pacing a sender that receives one ACK for a whole window releases the next window in
one burst, which overflows shallow buffers and causes the very losses congestion control then
punishes. The bucket refills at ``gain * cwnd / smoothed_rtt`` bytes per second and holds at
most ``burst`` datagrams, so the driver wakes once per burst rather than once per packet.

A driver cannot sleep for less than its timer granularity (trio's epoll wait rounds up to a
millisecond), so a bucket that refills in less than that would cap the rate at one burst per
millisecond (12 MB/s with 1,200-byte datagrams). With ``granularity`` set, the bucket also holds
what the rate earns in that time, up to the congestion window.
"""

from __future__ import annotations

import math

PACING_GAIN = 1.25
BURST_PACKETS = 10


class Pacer:
    """Says when the next packet may leave, driven by ``now``.

    Tokens are bytes. A packet may leave when the bucket holds at least its size; sending takes
    its size out (the balance may not go below zero, so a long idle period cannot bank more than
    one burst).
    """

    __slots__ = (
        "_last",
        "burst",
        "capacity",
        "gain",
        "granularity",
        "max_datagram_size",
        "rate",
        "tokens",
    )

    def __init__(
        self,
        max_datagram_size: int = 1200,
        *,
        gain: float = PACING_GAIN,
        burst: int = BURST_PACKETS,
        granularity: float = 0.0,
    ) -> None:
        self.max_datagram_size = max_datagram_size
        self.gain = gain
        self.burst = burst
        self.granularity = granularity
        self.capacity = float(burst * max_datagram_size)
        self.tokens = self.capacity
        self.rate = math.inf
        self._last: float | None = None

    def update(self, cwnd: int, smoothed_rtt: float) -> None:
        """Follow the congestion window and RTT (call after every ACK)."""
        if smoothed_rtt <= 0:
            self.rate = math.inf
        else:
            self.rate = self.gain * cwnd / smoothed_rtt
        burst = float(self.burst * self.max_datagram_size)
        if self.granularity > 0 and self.rate != math.inf:
            burst = max(burst, self.rate * self.granularity)
        self.capacity = max(2.0 * self.max_datagram_size, min(burst, float(cwnd)))
        self.tokens = min(self.tokens, self.capacity)

    def _refill(self, now: float) -> None:
        last = self._last
        if last is not None and now > last:
            self.tokens = min(self.capacity, self.tokens + (now - last) * self.rate)
        self._last = now if last is None or now > last else last

    def next_send_time(self, now: float, size: int | None = None) -> float:
        """``now`` if a packet of ``size`` bytes may leave now, else the time it may."""
        self._refill(now)
        need = float(size if size is not None else self.max_datagram_size)
        if self.tokens >= need or self.rate == math.inf:
            return now
        return now + (need - self.tokens) / self.rate

    def on_packet_sent(self, size: int, now: float) -> None:
        self._refill(now)
        self.tokens = max(0.0, self.tokens - size)
