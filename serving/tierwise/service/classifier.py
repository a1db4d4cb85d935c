"""What the service needs from a classifier (`ClassifierLike`, met by
`tierwise.core.classifier.TierClassifier` and by the tests' doubles), the default loader, and the
warm-up run before a model serves.

Both the service's state (state.py) and the canary (canary.py) hold classifiers, so the type lives
here, below both of them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from tierwise.core.escalation import EscalationQ
from tierwise.core.request_text import ClassifierInput
from tierwise.service.settings import Settings

WARM_UP_TEXTS = [
    "hi",
    "Summarise the following paragraph in one sentence for a product update email to customers.",
    " ".join(["Prove that the algorithm terminates and analyse its complexity."] * 40),
]


class ManifestLike(Protocol):
    raw: dict[str, Any]
    escalation_q: EscalationQ
    tier_offsets: tuple[float, ...]
    tiers: tuple[str, ...]


class ClassifierLike(Protocol):
    """What the service needs from `tierwise.core.classifier.TierClassifier`."""

    @property
    def manifest(self) -> ManifestLike: ...

    @property
    def tiers(self) -> tuple[str, ...]: ...

    @property
    def version(self) -> str: ...

    def predict_proba(self, texts: list[ClassifierInput]) -> tuple[np.ndarray, list[int]]: ...


ClassifierFactory = Callable[[Settings], ClassifierLike]


def load_tier_classifier(settings: Settings) -> ClassifierLike:
    from tierwise.core.classifier import TierClassifier  # onnxruntime is imported only when serving

    return TierClassifier(settings.model_dir, intra_op_threads=settings.onnx_threads)


def warm_up(classifier: ClassifierLike, max_batch_size: int) -> None:
    """Run the classifier on a few shapes so the first real requests do not pay for allocation."""
    for texts in ([WARM_UP_TEXTS[0]], WARM_UP_TEXTS, WARM_UP_TEXTS * max(1, max_batch_size // 3)):
        for _ in range(3):
            classifier.predict_proba(texts)
