"""EMCL v1: envelope encryption, authenticated identity chain, replay protection, key rotation.

See docs/emcl-spec.md for the wire format and docs/security.md for the threat model.
"""

from .chain import ChainPolicy, ChainSigner, trust_every_hop, trust_origin, verify_chain
from .clock import Clock, system_clock, trio_clock
from .engine import Emcl, Opened
from .envelope import EMCL_VERSION
from .failures import Reason
from .keyring import Keyring, SessionKey, derive_group_key, derive_pair_key, pair_key_id
from .protector import EmclProtector, PendingRequests, Role, emcl_reason
from .replay import ReplayGuard

__all__ = [
    "EMCL_VERSION",
    "ChainPolicy",
    "ChainSigner",
    "Clock",
    "Emcl",
    "EmclProtector",
    "Keyring",
    "Opened",
    "PendingRequests",
    "Reason",
    "ReplayGuard",
    "Role",
    "SessionKey",
    "derive_group_key",
    "derive_pair_key",
    "emcl_reason",
    "pair_key_id",
    "system_clock",
    "trio_clock",
    "trust_every_hop",
    "trust_origin",
    "verify_chain",
]
