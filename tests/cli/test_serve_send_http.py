"""`intentus-trio serve` with a network listener, and `send` against it (real processes)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("httpx")
pytest.importorskip("hypercorn")

CONFIG = textwrap.dedent(
    """
    samples = true

    [node]
    name = "cli-node"

    [[listeners]]
    url = "http://127.0.0.1:0"
    """
)


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "intentus_trio.cli", *args],
                          capture_output=True, text=True, timeout=timeout, check=False)


def test_serve_reports_bound_url_and_send_reaches_it(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text(CONFIG)
    proc = subprocess.Popen(
        [sys.executable, "-m", "intentus_trio.cli", "serve", "--config", str(path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        assert "node 'cli-node' serving agents:" in proc.stdout.readline()
        line = proc.stdout.readline()
        assert line.startswith("listening on http://127.0.0.1:")
        url = line.split()[-1]
        assert not url.endswith(":0")

        ok = cli("send", url, "upper", "--payload", '{"text": "cli"}')
        assert ok.returncode == 0, ok.stderr
        assert '"text": "CLI"' in ok.stdout and '"status": "success"' in ok.stdout

        streamed = cli("send", url, "count", "--payload", '{"n": 3}', "--stream")
        assert streamed.returncode == 0, streamed.stderr
        assert streamed.stdout.count('"chunk"') == 3

        failed = cli("send", url, "no-such-intent")
        assert failed.returncode == 1
        assert "CAPABILITY_NOT_FOUND" in failed.stdout

        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "received SIGINT, shutting down" in out


def test_send_to_a_closed_port_is_a_connection_failure() -> None:
    result = cli("send", "http://127.0.0.1:9", "echo", "--timeout", "5")
    assert result.returncode == 1
    assert "CONNECTION_FAILURE" in result.stdout
