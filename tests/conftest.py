"""Fixtures shared by every test package: a tiny word-vector model folder and its classifier
(tools/tiny_model.py builds them in milliseconds, so tests never need trained weights)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from tierwise.core.classifier import TierClassifier

from tools.tiny_model import write_model_folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_model_folder(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="session")
def tiny_classifier(tiny_model_dir: Path) -> TierClassifier:
    return TierClassifier(tiny_model_dir, intra_op_threads=1)


# A module that marks itself slow as a whole (`pytestmark = pytest.mark.slow`, or a list holding it)
# has no test the fast loop would run; not importing it saves seconds (torch, LiteLLM) per run.
ALL_SLOW = re.compile(r"^pytestmark = (\[[^\]]*)?pytest\.mark\.slow\b", re.M)


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if config.getoption("markexpr") != "not slow" or collection_path.suffix != ".py":
        return None
    if not collection_path.name.startswith("test_"):
        return None
    return True if ALL_SLOW.search(collection_path.read_text(encoding="utf-8")) else None
