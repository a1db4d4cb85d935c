"""One grammar for every `tierwise` subcommand: the same flag names and the service's defaults."""

import argparse

import pytest
from tierwise.cli.main import build_parser, main
from tierwise.cli.options import resolve_db
from tierwise.core.policy_file import DEFAULT_POLICY_FILE
from tierwise.service.settings import DEFAULT_DECISION_DB, DEFAULT_MODEL_DIR

# The shared flags each command must list (a command lists only those it uses).
SHARED_FLAGS = {
    ("classify",): ["--input", "--output", "--model", "--policy"],
    ("audit",): ["--input", "--out-dir", "--model", "--policy"],
    ("label",): ["--input", "--output", "--policy"],
    ("report",): ["--out-dir", "--model", "--policy", "--db"],
    ("export-feedback",): ["--output", "--policy", "--db"],
    ("db", "upgrade"): ["--db"],
}
# Spellings the grammar replaced; no command may accept them again.
RETIRED_FLAGS = ["--out", "--workers", "--model-dir"]


def help_text(command: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize(("command", "flags"), SHARED_FLAGS.items(), ids=" ".join)
def test_each_command_lists_the_shared_flags(command, flags, capsys):
    text = help_text(command, capsys)
    words = set(text.replace(",", " ").replace("[", " ").replace("]", " ").split())
    for flag in flags:
        assert flag in words, f"{' '.join(command)} --help does not list {flag}"
    for flag in RETIRED_FLAGS:
        assert flag not in words, f"{' '.join(command)} still accepts {flag}"


def test_the_top_level_help_shows_every_command(capsys):
    text = help_text((), capsys)
    for command in SHARED_FLAGS:
        assert command[0] in text


def test_model_and_policy_default_to_the_service_settings():
    parser = build_parser()
    classify = parser.parse_args(["classify", "--input", "in.jsonl", "--output", "out.jsonl"])
    audit = parser.parse_args(["audit", "--input", "a.jsonl", "b.txt"])
    report = parser.parse_args(["report"])
    for args in (classify, audit, report):
        assert args.model == DEFAULT_MODEL_DIR and args.policy == DEFAULT_POLICY_FILE
    assert [str(p) for p in audit.input] == ["a.jsonl", "b.txt"]


def test_db_defaults_like_the_service(monkeypatch):
    monkeypatch.delenv("TIERWISE_DECISION_DB", raising=False)
    args = argparse.Namespace(db=None)
    resolve_db(args)
    assert args.db == DEFAULT_DECISION_DB
    monkeypatch.setenv("TIERWISE_DECISION_DB", "sqlite:///elsewhere.sqlite")
    args = argparse.Namespace(db=None)
    resolve_db(args)
    assert args.db == "sqlite:///elsewhere.sqlite"
    given = argparse.Namespace(db="sqlite:///given.sqlite")
    resolve_db(given)
    assert given.db == "sqlite:///given.sqlite"


def test_audit_names_ray_actors_not_workers():
    args = build_parser().parse_args(["audit", "--input", "a.jsonl", "--engine", "ray", "--ray-actors", "3"])
    assert args.ray_actors == 3 and not hasattr(args, "workers")


def test_label_names_tier_models_apart_from_the_model_folder():
    args = build_parser().parse_args(
        [
            "label",
            "--input",
            "a.jsonl",
            "--output",
            "o.jsonl",
            "--tier-model",
            "fast=m1",
            "--tier-model",
            "balanced=m2",
        ]
    )
    assert args.tier_model == ["fast=m1", "balanced=m2"] and not hasattr(args, "model")
