"""1-RTT keys with key update signalled by the key-phase bit.

Each direction starts from a secret produced by the Noise handshake; generation ``g+1`` keys
come from ``kdf(secret_g, "mxp ku")``. The header-protection key never changes. The receiver
keeps the previous generation for ``discard_delay`` seconds after switching, so packets
reordered across the phase change still open; a packet whose phase bit differs from the
current one is tried with the previous keys if its number precedes the switch, otherwise with
the next keys (and success moves the receiver, and then the sender, forward).
"""

from __future__ import annotations

from typing import NamedTuple

from intentus_trio.mxp.packet import SHORT_PN_OFFSET, SHORT_RESERVED, decode_packet_number
from intentus_trio.mxp.protection import (
    HeaderProtector,
    PacketCipher,
    kdf,
    protect_short,
    remove_header_protection,
)
from intentus_trio.mxp.replay import ReplayWindow


def next_secret(secret: bytes) -> bytes:
    return kdf(secret, b"mxp ku", 32)


class Opened(NamedTuple):
    """A packet that passed authentication and the replay check."""

    pn: int
    payload: bytes
    key_phase: int


class OneRttKeys:
    """Send and receive protection for one connection, with key update and replay protection."""

    def __init__(
        self,
        send_secret: bytes,
        recv_secret: bytes,
        *,
        discard_delay: float = 3.0,
        replay_window: int = 1024,
    ) -> None:
        self.discard_delay = discard_delay
        self._send_secret = send_secret
        self._send = PacketCipher(send_secret)
        self._send_hp = HeaderProtector(send_secret)
        self.send_generation = 0
        self._recv_secret = recv_secret
        self._recv = PacketCipher(recv_secret)
        self._recv_hp = HeaderProtector(recv_secret)
        self.recv_generation = 0
        self._recv_next: PacketCipher | None = None
        self._recv_prev: PacketCipher | None = None
        self._prev_discard_at: float | None = None
        self._recv_first_pn = 0
        self.replay = ReplayWindow(replay_window)
        self.update_count = 0

    # ---------------------------------------------------------------- send

    @property
    def send_key_phase(self) -> int:
        return self.send_generation & 1

    def can_initiate_update(self) -> bool:
        """The peer must have moved to our current generation first."""
        return self.recv_generation == self.send_generation

    def initiate_update(self) -> None:
        if not self.can_initiate_update():
            raise RuntimeError("a key update is already in progress")
        self._advance_send()

    def _advance_send(self) -> None:
        self._send_secret = next_secret(self._send_secret)
        self._send = PacketCipher(self._send_secret)
        self.send_generation += 1
        self.update_count += 1

    def protect(
        self, dcid: bytes, pn: int, truncated_pn: int, pn_len: int, payload: bytes
    ) -> bytes:
        return protect_short(
            self._send, self._send_hp, dcid, pn, truncated_pn, pn_len, self.send_key_phase,
            payload,
        )  # fmt: skip

    # ---------------------------------------------------------------- receive

    @property
    def previous_keys_discard_at(self) -> float | None:
        return self._prev_discard_at

    def discard_expired(self, now: float) -> None:
        if self._prev_discard_at is not None and now >= self._prev_discard_at:
            self._recv_prev = None
            self._prev_discard_at = None

    def unprotect(self, data: bytes, now: float) -> Opened | str:
        """The opened packet, or a short drop reason (``"malformed"``, ``"auth"``,
        ``"replay"``) for the caller's counters."""
        unmasked = remove_header_protection(self._recv_hp, data)
        if unmasked is None:
            return "malformed"
        header, truncated, pn_len = unmasked
        replay = self.replay
        pn = decode_packet_number(replay.largest, truncated, pn_len * 8)
        if pn <= replay.largest and not replay.would_accept(pn):
            return "replay"
        body = data[SHORT_PN_OFFSET + pn_len :]
        first = header[0]
        phase = (first >> 2) & 1
        if self._prev_discard_at is not None and now >= self._prev_discard_at:
            self.discard_expired(now)
        rotate = False
        if phase == self.recv_generation & 1:
            cipher: PacketCipher | None = self._recv
        elif pn < self._recv_first_pn:
            cipher = self._recv_prev
        else:
            if self._recv_next is None:
                self._recv_next = PacketCipher(next_secret(self._recv_secret))
            cipher = self._recv_next
            rotate = True
        if cipher is None:
            return "auth"
        payload = cipher.open(pn, header, body)
        if payload is None:
            return "auth"
        if first & SHORT_RESERVED:
            return "malformed"
        replay.mark(pn)
        if rotate:
            self._rotate_recv(pn, now)
        elif cipher is self._recv and pn < self._recv_first_pn:
            self._recv_first_pn = pn
        return Opened(pn, payload, phase)

    def _rotate_recv(self, pn: int, now: float) -> None:
        assert self._recv_next is not None
        self._recv_prev = self._recv
        self._recv = self._recv_next
        self._recv_next = None
        self._recv_secret = next_secret(self._recv_secret)
        self.recv_generation += 1
        self._recv_first_pn = pn
        self._prev_discard_at = now + self.discard_delay
        if self.send_generation < self.recv_generation:
            self._advance_send()
