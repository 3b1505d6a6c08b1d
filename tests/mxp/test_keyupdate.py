"""Key update by key-phase bit at the packet-protection level."""

from __future__ import annotations

import random

from intentus_trio.mxp.keyupdate import OneRttKeys, Opened
from intentus_trio.mxp.packet import CID_LEN

DCID = b"\x01" * CID_LEN


def _pair() -> tuple[OneRttKeys, OneRttKeys]:
    return (
        OneRttKeys(b"c" * 32, b"s" * 32, discard_delay=1.0),
        OneRttKeys(b"s" * 32, b"c" * 32, discard_delay=1.0),
    )


def _send(keys: OneRttKeys, pn: int) -> bytes:
    return keys.protect(DCID, pn, pn & 0xFFFF, 2, b"\x01" + pn.to_bytes(4, "big"))


def test_update_with_reordering_across_phase_change_loses_nothing() -> None:
    client, server = _pair()
    packets = [_send(client, pn) for pn in range(20)]
    client.initiate_update()
    assert client.send_key_phase == 1
    packets += [_send(client, pn) for pn in range(20, 40)]
    random.Random(7).shuffle(packets)
    got = []
    for raw in packets:
        opened = server.unprotect(raw, 0.5)
        assert isinstance(opened, Opened), opened
        got.append(opened.pn)
    assert sorted(got) == list(range(40))
    assert server.recv_generation == 1
    # the server answered the update on its send side
    assert server.send_generation == 1
    reply = server.protect(DCID, 0, 0, 1, b"\x01")
    opened = client.unprotect(reply, 0.5)
    assert isinstance(opened, Opened) and opened.key_phase == 1
    assert client.can_initiate_update()


def test_previous_keys_are_discarded_after_delay() -> None:
    client, server = _pair()
    old = _send(client, 0)
    client.initiate_update()
    assert isinstance(server.unprotect(_send(client, 1), 10.0), Opened)
    assert server.unprotect(old, 11.5) == "auth"


def test_two_updates_in_a_row() -> None:
    client, server = _pair()
    pn = 0
    for _ in range(3):
        client.initiate_update()
        assert isinstance(server.unprotect(_send(client, pn), 0.0), Opened)
        pn += 1
        assert isinstance(client.unprotect(_send(server, pn), 0.0), Opened)
        pn += 1
    assert server.recv_generation == client.send_generation == 3


def test_cannot_initiate_twice_without_peer() -> None:
    client, _ = _pair()
    client.initiate_update()
    assert not client.can_initiate_update()
