"""``intentus-trio keygen``: create key files for EMCL and MXP.

    intentus-trio keygen x25519 -o agent.key      # agent.key (0600) + agent.key.pub
    intentus-trio keygen ed25519 -o signing.key   # signing.key (0600) + signing.key.pub
    intentus-trio keygen symmetric -o group.key   # group.key (0600): an EMCL group master key
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..keys import (
    Ed25519KeyPair,
    X25519KeyPair,
    encode_key,
    generate_master_key,
    save_ed25519,
    save_x25519,
    write_key_file,
)

KEYGEN_KINDS = ("x25519", "ed25519", "symmetric")


def add_keygen_parser(subparsers: Any) -> None:
    """Add the ``keygen`` sub-command to an argparse ``add_subparsers()`` object."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "keygen",
        help="generate a key file (X25519, Ed25519 or a symmetric EMCL group key)",
        description="Generate a key from the operating system's random source and write it "
        "to a file readable only by its owner (mode 0600); public halves go to FILE.pub.",
    )
    parser.add_argument("kind", choices=KEYGEN_KINDS,
                        help="x25519: static key agreement key (EMCL pair mode, MXP); "
                             "ed25519: identity chain signing key; "
                             "symmetric: EMCL group master key")
    parser.add_argument("-o", "--out", required=True, metavar="FILE",
                        help="the secret key file to create")
    parser.add_argument("--encoding", choices=("base64", "hex"), default="base64",
                        help="text encoding of the key (default: base64)")
    parser.add_argument("--force", action="store_true",
                        help="replace existing files instead of refusing")
    parser.set_defaults(func=run_keygen)


def run_keygen(args: argparse.Namespace) -> int:
    """Create the files; prints the public key (never the secret). Returns the exit status."""
    out: str = args.out
    targets = [Path(out)] + ([] if args.kind == "symmetric" else [Path(f"{out}.pub")])
    if not args.force and any(t.exists() or t.is_symlink() for t in targets):
        print(f"keygen: {out} (or {out}.pub) already exists; use --force to replace it",
              file=sys.stderr)
        return 1
    try:
        if args.kind == "x25519":
            pair = X25519KeyPair.generate()
            save_x25519(out, pair, encoding=args.encoding, overwrite=args.force)
            public: bytes | None = pair.public
        elif args.kind == "ed25519":
            signing = Ed25519KeyPair.generate()
            save_ed25519(out, signing, encoding=args.encoding, overwrite=args.force)
            public = signing.public
        else:
            write_key_file(out, generate_master_key(), "symmetric", encoding=args.encoding,
                           overwrite=args.force)
            public = None
    except FileExistsError:
        print(f"keygen: {out} (or {out}.pub) already exists; use --force to replace it",
              file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"keygen: cannot write {out}: {exc.strerror}", file=sys.stderr)
        return 1
    print(f"wrote {out}" + ("" if public is None else f" and {out}.pub"))
    if public is not None:
        print(f"public key: {encode_key(public, args.encoding)}")
    return 0
