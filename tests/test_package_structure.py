"""The shape of the jflow package, read from its source with `ast` (nothing is imported):

- no import circle among its modules (imports inside functions count too: they still tie the two modules),
  and the helpers at the bottom (jflow/*.py but the CLI) import no jflow package, so no circle runs
  through a package either (fsutil -> ownership -> artifact -> fsutil was one);
- the contract (jflow/artifact) runs no programs: machine probing lives in jflow/engines/machine.py;
- only jflow/runtime/backends/ names a concrete backend or runner class (everything else goes through the
  seam and `make_backend`);
- no module imports or uses another module's leading-underscore name (make it public, or move it);
- no `.get(..., {}).get(` chain: manifest sections are read through the typed accessors, which the
  contract checked, not dug out of dicts with defaults.
"""

from __future__ import annotations

import ast
import re
from functools import lru_cache
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "jflow"
BACKENDS = "jflow.runtime.backends"
CONCRETE = ("OnnxRuntimeBackend", "TensorRTBackend", "OrtRunner", "TrtRunner", "TensorRTRunner")
GET_CHAIN = re.compile(r"\.get\([^()\n]*,\s*\{\}\s*\)\s*\.get\(")


@lru_cache(maxsize=1)
def modules() -> dict[str, tuple[Path, ast.Module]]:
    """{dotted name: (file, its parsed source)} of every module of jflow (a package by its __init__)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = (path, ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
    return found


def _package_of(name: str) -> str:
    path = modules()[name][0]
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def _owner(dotted: str) -> str | None:
    """The jflow module `dotted` is, or lies in (jflow.a.b.func -> jflow.a.b); None outside jflow."""
    while dotted and dotted not in modules():
        dotted = dotted.rpartition(".")[0]
    return dotted or None


def imports(name: str) -> list[tuple[str, str, int]]:
    """(module imported, name imported from it or "", line) for every import in module `name`, module-level
    and inside functions, relative imports resolved; only imports of jflow modules."""
    found = []
    for node in ast.walk(modules()[name][1]):
        if isinstance(node, ast.Import):
            found += [(_owner(a.name), "", node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = _package_of(name).split(".")
                package = package[:len(package) - (node.level - 1)]
                base = ".".join(package + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.append((sub, "", node.lineno) if sub in modules() else (_owner(base), alias.name, node.lineno))
    return [(target, what, line) for target, what, line in found if target and target != name]


def import_graph() -> dict[str, set[str]]:
    return {name: {target for target, _, _ in imports(name)} for name in modules()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as [a, b, ..., a], or None (an iterative depth-first search)."""
    state = {}  # 1: on the current path, 2: done
    for start in sorted(graph):
        if start in state:
            continue
        path, todo = [start], [iter(sorted(graph[start]))]
        state[start] = 1
        while todo:
            step = next(todo[-1], None)
            if step is None:
                state[path.pop()] = 2
                todo.pop()
            elif state.get(step) == 1:
                return path[path.index(step):] + [step]
            elif step not in state:
                state[step] = 1
                path.append(step)
                todo.append(iter(sorted(graph[step])))
    return None


def test_the_cycle_finder_reports_a_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_every_module_is_read_and_imports_are_resolved():
    assert len(modules()) > 50 and "jflow.artifact.manifest" in modules()
    assert ("jflow.artifact.contract", "ArtifactError") in [(t, w) for t, w, _ in imports("jflow.artifact.manifest")]
    assert "jflow.fsutil" in import_graph()["jflow.artifact.writer"]


def test_no_import_circle():
    cycle = find_cycle(import_graph())
    assert cycle is None, f"import circle: {' -> '.join(cycle)}"


def test_helpers_import_no_jflow_package():
    helpers = [name for name, (path, _) in modules().items()
               if path.parent == PACKAGE and path.name != "__init__.py" and not name.startswith("jflow.cli")]
    upward = {name: sorted(t for t in import_graph()[name] if t != "jflow" and t not in helpers) for name in helpers}
    upward = {name: targets for name, targets in upward.items() if targets}
    assert "jflow.fsutil" in helpers and not upward, f"helpers importing jflow packages: {upward}"


def _stdlib_imports(tree: ast.AST) -> set[str]:
    """The top-level names of every module `tree` imports (subprocess, shutil, jflow, ...)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names.add((node.module or "").split(".")[0])
    return names


def test_the_contract_runs_no_programs():
    running = [name for name, (_, tree) in modules().items()
               if name.startswith("jflow.artifact") and {"subprocess", "shutil"} & _stdlib_imports(tree)]
    assert not running, f"jflow/artifact imports subprocess or shutil (probe the machine in jflow.engines): {running}"
    assert "subprocess" in _stdlib_imports(modules()["jflow.engines.machine"][1])


def _names(tree: ast.AST) -> set[str]:
    """Every identifier a module uses: names, attributes and what it imports."""
    used = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            used.add(node.id)
        elif isinstance(node, ast.Attribute):
            used.add(node.attr)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            used.update(a.name.rpartition(".")[2] for a in node.names)
    return used


def test_only_the_backends_package_names_a_concrete_backend():
    named = {name: sorted(_names(tree) & set(CONCRETE)) for name, (_, tree) in modules().items()
             if name != BACKENDS and not name.startswith(BACKENDS + ".")}
    named = {name: classes for name, classes in named.items() if classes}
    assert not named, "outside jflow/runtime/backends (use make_backend and the seam): " + "; ".join(
        f"{name} names {', '.join(classes)}" for name, classes in sorted(named.items()))


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _module_aliases(name: str) -> dict[str, str]:
    """{local name: jflow module} for the modules module `name` binds to names (import x as y, from p import m)."""
    aliases = {}
    for node in ast.walk(modules()[name][1]):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname and alias.name in modules():
                    aliases[alias.asname] = alias.name
                elif alias.name.startswith("jflow"):
                    aliases.setdefault("jflow", "jflow")
    for target, what, _ in imports(name):
        if not what:
            for node in ast.walk(modules()[name][1]):
                if isinstance(node, ast.ImportFrom):
                    for alias in node.names:
                        if target.endswith(f".{alias.name}"):
                            aliases[alias.asname or alias.name] = target
    return aliases


def _dotted(node: ast.AST) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return ".".join([node.id] + parts[::-1])


def private_uses(name: str) -> list[str]:
    """'line: what' for each use in module `name` of another jflow module's leading-underscore name."""
    found = [f"{line}: from {target} import {what}" for target, what, line in imports(name) if _private(what)]
    aliases = _module_aliases(name)
    for node in ast.walk(modules()[name][1]):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            base = _dotted(node.value)
            if base is None:
                continue
            head, _, rest = base.partition(".")
            module = aliases.get(head)
            module = module and (f"{module}.{rest}" if rest else module)
            if module in modules() and module != name:
                found.append(f"{node.lineno}: {base}.{node.attr}")
    return found


def test_the_private_name_finder_sees_both_spellings():
    tree = ast.parse("from jflow.artifact import manifest as m\nfrom jflow.fsutil import _probe\nm._links(1)\n")
    modules()["jflow._probe_example"] = (PACKAGE / "_probe_example.py", tree)
    try:
        assert private_uses("jflow._probe_example") == ["2: from jflow.fsutil import _probe", "3: m._links"]
    finally:
        del modules()["jflow._probe_example"]


def test_no_module_uses_another_modules_private_names():
    found = {name: private_uses(name) for name in modules()}
    found = {name: uses for name, uses in found.items() if uses}
    assert not found, "leading-underscore names used across modules (make them public or move them): " + "; ".join(
        f"{name} {', '.join(uses)}" for name, uses in sorted(found.items()))


def test_no_get_chains_with_empty_defaults():
    chains = [f"{path.relative_to(PACKAGE.parent)}:{number}: {line.strip()}"
              for path, _ in modules().values()
              for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if GET_CHAIN.search(line)]
    assert not chains, "read manifest sections through the typed accessors (manifest.engines, .tolerances, " \
                       "...): " + "; ".join(chains)
    assert GET_CHAIN.search('data.get("engines", {}).get("tensorrt")')
