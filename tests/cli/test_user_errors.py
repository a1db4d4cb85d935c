"""Every user error of the `tierwise` command is one `error:` line on stderr and exit code 2."""

import pytest
from tierwise.cli.main import main


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("error: ") and "Traceback" not in err[0]
    return err[0]


def test_an_unreadable_since_is_one_line(tmp_path, capsys):
    db = f"sqlite:///{tmp_path / 'd.sqlite'}"
    code = main(["export-feedback", "--since", "bogus", "--db", db, "--output", str(tmp_path / "f.jsonl")])
    assert code == 2
    line = one_error_line(capsys)
    assert "--since 'bogus'" in line and "7d" in line


def test_a_missing_or_retired_flag_is_one_line(capsys):
    for argv in (["export-feedback", "--since", "bogus"], ["audit", "--input", "a.jsonl", "--out", "runs/x"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        line = one_error_line(capsys)
        assert ("--output" in line or "unrecognized arguments: --out " in line) and "--help" in line


def test_an_unreadable_until_names_its_own_flag(tmp_path, capsys):
    db = f"sqlite:///{tmp_path / 'd.sqlite'}"
    assert main(["report", "--until", "later", "--db", db, "--out-dir", str(tmp_path / "r")]) == 2
    assert "--until 'later'" in one_error_line(capsys)


def test_a_missing_policy_is_one_line(tmp_path, capsys):
    db = f"sqlite:///{tmp_path / 'd.sqlite'}"
    assert main(["report", "--policy", "/nope.yaml", "--db", db, "--out-dir", str(tmp_path / "r")]) == 2
    assert "policy file /nope.yaml does not exist" in one_error_line(capsys)


def test_the_installed_script_exits_2_with_one_line(tmp_path):
    import subprocess
    import sys

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tierwise",
            "report",
            "--policy",
            "/nope.yaml",
            "--db",
            f"sqlite:///{tmp_path}/d.db",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and result.stderr.startswith("error: ")


def test_a_missing_model_folder_is_one_line(tmp_path, capsys):
    requests = tmp_path / "r.jsonl"
    requests.write_text('{"text": "hi"}\n')
    code = main(
        [
            "classify",
            "--input",
            str(requests),
            "--output",
            str(tmp_path / "o"),
            "--model",
            str(tmp_path / "no"),
        ]
    )
    assert code == 2 and "make train" in one_error_line(capsys)


def test_a_missing_input_file_is_one_line(tiny_model_dir, tmp_path, capsys):
    missing = tmp_path / "missing.jsonl"
    code = main(
        ["classify", "--input", str(missing), "--output", str(tmp_path / "o"), "--model", str(tiny_model_dir)]
    )
    assert code == 2 and "does not exist" in one_error_line(capsys)


def test_a_policy_whose_tiers_differ_from_the_model_is_one_line(tiny_model_dir, tmp_path, capsys):
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "tiers:\n"
        "  - {name: small, models: [a], price_per_million: {input: 1, output: 1}, context_tokens: 1000}\n"
        "  - {name: large, models: [b], price_per_million: {input: 2, output: 2}, context_tokens: 1000}\n"
    )
    requests = tmp_path / "r.jsonl"
    requests.write_text('{"text": "hi"}\n')
    code = main(
        [
            "classify",
            "--input",
            str(requests),
            "--output",
            str(tmp_path / "o"),
            "--model",
            str(tiny_model_dir),
            "--policy",
            str(policy),
        ]
    )
    assert code == 2 and "make the policy's `tiers` list the model's tiers" in one_error_line(capsys)


def test_an_unknown_log_format_is_one_line(tiny_model_dir, tmp_path, capsys):
    odd = tmp_path / "logs.csv"
    odd.write_text("a,b\n")
    assert (
        main(["audit", "--input", str(odd), "--model", str(tiny_model_dir), "--out-dir", str(tmp_path)]) == 2
    )
    assert ".parquet" in one_error_line(capsys)


def test_a_bad_database_url_is_one_line(tmp_path, capsys):
    assert main(["db", "upgrade", "--db", "nosuchdialect://x"]) == 2
    one_error_line(capsys)


def test_a_bug_still_shows_its_traceback(monkeypatch, tmp_path):
    import tierwise.cli.analytics as analytics

    def broken(url: str, must_exist: bool = True) -> None:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(analytics, "open_store", broken)
    with pytest.raises(ZeroDivisionError):
        main(["db", "upgrade", "--db", f"sqlite:///{tmp_path / 'd.sqlite'}"])


@pytest.mark.parametrize("command", ["report", "export-feedback"])
def test_a_missing_sqlite_database_is_an_error_and_is_not_created(tmp_path, capsys, command):
    missing = tmp_path / "no" / "such.sqlite"
    out = (
        ["--out-dir", str(tmp_path / "r")] if command == "report" else ["--output", str(tmp_path / "f.jsonl")]
    )
    assert main([command, "--db", f"sqlite:///{missing}", *out]) == 2
    line = one_error_line(capsys)
    assert f"decision log {missing} does not exist" in line and "tierwise db upgrade" in line
    assert not missing.exists() and not missing.parent.exists()


def test_db_upgrade_still_creates_the_database(tmp_path, capsys):
    created = tmp_path / "new" / "decisions.sqlite"
    assert main(["db", "upgrade", "--db", f"sqlite:///{created}"]) == 0
    assert created.is_file()
    assert main(["report", "--db", f"sqlite:///{created}", "--out-dir", str(tmp_path / "r")]) == 0


def test_a_file_of_only_unusable_rows_ends_with_an_error_line(tiny_model_dir, tmp_path, capsys):
    rows = tmp_path / "bad.jsonl"
    rows.write_text('{"x": 1}\nnot json\n')
    code = main(
        [
            "classify",
            "--input",
            str(rows),
            "--output",
            str(tmp_path / "o.jsonl"),
            "--model",
            str(tiny_model_dir),
        ]
    )
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: no usable row in {rows} (2 unusable)")
    assert any("line 1: row needs a 'text' string" in line for line in err)
