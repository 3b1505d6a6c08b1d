"""The sans-IO MXP connection: handshake, protected packets, datagrams, timers and close.

A driver feeds it datagrams (``receive_datagram``), sends what ``datagrams_to_send`` returns,
sleeps until ``get_timer()`` and then calls ``handle_timer``, and reads ``next_event()``. Time
is always an argument. Clients are built with :meth:`Connection.connect`; server connections
are created by :class:`intentus_trio.mxp.endpoint.ServerEndpoint` after a valid first message.

Handshake (Noise IK, two messages): the client's INITIAL carries message 1 and is resent with
backoff until the server's HANDSHAKE (message 2) arrives; the server resends message 2 until the
client's first protected packet proves the client holds the session keys, which also validates
the client's address and lifts the 3x anti-amplification limit.

Once established, protected packets are built and received by the reliability layers (see
docs/mxp-reliability.md): an ``AckTracker`` and ``LossRecovery`` with a congestion controller
and pacer, a ``StreamManager`` for reliable streams, and a ``PacketAssembler`` that fills each
packet. The connection itself contributes DATAGRAM and PING frames as a control source and
learns through a delivery record when the peer confirmed a new key phase.
"""

from __future__ import annotations

import collections
import enum
import hmac
import math
import os
from collections.abc import Callable
from typing import Any

import attrs

from intentus_trio.mxp.config import Address, Configuration
from intentus_trio.mxp.congestion import make_controller
from intentus_trio.mxp.events import (
    ConnectionClosed,
    DatagramReceived,
    ErrorCode,
    Event,
    HandshakeCompleted,
    KeyUpdated,
)
from intentus_trio.mxp.flow import FlowControlError
from intentus_trio.mxp.frames import (
    Ack,
    Close,
    Datagram,
    Frame,
    FrameError,
    Padding,
    Ping,
    datagram_overhead,
    encode_frame,
)
from intentus_trio.mxp.keyupdate import OneRttKeys
from intentus_trio.mxp.noise import HandshakeState, NoiseError
from intentus_trio.mxp.pacing import Pacer
from intentus_trio.mxp.packet import (
    CID_LEN,
    LONG_HEADER_LEN,
    MIN_INITIAL_DATAGRAM,
    SHORT_PN_OFFSET,
    VERSION,
    PacketType,
    encode_long_packet,
    encode_packet_number,
    is_long_header,
    parse_long_packet,
)
from intentus_trio.mxp.params import (
    ParamsError,
    TransportParameters,
    decode_handshake_payload,
    encode_handshake_payload,
)
from intentus_trio.mxp.protection import TAG_LEN
from intentus_trio.mxp.recovery import AckError, AckTracker, Delivery, LossRecovery
from intentus_trio.mxp.scheduler import PacketAssembler
from intentus_trio.mxp.stats import Drop, PathStats, Stats
from intentus_trio.mxp.stream_frames import STREAM_FRAME_CLASSES, StreamFrame, decode_payload
from intentus_trio.mxp.streams import StreamLimits, StreamManager
from intentus_trio.mxp.tokens import retry_integrity_tag
from intentus_trio.mxp.varint import DecodeError, encode_varint
from intentus_trio.protocol._fastnew import fast_constructor

# one event per datagram received: positional, without the frozen-attrs __init__
_new_datagram_received = fast_constructor(DatagramReceived)
AMPLIFICATION_FACTOR = 3
_NOISE_MSG1_OVERHEAD = 32 + 48 + 16
_MAX_CLOSE_REPEATS = 3
_DATAGRAM_TYPE = 0x04
_PING_TYPE = 0x01
# the timer answer when the assembler claims work it then does not build (never expected)
_SEND_RETRY_DELAY = 0.001
# how late a timer may fire (trio's epoll wait rounds up to milliseconds): the pacer's bucket
# holds at least this much time's worth of sending
PACING_GRANULARITY = 0.002


class State(enum.Enum):
    CLIENT_INITIAL = "client_initial"
    SERVER_UNCONFIRMED = "server_unconfirmed"
    ESTABLISHED = "established"
    CLOSING = "closing"
    DRAINING = "draining"
    CLOSED = "closed"


class DatagramTooLarge(ValueError):
    """The datagram does not fit the size the peer (or our packet size) allows."""


@attrs.frozen
class AcceptedInitial:
    """What a server learned from a client's INITIAL whose message 1 authenticated."""

    address: Address
    client_cid: bytes
    message1: bytes
    handshake: HandshakeState
    params: TransportParameters
    original_dcid: bytes
    retry_scid: bytes | None
    address_validated: bool
    datagram_size: int


class Connection:
    """One MXP connection in either role. Do not construct directly: use :meth:`connect`
    (client) or let a :class:`ServerEndpoint` accept one."""

    def __init__(
        self,
        configuration: Configuration,
        *,
        is_client: bool,
        peer_address: Address,
        scid: bytes,
        dcid: bytes,
        handshake: HandshakeState,
        now: float,
        stats: Stats | None = None,
    ) -> None:
        self.configuration = configuration
        self.is_client = is_client
        self.peer_address = peer_address
        self.host_cid = scid
        self.peer_cid = dcid
        self.stats = stats if stats is not None else Stats()
        self.state = State.CLIENT_INITIAL if is_client else State.SERVER_UNCONFIRMED
        self.remote_static: bytes | None = None
        self.peer_params: TransportParameters | None = None
        self.address_validated = is_client
        self.bytes_received_unvalidated = 0
        self.bytes_sent_unvalidated = 0
        self.close_reason: ConnectionClosed | None = None
        self._hs = handshake
        self._keys: OneRttKeys | None = None
        self._events: collections.deque[Event] = collections.deque()
        self._created = now
        self._handshake_deadline = now + configuration.handshake_timeout
        self._rto = configuration.handshake_initial_rto
        self._retransmit_at: float | None = None
        self._handshake_packet: bytes | None = None
        self._send_handshake_packet = False
        self._handshake_auth_failures = 0
        # client-side handshake bookkeeping
        self._original_dcid = dcid
        self._retry_scid: bytes | None = None
        self._token = b""
        self._accepted_response: bytes | None = None
        self._hs_message1 = b""
        self._message1 = b""
        self._heard_protected = False
        # 1-RTT state; the reliability layers are built when the handshake completes
        self._next_pn = 0
        self._ping_pending = False
        self._datagrams: collections.deque[bytes] = collections.deque()
        self._key_phase_confirmed = False
        self._packets_in_generation = 0
        self._last_received = now
        self._last_activity = now
        self._last_ping_sent = now
        self._recovery: LossRecovery | None = None
        self._acks: AckTracker | None = None
        self._streams: StreamManager | None = None
        self._assembler: PacketAssembler | None = None
        self._send_at: float | None = None
        self._key_phase_delivery = _KeyPhaseConfirmation(self)
        self._close_frame: Close | None = None
        self._close_pending = False
        self._close_repeats = 0
        self._close_end: float | None = None
        self._max_datagram_cache: tuple[TransportParameters | None, int] | None = None
        self._idle = configuration.idle_timeout
        self._payload_room = 0

    # ------------------------------------------------------------------ construction

    @classmethod
    def connect(
        cls,
        configuration: Configuration,
        server_static: bytes,
        address: Address,
        now: float,
        *,
        random: Callable[[int], bytes] = os.urandom,
    ) -> Connection:
        """Start a client connection; the first ``datagrams_to_send`` holds the INITIAL."""
        hs = HandshakeState.initiator_ik(
            configuration.static_key, server_static, configuration.prologue
        )
        conn = cls(
            configuration,
            is_client=True,
            peer_address=address,
            scid=random(CID_LEN),
            dcid=random(CID_LEN),
            handshake=hs,
            now=now,
        )
        conn.remote_static = server_static
        conn._start_client(now)
        return conn

    def _local_params(self, **extra: object) -> TransportParameters:
        cfg = self.configuration
        return TransportParameters(
            initial_scid=self.host_cid,
            idle_timeout=cfg.idle_timeout,
            max_datagram_frame_size=cfg.max_datagram_frame_size,
            max_packet_size=cfg.max_packet_size,
            max_ack_delay=cfg.max_ack_delay,
            initial_max_data=cfg.max_data,
            initial_max_stream_data=cfg.max_stream_data,
            initial_max_streams_bidi=cfg.max_streams_bidi,
            initial_max_streams_uni=cfg.max_streams_uni,
            **extra,  # type: ignore[arg-type]
        )

    def _start_client(self, now: float) -> None:
        room = MIN_INITIAL_DATAGRAM - LONG_HEADER_LEN - 1 - _NOISE_MSG1_OVERHEAD
        params = self._local_params(original_dcid=self._original_dcid)
        payload = encode_handshake_payload(params, pad_to=room)
        self._message1 = self._hs.write_message(payload)
        self._build_initial()
        self._retransmit_at = now + self._rto
        self._send_handshake_packet = True

    def _build_initial(self) -> None:
        self._handshake_packet = encode_long_packet(
            PacketType.INITIAL,
            self.peer_cid,
            self.host_cid,
            self._message1,
            token=self._token,
        )

    @classmethod
    def accept(
        cls,
        configuration: Configuration,
        initial: AcceptedInitial,
        scid: bytes,
        now: float,
        *,
        reject: tuple[int, str] | None = None,
        stats: Stats | None = None,
    ) -> Connection:
        """A server connection for an INITIAL whose Noise message 1 already authenticated
        (see ``ServerEndpoint``); it answers with message 2, or with a rejection."""
        conn = cls(
            configuration,
            is_client=False,
            peer_address=initial.address,
            scid=scid,
            dcid=initial.client_cid,
            handshake=initial.handshake,
            now=now,
            stats=stats,
        )
        conn.address_validated = initial.address_validated
        if not initial.address_validated:
            conn.bytes_received_unvalidated = initial.datagram_size
        conn._answer_initial(initial, reject, now)
        return conn

    def _answer_initial(
        self, initial: AcceptedInitial, reject: tuple[int, str] | None, now: float
    ) -> None:
        self._hs_message1 = initial.message1
        self.remote_static = self._hs.remote_static
        self.peer_params = initial.params
        extra: dict[str, object] = {
            "original_dcid": initial.original_dcid,
            "retry_scid": initial.retry_scid,
        }
        if reject is not None:
            extra["reject_code"], extra["reject_reason"] = reject
        payload = encode_handshake_payload(self._local_params(**extra))
        message2 = self._hs.write_message(payload)
        self._handshake_packet = encode_long_packet(
            PacketType.HANDSHAKE, self.peer_cid, self.host_cid, message2
        )
        self._send_handshake_packet = True
        if reject is not None:
            self._close_silently(now, reject[0], reject[1], by_peer=False)
            # keep the rejection around briefly so a lost one can be resent on retransmission
            self.state = State.CLOSING
            self._close_end = now + self.configuration.handshake_initial_rto * 4
            return
        to_responder, to_initiator = self._hs.split()
        assert to_responder.k is not None and to_initiator.k is not None
        self._keys = OneRttKeys(
            to_initiator.k,
            to_responder.k,
            discard_delay=self.configuration.key_discard_delay,
            replay_window=self.configuration.replay_window,
        )
        self._retransmit_at = now + self._rto

    # ------------------------------------------------------------------ public API

    @property
    def is_established(self) -> bool:
        return self.state is State.ESTABLISHED

    @property
    def is_closed(self) -> bool:
        return self.state is State.CLOSED

    @property
    def is_half_open(self) -> bool:
        return self.state is State.SERVER_UNCONFIRMED

    @property
    def key_generation(self) -> int:
        return self._keys.send_generation if self._keys is not None else 0

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    @property
    def streams(self) -> StreamManager | None:
        """The stream manager (None until the handshake completes): open, write, read, reset.
        After calling into it, call ``datagrams_to_send`` as after any input."""
        return self._streams

    def path_stats(self) -> PathStats:
        """RTT, congestion window and loss-recovery counters (zeros before the handshake)."""
        recovery = self._recovery
        if recovery is None:
            return PathStats()
        rtt = recovery.rtt
        cc = recovery.cc
        pacer = self._assembler.pacer if self._assembler is not None else None
        acks = self._acks
        streams = self._streams
        return PathStats(
            smoothed_rtt=rtt.smoothed_rtt,
            min_rtt=rtt.min_rtt,
            rttvar=rtt.rttvar,
            latest_rtt=rtt.latest_rtt,
            cwnd=cc.cwnd,
            ssthresh=cc.ssthresh,
            bytes_in_flight=cc.bytes_in_flight,
            congestion_events=cc.congestion_events,
            pacing_rate=pacer.rate if pacer is not None else math.inf,
            packets_sent=recovery.stats.packets_sent,
            packets_acked=recovery.stats.packets_acked,
            packets_lost=recovery.stats.packets_lost,
            spurious_losses=recovery.stats.spurious_losses,
            ptos=recovery.stats.ptos,
            persistent_congestion=recovery.stats.persistent_congestion,
            packet_threshold=recovery.packet_threshold,
            acks_sent=acks.acks_sent if acks is not None else 0,
            open_streams=len(streams) if streams is not None else 0,
        )

    def max_datagram_size(self) -> int:
        """The largest payload ``send_datagram`` accepts now: what fits in one packet and, once
        known, what the peer accepts (its ``max_datagram_frame_size``)."""
        params = self.peer_params
        cached = self._max_datagram_cache
        if cached is not None and cached[0] is params:
            return cached[1]
        room = self._packet_size() - SHORT_PN_OFFSET - 4 - TAG_LEN
        fit = room - datagram_overhead(room)
        if params is not None:
            fit = max(0, min(fit, params.max_datagram_frame_size))
        # only peer_params can change the answer (the configuration is frozen)
        self._max_datagram_cache = (params, fit)
        return fit

    def send_datagram(self, data: bytes) -> None:
        """Queue an unreliable datagram; the oldest queued one is dropped if the queue is full."""
        if self.state in (State.CLOSING, State.DRAINING, State.CLOSED):
            raise RuntimeError("connection is closed")
        limit = self.max_datagram_size()
        if len(data) > limit:
            raise DatagramTooLarge(f"{len(data)} > {limit} bytes")
        if len(self._datagrams) >= self.configuration.max_pending_datagrams:
            self._datagrams.popleft()
            self.stats.drop(Drop.QUEUE_FULL)
        self._datagrams.append(bytes(data))

    def ping(self) -> None:
        self._ping_pending = True

    def request_key_update(self) -> bool:
        """Start a key update if allowed (previous one confirmed); True if started."""
        if (
            self.state is not State.ESTABLISHED
            or self._keys is None
            or not self._key_phase_confirmed
            or not self._keys.can_initiate_update()
        ):
            return False
        self._keys.initiate_update()
        self._on_send_generation_changed()
        return True

    def close(self, now: float, error_code: int = ErrorCode.NO_ERROR, reason: str = "") -> None:
        """Close with a reason sent to the peer (if keys exist); emits ConnectionClosed."""
        if self.state in (State.CLOSING, State.DRAINING, State.CLOSED):
            return
        if self._keys is None or self.state is State.CLIENT_INITIAL:
            self._close_silently(now, error_code, reason, by_peer=False)
            return
        self._close_frame = Close(error_code, reason)
        self._close_pending = True
        self._record_close(error_code, reason, by_peer=False)
        self.state = State.CLOSING
        self._close_end = now + 3 * self._pto()
        self._discard_in_flight()

    # ------------------------------------------------------------------ receive

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        self.stats.datagrams_received += 1
        self.stats.bytes_received += len(data)
        if not self.address_validated and addr == self.peer_address:
            self.bytes_received_unvalidated += len(data)
        if self.state in (State.CLOSED, State.DRAINING):
            self.stats.drop(Drop.CLOSED)
            return
        if not data:
            self.stats.drop(Drop.MALFORMED)
            return
        if is_long_header(data):
            self._receive_long(data, now)
        else:
            self._receive_short(data, now)

    def _receive_long(self, data: bytes, now: float) -> None:
        try:
            packet = parse_long_packet(data)
        except DecodeError:
            self.stats.drop(Drop.MALFORMED)
            return
        if packet.version != VERSION:
            self.stats.drop(Drop.BAD_VERSION)
            return
        if packet.dcid != self.host_cid and not (
            not self.is_client and packet.packet_type is PacketType.INITIAL
        ):
            self.stats.drop(Drop.UNKNOWN_CID)
            return
        if self.is_client:
            if packet.packet_type is PacketType.HANDSHAKE:
                self._client_on_handshake(data, packet.scid, packet.body, now)
            elif packet.packet_type is PacketType.RETRY:
                self._client_on_retry(data, packet.scid, packet.token, now)
            else:
                self.stats.drop(Drop.UNEXPECTED)
            return
        # server: a repeated INITIAL means our message 2 may have been lost
        if (
            packet.packet_type is PacketType.INITIAL
            and self.state in (State.SERVER_UNCONFIRMED, State.CLOSING)
            and self._handshake_packet is not None
            and packet.body == self._hs_message1
        ):
            self.stats.drop(Drop.DUPLICATE_HANDSHAKE)
            self._send_handshake_packet = True
            return
        self.stats.drop(Drop.UNEXPECTED)

    def _client_on_retry(self, data: bytes, scid: bytes, token: bytes, now: float) -> None:
        if self.state is not State.CLIENT_INITIAL or self._retry_scid is not None or not token:
            self.stats.drop(Drop.UNEXPECTED)
            return
        assert self.remote_static is not None
        tag = retry_integrity_tag(self.remote_static, self._original_dcid, data[:-16])
        if not hmac.compare_digest(tag, data[-16:]):
            self.stats.drop(Drop.AUTH)
            return
        self._retry_scid = scid
        self.peer_cid = scid
        self._token = token
        self._build_initial()
        self._send_handshake_packet = True

    def _client_on_handshake(self, data: bytes, scid: bytes, body: bytes, now: float) -> None:
        if self.state is not State.CLIENT_INITIAL:
            if data == self._accepted_response and self.state is State.ESTABLISHED:
                # Until the server sends protected packets it may not know we have the keys
                # (our first packet was lost): prove it again.
                self.stats.drop(Drop.DUPLICATE_HANDSHAKE)
                if not self._heard_protected:
                    self._ping_pending = True
            else:
                self.stats.drop(Drop.UNEXPECTED)
            return
        trial = self._hs.fork()
        try:
            payload = trial.read_message(body)
            params = decode_handshake_payload(payload)
        except (NoiseError, ParamsError):
            # a forgery, corruption or a server without the expected key; keep waiting
            self._handshake_auth_failures += 1
            self.stats.drop(Drop.AUTH)
            return
        if params.reject_code is not None:
            self._hs = trial
            self._close_silently(
                now,
                params.reject_code,
                f"server rejected the connection: {params.reject_reason}",
                by_peer=True,
            )
            return
        if (
            params.initial_scid != scid
            or params.original_dcid != self._original_dcid
            or params.retry_scid != self._retry_scid
        ):
            # authentic message, rewritten header: treat the packet as a forgery
            self._handshake_auth_failures += 1
            self.stats.drop(Drop.AUTH)
            return
        self._hs = trial
        self._accepted_response = data
        self.peer_params = params
        self.peer_cid = scid
        to_responder, to_initiator = self._hs.split()
        assert to_responder.k is not None and to_initiator.k is not None
        self._keys = OneRttKeys(
            to_responder.k,
            to_initiator.k,
            discard_delay=self.configuration.key_discard_delay,
            replay_window=self.configuration.replay_window,
        )
        self._handshake_packet = None
        self._send_handshake_packet = False
        self._retransmit_at = None
        self._established(now, now - self._created)
        self._ping_pending = True

    def _established(self, now: float, handshake_rtt: float) -> None:
        # both depend only on the configuration and the peer's parameters, now final; the
        # established paths (once per packet or timer) read them from here
        self._idle = self._idle_timeout()
        self._payload_room = self._packet_size() - SHORT_PN_OFFSET - TAG_LEN
        self.state = State.ESTABLISHED
        self._last_received = now
        self._last_activity = now
        self._build_reliability(now, handshake_rtt)
        self.stats.handshakes_completed += 1
        assert self.remote_static is not None
        self._events.append(HandshakeCompleted(self.host_cid, self.remote_static))

    def _build_reliability(self, now: float, handshake_rtt: float) -> None:
        """Loss recovery, congestion control, pacing, ACKs and streams for 1-RTT packets, from
        our configuration and the peer's transport parameters."""
        cfg = self.configuration
        peer = self.peer_params
        assert peer is not None
        size = self._packet_size()
        recovery = LossRecovery(
            make_controller(cfg.congestion_control, size), max_ack_delay=peer.max_ack_delay
        )
        # the handshake round trip is the first sample (it may include a retransmission)
        recovery.rtt.update(handshake_rtt, 0.0, peer.max_ack_delay, now)
        acks = AckTracker(
            max_ack_delay=cfg.max_ack_delay, ack_eliciting_threshold=cfg.ack_eliciting_threshold
        )
        local = StreamLimits(
            max_data=cfg.max_data,
            max_data_window=cfg.max_data_window,
            max_stream_data=cfg.max_stream_data,
            max_stream_window=cfg.max_stream_window,
            max_streams_bidi=cfg.max_streams_bidi,
            max_streams_uni=cfg.max_streams_uni,
            send_buffer=cfg.stream_send_buffer,
        )
        granted = StreamLimits(
            max_data=peer.initial_max_data,
            max_stream_data=peer.initial_max_stream_data,
            max_streams_bidi=peer.initial_max_streams_bidi,
            max_streams_uni=peer.initial_max_streams_uni,
        )
        streams = StreamManager(
            is_client=self.is_client, local=local, peer=granted, rtt=recovery.rtt
        )
        self._recovery = recovery
        self._acks = acks
        self._streams = streams
        self._assembler = PacketAssembler(
            streams,
            acks,
            recovery,
            Pacer(size, granularity=PACING_GRANULARITY) if cfg.pacing else None,
            control_sources=[_ConnectionFrames(self)],
        )

    def _receive_short(self, data: bytes, now: float) -> None:
        keys = self._keys
        if keys is None:
            self.stats.drop(Drop.NO_KEYS)
            return
        if data[1 : 1 + CID_LEN] != self.host_cid:
            self.stats.drop(Drop.UNKNOWN_CID)
            return
        generation = keys.send_generation
        opened = keys.unprotect(data, now)
        if isinstance(opened, str):
            self.stats.drop(opened)
            return
        if keys.send_generation != generation:
            self._on_send_generation_changed()
            self._events.append(KeyUpdated(self.host_cid, keys.send_generation))
        self._last_received = now
        self._last_activity = now
        self._heard_protected = True
        if self.state is State.SERVER_UNCONFIRMED:
            self.address_validated = True
            self._handshake_packet = None
            self._send_handshake_packet = False
            self._retransmit_at = None
            self._established(now, now - self._created)
        try:
            frames = decode_payload(opened.payload)
        except FrameError as exc:
            self.close(now, ErrorCode.FRAME_ENCODING_ERROR, str(exc))
            return
        if self.state is State.CLOSING:
            for frame in frames:
                if type(frame) is Close:
                    self._on_peer_close(frame, now)
                    return
            if self._close_repeats < _MAX_CLOSE_REPEATS:
                self._close_repeats += 1
                self._close_pending = True
            return
        streams = self._streams
        recovery = self._recovery
        acks = self._acks
        assert streams is not None and recovery is not None and acks is not None
        ack_eliciting = False
        try:
            for frame in frames:
                kind = type(frame)
                if kind is StreamFrame:
                    ack_eliciting = True
                    streams.handle_frame(frame, now)  # type: ignore[arg-type]
                elif kind is Ack:
                    ack = frame
                    assert isinstance(ack, Ack)
                    recovery.on_ack_received(ack.ranges, ack.delay / 1e6, now)
                elif kind is Datagram:
                    ack_eliciting = True
                    assert isinstance(frame, Datagram)
                    if len(frame.data) > self.configuration.max_datagram_frame_size:
                        self.close(now, ErrorCode.PROTOCOL_VIOLATION, "datagram frame too large")
                        return
                    self._events.append(_new_datagram_received(self.host_cid, frame.data))
                elif kind is Ping:
                    ack_eliciting = True
                elif kind is Close:
                    assert isinstance(frame, Close)
                    self._on_peer_close(frame, now)
                    return
                elif kind is not Padding:
                    assert isinstance(frame, STREAM_FRAME_CLASSES)
                    ack_eliciting = True
                    streams.handle_frame(frame, now)
        except AckError as exc:
            self.close(now, ErrorCode.PROTOCOL_VIOLATION, str(exc))
            return
        except FlowControlError as exc:
            self.close(now, exc.code, str(exc))
            return
        acks.on_packet_received(opened.pn, ack_eliciting, now)
        events = self._events
        while (event := streams.next_event()) is not None:
            events.append(event)

    def _on_peer_close(self, frame: Close, now: float) -> None:
        self._record_close(frame.error_code, frame.reason, by_peer=True)
        self.state = State.DRAINING
        self._close_end = now + 3 * self._pto()
        self._discard_in_flight()

    def _discard_in_flight(self) -> None:
        if self._recovery is not None:
            self._recovery.discard_all()
        self._send_at = None

    def _on_send_generation_changed(self) -> None:
        self._key_phase_confirmed = False
        self._packets_in_generation = 0
        # an ack-eliciting packet in the new phase lets the peer's ACK confirm it
        self._ping_pending = True

    # ------------------------------------------------------------------ send

    def _packet_size(self) -> int:
        limit = self.configuration.max_packet_size
        if self.peer_params is not None:
            limit = min(limit, self.peer_params.max_packet_size)
        return limit

    def _may_send(self, size: int) -> bool:
        if self.address_validated:
            return True
        budget = AMPLIFICATION_FACTOR * self.bytes_received_unvalidated
        return self.bytes_sent_unvalidated + size <= budget

    def _count_sent(self, size: int) -> None:
        self.stats.datagrams_sent += 1
        self.stats.bytes_sent += size
        if not self.address_validated:
            self.bytes_sent_unvalidated += size

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        state = self.state
        if state is State.ESTABLISHED and not self._send_handshake_packet:
            return self._send_protected(now)  # the only case on an established connection
        out: list[tuple[bytes, Address]] = []
        if state in (State.CLOSED, State.DRAINING):
            return out
        if self._send_handshake_packet and self._handshake_packet is not None:
            self._send_handshake_packet = False
            hs_packet = self._handshake_packet
            if self._may_send(len(hs_packet)):
                self._count_sent(len(hs_packet))
                out.append((hs_packet, self.peer_address))
            else:
                self.stats.drop(Drop.AMPLIFICATION_LIMIT)
        if self._keys is None or state in (State.SERVER_UNCONFIRMED, State.CLIENT_INITIAL):
            return out
        if state is State.CLOSING:
            if self._close_pending and self._close_frame is not None:
                packet = self._build_packet([self._close_frame])
                self._close_pending = False
                if packet is not None:
                    out.append((packet, self.peer_address))
            return out
        out += self._send_protected(now)
        return out

    def _maybe_auto_key_update(self) -> None:
        limit = self.configuration.key_update_after_packets
        if limit is not None and self._packets_in_generation >= limit:
            self.request_key_update()

    def _send_protected(self, now: float) -> list[tuple[bytes, Address]]:
        """Every 1-RTT packet the assembler lets go now (ACKs, control, datagrams, stream data
        within the congestion window and pacing), then the time the next one may go."""
        assembler = self._assembler
        keys = self._keys
        assert assembler is not None and keys is not None
        if self.configuration.key_update_after_packets is not None:
            self._maybe_auto_key_update()
        out: list[tuple[bytes, Address]] = []
        recovery = assembler.recovery
        base = self._payload_room
        peer_cid = self.peer_cid
        address = self.peer_address
        stats = self.stats
        build = assembler.build
        while True:
            pn = self._next_pn
            truncated, pn_len = encode_packet_number(pn, recovery.largest_acked)
            packet = build(now, base - pn_len)
            if packet is None:
                break
            if not self._key_phase_confirmed:
                packet.deliveries.append((self._key_phase_delivery, keys.send_generation))
            datagram = keys.protect(peer_cid, pn, truncated, pn_len, bytes(packet.payload))
            self._next_pn = pn + 1
            self._packets_in_generation += 1
            if packet.ack_eliciting:
                self._last_activity = now
            size = len(datagram)
            assembler.on_packet_sent(packet, pn, size, now)
            stats.datagrams_sent += 1
            stats.bytes_sent += size
            out.append((datagram, address))
        send_at = assembler.next_send_time(now)
        if send_at is not None and send_at <= now:
            send_at = now + _SEND_RETRY_DELAY
        self._send_at = send_at
        return out

    def _build_packet(self, frames: list[Frame]) -> bytes | None:
        """A packet outside the reliability layers (the CLOSE frame)."""
        assert self._keys is not None
        payload = b"".join([encode_frame(f) for f in frames])
        pn = self._next_pn
        largest = self._recovery.largest_acked if self._recovery is not None else None
        truncated, pn_len = encode_packet_number(pn, largest)
        packet = self._keys.protect(self.peer_cid, pn, truncated, pn_len, payload)
        if not self.address_validated and not self._may_send(len(packet)):
            self.stats.drop(Drop.AMPLIFICATION_LIMIT)
            return None
        self._next_pn = pn + 1
        self._count_sent(len(packet))
        return packet

    # ------------------------------------------------------------------ timers

    def _idle_timeout(self) -> float:
        local = self.configuration.idle_timeout
        if self.peer_params is not None and self.peer_params.idle_timeout > 0:
            return min(local, self.peer_params.idle_timeout) if local > 0 else local
        return local

    def _pto(self) -> float:
        recovery = self._recovery
        if recovery is None:
            return self.configuration.handshake_initial_rto
        return recovery.rtt.pto_period(recovery.max_ack_delay)

    def ack_due(self, now: float) -> bool:
        """Whether an ACK for ack-eliciting packets received must go by ``now``."""
        acks = self._acks
        return acks is not None and acks.deadline is not None and acks.deadline <= now

    def get_timer(self) -> float | None:
        state = self.state
        if state is State.ESTABLISHED:
            # once per input on a busy connection: no lists, no generators
            timer = math.inf
            idle = self._idle
            if idle > 0:
                timer = self._last_activity + idle
            acks = self._acks
            assert acks is not None and self._recovery is not None
            ack_at = acks.deadline
            if ack_at is not None and ack_at < timer:
                timer = ack_at
            loss_at = self._recovery.deadline()
            if loss_at is not None and loss_at < timer:
                timer = loss_at
            send_at = self._send_at
            if send_at is not None and send_at < timer:
                timer = send_at
            interval = self.configuration.keepalive_interval
            if interval is not None:
                last = self._last_received
                if self._last_ping_sent > last:
                    last = self._last_ping_sent
                if last + interval < timer:
                    timer = last + interval
            keys = self._keys
            if keys is not None:
                discard = keys.previous_keys_discard_at
                if discard is not None and discard < timer:
                    timer = discard
            return None if timer == math.inf else timer
        if state is State.CLOSED:
            return None
        if state in (State.CLOSING, State.DRAINING):
            return self._close_end
        # CLIENT_INITIAL, SERVER_UNCONFIRMED
        if self._retransmit_at is not None and self._retransmit_at < self._handshake_deadline:
            return self._retransmit_at
        return self._handshake_deadline

    def handle_timer(self, now: float) -> None:
        if self.state is State.CLOSED:
            return
        if self.state in (State.CLOSING, State.DRAINING):
            if self._close_end is not None and now >= self._close_end:
                self.state = State.CLOSED
            return
        if self.state in (State.CLIENT_INITIAL, State.SERVER_UNCONFIRMED):
            if now >= self._handshake_deadline:
                self._handshake_timed_out(now)
                return
            if self._retransmit_at is not None and now >= self._retransmit_at:
                self._send_handshake_packet = True
                self._retransmit_at = now + self._rto
                self._rto = min(self._rto * 2, self.configuration.handshake_max_rto)
            return
        idle = self._idle
        if idle > 0 and now >= self._last_activity + idle:
            self._close_silently(now, ErrorCode.IDLE_TIMEOUT, "idle timeout", by_peer=False)
            return
        recovery = self._recovery
        if recovery is not None:
            deadline = recovery.deadline()
            if deadline is not None and now >= deadline:
                recovery.on_timeout(now)
        interval = self.configuration.keepalive_interval
        if (
            interval is not None
            and now >= max(self._last_received, self._last_ping_sent) + interval
        ):
            self._ping_pending = True
            self._last_ping_sent = now
        if self._keys is not None:
            self._keys.discard_expired(now)

    def _handshake_timed_out(self, now: float) -> None:
        if self.is_client and self._handshake_auth_failures:
            code = ErrorCode.AUTHENTICATION_FAILED
            reason = (
                f"{self._handshake_auth_failures} handshake response(s) failed authentication:"
                " the server did not prove the expected static key (wrong key or tampering)"
            )
        elif self.is_client:
            code = ErrorCode.HANDSHAKE_TIMEOUT
            reason = (
                "no valid handshake response: server unreachable, or it does not hold the"
                " expected static key"
            )
        else:
            code = ErrorCode.HANDSHAKE_TIMEOUT
            reason = "client never confirmed the handshake"
        self._close_silently(now, code, reason, by_peer=False)

    def _record_close(self, error_code: int, reason: str, *, by_peer: bool) -> None:
        if self.close_reason is None:
            self.close_reason = ConnectionClosed(self.host_cid, error_code, reason, by_peer)
            self._events.append(self.close_reason)

    def _close_silently(self, now: float, error_code: int, reason: str, *, by_peer: bool) -> None:
        self._record_close(error_code, reason, by_peer=by_peer)
        self.state = State.CLOSED
        self._datagrams.clear()
        self._discard_in_flight()


class _KeyPhaseConfirmation:
    """A delivery record riding on packets sent before the peer confirmed our key phase: an
    acknowledged packet of the current send generation proves the peer has the new keys."""

    __slots__ = ("_conn",)

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def on_acked(self, token: Any) -> None:
        conn = self._conn
        if conn._keys is not None and token == conn._keys.send_generation:
            conn._key_phase_confirmed = True

    def on_lost(self, token: Any) -> None:
        """Nothing to resend: any later packet of the generation can confirm it."""


class _ConnectionFrames:
    """The connection's own frames for the assembler: unreliable DATAGRAMs (no delivery
    record: they are never retransmitted) and PING."""

    __slots__ = ("_conn",)

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def has_control(self) -> bool:
        conn = self._conn
        return bool(conn._datagrams) or conn._ping_pending

    def write_control(
        self, out: bytearray, limit: int, now: float, deliveries: list[tuple[Delivery, Any]]
    ) -> bool:
        conn = self._conn
        datagrams = conn._datagrams
        wrote = False
        if datagrams:
            largest = conn.max_datagram_size()
            while datagrams:
                data = datagrams[0]
                size = len(data)
                head = encode_varint(size)
                need = 1 + len(head) + size
                if size > largest or need > limit - len(out):
                    if size > largest or not out:
                        # queued before the peer's (smaller) limit was known: drop it
                        datagrams.popleft()
                        conn.stats.drop(Drop.QUEUE_FULL)
                        continue
                    break
                datagrams.popleft()
                out.append(_DATAGRAM_TYPE)
                out += head
                out += data
                wrote = True
        if conn._ping_pending and len(out) < limit:
            out.append(_PING_TYPE)
            conn._ping_pending = False
            wrote = True
        return wrote
