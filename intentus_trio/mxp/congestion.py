"""Congestion controllers behind one small interface: NewReno (RFC 9002 §7) and CUBIC (RFC 9438).

The loss-recovery layer drives a controller with four calls: ``on_packet_sent``,
``on_packet_acked``, ``on_packets_lost`` and ``on_packet_discarded``; it also reports restarts
after idle and congestion events that turned out spurious. The controller owns
``bytes_in_flight`` so the window check is one comparison on the send path.
"""

from __future__ import annotations

import abc
import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from intentus_trio.mxp.recovery import RttEstimator

DEFAULT_DATAGRAM_SIZE = 1200
LOSS_REDUCTION = 0.5


def initial_window(max_datagram_size: int) -> int:
    """RFC 9002 §7.2: ten datagrams, but no more than max(14720 bytes, two datagrams)."""
    return min(10 * max_datagram_size, max(14720, 2 * max_datagram_size))


class CongestionController(abc.ABC):
    """The shared bookkeeping: window, slow-start threshold, bytes in flight, recovery period.

    A controller only grows its window while the sender is window-limited (at least half the
    window was in flight at some point in the current or previous round trip), so an
    application that sends little cannot build up a window it never tested.
    """

    name = "abstract"

    def __init__(self, max_datagram_size: int = DEFAULT_DATAGRAM_SIZE) -> None:
        self.max_datagram_size = max_datagram_size
        self.initial_window = initial_window(max_datagram_size)
        self.minimum_window = 2 * max_datagram_size
        self.cwnd = self.initial_window
        self.ssthresh = math.inf
        self.bytes_in_flight = 0
        self.recovery_start_time: float | None = None
        self.congestion_events = 0
        self._undo: tuple[int, float, float | None] | None = None
        self._peak = 0
        self._prev_peak = 0
        self._round_start = -math.inf

    @property
    def available(self) -> int:
        return max(0, self.cwnd - self.bytes_in_flight)

    @property
    def in_slow_start(self) -> bool:
        return self.cwnd < self.ssthresh

    def in_recovery(self, time_sent: float) -> bool:
        start = self.recovery_start_time
        return start is not None and time_sent <= start

    def on_packet_sent(self, size: int, now: float) -> None:
        self.bytes_in_flight += size
        if self.bytes_in_flight > self._peak:
            self._peak = self.bytes_in_flight

    def on_packet_discarded(self, size: int) -> None:
        """A packet stopped counting without being acked or lost (keys dropped, closing)."""
        self.bytes_in_flight = max(0, self.bytes_in_flight - size)

    def on_packet_acked(self, size: int, time_sent: float, now: float, rtt: RttEstimator) -> None:
        if time_sent >= self._round_start:
            # a packet sent after the round began was acked: one round trip has passed
            self._round_start = now
            self._prev_peak = self._peak
            self._peak = self.bytes_in_flight
        window_limited = 2 * max(self._peak, self._prev_peak) >= self.cwnd
        self.bytes_in_flight = max(0, self.bytes_in_flight - size)
        if self.in_recovery(time_sent) or not window_limited:
            return
        self._undo = None
        self._grow(size, time_sent, now, rtt)

    def on_packets_lost(
        self, size: int, largest_time_sent: float, now: float, *, persistent: bool = False
    ) -> bool:
        """Account lost bytes; start a congestion event unless one covers these packets already.
        Returns whether a new event started."""
        self.bytes_in_flight = max(0, self.bytes_in_flight - size)
        started = False
        if not self.in_recovery(largest_time_sent):
            self._undo = (self.cwnd, self.ssthresh, self.recovery_start_time)
            self.recovery_start_time = now
            self.congestion_events += 1
            self._on_congestion_event(now)
            self.cwnd = max(self.cwnd, self.minimum_window)
            started = True
        if persistent:
            self.cwnd = self.minimum_window
            self.recovery_start_time = None
            self._undo = None
            self._on_persistent_congestion(now)
        return started

    def on_spurious_congestion_event(self) -> None:
        """Every packet that started the last congestion event was acked after all: restore the
        window it cost, unless the window has moved on since."""
        if self._undo is None:
            return
        cwnd, ssthresh, start = self._undo
        self._undo = None
        self.cwnd = max(self.cwnd, cwnd)
        self.ssthresh = ssthresh
        self.recovery_start_time = start
        self._on_undo()

    def on_restart_after_idle(self, now: float) -> None:
        """Nothing was in flight for longer than a PTO: the path may have changed, so do not
        release a large old window in one burst (RFC 5681 §4.1 restart window)."""
        self.cwnd = max(self.minimum_window, min(self.cwnd, self.initial_window))

    @abc.abstractmethod
    def _grow(self, size: int, time_sent: float, now: float, rtt: RttEstimator) -> None: ...

    @abc.abstractmethod
    def _on_congestion_event(self, now: float) -> None: ...

    def _on_persistent_congestion(self, now: float) -> None:  # noqa: B027 - optional hook
        """Hook for controllers with extra state to reset."""

    def _on_undo(self) -> None:  # noqa: B027 - optional hook
        """Hook for controllers with extra state to restore."""


class NewReno(CongestionController):
    """Slow start doubles per RTT; congestion avoidance adds one datagram per window acked;
    a loss halves the window once per recovery period."""

    name = "newreno"

    def __init__(self, max_datagram_size: int = DEFAULT_DATAGRAM_SIZE) -> None:
        super().__init__(max_datagram_size)
        self._acked_in_ca = 0

    def _grow(self, size: int, time_sent: float, now: float, rtt: RttEstimator) -> None:
        if self.cwnd < self.ssthresh:
            self.cwnd += size
            return
        self._acked_in_ca += size
        if self._acked_in_ca >= self.cwnd:
            self._acked_in_ca -= self.cwnd
            self.cwnd += self.max_datagram_size

    def _on_congestion_event(self, now: float) -> None:
        self.ssthresh = max(int(self.cwnd * LOSS_REDUCTION), self.minimum_window)
        self.cwnd = int(self.ssthresh)
        self._acked_in_ca = 0


CUBIC_C = 0.4
CUBIC_BETA = 0.7


class Cubic(CongestionController):
    """CUBIC (RFC 9438): after a loss the window follows a cubic curve in time, centred on the
    window where the loss happened, never slower than Reno would grow (the Reno-friendly
    estimate). Windows in the formulas are in datagrams, times in seconds."""

    name = "cubic"

    def __init__(self, max_datagram_size: int = DEFAULT_DATAGRAM_SIZE) -> None:
        super().__init__(max_datagram_size)
        self._epoch_start: float | None = None
        self._w_max = 0.0
        self._w_last_max = 0.0
        self._k = 0.0
        self._w_est = 0.0
        self._saved: tuple[float | None, float, float, float, float] | None = None

    def _w_cubic(self, t: float) -> float:
        return CUBIC_C * (t - self._k) ** 3 + self._w_max

    def _grow(self, size: int, time_sent: float, now: float, rtt: RttEstimator) -> None:
        mds = self.max_datagram_size
        if self.cwnd < self.ssthresh:
            self.cwnd += size
            return
        cwnd_seg = self.cwnd / mds
        if self._epoch_start is None:
            # first congestion-avoidance ACK without a prior loss (left slow start by ssthresh)
            self._epoch_start = now
            self._w_max = cwnd_seg
            self._k = 0.0
            self._w_est = cwnd_seg
        t = now - self._epoch_start
        alpha = 3 * (1 - CUBIC_BETA) / (1 + CUBIC_BETA)
        self._w_est += alpha * (size / mds) / cwnd_seg
        target = self._w_cubic(t + rtt.smoothed_rtt)
        target = min(max(target, cwnd_seg), 1.5 * cwnd_seg)
        if self._w_cubic(t) < self._w_est:
            new_seg = max(cwnd_seg, self._w_est)
        else:
            new_seg = cwnd_seg + (target - cwnd_seg) * (size / mds) / cwnd_seg
        self.cwnd = max(self.cwnd, int(new_seg * mds))

    def _on_congestion_event(self, now: float) -> None:
        mds = self.max_datagram_size
        self._saved = (self._epoch_start, self._w_max, self._w_last_max, self._k, self._w_est)
        cwnd_seg = self.cwnd / mds
        # fast convergence: release bandwidth sooner when the loss point keeps falling
        if cwnd_seg < self._w_last_max:
            self._w_last_max = cwnd_seg
            self._w_max = cwnd_seg * (1 + CUBIC_BETA) / 2
        else:
            self._w_last_max = cwnd_seg
            self._w_max = cwnd_seg
        new_cwnd = max(int(self.cwnd * CUBIC_BETA), self.minimum_window)
        self.ssthresh = new_cwnd
        self.cwnd = new_cwnd
        self._epoch_start = now
        self._w_est = new_cwnd / mds
        self._k = (
            ((self._w_max - self._w_est) / CUBIC_C) ** (1 / 3) if self._w_max > self._w_est else 0.0
        )

    def _on_persistent_congestion(self, now: float) -> None:
        self._epoch_start = None
        self._w_max = 0.0
        self._w_last_max = 0.0
        self._k = 0.0
        self._saved = None

    def _on_undo(self) -> None:
        if self._saved is not None:
            self._epoch_start, self._w_max, self._w_last_max, self._k, self._w_est = self._saved
            self._saved = None

    def on_restart_after_idle(self, now: float) -> None:
        super().on_restart_after_idle(now)
        # the cubic curve is a function of time: idle time must not count as growth time
        self._epoch_start = None


CONTROLLERS: dict[str, type[CongestionController]] = {"newreno": NewReno, "cubic": Cubic}


def make_controller(
    name: str = "newreno", max_datagram_size: int = DEFAULT_DATAGRAM_SIZE
) -> CongestionController:
    try:
        cls = CONTROLLERS[name]
    except KeyError:
        raise ValueError(f"unknown congestion controller {name!r}") from None
    return cls(max_datagram_size)
