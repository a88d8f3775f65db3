"""The web package imports in one direction: no module imports one that imports it back.

Blueprints and socket events take the shared objects from web/services.py; only the factory
(web/app.py) imports the blueprints. Read from the source, so nothing is imported here.
"""

from __future__ import annotations

import ast
from pathlib import Path

WEB = Path(__file__).resolve().parents[2] / "web"


def _imports() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in WEB.glob("*.py"):
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "web":
                deps |= {f"web.{a.name}" for a in node.names}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("web."):
                deps.add(node.module or "")
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("web.")}
        graph[f"web.{path.stem}"] = deps
    return graph


def test_no_module_of_web_is_in_an_import_circle() -> None:
    graph = _imports()
    circles = []

    def visit(module: str, path: list[str]) -> None:
        for dep in sorted(graph.get(module, ())):
            if dep in path:
                circles.append([*path[path.index(dep) :], dep])
            elif dep not in done:
                done.add(dep)
                visit(dep, [*path, dep])

    done: set[str] = set()
    for module in sorted(graph):
        visit(module, [module])
    assert circles == []


def test_only_the_entry_points_import_the_factory() -> None:
    importers = {m for m, deps in _imports().items() if "web.app" in deps}
    assert importers <= {"web.wsgi"}
