"""Sans-IO Noise handshakes (Noise spec rev. 34) for the MXP secure channel.

MXP uses ``Noise_IK_25519_ChaChaPoly_BLAKE2b``; the symmetric-state code is shared by a small
pattern table so the same objects also run XX and NN (and SHA-256), which lets the public test
vectors check every path. Names follow the spec: ``CipherState``, ``SymmetricState``,
``HandshakeState``. X25519 and ChaCha20-Poly1305 come from libsodium via PyNaCl; HKDF is the
spec's HMAC construction over the stdlib hash.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import os
from collections.abc import Callable
from typing import Any

import attrs
from nacl import bindings as _nacl  # importing it initialises libsodium
from nacl._sodium import ffi as _ffi
from nacl._sodium import lib as _lib

DHLEN = 32
MAX_MESSAGE_LEN = 65535
_MAX_NONCE = 2**64 - 1
_TAG_LEN = 16
_KEY_LEN = 32


class NoiseError(Exception):
    """A Noise handshake or transport message was rejected."""


class NoiseDecryptError(NoiseError):
    """Authentication of a ciphertext failed (wrong key, tampering or out-of-order nonce)."""


# --------------------------------------------------------------------------- primitives


@attrs.frozen(repr=False)
class KeyPair:
    """An X25519 key pair; ``repr`` hides the private half."""

    private: bytes
    public: bytes

    @classmethod
    def generate(cls) -> KeyPair:
        return cls.from_private(os.urandom(DHLEN))

    @classmethod
    def from_private(cls, private: bytes) -> KeyPair:
        if len(private) != DHLEN:
            raise ValueError("X25519 private keys are 32 bytes")
        return cls(private=private, public=_nacl.crypto_scalarmult_base(private))

    def __repr__(self) -> str:
        return f"KeyPair(public={self.public.hex()})"


# libsodium called directly (as in protection.py): ``nacl.bindings`` checks and formats error
# messages on every call, a visible share of a handshake's Python time.
_scalarmult = _lib.crypto_scalarmult
_aead_encrypt = _lib.crypto_aead_chacha20poly1305_ietf_encrypt
_aead_decrypt = _lib.crypto_aead_chacha20poly1305_ietf_decrypt
_new = _ffi.new
_buffer = _ffi.buffer
_NULL = _ffi.NULL


#: DH(our static, their static) of recent peers: the same for every handshake between two
#: static keys, so IK's "ss" is computed once per peer (as WireGuard does). Bounded; keyed by
#: our private key and their public key, so a key pair whose halves do not match finds
#: nothing. Holds nothing the static private key does not already give.
_STATIC_SHARED: dict[bytes, bytes] = {}
STATIC_SHARED_LIMIT = 1024


def static_dh(keypair: KeyPair, public: bytes) -> bytes:
    """``dh`` for two static keys, remembered for the next handshake with that peer."""
    key = keypair.private + public
    shared = _STATIC_SHARED.get(key)
    if shared is None:
        shared = dh(keypair, public)
        if len(_STATIC_SHARED) >= STATIC_SHARED_LIMIT:
            del _STATIC_SHARED[next(iter(_STATIC_SHARED))]  # the oldest
        _STATIC_SHARED[key] = shared
    return shared


def dh(keypair: KeyPair, public: bytes) -> bytes:
    """X25519; a low-order peer key (all-zero shared secret) is rejected."""
    if len(public) != DHLEN or len(keypair.private) != DHLEN:
        raise NoiseError("bad key length")
    out = _new("unsigned char[]", DHLEN)
    if _scalarmult(out, keypair.private, public):
        raise NoiseError("invalid (low-order) public key")
    return _buffer(out, DHLEN)[:]  # type: ignore[no-any-return]


_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))


@attrs.frozen
class HashFunction:
    """A Noise hash with its HMAC/HKDF as the spec defines them."""

    name: str
    hashlen: int
    blocklen: int
    constructor: Callable[..., Any]

    def hash(self, data: bytes) -> bytes:
        return bytes(self.constructor(data).digest())

    def hmac(self, key: bytes, data: bytes) -> bytes:
        # RFC 2104 written out: the stdlib ``hmac`` object costs about twice as much for the
        # one-shot, short inputs of a handshake (about 15 per side)
        if len(key) > self.blocklen:
            key = self.constructor(key).digest()
        key = key.ljust(self.blocklen, b"\x00")
        inner = self.constructor(key.translate(_IPAD))
        inner.update(data)
        outer = self.constructor(key.translate(_OPAD))
        outer.update(inner.digest())
        return bytes(outer.digest())

    def hkdf(self, chaining_key: bytes, ikm: bytes, outputs: int) -> tuple[bytes, ...]:
        temp = self.hmac(chaining_key, ikm)
        out1 = self.hmac(temp, b"\x01")
        out2 = self.hmac(temp, out1 + b"\x02")
        if outputs == 2:
            return out1, out2
        return out1, out2, self.hmac(temp, out2 + b"\x03")


BLAKE2B = HashFunction("BLAKE2b", 64, 128, hashlib.blake2b)
SHA256 = HashFunction("SHA256", 32, 64, hashlib.sha256)
_HASHES = {h.name: h for h in (BLAKE2B, SHA256)}


def _nonce(n: int) -> bytes:
    return b"\x00\x00\x00\x00" + n.to_bytes(8, "little")


def aead_encrypt(key: bytes, n: int, ad: bytes, plaintext: bytes) -> bytes:
    if len(key) != _KEY_LEN:
        raise NoiseError("ChaChaPoly keys are 32 bytes")
    size = len(plaintext) + _TAG_LEN
    out = _new("unsigned char[]", size)
    _aead_encrypt(out, _NULL, plaintext, len(plaintext), ad, len(ad), _NULL, _nonce(n), key)
    return _buffer(out, size)[:]  # type: ignore[no-any-return]


def aead_decrypt(key: bytes, n: int, ad: bytes, ciphertext: bytes) -> bytes:
    if len(key) != _KEY_LEN:
        raise NoiseError("ChaChaPoly keys are 32 bytes")
    size = len(ciphertext) - _TAG_LEN
    if size < 0:
        raise NoiseDecryptError("authentication failed")
    out = _new("unsigned char[]", max(size, 1))
    if _aead_decrypt(out, _NULL, _NULL, ciphertext, len(ciphertext), ad, len(ad), _nonce(n), key):
        raise NoiseDecryptError("authentication failed")
    return _buffer(out, size)[:]  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- states


@attrs.define
class CipherState:
    """A key and a 64-bit nonce counter; without a key, encryption is the identity."""

    k: bytes | None = None
    n: int = 0

    def initialize_key(self, key: bytes | None) -> None:
        self.k = key
        self.n = 0

    def has_key(self) -> bool:
        return self.k is not None

    def set_nonce(self, nonce: int) -> None:
        self.n = nonce

    def encrypt_with_ad(self, ad: bytes, plaintext: bytes) -> bytes:
        if self.k is None:
            return plaintext
        if self.n >= _MAX_NONCE:
            raise NoiseError("nonce exhausted; rekey or start a new session")
        out = aead_encrypt(self.k, self.n, ad, plaintext)
        self.n += 1
        return out

    def decrypt_with_ad(self, ad: bytes, ciphertext: bytes) -> bytes:
        """Decrypt; on failure the nonce is not advanced, so the session survives forgeries."""
        if self.k is None:
            return ciphertext
        if self.n >= _MAX_NONCE:
            raise NoiseError("nonce exhausted; rekey or start a new session")
        out = aead_decrypt(self.k, self.n, ad, ciphertext)
        self.n += 1
        return out

    def rekey(self) -> None:
        if self.k is None:
            raise NoiseError("no key to rekey")
        self.k = aead_encrypt(self.k, _MAX_NONCE, b"", bytes(32))[:32]


@attrs.define
class SymmetricState:
    """Chaining key, handshake hash and the handshake's CipherState."""

    hash_fn: HashFunction
    ck: bytes
    h: bytes
    cipher: CipherState = attrs.field(factory=CipherState)

    @classmethod
    def initialize(cls, protocol_name: bytes, hash_fn: HashFunction) -> SymmetricState:
        if len(protocol_name) <= hash_fn.hashlen:
            h = protocol_name.ljust(hash_fn.hashlen, b"\x00")
        else:
            h = hash_fn.hash(protocol_name)
        return cls(hash_fn=hash_fn, ck=h, h=h)

    def mix_key(self, ikm: bytes) -> None:
        self.ck, temp_k = self.hash_fn.hkdf(self.ck, ikm, 2)
        self.cipher.initialize_key(temp_k[:32])

    def mix_hash(self, data: bytes) -> None:
        self.h = self.hash_fn.hash(self.h + data)

    def mix_key_and_hash(self, ikm: bytes) -> None:
        self.ck, temp_h, temp_k = self.hash_fn.hkdf(self.ck, ikm, 3)
        self.mix_hash(temp_h)
        self.cipher.initialize_key(temp_k[:32])

    def get_handshake_hash(self) -> bytes:
        return self.h

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        ciphertext = self.cipher.encrypt_with_ad(self.h, plaintext)
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        plaintext = self.cipher.decrypt_with_ad(self.h, ciphertext)
        self.mix_hash(ciphertext)
        return plaintext

    def split(self) -> tuple[CipherState, CipherState]:
        k1, k2 = self.hash_fn.hkdf(self.ck, b"", 2)
        return CipherState(k1[:32]), CipherState(k2[:32])


# --------------------------------------------------------------------------- patterns


@attrs.frozen
class HandshakePattern:
    """Pre-message tokens per side and the message token lists, initiator first."""

    name: str
    initiator_pre: tuple[str, ...]
    responder_pre: tuple[str, ...]
    messages: tuple[tuple[str, ...], ...]


PATTERNS: dict[str, HandshakePattern] = {
    p.name: p
    for p in (
        HandshakePattern("NN", (), (), (("e",), ("e", "ee"))),
        HandshakePattern("XX", (), (), (("e",), ("e", "ee", "s", "es"), ("s", "se"))),
        HandshakePattern("IK", (), ("s",), (("e", "es", "s", "ss"), ("e", "ee", "se"))),
    )
}

MXP_PROTOCOL_NAME = "Noise_IK_25519_ChaChaPoly_BLAKE2b"


def parse_protocol_name(name: str) -> tuple[HandshakePattern, HashFunction]:
    parts = name.split("_")
    if len(parts) != 5 or parts[0] != "Noise":
        raise ValueError(f"not a Noise protocol name: {name!r}")
    _, pattern, dh_name, cipher, hash_name = parts
    if pattern not in PATTERNS:
        raise ValueError(f"unsupported handshake pattern {pattern!r}")
    if dh_name != "25519" or cipher != "ChaChaPoly" or hash_name not in _HASHES:
        raise ValueError(f"unsupported primitives in {name!r}")
    return PATTERNS[pattern], _HASHES[hash_name]


@functools.lru_cache(maxsize=64)
def _initial_state(
    protocol_name: str,
    initiator: bool,
    prologue: bytes,
    static_public: bytes | None,
    remote_static: bytes | None,
) -> tuple[HandshakePattern, HashFunction, bytes, bytes]:
    """Pattern, hash, chaining key and handshake hash once the prologue and the pre-message
    keys are mixed in. They depend on the configuration only, so a server (or a client
    reconnecting) computes them once instead of per handshake."""
    pattern, hash_fn = parse_protocol_name(protocol_name)
    sym = SymmetricState.initialize(protocol_name.encode("ascii"), hash_fn)
    sym.mix_hash(prologue)
    for side_is_initiator, tokens in (
        (True, pattern.initiator_pre),
        (False, pattern.responder_pre),
    ):
        for token in tokens:
            if token != "s":
                raise ValueError("only static keys are supported as pre-messages")
            if side_is_initiator == initiator:
                if static_public is None:
                    raise ValueError("this pattern needs our static key")
                sym.mix_hash(static_public)
            else:
                if remote_static is None:
                    raise ValueError("this pattern needs the peer's static key")
                sym.mix_hash(remote_static)
    writes_s = any("s" in m for i, m in enumerate(pattern.messages) if (i % 2 == 0) == initiator)
    if writes_s and static_public is None:
        raise ValueError("this pattern needs our static key")
    return pattern, hash_fn, sym.ck, sym.h


class HandshakeState:
    """One side of a Noise handshake; feed it messages in turn, then ``split()``.

    ``ephemeral`` exists so test vectors can be replayed; leave it ``None`` in real use.
    """

    def __init__(
        self,
        protocol_name: str,
        *,
        initiator: bool,
        prologue: bytes = b"",
        static: KeyPair | None = None,
        remote_static: bytes | None = None,
        ephemeral: KeyPair | None = None,
    ) -> None:
        self.pattern, hash_fn, ck, h = _initial_state(
            protocol_name,
            initiator,
            prologue,
            None if static is None else static.public,
            remote_static,
        )
        self.initiator = initiator
        self.symmetric = SymmetricState(hash_fn, ck, h)
        self.s = static
        self.e = ephemeral
        self.rs = remote_static
        self.re: bytes | None = None
        self._index = 0
        self._failed = False

    @classmethod
    def initiator_ik(
        cls,
        static: KeyPair,
        remote_static: bytes,
        prologue: bytes = b"",
        *,
        ephemeral: KeyPair | None = None,
    ) -> HandshakeState:
        return cls(
            MXP_PROTOCOL_NAME,
            initiator=True,
            prologue=prologue,
            static=static,
            remote_static=remote_static,
            ephemeral=ephemeral,
        )

    @classmethod
    def responder_ik(
        cls, static: KeyPair, prologue: bytes = b"", *, ephemeral: KeyPair | None = None
    ) -> HandshakeState:
        return cls(
            MXP_PROTOCOL_NAME,
            initiator=False,
            prologue=prologue,
            static=static,
            ephemeral=ephemeral,
        )

    def fork(self) -> HandshakeState:
        """An independent copy, so a message can be tried without risking this state.

        Only the symmetric state and its cipher change as messages are processed; keys,
        the pattern and the hash function are immutable and shared."""
        twin = copy.copy(self)
        sym = self.symmetric
        twin.symmetric = SymmetricState(
            sym.hash_fn, sym.ck, sym.h, CipherState(sym.cipher.k, sym.cipher.n)
        )
        return twin

    @property
    def is_complete(self) -> bool:
        return self._index >= len(self.pattern.messages)

    @property
    def is_my_turn(self) -> bool:
        return not self.is_complete and (self._index % 2 == 0) == self.initiator

    @property
    def handshake_hash(self) -> bytes:
        return self.symmetric.get_handshake_hash()

    @property
    def remote_static(self) -> bytes | None:
        return self.rs

    def _dh_token(self, token: str) -> bytes:
        # "es" is DH(initiator e, responder s); each side picks its own half.
        first, second = token[0], token[1]
        mine, theirs = (first, second) if self.initiator else (second, first)
        local = self.e if mine == "e" else self.s
        remote = self.re if theirs == "e" else self.rs
        if local is None or remote is None:
            raise NoiseError(f"missing key for {token!r}")
        return static_dh(local, remote) if token == "ss" else dh(local, remote)

    def write_message(self, payload: bytes = b"") -> bytes:
        if self._failed:
            raise NoiseError("handshake already failed")
        if not self.is_my_turn:
            raise NoiseError("not our turn to write a handshake message")
        out = bytearray()
        sym = self.symmetric
        for token in self.pattern.messages[self._index]:
            if token == "e":
                if self.e is None:
                    self.e = KeyPair.generate()
                out += self.e.public
                sym.mix_hash(self.e.public)
            elif token == "s":
                if self.s is None:
                    raise NoiseError("no static key to send")
                out += sym.encrypt_and_hash(self.s.public)
            else:
                sym.mix_key(self._dh_token(token))
        out += sym.encrypt_and_hash(payload)
        if len(out) > MAX_MESSAGE_LEN:
            raise NoiseError("handshake message too long")
        self._index += 1
        return bytes(out)

    def read_message(self, message: bytes) -> bytes:
        """Process the peer's message. Any failure leaves this state unusable."""
        if self._failed:
            raise NoiseError("handshake already failed")
        if self.is_complete or self.is_my_turn:
            raise NoiseError("not expecting a handshake message")
        if len(message) > MAX_MESSAGE_LEN:
            raise NoiseError("handshake message too long")
        self._failed = True
        sym = self.symmetric
        view = memoryview(message)
        pos = 0
        for token in self.pattern.messages[self._index]:
            if token == "e":
                if len(view) - pos < DHLEN:
                    raise NoiseError("handshake message truncated")
                self.re = bytes(view[pos : pos + DHLEN])
                pos += DHLEN
                sym.mix_hash(self.re)
            elif token == "s":
                size = DHLEN + (_TAG_LEN if sym.cipher.has_key() else 0)
                if len(view) - pos < size:
                    raise NoiseError("handshake message truncated")
                self.rs = sym.decrypt_and_hash(bytes(view[pos : pos + size]))
                pos += size
            else:
                sym.mix_key(self._dh_token(token))
        rest = bytes(view[pos:])
        if sym.cipher.has_key() and len(rest) < _TAG_LEN:
            raise NoiseError("handshake message truncated")
        payload = sym.decrypt_and_hash(rest)
        self._failed = False
        self._index += 1
        return payload

    def split(self) -> tuple[CipherState, CipherState]:
        """(initiator->responder, responder->initiator) transport cipher states."""
        if not self.is_complete:
            raise NoiseError("handshake not complete")
        return self.symmetric.split()
