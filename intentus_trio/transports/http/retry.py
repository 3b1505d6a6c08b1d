"""When the HTTP client tries again, and how long it waits first.

A retry must never make an agent do its work twice unasked. So failures split in two:

* **not processed** — the connection could not be made (connect error or timeout, no free
  pool slot), or the server answered 429 or 503 (it refused before routing): retried for
  every call;
* **maybe processed** — the request was sent but the answer was lost (read timeout, dropped
  connection), or the server answered 502/504, or the error response says
  ``retryable: true``: retried only for idempotent calls (task status queries, cancels,
  health checks, and intents sent with ``idempotent=True``).

Everything else (4xx, agent errors that are not retryable) is returned at once. Waits grow
exponentially with random jitter, and a ``Retry-After`` header is honoured (capped by
``max_retry_after`` and by the call's deadline: a wait that would pass the deadline ends
the retries and the last answer is returned).
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import attrs


@attrs.frozen
class RetryPolicy:
    #: Attempts in total, including the first (1 disables retries).
    max_attempts: int = 3
    #: Wait before the first retry, in seconds.
    base_delay: float = 0.1
    #: Growth factor of the wait per retry.
    multiplier: float = 2.0
    #: Longest wait computed from the backoff, in seconds.
    max_delay: float = 5.0
    #: Share of the wait that is random: 0 waits exactly, 1 waits uniformly in [0, wait].
    jitter: float = 1.0
    #: Longest ``Retry-After`` honoured, in seconds (a longer one ends the retries).
    max_retry_after: float = 30.0

    def __attrs_post_init__(self) -> None:
        if self.max_attempts < 1 or self.base_delay < 0 or self.multiplier < 1:
            raise ValueError("max_attempts >= 1, base_delay >= 0 and multiplier >= 1 required")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError("jitter must be within [0, 1]")

    def backoff(self, retry: int, rng: random.Random | None = None) -> float:
        """The wait before retry number ``retry`` (1 for the first retry)."""
        delay = min(self.max_delay, self.base_delay * self.multiplier ** (retry - 1))
        if self.jitter:
            delay *= 1.0 - self.jitter * (rng or random).random()
        return delay


NO_RETRY = RetryPolicy(max_attempts=1)


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta-seconds or HTTP-date)."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # isdigit() alone also accepts "²"
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
