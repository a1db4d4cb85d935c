"""`tierwise classify`: route a JSONL file of requests offline, as the service would.

    tierwise classify --input requests.jsonl --output routed.jsonl [--model DIR] [--policy YAML] [--raw]

Each input row carries `text` or OpenAI-style `messages`, and may carry the service's `min_tier`,
`max_tier` and `route`; other fields pass through. By default every row goes through the routing
policy exactly as `POST /classify` does (escalation, long context, route overrides, tier bounds,
privacy) and gains the response's fields: `tier`, `model` (the routed model, replacing any `model`
the row asked for), `complexity_tier`, `fallbacks`, `reasons`, `confidence`, `probabilities`, `predicted_tier`,
`escalated`, `decided_by`, `token_count` and `model_version`. With `--raw` the policy is skipped and
each row gets the classifier's own answer (`tier` after the upward rule, `confidence`,
`probabilities`, `predicted_tier`, `escalated`, `token_count`, `model_version`).
Unusable rows are reported with their line number on stderr and the rest are still classified.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import IO, Any

from tierwise.cli.options import UsageError, add_input_file, add_model, add_output_file, add_policy
from tierwise.core.classifier import TierClassifier
from tierwise.core.decide import decision_wire_form, score_then_decide
from tierwise.core.policy import Policy, RoutingInput, UnknownTierError
from tierwise.core.policy_file import load_policy
from tierwise.core.request_text import ClassifierInput, RequestTextError, request_input


@dataclass(frozen=True)
class ReadRow:
    number: int  # line number in the input file, for error messages
    row: dict[str, Any]
    request: RoutingInput


def optional_string(row: dict[str, Any], name: str) -> str | None:
    """A field the service also reads from a request (`min_tier`, `max_tier`, `route`)."""
    value = row.get(name)
    if value is not None and not isinstance(value, str):
        raise RequestTextError(f"'{name}' must be a string")
    return value


def routing_input(row: dict[str, Any], policy: Policy | None) -> RoutingInput:
    """The policy's view of one row, as the service builds it; raises RequestTextError naming the field.
    Without a policy (--raw) only the text counts: the tier bounds and route are the policy's business."""
    read = request_input(row)
    if policy is None:
        return RoutingInput(text=read.text, request=read)
    request = RoutingInput(
        text=read.text,
        min_tier=optional_string(row, "min_tier"),
        max_tier=optional_string(row, "max_tier"),
        route=optional_string(row, "route"),
        request=read,
    )
    try:
        policy.validate_request(request)
    except (UnknownTierError, ValueError) as err:  # an unknown tier, or min_tier above max_tier
        raise RequestTextError(str(err)) from err
    return request


def read_requests(stream: IO[bytes], errors: list[str], policy: Policy | None = None) -> Iterator[ReadRow]:
    """Every usable line, in order; problems are appended to `errors` as 'line N: why'."""
    for number, raw in enumerate(stream, start=1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw.decode("utf-8"))
            if not isinstance(row, dict):
                raise RequestTextError("row must be a JSON object")
            yield ReadRow(number, row, routing_input(row, policy))
        except UnicodeDecodeError:
            errors.append(f"line {number}: not valid UTF-8")
        except json.JSONDecodeError as err:
            errors.append(f"line {number}: invalid JSON ({err.msg})")
        except RequestTextError as err:
            errors.append(f"line {number}: {err}")


def routed_fields(
    classifier: TierClassifier, policy: Policy, requests: list[RoutingInput]
) -> list[dict[str, Any]]:
    """The policy's decision for each request, in its wire form (what POST /classify answers)."""
    return [
        decision_wire_form(d, classifier.version) for d in score_then_decide(classifier, policy, requests)
    ]


def raw_fields(
    classifier: TierClassifier, requests: list[RoutingInput], q: float | None
) -> list[dict[str, Any]]:
    """The classifier's answer alone: the upward rule with `q` (default: the model's), no policy."""
    inputs: list[ClassifierInput] = [r.classifier_input for r in requests]
    return [
        {
            "tier": p.tier,
            "confidence": p.confidence,
            "probabilities": p.probabilities,
            "predicted_tier": p.predicted_tier,
            "escalated": p.escalated,
            "token_count": p.token_count,
            "model_version": classifier.version,
        }
        for p in classifier.classify(inputs, q=q)
    ]


def classify_stream(
    classifier: TierClassifier,
    source: IO[bytes],
    sink: IO[str],
    batch_size: int,
    policy: Policy | None,
    q: float | None = None,
) -> tuple[int, list[str]]:
    """Classify rows in batches, in input order (`policy` None: raw classifier output); returns
    (rows written, error messages)."""
    errors: list[str] = []
    written = 0
    batch: list[ReadRow] = []

    def flush() -> None:
        nonlocal written
        requests = [item.request for item in batch]
        answers = (
            raw_fields(classifier, requests, q)
            if policy is None
            else routed_fields(classifier, policy, requests)
        )
        for item, fields in zip(batch, answers, strict=True):
            sink.write(json.dumps({**item.row, **fields}, ensure_ascii=False) + "\n")
        written += len(batch)
        batch.clear()

    for item in read_requests(source, errors, policy):
        batch.append(item)
        if len(batch) >= batch_size:
            flush()
    if batch:
        flush()
    return written, errors


def load_routing_policy(args: argparse.Namespace, classifier: TierClassifier) -> Policy | None:
    """The policy to route with (None with --raw); --q replaces its escalation target."""
    if args.raw:
        return None
    policy = load_policy(args.policy)
    policy.check_model_tiers(classifier.tiers)
    return policy if args.q is None else replace(policy, escalation_q=args.q)


def cmd_classify(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    classifier = TierClassifier(args.model, intra_op_threads=args.threads)
    policy = load_routing_policy(args, classifier)
    if not args.input.is_file():
        raise FileNotFoundError(f"input file {args.input} does not exist; pass --input with a JSONL file")
    started = time.perf_counter()
    with open(args.input, "rb") as source, open(args.output, "w", encoding="utf-8") as sink:
        written, errors = classify_stream(classifier, source, sink, args.batch_size, policy, args.q)
    elapsed = time.perf_counter() - started
    for message in errors:
        sys.stderr.write(f"{args.input}: {message}\n")
    rate = written / elapsed if elapsed > 0 else 0.0
    how = "classifier only (--raw)" if policy is None else f"policy {args.policy}"
    sys.stderr.write(
        f"classified {written} rows in {elapsed:.2f} s ({rate:.0f} rows/s) with {classifier.version}, "
        f"{how}; {len(errors)} unusable row(s) skipped\n"
    )
    if errors and not written:
        sys.stderr.write(
            f"error: no usable row in {args.input} ({len(errors)} unusable); each row needs a 'text' "
            "string or a 'messages' list (see the lines above)\n"
        )
        return 1
    return 0


def add_classify_command(sub: Any) -> None:
    classify = sub.add_parser(
        "classify",
        help="route a JSONL file of requests with the model and policy",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_input_file(classify, "JSONL requests: `text` or `messages` per row")
    add_output_file(classify, "JSONL: each input row with its routing")
    add_model(classify)
    add_policy(classify)
    classify.add_argument(
        "--raw", action="store_true", help="the classifier's output alone, without the policy's rules"
    )
    classify.add_argument(
        "--batch-size", type=int, default=256, help="rows read per call; sorted by length inside"
    )
    classify.add_argument(
        "--threads", type=int, default=0, help="onnxruntime intra-op threads (0 = all cores)"
    )
    classify.add_argument(
        "--q", type=float, default=None, help="escalation target (default: the policy's, else the model's)"
    )
    classify.set_defaults(func=cmd_classify)
