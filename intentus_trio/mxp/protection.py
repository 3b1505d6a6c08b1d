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
_unpack = ffi.unpack
_NULL = ffi.NULL


def kdf(secret: bytes, label: bytes, length: int = 32) -> bytes:
    """Keyed BLAKE2b as a PRF: one labelled output per use of a secret."""
    return hashlib.blake2b(label, key=secret, digest_size=length).digest()


class PacketCipher:
    """The AEAD for one direction and one key phase."""

    __slots__ = ("_buf", "_iv", "_key", "_len", "_out")

    def __init__(self, secret: bytes) -> None:
        self._key = kdf(secret, b"mxp key", KEY_LEN)
        self._iv = int.from_bytes(kdf(secret, b"mxp iv", IV_LEN), "big")
        self._buf = ffi.new("unsigned char[]", MAX_PACKET + TAG_LEN)
        # the same memory seen as char*, which ffi.unpack turns into bytes fastest
        self._out = ffi.cast("char *", self._buf)
        self._len = ffi.new("unsigned long long *")

    def seal(self, pn: int, header: bytes, plaintext: bytes) -> bytes:
        nonce = (self._iv ^ pn).to_bytes(IV_LEN, "big")
        _encrypt(
            self._buf, self._len, plaintext, len(plaintext), header, len(header),
            _NULL, nonce, self._key,
        )  # fmt: skip
        return _unpack(self._out, self._len[0])  # type: ignore[no-any-return]

    def open(self, pn: int, header: bytes, ciphertext: bytes) -> bytes | None:
        """The plaintext, or None if authentication fails."""
        if len(ciphertext) > MAX_PACKET + TAG_LEN:
            return None  # libsodium itself rejects ciphertexts shorter than the tag
        nonce = (self._iv ^ pn).to_bytes(IV_LEN, "big")
        if _decrypt(
            self._buf, self._len, _NULL, ciphertext, len(ciphertext), header, len(header),
            nonce, self._key,
        ):  # fmt: skip
            return None
        return _unpack(self._out, self._len[0])  # type: ignore[no-any-return]


class HeaderProtector:
    """Masks for one direction; the key stays fixed across key updates."""

    __slots__ = ("_keyed",)

    def __init__(self, secret: bytes) -> None:
        # Copying a keyed state is about twice as fast as keying per packet; BLAKE2s is a
        # little faster than BLAKE2b on 16-byte inputs.
        self._keyed = hashlib.blake2s(key=kdf(secret, b"mxp hp", 32), digest_size=5)

    def mask(self, sample: bytes) -> bytes:
        h = self._keyed.copy()
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
    payload: bytes,
) -> bytes:
    """Build a protected short-header packet. Short payloads are padded with zero bytes
    (PADDING frames) so the header-protection sample exists.

    ``cipher.seal`` and ``hp.mask`` are inlined: this runs once per packet sent."""
    if len(payload) < 4 - pn_len:
        payload += bytes(4 - pn_len - len(payload))
    first = FIXED_BIT | (KEY_PHASE_BIT if key_phase else 0) | (pn_len - 1)
    header = bytes((first,)) + dcid + truncated_pn.to_bytes(pn_len, "big")
    out_len = cipher._len
    _encrypt(
        cipher._buf, out_len, payload, len(payload), header, len(header), _NULL,
        (cipher._iv ^ pn).to_bytes(IV_LEN, "big"), cipher._key,
    )  # fmt: skip
    sealed: bytes = _unpack(cipher._out, out_len[0])
    start = 4 - pn_len
    h = hp._keyed.copy()
    h.update(sealed[start : start + SAMPLE_LEN])
    mask = h.digest()
    masked_pn = truncated_pn ^ int.from_bytes(mask[1 : 1 + pn_len], "big")
    return b"".join(
        (bytes((first ^ (mask[0] & 0x1F),)), dcid, masked_pn.to_bytes(pn_len, "big"), sealed)
    )


def remove_header_protection(hp: HeaderProtector, data: bytes) -> tuple[bytes, int, int] | None:
    """Unmask a received short header: (header as authenticated, truncated packet number,
    its length in bytes), or None if the packet is too short or not a short header."""
    if len(data) < MIN_SHORT_PACKET or data[0] & (LONG_FORM | FIXED_BIT) != FIXED_BIT:
        return None
    h = hp._keyed.copy()
    h.update(data[SAMPLE_OFFSET : SAMPLE_OFFSET + SAMPLE_LEN])
    mask = h.digest()
    first = data[0] ^ (mask[0] & 0x1F)
    pn_len = (first & PN_LEN_MASK) + 1
    end = SHORT_PN_OFFSET + pn_len
    truncated = int.from_bytes(data[SHORT_PN_OFFSET:end], "big") ^ int.from_bytes(
        mask[1 : 1 + pn_len], "big"
    )
    header = bytes((first,)) + data[1:SHORT_PN_OFFSET] + truncated.to_bytes(pn_len, "big")
    return header, truncated, pn_len
