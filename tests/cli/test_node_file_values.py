"""What a node file's ``options`` may hold: values TOML can write, of the option's kind.

Options that only take Python objects are refused by name before anything starts, instead of
failing with a traceback (or being used as a bogus object) once the node runs; every option
the transport docs list that TOML can write stays accepted.
"""

from __future__ import annotations

import collections.abc
import re
import types
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import pytest
import trio

from intentus_trio.config import (
    MAX_TIMEOUT,
    ConfigError,
    ListenerConfig,
    NodeConfig,
    load_config,
    parse_config,
    transport_options,
)
from intentus_trio.node import serve_node
from intentus_trio.transports.framing import timeout_headers

from .test_user_errors import assert_one_line_error, cli

ROOT = Path(__file__).resolve().parents[2]

# --------------------------------------------------------------------------- object-only


@pytest.mark.parametrize(
    ("table", "url", "key"),
    [
        ("listeners", "http://127.0.0.1:0", "config"),
        ("listeners", "http://127.0.0.1:0", "server"),
        ("listeners", "http://127.0.0.1:0", "protector"),
        ("listeners", "mxp://127.0.0.1:0", "backend"),
        ("listeners", "mxp://127.0.0.1:0", "client_policy"),
        ("listeners", "mxp://127.0.0.1:0", "prologue"),
        ("listeners", "wss://127.0.0.1:0", "ssl_context"),
        ("listeners", "tcp://127.0.0.1:0", "work_protector"),
        ("remotes", "http://127.0.0.1:9", "retry"),
        ("remotes", "http://127.0.0.1:9", "rng"),
        ("remotes", "http://127.0.0.1:9", "auth"),
        ("remotes", "mxp://127.0.0.1:9?key=x", "pool"),
        ("remotes", "mxp://127.0.0.1:9?key=x", "carrier"),
        ("remotes", "ws://127.0.0.1:9", "ssl_context"),
        ("workers", "tcp://127.0.0.1:9", "protector"),
    ],
)
def test_an_option_that_takes_a_python_object_is_refused_by_name(
    tmp_path: Path, table: str, url: str, key: str
) -> None:
    entry = {"listeners": f'url = "{url}"',
             "remotes": f'name = "far"\nintents = ["x"]\nurl = "{url}"',
             "workers": f'distributor = "{url}"'}[table]
    path = tmp_path / "node.toml"
    path.write_text(f'[[{table}]]\n{entry}\noptions = {{ {key} = "x" }}\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert str(path) in message
    assert f"{table}[0].options.{key}: takes a Python object" in message


@pytest.mark.parametrize(
    ("url", "options", "message"),
    [
        ("http://127.0.0.1:0", {"limits": "x"}, "limits: expected a table, not a string"),
        ("ws://127.0.0.1:9", {"extra_headers": "x"},
         "extra_headers: expected a table of strings, not a string"),
        ("http://127.0.0.1:9", {"headers": {"a": 1}},
         "headers: expected a table of strings, not a table"),
        ("tcp://127.0.0.1:0", {"distribute": 5},
         "distribute: expected a string or an array of strings, not an integer"),
        ("mxp://127.0.0.1:0", {"client_keys": "a.pub"},
         "client_keys: expected an array of strings, not a string"),
    ],
)
def test_a_table_or_array_option_needs_one(
    url: str, options: dict[str, Any], message: str
) -> None:
    role = "listeners" if url.endswith(":0") else "remotes"
    entry: dict[str, Any] = {"url": url, "options": options}
    if role == "remotes":
        entry |= {"name": "far", "intents": ["x"]}
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_config({role: [entry]})


def test_table_and_array_options_of_the_right_kind_are_accepted() -> None:
    parse_config({
        "listeners": [
            {"url": "tcp://127.0.0.1:0", "options": {"distribute": ["a.*", "b"]}},
            {"url": "mxp://127.0.0.1:0", "options": {"client_keys": ["a.pub"],
                                                     "static_key": "s.key"}},
        ],
        "remotes": [{"name": "far", "intents": ["x"], "url": "ws://127.0.0.1:9",
                     "options": {"extra_headers": {"x-token": "t"}}}],
    })


def test_serve_with_an_object_option_exits_2_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text('[[listeners]]\nurl = "http://127.0.0.1:0"\noptions = { server = "x" }\n')
    result = cli("serve", "--config", str(path))
    assert result.returncode == 2
    assert_one_line_error(result.stderr, str(path), "listeners[0].options.server")


async def test_an_option_of_the_wrong_object_at_startup_is_a_config_error() -> None:
    # A NodeConfig built in Python skips the file's checks; the transport's AttributeError
    # still names the entry.
    config = NodeConfig(listeners=[ListenerConfig("http://127.0.0.1:0",
                                                  options={"config": "x"})])
    async with trio.open_nursery() as nursery:
        with pytest.raises(ConfigError, match=r"listeners\[0\] \(http://127.0.0.1:0\)"):
            await nursery.start(serve_node, config)


# --------------------------------------------------------------------------- documented


#: Documented options that take Python objects (refused in node files, by the tests above).
OBJECT_ONLY = {"protector", "work_protector", "ssl_context", "pool", "auth", "retry",
               "backend", "client_policy", "config", "server", "carrier", "rng", "prologue"}

DOCUMENTED = [("http.md", "http://127.0.0.1:0"), ("websocket.md", "ws://127.0.0.1:0"),
              ("zeromq.md", "tcp://127.0.0.1:0"), ("mxp.md", "mxp://127.0.0.1:0")]


def _sample(type_: Any) -> Any:
    """A TOML value of ``type_``; None when TOML has none."""
    origin, args = get_origin(type_), get_args(type_)
    if type_ is Any:
        return "x"
    if type_ in (bool, int, float, str):
        return {bool: True, int: 1, float: 1.5, str: "x"}[type_]
    if origin is Literal:
        return args[0]
    if origin in (Union, types.UnionType):
        return next((s for s in map(_sample, args) if s is not None), None)
    if origin in (dict, collections.abc.Mapping):
        return {}
    if origin in (list, collections.abc.Iterable, collections.abc.Sequence):
        return []
    return None


@pytest.mark.parametrize(("doc", "url"), DOCUMENTED, ids=[d for d, _ in DOCUMENTED])
def test_every_documented_option_toml_can_write_is_accepted(doc: str, url: str) -> None:
    names = set(re.findall(r"`([a-z_][a-z0-9_]*)", (ROOT / "docs/transports" / doc).read_text()))
    checked = 0
    for role, table in (("listener", "listeners"), ("remote", "remotes"),
                        ("worker", "workers")):
        accepted = transport_options(url, role)  # type: ignore[arg-type]
        for name in sorted(names & set(accepted or {})):
            assert accepted is not None
            value = _sample(accepted[name])
            if value is None:
                assert name in OBJECT_ONLY, name
                continue
            entry: dict[str, Any] = {
                "listener": {"url": url}, "remote": {"name": "far", "intents": ["x"], "url": url},
                "worker": {"distributor": url}}[role]
            parse_config({table: [{**entry, "options": {name: value}}]})
            checked += 1
    assert checked >= 8


# --------------------------------------------------------------------------- deadlines


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[node]\nagent_timeout = 1e308\n", r"config.node.agent_timeout: must be at most"),
        ("[[agents]]\nname = 'a'\nintents = ['a']\nhandler = 'intentus_trio.samples:echo'\n"
         "timeout = 1e306\n", r"config.agents\[0\].timeout: must be at most 31536000"),
        ("[[remotes]]\nname = 'a'\nintents = ['x']\nurl = 'http://x'\ntimeout = 1e308\n",
         r"config.remotes\[0\].timeout: must be at most 31536000 seconds"),
        ("[[mcp_servers]]\ncommand = ['x']\ntimeout = 4e7\n",
         r"config.mcp_servers\[0\].timeout: must be at most"),
        ("[[remotes]]\nname = 'a'\nintents = ['x']\nurl = 'tcp://127.0.0.1:5555'\n"
         "options = {timeout = 1e12}\n",
         r"config.remotes\[0\].options.timeout: must be at most 31536000 seconds"),
        ("[[listeners]]\nurl = 'ws://127.0.0.1:5555'\noptions = {shutdown_timeout = 1e300}\n",
         r"config.listeners\[0\].options.shutdown_timeout: must be at most"),
    ],
)
def test_a_deadline_beyond_a_year_is_refused(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "node.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_a_year_and_inf_are_still_deadlines() -> None:
    config = parse_config({"node": {"agent_timeout": MAX_TIMEOUT},
                           "remotes": [{"name": "a", "intents": ["x"], "url": "http://x",
                                        "timeout": float("inf")}]})
    assert config.node.agent_timeout == MAX_TIMEOUT


@pytest.mark.parametrize("timeout", ["1e308", "1e306", "31536001"])
def test_send_rejects_a_timeout_beyond_a_year(
    capsys: pytest.CaptureFixture[str], timeout: str
) -> None:
    from intentus_trio.cli import main

    with pytest.raises(SystemExit) as caught:
        main(["send", "http://127.0.0.1:9", "echo", "--timeout", timeout])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert "--timeout" in err and "at most 31536000 seconds" in err


def test_timeout_headers_of_a_deadline_too_far_for_milliseconds_are_none() -> None:
    async def headers() -> list[dict[str, str]]:
        now = trio.current_time()
        return [timeout_headers(now + 1e10), timeout_headers(now + 1e308),
                timeout_headers(now + 2.5), timeout_headers(now - 1)]

    far, farther, near, past = trio.run(headers)
    assert far == farther == {}  # as call_timeout reads more than 12 digits: no deadline
    assert near == {"timeoutMs": "2500"}
    assert past == {"timeoutMs": "1"}
