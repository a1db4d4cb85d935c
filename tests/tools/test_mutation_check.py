"""tools/mutation_check.py: where a mutation goes in the source, and that the three still apply."""

from pathlib import Path

import pytest

from tools.mutation_check import FAILED_LINE, MUTATIONS, Mutation, mutated_source

REPO = Path(__file__).resolve().parents[2]

SOURCE = '''import numpy as np


def plain(x: int) -> int:
    return x + 1


class Box:
    def method(self, x: int) -> int:
        """Docstring."""
        y = x * 2
        return y
'''


def test_the_statements_go_first_in_the_body_after_the_docstring():
    plain = mutated_source(SOURCE, Mutation("m", "f.py", "plain", "return 0", ""))
    assert "def plain(x: int) -> int:\n    return 0\n    return x + 1\n" in plain
    method = mutated_source(SOURCE, Mutation("m", "f.py", "Box.method", "a = 1\nreturn a", ""))
    assert '"""Docstring."""\n        a = 1\n        return a\n        y = x * 2\n' in method
    namespace: dict = {}
    exec(compile(method, "f.py", "exec"), namespace)  # still runs: the method now answers 1
    assert namespace["Box"]().method(5) == 1


def test_a_function_that_moved_is_reported():
    with pytest.raises(LookupError, match="function gone not found"):
        mutated_source(SOURCE, Mutation("m", "f.py", "gone", "return 0", ""))
    with pytest.raises(LookupError, match="class Crate not found"):
        mutated_source(SOURCE, Mutation("m", "f.py", "Crate.method", "return 0", ""))


@pytest.mark.parametrize("mutation", MUTATIONS, ids=lambda m: m.name)
def test_each_mutation_still_applies_to_the_sources(mutation):
    source = (REPO / mutation.path).read_text(encoding="utf-8")
    mutated = mutated_source(source, mutation)
    assert mutated != source and mutation.body.splitlines()[0] in mutated


def test_failing_ids_are_read_from_the_short_summary():
    summary = (
        "FAILED tests/a.py::t[my card - 4111] - AssertionError: a - b\n"
        "ERROR tests/b.py::u\n"
        "FAILED tests/c.py::v - assert [1] == [2]\n"
    )
    assert FAILED_LINE.findall(summary) == ["tests/a.py::t[my card - 4111]", "tests/b.py::u", "tests/c.py::v"]
