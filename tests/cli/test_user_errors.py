"""Mistakes in a node file or on the command line end in one clear line, not a traceback."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from intentus_trio.cli import main
from intentus_trio.config import ConfigError, load_config, parse_config


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "intentus_trio.cli", *args],
                          capture_output=True, text=True, timeout=timeout, check=False)


def assert_one_line_error(stderr: str, *fragments: str) -> None:
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    for fragment in fragments:
        assert fragment in lines[0], stderr


# --------------------------------------------------------------------------- options keys


@pytest.mark.parametrize(
    ("table", "url", "accepted"),
    [
        ("listeners", "http://127.0.0.1:0", "keep_alive_timeout"),
        ("listeners", "ws://127.0.0.1:0", "max_connections"),
        ("listeners", "tcp://127.0.0.1:0", "max_concurrency"),
        ("listeners", "mxp://127.0.0.1:0", "idle_timeout"),
        ("remotes", "http://127.0.0.1:9", "connect_timeout"),
        ("remotes", "wss://127.0.0.1:9", "heartbeat_interval"),
        ("remotes", "ipc:///tmp/x", "hwm"),
        ("remotes", "mxp://127.0.0.1:9", "connections_per_peer"),
        ("workers", "tcp://127.0.0.1:9", "concurrency"),
    ],
)
def test_an_unknown_options_key_names_file_table_key_and_accepted_keys(
    tmp_path: Path, table: str, url: str, accepted: str
) -> None:
    entry: dict[str, Any] = {"listeners": {"url": url},
                             "remotes": {"name": "far", "intents": ["x"], "url": url},
                             "workers": {"distributor": url}}[table]
    path = tmp_path / "node.toml"
    fields = "".join(f"{k} = {json.dumps(v)}\n" for k, v in entry.items())  # TOML values
    path.write_text(f"[[{table}]]\n{fields}options = {{ bogus_key = 1 }}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert str(path) in message
    assert f"{table}[0].options" in message
    assert "'bogus_key'" in message
    assert accepted in message  # the keys it does take


def test_a_misspelt_options_key_suggests_the_right_one() -> None:
    with pytest.raises(ConfigError, match="did you mean 'max_connections'"):
        parse_config({"listeners": [{"url": "ws://127.0.0.1:0",
                                     "options": {"max_conections": 5}}]})


def test_known_options_keys_are_accepted() -> None:
    config = parse_config({"listeners": [
        {"url": "http://127.0.0.1:0", "options": {"max_tasks": 8, "keep_alive_timeout": 5,
                                                  "limits": {"max_body_bytes": 10}}},
        {"url": "tcp://127.0.0.1:0", "options": {"distribute": "job.*", "hwm": 10}},
        {"url": "mxp://127.0.0.1:0", "options": {"idle_timeout": 5.0, "backlog": 8}},
    ]})
    assert config.listeners[0].options["max_tasks"] == 8


def test_serve_with_an_unknown_options_key_exits_2_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text('samples = true\n[[listeners]]\nurl = "http://127.0.0.1:0"\n'
                    "options = { bogus = 1 }\n")
    result = cli("serve", "--config", str(path))
    assert result.returncode == 2
    assert_one_line_error(result.stderr, str(path), "listeners[0].options", "'bogus'")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_connections": "many"}, "max_connections: expected an integer"),
        ({"heartbeat_interval": True}, "heartbeat_interval: expected a number"),
        ({"heartbeat_interval": "soon"}, "heartbeat_interval: expected a number"),
    ],
)
def test_an_options_value_of_the_wrong_type_is_a_config_error(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config({"listeners": [{"url": "ws://127.0.0.1:0", "options": options}]})


def test_a_float_option_takes_an_integer_number_of_seconds() -> None:
    config = parse_config({"listeners": [{"url": "ws://127.0.0.1:0",
                                          "options": {"heartbeat_interval": 15}}]})
    assert config.listeners[0].options == {"heartbeat_interval": 15}


# --------------------------------------------------------------------------- value types


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[node]\nname = 1\n', r"config.node.name: expected a string"),
        ("[node]\nmax_frame_bytes = 1.5\n", r"config.node.max_frame_bytes: expected an integer"),
        ("[node]\nmax_frame_bytes = true\n", r"config.node.max_frame_bytes: expected an integer"),
        ("[node]\nagent_timeout = true\n", r"config.node.agent_timeout: expected a number"),
        ('node = "x"\n', r"config.node: expected a table"),
        ('agents = ["x"]\n', r"config.agents\[0\]: expected a table"),
        ("[[agents]]\nname = 'a'\nintents = 'echo'\nhandler = 'intentus_trio.samples:echo'\n",
         r"config.agents\[0\].intents: expected an array"),
        ("[[listeners]]\nurl = 5\n", r"config.listeners\[0\].url: expected a string"),
        ("[[listeners]]\nurl = 'http://x'\nemcl = 'maybe'\n",
         r"config.listeners\[0\].emcl: expected one of 'off', 'on', 'required'"),
        ("[[mcp_servers]]\ncommand = 'ls'\n", r"config.mcp_servers\[0\].command: expected an"),
        ("[[remotes]]\nname = 'a'\nintents = ['x']\nurl = 'http://x'\ntimeout = '1'\n",
         r"config.remotes\[0\].timeout: expected a number"),
        ("[node]\nname = 1979-05-27\n", r"config.node.name: expected a string, not a date$"),
        ("[node]\nname = 07:32:00\n", r"config.node.name: expected a string, not a time$"),
        ("[node]\nname = 1979-05-27T07:32:00Z\n",
         r"config.node.name: expected a string, not a date-time$"),
        ("[[listeners]]\nurl = 'http://x'\noptions = 5\n",
         r"config.listeners\[0\].options: expected a table, not an integer$"),
        ("[[workers]]\ndistributor = 'tcp://x:1'\noptions = ['a']\n",
         r"config.workers\[0\].options: expected a table, not an array$"),
        ("[emcl]\ngroup_keys = 'k.key'\n",
         r"config.emcl.group_keys: expected a table, not a string$"),
        ("[emcl]\ngroup_keys = { g1 = 1 }\n",
         r"config.emcl.group_keys\['g1'\]: expected a string, not an integer$"),
    ],
)
def test_a_value_of_the_wrong_type_is_a_clear_error(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "node.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as caught:
        load_config(path)
    assert str(caught.value).startswith(f"{path}: ")


def test_integers_are_numbers() -> None:
    config = parse_config({"node": {"agent_timeout": 5}})
    assert config.node.agent_timeout == 5.0


def test_a_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_bytes(b'[node]\nname = "\xff"\n')
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path)


def test_serve_with_a_missing_file_exits_2(tmp_path: Path) -> None:
    result = cli("serve", "--config", str(tmp_path / "absent.toml"))
    assert result.returncode == 2
    assert_one_line_error(result.stderr, "absent.toml")


def test_serve_with_an_unreadable_key_file_names_the_node_file(tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()  # a directory where a key file should be
    path = tmp_path / "node.toml"
    path.write_text(textwrap.dedent(f"""
        samples = true
        [[listeners]]
        url = "http://127.0.0.1:0"
        emcl = "on"
        [emcl]
        group_keys = {{ g1 = "{tmp_path / 'keys'}" }}
        """))
    result = cli("serve", "--config", str(path))
    assert result.returncode == 2
    assert_one_line_error(result.stderr, str(path), "config.emcl", "keys")


def test_serve_with_a_bad_handler_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text("[[agents]]\nname = 'a'\nintents = ['a']\nhandler = 'no_such_module:f'\n")
    result = cli("serve", "--config", str(path))
    assert result.returncode == 2
    assert_one_line_error(result.stderr, str(path), "agent 'a'", "no_such_module")


# --------------------------------------------------------------------------- startup


def test_a_listener_option_that_fails_at_startup_names_its_table(tmp_path: Path) -> None:
    # certfile on an http:// URL is refused by the server itself, when it starts
    path = tmp_path / "node.toml"
    path.write_text('samples = true\n[[listeners]]\nurl = "http://127.0.0.1:0"\n'
                    'options = { certfile = "cert.pem" }\n')
    result = cli("serve", "--config", str(path))
    assert result.returncode == 2
    assert_one_line_error(result.stderr, "listeners[0]", "https://")


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port bound for TCP (listening) and UDP on 127.0.0.1."""
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    tcp.listen()
    port = tcp.getsockname()[1]
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        udp.bind(("127.0.0.1", port))
    except OSError:
        tcp.close()
        pytest.skip("the UDP port of the same number is taken")
    try:
        yield port
    finally:
        tcp.close()
        udp.close()


@pytest.mark.parametrize("scheme", ["http", "ws", "tcp", "mxp"])
def test_serve_on_a_port_in_use_is_a_clear_error(
    tmp_path: Path, taken_port: int, scheme: str
) -> None:
    url = f"{scheme}://127.0.0.1:{taken_port}"
    path = tmp_path / "node.toml"
    path.write_text(f'samples = true\n[[listeners]]\nurl = "{url}"\n')
    proc = subprocess.Popen(
        [sys.executable, "-m", "intentus_trio.cli", "serve", "--config", str(path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=20)
    assert proc.returncode == 2, (out, err)
    assert_one_line_error(err, url, "in use")


# --------------------------------------------------------------------------- send


@pytest.mark.parametrize(
    "url",
    ["http://[::1", "ws://:notaport", "tcp://host:", "mxp://host:99999", "http://host:abc",
     "https://host:-1", "wss://[::1]:port", "ipc://", "mxp://127.0.0.1:9",
     "mxp://127.0.0.1:9?key=abc"],
)
def test_send_with_a_malformed_url_exits_2(
    capsys: pytest.CaptureFixture[str], url: str
) -> None:
    assert main(["send", url, "echo", "--timeout", "5"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert_one_line_error(captured.err, url)


def test_send_with_a_malformed_url_exits_2_as_a_command() -> None:
    result = cli("send", "http://[::1", "echo")
    assert result.returncode == 2
    assert_one_line_error(result.stderr, "http://[::1")


@pytest.mark.parametrize("timeout", ["-1", "nan", "0"])
def test_send_rejects_a_timeout_that_is_not_positive(
    capsys: pytest.CaptureFixture[str], timeout: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["send", "http://127.0.0.1:9", "echo", "--timeout", timeout])
    assert exited.value.code == 2
    assert "--timeout" in capsys.readouterr().err


def test_demo_with_an_unknown_transport_name_exits_2(
    capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", "--only", "in-process,carrier-pigeon"]) == 2
    err = capsys.readouterr().err
    assert "carrier-pigeon" in err and "in-process" in err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[node]\nagent_timeout = nan\n", r"config.node.agent_timeout: must be 0"),
        ("[node]\nagent_timeout = -1\n", r"config.node.agent_timeout: must be 0"),
        ("[node]\nmax_frame_bytes = 0\n", r"config.node.max_frame_bytes: must be at least 1"),
        ("[[agents]]\nname = 'a'\nintents = ['a']\nhandler = 'intentus_trio.samples:echo'\n"
         "timeout = -1\n", r"config.agents\[0\].timeout: must be more than 0"),
        ("[[remotes]]\nname = 'a'\nintents = ['x']\nurl = 'http://x'\ntimeout = nan\n",
         r"config.remotes\[0\].timeout: must be more than 0"),
        ("[[mcp_servers]]\ncommand = ['x']\ntimeout = 0\n",
         r"config.mcp_servers\[0\].timeout: must be more than 0"),
    ],
)
def test_a_deadline_no_call_could_meet_is_refused(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "node.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_agent_timeout_0_still_means_none() -> None:
    assert parse_config({"node": {"agent_timeout": 0}}).node.agent_timeout == 0
