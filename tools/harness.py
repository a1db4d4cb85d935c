"""What the tools share: where the checkout is (tools run from one, never from an installed wheel)."""

from __future__ import annotations

from pathlib import Path

REPO_DIR = Path(__file__).resolve().parents[1]
SERVING_DIR = REPO_DIR / "serving"
