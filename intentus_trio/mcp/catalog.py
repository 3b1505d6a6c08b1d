"""Which intents a Router publishes as MCP tools, with what description and input schema.

Policy:

* every literal intent name (``"echo"``) a registration handles is one tool, named after
  the intent; when several agents handle it, the one the router would pick describes it;
* wildcard patterns (``"math.*"``, ``"*"``) are not listed, since MCP tools are concrete
  names. A call to a name they match is still routed unless the server is told otherwise
  (``route_unlisted=False``), so clients that know the names can call them;
* names that are not valid MCP tool names (1-128 of ``A-Za-z0-9_.-``) are left out;
* the input schema is the registration's ``input_schema``; one without ``"type": "object"``
  at the top is given it (MCP requires object schemas), and a registration without a schema
  accepts any object.
"""

from __future__ import annotations

from typing import Any

from ..protocol.models import JsonObject
from ..routing.registry import Registration, Registry
from .adapter import META_AGENT, META_STREAMING, is_tool_name

ANY_OBJECT: JsonObject = {"type": "object"}


def _is_pattern(name: str) -> bool:
    return any(c in name for c in "*?[")


def tool_schema(registration: Registration) -> JsonObject:
    schema = registration.input_schema
    if not schema:
        return dict(ANY_OBJECT)
    if schema.get("type") == "object":
        return schema
    return {**schema, "type": "object"}


def tool_spec(name: str, registration: Registration) -> JsonObject:
    """The MCP ``Tool`` (wire JSON) for intent ``name`` served by ``registration``."""
    description = registration.description or f"Intent {name!r} (agent {registration.agent!r})"
    meta: dict[str, Any] = {META_AGENT: registration.agent}
    if registration.streaming:
        meta[META_STREAMING] = True
    return {"name": name, "description": description, "inputSchema": tool_schema(registration),
            "_meta": meta}


def tool_specs(registry: Registry, *, version: str = "1.0") -> list[JsonObject]:
    """The tools ``registry`` publishes right now, in registration order."""
    seen: set[str] = set()
    tools: list[JsonObject] = []
    for registration in registry:
        for pattern in registration.intents:
            name = pattern.name
            if name in seen or _is_pattern(name) or not is_tool_name(name):
                continue
            seen.add(name)
            best = registry.resolve(name, version)
            if best:
                tools.append(tool_spec(name, best[0]))
    return tools


def listed(registry: Registry, name: str, version: str = "1.0") -> bool:
    """Whether ``name`` is one of the tools ``tool_specs`` publishes."""
    if _is_pattern(name) or not is_tool_name(name):
        return False
    return any(not _is_pattern(p.name) and p.name == name
               for r in registry.resolve(name, version) for p in r.intents)
