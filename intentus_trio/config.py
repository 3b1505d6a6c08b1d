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

Unknown keys are errors, so a typo cannot silently drop a setting.
"""

from __future__ import annotations

import importlib
import tomllib
from pathlib import Path
from typing import Any, Literal

import cattrs
from attrs import field, frozen

from .routing.router import Router


class ConfigError(ValueError):
    """The configuration file is unreadable or does not describe a node."""


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


def _strict_bool(value: Any, _: type) -> bool:
    # cattrs would take bool("no") for True: a switch must be written true or false.
    if not isinstance(value, bool):
        raise TypeError(f"expected true or false, not {value!r}")
    return value


_converter.register_structure_hook(bool, _strict_bool)


def parse_config(data: dict[str, Any]) -> NodeConfig:
    try:
        config = _converter.structure(data, NodeConfig)
    except cattrs.BaseValidationError as exc:
        messages = "; ".join(cattrs.transform_error(exc, path="config"))
        raise ConfigError(messages) from None
    for i, server in enumerate(config.mcp_servers):
        if bool(server.command) == bool(server.url):
            raise ConfigError(f"config.mcp_servers[{i}]: give either command or url")
    _check_emcl(config)
    return config


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


def load_config(path: str | Path) -> NodeConfig:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    return parse_config(data)


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
