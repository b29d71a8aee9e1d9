"""Imports go one way, cli → pipeline → model, and no two modules import each other (directly or round
a loop). Every import statement counts, also those inside functions."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = {"model": 0, "pipeline": 1, "cli": 2}  # a module may import only its own layer or lower ones


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return "avtok." + ".".join(parts)


def imported_modules(path: Path) -> set[str]:
    """The avtok modules a file imports, resolved to full dotted names (relative imports included)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("avtok."))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("avtok."):
                continue
            found.add(target)
            # `from avtok.model import token_shards` names a module too
            found.update(f"{target}.{a.name}" for a in node.names if module_path(f"{target}.{a.name}"))
    return found


def module_path(name: str) -> Path | None:
    parts = name.split(".")[1:]
    for candidate in (ROOT.joinpath(*parts).with_suffix(".py"), ROOT.joinpath(*parts, "__init__.py")):
        if candidate.is_file():
            return candidate
    return None


def layer_of(name: str) -> int:
    return LAYERS[name.split(".")[1]]


def all_modules() -> list[Path]:
    return sorted(p for layer in LAYERS for p in (ROOT / layer).rglob("*.py"))


def import_graph() -> dict[str, set[str]]:
    graph = {}
    for path in all_modules():
        deps = {d for d in imported_modules(path) if module_path(d)}
        graph[module_name(path)] = {d for d in deps if not module_name(path).startswith(d + ".")} - {
            module_name(path)}
    return graph


def test_imports_point_down_the_layers() -> None:
    wrong = [f"{src} imports {dst}" for src, deps in import_graph().items() for dst in sorted(deps)
             if layer_of(dst) > layer_of(src)]
    assert wrong == []


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycles() -> None:
    assert find_cycle(import_graph()) is None


def test_checker_sees_a_wrong_way_import_and_a_cycle(tmp_path: Path) -> None:
    """The checker itself: a relative import from model/ into pipeline/ and a loop are both caught."""
    graph = {"avtok.model.a": {"avtok.pipeline.b"}, "avtok.pipeline.b": {"avtok.model.a"}}
    assert [s for s, d in graph.items() for t in d if layer_of(t) > layer_of(s)] == ["avtok.model.a"]
    assert find_cycle(graph) == ["avtok.model.a", "avtok.pipeline.b", "avtok.model.a"]
    # relative imports resolve against the file's package
    src = ROOT / "model" / "sampler.py"
    assert "avtok.model.geometry" in imported_modules(src)


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_every_module_is_seen(layer: str) -> None:
    assert any(module_name(p).startswith(f"avtok.{layer}.") for p in all_modules())
