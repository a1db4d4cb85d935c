"""The decision log: every routing decision and its feedback, in SQLite or any SQLAlchemy database.

`DecisionStore` owns the engine and the queries; its schema (tierwise.evidence.decision_schema) is managed
by the Alembic migrations in `serving/tierwise/evidence/migrations` (`DecisionStore.upgrade()`, run at
service start-up and by `tierwise db upgrade`). `DecisionRecorder` is what the service uses on the
request path: `submit()` only puts a record on a bounded queue (a full queue drops the record and
counts it), and one background thread writes batches, so a slow or broken database never delays or
fails a `/classify` answer.

SQLAlchemy and Alembic are the `feedback` extra (`pip install 'tierwise[feedback]'`).
"""

from __future__ import annotations

import hashlib
import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from tierwise.evidence.decision_schema import ALEMBIC_VERSION_TABLE, decisions_table, feedback_table

logger = logging.getLogger("tierwise.decision_log")

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


class DecisionLogError(RuntimeError):
    """The decision database cannot be opened or migrated; the message says which setting to fix."""


def prompt_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def utc_now() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes: they were written in UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@dataclass(frozen=True)
class DecisionRecord:
    """One row of the `decisions` table."""

    request_id: str
    created_at: datetime
    model_version: str
    tier: str
    predicted_tier: str | None
    confidence: float
    probabilities: dict[str, float]
    reasons: list[str]
    escalated: bool
    model: str
    token_count: int | None
    text_chars: int
    route: str | None
    prompt_sha256: str
    prompt_text: str | None = None
    latency_ms: float | None = None
    segment: str | None = None


@dataclass(frozen=True)
class FeedbackRecord:
    """One row of the `feedback` table; `low_tier`..`high_tier` is the range of tiers the outcome allows
    (None when the outcome cannot be placed on the ordered tiers, e.g. a failure on the top tier)."""

    request_id: str
    created_at: datetime
    needed_tier: str | None
    passed: bool | None
    source: str | None
    low_tier: str | None
    high_tier: str | None
    evidence: dict[str, Any] | None = None


@dataclass(frozen=True)
class LabeledDecision:
    """A decision with its latest feedback, if any."""

    decision: DecisionRecord
    feedback: FeedbackRecord | None


def outcome_range(
    tiers: Sequence[str], served_tier: str, needed_tier: str | None, passed: bool | None
) -> tuple[str, str] | None:
    """The tiers an outcome allows, as (lowest, highest) of the ordered `tiers`.

    `needed_tier` t: exactly t. `passed` true on served tier s: anything up to s would have done;
    false: something above s was needed. None when that cannot be placed (s is not an ordered tier,
    e.g. the private tier, or the top tier failed).
    """
    if needed_tier is not None:
        return needed_tier, needed_tier
    if passed is None or served_tier not in tiers:
        return None
    served = tiers.index(served_tier)
    if passed:
        return tiers[0], served_tier
    if served == len(tiers) - 1:
        return None
    return tiers[served + 1], tiers[-1]


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers (report, feedback) do not block the writer
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def missing_sqlite_file(url: str) -> Path | None:
    """The SQLite file a URL names when that file does not exist; None for any other URL."""
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError:
        return None  # create_db_engine says what is wrong with the URL
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    path = Path(parsed.database)
    return None if path.exists() else path


def create_db_engine(url: str) -> Engine:
    """An engine for a SQLAlchemy URL; a SQLite file's folder is created when missing."""
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError as err:
        raise DecisionLogError(
            f"TIERWISE_DECISION_DB is not a SQLAlchemy URL ({url!r}); use e.g. sqlite:///runs/decisions.sqlite "
            "or postgresql+psycopg://user@host/db"
        ) from err
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url, future=True, pool_pre_ping=True)
    if parsed.get_backend_name() == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def decided_between(query: Select[Any], since: datetime | None, until: datetime | None) -> Select[Any]:
    """`query` (which reads the decisions table) limited to decisions made in [since, until)."""
    if since is not None:
        query = query.where(decisions_table.c.created_at >= since)
    if until is not None:
        query = query.where(decisions_table.c.created_at < until)
    return query


class DecisionStore:
    """Reads and writes the decision log. Thread-safe (one connection per call from the pool)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = create_db_engine(url)

    def upgrade(self, attempts: int = 3) -> None:
        """Bring the schema to the newest Alembic revision (idempotent).

        Several workers or replicas starting at once may race to create the tables; the loser
        retries and finds the schema already current. (For PostgreSQL fleets, running
        `tierwise db upgrade` once as a deploy step avoids the race altogether.)
        """
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        config.set_main_option("sqlalchemy.url", self.url.replace("%", "%%"))
        for attempt in range(1, attempts + 1):
            try:
                with self.engine.begin() as connection:
                    config.attributes["connection"] = connection
                    command.upgrade(config, "head")
                return
            except SQLAlchemyError as err:
                if attempt < attempts:
                    logger.warning("decision log migration attempt %d failed, retrying: %s", attempt, err)
                    time.sleep(0.2 * attempt + random.random() * 0.3)
                    continue
                raise DecisionLogError(
                    f"cannot migrate the decision log at {self.engine.url!r} ({err.__class__.__name__}: {err}); "
                    "check TIERWISE_DECISION_DB or set TIERWISE_RECORD_DECISIONS=false"
                ) from err

    def current_revision(self) -> str | None:
        with self.engine.connect() as connection:
            if not sa.inspect(connection).has_table(ALEMBIC_VERSION_TABLE):
                return None
            table = sa.table(ALEMBIC_VERSION_TABLE, sa.column("version_num"))
            return connection.execute(sa.select(table.c.version_num)).scalar()

    def close(self) -> None:
        self.engine.dispose()

    # writes

    def insert_decisions(self, records: Sequence[DecisionRecord]) -> tuple[int, int]:
        """Insert a batch; returns (written, duplicates). A reused request id keeps its first row."""
        if not records:
            return 0, 0
        rows = [asdict(r) for r in records]
        try:
            with self.engine.begin() as connection:
                connection.execute(decisions_table.insert(), rows)
            return len(rows), 0
        except IntegrityError:
            pass
        written = duplicates = 0
        for row in rows:  # one by one, so one duplicate id does not lose the rest of the batch
            try:
                with self.engine.begin() as connection:
                    connection.execute(decisions_table.insert(), row)
                written += 1
            except IntegrityError:
                duplicates += 1
        return written, duplicates

    def insert_feedback(self, record: FeedbackRecord) -> int:
        with self.engine.begin() as connection:
            result = connection.execute(feedback_table.insert(), asdict(record))
            key = result.inserted_primary_key
            if key is None:
                raise DecisionLogError("the database returned no id for the inserted feedback row")
            return int(key[0])

    # reads

    def get_decision(self, request_id: str) -> DecisionRecord | None:
        with self.engine.connect() as connection:
            row = connection.execute(
                sa.select(decisions_table).where(decisions_table.c.request_id == request_id)
            ).first()
        return None if row is None else _decision(row._mapping)

    def labeled_decisions(
        self, since: datetime | None = None, until: datetime | None = None
    ) -> list[LabeledDecision]:
        """Decisions made in [since, until), each with its latest feedback (None without feedback)."""
        query = sa.select(decisions_table).order_by(
            decisions_table.c.created_at, decisions_table.c.request_id
        )
        query = decided_between(query, since, until)
        latest = (
            sa.select(feedback_table.c.request_id, sa.func.max(feedback_table.c.id).label("id"))
            .group_by(feedback_table.c.request_id)
            .subquery()
        )
        feedback_query = sa.select(feedback_table).join(latest, feedback_table.c.id == latest.c.id)
        with self.engine.connect() as connection:
            decisions = [_decision(r._mapping) for r in connection.execute(query)]
            wanted = {d.request_id for d in decisions}
            feedback = {
                f.request_id: f
                for f in (_feedback(r._mapping) for r in connection.execute(feedback_query))
                if f.request_id in wanted
            }
        return [LabeledDecision(d, feedback.get(d.request_id)) for d in decisions]


def _decision(row: Any) -> DecisionRecord:
    values = dict(row)
    values["created_at"] = as_utc(values["created_at"])
    return DecisionRecord(**values)


def _feedback(row: Any) -> FeedbackRecord:
    values = {k: v for k, v in dict(row).items() if k != "id"}
    values["created_at"] = as_utc(values["created_at"])
    return FeedbackRecord(**values)


# ---------------------------------------------------------------------------------------------
# The background writer
# ---------------------------------------------------------------------------------------------

OutcomeCounter = Callable[[str, int], None]  # (outcome: written/dropped/failed/duplicate, count)


class DecisionRecorder:
    """A bounded queue and one writer thread in front of a `DecisionStore`.

    `submit` never blocks and never raises: with the queue full the record is dropped and counted.
    Write errors are logged and counted; the thread keeps going.
    """

    def __init__(
        self,
        store: DecisionStore,
        max_queue: int = 10000,
        max_batch: int = 500,
        on_outcome: OutcomeCounter | None = None,
    ) -> None:
        self.store = store
        self.max_batch = max(1, max_batch)
        self._queue: queue.Queue[DecisionRecord] = queue.Queue(maxsize=max(1, max_queue))
        self._on_outcome = on_outcome
        self._pending = 0
        self._idle = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.counts: dict[str, int] = {"written": 0, "dropped": 0, "failed": 0, "duplicate": 0}

    def _count(self, outcome: str, amount: int) -> None:
        if amount <= 0:
            return
        self.counts[outcome] += amount
        if self._on_outcome is not None:
            self._on_outcome(outcome, amount)

    def start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="tierwise-decision-log", daemon=True)
            self._thread.start()

    def submit(self, record: DecisionRecord) -> bool:
        """Queue a record for writing; False (and counted as dropped) when the queue is full."""
        with self._idle:
            try:
                self._queue.put_nowait(record)
            except queue.Full:
                self._count("dropped", 1)
                return False
            self._pending += 1
        return True

    def wait_idle(self, timeout: float) -> bool:
        """Wait until everything submitted so far is written (or failed); False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout=timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued (up to `timeout` seconds), then stop the thread and the engine."""
        if self._thread is not None and self._thread.is_alive():
            self.wait_idle(timeout)
            self._stop.set()
            self._thread.join(timeout=timeout)
        self._thread = None
        self.store.close()

    def _take_batch(self) -> list[DecisionRecord]:
        try:
            batch = [self._queue.get(timeout=0.2)]
        except queue.Empty:
            return []
        while len(batch) < self.max_batch:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _run(self) -> None:
        while not (self._stop.is_set() and self._queue.empty()):
            batch = self._take_batch()
            if not batch:
                continue
            try:
                written, duplicates = self.store.insert_decisions(batch)
                self._count("written", written)
                if duplicates:
                    self._count("duplicate", duplicates)
                    logger.warning("decision log: %d request id(s) were already recorded", duplicates)
            except Exception as err:  # the database is down or full: count, log, keep serving
                self._count("failed", len(batch))
                logger.error("decision log write failed (%d records lost): %s", len(batch), err)
            finally:
                with self._idle:
                    self._pending -= len(batch)
                    self._idle.notify_all()
