"""Legacy MXP/UDP: serve a Router to existing MXP agents, and call it the way they do.

    python examples/mxp_legacy.py

PLAINTEXT AND UNAUTHENTICATED: bind the legacy adapter to loopback or a trusted network only.
"""

from __future__ import annotations

import json
import socket

import trio

from intentus_trio import IntentEnvelope, Router, new_event, new_intent
from intentus_trio.mxp.message import MessageType, MxpMessage, decode, encode
from intentus_trio.transports.mxp_legacy import open_legacy_client, serve_legacy


async def review(env: IntentEnvelope) -> dict[str, object]:
    code = str(env.payload.get("code", ""))
    return {"review": f"{len(code.splitlines())} line(s), looks fine", "agent": "reviewer"}


async def main() -> None:
    router = Router(name="legacy-demo")
    router.register("reviewer", "code_review", review)

    async with trio.open_nursery() as nursery:
        host, port = await nursery.start(serve_legacy, router, "127.0.0.1", 0)
        print(f"legacy MXP server on udp://{host}:{port} (plaintext, trusted networks only)")

        # 1. An MXP runtime agent's Call: {"type": ..., "request_id": ...} in one datagram.
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with sock:
            await sock.bind(("127.0.0.1", 0))
            call = {"type": "code_review", "code": "fn main() {}", "request_id": "req-42"}
            request = MxpMessage(MessageType.CALL, json.dumps(call).encode(),
                                 message_id=0x1234, trace_id=0xBEEF)
            await sock.sendto(encode(request), (host, port))
            with trio.fail_after(5):
                data, _ = await sock.recvfrom(65535)
            reply = decode(data)
            body = json.loads(reply.payload)
            print(f"raw MXP agent got {reply.type.label} id={reply.message_id:#x} "
                  f"trace={reply.trace_id:#x} request_id={body['request_id']}: "
                  f"{body['payload']['review']}")

        # 2. Our client: full envelopes, retransmission with the same message id, trace ids.
        async with open_legacy_client(host, port, timeout=5) as client, \
                router.events.subscribe("review.*") as events:
            env = new_intent("code_review", {"code": "let x = 1;\nlet y = 2;"})
            response = await client.send_intent(env)
            assert response.ok and response.payload is not None
            print(f"client got {response.status}: {response.payload['review']} "
                  f"(trace id kept: {response.trace_id == env.metadata.trace_id})")
            await client.publish(new_event("review.done", {"count": 2}))
            event = await events.receive()
            print(f"event {event.event_type} {event.payload} reached the router's bus")
            try:
                client.subscribe("anything")
            except NotImplementedError as exc:
                print(f"subscribe: {exc}")
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main)
