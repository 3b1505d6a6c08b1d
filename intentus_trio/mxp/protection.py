"""Per-packet AEAD and header protection for short-header (1-RTT) packets.

* Payload: ChaCha20-Poly1305 (IETF), nonce = IV XOR packet number (never sent), AAD = the
  unprotected short header.
* Header: a 5-byte mask = keyed BLAKE2s(hp_key, 16-byte ciphertext sample) hides the key-phase,
  reserved and packet-number-length bits of the first byte and the packet-number bytes.

libsodium is called through PyNaCl's cffi handle: ``nacl.bindings`` adds several microseconds of
argument checking per call, which is most of a packet's budget.
"""

from __future__ import annotations

import hashlib

from nacl._sodium import ffi, lib

from intentus_trio.mxp.packet import (
    FIXED_BIT,
    KEY_PHASE_BIT,
    LONG_FORM,
    PN_LEN_MASK,
    SHORT_PN_OFFSET,
)

KEY_LEN = 32
IV_LEN = 12
TAG_LEN = 16
SAMPLE_LEN = 16
SAMPLE_OFFSET = SHORT_PN_OFFSET + 4
MIN_SHORT_PACKET = SAMPLE_OFFSET + SAMPLE_LEN
MAX_PACKET = 65527

# bound once: attribute lookups on the cffi lib cost more than the module-global lookup
_encrypt = lib.crypto_aead_chacha20poly1305_ietf_encrypt
_decrypt = lib.crypto_aead_chacha20poly1305_ietf_decrypt
_NULL = ffi.NULL
_SAMPLE_END = SAMPLE_OFFSET + SAMPLE_LEN
_FIRST_PHASE_1 = FIXED_BIT | KEY_PHASE_BIT
# a 1,500-byte MTU's packet fits without growing
_INITIAL_BUFFER = 2048


def kdf(secret: bytes, label: bytes, length: int = 32) -> bytes:
    """Keyed BLAKE2b as a PRF: one labelled output per use of a secret."""
    return hashlib.blake2b(label, key=secret, digest_size=length).digest()


class PacketCipher:
    """The AEAD for one direction and one key phase, with the C buffer its packets are built
    or opened in.

    A whole packet lives in ``buf``: the header (the AAD) first, the sealed payload right after
    it, so sealing and header protection work in place and the finished packet leaves as one
    copy. ``at[n]`` points just past a header with an ``n``-byte packet number; ``memory`` is a
    writable view of ``buf``, ``whole`` a cffi buffer whose slices are bytes. ``dcid`` is the
    connection id the buffer's header holds (a sending cipher writes it only when it changes).
    """

    __slots__ = ("at", "buf", "dcid", "iv", "key", "memory", "size", "whole")

    def __init__(self, secret: bytes) -> None:
        self.key = kdf(secret, b"mxp key", KEY_LEN)
        self.iv = int.from_bytes(kdf(secret, b"mxp iv", IV_LEN))
        self.size = 0
        self.reserve(_INITIAL_BUFFER)

    def reserve(self, size: int) -> None:
        """Room for a packet of ``size`` bytes. Buffers start small and grow on demand:
        zeroing a 64 KiB buffer per cipher would cost more than a handshake's HMACs."""
        if size <= self.size:
            return
        self.size = max(size, 2 * self.size)
        self.buf = ffi.new("unsigned char[]", self.size)
        self.at = tuple(self.buf + SHORT_PN_OFFSET + n for n in range(5))
        self.whole = ffi.buffer(self.buf)
        self.memory = memoryview(self.whole)
        self.dcid: bytes | None = None


class HeaderProtector:
    """Masks for one direction; the key stays fixed across key updates."""

    __slots__ = ("keyed",)

    def __init__(self, secret: bytes) -> None:
        # Copying a keyed state is about twice as fast as keying per packet; BLAKE2s is a
        # little faster than BLAKE2b on 16-byte inputs.
        self.keyed = hashlib.blake2s(key=kdf(secret, b"mxp hp", 32), digest_size=5)

    def mask(self, sample: bytes) -> bytes:
        h = self.keyed.copy()
        h.update(sample)
        return h.digest()


def protect_short(
    cipher: PacketCipher,
    hp: HeaderProtector,
    dcid: bytes,
    pn: int,
    truncated_pn: int,
    pn_len: int,
    key_phase: int,
    payload: bytes | bytearray,
) -> bytes:
    """Build a protected short-header packet. Short payloads are padded with zero bytes
    (PADDING frames) so the header-protection sample exists.

    The header is written into ``cipher.buf`` and authenticated from there, the payload is
    sealed right after it and the mask applied in place, so one copy leaves as the packet.
    The mask is inlined (as one integer: byte 0 for the first byte, bytes 1-4 for the packet
    number): this runs once per packet sent."""
    size = len(payload)
    if size < 4 - pn_len:
        payload = bytes(payload) + bytes(4 - pn_len - size)
        size = 4 - pn_len
    elif size > MAX_PACKET - MIN_SHORT_PACKET:
        raise ValueError("payload too large for one packet")
    first = (_FIRST_PHASE_1 if key_phase else FIXED_BIT) | (pn_len - 1)
    end = SHORT_PN_OFFSET + pn_len
    if end + size + TAG_LEN > cipher.size:
        cipher.reserve(end + size + TAG_LEN)
    memory = cipher.memory
    memory[0] = first
    if dcid is not cipher.dcid:
        memory[1:SHORT_PN_OFFSET] = dcid
        cipher.dcid = dcid
    memory[SHORT_PN_OFFSET:end] = truncated_pn.to_bytes(pn_len)
    _encrypt(
        cipher.at[pn_len], _NULL, payload, size, cipher.buf, end, _NULL,
        (cipher.iv ^ pn).to_bytes(IV_LEN), cipher.key,
    )  # fmt: skip
    h = hp.keyed.copy()
    h.update(memory[SAMPLE_OFFSET:_SAMPLE_END])
    mask = int.from_bytes(h.digest())
    memory[0] = first ^ ((mask >> 32) & 0x1F)
    memory[SHORT_PN_OFFSET:end] = (
        truncated_pn ^ ((mask & 0xFFFFFFFF) >> ((4 - pn_len) << 3))
    ).to_bytes(pn_len)
    return cipher.whole[0 : end + size + TAG_LEN]  # type: ignore[no-any-return]


def remove_header_protection(hp: HeaderProtector, data: bytes) -> tuple[bytes, int, int] | None:
    """Unmask a received short header: (header as authenticated, truncated packet number,
    its length in bytes), or None if the packet is too short or not a short header."""
    if len(data) < MIN_SHORT_PACKET or data[0] & (LONG_FORM | FIXED_BIT) != FIXED_BIT:
        return None
    mask = hp.mask(data[SAMPLE_OFFSET:_SAMPLE_END])
    first = data[0] ^ (mask[0] & 0x1F)
    pn_len = (first & PN_LEN_MASK) + 1
    end = SHORT_PN_OFFSET + pn_len
    truncated = int.from_bytes(data[SHORT_PN_OFFSET:end], "big") ^ int.from_bytes(
        mask[1 : 1 + pn_len], "big"
    )
    header = bytes((first,)) + data[1:SHORT_PN_OFFSET] + truncated.to_bytes(pn_len, "big")
    return header, truncated, pn_len
