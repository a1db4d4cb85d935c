"""`make promote MODEL=name`: make models/<name> the default model, only if it passed its gate.

    python -m tierwise.training.promote --name candidate           # models/candidate -> models/default
    python -m tierwise.training.promote --name candidate --force   # promote despite a failed gate (says so)

The gate is the one `make gate` recorded in the manifest (training/gate.py): held-out within-source
ranking above length and TF-IDF, the wrapper targets, held-out under-routing, hard requests not sent
cheap, a student's share of its teacher, and an idle service deciding a long-system-prompt request
with the encoder. A model that misses some lines is promoted only under the owner's fallback rule
(`make gate AGAINST=default`: wrapper, serve and hard-request lines, and no worse than the reference),
and the lines it misses are printed. The old default is kept beside the new one as
models/default.previous until the next promotion.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from tierwise.core.model_folder import MANIFEST_FILE, ModelFolderError, load_manifest
from tierwise.training import paths


class PromotionRefused(RuntimeError):
    """The candidate did not pass its gate (or has none); the message says why."""


def gate_failures(model_dir: Path) -> list[str]:
    load_manifest(model_dir)  # a folder serving could not load is never promoted
    raw = json.loads((model_dir / MANIFEST_FILE).read_text(encoding="utf-8"))
    gate = raw.get("gate")
    if gate is None or "lines" not in gate:
        return [f"{model_dir} records no promotion gate: run `make gate MODEL={model_dir.name}` first"]
    if gate.get("passed"):
        return []
    return list(gate.get("failures", []))


def fallback_allows(model_dir: Path) -> bool:
    """Whether the owner's fallback rule, recorded by `make gate AGAINST=...`, allows promotion."""
    raw = json.loads((model_dir / MANIFEST_FILE).read_text(encoding="utf-8"))
    return bool((raw.get("gate") or {}).get("fallback", {}).get("passed"))


def promote(candidate: Path, default: Path, force: bool = False) -> list[str]:
    """Copy `candidate` over `default` (keeping the old one as default.previous); returns the gate
    failures that `force` overrode."""
    if candidate.resolve() == default.resolve():
        raise PromotionRefused(f"{candidate} already is the default model folder")
    failures = gate_failures(candidate)
    if failures and not force and not fallback_allows(candidate):
        raise PromotionRefused("not promoted: " + "; ".join(failures))
    previous = default.with_name(default.name + ".previous")
    staged = default.with_name(default.name + ".staged")
    shutil.rmtree(staged, ignore_errors=True)
    shutil.copytree(candidate, staged)
    if default.exists():
        shutil.rmtree(previous, ignore_errors=True)
        default.rename(previous)
    staged.rename(default)
    return failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--name", required=True, help="the candidate folder under models/")
    parser.add_argument("--force", action="store_true", help="promote even if the gate failed")
    args = parser.parse_args(argv)
    models = paths.models_dir()
    try:
        overridden = promote(models / args.name, models / "default", args.force)
    except (PromotionRefused, ModelFolderError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for failure in overridden:
        print(f"warning: promoted with a gate line missed: {failure}", file=sys.stderr)
    print(f"models/{args.name} is now models/default (the previous default is models/default.previous)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
