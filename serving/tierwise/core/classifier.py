"""The ONNX tier classifier: one code path for `tierwise classify`, the service and evaluation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from tierwise.core.escalation import (
    EscalationQ,
    cumulative_confidence,
    most_likely_tier,
    route_upward,
    routing_confidence,
)
from tierwise.core.model_folder import ONNX_FILE, TOKENIZER_FILE, Manifest, ModelFolderError, load_manifest
from tierwise.core.request_text import ClassifierInput
from tierwise.core.text_encoding import TextEncoder


@dataclass(frozen=True)
class TierPrediction:
    probabilities: dict[str, float]  # calibrated, per tier, in tier order
    predicted_tier: str  # most likely tier (argmax with the manifest's tier offsets), before escalation
    tier: str  # after the upward rule with the manifest's q
    confidence: float  # calibrated confidence in the tier (tierwise.core.escalation.routing_confidence)
    escalated: bool
    token_count: int  # full prompt length in tokens, before truncation


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


class TierClassifier:
    """Loads a model folder once; `predict_proba` and `classify` work on batches of texts."""

    def __init__(self, model_dir: Path, intra_op_threads: int = 0) -> None:
        self.model_dir = Path(model_dir)
        self.manifest: Manifest = load_manifest(self.model_dir)
        self.tiers = self.manifest.tiers
        self.encoder = TextEncoder.from_file(self.model_dir / TOKENIZER_FILE, self.manifest.truncation)
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # The arena keeps the peak of the largest batch ever seen; without it memory returns to the OS.
        options.enable_cpu_mem_arena = False
        try:
            self.session = ort.InferenceSession(
                str(self.model_dir / ONNX_FILE), options, providers=["CPUExecutionProvider"]
            )
        except Exception as err:  # onnxruntime raises its own Fail/InvalidGraph types
            raise ModelFolderError(
                f"{self.model_dir / ONNX_FILE} could not be loaded ({err}); re-export it with `make train`."
            ) from err
        self._input_names = {i.name for i in self.session.get_inputs()}
        n_out = self.session.get_outputs()[0].shape[-1]
        if isinstance(n_out, int) and n_out != len(self.tiers):
            raise ModelFolderError(
                f"{self.model_dir}: model.onnx outputs {n_out} logits but the manifest names "
                f"{len(self.tiers)} tiers; the folder mixes files from different runs."
            )

    @property
    def version(self) -> str:
        return self.manifest.version

    def _run_row(self, row: list[int]) -> np.ndarray:
        """One onnxruntime call on one encoded row, unpadded. -> (K,)

        Rows are never run together: a dynamically int8 quantized graph (what `make train` ships)
        takes each activation scale over the whole input tensor, padding included, so a row batched
        with others would score differently than alone and a logged decision could not be
        reproduced. One row per call is also no slower on a 2-core CPU (no padding work; the
        figures: `python -m tools.batch_invariance`)."""
        input_ids, attention_mask = self.encoder.pad([row])
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
        if "token_type_ids" in self._input_names:
            feeds["token_type_ids"] = np.zeros_like(input_ids)
        (logits,) = self.session.run(["logits"], feeds)
        return logits[0]

    def count_tokens(self, texts: Sequence[ClassifierInput | str]) -> list[int]:
        """The full token count of each request (every word of it), without running the model."""
        return self.encoder.count_tokens(texts)

    def logits(self, texts: Sequence[ClassifierInput | str]) -> tuple[np.ndarray, list[int]]:
        """Raw (uncalibrated) logits (N, K) and full token counts, in input order.

        A `str` is a bare prompt; a `ClassifierInput` is a request with its context. Each row's
        logits depend on that row alone, never on the others in `texts`."""
        rows, counts = self.encoder.encode_ids(texts)
        out = np.zeros((len(rows), len(self.tiers)), dtype=np.float64)
        for i, row in enumerate(rows):
            out[i] = self._run_row(row)
        return out, counts

    def predict_proba(self, texts: Sequence[ClassifierInput | str]) -> tuple[np.ndarray, list[int]]:
        """Calibrated probabilities (N, K) (temperature-scaled) and full token counts."""
        logits, counts = self.logits(texts)
        return softmax(logits / self.manifest.temperature), counts

    def classify(
        self, texts: Sequence[ClassifierInput | str], q: EscalationQ | None = None
    ) -> list[TierPrediction]:
        """Tier per text with the upward rule; q defaults to the one calibrated in training, the
        tier offsets are the manifest's."""
        q = self.manifest.escalation_q if q is None else q
        offsets = self.manifest.tier_offsets
        probs, counts = self.predict_proba(texts)
        chosen = route_upward(probs, q, offsets)
        cum = cumulative_confidence(probs)
        predicted = most_likely_tier(probs, offsets)
        return [
            TierPrediction(
                probabilities={t: float(p) for t, p in zip(self.tiers, row, strict=True)},
                predicted_tier=self.tiers[int(pred)],
                tier=self.tiers[int(c)],
                confidence=routing_confidence(cum[i], int(c)),
                escalated=bool(c > pred),
                token_count=int(counts[i]),
            )
            for i, (row, pred, c) in enumerate(zip(probs, predicted, chosen, strict=True))
        ]
