"""Send buffers, reassembly buffers and the stream manager."""

from __future__ import annotations

import itertools
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from intentus_trio.mxp.flow import (
    FINAL_SIZE_ERROR,
    FLOW_CONTROL_ERROR,
    STREAM_LIMIT_ERROR,
    STREAM_STATE_ERROR,
    FlowControlError,
)
from intentus_trio.mxp.recovery import Delivery
from intentus_trio.mxp.stream_frames import (
    MaxData,
    MaxStreamData,
    MaxStreams,
    ResetStream,
    StopSending,
    StreamDataBlocked,
    StreamFrame,
    StreamsBlocked,
    decode_payload,
)
from intentus_trio.mxp.streams import (
    ReceiveStream,
    SendStream,
    StopSendingRequested,
    StreamError,
    StreamLimitReached,
    StreamLimits,
    StreamManager,
    StreamOpened,
    StreamReadable,
    StreamReset,
    is_bidirectional,
    is_client_initiated,
    make_stream_id,
)

# ---------------------------------------------------------------------- reassembly


@st.composite
def segmented(draw: st.DrawFn) -> tuple[bytes, list[tuple[int, bytes, bool]]]:
    """Data and a shuffled list of (offset, bytes, fin) frames that covers it, with random
    overlaps and duplicates."""
    data = draw(st.binary(min_size=0, max_size=2000))
    n = len(data)
    cuts = sorted(set(draw(st.lists(st.integers(0, n), max_size=20))) | {0, n})
    pieces = [(a, b) for a, b in itertools.pairwise(cuts)]
    extra = draw(st.lists(st.tuples(st.integers(0, n), st.integers(0, 300)), max_size=10))
    pieces += [(a, min(n, a + w)) for a, w in extra]
    pieces += draw(st.lists(st.sampled_from(pieces), max_size=5)) if pieces else []
    frames = [(a, data[a:b], b == n) for a, b in pieces]
    if not frames:
        frames = [(0, b"", True)]
    rnd = random.Random(draw(st.integers(0, 2**32)))
    rnd.shuffle(frames)
    return data, frames


@settings(max_examples=300)
@given(segmented(), st.lists(st.integers(1, 500), max_size=30))
def test_reassembly_delivers_exact_bytes_once_in_order(
    case: tuple[bytes, list[tuple[int, bytes, bool]]], read_sizes: list[int]
) -> None:
    data, frames = case
    recv = ReceiveStream(0, window=1 << 20)
    out = bytearray()
    sizes = iter(read_sizes)
    for offset, chunk, fin in frames:
        recv.on_data(offset, memoryview(chunk), fin)
        out += recv.read(next(sizes, -1))
        assert bytes(out) == data[: len(out)]
    out += recv.read()
    assert bytes(out) == data
    assert recv.at_eof and recv.is_done
    assert recv.buffered_out_of_order == 0
    assert recv.read() == b""


def test_reassembly_overlaps_keep_segments_disjoint() -> None:
    recv = ReceiveStream(0, window=1000)
    data = bytes(range(100))
    recv.on_data(50, data[50:60], False)
    recv.on_data(70, data[70:80], False)
    recv.on_data(45, data[45:90], False)  # swallows both and extends them
    recv.on_data(55, data[55:58], False)  # already covered
    assert recv.buffered_out_of_order == 45
    recv.on_data(0, data[0:50], False)
    assert recv.read() == data[:90]
    assert recv.buffered_out_of_order == 0


def test_final_size_rules() -> None:
    recv = ReceiveStream(0, window=1000)
    recv.on_data(0, b"abc", True)
    with pytest.raises(FlowControlError) as exc:
        recv.on_data(0, b"abcd", False)
    assert exc.value.code == FINAL_SIZE_ERROR
    with pytest.raises(FlowControlError):
        recv.on_data(0, b"ab", True)  # a different final size
    recv.on_data(0, b"abc", True)  # the same one again is fine
    other = ReceiveStream(0, window=1000)
    other.on_data(10, b"xyz", False)
    with pytest.raises(FlowControlError) as exc:
        other.on_data(0, b"ab", True)  # final size below data already received
    assert exc.value.code == FINAL_SIZE_ERROR
    with pytest.raises(FlowControlError):
        other.on_reset(1, 5)


def test_receive_flow_limit() -> None:
    recv = ReceiveStream(0, window=100)
    assert recv.on_data(0, bytes(100), False) == 100
    with pytest.raises(FlowControlError) as exc:
        recv.on_data(100, b"x", False)
    assert exc.value.code == FLOW_CONTROL_ERROR


def test_large_reads_and_partial_reads_compact() -> None:
    recv = ReceiveStream(0, window=1 << 22)
    data = random.Random(1).randbytes(300_000)
    recv.on_data(0, data, True)
    out = bytearray()
    while chunk := recv.read(7000):
        out += chunk
    assert bytes(out) == data and recv.at_eof


# ---------------------------------------------------------------------- send buffer


class Sink:
    """Collects the STREAM frames a SendStream writes."""

    def __init__(self, stream: SendStream) -> None:
        self.stream = stream
        self.frames: list[tuple[StreamFrame, Any]] = []

    def pull(self, limit: int = 200, conn: int = 1 << 30) -> tuple[StreamFrame, Any] | None:
        out = bytearray()
        deliveries: list[tuple[Delivery, Any]] = []
        if self.stream.write_frame(out, limit, conn, deliveries) is None:
            return None
        assert len(out) <= limit
        (frame,) = decode_payload(bytes(out))
        assert isinstance(frame, StreamFrame)
        ((owner, token),) = deliveries
        assert owner is self.stream
        return frame, token


def test_send_stream_keeps_data_until_acked() -> None:
    s = SendStream(4, credit=10_000)
    s.write(b"a" * 500)
    s.write(b"b" * 100, fin=True)
    sink = Sink(s)
    sent = []
    while (got := sink.pull()) is not None:
        sent.append(got)
    assert b"".join(bytes(f.data) for f, _ in sent) == b"a" * 500 + b"b" * 100
    assert sent[-1][0].fin and not any(f.fin for f, _ in sent[:-1])
    assert s.buffered == 600
    s.on_acked(sent[1][1])
    assert s.buffered == 600  # a hole below keeps everything
    s.on_lost(sent[0][1])
    s.on_lost(sent[1][1])  # already acked: not retransmitted
    assert s.has_retransmit
    again = sink.pull()
    assert again is not None
    assert again[0].offset == 0 and bytes(again[0].data) == bytes(sent[0][0].data)
    assert not s.has_retransmit and sink.pull() is None
    for _, token in [*sent, again]:
        s.on_acked(token)
    assert s.buffered == 0 and s.is_done


def test_ack_spanning_several_acked_ranges_releases_them_all() -> None:
    s = SendStream(0, credit=10_000)
    s.write(bytes(100))
    s.on_acked((10, 10, False))
    s.on_acked((30, 10, False))
    s.on_acked((45, 5, False))
    assert s.buffered == 100
    s.on_acked((0, 35, False))  # reaches into [30, 40) and touches nothing above 40
    assert s.buffered == 60
    s.on_acked((40, 5, False))
    assert s.buffered == 50
    s.on_acked((50, 50, False))
    assert s.buffered == 0


def test_send_stream_respects_credit_and_fin_alone() -> None:
    s = SendStream(0, credit=50)
    s.write(b"x" * 80)
    sink = Sink(s)
    got = sink.pull()
    assert got is not None and len(got[0].data) == 50
    assert sink.pull() is None and s.credit_blocked and not s.has_new
    s.credit.update(100)
    got = sink.pull()
    assert got is not None and len(got[0].data) == 30 and not got[0].fin
    s.write(b"", fin=True)
    fin = sink.pull()
    assert fin is not None and fin[0].fin and fin[0].offset == 80 and not fin[0].data
    s.on_lost(fin[1])
    again = sink.pull()
    assert again is not None and again[0].fin and again[0].offset == 80
    with pytest.raises(StreamError):
        s.write(b"more")


def test_send_stream_connection_credit() -> None:
    s = SendStream(0, credit=1000)
    s.write(b"y" * 100)
    assert Sink(s).pull(conn=0) is None
    got = Sink(s).pull(conn=10)
    assert got is not None and len(got[0].data) == 10


def test_send_stream_reset() -> None:
    s = SendStream(0, credit=1000)
    s.write(b"z" * 300)
    sink = Sink(s)
    first = sink.pull()
    assert first is not None
    assert s.reset(7)
    assert not s.reset(8)
    assert s.sent_offset == len(first[0].data)
    s.on_lost(first[1])
    assert not s.has_retransmit and not s.has_new and sink.pull() is None
    with pytest.raises(StreamError):
        s.write(b"x")
    assert not s.is_done
    s.reset_acked = True
    assert s.is_done


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=5000), st.integers(0, 2**32), st.integers(40, 400))
def test_send_stream_random_fates_deliver_everything(data: bytes, seed: int, mtu: int) -> None:
    """Frames are lost, acked, or both, in any order; the receiver still gets all bytes once
    and the buffer drains."""
    rnd = random.Random(seed)
    s = SendStream(0, credit=1 << 20)
    s.write(data, fin=True)
    recv = ReceiveStream(0, window=1 << 20)
    sink = Sink(s)
    in_flight: list[Any] = []
    out = bytearray()
    for _ in range(100_000):
        got = sink.pull(mtu)
        if got is not None:
            frame, token = got
            if rnd.random() < 0.7:
                recv.on_data(frame.offset, frame.data, frame.fin)
                in_flight.append((token, True))
            else:
                in_flight.append((token, False))
        elif not in_flight:
            break
        if in_flight and rnd.random() < 0.05:
            # a probe timeout re-queues data that is still in flight
            s.on_lost(rnd.choice(in_flight)[0])
        if in_flight and (got is None or rnd.random() < 0.5):
            token, arrived = in_flight.pop(rnd.randrange(len(in_flight)))
            if arrived:
                s.on_acked(token)
                if rnd.random() < 0.1:
                    s.on_lost(token)  # a late, spurious loss after the ack
            else:
                s.on_lost(token)
        out += recv.read()
    assert bytes(out) == data and recv.at_eof
    assert s.buffered == 0 and s.is_done


# ---------------------------------------------------------------------- manager


def pair(
    client: StreamLimits | None = None, server: StreamLimits | None = None
) -> tuple[StreamManager, StreamManager]:
    c = client or StreamLimits()
    s = server or StreamLimits()
    return (
        StreamManager(is_client=True, local=c, peer=s),
        StreamManager(is_client=False, local=s, peer=c),
    )


def exchange(src: StreamManager, dst: StreamManager, limit: int = 1200) -> list[Any]:
    """Move everything src wants to send to dst (lossless); return the frames."""
    sent: list[Any] = []
    while True:
        out = bytearray()
        deliveries: list[tuple[Delivery, Any]] = []
        src.write_control(out, limit, 0.0, deliveries)
        src.write_stream_frames(out, limit, deliveries)
        if not out:
            return sent
        for frame in decode_payload(bytes(out)):
            sent.append(frame)
            dst.handle_frame(frame)  # type: ignore[arg-type]
        for owner, token in deliveries:
            owner.on_acked(token)


def events(m: StreamManager) -> list[Any]:
    out = []
    while (ev := m.next_event()) is not None:
        out.append(ev)
    return out


def test_stream_id_bits() -> None:
    assert make_stream_id(0, client=True, bidi=True) == 0
    assert make_stream_id(1, client=False, bidi=True) == 5
    assert make_stream_id(2, client=True, bidi=False) == 10
    assert make_stream_id(0, client=False, bidi=False) == 3
    assert is_client_initiated(8) and not is_client_initiated(9)
    assert is_bidirectional(4) and not is_bidirectional(6)
    client, server = pair()
    assert [client.open_stream() for _ in range(3)] == [0, 4, 8]
    assert client.open_stream(bidi=False) == 2
    assert server.open_stream() == 1 and server.open_stream(bidi=False) == 3


def test_open_write_read_and_close() -> None:
    client, server = pair()
    sid = client.open_stream()
    client.write(sid, b"hello ")
    client.write(sid, b"world", fin=True)
    exchange(client, server)
    assert events(server) == [StreamOpened(sid), StreamReadable(sid)]
    assert server.read(sid) == b"hello world"
    assert server.at_eof(sid)
    server.write(sid, b"reply", fin=True)
    exchange(server, client)
    assert events(client) == [StreamReadable(sid)]
    assert client.read(sid) == b"reply" and client.at_eof(sid)
    # both directions finished and acknowledged: both sides forget the stream
    assert len(client) == 0 and len(server) == 0
    assert client.read(sid) == b""


def test_peer_opening_a_higher_stream_opens_lower_ones() -> None:
    client, server = pair()
    for _ in range(3):
        client.open_stream()
    client.write(8, b"x")
    exchange(client, server)
    assert events(server) == [
        StreamOpened(0),
        StreamOpened(4),
        StreamOpened(8),
        StreamReadable(8),
    ]


def test_stream_limits_and_max_streams() -> None:
    client, server = pair(server=StreamLimits(max_streams_bidi=2, max_streams_uni=1))
    a, b = client.open_stream(), client.open_stream()
    assert not client.can_open()
    with pytest.raises(StreamLimitReached):
        client.open_stream()
    client.open_stream(bidi=False)
    with pytest.raises(StreamLimitReached):
        client.open_stream(bidi=False)
    out = bytearray()
    client.write_control(out, 1200, 0.0, [])
    assert set(decode_payload(bytes(out))) == {StreamsBlocked(True, 2), StreamsBlocked(False, 1)}
    # finish both streams in both directions: the server lets the client open more
    for sid in (a, b):
        client.write(sid, b"q", fin=True)
    exchange(client, server)
    events(server)
    for sid in (a, b):
        assert server.read(sid) == b"q"
        server.write(sid, b"", fin=True)
    exchange(server, client)
    assert client.can_open()
    assert client.open_stream() == 8
    # a peer that ignores the limit breaks the connection
    with pytest.raises(FlowControlError) as exc:
        server.handle_frame(StreamFrame(make_stream_id(9, client=True, bidi=True), 0, b"x"))
    assert exc.value.code == STREAM_LIMIT_ERROR


def test_stream_state_errors() -> None:
    client, server = pair()
    uni = client.open_stream(bidi=False)
    with pytest.raises(FlowControlError) as exc:
        client.handle_frame(StreamFrame(uni, 0, b"x"))  # data on our send-only stream
    assert exc.value.code == STREAM_STATE_ERROR
    with pytest.raises(FlowControlError):
        client.handle_frame(StreamFrame(12, 0, b"x"))  # our bidi stream 12 was never opened
    with pytest.raises(FlowControlError):
        server.handle_frame(MaxStreamData(2, 100))  # credit for the client's uni stream
    with pytest.raises(StreamError):
        client.read(uni)
    with pytest.raises(StreamError):
        server.write(3, b"x")


def test_flow_control_violation_at_connection_level() -> None:
    _client, server = pair(server=StreamLimits(max_data=1000, max_stream_data=800))
    with pytest.raises(FlowControlError):
        server.handle_frame(StreamFrame(0, 0, bytes(801)))
    server.handle_frame(StreamFrame(4, 0, bytes(600)))
    with pytest.raises(FlowControlError) as exc:
        server.handle_frame(StreamFrame(8, 0, bytes(500)))
    assert exc.value.code == FLOW_CONTROL_ERROR


def test_credit_blocks_and_updates_resume() -> None:
    limits = StreamLimits(max_data=3000, max_stream_data=2000)
    client, server = pair(client=limits, server=limits)
    sid = client.open_stream()
    client.write(sid, bytes(10_000))
    assert StreamDataBlocked(sid, 2000) in exchange(client, server)
    events(server)
    assert server.get(sid).recv.window.highest == 2000  # type: ignore[union-attr]
    assert exchange(client, server) == []  # blocked, and said so only once
    assert len(server.read(sid)) == 2000
    exchange(server, client)  # MAX_STREAM_DATA and MAX_DATA
    exchange(client, server)
    assert server.get(sid).recv.window.highest > 2000  # type: ignore[union-attr]
    total = 2000
    for _ in range(20):
        total += len(server.read(sid))
        exchange(server, client)
        exchange(client, server)
    total += len(server.read(sid))
    assert total == 10_000


def test_reset_and_stop_sending() -> None:
    client, server = pair()
    sid = client.open_stream()
    client.write(sid, b"a" * 3000)
    exchange(client, server)
    events(server)
    client.reset_stream(sid, 42)
    exchange(client, server)
    assert events(server) == [StreamReset(sid, 42)]
    assert server.read(sid) == b""
    # server asks the client to stop sending on a new stream
    sid2 = client.open_stream()
    client.write(sid2, b"b" * 100)
    exchange(client, server)
    events(server)
    server.stop_sending(sid2, 9)
    exchange(server, client)
    assert events(client) == [StopSendingRequested(sid2, 9)]
    exchange(client, server)  # the RESET_STREAM the client answered with
    assert events(server) == [StreamReset(sid2, 9)]
    # a stale STOP_SENDING after the reset changes nothing
    client.handle_frame(StopSending(sid2, 9))
    assert events(client) == []


def test_lost_control_frames_are_repeated() -> None:
    client, server = pair(server=StreamLimits(max_data=2000, max_stream_data=2000))
    sid = client.open_stream()
    client.write(sid, bytes(2000))
    exchange(client, server)
    server.read(sid)
    out = bytearray()
    deliveries: list[tuple[Delivery, Any]] = []
    server.write_control(out, 1200, 0.0, deliveries)
    frames = decode_payload(bytes(out))
    assert any(isinstance(f, MaxData) for f in frames)
    assert any(isinstance(f, MaxStreamData) for f in frames)
    for owner, token in deliveries:
        owner.on_lost(token)
    out2 = bytearray()
    server.write_control(out2, 1200, 0.0, [])
    assert decode_payload(bytes(out2)) == frames
    # a reset that is lost is sent again
    client.reset_stream(sid, 1)
    out3 = bytearray()
    deliveries = []
    client.write_control(out3, 1200, 0.0, deliveries)
    assert ResetStream(sid, 1, 2000) in decode_payload(bytes(out3))
    for owner, token in deliveries:
        owner.on_lost(token)
    assert client.has_control()


def test_max_streams_frame_raises_the_local_limit() -> None:
    client, _ = pair(server=StreamLimits(max_streams_bidi=1))
    client.open_stream()
    assert not client.can_open()
    client.handle_frame(MaxStreams(True, 3))
    client.handle_frame(MaxStreams(True, 2))  # limits never shrink
    assert client.open_stream() == 4 and client.open_stream() == 8
    assert not client.can_open()


def test_urgency_and_send_buffer_space() -> None:
    client, _ = pair(client=StreamLimits(send_buffer=1000))
    sid = client.open_stream(urgency=0)
    assert client.scheduler.urgency(sid) == 0
    client.set_urgency(sid, 5)
    assert client.scheduler.urgency(sid) == 5
    client.write(sid, bytes(600))
    assert client.send_buffer_space(sid) == 400
