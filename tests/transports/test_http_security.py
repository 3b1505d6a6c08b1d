"""TLS (trustme certificates via hypercorn's config) and EMCL plumbing (a test protector)."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trio
import trustme

from intentus_trio.protocol.codec import dumps, frame_from_json, frame_to_json, loads
from intentus_trio.protocol.enums import ErrorCode, TransportCode, TransportProtocol
from intentus_trio.protocol.errors import RemoteError
from intentus_trio.protocol.factory import new_event, new_intent
from intentus_trio.protocol.models import AgentResponse, StreamChunk
from intentus_trio.transports.framing import request_frame
from intentus_trio.transports.http import RetryPolicy, open_client

from ..protectors import StandInProtector
from .http_helpers import running_server


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_files(ca: trustme.CA, tmp_path: Path) -> Iterator[dict[str, str]]:
    cert = ca.issue_cert("127.0.0.1")
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    yield {"certfile": str(certfile), "keyfile": str(keyfile)}


def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


@pytest.mark.parametrize("http2", [False, True])
async def test_tls_round_trip_stream_and_events(
    ca: trustme.CA, tls_files: dict[str, str], http2: bool
) -> None:
    async with running_server(**tls_files) as (url, _):
        assert url.startswith("https://127.0.0.1:")
        async with open_client(url, verify=client_context(ca), http2=http2) as client:
            assert (await client.send_intent(new_intent("echo", {"tls": 1}))).payload == {
                "tls": 1}
            items = [i async for i in client.send_stream(new_intent("count", {"n": 2}))]
            assert isinstance(items[-1], AgentResponse) and items[-1].ok
            assert len(items) == 3
            async with client.subscribe("secure") as events:
                await client.publish(new_event("secure", {"s": 1}))
                with trio.fail_after(5):
                    assert (await events.__anext__()).payload == {"s": 1}


async def test_tls_untrusted_certificate_fails_cleanly(tls_files: dict[str, str]) -> None:
    async with running_server(**tls_files) as (url, _), \
            open_client(url, retry=RetryPolicy(max_attempts=1)) as client:
        response = await client.send_intent(new_intent("echo"))
    assert response.error is not None
    assert response.error.details["transportCode"] == TransportCode.CONNECTION_FAILURE


async def test_emcl_every_path_is_sealed() -> None:
    server_side, client_side = StandInProtector(), StandInProtector()
    async with running_server(protector=server_side, require_emcl=True) as (url, _), \
            open_client(url, protector=client_side) as client:
        response = await client.send_intent(new_intent("echo", {"secret": 1}))
        assert response.payload == {"secret": 1}
        missing = await client.send_intent(new_intent("nobody"))
        assert missing.error is not None
        assert missing.error.code is ErrorCode.CAPABILITY_NOT_FOUND

        replies = await client.send_batch([new_intent("echo", {"i": i}) for i in range(3)])
        assert [r.payload for r in replies] == [{"i": 0}, {"i": 1}, {"i": 2}]

        items = [i async for i in client.send_stream(new_intent("count", {"n": 2}))]
        assert [type(i) for i in items] == [StreamChunk, StreamChunk, AgentResponse]

        async with client.subscribe("sealed.*") as events:
            await client.publish(new_event("sealed.one", {"e": 1}))
            with trio.fail_after(5):
                assert (await events.__anext__()).payload == {"e": 1}

        assert (await client.run_task(new_intent("echo", {"t": 1}))).payload == {"t": 1}
    # Both sides sealed and opened every frame they exchanged.
    assert server_side.opened >= 8 and client_side.opened >= 8
    assert server_side.sealed >= 8 and client_side.sealed >= 8


async def test_emcl_sealed_frames_on_the_wire_and_status() -> None:
    protector = StandInProtector()
    async with running_server(protector=protector) as (url, _), \
            httpx.AsyncClient(base_url=url) as raw:
        sealed = protector.seal(request_frame(new_intent("nobody", {"hidden": "x"}),
                                              TransportProtocol.HTTP))
        wire = dumps(frame_to_json(sealed))
        assert b"hidden" not in wire
        reply = await raw.post("/intent", content=wire,
                               headers={"content-type": "application/json"})
        # A sealed reply always answers 200: the status would disclose the outcome.
        assert reply.status_code == 200
        assert b"CAPABILITY_NOT_FOUND" not in reply.content
        opened = protector.open(frame_from_json(loads(reply.content)))
        assert isinstance(opened.body, AgentResponse)
        assert opened.body.error is not None


async def test_emcl_required_refuses_plaintext() -> None:
    async with running_server(protector=StandInProtector(), require_emcl=True) as (url, _), \
            open_client(url) as plain:
        response = await plain.send_intent(new_intent("echo"))
        assert response.error is not None and response.error.code is ErrorCode.EMCL_FAILURE
        replies = await plain.send_batch([new_intent("echo")])
        assert replies[0].error is not None and replies[0].error.code is ErrorCode.EMCL_FAILURE
        with pytest.raises(RemoteError):
            async with plain.subscribe("x"):
                pass


async def test_client_with_emcl_refuses_plaintext_replies() -> None:
    async with running_server() as (url, _), \
            open_client(url, protector=StandInProtector()) as client:
        response = await client.send_intent(new_intent("echo"))
    # The server has no EMCL: its (plaintext) error reply is readable and says so.
    assert response.error is not None and response.error.code is ErrorCode.EMCL_FAILURE
    assert response.error.details["reason"] == "not_configured"
