"""The flags every `tierwise` subcommand spells the same way, with the service's defaults.

- `--input` names the file(s) a command reads, `--output` the file it writes, `--out-dir` the folder
  it writes several files into;
- `--model` is a model folder, `--policy` the routing policy YAML and `--db` the decision log's
  SQLAlchemy URL, defaulting to what the service uses (`tierwise.service.settings`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tierwise.core.policy_file import DEFAULT_POLICY_FILE
from tierwise.service.settings import DEFAULT_DECISION_DB, DEFAULT_MODEL_DIR, Settings


class UsageError(ValueError):
    """A command-line value that cannot be used; the message names the flag and what to pass."""


def add_input_files(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--input", type=Path, nargs="+", required=True, metavar="FILE", help=f"{what} (one or more files)"
    )


def add_input_file(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--input", type=Path, required=True, metavar="FILE", help=what)


def add_output_file(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--output", type=Path, required=True, metavar="FILE", help=what)


def add_out_dir(parser: argparse.ArgumentParser, default: Path) -> None:
    parser.add_argument(
        "--out-dir", type=Path, default=default, metavar="DIR", help=f"output folder (default: {default})"
    )


def add_model(parser: argparse.ArgumentParser, what: str = "model folder") -> None:
    parser.add_argument(
        "--model", type=Path, default=DEFAULT_MODEL_DIR, metavar="DIR", help=f"{what} (default: %(default)s)"
    )


def add_policy(parser: argparse.ArgumentParser, what: str = "routing policy YAML") -> None:
    parser.add_argument(
        "--policy",
        type=Path,
        default=DEFAULT_POLICY_FILE,
        metavar="YAML",
        help=f"{what} (default: the packaged policy.yaml)",
    )


def add_db(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db",
        default=None,
        metavar="URL",
        help=f"SQLAlchemy URL of the decision log (default: TIERWISE_DECISION_DB, else {DEFAULT_DECISION_DB})",
    )


def resolve_db(args: argparse.Namespace) -> None:
    """Fill in `--db` like the service does: TIERWISE_DECISION_DB, else the default SQLite file.

    Done when the command runs, not when the parser is built, so nothing is read at import time."""
    if getattr(args, "db", "") is None:
        args.db = Settings().decision_db
