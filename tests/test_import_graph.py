"""The import graph of ``proxy/``, read from the source with ``ast``: no cycle between
its packages, and the HTTP client libraries stay behind the upstream boundary.

A node is a package (``proxy.cache``) or a top-level module (``proxy.app``,
``proxy.config``); an edge is any import from one node into another, at module level
or inside a function (a deferred import hides a cycle from Python, not from a reader).
``TYPE_CHECKING`` imports count too: they are dependencies all the same.

Run it alone to print the graph: ``python -m tests.test_import_graph``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "proxy"
# Only these packages speak HTTP to upstream; everything above them sees typed results.
HTTP_CLIENTS = ("httpx", "h11", "httpcore")
HTTP_CLIENT_HOMES = ("proxy.upstream",)


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def node_of(module: str) -> str:
    """``proxy.cache.index`` -> ``proxy.cache``; ``proxy.app`` -> ``proxy.app``."""
    parts = module.split(".")
    return ".".join(parts[:2])


def imported(path: Path, root: Path = ROOT) -> Iterator[str]:
    """Every module ``path`` imports, anywhere in it, as absolute dotted names.

    ``from proxy import clock`` names the module ``proxy.clock`` when there is one;
    ``from proxy import USER_AGENT`` names ``proxy`` itself.
    """
    package = module_name(path, root)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    for statement in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(statement, ast.Import):
            yield from (alias.name for alias in statement.names)
        elif isinstance(statement, ast.ImportFrom):
            base = statement.module or ""
            if statement.level:
                anchor = package.rsplit(".", statement.level - 1)[0]
                base = f"{anchor}.{base}" if base else anchor
            for alias in statement.names:
                candidate = f"{base}.{alias.name}"
                yield candidate if _exists(candidate, root) else base


def _exists(module: str, root: Path) -> bool:
    if not module.startswith("proxy."):
        return False
    where = root.joinpath(*module.split(".")[1:])
    return where.with_suffix(".py").is_file() or (where / "__init__.py").is_file()


def sources() -> list[Path]:
    return sorted(ROOT.rglob("*.py"))


def graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for path in sources():
        source = node_of(module_name(path))
        targets = edges.setdefault(source, set())
        for name in imported(path):
            if name == "proxy" or name.startswith("proxy."):
                target = node_of(name)
                if target != source:
                    targets.add(target)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (as a closed path) per strongly connected component of two or more
    nodes (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(_path_within(set(component), edges))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def _path_within(component: set[str], edges: dict[str, set[str]]) -> list[str]:
    """A closed path through the component, from its first node back to it."""
    start = min(component)
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for target in sorted(edges.get(node, set()) & component):
            if target == start:
                return [*paths[node], start]
            if target not in paths:
                paths[target] = [*paths[node], target]
                queue.append(target)
    raise AssertionError("a strongly connected component without a cycle")


def http_client_imports() -> list[str]:
    """``module imports library`` for every HTTP client import outside its homes."""
    wrong = []
    for path in sources():
        module = module_name(path)
        if any(module == home or module.startswith(home + ".") for home in HTTP_CLIENT_HOMES):
            continue
        for name in imported(path):
            if name.split(".")[0] in HTTP_CLIENTS:
                wrong.append(f"{module} imports {name}")
    return wrong


def test_no_cycle_between_packages() -> None:
    found = cycles(graph())
    assert not found, "import cycles: " + "; ".join(" -> ".join(c) for c in found)


def test_http_clients_only_behind_the_upstream_boundary() -> None:
    assert not http_client_imports()


def test_the_checks_see_what_they_look_for(tmp_path: Path) -> None:
    """The parser finds function-level and relative imports, and a made-up cycle is
    reported: the two tests above cannot pass by seeing nothing."""
    edges = graph()
    assert {"proxy.upstream", "proxy.cache", "proxy.gar", "proxy.config"} <= edges["proxy.services"]
    assert "proxy.services" in edges["proxy.cli"]  # imported inside a function only
    made_up = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()}
    assert cycles(made_up) == [["a", "b", "c", "a"]]
    assert any("httpx" in line for line in _imports_of("import httpx\n", tmp_path))
    assert "proxy.cache" in _imports_of("def f():\n    from . import x\n", tmp_path, "cache")


def _imports_of(text: str, tmp_path: Path, package: str = "") -> list[str]:
    """What ``imported`` reads in a module with this text inside ``proxy/PACKAGE``."""
    root = tmp_path / "proxy"
    where = root / package
    where.mkdir(parents=True, exist_ok=True)
    (where / "__init__.py").write_text("")
    path = where / "probe.py"
    path.write_text(text)
    return list(imported(path, root))


if __name__ == "__main__":
    for node, targets in sorted(graph().items()):
        print(f"{node} -> {', '.join(sorted(targets))}")
