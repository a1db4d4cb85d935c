"""How the service gets a classifier (`ClassifierFactory`; the protocol it meets is
tierwise.core.decide.ClassifierLike), the default loader, and the warm-up run before a model serves
(the primary in state.py, the canary in canary.py)."""

from __future__ import annotations

from collections.abc import Callable

from tierwise.core.decide import ClassifierLike
from tierwise.service.settings import Settings

WARM_UP_TEXTS = [
    "hi",
    "Summarise the following paragraph in one sentence for a product update email to customers.",
    " ".join(["Prove that the algorithm terminates and analyse its complexity."] * 40),
]


ClassifierFactory = Callable[[Settings], ClassifierLike]


def load_tier_classifier(settings: Settings) -> ClassifierLike:
    from tierwise.core.classifier import TierClassifier  # onnxruntime is imported only when serving

    return TierClassifier(settings.model_dir, intra_op_threads=settings.onnx_threads)


def warm_up(classifier: ClassifierLike, max_batch_size: int) -> None:
    """Run the classifier on a few shapes so the first real requests do not pay for allocation."""
    for texts in ([WARM_UP_TEXTS[0]], WARM_UP_TEXTS, WARM_UP_TEXTS * max(1, max_batch_size // 3)):
        for _ in range(3):
            classifier.predict_proba(texts)
