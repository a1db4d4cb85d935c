"""tools/code_shape.py on tiny trees in both layouts: module and function sizes, and import cycles
(imports inside functions and relative imports included)."""

from pathlib import Path
from textwrap import dedent

from tools.code_shape import import_graph, main, read_modules, render, strongly_connected

REPO = Path(__file__).resolve().parents[2]


def write(root: Path, files: dict[str, str]) -> Path:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dedent(text).lstrip("\n"), encoding="utf-8")
    return root


NEW_LAYOUT = {
    "serving/tierwise/__init__.py": "",
    "serving/tierwise/core/__init__.py": "",
    "serving/tierwise/core/policy.py": """
        from tierwise.core import rules


        class Policy:
            def decide(self):
                a = 1
                b = 2
                return a + b
        """,
    "serving/tierwise/core/rules.py": """
        def load():
            from .policy import Policy  # a cycle hidden in a function is still a cycle
            return Policy
        """,
    "serving/tierwise/service/__init__.py": "",
    "serving/tierwise/service/app.py": """
        import json
        import tierwise.core.policy


        def create_app():
            def handler():
                return 1

            return handler
        """,
    "training/__init__.py": "",
    "training/train.py": "from tierwise.training import labels\nfrom tierwise.core.rules import load\n",
    "training/labels.py": "TIERS = ('fast',)\n",
    "tools/__init__.py": "",
    "tools/bench.py": "from tierwise.service.app import create_app\n" + "x = 1\n" * 30,
    "serving/tierwise/__pycache__/stale.py": "import tierwise.core.policy\n",
}


def test_the_new_layout_names_modules_by_their_import_names(tmp_path):
    modules = read_modules(write(tmp_path, NEW_LAYOUT))
    assert set(modules) == {
        "tierwise",
        "tierwise.core",
        "tierwise.core.policy",
        "tierwise.core.rules",
        "tierwise.service",
        "tierwise.service.app",
        "tierwise.training",
        "tierwise.training.train",
        "tierwise.training.labels",
        "tools",
        "tools.bench",
    }
    assert modules["tools.bench"].lines == 31
    graph = import_graph(modules)
    assert graph["tierwise.service.app"] == {"tierwise.core.policy"}  # json is not under the root
    assert graph["tierwise.training.train"] == {"tierwise.training.labels", "tierwise.core.rules"}
    assert graph["tierwise.core.rules"] == {"tierwise.core.policy"}  # the relative import, resolved
    assert strongly_connected(graph) == [["tierwise.core.policy", "tierwise.core.rules"]]


def test_the_report_lists_sizes_qualified_names_and_the_cycle(tmp_path):
    text = render(read_modules(write(tmp_path, NEW_LAYOUT)), top=2)
    modules_table, functions_table, cycles_table = text.split("### ")[1:]
    assert modules_table.splitlines()[4:6] == [
        "| 31 | `tools.bench` | tools/bench.py |",
        "| 9 | `tierwise.service.app` | serving/tierwise/service/app.py |",
    ]
    assert functions_table.startswith("Largest functions (4 functions; 0 over 60 lines)")
    assert functions_table.splitlines()[4:6] == [
        "| 5 | `tierwise.service.app:create_app` | serving/tierwise/service/app.py:5 |",
        "| 4 | `tierwise.core.policy:Policy.decide` | serving/tierwise/core/policy.py:5 |",
    ]
    assert "| 2 | `tierwise.service.app:create_app.handler` | serving/tierwise/service/app.py:6 |" in render(
        read_modules(tmp_path), top=10
    )  # a nested function, named inside its parent
    cycle = "`tierwise.core.policy -> tierwise.core.rules`; `tierwise.core.rules -> tierwise.core.policy`"
    assert cycles_table.startswith("Import cycles (1;") and f"| 2 | {cycle} |" in cycles_table


def test_the_flat_layout_of_older_commits(tmp_path, capsys):
    write(
        tmp_path,
        {
            "serving/__init__.py": "",
            "serving/app.py": "from serving import canary\n",
            "serving/canary.py": "from serving.policy import decide\n",
            "serving/policy.py": "def decide():\n    return 1\n",
            "serving/migrations/env.py": "from serving.app import x\n",
            "training/__init__.py": "",
            "training/train.py": "import training.packaging\n",
            "training/packaging.py": "def export():\n    from training.train import run\n    return run\n",
        },
    )
    assert main(["--root", str(tmp_path), "--top", "3"]) == 0
    out = capsys.readouterr().out
    modules = read_modules(tmp_path)
    assert "serving.migrations.env" in modules and "training.packaging" in modules
    assert strongly_connected(import_graph(modules)) == [["training.packaging", "training.train"]]
    assert "| 2 | `training.packaging -> training.train`; `training.train -> training.packaging` |" in out
    assert "| 3 | `training.packaging:export` | training/packaging.py:1 |" in out


def test_a_tree_without_cycles_says_so_and_an_empty_root_is_an_error(tmp_path, capsys):
    write(tmp_path / "ok", {"tools/a.py": "import tools.b\n", "tools/b.py": "x = 1\n"})
    assert main(["--root", str(tmp_path / "ok")]) == 0
    assert "No import cycles." in capsys.readouterr().out
    assert main(["--root", str(tmp_path / "empty")]) == 2
    assert "no serving/, training/ or tools/" in capsys.readouterr().err


def test_it_reads_this_repository(capsys):
    assert main(["--root", str(REPO), "--top", "1000"]) == 0
    modules_table = capsys.readouterr().out.split("### Largest functions")[0]
    for module, path in [
        ("tierwise.core.text_encoding", "serving/tierwise/core/text_encoding.py"),
        ("tierwise.training.sources", "training/sources.py"),
        ("tools.code_shape", "tools/code_shape.py"),
    ]:
        assert f"` | {path} |" in modules_table and f"`{module}`" in modules_table, module
