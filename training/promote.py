"""`make promote MODEL=name`: make models/<name> the default model, only if it passed its gate.

    python -m tierwise.training.promote --name candidate           # models/candidate -> models/default
    python -m tierwise.training.promote --name candidate --force   # promote despite a failed gate (says so)

The gate is the one `make train` recorded in the manifest (training/invariance.py `gate`): on
held-out sources the model must beat the prompt-length and TF-IDF baselines on macro-F1, bare and
under the evaluation-only wrappers. The old default is kept beside the new one as
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
    if gate is None:
        return [f"{model_dir} records no gate: retrain it with `make train` (older models have none)"]
    return list(gate.get("failures", [])) if not gate.get("passed") else []


def promote(candidate: Path, default: Path, force: bool = False) -> list[str]:
    """Copy `candidate` over `default` (keeping the old one as default.previous); returns the gate
    failures that `force` overrode."""
    if candidate.resolve() == default.resolve():
        raise PromotionRefused(f"{candidate} already is the default model folder")
    failures = gate_failures(candidate)
    if failures and not force:
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
        print(f"warning: promoted despite a failed gate: {failure}", file=sys.stderr)
    print(f"models/{args.name} is now models/default (the previous default is models/default.previous)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
