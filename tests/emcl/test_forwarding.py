"""A router forwarding a sealed intent to a remote agent extends its identity chain.

alice --(EMCL)--> gateway's router --(register_remote, EMCL)--> backend's router: the
backend verifies the chain [alice, gateway] over alice's exact plaintext.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Sequence
from typing import Any

from intentus_trio.emcl import ChainSigner, EmclProtector, Keyring, Role, protector, trio_clock
from intentus_trio.emcl.encoding import b64e
from intentus_trio.emcl.protector import opened_as
from intentus_trio.keys import Ed25519KeyPair, generate_master_key
from intentus_trio.protocol.enums import ErrorCode, TransportProtocol
from intentus_trio.protocol.factory import new_intent
from intentus_trio.protocol.models import IdentityEntry, IntentEnvelope
from intentus_trio.routing.remote import register_remote
from intentus_trio.routing.router import Router
from intentus_trio.transports.framing import request_frame
from intentus_trio.transports.inprocess import InProcessTransport

from .conftest import T0


class Path:
    """Three hops sharing one group key; the backend records every chain it accepts."""

    def __init__(self, *, gateway_signs: bool = True,
                 trusted: Callable[[Sequence[IdentityEntry]], bool] = lambda chain: True) -> None:
        ring = Keyring(clock=trio_clock(T0))
        ring.add_group_key("g1", generate_master_key())
        self.alice_key, self.gateway_key = Ed25519KeyPair.generate(), Ed25519KeyPair.generate()
        self.chains: list[list[str]] = []
        self.seen: list[IntentEnvelope] = []

        def policy(chain: Sequence[IdentityEntry]) -> bool:
            self.chains.append([entry.agent_id for entry in chain])
            return trusted(chain)

        backend = Router(name="backend")

        async def work(env: IntentEnvelope) -> dict[str, Any]:
            self.seen.append(env)
            return {"done": env.payload}

        backend.register("work", "work", work)
        to_backend = InProcessTransport(
            backend,
            protector=EmclProtector(
                ring, "gateway", role=Role.CLIENT,
                signer=ChainSigner("gateway", self.gateway_key) if gateway_signs else None),
            server_protector=EmclProtector(ring, "backend", role=Role.SERVER,
                                           chain_policy=policy))
        gateway = Router(name="gateway")
        register_remote(gateway, "backend", "work", to_backend)
        self.alice = InProcessTransport(
            gateway,
            protector=EmclProtector(ring, "alice", role=Role.CLIENT,
                                    signer=ChainSigner("alice", self.alice_key)),
            server_protector=EmclProtector(ring, "gateway", role=Role.SERVER))


async def test_the_chain_grows_by_one_entry_per_forwarding_hop() -> None:
    path = Path()
    sent = new_intent("work", {"n": 1})
    reply = await path.alice.send_intent(sent)
    assert reply.ok and reply.payload == {"done": {"n": 1}}
    assert path.chains == [["alice", "gateway"]]
    # The backend decoded alice's own bytes: the same envelope, ids and timestamps included.
    assert path.seen == [sent]


async def test_a_hop_without_a_signer_cannot_vouch_for_the_chain() -> None:
    path = Path(gateway_signs=False)
    reply = await path.alice.send_intent(new_intent("work", {"n": 2}))
    # Sealed afresh by the gateway without a chain: a backend with a policy refuses it.
    assert reply.error is not None and reply.error.details["reason"] == "untrusted_chain"
    assert path.chains == [] and path.seen == []


async def test_the_backend_policy_judges_the_origin_not_the_last_hop() -> None:
    trusted_origins: list[str] = []
    path = Path(trusted=lambda chain: chain[0].public_key in trusted_origins)
    trusted_origins.append(b64e(path.gateway_key.public))  # trusting the gateway is not enough
    reply = await path.alice.send_intent(new_intent("work", {"try": 1}))
    assert reply.error is not None and reply.error.code is ErrorCode.EMCL_FAILURE
    assert reply.error.details["reason"] == "untrusted_chain" and path.seen == []
    trusted_origins.append(b64e(path.alice_key.public))
    assert (await path.alice.send_intent(new_intent("work", {"try": 2}))).ok
    assert path.chains == [["alice", "gateway"]] * 2 and len(path.seen) == 1


async def test_the_remembered_opening_goes_with_its_envelope() -> None:
    ring = Keyring(clock=trio_clock(T0))
    ring.add_group_key("g1", generate_master_key())
    client = EmclProtector(ring, "alice", role=Role.CLIENT,
                           signer=ChainSigner("alice", Ed25519KeyPair.generate()))
    server = EmclProtector(ring, "gateway", role=Role.SERVER)
    opened = server.open(client.seal(request_frame(new_intent("work"), TransportProtocol.HTTP)))
    body = opened.body
    assert opened_as(body) is not None and opened_as(body).chain  # type: ignore[union-attr]
    del opened, body
    gc.collect()
    assert protector._opened == {}
