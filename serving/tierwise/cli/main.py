"""The `tierwise` command: one entry point, one grammar, one error handler.

    tierwise classify --input requests.jsonl --output routed.jsonl   # route requests offline
    tierwise audit --input LOG [LOG ...] --out-dir runs/audit        # what routing would save on your logs
    tierwise label --input LOG [LOG ...] --output labeled.jsonl      # judge-labeled training rows
    tierwise report --out-dir runs/report                            # the decision log's routing report
    tierwise export-feedback --output feedback.jsonl                 # feedback as training rows
    tierwise db upgrade                                              # migrate the decision log

Every command spells its flags the same way (tierwise/cli/options.py): `--input`/`--output` for files,
`--out-dir` for folders, `--model`, `--policy` and `--db` with the service's defaults. A mistake
(a missing file, a bad policy, an unreadable flag value) ends with one `error:` line and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, NoReturn

from tierwise.cli.analytics import add_analytics_commands
from tierwise.cli.audit import add_audit_command
from tierwise.cli.classify import add_classify_command
from tierwise.cli.label import add_label_command
from tierwise.cli.options import UsageError, resolve_db

USAGE_ERROR_EXIT = 2


def user_error_types() -> tuple[type[BaseException], ...]:
    """The errors whose message tells the user what to change: shown as one line, never a traceback.

    Imported only once an error happened, so a command does not load the decision log's database
    stack (or the labeler's HTTP client) to start."""
    from tierwise.core.model_folder import ModelFolderError
    from tierwise.core.policy import PolicyError, UnknownTierError
    from tierwise.core.request_text import RequestTextError
    from tierwise.evidence.decision_log import DecisionLogError
    from tierwise.evidence.llm_api import LLMConfigError
    from tierwise.ops.label_plan import LabelError
    from tierwise.ops.request_logs import AuditError

    return (
        UsageError,
        PolicyError,
        UnknownTierError,
        ModelFolderError,
        RequestTextError,
        AuditError,
        LabelError,
        LLMConfigError,
        DecisionLogError,
        FileNotFoundError,
        IsADirectoryError,
        NotADirectoryError,
        PermissionError,
    )


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse, but a flag mistake is one `error:` line too (argparse prints the usage block first),
    and flags are matched whole: an abbreviation (`--out` for `--out-dir`) would keep retired
    spellings alive. Subcommand parsers inherit the class."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"error: {self.prog}: {message} (see {self.prog} --help)\n")
        sys.exit(USAGE_ERROR_EXIT)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="tierwise", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    add_classify_command(sub)
    add_audit_command(sub)
    add_label_command(sub)
    add_analytics_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        resolve_db(args)
        return int(args.func(args))
    except Exception as err:
        if not isinstance(err, user_error_types()):
            raise  # a bug, not a user error: the traceback is what to report
        message = " ".join(str(err).split()) or type(err).__name__  # one line, whatever the message held
        sys.stderr.write(f"error: {message}\n")
        return USAGE_ERROR_EXIT


if __name__ == "__main__":
    sys.exit(main())
