"""The plaintext never reaches a log record, an error message or an exception text."""

from __future__ import annotations

import logging
import traceback

import pytest
from msgspec.structs import replace

from intentus_trio.emcl import EmclProtector, Keyring, Role
from intentus_trio.emcl.encoding import b64d, b64e
from intentus_trio.keys import generate_master_key
from intentus_trio.protocol.codec import response_to_json
from intentus_trio.protocol.enums import MessageType, TransportProtocol
from intentus_trio.protocol.errors import IntentusError
from intentus_trio.protocol.factory import new_intent
from intentus_trio.protocol.models import IntentEnvelope
from intentus_trio.routing.router import Router
from intentus_trio.transports.framing import request_frame
from intentus_trio.transports.inprocess import InProcessTransport

from .conftest import FakeClock

MARKER = "PLAINTEXT-MARKER-c0ffee"


def texts_of(exc: BaseException) -> str:
    parts = [str(exc), repr(exc), "".join(traceback.format_exception(exc))]
    if isinstance(exc, IntentusError):
        parts.append(repr(exc.details))
        parts.append(repr(response_to_json(exc.to_response())))
    return "\n".join(parts)


async def test_no_plaintext_in_logs_or_errors(
    caplog: pytest.LogCaptureFixture, clock: FakeClock
) -> None:
    caplog.set_level(logging.DEBUG)  # the root logger: every logger propagates here
    for name in list(logging.root.manager.loggerDict):
        logging.getLogger(name).setLevel(logging.DEBUG)
    ring = Keyring(clock=clock)
    ring.add_group_key("g1", generate_master_key())
    client = EmclProtector(ring, "client", role=Role.CLIENT)
    server = EmclProtector(ring, "server", role=Role.SERVER)
    collected: list[str] = []

    frame = request_frame(new_intent("echo", {"secret": MARKER}), TransportProtocol.LOCAL)
    sealed = client.seal(frame)
    env = sealed.body
    ct = b64d(env.ciphertext)  # type: ignore[union-attr]
    assert ct is not None
    bad_frames = [
        replace(sealed, body=replace(env, ciphertext=b64e(bytes([ct[0] ^ 1]) + ct[1:]))),
        replace(sealed, body=replace(env, key_id="unknown")),
        replace(sealed, body=replace(env, nonce="!!")),
        replace(sealed, message_type=MessageType.RESPONSE),
        sealed,
        sealed,  # replayed
    ]
    for bad in bad_frames:
        try:
            server.open(bad)
        except IntentusError as exc:
            collected.append(texts_of(exc))
    assert len(collected) == 5  # the first `sealed` opened, everything else was refused

    # A body that authenticates but does not decode: the codec error must not quote it.
    key = ring.sealing_key()
    assert key is not None
    headers = {**frame.headers, "emcl": "1.0"}
    broken = client.engine.seal(MessageType.INTENT, b'{"intent": "' + MARKER.encode() + b'"}',
                                key=key, headers=headers, negotiation=("1.0", "1.0"))
    try:
        server.open(replace(sealed, body=broken, headers=headers))
    except IntentusError as exc:
        collected.append(texts_of(exc))
    assert len(collected) == 6

    # A whole in-process call, including an agent that fails.
    router = Router()

    async def fails(env: IntentEnvelope) -> dict[str, str]:
        raise RuntimeError("agent failure")

    async def echo(env: IntentEnvelope) -> dict[str, object]:
        return env.payload

    router.register("fails", "fails", fails)
    router.register("echo", "echo", echo)
    transport = InProcessTransport(router, protector=client, server_protector=server)
    assert (await transport.send_intent(new_intent("echo", {"secret": MARKER}))).ok
    failed = await transport.send_intent(new_intent("fails", {"secret": MARKER}))
    assert failed.error is not None
    collected.append(repr(failed.error))

    assert caplog.records, "the refusals above are logged (without plaintext)"
    log_text = "\n".join(
        [caplog.text]
        + [r.getMessage() for r in caplog.records]
        + [repr(r.args) for r in caplog.records]
        + [str(r.exc_info) for r in caplog.records]
    )
    assert MARKER not in log_text
    for text in collected:
        assert MARKER not in text
