"""The shape of the code: the largest modules and functions, and the import cycles between modules.

    python -m tools.code_shape [--root DIR] [--top N]

prints three markdown tables for the Python code under DIR (default: the working directory). It reads
both layouts the repository has had, so it can be run on a worktree of an older commit:

- today's: `serving/tierwise/**` is the `tierwise` package, `training/**` is `tierwise.training`;
- the flat one before it: `serving/**` is `serving`, `training/**` is `training`;

and `tools/**` as `tools` in both. Function sizes are `end_lineno - lineno + 1` of each `def` (its
decorators left out), named by their qualified name. An import cycle is a strongly connected component
of the graph whose edges are every `import` statement between these modules, those inside functions
or under `if TYPE_CHECKING:` included (a cycle hidden in a function is still a cycle). Importing
`a.b.c` counts as an edge to `a.b.c` only, not to the `a` and `a.b` packages it also runs.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

MODULE_LINES_LIMIT = 400
FUNCTION_LINES_LIMIT = 60
SKIPPED_FOLDERS = {"__pycache__", ".venv", "build", "dist"}


@dataclass(frozen=True)
class Function:
    name: str  # module:Class.method, module:outer.inner
    lines: int
    path: str
    line: int


@dataclass
class Module:
    name: str  # dotted import name
    path: Path
    relative_path: str
    lines: int
    is_package: bool  # an __init__.py
    tree: ast.Module = field(repr=False)


def layout_roots(root: Path) -> list[tuple[Path, str]]:
    """(folder, dotted prefix of the modules under it) of the layout found under `root`."""
    if (root / "serving" / "tierwise").is_dir():
        roots = [(root / "serving" / "tierwise", "tierwise"), (root / "training", "tierwise.training")]
    else:
        roots = [(root / "serving", "serving"), (root / "training", "training")]
    return [(folder, prefix) for folder, prefix in [*roots, (root / "tools", "tools")] if folder.is_dir()]


def python_files(folder: Path) -> Iterator[Path]:
    for path in sorted(folder.rglob("*.py")):
        relative = path.relative_to(folder)
        if not SKIPPED_FOLDERS.intersection(relative.parts[:-1]) and not any(
            part.endswith(".egg-info") for part in relative.parts
        ):
            yield path


def module_name(folder: Path, prefix: str, path: Path) -> str:
    parts = list(path.relative_to(folder).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([prefix, *parts])


def read_modules(root: Path) -> dict[str, Module]:
    """Every module of the layout under `root`, by its import name."""
    modules: dict[str, Module] = {}
    for folder, prefix in layout_roots(root):
        for path in python_files(folder):
            text = path.read_text(encoding="utf-8")
            name = module_name(folder, prefix, path)
            modules[name] = Module(
                name=name,
                path=path,
                relative_path=path.relative_to(root).as_posix(),
                lines=len(text.splitlines()),
                is_package=path.name == "__init__.py",
                tree=ast.parse(text, filename=str(path)),
            )
    return modules


def functions_of(module: Module) -> list[Function]:
    """Every function and method of a module (nested ones included), with its qualified name."""
    found: list[Function] = []

    def visit(node: ast.AST, scope: list[str]) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                qualified = ".".join([*scope, child.name])
                lines = (child.end_lineno or child.lineno) - child.lineno + 1
                found.append(
                    Function(f"{module.name}:{qualified}", lines, module.relative_path, child.lineno)
                )
                visit(child, [*scope, child.name])
            elif isinstance(child, ast.ClassDef):
                visit(child, [*scope, child.name])
            else:
                visit(child, scope)

    visit(module.tree, [])
    return found


def known_prefix(dotted: str, known: set[str]) -> str | None:
    """The longest leading part of `dotted` that is a module under the root."""
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in known:
            return candidate
    return None


def imported_names(module: Module) -> Iterator[str]:
    """Dotted names each import statement of the module may load (absolute, relative ones resolved)."""
    package = module.name if module.is_package else module.name.rpartition(".")[0]
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, node.module] if node.module else anchor)
            else:
                base = node.module or ""
            # `from a import b` loads the module a.b when there is one, else a name of a
            yield from (base if alias.name == "*" else f"{base}.{alias.name}" for alias in node.names)


def import_graph(modules: dict[str, Module]) -> dict[str, set[str]]:
    """Module -> the modules under the root it imports (itself left out)."""
    known = set(modules)
    graph: dict[str, set[str]] = {}
    for name, module in modules.items():
        targets = {known_prefix(imported, known) for imported in imported_names(module)}
        graph[name] = {t for t in targets if t is not None and t != name}
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's components with more than one module (the cycles), iteratively, each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            successor = next(successors, None)
            if successor is not None:
                if successor not in index:
                    index[successor] = low[successor] = len(index)
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(graph.get(successor, ())))))
                elif successor in on_stack:
                    low[node] = min(low[node], index[successor])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return sorted(components, key=lambda c: (-len(c), c))


def cycle_edges(component: list[str], graph: dict[str, set[str]]) -> list[str]:
    """The imports inside one cycle, `a -> b`, to show where to cut it."""
    members = set(component)
    return [f"{a} -> {b}" for a in component for b in sorted(graph[a] & members)]


def render(modules: dict[str, Module], top: int) -> str:
    """The three markdown tables."""
    by_size = sorted(modules.values(), key=lambda m: (-m.lines, m.name))
    functions = sorted(
        (f for m in modules.values() for f in functions_of(m)), key=lambda f: (-f.lines, f.name)
    )
    graph = import_graph(modules)
    cycles = strongly_connected(graph)
    over_modules = sum(1 for m in by_size if m.lines > MODULE_LINES_LIMIT)
    over_functions = sum(1 for f in functions if f.lines > FUNCTION_LINES_LIMIT)
    out = [
        f"### Largest modules ({len(modules)} modules, {sum(m.lines for m in by_size)} lines; "
        f"{over_modules} over {MODULE_LINES_LIMIT} lines)",
        "",
        "| lines | module | file |",
        "|---:|---|---|",
        *(f"| {m.lines} | `{m.name}` | {m.relative_path} |" for m in by_size[:top]),
        "",
        f"### Largest functions ({len(functions)} functions; {over_functions} over {FUNCTION_LINES_LIMIT} lines)",
        "",
        "| lines | function | where |",
        "|---:|---|---|",
        *(f"| {f.lines} | `{f.name}` | {f.path}:{f.line} |" for f in functions[:top]),
        "",
        f"### Import cycles ({len(cycles)}; imports inside functions counted)",
        "",
    ]
    if not cycles:
        return "\n".join([*out, "No import cycles.", ""])
    out += ["| modules | imports in the cycle |", "|---:|---|"]
    out += [f"| {len(c)} | {'; '.join(f'`{e}`' for e in cycle_edges(c, graph))} |" for c in cycles]
    return "\n".join([*out, ""])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("."), help="repository root (default: .)")
    parser.add_argument("--top", type=int, default=5, help="rows of each size table (default: 5)")
    args = parser.parse_args(argv)
    if args.top < 1:
        parser.error("--top must be at least 1")
    modules = read_modules(args.root)
    if not modules:
        print(f"{args.root}: no serving/, training/ or tools/ Python code found", file=sys.stderr)
        return 2
    print(render(modules, args.top), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
