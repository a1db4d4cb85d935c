"""The cheap estimator: hashed word n-grams of the task and one linear layer, for when the encoder
cannot answer in time.

Under load the encoder's queue can grow past the deadline. Answering "top tier" then saves nothing
exactly when traffic is highest, so the model folder ships a second, cheap scorer trained by
`make train` on the same rows (`training/estimator.py`): it reads only the task (the last user turn,
never the system prompt, so an app's wrapper cannot move it), costs well under a millisecond in
Python, and is calibrated and escalated like the encoder. Its answers carry the reason `estimated`.

Features (shared with training, which imports this module): lower-cased word and punctuation
tokens of the task's head and tail, unigrams and bigrams, plus a length bucket; each hashed with
CRC-32 into `n_features` slots, counted with sublinear tf and L2-normalised.
"""

from __future__ import annotations

import math
import re
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tierwise.core.decide import ClassifierLike
from tierwise.core.model_folder import ModelFolderError
from tierwise.core.request_text import ClassifierInput

ESTIMATOR_FILE = "estimator.npz"
DEFAULT_FEATURES = 2**18
TOKEN_PATTERN = re.compile(r"\w+|[^\w\s]")
# The estimator reads the head and tail of the task: past this, more text only costs time.
HEAD_CHARS = 3000
TAIL_CHARS = 1000


def task_tokens(task: str) -> list[str]:
    """Lower-cased word and punctuation tokens of the task's head and tail."""
    if len(task) > HEAD_CHARS + TAIL_CHARS:
        task = task[:HEAD_CHARS] + " " + task[-TAIL_CHARS:]
    return TOKEN_PATTERN.findall(task.lower())


def length_bucket(token_count: int) -> str:
    """A coarse length signal: log2 buckets of the task's token count (0, 1, 2-3, 4-7, ...)."""
    return f"__len{int(math.log2(token_count + 1))}"


def hashed_features(item: ClassifierInput, n_features: int) -> dict[int, float]:
    """{slot: weight} for one request: sublinear tf of hashed 1-2 grams, L2-normalised."""
    tokens = task_tokens(item.task)
    grams = [
        *tokens,
        *(f"{a} {b}" for a, b in zip(tokens, tokens[1:], strict=False)),
        length_bucket(len(tokens)),
    ]
    counts = Counter(zlib.crc32(g.encode("utf-8")) % n_features for g in grams)
    weights = {slot: 1.0 + math.log(c) for slot, c in counts.items()}
    norm = math.sqrt(sum(w * w for w in weights.values()))
    return {slot: w / norm for slot, w in weights.items()}


@dataclass(frozen=True)
class EstimatorSettings:
    """What `manifest.json["estimator"]` says about `estimator.npz`."""

    n_features: int
    temperature: float
    escalation_q: float
    # argmax(log P + tier_offsets), like the encoder's; chosen on val so that the estimator's decisions
    # agree with the encoder's (an overloaded service then routes, and costs, as an unloaded one).
    # Empty: the plain argmax (folders fitted before estimator offsets existed).
    tier_offsets: tuple[float, ...] = ()

    @classmethod
    def from_manifest(cls, raw: dict[str, Any], path: Path) -> EstimatorSettings:
        try:
            settings = cls(
                n_features=int(raw["n_features"]),
                temperature=float(raw["temperature"]),
                escalation_q=float(raw["escalation"]["q"]),
                tier_offsets=tuple(float(o) for o in raw["escalation"].get("tier_offsets", ())),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise ModelFolderError(
                f"{path}: manifest 'estimator' lacks or mangles {err}; rebuild it with "
                "`python -m tierwise.training.estimator --model <folder>`."
            ) from err
        if settings.n_features < 1 or settings.temperature <= 0 or not 0.0 <= settings.escalation_q <= 1.0:
            raise ModelFolderError(f"{path}: manifest 'estimator' has out-of-range values {settings}.")
        if not all(math.isfinite(o) for o in settings.tier_offsets):
            raise ModelFolderError(
                f"{path}: manifest 'estimator.escalation.tier_offsets' must be finite numbers, got "
                f"{settings.tier_offsets}; re-fit it with `python -m tierwise.training.estimator --model <folder>`."
            )
        return settings


class Estimator:
    """Calibrated tier probabilities from hashed n-grams: `weights` (n_features, K), `bias` (K,)."""

    def __init__(self, weights: np.ndarray, bias: np.ndarray, settings: EstimatorSettings) -> None:
        if weights.ndim != 2 or weights.shape[0] != settings.n_features or bias.shape != (weights.shape[1],):
            raise ModelFolderError(
                f"estimator weights {weights.shape} / bias {bias.shape} do not match "
                f"n_features {settings.n_features}; the folder mixes files from different runs."
            )
        if settings.tier_offsets and len(settings.tier_offsets) != weights.shape[1]:
            raise ModelFolderError(
                f"estimator tier_offsets {settings.tier_offsets} do not match its {weights.shape[1]} tiers; "
                "re-fit it with `python -m tierwise.training.estimator --model <folder>`."
            )
        self.weights = weights.astype(np.float32)
        self.bias = bias.astype(np.float64)
        self.settings = settings

    @classmethod
    def load(cls, model_dir: Path, manifest_raw: dict[str, Any]) -> Estimator | None:
        """The folder's estimator, or None for a folder trained before estimators existed."""
        section = manifest_raw.get("estimator")
        if section is None:
            return None
        path = Path(model_dir) / ESTIMATOR_FILE
        settings = EstimatorSettings.from_manifest(section, Path(model_dir) / "manifest.json")
        if not path.is_file():
            raise ModelFolderError(
                f"{model_dir} names an estimator but has no {ESTIMATOR_FILE}; re-run `make train`."
            )
        with np.load(path) as arrays:
            return cls(arrays["weights"], arrays["bias"], settings)

    @property
    def escalation_q(self) -> float:
        return self.settings.escalation_q

    @property
    def tier_offsets(self) -> tuple[float, ...] | None:
        """Offsets for the most likely tier (None: the plain argmax)."""
        return self.settings.tier_offsets or None

    def logits(self, items: Sequence[ClassifierInput | str]) -> np.ndarray:
        """Uncalibrated logits (N, K)."""
        out = np.tile(self.bias, (len(items), 1))
        for row, item in enumerate(items):
            item = item if isinstance(item, ClassifierInput) else ClassifierInput.plain(item)
            features = hashed_features(item, self.settings.n_features)
            slots = np.fromiter(features.keys(), dtype=np.int64, count=len(features))
            values = np.fromiter(features.values(), dtype=np.float64, count=len(features))
            out[row] += values @ self.weights[slots]
        return out

    def predict_proba(self, items: Sequence[ClassifierInput | str]) -> np.ndarray:
        """Calibrated probabilities (N, K), in tier order."""
        z = self.logits(items) / self.settings.temperature
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)


def estimator_for(classifier: ClassifierLike, enabled: bool = True) -> Estimator | None:
    """The estimator of the classifier's model folder; None when not `enabled`
    (TIERWISE_ESTIMATOR=false) or the folder was trained before estimators existed (then overload
    falls back to the top tier)."""
    if not enabled:
        return None
    return Estimator.load(Path(classifier.model_dir), classifier.manifest.raw)
