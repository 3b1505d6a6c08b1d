"""Node configuration, the node runner and the CLI commands."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import trio

from intentus_trio.cli import main, run_demo
from intentus_trio.config import ConfigError, build_router, load_config, parse_config
from intentus_trio.node import serve_node
from intentus_trio.protocol.factory import new_intent
from intentus_trio.transports.registry import UnknownScheme, open_transport

NODE_TOML = textwrap.dedent(
    """
    [node]
    name = "node-a"
    agent_timeout = 5.0

    [[agents]]
    name = "shout"
    intents = ["shout", "yell.*"]
    handler = "intentus_trio.samples:upper"
    timeout = 1.5
    description = "upper-case"
    """
)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "node.toml"
    path.write_text(text)
    return path


async def test_config_builds_a_router(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, NODE_TOML))
    assert config.node.name == "node-a"
    router = build_router(config)
    reg = router.registry.get("shout")
    assert reg is not None and reg.timeout == 1.5
    assert router.default_timeout == 5.0
    response = await router.route_intent(new_intent("yell.loud", {"text": "hi"}))
    assert response.payload == {"text": "HI"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[node]\nnmae = 'x'\n", "nmae"),
        ("[[agents]]\nname = 'a'\nintents = ['x']\n", "handler"),
        ("[[agents]]\nname='a'\nintents=['x']\nhandler='nope'\n", "package.module:function"),
        ("[[agents]]\nname='a'\nintents=['x']\nhandler='no_such_mod:f'\n", "cannot import"),
        ("[[agents]]\nname='a'\nintents=['x']\nhandler='intentus_trio.samples:zz'\n",
         "no attribute"),
        ("[[agents]]\nname='a'\nintents=['x']\nhandler='intentus_trio.samples:SAMPLES'\n",
         "agent 'a'"),
        ("[node\n", "not valid TOML"),
    ],
)
def test_config_errors_are_clear(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_router(load_config(write(tmp_path, text)))


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.toml")


async def test_serve_node_without_listeners_reports_no_urls() -> None:
    config = parse_config({"samples": True})
    async with trio.open_nursery() as nursery:
        node = await nursery.start(serve_node, config)
        assert node.urls == ()
        assert node.router.registry.get("echo") is not None
        nursery.cancel_scope.cancel()


async def test_unknown_scheme_is_a_clear_error() -> None:
    with pytest.raises(UnknownScheme, match="no transport for URL scheme 'gopher'"):
        open_transport("gopher://x")


async def test_demo_in_process_row() -> None:
    rows = await run_demo(50, ["in-process"])
    assert len(rows) == 1
    row = rows[0]
    assert (row.status, row.stream, row.events) == ("ok", "5 chunks", "delivered")
    assert len(row.latencies) == 50


def test_send_with_unknown_scheme_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["send", "gopher://host", "echo"]) == 2
    assert "no transport" in capsys.readouterr().err


def test_send_rejects_bad_payload(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["send", "http://127.0.0.1:9", "echo", "--payload", "[1]"]) == 2
    assert "JSON object" in capsys.readouterr().err


def test_serve_prints_and_stops_on_sigterm(tmp_path: Path) -> None:
    path = write(tmp_path, NODE_TOML)
    proc = subprocess.Popen(
        [sys.executable, "-m", "intentus_trio.cli", "serve", "--config", str(path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "node 'node-a' serving agents: shout" in line
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "received SIGTERM, shutting down" in out


def test_serve_with_bad_config_exits_2(tmp_path: Path) -> None:
    path = write(tmp_path, "[node]\nbogus = 1\n")
    result = subprocess.run(
        [sys.executable, "-m", "intentus_trio.cli", "serve", "--config", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 2
    assert "bogus" in result.stderr
