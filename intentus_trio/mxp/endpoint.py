"""The server side of MXP, sans-IO: routes datagrams by connection id and admits new clients.

Admission runs cheapest check first and creates per-client state only after the client's
Noise message authenticates: size and version checks, the half-open cap, retry tokens
(stateless; always, or once more than ``retry_when_half_open_above`` handshakes are pending),
a cache of recently seen client ephemeral keys (replayed INITIALs), then the Noise read and the
client-key policy. Everything refused is counted in :attr:`ServerEndpoint.stats`, which the
server connections share, so one object holds the whole server's counters.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Callable, Iterator

from intentus_trio.mxp.config import Address, ServerConfiguration
from intentus_trio.mxp.connection import AcceptedInitial, Connection
from intentus_trio.mxp.events import ErrorCode, Event
from intentus_trio.mxp.noise import DHLEN, HandshakeState, NoiseError
from intentus_trio.mxp.packet import (
    CID_LEN,
    MIN_INITIAL_DATAGRAM,
    RETRY_TAG_LEN,
    VERSION,
    LongPacket,
    PacketType,
    encode_long_packet,
    is_long_header,
    parse_long_packet,
)
from intentus_trio.mxp.params import ParamsError, decode_handshake_payload
from intentus_trio.mxp.stats import Drop, Stats
from intentus_trio.mxp.tokens import RetryTokens, retry_integrity_tag
from intentus_trio.mxp.varint import DecodeError


class ServerEndpoint:
    def __init__(
        self, configuration: ServerConfiguration, *, random: Callable[[int], bytes] = os.urandom
    ) -> None:
        self.configuration = configuration
        self.stats = Stats()
        self._random = random
        self._tokens = RetryTokens(configuration.token_secret, configuration.token_lifetime)
        self._connections: dict[bytes, Connection] = {}
        self._by_initial_dcid: dict[bytes, Connection] = {}
        self._seen_ephemerals: collections.OrderedDict[bytes, None] = collections.OrderedDict()
        self._outgoing: list[tuple[bytes, Address]] = []
        self._events: collections.deque[Event] = collections.deque()

    # ------------------------------------------------------------------ queries

    @property
    def connections(self) -> dict[bytes, Connection]:
        return dict(self._connections)

    def half_open_count(self) -> int:
        return sum(1 for c in self._connections.values() if c.is_half_open)

    def __iter__(self) -> Iterator[Connection]:
        return iter(list(self._connections.values()))

    # ------------------------------------------------------------------ sans-IO API

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        conn = self._route(data)
        if conn is not None:
            conn.receive_datagram(data, addr, now)
            self._collect(conn)
            return
        self.admit(data, addr, now)

    # ------------------------------------------------------------------ driver API
    # A trio driver runs each connection in its own tasks: it routes with ``route``, hands
    # unroutable datagrams to ``admit``, sends ``take_stateless_datagrams`` (retries) itself
    # and calls ``forget`` once a connection it drives has closed.

    def route(self, data: bytes) -> Connection | None:
        """The connection a datagram belongs to (by destination connection id), if any."""
        return self._route(data)

    def admit(self, data: bytes, addr: Address, now: float) -> Connection | None:
        """Handle a datagram no connection claims; return the connection it created, if any.

        The new connection's own events stay with it (not in this endpoint's queue), except
        for a rejection, which closes it at once."""
        before = len(self._connections)
        self._admit(data, addr, now)
        if len(self._connections) == before:
            return None
        return next(reversed(self._connections.values()))

    def take_stateless_datagrams(self) -> list[tuple[bytes, Address]]:
        """Datagrams the endpoint itself must send (retries), not owned by any connection."""
        out, self._outgoing = self._outgoing, []
        return out

    def forget(self, conn: Connection) -> None:
        """Drop a connection from the routing tables (a driver calls it once ``is_closed``)."""
        if self._connections.get(conn.host_cid) is conn:
            del self._connections[conn.host_cid]
        for key in [k for k, v in self._by_initial_dcid.items() if v is conn]:
            del self._by_initial_dcid[key]

    def _admit(self, data: bytes, addr: Address, now: float) -> None:
        self.stats.datagrams_received += 1
        self.stats.bytes_received += len(data)
        if not is_long_header(data):
            self.stats.drop(Drop.UNKNOWN_CID if len(data) > CID_LEN else Drop.MALFORMED)
            return
        try:
            packet = parse_long_packet(data)
        except DecodeError:
            self.stats.drop(Drop.MALFORMED)
            return
        if packet.version != VERSION:
            self.stats.drop(Drop.BAD_VERSION)
            return
        if packet.packet_type is not PacketType.INITIAL:
            self.stats.drop(Drop.UNKNOWN_CID)
            return
        self._accept_initial(packet, data, addr, now)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        out, self._outgoing = self._outgoing, []
        for conn in list(self._connections.values()):
            out.extend(conn.datagrams_to_send(now))
            self._collect(conn)
        return out

    def get_timer(self) -> float | None:
        timers = [t for c in self._connections.values() if (t := c.get_timer()) is not None]
        return min(timers) if timers else None

    def handle_timer(self, now: float) -> None:
        for conn in list(self._connections.values()):
            timer = conn.get_timer()
            if timer is not None and now >= timer:
                conn.handle_timer(now)
            self._collect(conn)

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    # ------------------------------------------------------------------ internals

    def _route(self, data: bytes) -> Connection | None:
        if not data:
            return None
        if data[0] & 0x80:
            if len(data) < 5 + CID_LEN:
                return None
            dcid = data[5 : 5 + CID_LEN]
            return self._connections.get(dcid) or self._by_initial_dcid.get(dcid)
        return self._connections.get(data[1 : 1 + CID_LEN])

    def _collect(self, conn: Connection) -> None:
        while (event := conn.next_event()) is not None:
            self._events.append(event)
        if conn.is_closed:
            self.forget(conn)

    def _accept_initial(self, packet: LongPacket, data: bytes, addr: Address, now: float) -> None:
        cfg = self.configuration
        if len(data) < MIN_INITIAL_DATAGRAM:
            self.stats.drop(Drop.INITIAL_TOO_SMALL)
            return
        half_open = self.half_open_count()
        if half_open >= cfg.max_half_open:
            self.stats.drop(Drop.HALF_OPEN_LIMIT)
            return
        retry_scid: bytes | None = None
        validated = False
        if packet.token:
            result = self._tokens.validate(packet.token, addr, packet.dcid, now)
            if isinstance(result, str):
                self.stats.drop(result)
                return
            original_dcid = result
            retry_scid = packet.dcid
            validated = True
        else:
            under_load = (
                cfg.retry_when_half_open_above is not None
                and half_open >= cfg.retry_when_half_open_above
            )
            if cfg.require_retry or under_load:
                self._send_retry(packet, addr, now)
                return
            original_dcid = packet.dcid
        ephemeral = packet.body[:DHLEN]
        if ephemeral in self._seen_ephemerals:
            self.stats.drop(Drop.REPLAYED_INITIAL)
            return
        hs = HandshakeState.responder_ik(cfg.connection.static_key, cfg.connection.prologue)
        try:
            payload = hs.read_message(packet.body)
            params = decode_handshake_payload(payload)
        except (NoiseError, ParamsError):
            self.stats.drop(Drop.AUTH)
            return
        # the header is not encrypted: it must match what the client authenticated
        if params.initial_scid != packet.scid or params.original_dcid != original_dcid:
            self.stats.drop(Drop.AUTH)
            return
        self._seen_ephemerals[ephemeral] = None
        while len(self._seen_ephemerals) > cfg.replay_cache_size:
            self._seen_ephemerals.popitem(last=False)
        remote_static = hs.remote_static
        assert remote_static is not None
        reject: tuple[int, str] | None = None
        if not cfg.client_policy(remote_static, addr):
            reject = (ErrorCode.ACCESS_DENIED, "client static key not allowed")
        initial = AcceptedInitial(
            address=addr,
            client_cid=packet.scid,
            message1=packet.body,
            handshake=hs,
            params=params,
            original_dcid=original_dcid,
            retry_scid=retry_scid,
            address_validated=validated,
            datagram_size=len(data),
        )
        conn = Connection.accept(
            cfg.connection,
            initial,
            self._new_cid(),
            now,
            reject=reject,
            stats=self.stats,
        )
        self._connections[conn.host_cid] = conn
        self._by_initial_dcid[packet.dcid] = conn
        self._collect(conn)

    def _new_cid(self) -> bytes:
        while True:
            cid = self._random(CID_LEN)
            if cid not in self._connections and cid not in self._by_initial_dcid:
                return cid

    def _send_retry(self, packet: LongPacket, addr: Address, now: float) -> None:
        retry_scid = self._random(CID_LEN)
        token = self._tokens.issue(addr, packet.dcid, retry_scid, now)
        unsigned = encode_long_packet(PacketType.RETRY, packet.scid, retry_scid, b"", token=token)
        tag = retry_integrity_tag(
            self.configuration.connection.static_key.public, packet.dcid, unsigned
        )
        assert len(tag) == RETRY_TAG_LEN
        self._outgoing.append((unsigned + tag, addr))
        self.stats.retries_sent += 1
        self.stats.datagrams_sent += 1
        self.stats.bytes_sent += len(unsigned) + len(tag)
