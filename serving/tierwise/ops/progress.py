"""A progress bar on stderr for the long batch commands (audit, label); a silent one without tqdm."""

from __future__ import annotations

import sys
from typing import Protocol


class Progress(Protocol):
    def update(self, n: int) -> object: ...

    def close(self) -> object: ...


class NoProgress:
    """The bar when none is wanted (--no-progress) or tqdm is not installed."""

    def update(self, n: int) -> None:
        return None

    def close(self) -> None:
        return None


def progress_bar(total: int, show: bool, description: str) -> Progress:
    """A tqdm bar of `total` requests named `description`, or a silent stand-in."""
    if not show:
        return NoProgress()
    try:
        from tqdm import tqdm
    except ImportError:
        return NoProgress()
    return tqdm(total=total, unit="req", desc=description, file=sys.stderr, dynamic_ncols=True, smoothing=0.1)
