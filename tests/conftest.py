"""Fixtures shared by every test package: a tiny word-vector model folder and its classifier
(tests/helpers/tiny_model.py builds them in milliseconds, so tests never need trained weights)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tierwise.core.classifier import TierClassifier

from tests.helpers.tiny_model import write_model_folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_model_folder(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="session")
def tiny_classifier(tiny_model_dir: Path) -> TierClassifier:
    return TierClassifier(tiny_model_dir, intra_op_threads=1)
