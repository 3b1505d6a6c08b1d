"""``[emcl]`` in a node file: listeners and remotes sealed by configuration alone, over real
sockets, in group mode, pair mode and with a chain-trust policy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from intentus_trio import ErrorCode, new_intent
from intentus_trio.config import ConfigError, parse_config
from intentus_trio.keys import (
    Ed25519KeyPair,
    X25519KeyPair,
    generate_master_key,
    save_ed25519,
    save_x25519,
    write_key_file,
)
from intentus_trio.node import serve_node
from intentus_trio.transports.registry import open_transport


def group_key(tmp_path: Path, name: str) -> str:
    path = tmp_path / f"{name}.key"
    write_key_file(path, generate_master_key(), "symmetric")
    return str(path)


def x25519_key(tmp_path: Path, name: str) -> str:
    path = tmp_path / f"{name}.x25519"
    save_x25519(path, X25519KeyPair.generate())
    return str(path)


def ed25519_key(tmp_path: Path, name: str) -> str:
    path = tmp_path / f"{name}.ed25519"
    save_ed25519(path, Ed25519KeyPair.generate())
    return str(path)


async def call_through_front(back: dict[str, Any], front: dict[str, Any],
                             scheme: str) -> tuple[Any, Any]:
    """Start ``back`` (one listener of ``scheme``), then ``front`` with a remote ``upper`` to
    it; returns (the front's answer, a plaintext client's answer from the back)."""
    back = {"samples": True, "listeners": [{"url": f"{scheme}://127.0.0.1:0",
                                            "emcl": "required"}], **back}
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            backend = await nursery.start(serve_node, parse_config(back))
            url = backend.urls[0]
            front = {"remotes": [{"name": "far-upper", "intents": ["upper"], "url": url,
                                  "emcl": "on", "emcl_peer": "back"}], **front}
            async with trio.open_nursery() as inner:
                node = await inner.start(serve_node, parse_config(front))
                sealed = await node.router.route_intent(new_intent("upper", {"text": "a"}))
                inner.cancel_scope.cancel()
            async with open_transport(url) as plain:
                refused = await plain.send_intent(new_intent("upper", {"text": "a"}))
            nursery.cancel_scope.cancel()
    return sealed, refused


async def test_group_mode_over_http(tmp_path: Path) -> None:
    key = group_key(tmp_path, "g1")
    emcl = {"group_keys": {"g1": key}}
    sealed, refused = await call_through_front(
        {"node": {"name": "back"}, "emcl": emcl}, {"node": {"name": "front"}, "emcl": emcl},
        "http")
    assert sealed.ok and sealed.payload == {"text": "A"}
    assert refused.error is not None and refused.error.code is ErrorCode.EMCL_FAILURE


async def test_pair_mode_over_websocket(tmp_path: Path) -> None:
    back_key, front_key = x25519_key(tmp_path, "back"), x25519_key(tmp_path, "front")
    sealed, refused = await call_through_front(
        {"node": {"name": "back"},
         "emcl": {"static_key": back_key, "peers": {"front": f"{front_key}.pub"}}},
        {"node": {"name": "front"},
         "emcl": {"static_key": front_key, "peers": {"back": f"{back_key}.pub"}}},
        "ws")
    assert sealed.ok and sealed.payload == {"text": "A"}
    assert refused.error is not None and refused.error.code is ErrorCode.EMCL_FAILURE


@pytest.mark.parametrize("trusted", [True, False])
async def test_a_chain_policy_judges_the_origin(tmp_path: Path, trusted: bool) -> None:
    key = group_key(tmp_path, "g1")
    signer = ed25519_key(tmp_path, "front-id")
    stranger = ed25519_key(tmp_path, "stranger")
    sealed, _ = await call_through_front(
        {"node": {"name": "back"},
         "emcl": {"group_keys": {"g1": key},
                  "trust_origins": {"front": f"{signer if trusted else stranger}.pub"}}},
        {"node": {"name": "front"}, "emcl": {"group_keys": {"g1": key}, "signer": signer}},
        "http")
    if trusted:
        assert sealed.ok
    else:
        assert sealed.error is not None and sealed.error.code is ErrorCode.EMCL_FAILURE
        assert sealed.error.details["reason"] == "untrusted_chain"


async def test_a_trust_policy_judges_requests_not_the_replies_of_remotes(
        tmp_path: Path) -> None:
    # The front trusts chains from its own key for what it serves; the back's reply to the
    # front's forwarded call carries no chain and must still be accepted.
    key = group_key(tmp_path, "g1")
    signer = ed25519_key(tmp_path, "front-id")
    sealed, _ = await call_through_front(
        {"node": {"name": "back"}, "emcl": {"group_keys": {"g1": key}}},
        {"node": {"name": "front"},
         "emcl": {"group_keys": {"g1": key}, "signer": signer,
                  "trust_origins": {"front": f"{signer}.pub"}}},
        "ws")
    assert sealed.ok, sealed.error
    assert sealed.payload == {"text": "A"}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"listeners": [{"url": "http://127.0.0.1:0", "emcl": "on"}]}, "needs an \\[emcl\\]"),
        ({"listeners": [{"url": "http://127.0.0.1:0", "emcl": "sometimes"}]}, "emcl"),
        ({"emcl": {}}, "group_keys or a static_key"),
        ({"emcl": {"group_keys": {"g1": "k"}, "seal_with": "g2"}}, "seal_with"),
        ({"emcl": {"group_keys": {"g1": "k"}, "peers": {"b": "b.pub"}}}, "static_key"),
        ({"emcl": {"static_key": "k"},
          "remotes": [{"name": "r", "intents": ["x"], "url": "ws://h:1/", "emcl": "on"}]},
         r"remotes\[0\]: with pair keys only, emcl needs emcl_peer"),
        ({"emcl": {"static_key": "k"},
          "listeners": [{"url": "tcp://127.0.0.1:0", "emcl": "on",
                         "options": {"distribute": "job.*"}}]},
         r"listeners\[0\]: sealed work for workers needs group_keys"),
    ],
)
def test_emcl_settings_are_checked(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(data)


async def test_a_missing_key_file_stops_the_node(tmp_path: Path) -> None:
    config = parse_config({"emcl": {"group_keys": {"g1": str(tmp_path / "absent.key")}}})
    async with trio.open_nursery() as nursery:
        with pytest.raises(ConfigError, match=r"absent\.key"):
            await nursery.start(serve_node, config)
