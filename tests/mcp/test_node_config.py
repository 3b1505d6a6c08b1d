"""``[[mcp_servers]]`` in a node's TOML: an MCP server's tools become the node's agents
(a real SDK server as a stdio subprocess)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("mcp")

import trio

from intentus_trio import new_intent
from intentus_trio.cli import main
from intentus_trio.config import ConfigError, load_config, parse_config
from intentus_trio.node import serve_node

ROOT = Path(__file__).resolve().parents[2]
SERVER = ROOT / "tests" / "mcp" / "sdk_server.py"


def toml_list(items: list[str]) -> str:
    return "[" + ", ".join(repr(i) for i in items) + "]"


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("command = ['x']\nurl = 'http://127.0.0.1:9/mcp'", "either command or url"),
        ("prefix = 'p.'", "either command or url"),
        ("command = ['x']\nprefx = 'p.'", "prefx"),
        ("command = ['x']\nstreaming = 'yes'", "streaming"),
    ],
)
def test_mcp_server_entries_are_checked(tmp_path: Path, entry: str, message: str) -> None:
    path = tmp_path / "node.toml"
    path.write_text(f"[[mcp_servers]]\n{entry}\n")
    with pytest.raises(ConfigError, match=message):
        load_config(path)


async def test_a_node_serves_an_mcp_servers_tools() -> None:
    config = parse_config({
        "samples": True,
        "mcp_servers": [{
            "command": [sys.executable, str(SERVER)],
            "env": {"PYTHONPATH": str(ROOT)},
            "cwd": str(ROOT),
            "prefix": "sdk.",
            "include": ["add", "shout"],
            "timeout": 20.0,
        }],
    })
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            node = await nursery.start(serve_node, config)
            router = node.router
            agents = {r.agent for r in router.registry}
            assert {"sdk-test-server/add", "sdk-test-server/shout"} <= agents
            assert "sdk-test-server/oops" not in agents  # not included
            added = await router.route_intent(new_intent("sdk.add", {"a": 2, "b": 40}))
            assert added.ok and added.payload == {"result": 42}
            assert (await router.route_intent(new_intent("echo", {"k": 1}))).ok
            nursery.cancel_scope.cancel()
    # Stopping the node closed the session and unregistered the tools.
    assert not [r for r in router.registry if r.agent.startswith("sdk-test-server/")]


def test_serve_exits_2_when_an_mcp_server_cannot_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "node.toml"
    missing = str(tmp_path / "no-such-mcp-server")
    path.write_text(f"samples = true\n[[mcp_servers]]\ncommand = {toml_list([missing])}\n")
    assert main(["serve", "--config", str(path)]) == 2
    assert "error:" in capsys.readouterr().err
