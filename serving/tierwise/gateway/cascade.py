"""Cascade routing: check an answer cheaply and, when the check fails, retry one tier up.

The checks are pure functions of an OpenAI-style chat request and its response (a dict, or a LiteLLM
`ModelResponse`), local and cheap (microseconds; no model is called):

- `truncated`: a choice stopped on its token limit (`finish_reason: length`);
- `empty`: no text and no tool call; `refusal`: the model's `refusal` field, a content filter, or a
  short answer that opens by declining ("I'm sorry, but I can't help with that");
- `json`: the request asked for JSON (`response_format` json_object or json_schema) and the text does
  not parse (`invalid_json`) or does not match the schema (`schema_mismatch`);
- `tools`: a tool call names a tool the request did not offer, its arguments do not parse or do not
  match the tool's parameter schema, or `tool_choice` required a call and there is none
  (`invalid_tool_call`).

`RetryPlanner` says where a failed answer goes next: the cheapest tier above the one that answered
among the request's chain (the routed tier's groups, then the stronger tiers' groups: so a route's or
the caller's `max_tier` still caps it), at most `max_retries` times and only while the estimated spend
of the request, retries included, stays within `max_usd_per_request` (the policy's prices). A retry's
LiteLLM fallbacks (the chain's rest, for when its tier's groups all err) keep only the groups of tiers
whose estimate also fits within that cap: whichever group answers, the cap holds. A private
request is never retried: it never leaves the private tier. The runner that calls the models is
cascade_runner.py; the settings are the policy's `cascade:` section (cascade_config.py).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tierwise.core.cascade_names import (
    EMPTY,
    INVALID_JSON,
    INVALID_TOOL_CALL,
    REFUSAL,
    SCHEMA_MISMATCH,
    TRUNCATED,
)
from tierwise.core.cascade_names import JUDGE_LOW as JUDGE_LOW  # the reasons, shared with the service
from tierwise.core.cascade_names import REASONS as REASONS
from tierwise.core.policy import Policy, TierConfig
from tierwise.core.scoring import CHARS_PER_TOKEN_ESTIMATE, priced_tier, request_cost_usd
from tierwise.gateway.cascade_config import LOCAL_CHECKS, CascadeConfig

# Why no (further) retry was made.
STOP_PASSED = "passed"
STOP_PRIVATE = "private"  # a private request never leaves the private tier
STOP_MAX_RETRIES = "max_retries"
STOP_COST_CAP = "cost_cap"
STOP_TOP = "no_stronger_tier"  # nothing stronger in the request's chain (the top tier, or max_tier)

REFUSAL_MAX_CHARS = 600  # a longer answer that opens with "I can't" is usually an answer, not a refusal
_REFUSAL_RE = re.compile(
    r"^\W*(?:(?:i'?m|i am)\s+(?:so\s+|very\s+|really\s+)?sorry|sorry|i apologi[sz]e|unfortunately)?"
    r"[\s,.!:;-]*(?:but\s+)?(?:i|we)\s*(?:can(?:no|')?t|cannot|am\s+unable\s+to|'m\s+unable\s+to|are\s+unable\s+to"
    r"|am\s+not\s+able\s+to|(?:won'?t|will\s+not)(?:\s+be\s+able\s+to)?|must\s+decline\s+to|have\s+to\s+decline\s+to)\s+"
    r"(?:help|assist|comply|provide|do\s+that|fulfil|complete|answer|share|create|generate|continue|support"
    r"|write|give|engage)",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class CheckFailure:
    reason: str  # one of REASONS
    # What failed, for logs and feedback: the check, a JSON path and a schema keyword (`ssn: pattern`),
    # never a value, a key or a tool name the answer chose, nor a message quoting them.
    detail: str = ""


def as_dict(obj: Any) -> dict[str, Any]:
    """A response, choice or message as a plain dict (a LiteLLM/pydantic object is dumped)."""
    if isinstance(obj, Mapping):
        return dict(obj)
    for method in ("model_dump", "dict"):
        dump = getattr(obj, method, None)
        if callable(dump):
            try:
                value = dump()
            except Exception:  # a pydantic v1/v2 mismatch: try the next way
                continue
            if isinstance(value, Mapping):
                return dict(value)
    return {}


def _choices(response: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [as_dict(c) for c in response.get("choices") or []]


def _schema_errors(instance: Any, schema: Mapping[str, Any]) -> str | None:
    """The first way `instance` breaks `schema` (None: it matches, or the schema cannot be used)."""
    import jsonschema

    try:
        validator_class = jsonschema.validators.validator_for(schema)
        validator_class.check_schema(schema)
        error = jsonschema.exceptions.best_match(validator_class(schema).iter_errors(instance))
    except jsonschema.exceptions.SchemaError:
        return None  # the caller's schema is broken: no answer could be held against it
    if error is None:
        return None
    return f"{schema_error_path(error)}: {error.validator}"


def schema_error_path(error: Any) -> str:
    """Where in the answer a schema error is, from names the schema gives only: an array index, or a
    property the schema names (in the error's schema path); any other key the answer chose is `*`.
    (jsonschema's message quotes the answer's value, so it is never used.)"""
    named = {str(part) for part in error.absolute_schema_path}
    parts = [str(p) if isinstance(p, int) or str(p) in named else "*" for p in error.absolute_path]
    return "/".join(parts) or "(root)"


def check_finish(choice: Mapping[str, Any]) -> CheckFailure | None:
    reason = choice.get("finish_reason")
    if reason == "length":
        return CheckFailure(TRUNCATED, "finish_reason length")
    if reason == "content_filter":
        return CheckFailure(REFUSAL, "finish_reason content_filter")
    return None


def check_empty_or_refusal(message: Mapping[str, Any]) -> CheckFailure | None:
    if message.get("refusal"):
        return CheckFailure(REFUSAL, "refusal field")
    content = message.get("content")
    text = content if isinstance(content, str) else ""
    if not text.strip() and not message.get("tool_calls") and not message.get("function_call"):
        return CheckFailure(EMPTY, "no text and no tool call")
    if len(text) <= REFUSAL_MAX_CHARS and _REFUSAL_RE.search(text.replace("\u2019", "'")):
        return CheckFailure(REFUSAL, "the answer declines")
    return None


def requested_json(request: Mapping[str, Any]) -> tuple[bool, Mapping[str, Any] | None]:
    """(the request asked for JSON, its JSON schema if it gave one)."""
    form = request.get("response_format")
    if not isinstance(form, Mapping):
        return False, None
    if form.get("type") == "json_object":
        return True, None
    if form.get("type") == "json_schema":
        spec = form.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, Mapping) else None
        return True, schema if isinstance(schema, Mapping) else None
    return False, None


def check_json(request: Mapping[str, Any], message: Mapping[str, Any]) -> CheckFailure | None:
    wanted, schema = requested_json(request)
    content = message.get("content")
    if not wanted or (not content and message.get("tool_calls")):  # a tool call instead of text
        return None
    try:
        value = json.loads(content if isinstance(content, str) else "")
    except ValueError as err:
        return CheckFailure(INVALID_JSON, f"not JSON: {_json_error(err)}")
    if schema is None:
        return None if isinstance(value, dict) else CheckFailure(INVALID_JSON, "not a JSON object")
    problem = _schema_errors(value, schema)
    return None if problem is None else CheckFailure(SCHEMA_MISMATCH, problem)


def offered_tools(request: Mapping[str, Any]) -> dict[str, Mapping[str, Any] | None]:
    """Tool name -> its parameter schema (None: none given), from `tools` (and legacy `functions`)."""
    out: dict[str, Mapping[str, Any] | None] = {}
    for tool in request.get("tools") or []:
        function = tool.get("function") if isinstance(tool, Mapping) else None
        if isinstance(function, Mapping) and function.get("name"):
            parameters = function.get("parameters")
            out[str(function["name"])] = parameters if isinstance(parameters, Mapping) else None
    for function in request.get("functions") or []:
        if isinstance(function, Mapping) and function.get("name"):
            parameters = function.get("parameters")
            out[str(function["name"])] = parameters if isinstance(parameters, Mapping) else None
    return out


def _json_error(err: ValueError) -> str:
    """A JSON parse error without the text it failed on: the message and the position."""
    if isinstance(err, json.JSONDecodeError):
        return f"{err.msg} at character {err.pos}"
    return type(err).__name__


def _tool_call_problem(call: Mapping[str, Any], tools: Mapping[str, Mapping[str, Any] | None]) -> str | None:
    function = as_dict(call.get("function") or {})
    name = str(function.get("name") or "")
    if tools and name not in tools:
        return "calls a tool the request does not offer"
    label = name if name in tools else "tool call"  # a name the answer made up is never repeated
    arguments = function.get("arguments")
    try:
        value = json.loads(arguments) if isinstance(arguments, str) else arguments
    except ValueError as err:
        return f"{label}: arguments are not JSON ({_json_error(err)})"
    if not isinstance(value, dict):
        return f"{label}: arguments are not a JSON object"
    schema = tools.get(name)
    problem = None if schema is None else _schema_errors(value, schema)
    return None if problem is None else f"{label}: {problem}"


def check_tool_calls(request: Mapping[str, Any], message: Mapping[str, Any]) -> CheckFailure | None:
    tools = offered_tools(request)
    calls = [as_dict(c) for c in message.get("tool_calls") or []]
    if message.get("function_call"):
        calls.append({"function": as_dict(message["function_call"])})
    choice = request.get("tool_choice")
    required = choice == "required" or (isinstance(choice, Mapping) and choice.get("type") == "function")
    if tools and required and not calls:
        return CheckFailure(INVALID_TOOL_CALL, "tool_choice requires a tool call and there is none")
    for call in calls:
        problem = _tool_call_problem(call, tools)
        if problem is not None:
            return CheckFailure(INVALID_TOOL_CALL, problem)
    return None


def check_answer(
    request: Mapping[str, Any], response: Any, checks: frozenset[str] = frozenset(LOCAL_CHECKS)
) -> CheckFailure | None:
    """The first failed check of any choice of `response`, or None when every enabled check passes."""
    choices = _choices(as_dict(response))
    if not choices:
        return CheckFailure(EMPTY, "no choices") if "empty" in checks else None
    for choice in choices:
        message = as_dict(choice.get("message") or {})
        found = [
            check_finish(choice) if "truncated" in checks or "refusal" in checks else None,
            check_empty_or_refusal(message) if {"empty", "refusal"} & checks else None,
            check_json(request, message) if "json" in checks else None,
            check_tool_calls(request, message) if "tools" in checks else None,
        ]
        for failure in found:
            if failure is not None and _enabled(failure.reason, checks):
                return failure
    return None


def _enabled(reason: str, checks: frozenset[str]) -> bool:
    return {
        TRUNCATED: "truncated" in checks,
        EMPTY: "empty" in checks,
        REFUSAL: "refusal" in checks,
        INVALID_JSON: "json" in checks,
        SCHEMA_MISMATCH: "json" in checks,
        INVALID_TOOL_CALL: "tools" in checks,
    }.get(reason, True)


def is_structured(request: Mapping[str, Any]) -> bool:
    """Whether the request asked for JSON or offered tools: a stream of it is buffered and checked."""
    return requested_json(request)[0] or bool(offered_tools(request))


# -- the retry planner --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rung:
    """One step of the cascade: call `group` (of `tier`), falling back on errors to `fallbacks`."""

    tier: str
    group: str
    fallbacks: tuple[str, ...]


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int


def response_usage(request: Mapping[str, Any], response: Any) -> Usage:
    """The response's token usage; estimated from characters where the response has none."""
    usage = as_dict(as_dict(response).get("usage") or {})
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if isinstance(prompt, int) and isinstance(completion, int) and prompt + completion > 0:
        return Usage(prompt, completion)  # (a mocked or rebuilt stream reports 0 and 0: estimated)
    prompt_chars = len(json.dumps(request.get("messages") or request.get("prompt") or "", default=str))
    answer_chars = sum(
        len(str(as_dict(c.get("message") or {}).get("content") or "")) for c in _choices(as_dict(response))
    )
    return Usage(prompt_chars // CHARS_PER_TOKEN_ESTIMATE + 1, answer_chars // CHARS_PER_TOKEN_ESTIMATE + 1)


@dataclass(frozen=True)
class RetryPlan:
    rung: Rung | None  # the next call; None: stop
    stop: str | None = None  # why not (STOP_*)
    estimated_usd: float = 0.0  # the next call's estimated cost (at its own tier's price)


class RetryPlanner:
    """Where a request goes after a failed check, from the policy's tiers and prices."""

    def __init__(
        self, policy: Policy, config: CascadeConfig, model_groups: Mapping[str, str] | None = None
    ) -> None:
        self.policy = policy
        self.config = config
        self._tier_of_group: dict[str, str] = {}
        self.use_model_groups(model_groups or {})

    def use_model_groups(self, model_groups: Mapping[str, str]) -> None:
        """Name the policy's models by the gateway's groups ({policy model: group}); the gateway that
        builds the chains hands its own mapping over (TierwiseLiteLLMRouter, TierwiseProxyHook). A
        policy model's own name still names its tier (a chain built without the mapping)."""
        tiers = (*self.policy.tiers, *([self.policy.private_tier] if self.policy.private_tier else []))
        self._tier_of_group = {}
        for tier in tiers:
            for model in tier.models:
                self._tier_of_group.setdefault(model_groups.get(model, model), tier.name)
        for tier in tiers:
            for model in tier.models:
                self._tier_of_group.setdefault(model, tier.name)

    def tier_of(self, group: str | None) -> str | None:
        return self._tier_of_group.get(group) if group else None

    def tier_config(self, tier: str) -> TierConfig:
        return priced_tier(self.policy, tier)

    def cost_usd(self, tier: str, usage: Usage) -> float:
        """What a call to `tier` cost, at the policy's price of that tier."""
        config = self.tier_config(tier)
        return float(
            request_cost_usd(
                usage.prompt_tokens,
                usage.completion_tokens,
                config.input_price_per_million,
                config.output_price_per_million,
            )
        )

    def estimate_usd(self, tier: str, usage: Usage, max_tokens: int | None) -> float:
        """A retry's cost: the same prompt, and the larger of the answer seen and the policy's
        expected output (at most the request's max_tokens)."""
        output = max(usage.completion_tokens, self.policy.expected_output_tokens)
        if max_tokens is not None and max_tokens > 0:
            output = min(output, max_tokens)
        return self.cost_usd(tier, Usage(usage.prompt_tokens, output))

    def ladder(self, chain: Sequence[str]) -> list[Rung]:
        """The first group of each tier in the chain, in chain order, with what follows it."""
        rungs: list[Rung] = []
        seen: set[str] = set()
        for position, group in enumerate(chain):
            tier = self.tier_of(group)
            if tier is not None and tier not in seen:
                seen.add(tier)
                rungs.append(Rung(tier, group, tuple(chain[position + 1 :])))
        return rungs

    def next_rung(
        self,
        chain: Sequence[str],
        answered_tier: str | None,
        retries: int,
        spent_usd: float,
        usage: Usage,
        private: bool,
        max_tokens: int | None = None,
    ) -> RetryPlan:
        """The next call after a failed check of `answered_tier`'s answer, or why there is none."""
        private_tier = self.policy.private_tier.name if self.policy.private_tier is not None else None
        if private or (private_tier is not None and answered_tier == private_tier):
            return RetryPlan(None, STOP_PRIVATE)
        if retries >= self.config.max_retries:
            return RetryPlan(None, STOP_MAX_RETRIES)
        names = list(self.policy.tier_names)
        floor = names.index(answered_tier) if answered_tier in names else -1
        stronger = [r for r in self.ladder(chain) if r.tier in names and names.index(r.tier) > floor]
        if not stronger:
            return RetryPlan(None, STOP_TOP)
        rung = stronger[0]
        estimate = self.estimate_usd(rung.tier, usage, max_tokens)
        cap = self.config.max_usd_per_request
        if cap is None:
            return RetryPlan(rung, None, estimate)
        if spent_usd + estimate > cap:
            return RetryPlan(None, STOP_COST_CAP, estimate)
        # A fallback answers when the rung's groups err: only tiers whose estimate fits the cap too.
        estimates = {rung.tier: estimate}
        fallbacks = []
        for group in rung.fallbacks:
            tier = self.tier_of(group)
            if tier is None:
                continue  # a group of no tier has no price: it could break the cap
            if tier not in estimates:
                estimates[tier] = self.estimate_usd(tier, usage, max_tokens)
            if spent_usd + estimates[tier] <= cap:
                fallbacks.append(group)
        return RetryPlan(Rung(rung.tier, rung.group, tuple(fallbacks)), None, estimate)
