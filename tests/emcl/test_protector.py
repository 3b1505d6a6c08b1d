"""EmclProtector on frames: the codec, FrameDispatcher and ClientFraming paths."""

from __future__ import annotations

import orjson
import pytest
import trio
from msgspec.structs import replace

from intentus_trio.emcl import EmclProtector, Keyring, PendingRequests, Role
from intentus_trio.emcl.envelope import REPLY_TO_HEADER
from intentus_trio.emcl.failures import reason_of
from intentus_trio.keys import X25519KeyPair
from intentus_trio.protocol import headers as h
from intentus_trio.protocol.codec import FrameCodec
from intentus_trio.protocol.enums import ErrorCode, MessageType, TransportProtocol
from intentus_trio.protocol.errors import EMCLFailure
from intentus_trio.protocol.factory import new_event, new_intent
from intentus_trio.protocol.models import (
    AgentResponse,
    IntentEnvelope,
    StreamChunk,
    TransportEnvelope,
)
from intentus_trio.routing.router import Router
from intentus_trio.transports.framing import (
    ClientFraming,
    FrameDispatcher,
    event_frame,
    reply_item,
    request_frame,
    response_frame,
)

from .conftest import FakeClock

HTTP = TransportProtocol.HTTP
SECRET = "the-plaintext-marker-7731"


def make_router() -> Router:
    router = Router()

    async def echo(env: IntentEnvelope) -> dict[str, object]:
        return {"echo": env.payload}

    router.register("echo", "echo", echo)
    return router


def refused(protector: EmclProtector, frame: TransportEnvelope) -> str | None:
    with pytest.raises(EMCLFailure) as info:
        protector.open(frame)
    return reason_of(info.value)


def test_frame_round_trip_through_the_codec(
    protectors: tuple[EmclProtector, EmclProtector],
) -> None:
    client, server = protectors
    codec = FrameCodec()
    env = new_intent("echo", {"secret": SECRET})
    sealed = client.seal(request_frame(env, HTTP, request_id="1"))
    wire = codec.encode(sealed)
    assert SECRET.encode() not in wire
    decoded = codec.decode(wire)
    assert decoded.headers[h.EMCL] == "1.0"
    opened = server.open(decoded)
    assert opened.body == env
    assert h.EMCL not in opened.headers and opened.headers[h.REQUEST_ID] == "1"
    reply = server.seal(response_frame(AgentResponse.success({"ok": SECRET}), HTTP,
                                       request_id="1"), reply_to=decoded)
    assert reply.body.recipient == "client"  # type: ignore[union-attr]
    out = client.open(codec.decode(codec.encode(reply)))
    assert isinstance(out.body, AgentResponse) and out.body.payload == {"ok": SECRET}


def test_sealed_bodies_parse_like_unsealed_ones(
    protectors: tuple[EmclProtector, EmclProtector],
) -> None:
    client, server = protectors
    codec = FrameCodec()
    frame = request_frame(new_intent("echo", {"big": 2**70, "small": -(2**65), "text": "é"}),
                          HTTP, request_id="1")
    plain = codec.decode(codec.encode(frame))
    opened = server.open(codec.decode(codec.encode(client.seal(frame))))
    assert opened.body == plain.body == frame.body
    assert opened.headers == plain.headers


def test_headers_and_negotiation_are_bound(
    protectors: tuple[EmclProtector, EmclProtector],
) -> None:
    client, server = protectors
    sealed = client.seal(request_frame(new_intent("echo"), HTTP, request_id="1"))
    assert refused(server, replace(sealed, headers={**sealed.headers, h.REQUEST_ID: "2"})) \
        == "tampered"
    neg = replace(sealed.protocol_negotiation, max_version="9.0")
    assert refused(server, replace(sealed, protocol_negotiation=neg)) == "tampered"
    no_emcl = {k: v for k, v in sealed.headers.items() if k != h.EMCL}
    assert refused(server, replace(sealed, headers=no_emcl)) == "malformed"
    assert refused(server, replace(sealed, headers={**sealed.headers, h.EMCL: "2.0"})) \
        == "malformed"
    plain = request_frame(new_intent("echo"), HTTP)
    assert refused(server, plain) == "malformed"
    assert server.open(sealed).body is not None


def test_roles_refuse_reflection(protectors: tuple[EmclProtector, EmclProtector]) -> None:
    client, server = protectors
    request = client.seal(request_frame(new_intent("echo"), HTTP))
    # The request sent back to the client, as is and relabelled as a response.
    assert refused(client, request) == "reflected"
    assert refused(client, replace(request, message_type=MessageType.RESPONSE)) \
        == "reflected"
    # A server's reply replayed at the server as a request.
    asked = client.seal(request_frame(new_intent("echo"), HTTP))
    server.open(asked)
    reply = server.seal(response_frame(AgentResponse.success({}), HTTP), reply_to=asked)
    assert refused(server, reply) == "reflected"
    assert refused(server, replace(reply, message_type=MessageType.INTENT)) == "reflected"
    # Roles also limit what may be sealed.
    with pytest.raises(ValueError):
        client.seal(response_frame(AgentResponse.success({}), HTTP))
    with pytest.raises(ValueError):
        server.seal(request_frame(new_intent("echo"), HTTP))
    with pytest.raises(ValueError):
        client.seal(request)


def test_peer_role_with_one_identity_at_both_ends(group_keyring: Keyring) -> None:
    solo = EmclProtector(group_keyring, "solo")
    sealed = solo.seal(request_frame(new_intent("echo"), HTTP))
    frame = solo.open(sealed)
    assert isinstance(frame.body, IntentEnvelope)
    reply = solo.open(solo.seal(response_frame(AgentResponse.success({}), HTTP),
                                reply_to=sealed))
    assert isinstance(reply.body, AgentResponse)


def test_peer_id_pins_the_other_end(group_keyring: Keyring) -> None:
    client = EmclProtector(group_keyring, "client", peer_id="server-1", role=Role.CLIENT)
    server1 = EmclProtector(group_keyring, "server-1", role=Role.SERVER)
    server2 = EmclProtector(group_keyring, "server-2", role=Role.SERVER)
    sealed = client.seal(request_frame(new_intent("echo"), HTTP))
    assert refused(server2, sealed) == "misdirected"
    server1.open(sealed)
    reply_from_2 = server2.seal(response_frame(AgentResponse.success({}), HTTP),
                                reply_to=sealed)
    assert refused(client, reply_from_2) == "unexpected_sender"


def test_events_are_sealed_too(protectors: tuple[EmclProtector, EmclProtector]) -> None:
    client, server = protectors
    event = new_event("thing.happened", {"secret": SECRET})

    opened = server.open(client.seal(event_frame(event, HTTP)))
    assert opened.body == event


def test_malformed_inner_body_is_refused(
    protectors: tuple[EmclProtector, EmclProtector],
) -> None:
    client, server = protectors
    engine = client.engine
    key = client.keyring.sealing_key()
    assert key is not None
    frame = request_frame(new_intent("echo"), HTTP)
    headers = {**frame.headers, h.EMCL: "1.0"}
    for body in (b"not json", b"[]", orjson.dumps({"intent": 1})):
        env = engine.seal(MessageType.INTENT, body, key=key, headers=headers,
                          negotiation=("1.0", "1.0"))
        assert refused(server, TransportEnvelope(HTTP, MessageType.INTENT, env, headers,
                                                 frame.protocol_negotiation)) == "malformed"


async def test_dispatcher_and_client_framing(clock: FakeClock) -> None:
    ring = Keyring(clock=clock)
    ring.add_group_key("g1", b"k" * 32)
    client = ClientFraming(HTTP, protector=EmclProtector(ring, "c", role=Role.CLIENT))
    dispatcher = FrameDispatcher(make_router(), HTTP, require_emcl=True,
                                 protector=EmclProtector(ring, "s", role=Role.SERVER))
    request = client.encode_intent(new_intent("echo", {"secret": SECRET}), request_id="7")
    assert SECRET.encode() not in request
    reply_bytes = await dispatcher.handle_bytes(request)
    assert SECRET.encode() not in reply_bytes
    reply = client.decode_reply(reply_bytes)
    assert isinstance(reply, AgentResponse) and reply.payload == {"echo": {"secret": SECRET}}
    # The same bytes again: refused as a replay, answered with a readable error.
    again = client.decode_reply(await dispatcher.handle_bytes(request))
    assert isinstance(again, AgentResponse) and again.error is not None
    assert again.error.code is ErrorCode.EMCL_FAILURE
    assert again.error.details["reason"] == "replayed"
    # Tampered ciphertext: of a fresh request (tampered), of the one accepted (its
    # authentic nonce was seen: replayed). Neither reaches the agent.
    for wire, reason in ((client.encode_intent(new_intent("echo", {"n": 1})), "tampered"),
                         (request, "replayed")):
        obj = orjson.loads(wire)
        ct = obj["body"]["ciphertext"]
        obj["body"]["ciphertext"] = ("B" if ct[0] == "A" else "A") + ct[1:]
        bad = client.decode_reply(await dispatcher.handle_bytes(orjson.dumps(obj)))
        assert isinstance(bad, AgentResponse) and bad.error is not None
        assert bad.error.details["reason"] == reason
    # Plaintext is refused by require_emcl; the dispatcher keeps serving.
    plain = ClientFraming(HTTP).encode_intent(new_intent("echo"))
    refused_plain = ClientFraming(HTTP).decode_reply(await dispatcher.handle_bytes(plain))
    assert isinstance(refused_plain, AgentResponse) and refused_plain.error is not None
    good = client.decode_reply(await dispatcher.handle_bytes(
        client.encode_intent(new_intent("echo", {"n": 2}))))
    assert isinstance(good, AgentResponse) and good.payload == {"echo": {"n": 2}}


async def test_dispatcher_pair_mode_replies_to_each_client(clock: FakeClock) -> None:
    server_static = X25519KeyPair.generate()
    server_ring = Keyring(clock=clock)
    server_ring.set_static_key(server_static)
    dispatcher = FrameDispatcher(make_router(), HTTP, require_emcl=True,
                                 protector=EmclProtector(server_ring, "srv", role=Role.SERVER))
    clients = []
    for name in ("c1", "c2", "c3"):
        static = X25519KeyPair.generate()
        ring = Keyring(clock=clock)
        ring.set_static_key(static)
        ring.add_peer("srv", server_static.public)
        server_ring.add_peer(name, static.public)
        clients.append(ClientFraming(HTTP, protector=EmclProtector(
            ring, name, peer_id="srv", role=Role.CLIENT)))
    for i, client in enumerate(clients):
        reply = client.decode_reply(await dispatcher.handle_bytes(
            client.encode_intent(new_intent("echo", {"i": i}))))
        assert isinstance(reply, AgentResponse) and reply.payload == {"echo": {"i": i}}
    # c2 cannot read a reply meant for c1.
    c1, c2 = clients[0], clients[1]
    reply_for_c1 = await dispatcher.handle_bytes(c1.encode_intent(new_intent("echo")))
    with pytest.raises(EMCLFailure) as info:
        c2.decode_reply(reply_for_c1)
    assert reason_of(info.value) == "unknown_key"


# ---------------------------------------------------------------- replies bound to requests


def test_a_reply_answers_only_its_own_request(
    protectors: tuple[EmclProtector, EmclProtector],
) -> None:
    client, server = protectors
    first = client.seal(request_frame(new_intent("echo"), HTTP, request_id="1"))
    second = client.seal(request_frame(new_intent("echo"), HTTP, request_id="2"))
    server.open(first)
    server.open(second)
    reply1 = server.seal(response_frame(AgentResponse.success({"n": 1}), HTTP, request_id="1"),
                         reply_to=first)
    reply2 = server.seal(response_frame(AgentResponse.success({"n": 2}), HTTP, request_id="2"),
                         reply_to=second)
    assert reply1.headers[REPLY_TO_HEADER] == first.body.hmac  # type: ignore[union-attr]
    # Told which request it answers, the client refuses the other request's reply...
    with pytest.raises(EMCLFailure) as info:
        client.open(reply1, request=second)
    assert reason_of(info.value) == "unmatched_reply"
    # ...and the binding cannot be moved to another request: it is in the AAD.
    moved = replace(reply2, headers={**reply2.headers,
                                          REPLY_TO_HEADER: first.body.hmac})  # type: ignore[union-attr]
    assert refused(client, moved) == "tampered"
    stripped = replace(reply2, headers={k: v for k, v in reply2.headers.items()
                                             if k != REPLY_TO_HEADER})
    assert refused(client, stripped) == "tampered"
    # Refusals changed nothing: both replies still open, each as its own request's answer.
    out1 = client.open(reply1, request=first)
    assert isinstance(out1.body, AgentResponse) and out1.body.payload == {"n": 1}
    assert REPLY_TO_HEADER not in out1.headers and h.EMCL not in out1.headers
    out2 = client.open(reply2)
    assert isinstance(out2.body, AgentResponse) and out2.body.payload == {"n": 2}
    # Both requests are answered: another (fresh, validly sealed) final reply is refused.
    late = server.seal(response_frame(AgentResponse.success({"n": 3}), HTTP, request_id="1"),
                       reply_to=first)
    assert refused(client, late) == "unmatched_reply"
    assert len(client.pending) == 0


def test_unbound_and_foreign_replies_are_refused(group_keyring: Keyring) -> None:
    client = EmclProtector(group_keyring, "client", role=Role.CLIENT)
    twin = EmclProtector(group_keyring, "client", role=Role.CLIENT)  # same id, other endpoint
    server = EmclProtector(group_keyring, "server", role=Role.SERVER)
    request = client.seal(request_frame(new_intent("echo"), HTTP))
    server.open(request)
    unbound = server.seal(response_frame(AgentResponse.success({}), HTTP))
    assert refused(client, unbound) == "unmatched_reply"
    bound = server.seal(response_frame(AgentResponse.success({}), HTTP), reply_to=request)
    assert refused(twin, bound) == "unmatched_reply"  # twin never sent that request
    assert isinstance(client.open(bound).body, AgentResponse)


def test_stream_chunks_keep_the_request_pending(
    protectors: tuple[EmclProtector, EmclProtector],
) -> None:
    client, server = protectors
    request = client.seal(request_frame(new_intent("chunks"), HTTP, request_id="9"))
    server.open(request)
    for seq in range(3):
        chunk = server.seal(response_frame(StreamChunk(seq, {"i": seq}), HTTP, request_id="9"),
                            reply_to=request)
        assert reply_item(client.open(chunk)) == StreamChunk(seq, {"i": seq})
    final = server.seal(response_frame(AgentResponse.success({}), HTTP, request_id="9"),
                        reply_to=request)
    assert isinstance(client.open(final).body, AgentResponse)
    chunk = server.seal(response_frame(StreamChunk(3, {}), HTTP, request_id="9"),
                        reply_to=request)
    assert refused(client, chunk) == "unmatched_reply"


def pair_keyed(*names: str) -> tuple[EmclProtector, list[EmclProtector]]:
    """A server "srv" and clients sharing pair keys only (no group key)."""
    server_static = X25519KeyPair.generate()
    server_ring = Keyring()
    server_ring.set_static_key(server_static)
    server = EmclProtector(server_ring, "srv", role=Role.SERVER)
    clients = []
    for name in names:
        static = X25519KeyPair.generate()
        ring = Keyring()
        ring.set_static_key(static)
        ring.add_peer("srv", server_static.public)
        server_ring.add_peer(name, static.public)
        clients.append(EmclProtector(ring, name, peer_id="srv", role=Role.CLIENT))
    return server, clients


def test_reply_goes_to_the_requests_sender_under_its_key(group_keyring: Keyring) -> None:
    server, clients = pair_keyed("c1", "c2")
    requests = [c.seal(request_frame(new_intent("echo"), HTTP)) for c in clients]
    for r in requests:
        server.open(r)
    # Sealed in the opposite order, from nothing but the requests as received.
    replies = [server.seal(response_frame(AgentResponse.success({"to": i}), HTTP), reply_to=r)
               for i, r in reversed(list(enumerate(requests)))][::-1]
    for i, (c, r, reply) in enumerate(zip(clients, requests, replies, strict=True)):
        assert reply.body.recipient == c.agent_id  # type: ignore[union-attr]
        assert reply.body.key_id == r.body.key_id  # type: ignore[union-attr]
        out = c.open(reply)
        assert isinstance(out.body, AgentResponse) and out.body.payload == {"to": i}
    # Misuse: reply_to must be a sealed request; a request's pair key belongs to its sender.
    with pytest.raises(ValueError):
        server.seal(response_frame(AgentResponse.success({}), HTTP),
                    reply_to=request_frame(new_intent("echo"), HTTP))
    forged = replace(requests[0], body=replace(requests[0].body, sender="c2"))
    with pytest.raises(ValueError):
        server.seal(response_frame(AgentResponse.success({}), HTTP), reply_to=forged)


def test_pending_requests_are_bounded() -> None:
    pending = PendingRequests(max_intents=2, max_events=1)
    for name in ("a", "b", "c"):
        pending.add(name, "")
    pending.add("e1", "", event=True)
    pending.add("e2", "srv", event=True)
    assert pending.get("a") is None and pending.get("b") == "" and pending.get("c") == ""
    assert pending.get("e1") is None and pending.get("e2") == "srv"
    pending.done("b")
    pending.done("e2")
    assert len(pending) == 1
    with pytest.raises(ValueError):
        PendingRequests(max_intents=0)


async def test_dispatcher_binds_concurrent_replies(clock: FakeClock) -> None:
    ring = Keyring(clock=clock)
    ring.add_group_key("g1", b"k" * 32)
    router = Router()

    async def slow_echo(env: IntentEnvelope) -> dict[str, object]:
        # Finish in the reverse order of arrival, interleaving every request.
        for _ in range(10 - int(env.payload["i"])):
            await trio.lowlevel.checkpoint()
        return {"echo": env.payload}

    router.register("echo", "echo", slow_echo)
    dispatcher = FrameDispatcher(router, HTTP, require_emcl=True,
                                 protector=EmclProtector(ring, "s", role=Role.SERVER))
    clients = [ClientFraming(HTTP, protector=EmclProtector(ring, f"c{n}", role=Role.CLIENT))
               for n in range(3)]
    results: dict[tuple[int, int], object] = {}

    async def call(n: int, i: int) -> None:
        data = clients[n].encode_intent(new_intent("echo", {"n": n, "i": i}))
        results[n, i] = clients[n].decode_reply(await dispatcher.handle_bytes(data))

    async with trio.open_nursery() as nursery:
        for n in range(3):
            for i in range(5):
                nursery.start_soon(call, n, i)
    for (n, i), reply in results.items():
        assert isinstance(reply, AgentResponse) and reply.payload == {"echo": {"n": n, "i": i}}
    assert all(len(c.protector.pending) == 0 for c in clients)  # type: ignore[union-attr]


def test_requests_nothing_answers_are_not_kept_pending(
    protectors: tuple[EmclProtector, EmclProtector],
) -> None:
    client, server = protectors
    client.pending = PendingRequests(max_intents=2)
    awaited = client.seal(request_frame(new_intent("slow"), HTTP, request_id="1"))
    framing = ClientFraming(HTTP, protector=client)
    # Control frames and one-way work get no reply: they must not push out the request
    # above, whose reply would then be refused as unmatched.
    for n in range(5):
        data = framing.encode_intent(new_intent("credit"), request_id=str(n), expect_reply=False)
        assert server.open(FrameCodec().decode(data)).body.intent.name == "credit"  # type: ignore[union-attr]
    assert len(client.pending) == 1
    server.open(awaited)
    reply = server.seal(response_frame(AgentResponse.success({"ok": 1}), HTTP, request_id="1"),
                        reply_to=awaited)
    assert client.open(reply).body.payload == {"ok": 1}  # type: ignore[union-attr]
    assert len(client.pending) == 0


def test_an_event_sealed_in_reply_to_a_subscribe_request_is_for_that_subscriber_only() -> None:
    """Pair keys only: the server seals each pushed event under the subscriber's key."""
    server, clients = pair_keyed("c1", "c2")
    c1, c2 = clients
    subscribe = c1.seal(request_frame(new_intent("subscribe"), HTTP))
    server.open(subscribe)
    event = event_frame(new_event("note.x", {"n": 1}), HTTP)
    with pytest.raises(EMCLFailure):
        server.seal(event)  # no group key: nobody to seal it for
    sealed = server.seal(event, reply_to=subscribe)
    opened = c1.open(sealed)
    assert opened.body == event.body and REPLY_TO_HEADER not in opened.headers
    assert refused(c2, sealed) == "unknown_key"
    assert len(c1.pending) == 1  # the subscribe request's own reply is still awaited
