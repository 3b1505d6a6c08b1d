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

from nacl._sodium import ffi, lib

from intentus_trio.mxp.packet import (
    FIXED_BIT,
    LONG_FORM,
    PN_LEN_MASK,
    SHORT_PN_OFFSET,
    SHORT_RESERVED,
)
from intentus_trio.mxp.protection import (
    IV_LEN,
    MAX_PACKET,
    MIN_SHORT_PACKET,
    SAMPLE_LEN,
    SAMPLE_OFFSET,
    TAG_LEN,
    HeaderProtector,
    PacketCipher,
    kdf,
    protect_short,
)
from intentus_trio.mxp.replay import ReplayWindow

_decrypt = lib.crypto_aead_chacha20poly1305_ietf_decrypt
_NULL = ffi.NULL
_FORM_BITS = LONG_FORM | FIXED_BIT
_SAMPLE_END = SAMPLE_OFFSET + SAMPLE_LEN


def next_secret(secret: bytes) -> bytes:
    return kdf(secret, b"mxp ku", 32)


class Opened(NamedTuple):
    """A packet that passed authentication and the replay check."""

    pn: int
    payload: bytes
    key_phase: int


#: ``Opened(...)`` without the NamedTuple's Python-level ``__new__`` (once per packet).
_tuple_new = tuple.__new__


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
        self, dcid: bytes, pn: int, truncated_pn: int, pn_len: int, payload: bytes | bytearray
    ) -> bytes:
        return protect_short(
            self._send, self._send_hp, dcid, pn, truncated_pn, pn_len, self.send_generation & 1,
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
        ``"replay"``) for the caller's counters.

        Header removal, packet-number expansion, the replay check and the AEAD are inlined
        (``remove_header_protection``, ``decode_packet_number``, ``ReplayWindow``): this runs
        once per packet received, and a Python call costs more than a 16-byte hash. The packet
        is copied into the cipher's buffer, its header unmasked there and the payload opened in
        place, so the header needs no bytes of its own."""
        size = len(data)
        if size < MIN_SHORT_PACKET or size > MAX_PACKET or data[0] & _FORM_BITS != FIXED_BIT:
            return "malformed"
        h = self._recv_hp.keyed.copy()
        h.update(data[SAMPLE_OFFSET:_SAMPLE_END])
        mask = int.from_bytes(h.digest())
        first = data[0] ^ ((mask >> 32) & 0x1F)
        pn_len = (first & PN_LEN_MASK) + 1
        end = SHORT_PN_OFFSET + pn_len
        # the four bytes after the connection id hold the packet number and then ciphertext
        truncated = ((int.from_bytes(data[SHORT_PN_OFFSET:SAMPLE_OFFSET]) ^ mask) & 0xFFFFFFFF) >> (
            (4 - pn_len) << 3
        )
        # packet-number expansion next to the largest accepted number (RFC 9000 §A.3)
        replay = self.replay
        largest = replay.largest
        window = 1 << (pn_len << 3)
        pn = ((largest + 1) & -window) | truncated
        if pn <= largest - (window >> 1) + 1 and pn < (1 << 62) - window:
            pn += window
        elif pn > largest + 1 + (window >> 1) and pn >= window:
            pn -= window
        if pn <= largest:
            offset = largest - pn
            if offset >= replay.size or (replay.bits >> offset) & 1:
                return "replay"
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
        if size > cipher.size:
            cipher.reserve(size)
        memory = cipher.memory
        memory[0:size] = data
        memory[0] = first
        memory[SHORT_PN_OFFSET:end] = truncated.to_bytes(pn_len)
        at = cipher.at[pn_len]
        if _decrypt(
            at, _NULL, _NULL, at, size - end, cipher.buf, end,
            (cipher.iv ^ pn).to_bytes(IV_LEN), cipher.key,
        ):  # fmt: skip
            return "auth"
        if first & SHORT_RESERVED:
            return "malformed"
        replay.mark(pn)
        if rotate:
            self._rotate_recv(pn, now)
        elif cipher is self._recv and pn < self._recv_first_pn:
            self._recv_first_pn = pn
        return _tuple_new(Opened, (pn, cipher.whole[end : size - TAG_LEN], phase))

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
