"""Automatic request segments: which kind of traffic (which app, most likely) a request belongs to.

Quality control is per segment: a router that is fine on average can be wrong for one app. A caller
that sends a `route` names its segment; for the others the model folder ships `segments.npz`, k
centroids fitted at train time (`make segments`, `training/segments.py`) on the same hashed word 1-2
gram features the cheap estimator reads (`tierwise.core.estimator.hashed_features`). Those features,
not the encoder's embedding, because they exist even when the encoder misses its deadline and cost
well under a millisecond; a segment must be known for every request, shed or not.

A request's segment is its nearest centroid by cosine. Each centroid keeps only its heaviest
`max_terms` slots (re-normalised), so the file stays small and a request costs O(its nonzeros x k):
a dict from slot to a row of a small dense (used slots, k) table, built once at load.
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tierwise.core.estimator import hashed_features
from tierwise.core.model_folder import ModelFolderError
from tierwise.core.request_text import ClassifierInput

SEGMENTS_FILE = "segments.npz"
AUTO_PREFIX = "auto-"


def segment_names(k: int) -> tuple[str, ...]:
    """auto-00 .. auto-{k-1}, zero-padded so they sort in order."""
    width = max(2, len(str(k - 1)))
    return tuple(f"{AUTO_PREFIX}{i:0{width}d}" for i in range(k))


def segment_for(route: str | None, auto: str | None) -> str | None:
    """The caller's route when it sent one (non-empty), else the automatic segment."""
    return route if route else auto


@dataclass(frozen=True)
class SegmentModel:
    """k sparse centroids: centroid i has weight `weights[i, j]` at slot `slots[i, j]` (L2 norm 1;
    a centroid with fewer than m terms is padded with weight 0)."""

    slots: np.ndarray  # (k, m) int
    weights: np.ndarray  # (k, m) float32
    n_features: int
    names: tuple[str, ...]
    # slot -> row of `_table` ((used slots, k): each centroid's weight there); built in __post_init__.
    _rows: dict[int, int] = field(init=False, repr=False, compare=False)
    _table: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        slots, weights = np.asarray(self.slots), np.asarray(self.weights)
        if not np.issubdtype(slots.dtype, np.integer) or not np.issubdtype(weights.dtype, np.floating):
            raise ModelFolderError(
                f"segment slots must be integers ({slots.dtype}), weights floats ({weights.dtype})"
            )
        if slots.ndim != 2 or weights.shape != slots.shape or slots.shape[0] < 1:
            raise ModelFolderError(
                f"segment slots {slots.shape} and weights {weights.shape} must be one (k, m)"
            )
        if len(self.names) != slots.shape[0] or len(set(self.names)) != len(self.names):
            raise ModelFolderError(
                f"{len(self.names)} segment names for {slots.shape[0]} centroids (or repeats)"
            )
        if self.n_features < 1 or (slots.size and (slots.min() < 0 or slots.max() >= self.n_features)):
            raise ModelFolderError(f"segment slots fall outside 0..{self.n_features - 1}")
        if not np.all(np.isfinite(weights)):
            raise ModelFolderError("segment weights must be finite")
        keep = weights != 0
        used = np.unique(slots[keep])
        table = np.zeros((len(used), slots.shape[0]), dtype=np.float32)
        centroid = np.broadcast_to(np.arange(slots.shape[0])[:, None], slots.shape)
        table[np.searchsorted(used, slots[keep]), centroid[keep]] = weights[keep]
        object.__setattr__(self, "slots", slots.astype(np.int32))
        object.__setattr__(self, "weights", weights.astype(np.float32))
        object.__setattr__(self, "_rows", {int(s): i for i, s in enumerate(used)})
        object.__setattr__(self, "_table", table)

    @property
    def k(self) -> int:
        return len(self.names)

    @classmethod
    def from_centroids(
        cls, centroids: np.ndarray, max_terms: int, names: Sequence[str] | None = None
    ) -> SegmentModel:
        """Keep each dense centroid's (k, n_features) heaviest `max_terms` slots, re-normalised."""
        k, n_features = centroids.shape
        m = min(max_terms, n_features)
        top = np.argsort(-np.abs(centroids), axis=1, kind="stable")[:, :m]
        top.sort(axis=1)
        weights = np.take_along_axis(centroids, top, axis=1).astype(np.float64)
        norms = np.linalg.norm(weights, axis=1, keepdims=True)
        weights = np.divide(weights, norms, out=np.zeros_like(weights), where=norms > 0)
        return cls(top, weights.astype(np.float32), n_features, tuple(names or segment_names(k)))

    def scores(self, item: ClassifierInput) -> np.ndarray:
        """Cosine of the request with each centroid, (k,)."""
        features = hashed_features(item, self.n_features)
        rows = [(self._rows[s], w) for s, w in features.items() if s in self._rows]
        if not rows:
            return np.zeros(self.k, dtype=np.float32)
        index, values = zip(*rows, strict=True)
        return np.asarray(values, dtype=np.float32) @ self._table[list(index)]

    def assign(self, items: Sequence[ClassifierInput]) -> list[str]:
        """Each request's nearest centroid by cosine (ties and an all-zero row: the lowest index)."""
        return [self.names[int(np.argmax(self.scores(item)))] for item in items]

    @classmethod
    def load(cls, model_dir: Path) -> SegmentModel | None:
        """The folder's segments, or None for a folder without `segments.npz`."""
        path = Path(model_dir) / SEGMENTS_FILE
        if not path.is_file():
            return None
        fix = f"rerun `make segments MODEL={Path(model_dir).name}`"
        try:
            with np.load(path) as arrays:
                return cls(
                    arrays["slots"],
                    arrays["weights"],
                    int(arrays["n_features"]),
                    tuple(str(n) for n in arrays["names"]),
                )
        except ModelFolderError as err:
            raise ModelFolderError(f"{path}: {err}; {fix}.") from err
        except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as err:
            raise ModelFolderError(f"{path} is unreadable or incomplete ({err!r}); {fix}.") from err

    def save(self, path: Path) -> None:
        """Write the centroids as a compressed .npz (`load` reads it back from the folder)."""
        with open(path, "wb") as f:
            np.savez_compressed(
                f,
                slots=self.slots,
                weights=self.weights,
                n_features=np.int64(self.n_features),
                names=np.array(self.names, dtype=str),
            )
