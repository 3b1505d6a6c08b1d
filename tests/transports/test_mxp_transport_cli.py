"""`intentus-trio serve` with an mxp listener, `send` and `demo` against it (real processes,
real MXP over UDP on 127.0.0.1)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from intentus_trio.keys import load_public_key
from intentus_trio.transports.mxp import MxpEndpoint, streams_available

pytestmark = pytest.mark.skipif(not streams_available(),
                                reason="the MXP driver has no streams yet")


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "intentus_trio.cli", *args],
                          capture_output=True, text=True, timeout=timeout, check=False)


def _serve(path: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "intentus_trio.cli", "serve", "--config", str(path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


@pytest.mark.parametrize("with_key_file", [False, True])
def test_serve_mxp_listener_and_send(tmp_path: Path, with_key_file: bool) -> None:
    options = ""
    if with_key_file:
        made = cli("keygen", "x25519", "-o", str(tmp_path / "server.key"))
        assert made.returncode == 0, made.stderr
        options = f'options = {{ static_key = "{tmp_path / "server.key"}" }}'
    path = tmp_path / "node.toml"
    path.write_text(textwrap.dedent(
        """
        samples = true

        [node]
        name = "mxp-node"

        [[listeners]]
        url = "mxp://127.0.0.1:0"
        """) + options + "\n")
    proc = _serve(path)
    try:
        assert proc.stdout is not None
        assert "node 'mxp-node' serving agents:" in proc.stdout.readline()
        line = proc.stdout.readline()
        assert line.startswith("listening on mxp://127.0.0.1:"), line
        url = line.split()[-1]
        endpoint = MxpEndpoint.parse(url)
        assert endpoint.port != 0 and endpoint.key is not None
        if with_key_file:
            assert endpoint.key == load_public_key(tmp_path / "server.key.pub")

        ok = cli("send", url, "upper", "--payload", '{"text": "cli"}')
        assert ok.returncode == 0, ok.stderr
        assert '"text": "CLI"' in ok.stdout and '"status": "success"' in ok.stdout

        streamed = cli("send", url, "count", "--payload", '{"n": 3}', "--stream")
        assert streamed.returncode == 0, streamed.stderr
        assert streamed.stdout.count('"chunk"') == 3

        failed = cli("send", url, "no-such-intent")
        assert failed.returncode == 1 and "CAPABILITY_NOT_FOUND" in failed.stdout

        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err


def test_send_with_a_wrong_key_is_a_connection_failure(tmp_path: Path) -> None:
    from intentus_trio.mxp.noise import KeyPair
    from intentus_trio.transports.mxp import format_key

    url = f"mxp://127.0.0.1:9?key={format_key(KeyPair.generate().public)}"
    result = cli("send", url, "echo", "--timeout", "15")
    assert result.returncode == 1
    assert "CONNECTION_FAILURE" in result.stdout


def test_demo_row_for_mxp() -> None:
    result = cli("demo", "--only", "mxp", "--calls", "20")
    assert result.returncode == 0, result.stdout + result.stderr
    row = next(line for line in result.stdout.splitlines() if line.startswith("mxp"))
    assert "5 chunks" in row and "delivered" in row and row.rstrip().endswith("ok")
