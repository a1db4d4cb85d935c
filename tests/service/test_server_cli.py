"""`python -m tierwise.service`: its options override the TIERWISE_* settings, and a model folder that
cannot be loaded is one line on stderr and exit code 2, not a traceback."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from tierwise.service import logs, server
from tierwise.service.server import StartupError, build_parser, settings_from_args
from tierwise.service.settings import Settings

OPTIONS = ("--model", "--policy", "--host", "--port", "--workers")


@pytest.fixture
def environment(monkeypatch):
    """A copy of the environment for the test to change (main() exports the options into it)."""
    environ = {key: value for key, value in os.environ.items() if not key.startswith("TIERWISE_")}
    monkeypatch.setattr(os, "environ", environ)
    return environ


def run_service(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    # A fresh start: no TIERWISE_* settings, and no metrics folder of some earlier multi-worker run.
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("TIERWISE_") and key != "PROMETHEUS_MULTIPROC_DIR"
    }
    return subprocess.run(
        [sys.executable, "-m", "tierwise.service", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env=env,
    )


def test_help_lists_every_option_with_its_setting(tmp_path):
    result = run_service("--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for option in OPTIONS:
        assert option in result.stdout
    for variable in ("TIERWISE_MODEL_DIR", "TIERWISE_POLICY_FILE", "TIERWISE_PORT", "TIERWISE_WORKERS"):
        assert variable in result.stdout


def test_a_model_folder_that_does_not_exist_is_one_line_and_exit_code_2(tmp_path):
    result = run_service("--model", str(tmp_path / "nope"), "--port", "1", cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("cannot start:")
    assert "does not exist" in lines[0] and "make train" in lines[0]
    assert "Traceback" not in result.stderr


def test_options_override_the_environment_and_the_rest_keep_it(environment, tmp_path):
    environment.update({"TIERWISE_PORT": "1234", "TIERWISE_HOST": "0.0.0.0", "TIERWISE_LOG_LEVEL": "debug"})
    args = build_parser().parse_args(
        [
            "--model",
            str(tmp_path / "m"),
            "--policy",
            str(tmp_path / "p.yaml"),
            "--port",
            "9000",
            "--workers",
            "3",
        ]
    )
    settings = settings_from_args(args)
    assert settings.model_dir == tmp_path / "m"
    assert settings.policy_file == tmp_path / "p.yaml"
    assert (settings.port, settings.workers) == (9000, 3)
    assert settings.host == "0.0.0.0" and settings.log_level == "debug"  # from the environment

    defaults = settings_from_args(build_parser().parse_args([]))
    assert defaults.model_dir == Settings.model_fields["model_dir"].default
    assert defaults.workers == Settings.model_fields["workers"].default


def test_an_invalid_value_names_the_option_and_the_variable(environment):
    with pytest.raises(StartupError, match=r"port \(--port or TIERWISE_PORT\)"):
        settings_from_args(build_parser().parse_args(["--port", "0"]))


def test_main_checks_the_model_then_hands_the_options_to_the_workers(
    environment, tiny_model_dir, monkeypatch, capsys
):
    served: list[Settings] = []
    monkeypatch.setattr(server, "serve", served.append)
    monkeypatch.setattr(logs, "configure_logging", lambda level: None)  # keep pytest's log capture
    assert server.main(["--model", str(tiny_model_dir), "--workers", "2", "--port", "8123"]) == 0
    [settings] = served
    assert (settings.model_dir, settings.workers, settings.port) == (tiny_model_dir, 2, 8123)
    # uvicorn's workers build their settings from the environment.
    assert environment["TIERWISE_MODEL_DIR"] == str(tiny_model_dir)
    assert environment["TIERWISE_WORKERS"] == "2"

    assert server.main(["--model", str(tiny_model_dir / "missing")]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_idle_keep_alive_connections_outlive_the_gateways_own_idle_timeout(environment, monkeypatch):
    """At equal idle timeouts (httpx's and uvicorn's are both 5 s) a gateway reuses a connection the
    service is closing and that request fails: the service keeps idle connections open longer."""
    import uvicorn

    seen: dict = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: seen.update(kwargs))
    monkeypatch.setattr("tierwise.service.app.create_app", lambda settings: "app")
    server.serve(Settings())
    assert seen["timeout_keep_alive"] == 75 > 5
    environment["TIERWISE_KEEP_ALIVE_SECONDS"] = "120"
    server.serve(Settings())
    assert seen["timeout_keep_alive"] == 120
