"""Fuzzing the MXP parsers not covered by tests/mxp: transport parameters and the handshake
payload (inside an authentic Noise message, so only a peer holding a key reaches them),
varints, long headers, Noise handshake messages, the message reader of MXP transport
streams, the legacy client's payload readers, and key text. Each returns a valid result or
raises its documented error; codecs round-trip. Over a real UDP socket, a server survives
an authentic INITIAL with broken parameters and serves the next client."""

from __future__ import annotations

import itertools
import socket
from contextlib import suppress
from typing import Any

import attrs
import pytest
import trio
from hypothesis import example, given
from hypothesis import strategies as st

from intentus_trio.keys import (
    KINDS,
    KeyFileError,
    decode_key,
    encode_key,
    format_key_file,
    parse_key_file,
)
from intentus_trio.mxp.config import Configuration, ServerConfiguration, allow_any
from intentus_trio.mxp.connection import Connection, State
from intentus_trio.mxp.endpoint import ServerEndpoint
from intentus_trio.mxp.message import MessageFlags, MessageType, MxpMessage, encode
from intentus_trio.mxp.noise import HandshakeState, KeyPair, NoiseError
from intentus_trio.mxp.packet import (
    CID_LEN,
    MIN_INITIAL_DATAGRAM,
    RETRY_TAG_LEN,
    LongPacket,
    PacketType,
    destination_cid,
    encode_long_packet,
    parse_long_packet,
)
from intentus_trio.mxp.params import (
    ParamsError,
    TransportParameters,
    decode_handshake_payload,
    encode_handshake_payload,
)
from intentus_trio.mxp.stats import Drop
from intentus_trio.mxp.varint import VARINT_MAX, DecodeError, decode_varint, encode_varint
from intentus_trio.protocol.codec import dumps, response_to_json
from intentus_trio.protocol.errors import IntentusError, MalformedMessage, PayloadTooLarge
from intentus_trio.protocol.factory import new_intent
from intentus_trio.protocol.models import AgentResponse, Event
from intentus_trio.transports.mxp import MxpEndpoint, MxpServer, TcpStreamBackend, open_client
from intentus_trio.transports.mxp.client import _count
from intentus_trio.transports.mxp.wire import MessageReader
from intentus_trio.transports.mxp_legacy.payloads import (
    error_response,
    event_from_payload,
    json_object,
    reply_response,
)

from ..strategies import json_objects, json_values, responses
from ..transports.test_mxp_transport import make_router
from .serving import serving_in_thread
from .strategies import byte_mutations, fuzzing, header_values, mutate

FAST = fuzzing(40)
NETWORK = fuzzing(10)

cids = st.binary(min_size=CID_LEN, max_size=CID_LEN)
varints = st.integers(0, VARINT_MAX)
milliseconds = st.integers(0, 1 << 40)

# ---------------------------------------------------------------------- transport parameters


@st.composite
def transport_parameters(draw: st.DrawFn) -> TransportParameters:
    reject_code = draw(st.none() | varints)
    return TransportParameters(
        initial_scid=draw(cids),
        idle_timeout=draw(milliseconds) / 1000,
        max_datagram_frame_size=draw(varints),
        max_packet_size=draw(st.integers(1200, VARINT_MAX)),
        max_ack_delay=draw(milliseconds) / 1000,
        initial_max_data=draw(varints),
        initial_max_stream_data=draw(varints),
        initial_max_streams_bidi=draw(st.integers(0, 1 << 60)),
        initial_max_streams_uni=draw(st.integers(0, 1 << 60)),
        original_dcid=draw(st.none() | cids),
        retry_scid=draw(st.none() | cids),
        reject_code=reject_code,
        reject_reason="" if reject_code is None else draw(st.text(max_size=30)),
    )


@FAST
@given(transport_parameters(), st.integers(0, 1300))
def test_transport_parameters_round_trip(params: TransportParameters, pad_to: int) -> None:
    assert TransportParameters.decode(params.encode()) == params
    payload = encode_handshake_payload(params, pad_to)
    assert len(payload) >= pad_to
    assert decode_handshake_payload(payload) == params


def _params_or_error(decode: Any, data: bytes) -> None:
    try:
        params = decode(data)
    except ParamsError:
        return  # anything else (a bare DecodeError, say) escapes the handshake's handler
    assert isinstance(params, TransportParameters)
    assert len(params.initial_scid) == CID_LEN and params.max_packet_size >= 1200


@FAST
@given(st.one_of(
    st.binary(max_size=120),
    st.tuples(transport_parameters().map(TransportParameters.encode), byte_mutations).map(
        lambda t: mutate(*t)),
))
@example(b"\x01")
@example(b"\x01\x08")
@example(b"\x10\x08" + bytes(8) + b"\x01\x00")
def test_transport_parameters_decode_or_raise_params_error(data: bytes) -> None:
    _params_or_error(TransportParameters.decode, data)


@FAST
@given(st.one_of(
    st.binary(max_size=120),
    st.tuples(st.builds(encode_handshake_payload, transport_parameters(), st.integers(0, 200)),
              byte_mutations).map(lambda t: mutate(*t)),
))
@example(b"")
@example(b"\x01\x01" + bytes(20))
@example(b"\x40")
def test_handshake_payload_decodes_or_raises_params_error(data: bytes) -> None:
    _params_or_error(decode_handshake_payload, data)


# ---------------------------------------------------------------------- varints and headers


@FAST
@given(st.binary(max_size=12), st.integers(0, 12))
def test_varint_decoder_reads_any_bytes(data: bytes, pos: int) -> None:
    try:
        value, end = decode_varint(data, pos)
    except DecodeError:
        assert pos >= len(data) or pos + (1 << (data[pos] >> 6)) > len(data)
        return
    assert end - pos in (1, 2, 4, 8) and 0 <= value <= VARINT_MAX
    assert decode_varint(encode_varint(value), 0)[0] == value


@st.composite
def long_packets(draw: st.DrawFn) -> LongPacket:
    kind = draw(st.sampled_from(PacketType))
    token = draw(st.binary(max_size=40)) if kind is not PacketType.HANDSHAKE else b""
    body = (draw(st.binary(min_size=RETRY_TAG_LEN, max_size=RETRY_TAG_LEN))
            if kind is PacketType.RETRY else draw(st.binary(max_size=100)))
    return LongPacket(kind, draw(st.integers(0, 255)), draw(cids), draw(cids), token, body)


def _encoded(packet: LongPacket) -> bytes:
    return encode_long_packet(packet.packet_type, packet.dcid, packet.scid, packet.body,
                              token=packet.token, version=packet.version)


@FAST
@given(long_packets())
def test_long_packets_round_trip(packet: LongPacket) -> None:
    data = _encoded(packet)
    assert parse_long_packet(data) == packet
    assert destination_cid(data) == packet.dcid


@FAST
@given(st.one_of(
    st.binary(max_size=80),
    st.tuples(long_packets().map(_encoded), byte_mutations).map(lambda t: mutate(*t)),
))
def test_long_header_parser_reads_any_bytes(data: bytes) -> None:
    cid = destination_cid(data)
    assert cid is None or len(cid) == CID_LEN
    try:
        packet = parse_long_packet(data)
    except DecodeError:
        return
    assert len(packet.dcid) == len(packet.scid) == CID_LEN
    assert packet.packet_type is not PacketType.RETRY or len(packet.body) == RETRY_TAG_LEN


# ---------------------------------------------------------------------- Noise messages

SERVER_KEY = KeyPair.generate()
CLIENT_KEY = KeyPair.generate()


def _message1(payload: bytes) -> bytes:
    return HandshakeState.initiator_ik(CLIENT_KEY, SERVER_KEY.public).write_message(payload)


@FAST
@given(st.binary(max_size=200), st.one_of(st.none(), byte_mutations, st.binary(max_size=200)))
def test_noise_message_1_is_read_or_refused(payload: bytes, change: Any) -> None:
    message = _message1(payload)
    if isinstance(change, list):
        received = mutate(message, change)
    elif isinstance(change, bytes):
        received = change
    else:
        received = message
    responder = HandshakeState.responder_ik(SERVER_KEY)
    try:
        got = responder.read_message(received)
    except NoiseError:
        assert received != message
        with pytest.raises(NoiseError):
            responder.read_message(message)  # a failed state stays failed
        return
    assert received == message and got == payload
    assert responder.remote_static == CLIENT_KEY.public


@FAST
@given(st.binary(max_size=100), st.one_of(byte_mutations, st.binary(max_size=120)))
def test_noise_message_2_is_read_or_refused(payload: bytes, change: Any) -> None:
    initiator = HandshakeState.initiator_ik(CLIENT_KEY, SERVER_KEY.public)
    responder = HandshakeState.responder_ik(SERVER_KEY)
    responder.read_message(initiator.write_message(b""))
    message = responder.write_message(payload)
    received = mutate(message, change) if isinstance(change, list) else change
    trial = initiator.fork()
    try:
        got = trial.read_message(received)
    except NoiseError:
        assert received != message
        assert initiator.fork().read_message(message) == payload  # the original is intact
        return
    assert received == message and got == payload


# ---------------------------------------------------------------------- handshakes with bad
# parameters: authentic Noise messages, so only a peer holding the right keys can send them


def _padded(payload: bytes) -> bytes:
    """``payload`` with the zeros that take its INITIAL past the minimum datagram size."""
    return payload + bytes(MIN_INITIAL_DATAGRAM)


def _initial_datagram(payload: bytes) -> bytes:
    """An INITIAL a client with a valid key could send, carrying ``payload`` as its
    handshake payload."""
    hs = HandshakeState.initiator_ik(CLIENT_KEY, SERVER_KEY.public,
                                     Configuration(CLIENT_KEY).prologue)
    return encode_long_packet(PacketType.INITIAL, b"d" * CID_LEN, b"s" * CID_LEN,
                              hs.write_message(_padded(payload)))


handshake_payloads = st.one_of(
    st.binary(max_size=60),
    st.tuples(st.builds(encode_handshake_payload, transport_parameters()), byte_mutations).map(
        lambda t: mutate(*t)),
)
BROKEN_PARAMS = b"\x01\x01"  # one byte of parameters: an id without its length


@FAST
@given(handshake_payloads)
@example(BROKEN_PARAMS)
@example(b"")
def test_server_endpoint_drops_an_initial_with_broken_parameters(payload: bytes) -> None:
    endpoint = ServerEndpoint(ServerConfiguration(Configuration(SERVER_KEY), allow_any))
    endpoint.receive_datagram(_initial_datagram(payload), ("127.0.0.1", 1), 0.0)
    try:
        decode_handshake_payload(_padded(payload))
    except ParamsError:
        assert endpoint.stats.drops[Drop.AUTH] == 1
    else:
        assert endpoint.stats.dropped <= 1


@FAST
@given(handshake_payloads)
@example(BROKEN_PARAMS)
def test_client_drops_a_handshake_with_broken_parameters(payload: bytes) -> None:
    config = Configuration(CLIENT_KEY)
    client = Connection.connect(config, SERVER_KEY.public, ("127.0.0.1", 2), 0.0)
    ((initial, _),) = client.datagrams_to_send(0.0)
    packet = parse_long_packet(initial)
    responder = HandshakeState.responder_ik(SERVER_KEY, config.prologue)
    responder.read_message(packet.body)
    reply = encode_long_packet(PacketType.HANDSHAKE, packet.scid, b"r" * CID_LEN,
                               responder.write_message(payload))
    client.receive_datagram(reply, ("127.0.0.1", 2), 0.01)
    assert client.state in (State.CLIENT_INITIAL, State.ESTABLISHED, State.CLOSED,
                            State.DRAINING, State.CLOSING)


def test_udp_server_survives_broken_parameters_and_serves_on() -> None:
    """The whole path: a UDP server gets an authentic INITIAL with broken parameters, then
    serves a good client."""

    async def start(nursery: trio.Nursery) -> tuple[str, MxpServer]:
        server = MxpServer(make_router(), static_key=SERVER_KEY.private,
                           shutdown_timeout=0.5)
        url = await nursery.start(server.run)
        return url, server

    with serving_in_thread(start) as served:
        url, _ = served.value
        endpoint = MxpEndpoint.parse(url)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            for payload in (BROKEN_PARAMS, b"", b"\x40"):
                udp.sendto(_initial_datagram(payload), endpoint.address)

        async def call() -> AgentResponse:
            async with open_client(url, timeout=5) as client:
                return await client.send_intent(new_intent("echo", {"k": 1}))

        assert trio.run(call).payload == {"k": 1}
        served.check()


def test_tcp_stream_backend_survives_any_preface() -> None:
    """The TCP backend's connection preface (kind, keys or token) from any client."""
    backend = TcpStreamBackend()

    async def start(nursery: trio.Nursery) -> str:
        server = MxpServer(make_router(), backend=backend, shutdown_timeout=0.5)
        url: str = await nursery.start(server.run)
        return url

    with serving_in_thread(start) as served:
        url = served.value
        endpoint = MxpEndpoint.parse(url)
        assert endpoint.key is not None
        key = endpoint.key

        async def send_raw(data: bytes) -> None:
            """Send a preface and read until the server closes (it may reset at once)."""
            with trio.fail_after(5):
                async with await trio.open_tcp_stream(*endpoint.address) as tcp:
                    with suppress(trio.BrokenResourceError):
                        await tcp.send_all(data)
                        await tcp.send_eof()
                        while await tcp.receive_some(100):
                            pass

        async def call() -> AgentResponse:
            async with open_client(url, timeout=5, backend=backend) as client:
                return await client.send_intent(new_intent("echo", {"k": 2}))

        @NETWORK
        @given(st.one_of(
            st.binary(max_size=100),
            st.builds(lambda rest: b"\x00" + key + rest, st.binary(max_size=40)),
            st.builds(lambda rest: b"\x01" + rest, st.binary(max_size=20)),
        ))
        def check(data: bytes) -> None:
            trio.run(send_raw, data)
            served.check()

        check()
        assert trio.run(call).payload == {"k": 2}


# ---------------------------------------------------------------------- MXP transport streams


@attrs.define
class _Chunks(trio.abc.ReceiveStream):
    chunks: list[bytes]

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint()
        return self.chunks.pop(0) if self.chunks else b""

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


messages = st.builds(
    MxpMessage, st.sampled_from(MessageType), st.binary(max_size=200),
    st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1),
    st.sampled_from([MessageFlags.NONE, MessageFlags.FINAL]))


def _cut(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points) if b > a]


async def _read_all(chunks: list[bytes], limit: int) -> list[MxpMessage]:
    reader = MessageReader(_Chunks(chunks), limit)
    out = []
    while (message := await reader.next()) is not None:
        out.append(message)
    return out


@FAST
@given(st.lists(messages, max_size=5), st.lists(st.integers(0, 2000), max_size=8),
       st.one_of(st.none(), byte_mutations, st.binary(max_size=300)))
def test_message_reader_reads_messages_however_cut_or_fails_clearly(
    sent: list[MxpMessage], cuts: list[int], change: Any
) -> None:
    data = b"".join(encode(m) for m in sent)
    if change is None:
        assert trio.run(_read_all, _cut(data, cuts), 1 << 20) == sent
        return
    data = mutate(data, change) if isinstance(change, list) else change
    try:
        got = trio.run(_read_all, _cut(data, cuts), 150)
    except (MalformedMessage, PayloadTooLarge):
        return
    assert all(len(m.payload) <= 150 for m in got)


@FAST
@given(st.none() | header_values)
@example("²")
@example("①")
def test_dropped_count_of_pushed_events_is_a_number_or_absent(text: str | None) -> None:
    count = _count(text)
    assert count is None or (type(count) is int and count >= 0)


# ---------------------------------------------------------------------- legacy MXP client


legacy_payloads = st.one_of(
    st.binary(max_size=100),
    json_values.map(dumps),
    responses.map(lambda r: dumps(response_to_json(r))),
    st.builds(lambda error, code, details: dumps(
        {"error": error, "code": code, "details": details}), json_values, json_values,
        json_values),
)


@FAST
@given(legacy_payloads)
def test_legacy_reply_and_error_payloads_become_responses(data: bytes) -> None:
    assert isinstance(reply_response(data, trace_id="t"), AgentResponse)
    error = error_response(data, trace_id="t")
    assert isinstance(error, AgentResponse) and error.error is not None
    with suppress(IntentusError):
        assert type(json_object(data)) is dict


@FAST
@given(st.one_of(json_objects, st.fixed_dictionaries({}, optional=dict.fromkeys(
    ("eventType", "event_type", "type", "payload", "eventId", "source", "timestamp", "traceId"),
    json_values))))
def test_legacy_events_are_read_or_refused(obj: dict[str, Any]) -> None:
    try:
        event = event_from_payload(obj, default_type="d", event_id="i", source="s",
                                   trace_id=None)
    except IntentusError:
        return
    assert isinstance(event, Event)


# ---------------------------------------------------------------------- key text


@FAST
@given(st.binary(min_size=32, max_size=32), st.sampled_from(["hex", "base64"]),
       st.sampled_from(KINDS))
def test_keys_round_trip(key: bytes, encoding: Any, kind: str) -> None:
    assert decode_key(encode_key(key, encoding)) == key
    assert parse_key_file(format_key_file(key, kind, encoding), kind) == key  # type: ignore[arg-type]


@FAST
@given(st.one_of(st.text(max_size=80), st.binary(min_size=32, max_size=32).map(
    lambda k: encode_key(k) + "²")))
def test_key_text_is_a_key_or_a_key_file_error(text: str) -> None:
    for parse in (decode_key, parse_key_file):
        try:
            key = parse(text)
        except KeyFileError:
            continue
        assert len(key) == 32
