"""The decision log on a real PostgreSQL: a throwaway cluster, migrations, two workers writing under
load (no decision lost or duplicated), feedback joining its decisions, `tierwise report`."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tools.harness import REPO_DIR, ServedProcess, http_post
from tools.reliability.fixtures import start_server
from tools.reliability.report import CaseResult


def postgres_binaries() -> Path | None:
    """The folder with initdb and pg_ctl (PATH or Debian's /usr/lib/postgresql/N/bin), or None."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).resolve().parent
    for folder in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (folder / "initdb").exists() and (folder / "pg_ctl").exists():
            return folder
    return None


@contextlib.contextmanager
def throwaway_postgres(binaries: Path) -> Iterator[str]:
    """A PostgreSQL cluster in a temporary folder, reached only through a unix socket there; yields its
    SQLAlchemy URL and removes everything afterwards. As root (PostgreSQL refuses to run as root) the
    server runs as `nobody`."""
    import pwd

    folder = Path(tempfile.mkdtemp(prefix="tierwise-pg-"))
    data, sockets = folder / "data", folder / "sockets"
    sockets.mkdir()
    run_as: dict[str, Any] = {}
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        for path in (folder, sockets):
            os.chown(path, nobody.pw_uid, nobody.pw_gid)
        run_as = {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}

    def run(*command: str) -> None:
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=folder, **run_as)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}): {done.stderr[-2000:]}")

    try:
        run(
            str(binaries / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        )
        options = f"-k {sockets} -c listen_addresses='' -c fsync=off -c max_connections=50"
        run(
            str(binaries / "pg_ctl"),
            "-D",
            str(data),
            "-o",
            options,
            "-l",
            str(folder / "server.log"),
            "-w",
            "start",
        )
        try:
            yield f"postgresql+psycopg://postgres@/postgres?host={sockets}"
        finally:
            run(str(binaries / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


CLI = (sys.executable, "-m", "tierwise.cli.main")


@dataclass
class PostgresRun:
    """What a PostgreSQL run saw: the answers, the rows read back, and `tierwise report`'s count."""

    sent: list[str]
    statuses: Counter[int] = field(default_factory=Counter)
    feedback_statuses: Counter[int] = field(default_factory=Counter)
    ids: list[str] = field(default_factory=list)
    joined: int = 0
    revision: str | None = None
    exit_code: int | None = None
    report_code: int = 0
    report_error: str = ""
    reported: int | None = None


def classify_then_feedback(
    server: ServedProcess, url: str, run: PostgresRun, clients: int, feedback: int
) -> None:
    """Every request id classified by `clients` threads, then feedback for the first `feedback` ones
    once the workers (writing in the background) have stored their decisions."""
    from tierwise.evidence.decision_log import DecisionStore

    def one(request_id: str) -> None:
        status, _ = http_post(
            server.port, "/classify", {"text": f"load {request_id}"}, {"X-Request-ID": request_id}, 30.0
        )
        run.statuses[status] += 1

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, run.sent))
    deadline = time.monotonic() + 30
    store = DecisionStore(url)
    try:  # the workers write in the background: wait until the rows are there
        while time.monotonic() < deadline and len(store.labeled_decisions()) < len(run.sent):
            time.sleep(0.2)
    finally:
        store.close()
    for request_id in run.sent[:feedback]:
        status, _ = http_post(
            server.port, "/feedback", {"request_id": request_id, "outcome": {"needed_tier": "frontier"}}, {}
        )
        run.feedback_statuses[status] += 1


def read_back(url: str, run: PostgresRun, report_dir: Path) -> None:
    """The rows as the store reads them, then the decisions `tierwise report` counts."""
    from tierwise.evidence.decision_log import DecisionStore

    store = DecisionStore(url)
    try:
        rows = store.labeled_decisions()
        run.revision = store.current_revision()
    finally:
        store.close()
    run.ids = [row.decision.request_id for row in rows if row.decision.request_id.startswith("pg-")]
    run.joined = sum(1 for row in rows if row.feedback is not None and row.feedback.needed_tier == "frontier")
    report = subprocess.run(
        [*CLI, "report", "--db", url, "--since", "1d", "--out-dir", str(report_dir), "--no-plots"],
        capture_output=True,
        text=True,
        cwd=REPO_DIR,
    )
    run.report_code, run.report_error = report.returncode, report.stderr[-300:]
    if report.returncode == 0:
        run.reported = json.loads((report_dir / "report.json").read_text())["decisions"]


def postgres_problems(run: PostgresRun, requests: int, feedback: int) -> tuple[list[str], int, int]:
    """(problems, decisions lost, decisions duplicated)."""
    problems = []
    lost, duplicated = len(set(run.sent) - set(run.ids)), len(run.ids) - len(set(run.ids))
    if run.statuses.get(200, 0) != requests:
        problems.append(f"classify answers: {dict(run.statuses)}")
    if lost or duplicated or len(run.ids) != requests:
        problems.append(f"{len(run.ids)} rows for {requests} sent: {lost} lost, {duplicated} duplicated")
    if run.feedback_statuses.get(200, 0) != feedback or run.joined != feedback:
        problems.append(f"feedback answers {dict(run.feedback_statuses)}, {run.joined} of {feedback} joined")
    if run.report_code != 0 or run.reported != requests:
        problems.append(
            f"tierwise report: exit {run.report_code}, {run.reported} decisions; {run.report_error}"
        )
    if run.exit_code != 0:
        problems.append(f"server exit code {run.exit_code}")
    return problems, lost, duplicated


def postgres_case(
    model_dir: Path,
    work_dir: Path,
    requests: int = 400,
    workers: int = 2,
    clients: int = 8,
    feedback: int = 25,
) -> CaseResult:
    """The decision log on a real PostgreSQL: `tierwise db upgrade`, then `workers` workers writing
    under load (no decision lost or duplicated), feedback joining its decisions, `tierwise report`."""
    binaries = postgres_binaries()
    if binaries is None:
        return CaseResult(
            "decision log on PostgreSQL", 0, 1, "", ["no initdb/pg_ctl: apt-get install -y postgresql"]
        )
    upgrade_problems: list[str] = []
    run = PostgresRun([f"pg-{uuid.uuid4().hex[:12]}-{i}" for i in range(requests)])
    with throwaway_postgres(binaries) as url:
        upgrade = subprocess.run(
            [*CLI, "db", "upgrade", "--db", url], capture_output=True, text=True, cwd=REPO_DIR
        )
        if upgrade.returncode != 0:
            upgrade_problems.append(f"tierwise db upgrade failed: {upgrade.stderr[-500:]}")
        server = start_server(model_dir, work_dir / "postgres.log", workers=workers, decision_db=url)
        try:
            server.wait_until_ready(workers=workers)
            classify_then_feedback(server, url, run, clients, feedback)
        finally:
            run.exit_code = server.stop()
        read_back(url, run, work_dir / "postgres-report")
    problems, lost, duplicated = postgres_problems(run, requests, feedback)
    problems = upgrade_problems + problems
    figures = (
        f"PostgreSQL {binaries.parent.name}, schema {run.revision}, {workers} workers, {clients} clients: "
        f"{len(set(run.ids))} decisions written of {requests} sent ({lost} lost, {duplicated} duplicated); "
        f"feedback joined {run.joined}/{feedback}; tierwise report read {run.reported}"
    )
    return CaseResult("decision log on PostgreSQL", requests, len(problems), figures, problems)
