"""`python -m tierwise.service`: run the service under uvicorn.

    python -m tierwise.service [--model DIR] [--policy FILE] [--host HOST] [--port PORT] [--workers N]

Each option overrides its TIERWISE_* setting (serving/tierwise/service/settings.py); every other
setting comes from the environment. The policy and model folder are loaded once before uvicorn
starts: a folder that does not exist or cannot be loaded (or a bad policy) is one `cannot start`
line on stderr, saying what to do, and exit code 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from tierwise.service import worker_sync
from tierwise.service.classifier import load_tier_classifier
from tierwise.service.metrics import ServiceMetrics, prepare_multiprocess_dir, remove_multiprocess_dir
from tierwise.service.settings import Settings
from tierwise.service.state import build_services, startup_error_message

logger = logging.getLogger("tierwise.service")

USAGE_ERROR = 2  # what argparse exits with, for every mistake in how the service was asked to start

# Command-line option -> the Settings field it overrides (TIERWISE_<FIELD> in the environment).
OPTION_SETTINGS: dict[str, str] = {
    "model": "model_dir",
    "policy": "policy_file",
    "host": "host",
    "port": "port",
    "workers": "workers",
}


class StartupError(Exception):
    """The service cannot start as configured; the message says what is wrong and what to do."""


def build_parser() -> argparse.ArgumentParser:
    fields = Settings.model_fields

    def default(option: str) -> str:
        name = OPTION_SETTINGS[option]
        return f"TIERWISE_{name.upper()}, else {fields[name].default}"

    parser = argparse.ArgumentParser(
        prog="python -m tierwise.service",
        description="Serve tierwise over HTTP. Other settings: TIERWISE_* environment variables.",
    )
    parser.add_argument("--model", type=Path, metavar="DIR", help=f"model folder ({default('model')})")
    parser.add_argument(
        "--policy", type=Path, metavar="FILE", help=f"routing policy YAML ({default('policy')})"
    )
    parser.add_argument("--host", metavar="HOST", help=f"address to listen on ({default('host')})")
    parser.add_argument("--port", type=int, metavar="PORT", help=f"port to listen on ({default('port')})")
    parser.add_argument(
        "--workers", type=int, metavar="N", help=f"uvicorn worker processes ({default('workers')})"
    )
    return parser


def setting_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The Settings fields the command line sets; the others come from TIERWISE_* or the defaults."""
    values = {field: getattr(args, option) for option, field in OPTION_SETTINGS.items()}
    return {field: value for field, value in values.items() if value is not None}


def settings_from_args(args: argparse.Namespace) -> Settings:
    """The settings with the command line's overrides (arguments win over the environment);
    raises StartupError naming the option or variable when a value is invalid."""
    try:
        return Settings(**setting_overrides(args))
    except ValidationError as err:
        options = {field: option for option, field in OPTION_SETTINGS.items()}
        problems = []
        for error in err.errors():
            field = str(error["loc"][0]) if error["loc"] else "settings"
            source = f"--{options[field]} or " if field in options else ""
            problems.append(f"{field} ({source}TIERWISE_{field.upper()}): {error['msg']}")
        raise StartupError("invalid setting " + "; ".join(problems)) from err


def check_model_loads(settings: Settings) -> None:
    """Load the policy and model once, or raise StartupError with the `cannot start` message.

    Checking in the main process makes a bad model folder fail fast and plainly: with several
    workers, a worker that fails start-up does not always stop uvicorn's main process promptly, and
    a failure inside uvicorn's lifespan is logged with a traceback.
    """
    try:
        services = build_services(settings, load_tier_classifier, ServiceMetrics())
    except Exception as err:
        raise StartupError(startup_error_message(err, settings)) from err
    del services


def serve(settings: Settings) -> None:
    """Run uvicorn with the settings; with several workers each builds its app from TIERWISE_*."""
    import uvicorn

    from tierwise.service.app import create_app
    from tierwise.service.logs import uvicorn_log_config

    common: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_config": uvicorn_log_config(settings.log_level),
        "access_log": False,
        "timeout_graceful_shutdown": settings.graceful_shutdown_seconds,
        "timeout_keep_alive": settings.keep_alive_seconds,
    }
    if settings.workers == 1:
        uvicorn.run(create_app(settings), **common)
        return
    # The workers write their metrics to files in one folder, so that a scrape sums them all, and
    # share a reload generation and their model versions in another (serving/tierwise/service/worker_sync.py).
    metrics_dir = prepare_multiprocess_dir(settings.workers)
    shared = Path(tempfile.mkdtemp(prefix="tierwise-workers-"))
    os.environ[worker_sync.SHARED_DIR_ENV] = str(shared)
    try:
        # SIGHUP to this process replaces the workers one at a time (each new one ready first).
        uvicorn.run(
            "tierwise.service.app:create_app",
            factory=True,
            workers=settings.workers,
            timeout_worker_healthcheck=settings.worker_start_timeout_seconds,
            **common,
        )
    finally:
        remove_multiprocess_dir(metrics_dir)
        shutil.rmtree(shared, ignore_errors=True)
        os.environ.pop(worker_sync.SHARED_DIR_ENV, None)


def main(argv: Sequence[str] | None = None) -> int:
    from tierwise.service.logs import configure_logging

    args = build_parser().parse_args(argv)
    try:
        settings = settings_from_args(args)
        configure_logging(settings.log_level)
        check_model_loads(settings)
    except StartupError as err:
        message = " ".join(str(err).split())  # one line, whatever the underlying error printed
        sys.stderr.write(f"cannot start: {message}\n")
        return USAGE_ERROR
    # uvicorn's workers read their settings from the environment: hand them the command line's too.
    for field, value in setting_overrides(args).items():
        os.environ[f"TIERWISE_{field.upper()}"] = str(value)
    serve(settings)
    return 0
