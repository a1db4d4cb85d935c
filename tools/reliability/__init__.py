"""`make reliability`: fuzz, load, start-up faults, hot reload, hangs, SIGTERM drain and security.

    python -m tools.reliability [--model models/default] [--fuzz-cases 1000] [--requests 20000]
        [--concurrency 64] [--workers 2] [--output runs/reliability.md]

Each check returns a `CaseResult` (case, tried, failures, figures); the runner (`cli`) prints a
markdown table and exits 1 when any case has failures. The servers are started and measured through
tools/harness.py; the misbehaving classifier is tools/doubles.py's.
`tests/tools/test_reliability_short.py` runs the same functions on the tiny test model with small
numbers, inside the normal `make test`.

- fuzz: schemathesis against the app's own OpenAPI schema, in-process (ASGI, no network);
- load: N requests at C keep-alive clients on loopback against `python -m tierwise.service` (as `make serve`)
  with W uvicorn workers; errors, timeouts, p50/p99, and the workers' RSS (first vs last quarter);
- start-up faults: a missing folder, a corrupt model.onnx, a manifest that does not match the model:
  the process must exit non-zero without ever answering /readyz 200, and log what to do;
- hot reload under load: swap the model folder (a symlink) and SIGHUP the server (or call
  POST /admin/reload): no failed request, `model_version` changes;
- metrics: one scrape of a multi-worker server counts every worker's requests;
- 413: 2 MiB bodies sent fast, slowly, kept alive and chunked on raw sockets all read a 413;
- admin reload across workers: POST /admin/reload to one worker reaches all of them;
- decision log on PostgreSQL: a throwaway cluster, migrations, two workers under load, feedback, report;
- hang / crash: a classifier that hangs or raises still gets answers, upward, within the deadline;
- SIGTERM under load: requests in flight complete, new ones are refused cleanly, exit code 0;
- security: API keys and the admin token, prompt text absent from logs, no unsafe deserialisation
  in serving/, dependencies pinned.
"""

from __future__ import annotations

# The cases, by the module that holds them: tests and `make reliability` call them from here.
from tools.reliability.database import postgres_binaries, postgres_case
from tools.reliability.drain import drain_case
from tools.reliability.faults import hang_and_crash_case, startup_fault_case, startup_fault_cases
from tools.reliability.fixtures import in_process_settings, variant_folder
from tools.reliability.fuzz import fuzz_app
from tools.reliability.load import load_case
from tools.reliability.metrics import metrics_case
from tools.reliability.oversize import oversize_case
from tools.reliability.privacy import PRIVACY_MAX_FALSE_POSITIVE_RATE, PRIVACY_MIN_RECALL, privacy_case
from tools.reliability.reload import admin_reload_workers_case, reload_case
from tools.reliability.report import CaseResult
from tools.reliability.security import (
    auth_case,
    lock_versions,
    prompt_log_case,
    supply_chain_case,
    unsafe_loader_hits,
)

__all__ = [
    "PRIVACY_MAX_FALSE_POSITIVE_RATE",
    "PRIVACY_MIN_RECALL",
    "CaseResult",
    "admin_reload_workers_case",
    "auth_case",
    "drain_case",
    "fuzz_app",
    "hang_and_crash_case",
    "in_process_settings",
    "load_case",
    "lock_versions",
    "metrics_case",
    "oversize_case",
    "postgres_binaries",
    "postgres_case",
    "privacy_case",
    "prompt_log_case",
    "reload_case",
    "startup_fault_case",
    "startup_fault_cases",
    "supply_chain_case",
    "unsafe_loader_hits",
    "variant_folder",
]
