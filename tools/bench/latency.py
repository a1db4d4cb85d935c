"""In-process classifier latency, batch 1: tokenize + infer + calibrate, bare and wrapped requests."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tierwise.core.request_text import ClassifierInput, request_input
from tierwise.core.text_encoding import TextEncoder

from tools.bench.prompts import prompt_of_tokens
from tools.harness import percentile

WRAPPED_SYSTEM_TOKENS = 1000


@dataclass
class LatencyRow:
    engine: str
    tokens: int
    seen_tokens: int
    p50_ms: float
    p99_ms: float
    shape: str = "bare"  # or "wrapped": the same task behind a long system prompt


def wrapped_request(
    encoder: TextEncoder, pool: Sequence[str], task: str, system_tokens: int
) -> ClassifierInput:
    """`task` as the last user turn behind a system prompt of about `system_tokens` tokens."""
    system = prompt_of_tokens(encoder, list(reversed(pool)), system_tokens)
    return request_input(
        {"messages": [{"role": "system", "content": system}, {"role": "user", "content": task}]}
    )


def time_calls(
    predict_proba: Callable[[list[Any]], Any], item: str | ClassifierInput, iterations: int
) -> list[float]:
    for _ in range(max(10, iterations // 10)):
        predict_proba([item])
    timings = []
    for _ in range(iterations):
        started = time.perf_counter()
        predict_proba([item])
        timings.append((time.perf_counter() - started) * 1000)
    return timings


def measure_in_process(
    engine: str,
    predict_proba: Callable[[list[str]], Any],
    encoder: TextEncoder,
    pool: Sequence[str],
    token_targets: Sequence[int],
    iterations: int,
) -> list[LatencyRow]:
    rows = []
    for tokens in token_targets:
        text = prompt_of_tokens(encoder, pool, tokens)
        seen = len(encoder.encode_ids([text])[0][0])
        timings = time_calls(predict_proba, text, iterations)
        rows.append(LatencyRow(engine, tokens, seen, percentile(timings, 50), percentile(timings, 99)))
    # What apps send: the 64-token task behind a 1,000-token system prompt.
    wrapped = wrapped_request(encoder, pool, prompt_of_tokens(encoder, pool, 64), WRAPPED_SYSTEM_TOKENS)
    (ids,), (count,) = encoder.encode_ids([wrapped])
    timings = time_calls(predict_proba, wrapped, iterations)
    rows.append(
        LatencyRow(engine, count, len(ids), percentile(timings, 50), percentile(timings, 99), "wrapped")
    )
    return rows
