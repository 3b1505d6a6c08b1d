"""Keys by key id: group keys, pair keys from X25519, rotation and retirement.

Every key id names two 32-byte keys derived with HKDF-SHA256 (docs/emcl-spec.md §4): one
for XChaCha20-Poly1305, one for the envelope MAC.

* Group mode: one random master key shared by a group of agents, under a chosen key id.
* Pair mode: each agent has a static X25519 key pair and knows its peers' public keys; the
  pair key of two agents comes from their X25519 shared secret, so nothing secret is
  distributed. Its key id is computed from the two public keys, identically on both sides.

Rotation adds a new key that seals from then on while the previous one still opens messages
for ``grace`` seconds; ``retire`` removes a key at once.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from typing import Any, Final

from attrs import Attribute, field, frozen

from ..keys import X25519KeyPair, x25519
from .clock import Clock, system_clock
from .envelope import mac_state
from .kdf import hkdf_expand, hkdf_extract

GROUP_SALT: Final = b"intentus-trio emcl v1 group"
PAIR_SALT: Final = b"intentus-trio emcl v1 pair"
PAIR_KEY_ID_CONTEXT: Final = b"intentus-trio emcl v1 pair key id"
MIN_MASTER_KEY_BYTES: Final = 32
DEFAULT_GRACE: Final = 300.0
_KEY_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def check_key_id(key_id: str) -> str:
    if not isinstance(key_id, str) or _KEY_ID.fullmatch(key_id) is None:
        raise ValueError("a key id is 1-64 characters of A-Z a-z 0-9 . _ : -")
    return key_id


def _key_bytes(instance: object, attribute: Attribute[bytes], value: bytes) -> None:
    # libsodium reads exactly 32 bytes through a raw pointer: enforce it here, once.
    if type(value) is not bytes or len(value) != 32:
        raise ValueError(f"{attribute.name} must be 32 bytes")


@frozen(repr=False)
class SessionKey:
    """The derived keys of one key id. ``peer`` is set for pair keys."""

    key_id: str
    enc_key: bytes = field(eq=False, validator=_key_bytes)
    mac_key: bytes = field(eq=False, validator=_key_bytes)
    peer: str | None = None
    not_after: float | None = None
    #: The MAC's BLAKE2b state under ``mac_key`` (``envelope.mac_state``): each MAC of the
    #: hot path starts from a ``copy()`` of it.
    mac_state: Any = field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "mac_state", mac_state(self.mac_key))

    def __repr__(self) -> str:
        return f"SessionKey({self.key_id!r}, peer={self.peer!r})"


def derive_group_key(key_id: str, master_key: bytes) -> SessionKey:
    check_key_id(key_id)
    if len(master_key) < MIN_MASTER_KEY_BYTES:
        raise ValueError("a master key has at least 32 random bytes")
    prk = hkdf_extract(GROUP_SALT, master_key)
    kid = key_id.encode()
    return SessionKey(key_id, hkdf_expand(prk, b"enc\x00" + kid, 32),
                      hkdf_expand(prk, b"mac\x00" + kid, 32))


def pair_key_id(public_a: bytes, public_b: bytes) -> str:
    """``x.`` and 16 hex digits of BLAKE2b over the sorted public keys."""
    lo, hi = sorted((bytes(public_a), bytes(public_b)))
    digest = hashlib.blake2b(PAIR_KEY_ID_CONTEXT + lo + hi, digest_size=8).hexdigest()
    return "x." + digest


def derive_pair_key(ours: X25519KeyPair, peer_public: bytes, peer: str | None = None) -> SessionKey:
    """The pair key of our static key and a peer's public key (same on both sides)."""
    shared = x25519(ours.private, peer_public)
    lo, hi = sorted((ours.public, bytes(peer_public)))
    prk = hkdf_extract(PAIR_SALT, shared)
    return SessionKey(pair_key_id(lo, hi), hkdf_expand(prk, b"enc\x00" + lo + hi, 32),
                      hkdf_expand(prk, b"mac\x00" + lo + hi, 32), peer)


def _deadline(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    return a if b is None else min(a, b)


class Keyring:
    """Keys this agent seals and opens with. Not shared between threads (trio: one thread)."""

    def __init__(self, *, clock: Clock = system_clock) -> None:
        self.clock = clock
        self._group: dict[str, SessionKey] = {}
        self._active_group: str | None = None
        self._statics: list[tuple[X25519KeyPair, float | None]] = []
        self._peers: dict[str, list[tuple[bytes, float | None]]] = {}
        self._pair: dict[str, SessionKey] = {}
        self._pair_active: dict[str, str] = {}
        self._retired_pairs: set[str] = set()

    # ------------------------------------------------------------------ group mode

    def add_group_key(self, key_id: str, master_key: bytes, *, active: bool = True) -> SessionKey:
        """Add a group key; ``active`` makes it the one new messages are sealed with."""
        if key_id in self._group or key_id in self._pair:
            raise ValueError("this key id is already in the keyring")
        key = derive_group_key(key_id, master_key)
        self._group[key_id] = key
        if active or self._active_group is None:
            self._active_group = key_id
        return key

    def rotate_group_key(
        self, key_id: str, master_key: bytes, *, grace: float | None = DEFAULT_GRACE
    ) -> SessionKey:
        """Seal with a new group key from now on; the previous one opens for ``grace`` s."""
        previous = self._active_group
        key = self.add_group_key(key_id, master_key, active=True)
        if previous is not None and grace is not None:
            old = self._group[previous]
            self._group[previous] = SessionKey(old.key_id, old.enc_key, old.mac_key, None,
                                               _deadline(old.not_after, self.clock() + grace))
        return key

    def retire(self, key_id: str) -> None:
        """Stop accepting ``key_id`` at once (a group key or a pair key)."""
        self._group.pop(key_id, None)
        if self._active_group == key_id:
            self._active_group = None
        if self._pair.pop(key_id, None) is not None:
            self._retired_pairs.add(key_id)
        for peer, kid in list(self._pair_active.items()):
            if kid == key_id:
                del self._pair_active[peer]

    # ------------------------------------------------------------------ pair mode

    @property
    def static_key(self) -> X25519KeyPair | None:
        return self._statics[0][0] if self._statics else None

    def set_static_key(
        self, keypair: X25519KeyPair, *, grace: float | None = DEFAULT_GRACE
    ) -> None:
        """Use ``keypair`` from now on; a previous static key still opens for ``grace`` s."""
        now = self.clock()
        kept = []
        for pair, not_after in self._statics:
            if pair.public == keypair.public:
                continue
            if grace is not None:
                not_after = _deadline(not_after, now + grace)
            kept.append((pair, not_after))
        self._statics = [(keypair, None), *kept]
        self._derive_pairs()

    def add_peer(
        self, agent_id: str, public_key: bytes, *, grace: float | None = DEFAULT_GRACE
    ) -> None:
        """Learn (or rotate) a peer's static public key; its previous key opens for ``grace``."""
        if len(public_key) != 32:
            raise ValueError("X25519 public keys are 32 bytes")
        now = self.clock()
        kept = []
        for pub, not_after in self._peers.get(agent_id, ()):
            if pub == public_key:
                continue
            if grace is not None:
                not_after = _deadline(not_after, now + grace)
            kept.append((pub, not_after))
        self._peers[agent_id] = [(bytes(public_key), None), *kept]
        self._derive_pairs()

    def remove_peer(self, agent_id: str) -> None:
        self._peers.pop(agent_id, None)
        self._derive_pairs()

    def pair_key(self, peer: str) -> SessionKey | None:
        kid = self._pair_active.get(peer)
        return None if kid is None else self.lookup(kid)

    def _derive_pairs(self) -> None:
        pair: dict[str, SessionKey] = {}
        active: dict[str, str] = {}
        for agent_id, pubs in self._peers.items():
            for s_index, (ours, s_after) in enumerate(self._statics):
                for p_index, (pub, p_after) in enumerate(pubs):
                    try:
                        key = derive_pair_key(ours, pub, agent_id)
                    except ValueError:
                        continue  # a low-order peer key yields no usable secret
                    if key.key_id in self._group or key.key_id in self._retired_pairs:
                        continue
                    key = SessionKey(key.key_id, key.enc_key, key.mac_key, agent_id,
                                     _deadline(s_after, p_after))
                    pair[key.key_id] = key
                    if s_index == 0 and p_index == 0:
                        active[agent_id] = key.key_id
        self._pair = pair
        self._pair_active = active

    # ------------------------------------------------------------------ lookup

    def lookup(self, key_id: str) -> SessionKey | None:
        """The key named ``key_id`` if it is known and not past its grace period."""
        key = self._pair.get(key_id) or self._group.get(key_id)
        if key is None:
            return None
        if key.not_after is not None and self.clock() > key.not_after:
            return None
        return key

    def sealing_key(self, peer: str | None = None) -> SessionKey | None:
        """The pair key for ``peer`` if there is one, else the active group key."""
        if peer is not None:
            key = self.pair_key(peer)
            if key is not None:
                return key
        if self._active_group is None:
            return None
        return self.lookup(self._active_group)

    def key_ids(self) -> Iterator[str]:
        yield from self._group
        yield from self._pair
