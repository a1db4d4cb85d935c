"""How long `tierwise label` takes: N logged requests against the local fake server (tools/fake_llm.py).

    python -m tools.label_bench --requests 500 --concurrency 16 --latency-ms 0 100

For each simulated model latency it writes N requests (mixed needs, 1-3 messages), runs `tierwise
label` at the given concurrency into a fresh folder, then runs it again (everything from the
journal) and prints one markdown row per latency: calls, wall time, calls per second, and the
resumed run's calls and time.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from tierwise.cli.main import main as tierwise
from tierwise.core.policy_file import DEFAULT_POLICY_FILE

from tools.fake_llm import FakeScript, fake_server, policy_strengths


def write_logs(path: Path, count: int) -> None:
    with open(path, "w", encoding="utf-8") as sink:
        for index in range(count):
            task = f"Request {index}: explain step {index % 7} of the process (needs={index % 3})."
            messages = [{"role": "user", "content": task}]
            if index % 4 == 0:
                messages.insert(0, {"role": "system", "content": "You are a helpful assistant."})
            sink.write(json.dumps({"model": "gpt-4.1", "messages": messages}) + "\n")


def run_once(base_url: str, logs: Path, out: Path, concurrency: int) -> dict[str, float]:
    stats_path = out.with_suffix(".stats.json")
    started = time.perf_counter()
    code = tierwise(
        [
            "label",
            "--input",
            str(logs),
            "--output",
            str(out),
            "--base-url",
            base_url,
            "--yes",
            "--no-progress",
            "--concurrency",
            str(concurrency),
            "--stats",
            str(stats_path),
        ]
    )
    wall = time.perf_counter() - started
    if code != 0:
        raise SystemExit(f"tierwise label exited {code}")
    stats = json.loads(stats_path.read_text())
    return {
        "wall": wall,
        "calls": stats["calls_made"],
        "cached": stats["calls_cached"],
        "rows": stats["labeled"],
    }


def bench(requests: int, concurrency: int, latency_ms: float) -> str:
    script = FakeScript(policy_strengths(DEFAULT_POLICY_FILE), latency_seconds=latency_ms / 1000)
    with tempfile.TemporaryDirectory() as folder, fake_server(script) as server:
        logs = Path(folder) / "logs.jsonl"
        write_logs(logs, requests)
        first = run_once(server.base_url, logs, Path(folder) / "labeled.jsonl", concurrency)
        again = run_once(server.base_url, logs, Path(folder) / "labeled.jsonl", concurrency)
    rate = first["calls"] / first["wall"] if first["wall"] else 0.0
    return (
        f"| {requests} | {concurrency} | {latency_ms:g} | {first['calls']:.0f} | {first['wall']:.2f} | {rate:.0f} | "
        f"{first['rows']:.0f} | {again['calls']:.0f} ({again['cached']:.0f} from the journal) | {again['wall']:.2f} |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument(
        "--latency-ms", type=float, nargs="+", default=[0.0, 100.0], help="simulated model latency"
    )
    args = parser.parse_args(argv)
    lines = [
        "| requests | concurrency | model latency (ms) | calls | wall (s) | calls/s | rows | resumed run: calls | "
        "resumed wall (s) |",
        "|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    lines += [bench(args.requests, args.concurrency, latency) for latency in args.latency_ms]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
