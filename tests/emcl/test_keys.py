"""Key generation, key files and their permissions, and ``intentus-trio keygen``."""

from __future__ import annotations

import argparse
import os
import stat
from pathlib import Path

import pytest

from intentus_trio.emcl.cli import add_keygen_parser, run_keygen
from intentus_trio.keys import (
    Ed25519KeyPair,
    InsecureKeyFile,
    KeyFileError,
    X25519KeyPair,
    decode_key,
    encode_key,
    generate_master_key,
    load_ed25519,
    load_master_key,
    load_public_key,
    load_x25519,
    read_key_file,
    save_ed25519,
    save_x25519,
    verify_signature,
    write_key_file,
    x25519,
)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_x25519_agreement_and_repr() -> None:
    a, b = X25519KeyPair.generate(), X25519KeyPair.generate()
    assert x25519(a.private, b.public) == x25519(b.private, a.public)
    assert a.private.hex() not in repr(a)
    with pytest.raises(ValueError):
        x25519(a.private, bytes(32))  # low-order point: all-zero secret
    with pytest.raises(ValueError):
        X25519KeyPair.from_private(b"short")


def test_ed25519_sign_verify() -> None:
    key = Ed25519KeyPair.generate()
    sig = key.sign(b"message")
    assert verify_signature(key.public, b"message", sig)
    assert not verify_signature(key.public, b"messagE", sig)
    assert not verify_signature(key.public, b"message", sig[:-1] + bytes([sig[-1] ^ 1]))
    assert not verify_signature(bytes(32), b"message", sig)
    assert not verify_signature(key.public[:31], b"message", sig)
    assert key.seed.hex() not in repr(key)
    assert Ed25519KeyPair.from_seed(key.seed) == key


def test_master_keys_are_random() -> None:
    assert len(generate_master_key()) == 32
    assert generate_master_key() != generate_master_key()


@pytest.mark.parametrize("encoding", ["base64", "hex"])
def test_save_and_load(tmp_path: Path, encoding: str) -> None:
    pair = X25519KeyPair.generate()
    save_x25519(tmp_path / "a.key", pair, encoding=encoding)  # type: ignore[arg-type]
    assert mode(tmp_path / "a.key") == 0o600
    assert load_x25519(tmp_path / "a.key") == pair
    assert load_x25519(tmp_path / "a.key").private == pair.private
    assert load_public_key(tmp_path / "a.key.pub", "x25519-public") == pair.public
    signing = Ed25519KeyPair.generate()
    save_ed25519(tmp_path / "s.key", signing, encoding=encoding)  # type: ignore[arg-type]
    assert load_ed25519(tmp_path / "s.key").seed == signing.seed
    master = generate_master_key()
    write_key_file(tmp_path / "g.key", master, "symmetric", encoding=encoding)  # type: ignore[arg-type]
    assert mode(tmp_path / "g.key") == 0o600
    assert load_master_key(tmp_path / "g.key") == master


def test_secret_files_are_created_0600_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        write_key_file(tmp_path / "g.key", generate_master_key(), "symmetric")
    finally:
        os.umask(old)
    assert mode(tmp_path / "g.key") == 0o600


@pytest.mark.parametrize("bits", [0o644, 0o640, 0o604, 0o660, 0o606])
def test_refuses_secret_files_others_can_read(tmp_path: Path, bits: int) -> None:
    path = write_key_file(tmp_path / "g.key", generate_master_key(), "symmetric")
    path.chmod(bits)
    with pytest.raises(InsecureKeyFile) as info:
        load_master_key(path)
    assert "chmod 600" in str(info.value)
    # The kind comment alone marks a file secret, even when the caller does not say so.
    with pytest.raises(InsecureKeyFile):
        read_key_file(path)


def test_refuses_secret_without_kind_comment_when_kind_is_secret(tmp_path: Path) -> None:
    path = tmp_path / "bare.key"
    path.write_text(encode_key(generate_master_key()) + "\n")
    path.chmod(0o644)
    with pytest.raises(InsecureKeyFile):
        read_key_file(path, "symmetric")


def test_public_files_may_be_world_readable(tmp_path: Path) -> None:
    pair = X25519KeyPair.generate()
    save_x25519(tmp_path / "a.key", pair)
    (tmp_path / "a.key.pub").chmod(0o644)
    assert load_public_key(tmp_path / "a.key.pub") == pair.public


def test_kind_mismatch_and_bad_content(tmp_path: Path) -> None:
    pair = X25519KeyPair.generate()
    save_x25519(tmp_path / "a.key", pair)
    with pytest.raises(KeyFileError):
        read_key_file(tmp_path / "a.key", "ed25519-private")
    bad = tmp_path / "bad.key"
    for content in ["", "# only a comment\n", "zz\n", "AAAA\nAAAA\n", "00" * 31 + "\n"]:
        bad.unlink(missing_ok=True)
        bad.write_text(content)
        bad.chmod(0o600)
        with pytest.raises(KeyFileError):
            read_key_file(bad, "symmetric")


def test_refuses_symlinks_and_existing_files(tmp_path: Path) -> None:
    path = write_key_file(tmp_path / "g.key", generate_master_key(), "symmetric")
    with pytest.raises(FileExistsError):
        write_key_file(path, generate_master_key(), "symmetric")
    (tmp_path / "link.key").symlink_to(path)
    with pytest.raises(OSError):
        read_key_file(tmp_path / "link.key", "symmetric")
    fresh = generate_master_key()
    write_key_file(path, fresh, "symmetric", overwrite=True)
    assert load_master_key(path) == fresh
    assert mode(path) == 0o600


def test_decode_key_accepts_every_spelling() -> None:
    key = os.urandom(32)
    import base64

    for text in [key.hex(), key.hex().upper(), base64.b64encode(key).decode(),
                 base64.urlsafe_b64encode(key).decode().rstrip("=")]:
        assert decode_key(text) == key


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="intentus-trio")
    add_keygen_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


@pytest.mark.parametrize("kind", ["x25519", "ed25519", "symmetric"])
def test_keygen_cli(tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "k.key"
    args = parse(["keygen", kind, "-o", str(out)])
    assert args.func is run_keygen
    assert run_keygen(args) == 0
    assert mode(out) == 0o600
    printed = capsys.readouterr().out
    secret = read_key_file(out)
    assert encode_key(secret) not in printed and secret.hex() not in printed
    if kind != "symmetric":
        assert encode_key(read_key_file(Path(f"{out}.pub"))) in printed
    # A second run refuses to overwrite; --force replaces.
    assert run_keygen(parse(["keygen", kind, "-o", str(out)])) == 1
    assert run_keygen(parse(["keygen", kind, "-o", str(out), "--force", "--encoding", "hex"])) == 0
    assert read_key_file(out) != secret
    assert mode(out) == 0o600


def test_a_key_file_of_the_wrong_kind_is_named_as_such(tmp_path: Path) -> None:
    secret = tmp_path / "group.key"
    write_key_file(secret, generate_master_key(), "symmetric")
    with pytest.raises(KeyFileError, match=r"'.*group\.key' holds a symmetric key, not x25519"):
        load_x25519(secret)
    # A public file (mode 0644) given for a secret: its kind is the diagnosis, not its mode.
    pair = tmp_path / "node.x25519"
    save_x25519(pair, X25519KeyPair.generate())
    with pytest.raises(KeyFileError, match=r"'.*node\.x25519\.pub' holds a x25519-public key"):
        load_master_key(f"{pair}.pub")
    garbled = tmp_path / "garbled.key"
    garbled.write_text("not a key\n")
    with pytest.raises(KeyFileError, match=r"key file '.*garbled\.key': "):
        load_public_key(garbled)
