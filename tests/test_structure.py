"""The package's shape: imports run one way (no cycle, through __init__ too), and no lens
kind's name is compared outside the lens registry."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "lensreport"


def _module_name(path: Path, package: Path) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, package_root: Path) -> set[str]:
    """Every lensreport module this file imports (type-checking-only imports excluded),
    with the packages whose __init__ each import runs."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    name = _module_name(path, package_root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    skipped = {id(node) for block in ast.walk(tree) if isinstance(block, ast.If)
               and "TYPE_CHECKING" in ast.unparse(block.test) for node in ast.walk(block)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")
            if node.level:
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            targets = [target] + [f"{target}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            continue
        for target in targets:
            if target == "lensreport" or target.startswith("lensreport."):
                found.add(target)
    return found


def _graph(root: Path) -> dict[str, set[str]]:
    modules = {_module_name(p, root): p for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = set()
        for target in _imports(path, root):
            if target not in modules:
                continue  # a name imported from a module, not a module
            edges.add(target)
            # Importing a.b.c runs a/__init__ and a/b/__init__ first (a module's own
            # packages are already running when it is imported).
            parts = target.split(".")
            edges.update(prefix for i in range(1, len(parts))
                         if (prefix := ".".join(parts[:i])) in modules
                         and not name.startswith(prefix + "."))
        edges.discard(name)
        graph[name] = edges
    return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
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


def test_the_import_graph_has_no_cycle():
    graph = _graph(PACKAGE)
    assert len(graph) > 30 and graph["lensreport.cli"]  # the walk found the package
    cycle = _find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_check_sees_a_cycle_through_init(tmp_path):
    """The check above must be able to fail: b imports the package, whose __init__ imports a,
    which imports b."""
    package = tmp_path / "lensreport"
    package.mkdir()
    (package / "__init__.py").write_text("from .a import x\n")
    (package / "a.py").write_text("from .b import y\n")
    (package / "b.py").write_text("from lensreport import z\n")
    cycle = _find_cycle(_graph(package))
    assert cycle and set(cycle) == {"lensreport", "lensreport.a", "lensreport.b"}, cycle


def test_no_lens_kind_is_compared_outside_the_registry():
    kinds = PACKAGE / "lens" / "kinds"
    pattern = re.compile(r"""(==|!=|\bin\b)\s*\(?\s*["'](logit|raw|tuned|jacobian)["']|"""
                         r"""["'](logit|raw|tuned|jacobian)["']\s*(==|!=|\bin\b)""")
    offenders = [f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}"
                 for path in PACKAGE.rglob("*") if path.suffix in (".py", ".js", ".html")
                 and kinds not in path.parents
                 for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
                 if pattern.search(line) or re.search(r"===\s*'(logit|raw|tuned)'", line)]
    assert not offenders, offenders
