"""Fuzz: schemathesis against the app's own OpenAPI schema, in-process (ASGI, no network)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tools.reliability.report import CaseResult


@dataclass
class FuzzTally:
    """What the generated cases did: how many, their statuses, and the failed ones."""

    headers: dict[str, str] | None
    tried: int = 0
    failing_cases: int = 0
    operations: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)

    def check(self, case: Any, label: str, mode: Any) -> None:
        """Call one case and validate its response against the schema."""
        from schemathesis.checks import (
            content_type_conformance,
            not_a_server_error,
            response_schema_conformance,
            status_code_conformance,
        )

        checks = [
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ]
        self.tried += 1
        response = case.call(headers=self.headers)
        self.statuses[response.status_code] += 1
        try:
            case.validate_response(response, checks=checks, headers=self.headers)
        except (Exception, BaseExceptionGroup) as err:  # a FailureGroup: one entry per failed check
            self.failing_cases += 1
            text = str(err).strip()
            first_line = text.splitlines()[0] if text else type(err).__name__
            self.problems.append(f"{label} ({mode.value}) -> {response.status_code}: {first_line}")


def case_runner(tally: FuzzTally, operation: Any, mode: Any, cases_per_operation: int) -> Callable[[], None]:
    """A hypothesis test running up to `cases_per_operation` derandomized cases of one operation."""
    from hypothesis import HealthCheck, Phase, given
    from hypothesis import settings as hypothesis_settings

    @hypothesis_settings(
        max_examples=cases_per_operation,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate],
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run_case(case: Any) -> None:
        tally.check(case, operation.label, mode)

    return run_case


def fuzz_app(
    app: Any,
    cases_per_operation: int,
    headers: dict[str, str] | None = None,
    skip_paths: Sequence[str] = (),
) -> CaseResult:
    """Schemathesis cases (positive and negative) for every operation of the app's OpenAPI schema.

    The app's lifespan runs first (so the model is loaded); each case is then one in-process ASGI
    call. A failure is a 5xx, an undocumented status code or content type, or a body that does not
    match its response schema. Build the app with `micro_batching=False`: each case is its own
    event loop, and the micro-batcher lives in the lifespan's loop.
    """
    import schemathesis
    from fastapi.testclient import TestClient
    from schemathesis import GenerationMode

    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    tally = FuzzTally(headers)
    with TestClient(app):
        for result in schema.get_all_operations():
            operation = result.ok()
            if operation.path in skip_paths:
                continue
            tally.operations += 1
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                try:
                    case_runner(tally, operation, mode, cases_per_operation)()
                except Exception as err:  # e.g. an operation with nothing to make negative
                    if "unsatisf" not in f"{type(err).__name__} {err}".lower():
                        tally.problems.append(
                            f"{operation.label} ({mode.value}): {type(err).__name__}: {err}"
                        )
                        tally.failing_cases += 1
    server_errors = sum(count for status, count in tally.statuses.items() if status >= 500)
    status_text = ", ".join(f"{status}: {count}" for status, count in sorted(tally.statuses.items()))
    skipped = f"; skipped {', '.join(skip_paths)}" if skip_paths else ""
    return CaseResult(
        f"fuzz (schemathesis, in-process ASGI){skipped}",
        tally.tried,
        tally.failing_cases,
        f"{tally.operations} operations; 5xx: {server_errors}; statuses {status_text}",
        tally.problems,
    )
