"""The identity chain: signed per hop, verified whole, bound to the body and the sender."""

from __future__ import annotations

import pytest
from msgspec.structs import replace

from intentus_trio.emcl import (
    ChainSigner,
    Emcl,
    Keyring,
    Opened,
    trust_every_hop,
    trust_origin,
    verify_chain,
)
from intentus_trio.emcl.chain import body_digest
from intentus_trio.emcl.failures import reason_of
from intentus_trio.keys import Ed25519KeyPair, X25519KeyPair
from intentus_trio.protocol.enums import MessageType
from intentus_trio.protocol.errors import EMCLFailure
from intentus_trio.protocol.models import EMCLEnvelope

from .conftest import FakeClock

BODY = b'{"payload":"x"}'


class Agent:
    def __init__(self, name: str, clock: FakeClock, **kw: object) -> None:
        self.name = name
        self.signing = Ed25519KeyPair.generate()
        self.static = X25519KeyPair.generate()
        self.ring = Keyring(clock=clock)
        self.ring.set_static_key(self.static)
        self.emcl = Emcl(self.ring, name, signer=ChainSigner(name, self.signing),
                         **kw)  # type: ignore[arg-type]

    def knows(self, *others: Agent) -> None:
        for other in others:
            self.ring.add_peer(other.name, other.static.public)

    def seal_to(self, other: str) -> EMCLEnvelope:
        key = self.ring.sealing_key(other)
        assert key is not None
        return self.emcl.seal(MessageType.INTENT, BODY, key=key, recipient=other)

    def forward(self, opened: Opened, other: str) -> EMCLEnvelope:
        key = self.ring.sealing_key(other)
        assert key is not None
        return self.emcl.forward(opened, key=key, recipient=other)


def refused(agent: Agent, env: EMCLEnvelope) -> str | None:
    with pytest.raises(EMCLFailure) as info:
        agent.emcl.open(env)
    return reason_of(info.value)


@pytest.fixture
def hops(clock: FakeClock) -> tuple[Agent, Agent, Agent]:
    """origin -> gateway -> target, each pair with its own X25519 pair key."""
    origin, gateway, target = Agent("origin", clock), Agent("gateway", clock), Agent(
        "target", clock)
    origin.knows(gateway)
    gateway.knows(origin, target)
    target.knows(gateway)
    return origin, gateway, target


def test_chain_across_two_hops(hops: tuple[Agent, Agent, Agent], clock: FakeClock) -> None:
    origin, gateway, target = hops
    first = gateway.emcl.open(origin.seal_to("gateway"))
    assert [e.agent_id for e in first.chain] == ["origin"]
    clock.advance(0.01)
    second = target.emcl.open(gateway.forward(first, "target"))
    assert second.body == BODY and second.plaintext == first.plaintext
    assert [e.agent_id for e in second.chain] == ["origin", "gateway"]
    assert verify_chain(second.chain, body_digest(second.plaintext))
    assert trust_origin({"origin": origin.signing.public})(second.chain)
    assert not trust_origin({"origin": gateway.signing.public})(second.chain)
    assert trust_every_hop({"origin": origin.signing.public,
                            "gateway": gateway.signing.public})(second.chain)
    assert not trust_every_hop({"origin": origin.signing.public})(second.chain)


def test_policy_requires_trusted_origin(clock: FakeClock) -> None:
    origin, gateway = Agent("origin", clock), Agent("gateway", clock)
    stranger = Agent("origin", clock)  # claims the same name with another key
    target = Agent("target", clock, chain_policy=trust_origin(
        {"origin": origin.signing.public}))
    for a in (origin, stranger):
        a.knows(target)
    target.knows(origin)
    assert target.emcl.open(origin.seal_to("target")).body == BODY
    target.ring.add_peer("origin", stranger.static.public)
    assert refused(target, stranger.seal_to("target")) == "untrusted_chain"
    # An envelope without a chain is refused when a policy is set.
    plain_ring = Keyring(clock=clock)
    plain_ring.set_static_key(origin.static)
    plain_ring.add_peer("target", target.static.public)
    plain = Emcl(plain_ring, "origin")
    key = plain_ring.sealing_key("target")
    assert key is not None
    target.ring.add_peer("origin", origin.static.public)
    assert refused(target, plain.seal(MessageType.INTENT, BODY, key=key,
                                      recipient="target")) == "untrusted_chain"
    del gateway


def test_insider_cannot_reorder_drop_or_move_entries(
    hops: tuple[Agent, Agent, Agent], clock: FakeClock
) -> None:
    origin, gateway, target = hops
    first = gateway.emcl.open(origin.seal_to("gateway"))
    forwarded = gateway.forward(first, "target")
    opened = target.emcl.open(forwarded)
    chain = opened.chain
    key = gateway.ring.sealing_key("target")
    assert key is not None

    def reseal(new_chain: tuple[object, ...], plaintext: bytes = first.plaintext) -> EMCLEnvelope:
        # gateway holds the pair key, so it can produce a valid MAC over any chain it likes.
        env = gateway.emcl._seal(MessageType.INTENT, plaintext, bytes(range(24)),
                                 gateway.emcl._timestamp(), key, "target", {}, None,
                                 tuple(new_chain))  # type: ignore[arg-type]
        clock.advance(0.001)
        return env

    assert refused(target, reseal((chain[1], chain[0]))) == "untrusted_chain"  # reordered
    assert refused(target, reseal((chain[1],))) == "untrusted_chain"  # origin dropped
    assert refused(target, reseal((chain[0],))) == "untrusted_chain"  # ends at origin, not sender
    other = gateway.emcl.open(origin.seal_to("gateway"))  # same body text, other salt
    assert refused(target, reseal((other.chain[0], chain[1]))) == "untrusted_chain"
    assert refused(target, reseal(chain, plaintext=other.plaintext)) == "untrusted_chain"
    forged = replace(chain[0], timestamp="2026-01-01T00:00:09.000Z")
    assert refused(target, reseal((forged, chain[1]))) == "untrusted_chain"


def test_chain_entries_cannot_change_without_the_key(hops: tuple[Agent, Agent, Agent]) -> None:
    origin, gateway, target = hops
    forwarded = gateway.forward(gateway.emcl.open(origin.seal_to("gateway")), "target")
    chain = forwarded.identity_chain
    assert refused(target, replace(forwarded, identity_chain=chain[::-1])) == "tampered"
    assert refused(target, replace(forwarded, identity_chain=chain[1:])) == "tampered"
    bad = replace(chain[0], signature=chain[1].signature)
    assert refused(target, replace(forwarded, identity_chain=(bad, chain[1]))) == "tampered"
    broken = replace(chain[0], public_key="short")
    assert refused(target, replace(forwarded,
                                        identity_chain=(broken, chain[1]))) == "malformed"
    assert target.emcl.open(forwarded).body == BODY


def test_forward_needs_a_signer(clock: FakeClock, hops: tuple[Agent, Agent, Agent]) -> None:
    origin, gateway, _ = hops
    opened = gateway.emcl.open(origin.seal_to("gateway"))
    bare = Emcl(gateway.ring, "gateway")
    key = gateway.ring.sealing_key("target")
    assert key is not None
    with pytest.raises(ValueError):
        bare.forward(opened, key=key)
    with pytest.raises(ValueError):
        Emcl(gateway.ring, "someone-else", signer=ChainSigner("gateway", gateway.signing))
