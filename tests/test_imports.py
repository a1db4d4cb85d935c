"""The product runs from a model folder alone: importing every module of the `tierwise` package (but
`tierwise.training`, its own distribution) pulls in no training code, torch or transformers, since a
serve-only install has none of them."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

CHECK = """
import importlib, pkgutil, sys
import tierwise
for module in pkgutil.walk_packages(tierwise.__path__, "tierwise."):
    if module.name.startswith("tierwise.training") or module.name.startswith("tierwise.evidence.migrations."):
        continue
    importlib.import_module(module.name)
bad = sorted(
    m for m in sys.modules
    if m.startswith("tierwise.training") or m.split(".")[0] in ("training", "torch", "transformers", "tools")
)
print(len([m for m in sys.modules if m.startswith("tierwise.")]), ",".join(bad))
"""


@pytest.mark.slow
def test_the_product_imports_no_training_torch_or_transformers():
    result = subprocess.run(
        [sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=120, check=True
    )
    imported, bad = result.stdout.strip().partition(" ")[::2]
    assert int(imported) >= 30, f"only {imported} tierwise modules imported: the walk missed the package"
    assert bad == "", f"the product imported: {bad}"


REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "serving" / "tierwise"
# Which rooms each room may import. core is what a model folder needs; evidence is what the service
# records (decision log, shadow judge); ops is offline work, which nothing served depends on.
ALLOWED = {
    "core": {"core"},
    "evidence": {"core", "evidence"},
    "service": {"core", "evidence", "service"},
    "gateway": {"core", "evidence", "gateway"},
    "ops": {"core", "evidence", "ops"},
    "cli": {"core", "evidence", "ops", "service", "cli"},
}


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside a function."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def module_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.py") if "migrations" not in p.parts)


def room_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "tierwise" else None


def test_each_room_imports_only_the_rooms_below_it():
    wrong = []
    for path in module_files(PACKAGE):
        relative = path.relative_to(PACKAGE)
        if len(relative.parts) < 2:
            continue  # tierwise/__init__.py and __main__.py stand above every room
        room = relative.parts[0]
        for module in imported_modules(path):
            target = room_of(module)
            if target is not None and target not in ALLOWED[room] and target in ALLOWED:
                wrong.append(f"{relative} imports {module}")
    assert ALLOWED.keys() == {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert not wrong, "a room imports one it must not:\n" + "\n".join(sorted(set(wrong)))


def test_tools_use_no_test_code():
    # The benches' doubles live in tools/ (tools/doubles.py); tests may import tools, never the reverse.
    wrong = [
        f"{path.relative_to(REPO)} imports {module}"
        for path in module_files(REPO / "tools")
        for module in imported_modules(path)
        if module == "tests" or module.startswith("tests.")
    ]
    assert not wrong, "\n".join(sorted(set(wrong)))


def test_the_package_has_no_import_circle():
    graph: dict[str, set[str]] = {}
    for path in module_files(PACKAGE):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(relative.parts[:-1] if relative.name == "__init__" else relative.parts)
        graph[name] = {m for m in imported_modules(path) if m.startswith("tierwise.")}
    for name in graph:
        graph[name] = {m for m in graph[name] if m in graph and m != name}
    # depth-first search for a back edge; the path to it is the circle
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*trail[trail.index(nxt) :], nxt] if nxt in trail else [node, nxt]
            if nxt not in state and (found := visit(nxt, [*trail, nxt])):
                return found
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (circle := visit(start, [start])):
            pytest.fail("import circle: " + " -> ".join(circle))
