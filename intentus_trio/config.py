"""Node configuration: attrs classes loaded from TOML through cattrs.

A node file names its agents by import path, the listeners it serves, and agents that live
behind other nodes::

    [node]
    name = "node-a"
    agent_timeout = 30.0          # seconds (the default); 0: no router-level deadline
    max_frame_bytes = 4194304     # the listeners' and remotes' frame limit (the default)

    [[agents]]
    name = "echo"
    intents = ["echo"]
    handler = "intentus_trio.samples:echo"

    [[listeners]]
    url = "http://127.0.0.1:8080"

    [[remotes]]
    name = "far-upper"
    intents = ["upper"]
    url = "http://127.0.0.1:9090"

    [[workers]]                   # pull work from a distributing ZeroMQ node
    distributor = "tcp://127.0.0.1:5555"

    [emcl]                        # envelope encryption where emcl = "on" (or "required")
    group_keys = { g1 = "keys/g1.key" }   # key id -> master key file (intentus-trio keygen)

    [[mcp_servers]]               # an MCP server's tools as agents (the mcp extra)
    command = ["my-mcp-server", "--root", "/srv"]   # a stdio subprocess, or url = "https://..."
    prefix = "fs."

Unknown keys are errors, so a typo cannot silently drop a setting; that holds for a
transport's ``options`` table too (its keys are the transport's keyword parameters). Values
must be of the kind a setting takes: nothing is converted, so ``intents = "echo"`` is an
error, not the intents ``["e", "c", "h", "o"]``. ``load_config`` names the file in its errors.
An option that only takes a Python object (a ``protector``, an ``ssl_context``, a ``pool``,
...) cannot be written in TOML, so a node file may not set it: give it from Python.
TOML has no null either: an option whose ``None`` means "off" keeps its default in a node file.
Deadlines are capped at a year (``MAX_TIMEOUT``): a larger one is surely a typo, and its
milliseconds may not even fit a number.
"""

from __future__ import annotations

import collections.abc
import datetime
import difflib
import importlib
import inspect
import math
import re
import sys
import tomllib
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints
from urllib.parse import urlsplit

import attrs
import cattrs
import cattrs.v
from attrs import field, frozen
from cattrs.errors import IterableValidationError, IterableValidationNote
from cattrs.gen import make_dict_structure_fn, make_mapping_structure_fn

from .routing.router import Router


class ConfigError(ValueError):
    """The configuration file is unreadable or does not describe a node."""


#: The longest deadline a node file or ``intentus-trio send --timeout`` may give, in seconds
#: (a year; inf still means none where none is allowed).
MAX_TIMEOUT = 365 * 24 * 3600.0


@frozen
class NodeSettings:
    name: str = "node"
    #: The router's deadline for local agents, in seconds; 0 (or None) for none.
    agent_timeout: float | None = 30.0
    #: The largest frame the node's listeners and remote transports take, unless their
    #: own options say otherwise.
    max_frame_bytes: int = 4 * 1024 * 1024


@frozen
class AgentConfig:
    name: str
    intents: list[str]
    handler: str
    version: str = "*"
    timeout: float | None = None
    description: str = ""


@frozen
class ListenerConfig:
    url: str
    options: dict[str, Any] = field(factory=dict)
    #: EMCL on this listener ("on": sealed and plaintext frames; "required": sealed only).
    emcl: Literal["off", "on", "required"] = "off"


@frozen
class WorkerConfig:
    """Serve this node's agents as a worker of a distributing node (ZeroMQ work queue)."""

    distributor: str
    options: dict[str, Any] = field(factory=dict)
    #: EMCL on the work this worker takes ("on": sealed and plaintext; "required": sealed).
    emcl: Literal["off", "on", "required"] = "off"


@frozen
class RemoteConfig:
    name: str
    intents: list[str]
    url: str
    streaming: bool = False
    timeout: float | None = None
    options: dict[str, Any] = field(factory=dict)
    #: Seal what goes to this remote with EMCL ("on") and refuse plaintext replies.
    emcl: Literal["off", "on"] = "off"
    #: The remote's agent id: the recipient of everything sealed, and the only sender
    #: accepted (with ``[emcl] peers``, it selects the pair key).
    emcl_peer: str | None = None


@frozen
class EmclConfig:
    """The node's EMCL keys (files written by ``intentus-trio keygen``; paths relative to
    the working directory)."""

    #: The agent id this node seals as (default: the node's name).
    agent_id: str | None = None
    #: Group mode: key id -> master key file. Every listed key opens; ``seal_with`` (default:
    #: the last listed) seals, so a rotation adds the new key last.
    group_keys: dict[str, str] = field(factory=dict)
    seal_with: str | None = None
    #: Pair mode: this node's X25519 key file, and peers' public key files by agent id.
    static_key: str | None = None
    peers: dict[str, str] = field(factory=dict)
    #: An Ed25519 key file: sign an identity-chain entry for everything sealed.
    signer: str | None = None
    #: Accept only chains whose origin is one of these agents (Ed25519 public key files).
    trust_origins: dict[str, str] = field(factory=dict)


@frozen
class McpServerConfig:
    """An MCP server whose tools become agents of the node (see ``open_mcp_agents``)."""

    #: A stdio server: the program and its arguments (give this or ``url``).
    command: list[str] = field(factory=list)
    #: A Streamable HTTP server's URL.
    url: str = ""
    prefix: str = ""
    name: str | None = None
    timeout: float | None = 30.0
    include: list[str] | None = None
    #: True: every tool streams its progress; False: none; omitted: those the server marks.
    streaming: bool | None = None
    #: Extra environment variables and the working directory of a stdio server.
    env: dict[str, str] = field(factory=dict)
    cwd: str | None = None


@frozen
class NodeConfig:
    node: NodeSettings = NodeSettings()
    agents: list[AgentConfig] = field(factory=list)
    listeners: list[ListenerConfig] = field(factory=list)
    remotes: list[RemoteConfig] = field(factory=list)
    workers: list[WorkerConfig] = field(factory=list)
    mcp_servers: list[McpServerConfig] = field(factory=list)
    emcl: EmclConfig | None = None
    #: Register the sample agents (echo, upper, count, sleep, fail) too.
    samples: bool = False


_converter = cattrs.Converter(forbid_extra_keys=True)


class _WrongType(TypeError):
    """A TOML value of the wrong kind; its message is the whole explanation."""


#: TOML's kinds of value in the file's words, most specific first (a bool is an int, a
#: datetime a date).
_KINDS: tuple[tuple[type, str], ...] = (
    (bool, "a boolean"), (int, "an integer"), (float, "a float"), (str, "a string"),
    (list, "an array"), (dict, "a table"), (datetime.datetime, "a date-time"),
    (datetime.date, "a date"), (datetime.time, "a time"),
)


def _kind(value: Any) -> str:
    """What a TOML value is, in the file's words."""
    for kind, words in _KINDS:
        if isinstance(value, kind):
            return words
    return type(value).__name__


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


#: The scalar types a setting or option may have: how to recognise their TOML values, and
#: what to call them in an error.
_SCALARS: dict[Any, tuple[Callable[[Any], bool], str]] = {
    bool: (lambda value: isinstance(value, bool), "true or false"),
    int: (_is_int, "an integer"),
    float: (_is_number, "a number"),
    str: (lambda value: isinstance(value, str), "a string"),
}


# cattrs converts what it can: 1 would become the name "1", "echo" the intents
# ["e", "c", "h", "o"], and true a frame limit of 1. A node file says what it means.


def _strict_scalar(value: Any, type_: Any) -> Any:
    admits, words = _SCALARS[type_]
    if not admits(value):
        raise _WrongType(f"expected {words}, not {_kind(value)}")
    return float(value) if type_ is float else value


def _is_list(type_: Any) -> bool:
    return get_origin(type_) is list


def _strict_list(value: Any, type_: Any) -> list[Any]:
    if not isinstance(value, list):
        raise _WrongType(f"expected an array, not {_kind(value)}")
    (item_type,) = get_args(type_)
    items: list[Any] = []
    errors: list[Exception] = []
    for i, item in enumerate(value):
        try:
            items.append(_converter.structure(item, item_type))
        except Exception as exc:  # gathered, as cattrs does, so each keeps its index
            exc.add_note(IterableValidationNote(f"Structuring {type_} @ index {i}", i,
                                                item_type))
            errors.append(exc)
    if errors:
        raise IterableValidationError(f"While structuring {type_!r}", errors, type_)
    return items


def _is_mapping(type_: Any) -> bool:
    return get_origin(type_) is dict


def _tables_only(structure: Callable[[Any, Any], Any], type_: Any) -> Callable[[Any, Any], Any]:
    """``structure``, refusing anything but a TOML table first (cattrs takes any mapping,
    or fails with its own wording)."""

    def structure_table(value: Any, _: Any) -> Any:
        if not isinstance(value, dict):
            raise _WrongType(f"expected a table, not {_kind(value)}")
        return structure(value, type_)

    return structure_table


def _mapping_hook(type_: Any) -> Callable[[Any, Any], Any]:
    return _tables_only(make_mapping_structure_fn(type_, _converter), type_)


def _table_hook(type_: Any) -> Callable[[Any, Any], Any]:
    return _tables_only(
        make_dict_structure_fn(type_, _converter, _cattrs_forbid_extra_keys=True), type_)


for _scalar in _SCALARS:
    _converter.register_structure_hook(_scalar, _strict_scalar)
_converter.register_structure_hook_func(_is_list, _strict_list)
_converter.register_structure_hook_factory(_is_mapping, _mapping_hook)
_converter.register_structure_hook_factory(attrs.has, _table_hook)


def _describe(exc: BaseException, type_: Any) -> str:
    """One error of a node file, in the file's terms (cattrs' own wording otherwise)."""
    if isinstance(exc, _WrongType):
        return str(exc)
    if get_origin(type_) is Literal:
        return "expected one of " + ", ".join(repr(v) for v in get_args(type_))
    text = cattrs.v.format_exception(exc, type_)
    return "expected a table" if text == "expected a mapping" else text


def parse_config(data: dict[str, Any]) -> NodeConfig:
    """The node ``data`` describes (a node file's tables), checked as far as it can be
    before anything starts; errors name the offending entry (``config.listeners[0]...``)."""
    try:
        config = _converter.structure(data, NodeConfig)
    except (cattrs.BaseValidationError, _WrongType) as exc:
        messages = cattrs.transform_error(exc, path="config", format_exception=_describe)
        # "message @ path" reads better the other way round, like the checks below
        raise ConfigError("; ".join(
            f"{path}: {message}"
            for message, _, path in (m.rpartition(" @ ") for m in messages))) from None
    for i, server in enumerate(config.mcp_servers):
        if bool(server.command) == bool(server.url):
            raise ConfigError(f"config.mcp_servers[{i}]: give either command or url")
    _check_numbers(config)
    _check_emcl(config)
    _check_options(config)
    return config


def _too_long(seconds: float | None) -> bool:
    return seconds is not None and MAX_TIMEOUT < seconds < math.inf


def _too_long_error(where: str, seconds: float) -> ConfigError:
    return ConfigError(f"{where}: must be at most {MAX_TIMEOUT:.0f} seconds (a year), "
                       f"not {seconds}")


def _check_numbers(config: NodeConfig) -> None:
    """Refuse deadlines no call could meet (TOML also writes nan and -inf), and finite ones
    beyond ``MAX_TIMEOUT``: they would fail every call at run time instead of the node at
    startup."""
    timeout = config.node.agent_timeout
    if timeout is not None and not timeout >= 0:
        raise ConfigError(f"config.node.agent_timeout: must be 0 (none) or more seconds, "
                          f"not {timeout}")
    if timeout is not None and _too_long(timeout):
        raise _too_long_error("config.node.agent_timeout", timeout)
    if config.node.max_frame_bytes < 1:
        raise ConfigError(f"config.node.max_frame_bytes: must be at least 1, "
                          f"not {config.node.max_frame_bytes}")
    timeouts = [*((f"config.agents[{i}].timeout", a.timeout)
                  for i, a in enumerate(config.agents)),
                *((f"config.remotes[{i}].timeout", r.timeout)
                  for i, r in enumerate(config.remotes)),
                *((f"config.mcp_servers[{i}].timeout", m.timeout)
                  for i, m in enumerate(config.mcp_servers))]
    for where, seconds in timeouts:
        if seconds is not None and not seconds > 0:
            raise ConfigError(f"{where}: must be more than 0 seconds, not {seconds}")
        if seconds is not None and _too_long(seconds):
            raise _too_long_error(where, seconds)


def _check_emcl(config: NodeConfig) -> None:
    users = [f"config.listeners[{i}]" for i, lc in enumerate(config.listeners)
             if lc.emcl != "off"]
    users += [f"config.remotes[{i}]" for i, rc in enumerate(config.remotes) if rc.emcl != "off"]
    users += [f"config.workers[{i}]" for i, wc in enumerate(config.workers) if wc.emcl != "off"]
    emcl = config.emcl
    if emcl is None:
        if users:
            raise ConfigError(f"{users[0]}: emcl needs an [emcl] section with its keys")
        return
    if not emcl.group_keys and emcl.static_key is None:
        raise ConfigError("config.emcl: give group_keys or a static_key")
    if emcl.seal_with is not None and emcl.seal_with not in emcl.group_keys:
        raise ConfigError(f"config.emcl.seal_with: {emcl.seal_with!r} is not in group_keys")
    if emcl.peers and emcl.static_key is None:
        raise ConfigError("config.emcl.peers: pair keys need this node's static_key")
    if not emcl.group_keys:  # pair keys only: everything sealed needs a known recipient
        for i, rc in enumerate(config.remotes):
            if rc.emcl != "off" and rc.emcl_peer is None:
                raise ConfigError(f"config.remotes[{i}]: with pair keys only, emcl needs "
                                  "emcl_peer (the remote's agent id in [emcl] peers)")
        for i, lc in enumerate(config.listeners):
            if lc.emcl != "off" and lc.options.get("distribute"):
                raise ConfigError(f"config.listeners[{i}]: sealed work for workers needs "
                                  "group_keys (any worker may take it)")


#: The callables a transport's ``options`` end up in, by transport module and role: their
#: keyword parameters are the keys an ``options`` table may hold (MXP's reach its driver).
_OPTION_TARGETS: dict[tuple[str, str], tuple[str, ...]] = {
    ("intentus_trio.transports.http", "listener"): (
        "intentus_trio.transports.http:serve", "intentus_trio.transports.http:make_config"),
    ("intentus_trio.transports.http", "remote"): ("intentus_trio.transports.http:HttpTransport",),
    ("intentus_trio.transports.websocket", "listener"): (
        "intentus_trio.transports.websocket:WebSocketServer",),
    ("intentus_trio.transports.websocket", "remote"): (
        "intentus_trio.transports.websocket:WebSocketClient",),
    ("intentus_trio.transports.zeromq", "listener"): (
        "intentus_trio.transports.zeromq:ZmqServer",),
    ("intentus_trio.transports.zeromq", "remote"): ("intentus_trio.transports.zeromq:ZmqClient",),
    ("intentus_trio.transports.zeromq", "worker"): (
        "intentus_trio.transports.zeromq:run_worker", "intentus_trio.transports.zeromq:Worker"),
    ("intentus_trio.transports.mxp", "listener"): (
        "intentus_trio.transports.mxp:MxpServer", "intentus_trio.mxp:Configuration",
        "intentus_trio.mxp:mxp_listen"),
    ("intentus_trio.transports.mxp", "remote"): (
        "intentus_trio.transports.mxp:MxpTransport", "intentus_trio.transports.mxp:MxpPool",
        "intentus_trio.mxp:Configuration", "intentus_trio.mxp:mxp_connect"),
}


def transport_options(url: str, role: Literal["listener", "remote", "worker"]
                      ) -> dict[str, Any] | None:
    """The ``options`` keys a listener, remote or worker at ``url`` takes, with their types
    (``Any`` where a type cannot be resolved); None when they cannot be known here (an
    unknown scheme or a missing extra is reported when the node starts)."""
    from .transports.registry import SCHEMES

    try:
        entry = SCHEMES.get(urlsplit(url).scheme.lower())
    except ValueError:
        return None  # a malformed URL: the transport says what is wrong with it
    targets = None if entry is None else _OPTION_TARGETS.get((entry.module, role))
    if targets is None:
        return None
    accepted: dict[str, Any] = {}
    for target in targets:
        module_name, _, name = target.partition(":")
        try:
            obj = getattr(importlib.import_module(module_name), name)
        except (ImportError, AttributeError):
            return None
        for key, type_ in _keywords(obj).items():
            accepted.setdefault(key, type_)  # the outermost callable's own annotation
    return accepted


def _keywords(obj: Any) -> dict[str, Any]:
    """``obj``'s keyword-only parameters (an attrs class: its fields with defaults)."""
    function: Any
    if attrs.has(obj):
        names = [f.name for f in attrs.fields(obj)
                 if f.init and f.default is not attrs.NOTHING]
        raw = {f.name: f.type for f in attrs.fields(obj)}
        function = obj
    else:
        function = obj.__init__ if inspect.isclass(obj) else obj
        parameters = inspect.signature(obj).parameters.values()
        names = [p.name for p in parameters
                 if p.kind is p.KEYWORD_ONLY and p.name != "task_status"]
        raw = {p.name: p.annotation for p in parameters}
    try:
        hints = get_type_hints(function)
    except Exception:  # a name only imported for type checkers: resolve one by one
        hints = {}
    module = vars(sys.modules.get(getattr(obj, "__module__", ""), types.ModuleType("_")))
    resolved: dict[str, Any] = {}
    for name in names:
        type_ = hints.get(name, raw.get(name, Any))
        if isinstance(type_, str):
            try:
                type_ = eval(type_, module)  # an annotation of our own code
            except Exception:
                type_ = Any  # unknown here: the transport checks the value
        resolved[name] = Any if type_ is inspect.Parameter.empty else type_
    return resolved


def _check_options(config: NodeConfig) -> None:
    tables: list[tuple[str, str, Literal["listener", "remote", "worker"], dict[str, Any]]] = [
        *((f"config.listeners[{i}].options", lc.url, "listener", lc.options)
          for i, lc in enumerate(config.listeners)),
        *((f"config.remotes[{i}].options", rc.url, "remote", rc.options)
          for i, rc in enumerate(config.remotes)),
        *((f"config.workers[{i}].options", wc.distributor, "worker", wc.options)
          for i, wc in enumerate(config.workers)),
    ]
    for where, url, role, options in tables:
        if not options:
            continue
        accepted = transport_options(url, role)
        if accepted is None:
            continue
        for key, value in options.items():
            if key not in accepted:
                scheme = url.partition(":")[0]
                close = difflib.get_close_matches(key, accepted, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ConfigError(f"{where}: unknown key {key!r}{hint}; a {role} at "
                                  f"{scheme}:// takes {', '.join(sorted(accepted))}")
            _check_value(f"{where}.{key}", value, accepted[key])


def _check_value(where: str, value: Any, type_: Any) -> None:
    """Refuse a value the option's parameter type does not admit, before anything starts:
    the transport would take it for an object and fail (or misbehave) only when used."""
    expected = _toml_kinds(type_)
    if expected is None:
        raise ConfigError(f"{where}: takes a Python object ({_type_name(type_)}), which a "
                          "node file cannot give; set it from Python, or leave it out")
    if not _admits(type_, value):
        raise ConfigError(f"{where}: expected {expected}, not {_kind(value)}")
    if where.endswith("timeout") and _is_number(value) and _too_long(value):
        raise _too_long_error(where, value)


_UNIONS = (Union, types.UnionType)
_MAPPINGS = (dict, collections.abc.Mapping, collections.abc.MutableMapping)
_ARRAYS = (list, collections.abc.Iterable, collections.abc.Sequence,
           collections.abc.Collection, collections.abc.MutableSequence)


def _toml_kinds(type_: Any) -> str | None:
    """The TOML values of ``type_``, in words; None when TOML can write none of them."""
    origin = get_origin(type_)
    if type_ is Any:
        return "any value"
    if type_ in _SCALARS:
        return _SCALARS[type_][1]
    if origin is Literal:
        return "one of " + ", ".join(repr(v) for v in get_args(type_))
    if origin in _UNIONS:
        kinds = [kind for kind in map(_toml_kinds, get_args(type_)) if kind is not None]
        return " or ".join(dict.fromkeys(kinds)) or None
    args = get_args(type_)
    if origin in _MAPPINGS:
        values = _toml_kinds(args[1]) if len(args) == 2 else "any value"
        if values is None:
            return None
        return "a table" if values == "any value" else f"a table of {_plural(values)}"
    if origin in _ARRAYS:
        items = _toml_kinds(args[0]) if args else "any value"
        if items is None:
            return None
        return "an array" if items == "any value" else f"an array of {_plural(items)}"
    return None


def _plural(kinds: str) -> str:
    return (kinds.replace("an integer", "integers").replace("a number", "numbers")
            .replace("a string", "strings").replace("true or false", "booleans"))


def _admits(type_: Any, value: Any) -> bool:
    """Whether the TOML value ``value`` is one of ``type_``'s (``_toml_kinds``)."""
    origin = get_origin(type_)
    if type_ is Any:
        return True
    if type_ in _SCALARS:
        return _SCALARS[type_][0](value)
    if origin is Literal:
        return any(value == v and type(value) is type(v) for v in get_args(type_))
    if origin in _UNIONS:
        return any(_admits(arg, value) for arg in get_args(type_))
    args = get_args(type_)
    if origin in _MAPPINGS:
        return isinstance(value, dict) and (
            len(args) != 2 or all(_admits(args[1], v) for v in value.values()))
    if origin in _ARRAYS:
        return isinstance(value, list) and (
            not args or all(_admits(args[0], v) for v in value))
    return False


def _type_name(type_: Any) -> str:
    """``type_`` as its annotation reads, without module paths."""
    if isinstance(type_, type) and not get_args(type_):
        return type_.__qualname__
    return re.sub(r"\b(?:\w+\.)+(\w+)", r"\1", str(type_))


def load_config(path: str | Path) -> NodeConfig:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    try:
        return parse_config(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def import_object(path: str) -> Any:
    """Import ``"package.module:attribute"``."""
    module_name, sep, attribute = path.partition(":")
    if not sep or not module_name or not attribute:
        raise ConfigError(f"handler {path!r} must look like 'package.module:function'")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import {module_name!r}: {exc}") from None
    for part in attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(f"{module_name!r} has no attribute {attribute!r}") from None
    return obj


def build_router(config: NodeConfig) -> Router:
    """A Router with the configured local agents registered (remotes need transports)."""
    from .samples import register_samples

    router = Router(name=config.node.name, default_timeout=config.node.agent_timeout or None)
    if config.samples:
        register_samples(router)
    for agent in config.agents:
        options: dict[str, Any] = {"version": agent.version, "description": agent.description}
        if agent.timeout is not None:
            options["timeout"] = agent.timeout
        try:
            router.register(agent.name, agent.intents, import_object(agent.handler), **options)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"agent {agent.name!r}: {exc}") from None
    return router
