"""`python -m intentus_trio.mcp --config FILE` as a stdio subprocess, driven by the official
SDK's stdio client: list, call, errors, progress, cancellation; and the CLI's bad input."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("mcp")

import mcp_types as types
import trio
from mcp import Client, StdioServerParameters
from mcp.shared.exceptions import MCPError

from intentus_trio.mcp.cli import add_mcp_parser

ROOT = Path(__file__).resolve().parents[2]

NODE_TOML = textwrap.dedent(
    """
    samples = true

    [node]
    name = "stdio-node"
    agent_timeout = 10.0

    [[agents]]
    name = "slow"
    intents = ["slow"]
    handler = "tests.mcp.agents:slow"
    description = "Sleeps payload.seconds."

    [[agents]]
    name = "stats"
    intents = ["stats"]
    handler = "tests.mcp.agents:stats"

    [[agents]]
    name = "crash"
    intents = ["crash"]
    handler = "tests.mcp.agents:crash"

    [[agents]]
    name = "limited"
    intents = ["limited"]
    handler = "tests.mcp.agents:slow"
    timeout = 0.2
    """
)


def server_params(config: Path) -> StdioServerParameters:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return StdioServerParameters(command=sys.executable,
                                 args=["-m", "intentus_trio.mcp", "--config", str(config)],
                                 cwd=str(ROOT), env=env)


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_stdio_server(tmp_path: Path, mode: str) -> None:
    config = tmp_path / "node.toml"
    config.write_text(NODE_TOML)
    with trio.fail_after(60):
        async with Client(server_params(config), mode=mode) as client:
            assert client.server_info is not None or mode == "auto"
            tools = {t.name: t for t in (await client.list_tools()).tools}
            assert {"echo", "upper", "count", "sleep", "fail", "slow", "stats", "crash",
                    "limited"} <= set(tools)
            assert tools["slow"].description == "Sleeps payload.seconds."

            ok = await client.call_tool("upper", {"text": "stdio"})
            assert ok.structured_content == {"text": "STDIO"}
            invalid = await client.call_tool("upper", {"text": ["x"]})
            assert invalid.is_error is True and invalid.structured_content is not None
            assert invalid.structured_content["error"]["code"] == "VALIDATION_ERROR"
            failed = await client.call_tool("crash", {})
            assert failed.is_error is True and failed.structured_content is not None
            assert failed.structured_content["error"]["code"] == "INTERNAL_AGENT_ERROR"
            late = await client.call_tool("limited", {"seconds": 5})
            assert late.structured_content is not None
            assert late.structured_content["error"]["code"] == "AGENT_TIMEOUT"
            with pytest.raises(MCPError) as info:
                await client.call_tool("unknown", {})
            assert info.value.code == types.INVALID_PARAMS

            seen: list[str | None] = []

            async def on_progress(progress: float, total: float | None, message: str | None
                                  ) -> None:
                seen.append(message)

            streamed = await client.call_tool("count", {"n": 2}, progress_callback=on_progress)
            assert streamed.structured_content == {"chunks": [{"i": 0}, {"i": 1}]}
            assert seen == ['{"i":0}', '{"i":1}']

            # Cancel a call: the agent in the subprocess sees the cancellation.
            with trio.move_on_after(1.0):
                await client.call_tool("slow", {"seconds": 30})
            with trio.fail_after(10):
                while True:
                    stats = await client.call_tool("stats", {})
                    assert stats.structured_content is not None
                    if stats.structured_content["cancelled"] == 2:  # limited's, and this one
                        break
            assert stats.structured_content["finished"] == 0


def test_cli_bad_config(tmp_path: Path) -> None:
    missing = subprocess.run(
        [sys.executable, "-m", "intentus_trio.mcp", "--config", str(tmp_path / "nope.toml")],
        capture_output=True, text=True, cwd=ROOT, timeout=60, check=False,
    )
    assert missing.returncode == 2 and "cannot read" in missing.stderr and missing.stdout == ""
    bad = tmp_path / "bad.toml"
    bad.write_text("[[agents]]\nname='a'\nintents=['x']\nhandler='no_such_module:f'\n")
    result = subprocess.run(
        [sys.executable, "-m", "intentus_trio.mcp", "--config", str(bad)],
        capture_output=True, text=True, cwd=ROOT, timeout=60, check=False,
    )
    assert result.returncode == 2 and "cannot import" in result.stderr and result.stdout == ""


def test_add_mcp_parser() -> None:
    parser = argparse.ArgumentParser(prog="intentus-trio")
    add_mcp_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["mcp", "--config", "node.toml", "--http",
                              "http://127.0.0.1:0/mcp", "--no-validate"])
    assert args.config == "node.toml" and args.http == "http://127.0.0.1:0/mcp"
    assert args.no_validate and not args.listed_only and callable(args.func)
