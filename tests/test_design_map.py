"""``docs/DESIGN.md`` opens with a map of the code, one line per package and top-level
module of ``proxy/``; this keeps it in step with the tree, both ways."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# A map line starts with a path: ``proxy/cache/`` (a package) or ``proxy/app.py``.
ENTRY = re.compile(r"^([\w./-]+/|[\w./-]+\.py)\s{2,}\S")


def map_entries() -> list[str]:
    text = (ROOT / "docs" / "DESIGN.md").read_text()
    section = text.split("## Map of the code", 1)[1].split("\n## ", 1)[0]
    block = section.split("```", 2)[1]
    return [m.group(1) for line in block.splitlines() if (m := ENTRY.match(line))]


def proxy_tree() -> set[str]:
    """Every package under ``proxy/`` (a directory with ``__init__.py``) and every
    top-level module but ``__init__.py``."""
    proxy = ROOT / "proxy"
    packages = {
        f"{init.parent.relative_to(ROOT).as_posix()}/"
        for init in proxy.rglob("__init__.py")
        if init.parent != proxy
    }
    modules = {f"proxy/{path.name}" for path in proxy.glob("*.py") if path.name != "__init__.py"}
    return packages | modules


def test_the_map_names_every_package_and_module_once() -> None:
    entries = map_entries()
    assert len(entries) == len(set(entries)), "a path is named twice"
    mapped = {entry for entry in entries if entry.startswith("proxy/")}
    tree = proxy_tree()
    assert not tree - mapped, f"not on the map: {sorted(tree - mapped)}"
    assert not mapped - tree, f"on the map but not in proxy/: {sorted(mapped - tree)}"


def test_what_the_map_names_beside_proxy_exists() -> None:
    others = [entry for entry in map_entries() if not entry.startswith("proxy/")]
    assert others, "the map names nothing beside proxy/"
    assert all((ROOT / entry).exists() for entry in others), others


def test_the_map_is_read_as_written() -> None:
    """The parser sees the lines it checks: a package, a module, a continuation."""

    def entry(line: str) -> str | None:
        found = ENTRY.match(line)
        return found.group(1) if found else None

    assert entry("proxy/cache/             blob files") == "proxy/cache/"
    assert entry("proxy/app.py             create_app") == "proxy/app.py"
    assert entry("                         the one composition root") is None
    assert "proxy/upstream/lean/" in map_entries()
