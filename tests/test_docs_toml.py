"""Every node file shown in the README and docs is one ``intentus_trio.config`` accepts, so
the documented settings cannot drift from the code."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from intentus_trio.config import parse_config

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def node_files() -> list[tuple[str, str]]:
    blocks = []
    for path in DOCS:
        for i, block in enumerate(re.findall(r"```toml\n(.*?)```", path.read_text(), re.S)):
            if "[tool." not in block:  # pyproject snippets are not node files
                blocks.append((f"{path.relative_to(ROOT)}#{i}", block))
    return blocks


@pytest.mark.parametrize(("where", "block"), node_files(), ids=[w for w, _ in node_files()])
def test_documented_node_files_parse(where: str, block: str) -> None:
    parse_config(tomllib.loads(block))


def test_the_docs_show_node_files() -> None:
    assert len(node_files()) >= 5
