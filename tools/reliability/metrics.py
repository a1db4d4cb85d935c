"""Metrics across workers: one scrape of a multi-worker server counts every worker's requests."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tools.harness import http_get, http_post, worker_pids
from tools.reliability.fixtures import start_server
from tools.reliability.report import CaseResult


def scrape_counter(text: str, name: str, **labels: str) -> float:
    """The sum of a counter's samples in a text exposition whose labels include `labels`."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def worker_request_counts(master_pid: int, endpoint: str = "/classify") -> dict[int, float]:
    """{worker pid: its own count of 200s on `endpoint`}, read from the workers' metric files."""
    from prometheus_client.multiprocess import MultiProcessCollector

    counts: dict[int, float] = {}
    for pid in worker_pids(master_pid):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        folder = next(
            (v.split(b"=", 1)[1] for v in environ if v.startswith(b"PROMETHEUS_MULTIPROC_DIR=")), None
        )
        if folder is None or not (Path(folder.decode()) / f"counter_{pid}.db").exists():
            continue
        families = MultiProcessCollector.merge([str(Path(folder.decode()) / f"counter_{pid}.db")])
        counts[pid] = sum(
            sample.value
            for family in families
            for sample in family.samples
            if sample.name == "tierwise_http_requests_total"
            and sample.labels.get("endpoint") == endpoint
            and sample.labels.get("status") == "200"
        )
    return counts


def metrics_case(
    model_dir: Path, work_dir: Path, requests: int = 200, workers: int = 2, clients: int = 8, scrapes: int = 4
) -> CaseResult:
    """N requests on fresh connections to `workers` workers; every one of `scrapes` scrapes must count
    all N in tierwise_http_requests_total and tierwise_decisions_total, whichever worker answers it."""
    server = start_server(model_dir, work_dir / "metrics.log", workers=workers, record_decisions="false")
    problems: list[str] = []
    try:
        server.wait_until_ready(workers=workers)
        before = [
            scrape_counter(
                http_get(server.port, "/metrics")[1].decode(),
                "tierwise_http_requests_total",
                endpoint="/classify",
                status="200",
            )
        ]
        statuses: Counter[int] = Counter()

        def one(index: int) -> None:
            status, _ = http_post(server.port, "/classify", {"text": f"request {index}"}, {}, timeout=30.0)
            statuses[status] += 1

        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(one, range(requests)))
        per_worker = worker_request_counts(server.process.pid)
        seen: list[tuple[float, float, int]] = []
        for _ in range(scrapes):
            text = http_get(server.port, "/metrics")[1].decode()
            http_total = scrape_counter(
                text, "tierwise_http_requests_total", endpoint="/classify", status="200"
            )
            decisions = scrape_counter(text, "tierwise_decisions_total")
            live = sum(
                1
                for line in text.splitlines()
                if line.startswith("tierwise_model_info{") and line.endswith(" 1.0")
            )
            seen.append((http_total - before[0], decisions, live))
    finally:
        server.stop()
    ok = statuses.get(200, 0)
    if ok != requests:
        problems.append(f"answers: {dict(statuses)}")
    for http_total, decisions, live in seen:
        if http_total != ok or decisions != ok:
            problems.append(f"a scrape counted {http_total:g} requests and {decisions:g} decisions of {ok}")
        if live != workers:
            problems.append(f"a scrape showed {live} live workers' model info, not {workers}")
    if len([n for n in per_worker.values() if n > 0]) < min(2, workers):
        problems.append(f"the requests did not reach several workers ({per_worker}): the sum is not tested")
    figures = (
        f"{workers} workers, {requests} requests: each of {scrapes} scrapes counted "
        + ", ".join(sorted({f"{h:g}" for h, _, _ in seen}))
        + f" of {ok} (per worker: {' + '.join(f'{n:g}' for n in sorted(per_worker.values()))})"
    )
    return CaseResult("metrics summed across workers", requests, len(problems), figures, problems)
