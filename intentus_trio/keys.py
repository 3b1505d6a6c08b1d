"""Long-term keys: generation, and text files that hold them.

Shared by EMCL and MXP. Three kinds of secret exist: X25519 static keys (key agreement),
Ed25519 signing keys (identity chains) and symmetric master keys (EMCL groups). Each is 32
random bytes from the operating system; nothing is ever derived from a passphrase.

A key file is UTF-8 text: optional ``#`` comment lines, one of which may name the kind
(``# intentus-trio x25519-private``), and one line holding the key as hex (64 digits) or
base64 (standard or URL-safe alphabet, padding optional). Secret files are created with mode
0600 and refused on load when group or others have any access, as ssh does.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import stat
from pathlib import Path
from typing import Final, Literal

import nacl.bindings as _nacl
from attrs import field, frozen
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

KeyKind = Literal[
    "x25519-private", "x25519-public", "ed25519-private", "ed25519-public", "symmetric"
]
Encoding = Literal["base64", "hex"]

KEY_BYTES: Final = 32
SIGNATURE_BYTES: Final = 64
SECRET_KINDS: Final[frozenset[str]] = frozenset({"x25519-private", "ed25519-private", "symmetric"})
KINDS: Final[tuple[str, ...]] = (
    "x25519-private", "x25519-public", "ed25519-private", "ed25519-public", "symmetric"
)
_LABEL: Final = "intentus-trio"


class KeyFileError(ValueError):
    """A key file that cannot be used (wrong format, kind or size)."""


class InsecureKeyFile(PermissionError):
    """A secret key file that group or others may access."""


# --------------------------------------------------------------------------- key types


@frozen(repr=False)
class X25519KeyPair:
    """A static X25519 key pair; ``repr`` shows only the public half."""

    private: bytes = field(eq=False)
    public: bytes

    @classmethod
    def generate(cls) -> X25519KeyPair:
        return cls.from_private(os.urandom(KEY_BYTES))

    @classmethod
    def from_private(cls, private: bytes) -> X25519KeyPair:
        if len(private) != KEY_BYTES:
            raise ValueError("X25519 private keys are 32 bytes")
        return cls(bytes(private), _nacl.crypto_scalarmult_base(bytes(private)))

    def __repr__(self) -> str:
        return f"X25519KeyPair(public={self.public.hex()})"


@frozen(repr=False)
class Ed25519KeyPair:
    """An Ed25519 signing key (its 32-byte seed) and its public key."""

    seed: bytes = field(eq=False)
    public: bytes

    @classmethod
    def generate(cls) -> Ed25519KeyPair:
        return cls.from_seed(os.urandom(KEY_BYTES))

    @classmethod
    def from_seed(cls, seed: bytes) -> Ed25519KeyPair:
        if len(seed) != KEY_BYTES:
            raise ValueError("Ed25519 seeds are 32 bytes")
        return cls(bytes(seed), bytes(SigningKey(bytes(seed)).verify_key))

    def sign(self, message: bytes) -> bytes:
        """A detached 64-byte signature of ``message``."""
        return bytes(SigningKey(self.seed).sign(message).signature)

    def __repr__(self) -> str:
        return f"Ed25519KeyPair(public={self.public.hex()})"


def verify_signature(public: bytes, message: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is a valid Ed25519 signature of ``message`` by ``public``."""
    if len(public) != KEY_BYTES or len(signature) != SIGNATURE_BYTES:
        return False
    try:
        VerifyKey(public).verify(message, signature)
    except (BadSignatureError, ValueError, TypeError):
        return False
    # libsodium also rejects small-order public keys and non-canonical signatures here.
    return True


def generate_master_key() -> bytes:
    """A random 32-byte symmetric master key."""
    return os.urandom(KEY_BYTES)


def x25519(private: bytes, public: bytes) -> bytes:
    """The X25519 shared secret; raises ValueError for a low-order peer key."""
    if len(private) != KEY_BYTES or len(public) != KEY_BYTES:
        raise ValueError("X25519 keys are 32 bytes")
    try:
        shared = bytes(_nacl.crypto_scalarmult(private, public))
    except Exception:  # PyNaCl raises RuntimeError for an all-zero result
        raise ValueError("invalid X25519 public key") from None
    if shared == bytes(KEY_BYTES):
        raise ValueError("invalid X25519 public key")
    return shared


# --------------------------------------------------------------------------- text form


def encode_key(data: bytes, encoding: Encoding = "base64") -> str:
    if encoding == "hex":
        return data.hex()
    if encoding == "base64":
        return base64.b64encode(data).decode("ascii")
    raise ValueError("encoding must be 'base64' or 'hex'")


def decode_key(text: str, size: int = KEY_BYTES) -> bytes:
    """Decode a key written as hex or base64 (either alphabet); checks its size."""
    text = text.strip()
    data: bytes | None = None
    if len(text) == 2 * size and all(c in "0123456789abcdefABCDEF" for c in text):
        data = bytes.fromhex(text)
    else:
        std = text.replace("-", "+").replace("_", "/").rstrip("=")
        std += "=" * (-len(std) % 4)
        with contextlib.suppress(binascii.Error, ValueError):
            data = base64.b64decode(std, validate=True)
    if data is None or len(data) != size:
        raise KeyFileError(f"expected a {size}-byte key as hex or base64")
    return data


def format_key_file(data: bytes, kind: KeyKind, encoding: Encoding = "base64") -> str:
    if kind not in KINDS:
        raise ValueError(f"unknown key kind {kind!r}")
    return f"# {_LABEL} {kind}\n{encode_key(data, encoding)}\n"


def parse_key_file(text: str, kind: KeyKind | None = None, size: int = KEY_BYTES) -> bytes:
    """The key in a key file's text; a kind comment, if present, must match ``kind``."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    found_kind = None
    body = []
    for line in lines:
        if line.startswith("#"):
            words = line[1:].split()
            if len(words) == 2 and words[0] == _LABEL:
                found_kind = words[1]
        else:
            body.append(line)
    if len(body) != 1:
        raise KeyFileError("a key file holds exactly one key line")
    if kind is not None and found_kind is not None and found_kind != kind:
        raise KeyFileError(f"this file holds a {found_kind} key, not {kind}")
    return decode_key(body[0], size)


# --------------------------------------------------------------------------- files


def write_key_file(
    path: str | os.PathLike[str],
    data: bytes,
    kind: KeyKind,
    *,
    encoding: Encoding = "base64",
    overwrite: bool = False,
) -> Path:
    """Write a key file; secret kinds get mode 0600 from the moment they exist."""
    path = Path(path)
    text = format_key_file(data, kind, encoding).encode("ascii")
    mode = 0o600 if kind in SECRET_KINDS else 0o644
    target = path
    if overwrite:
        target = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(target, flags, mode)
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, mode)  # the umask may only have narrowed it; be exact
        os.write(fd, text)
        os.fsync(fd)
    finally:
        os.close(fd)
    if overwrite:
        os.replace(target, path)
    return path


def read_key_file(
    path: str | os.PathLike[str], kind: KeyKind | None = None, *, size: int = KEY_BYTES
) -> bytes:
    """Read a key file; a secret key file others can access raises ``InsecureKeyFile``.

    A file is treated as secret when ``kind`` is a secret kind or its kind comment says so.
    """
    name = os.fspath(path)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise KeyFileError(f"key file {name!r} is not a regular file")
        if st.st_size > 4096:
            raise KeyFileError(f"key file {name!r} is larger than 4096 bytes")
        raw = os.read(fd, 4097)
    finally:
        os.close(fd)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise KeyFileError(f"key file {name!r} is not UTF-8 text") from None
    labels = {line.strip() for line in text.splitlines()}
    found = [k for k in KINDS if f"# {_LABEL} {k}" in labels]
    if kind is not None and found and kind not in found:
        # The wrong file is a clearer diagnosis than its permissions.
        raise KeyFileError(f"key file {name!r} holds a {found[0]} key, not {kind}")
    secret = kind in SECRET_KINDS or any(k in SECRET_KINDS for k in found)
    if secret and os.name == "posix" and st.st_mode & 0o077:
        raise InsecureKeyFile(
            f"secret key file {name!r} is accessible by group or others "
            f"(mode {stat.S_IMODE(st.st_mode):04o}); run chmod 600 on it"
        )
    try:
        return parse_key_file(text, kind, size)
    except KeyFileError as exc:
        raise KeyFileError(f"key file {name!r}: {exc}") from None


def save_x25519(
    path: str | os.PathLike[str],
    keypair: X25519KeyPair,
    *,
    encoding: Encoding = "base64",
    overwrite: bool = False,
) -> None:
    """Write ``path`` (private, 0600) and ``path.pub`` (public)."""
    write_key_file(path, keypair.private, "x25519-private", encoding=encoding,
                   overwrite=overwrite)
    write_key_file(f"{os.fspath(path)}.pub", keypair.public, "x25519-public",
                   encoding=encoding, overwrite=overwrite)


def load_x25519(path: str | os.PathLike[str]) -> X25519KeyPair:
    return X25519KeyPair.from_private(read_key_file(path, "x25519-private"))


def save_ed25519(
    path: str | os.PathLike[str],
    keypair: Ed25519KeyPair,
    *,
    encoding: Encoding = "base64",
    overwrite: bool = False,
) -> None:
    """Write ``path`` (the seed, 0600) and ``path.pub`` (public)."""
    write_key_file(path, keypair.seed, "ed25519-private", encoding=encoding,
                   overwrite=overwrite)
    write_key_file(f"{os.fspath(path)}.pub", keypair.public, "ed25519-public",
                   encoding=encoding, overwrite=overwrite)


def load_ed25519(path: str | os.PathLike[str]) -> Ed25519KeyPair:
    return Ed25519KeyPair.from_seed(read_key_file(path, "ed25519-private"))


def load_master_key(path: str | os.PathLike[str]) -> bytes:
    return read_key_file(path, "symmetric")


def load_public_key(path: str | os.PathLike[str], kind: KeyKind | None = None) -> bytes:
    return read_key_file(path, kind)
