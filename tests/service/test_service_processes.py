"""The service as `make serve` runs it (`python -m tierwise.service`, real uvicorn on a free loopback port):
oversized bodies, metrics and reload across workers."""

import asyncio
import json
import os
import subprocess
import sys

import pytest
from tierwise.service import worker_sync
from tierwise.service.metrics import ServiceMetrics
from tierwise.service.middleware import DRAIN_LIMIT_FACTOR, RequestContextMiddleware

from tools import reliability
from tools.tiny_model import write_model_folder


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return write_model_folder(tmp_path_factory.mktemp("processes") / "tiny")


# -- 413 for oversized bodies -----------------------------------------------------------------------


@pytest.mark.slow
def test_oversized_bodies_get_a_413_whether_sent_fast_or_slowly(model_dir, tmp_path):
    result = reliability.oversize_case(model_dir, tmp_path, repeats=2)
    print(result)
    assert result.passed, str(result)
    assert "fast 2/2 read 413, slow 2/2 read 413" in result.figures


async def _call_middleware(max_body: int, chunks, headers):
    """Run the body-limit middleware on a fake connection; (answer messages, bytes it read)."""
    read = 0
    sent: list[dict] = []

    async def receive():
        nonlocal read
        try:
            chunk, more = next(chunks)
        except StopIteration:
            return {"type": "http.disconnect"}
        read += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": more}

    async def send(message):
        sent.append(message)

    async def app(scope, receive, send):
        raise AssertionError("an oversized body must not reach the app")

    middleware = RequestContextMiddleware(app, max_body, ServiceMetrics(), {"/classify"})
    scope = {"type": "http", "method": "POST", "path": "/classify", "headers": headers}
    await middleware(scope, receive, send)
    return sent, read


def test_an_oversized_body_is_drained_then_answered_and_the_connection_kept():
    chunk = b"x" * 4096
    chunks = iter([(chunk, True)] * 7 + [(chunk, False)])
    sent, read = asyncio.run(_call_middleware(8192, chunks, []))
    assert read == 8 * 4096, "the whole body is read before answering"
    assert sent[0]["status"] == 413
    assert (b"connection", b"close") not in sent[0]["headers"]
    assert "TIERWISE_MAX_BODY_BYTES" in json.loads(sent[1]["body"])["error"]["message"]


def test_draining_an_endless_body_stops_at_the_bound_and_closes():
    def endless():
        while True:
            yield b"x" * 4096, True

    sent, read = asyncio.run(_call_middleware(8192, endless(), [(b"content-length", b"99999999999")]))
    assert DRAIN_LIMIT_FACTOR * 8192 <= read <= DRAIN_LIMIT_FACTOR * 8192 + 4096
    assert sent[0]["status"] == 413
    assert (b"connection", b"close") in sent[0]["headers"]


def test_a_client_waiting_for_100_continue_is_answered_without_reading():
    chunks = iter([(b"x" * 4096, True)])
    headers = [(b"content-length", b"20000"), (b"expect", b"100-continue")]
    sent, read = asyncio.run(_call_middleware(8192, chunks, headers))
    assert read == 0
    assert sent[0]["status"] == 413 and (b"connection", b"close") in sent[0]["headers"]


# -- metrics across workers -------------------------------------------------------------------------


@pytest.mark.slow
def test_one_scrape_counts_the_requests_of_every_worker(model_dir, tmp_path):
    result = reliability.metrics_case(model_dir, tmp_path, requests=120, workers=2)
    print(result)
    assert result.passed, str(result)
    assert "counted 120 of 120" in result.figures


def test_a_dead_workers_live_gauges_leave_and_its_counts_stay(tmp_path):
    # In a child process with PROMETHEUS_MULTIPROC_DIR set (prometheus_client reads it at import).
    script = """
import os, subprocess, sys
from tierwise.service.metrics import ServiceMetrics, mark_dead_workers
child = subprocess.Popen([sys.executable, "-c", '''
from tierwise.service.metrics import ServiceMetrics
m = ServiceMetrics(); m.model.set(version="v1", tiers="a"); m.decisions.inc("fast", amount=3)
'''])
child.wait()
mine = ServiceMetrics(); mine.model.set(version="v2", tiers="a"); mine.decisions.inc("fast")
before = mine.exposition()
mark_dead_workers()
after = mine.exposition()
print(before.count("tierwise_model_info{"), after.count("tierwise_model_info{"))
print([l for l in after.splitlines() if l.startswith("tierwise_decisions_total")])
"""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    counts, decisions = out.stdout.splitlines()
    assert counts == "2 1", out.stdout  # the exited process's model info is gone after the sweep
    assert decisions == "['tierwise_decisions_total{tier=\"fast\"} 4.0']"


# -- admin reload across workers --------------------------------------------------------------------


@pytest.mark.slow
def test_admin_reload_reaches_every_worker_and_model_lists_them(model_dir, tmp_path):
    result = reliability.admin_reload_workers_case(model_dir, tmp_path, workers=2, requests=40)
    print(result)
    assert result.passed, str(result)
    assert "40 of 40 fresh connections answered by the new model" in result.figures


def test_generations_are_bumped_under_a_lock_and_keep_the_last_named_folder(tmp_path):
    assert worker_sync.read_generation(tmp_path) == worker_sync.Generation(0, None)
    assert worker_sync.bump_generation(tmp_path, "/models/v2") == worker_sync.Generation(1, "/models/v2")
    stamp = worker_sync.generation_stamp(tmp_path)
    assert worker_sync.bump_generation(tmp_path, None) == worker_sync.Generation(2, "/models/v2")
    assert worker_sync.generation_stamp(tmp_path) != stamp
    worker_sync.write_worker_status(tmp_path, "tiny@v2", 2, "/models/v2")
    (tmp_path / "workers" / "999999999.json").write_text('{"pid": 999999999, "model_version": "gone"}')
    statuses = worker_sync.worker_statuses(tmp_path)
    assert [s["pid"] for s in statuses] == [os.getpid()], "a dead worker's status is dropped"
