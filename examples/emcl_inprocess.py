"""EMCL on the in-process transport: group key, pair keys, and a refused replay.

    python examples/emcl_inprocess.py
"""

from __future__ import annotations

import trio

from intentus_trio.emcl import EmclProtector, Keyring, Role
from intentus_trio.keys import X25519KeyPair, generate_master_key
from intentus_trio.protocol.enums import TransportProtocol
from intentus_trio.protocol.errors import EMCLFailure
from intentus_trio.protocol.factory import new_intent
from intentus_trio.protocol.models import IntentEnvelope
from intentus_trio.routing.router import Router
from intentus_trio.transports.framing import request_frame
from intentus_trio.transports.inprocess import InProcessTransport


async def main() -> None:
    router = Router()

    @router.agent("summariser", "summarise")
    async def summarise(env: IntentEnvelope) -> dict[str, str]:
        return {"summary": str(env.payload.get("text", ""))[:20]}

    # 1. Group mode: every agent of the group holds the same master key.
    ring = Keyring()
    ring.add_group_key("team-2026-01", generate_master_key())
    client = EmclProtector(ring, "cli", role=Role.CLIENT)
    server = EmclProtector(ring, "router", role=Role.SERVER)
    async with InProcessTransport(router, protector=client, server_protector=server) as t:
        reply = await t.send_intent(new_intent("summarise", {"text": "EMCL seals every hop."}))
        print("group mode:", reply.payload)

    # 2. Pair mode: static X25519 keys, no shared secret to distribute.
    cli_static, srv_static = X25519KeyPair.generate(), X25519KeyPair.generate()
    cli_ring, srv_ring = Keyring(), Keyring()
    cli_ring.set_static_key(cli_static)
    cli_ring.add_peer("router", srv_static.public)
    srv_ring.set_static_key(srv_static)
    srv_ring.add_peer("cli", cli_static.public)
    client = EmclProtector(cli_ring, "cli", peer_id="router", role=Role.CLIENT)
    server = EmclProtector(srv_ring, "router", role=Role.SERVER)
    async with InProcessTransport(router, protector=client, server_protector=server) as t:
        reply = await t.send_intent(new_intent("summarise", {"text": "Pair keys from X25519."}))
        print("pair mode: ", reply.payload, "key id", cli_ring.pair_key("router"))

    # 3. The same sealed frame twice: the second copy is refused as a replay.
    frame = client.seal(request_frame(new_intent("summarise"), TransportProtocol.LOCAL))
    server.open(frame)
    try:
        server.open(frame)
    except EMCLFailure as exc:
        print("replay:    ", exc.code.value, exc.details)


if __name__ == "__main__":
    trio.run(main)
