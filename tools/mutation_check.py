"""`make mutation`: do the tests notice when a feature is removed? Three mutations, one table.

    python -m tools.mutation_check                      # the committed HEAD, three mutations
    python -m tools.mutation_check --rev HEAD~3         # an older commit (its own tests)
    python -m tools.mutation_check --baseline           # also run the unmutated suite first

Each mutation is applied to a fresh export of the commit (`git archive`) in a temporary folder, never
to this working tree: it inserts an early `return` at the top of one function, so the feature is
gone while the module still imports. The fast suite (`pytest -m "not slow"`) then runs there with
that copy's `serving/` first on the path, and the failing tests are counted. A mutation whose
function cannot be found stops the run (the source moved: update MUTATIONS).

- privacy: `detect_private_data` finds nothing (serving/tierwise/core/privacy.py);
- escalation: `route_upward` routes to the most likely tier, never above it (core/escalation.py);
- estimator: the estimator answers `fast` for every request (core/estimator.py).

Stdlib only. Exits 1 when a mutation fails no test.
"""

from __future__ import annotations

import argparse
import ast
import io
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SUMMARY = re.compile(r"(\d+) (failed|passed|errors?|skipped|deselected|xfailed|xpassed)")
FAILED_LINE = re.compile(r"^(?:FAILED|ERROR) ([^\s\[]+(?:\[.*?\])?)(?: - |$)", re.MULTILINE)  # -rfE lines


@dataclass(frozen=True)
class Mutation:
    name: str
    path: str  # relative to the repository root
    function: str  # a top-level function, or Class.method
    body: str  # statements inserted at the top of its body (after the docstring)
    what: str


MUTATIONS = (
    Mutation(
        "privacy",
        "serving/tierwise/core/privacy.py",
        "detect_private_data",
        "return []",
        "detect_private_data always returns []",
    ),
    Mutation(
        "escalation",
        "serving/tierwise/core/escalation.py",
        "route_upward",
        "return most_likely_tier(np.atleast_2d(probabilities), offsets)",
        "route_upward picks the most likely tier (no escalation)",
    ),
    Mutation(
        "estimator",
        "serving/tierwise/core/estimator.py",
        "Estimator.predict_proba",
        "fast = np.zeros((len(items), self.weights.shape[1]))\nfast[:, 0] = 1.0\nreturn fast",
        "the estimator answers fast for every request",
    ),
)


def find_function(tree: ast.Module, dotted: str) -> ast.FunctionDef | ast.AsyncFunctionDef:
    scope: list[ast.stmt] = tree.body
    *owners, name = dotted.split(".")
    for owner in owners:
        classes = [n for n in scope if isinstance(n, ast.ClassDef) and n.name == owner]
        if not classes:
            raise LookupError(f"class {owner} not found")
        scope = classes[0].body
    for node in scope:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == name:
            return node
    raise LookupError(f"function {dotted} not found")


def mutated_source(source: str, mutation: Mutation) -> str:
    """`source` with `mutation.body` as the first statements of its function (after a docstring)."""
    function = find_function(ast.parse(source), mutation.function)
    first = function.body[0]
    has_docstring = (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
    )
    lines = source.splitlines(keepends=True)
    if has_docstring and len(function.body) == 1:  # a docstring-only body: insert after it
        anchor, at = first, first.end_lineno or first.lineno
    else:
        anchor = function.body[1] if has_docstring else first
        at = anchor.lineno - 1
    indent = " " * anchor.col_offset
    inserted = "".join(f"{indent}{line}\n" for line in mutation.body.splitlines())
    result = "".join(lines[:at]) + inserted + "".join(lines[at:])
    ast.parse(result)  # still valid Python
    return result


def export(rev: str, folder: Path) -> None:
    """The commit's tracked files into `folder` (nothing of this working tree is touched)."""
    archive = subprocess.run(["git", "archive", rev], cwd=REPO, capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    # tierwise.training is an editable install pointing at this checkout's training/: a link inside
    # the copy's package makes `import tierwise.training` find the copy's first.
    link = folder / "serving" / "tierwise" / "training"
    if not link.exists():
        link.symlink_to(Path("..", "..", "training"), target_is_directory=True)


def copy_env(copy: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIERWISE_")}
    env["PYTHONPATH"] = os.pathsep.join([str(copy / "serving"), str(copy)])
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def check_imports(copy: Path) -> None:
    """Refuse to count anything unless the copy's code is what the tests import."""
    probe = "import tierwise, tierwise.training; print(tierwise.__file__); print(tierwise.training.__file__)"
    out = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=copy,
        env=copy_env(copy),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    outside = [f for f in out if not Path(f).resolve().is_relative_to(copy.resolve())]
    if outside:
        raise SystemExit(f"mutation check: the copy imports {outside} from outside {copy}; nothing counted")


@dataclass
class Outcome:
    name: str
    what: str
    failed: int
    passed: int
    seconds: float
    failing: list[str]


def run_suite(copy: Path, name: str, what: str, pytest_args: list[str]) -> Outcome:
    started = time.monotonic()
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "not slow", "-p", "no:cacheprovider", "-rfE", "tests"]
    result = subprocess.run(cmd + pytest_args, cwd=copy, env=copy_env(copy), capture_output=True, text=True)
    tail = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    counts: dict[str, int] = {}
    for number, kind in SUMMARY.findall(tail):
        counts[kind.rstrip("s") if kind.startswith("error") else kind] = int(number)
    if result.returncode not in (0, 1):  # 2: interrupted / collection errors, 3+: internal or usage
        sys.stderr.write(result.stdout[-3000:] + result.stderr[-3000:])
        raise SystemExit(f"mutation check: pytest exited {result.returncode} under {name}")
    failing = sorted(set(FAILED_LINE.findall(result.stdout)))
    return Outcome(
        name,
        what,
        counts.get("failed", 0) + counts.get("error", 0),
        counts.get("passed", 0),
        time.monotonic() - started,
        failing,
    )


def render(rev: str, outcomes: list[Outcome]) -> str:
    lines = [
        f"Mutation check of {rev} (pytest -m 'not slow', each mutation in a fresh copy)",
        "",
        "| mutation | what it removes | tests failing | tests passing | seconds |",
        "|---|---|---:|---:|---:|",
    ]
    lines += [f"| {o.name} | {o.what} | {o.failed} | {o.passed} | {o.seconds:.0f} |" for o in outcomes]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rev", default="HEAD", help="the commit to export and mutate (default HEAD)")
    parser.add_argument("--only", action="append", choices=[m.name for m in MUTATIONS], help="repeatable")
    parser.add_argument("--baseline", action="store_true", help="first run the suite unmutated")
    parser.add_argument("--list", action="store_true", help="also print every failing test id")
    parser.add_argument("pytest_args", nargs="*", help="after --: more pytest arguments (e.g. -x)")
    args = parser.parse_args(argv)
    rev = subprocess.run(
        ["git", "rev-parse", "--short", args.rev], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.strip()
    chosen = [m for m in MUTATIONS if not args.only or m.name in args.only]
    plan: list[Mutation | None] = [None, *chosen] if args.baseline else list(chosen)
    outcomes: list[Outcome] = []
    for mutation in plan:
        with tempfile.TemporaryDirectory(prefix="tierwise-mutation-") as work:
            copy = Path(work)
            export(rev, copy)
            if mutation is not None:
                target = copy / mutation.path
                try:
                    target.write_text(mutated_source(target.read_text(encoding="utf-8"), mutation), "utf-8")
                except (LookupError, FileNotFoundError) as err:
                    raise SystemExit(f"mutation {mutation.name}: {err} in {mutation.path} at {rev}") from err
            check_imports(copy)
            name, what = (
                ("none", "(the unmutated suite)") if mutation is None else (mutation.name, mutation.what)
            )
            print(f"mutation check: {name} ...", file=sys.stderr, flush=True)
            outcome = run_suite(copy, name, what, args.pytest_args)
            outcomes.append(outcome)
            if args.list:
                print("\n".join(f"  {name}: {t}" for t in outcome.failing), file=sys.stderr, flush=True)
    print(render(rev, outcomes))
    survivors = [o.name for o in outcomes if o.name != "none" and o.failed == 0]
    if survivors:
        print(f"no test noticed: {', '.join(survivors)}", file=sys.stderr)
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
