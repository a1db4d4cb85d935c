"""A classifier double shared by the tests and the reliability suite (tools/reliability): one
classifier that can be told, after start-up, to misbehave."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np

MODES = ("ok", "raise", "sleep", "hang", "garbage")


class ControllableClassifier:
    """Wraps a real classifier; `mode` switches it, after start-up, to:

    - "raise": every call raises (as an onnxruntime failure would);
    - "sleep": every call takes `sleep_seconds` more (a slow classifier);
    - "hang": every call blocks until `release` is set (or 120 s pass);
    - "garbage": every call returns one row of probabilities too many (the wrong shape).

    `calls` records the batch size of every call.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.manifest = inner.manifest
        self.tiers = inner.tiers
        self.version = inner.version
        self.model_dir = inner.model_dir
        self.mode = "ok"
        self.sleep_seconds = 0.3
        self.release = threading.Event()
        self.calls: list[int] = []

    def count_tokens(self, texts: list[str]) -> list[int]:
        return self.inner.count_tokens(texts)

    def predict_proba(self, texts: list[str]) -> tuple[np.ndarray, list[int]]:
        self.calls.append(len(texts))
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.mode == "raise":
            raise RuntimeError("onnxruntime exploded")
        if self.mode == "sleep":
            time.sleep(self.sleep_seconds)
        elif self.mode == "hang":
            self.release.wait(timeout=120)
        elif self.mode == "garbage":
            return np.zeros((len(texts) + 1, len(self.tiers))), [0] * (len(texts) + 1)
        return self.inner.predict_proba(texts)
