"""JSON Schemas (draft 2020-12) of the wire shapes, shipped inside the package.

They describe what the codec accepts and emits, for other SDKs and for validation at the
edges; the codec itself does not use them (it is faster hand-written).
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

SCHEMA_NAMES = (
    "intent-envelope",
    "agent-response",
    "event",
    "emcl-envelope",
    "transport-envelope",
)
SCHEMA_ID_PREFIX = "urn:intentus-trio:schema:"


@cache
def load_schema(name: str) -> dict[str, Any]:
    """The schema called ``name`` (one of SCHEMA_NAMES) as a dict."""
    if name not in SCHEMA_NAMES:
        raise KeyError(f"no schema named {name!r}; known: {', '.join(SCHEMA_NAMES)}")
    text = resources.files(__package__).joinpath("schemas", f"{name}.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema
