"""EMCL for a node file's ``[emcl]`` section: the node's keys loaded once, one replay guard
shared by every endpoint, and a protector per listener (server role) or remote (client role).

Sharing the replay guard means an envelope replayed to another listener of the same node is
refused too; sharing the keyring means a rotation reaches every endpoint at once.
"""

from __future__ import annotations

from attrs import frozen

from ..config import ConfigError, EmclConfig
from ..keys import (
    KeyFileError,
    load_ed25519,
    load_master_key,
    load_public_key,
    load_x25519,
)
from .chain import ChainPolicy, ChainSigner, trust_origin
from .keyring import Keyring
from .protector import EmclProtector, Role
from .replay import ReplayGuard


@frozen
class NodeKeys:
    keyring: Keyring
    agent_id: str
    signer: ChainSigner | None
    policy: ChainPolicy | None
    replay: ReplayGuard

    def protector(self, role: Role, peer_id: str | None = None) -> EmclProtector:
        """A protector for one endpoint of the node.

        The trust policy judges who asks this node to act: it applies to the requests its
        listeners and workers open (server role), not to the replies its remotes send back,
        which carry no chain of their own.
        """
        policy = self.policy if role is Role.SERVER else None
        return EmclProtector(self.keyring, self.agent_id, peer_id=peer_id, role=role,
                             replay=self.replay, signer=self.signer, chain_policy=policy)


def load_node_keys(config: EmclConfig, node_name: str) -> NodeKeys:
    """Read the key files ``config`` names; a missing or bad file is a ``ConfigError``."""
    agent_id = config.agent_id or node_name
    keyring = Keyring()
    try:
        seal_with = config.seal_with or (list(config.group_keys)[-1]
                                         if config.group_keys else None)
        for key_id, path in config.group_keys.items():
            if key_id != seal_with:
                keyring.add_group_key(key_id, load_master_key(path), active=False)
        if seal_with is not None:
            keyring.add_group_key(seal_with, load_master_key(config.group_keys[seal_with]))
        if config.static_key is not None:
            keyring.set_static_key(load_x25519(config.static_key))
        for peer, path in config.peers.items():
            keyring.add_peer(peer, load_public_key(path, "x25519-public"))
        signer = None if config.signer is None else ChainSigner(agent_id,
                                                                load_ed25519(config.signer))
        trusted = {agent: load_public_key(path, "ed25519-public")
                   for agent, path in config.trust_origins.items()}
    except (KeyFileError, OSError, ValueError) as exc:
        # the messages name the file, never a key
        raise ConfigError(f"config.emcl: {exc}") from None
    policy = trust_origin(trusted) if trusted else None
    return NodeKeys(keyring, agent_id, signer, policy, ReplayGuard())
