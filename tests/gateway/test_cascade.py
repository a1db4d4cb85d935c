"""The cascade's answer checks, its settings and its retry planner: pure functions, no network."""

from __future__ import annotations

import json

import pytest
from tierwise.core.policy_file import DEFAULT_POLICY_FILE, load_policy
from tierwise.gateway.cascade import (
    EMPTY,
    INVALID_JSON,
    INVALID_TOOL_CALL,
    REFUSAL,
    SCHEMA_MISMATCH,
    STOP_COST_CAP,
    STOP_MAX_RETRIES,
    STOP_PRIVATE,
    STOP_TOP,
    TRUNCATED,
    RetryPlanner,
    Usage,
    check_answer,
    is_structured,
    response_usage,
)
from tierwise.gateway.cascade_config import CascadeConfig, CascadeConfigError, parse_cascade

POLICY = load_policy(DEFAULT_POLICY_FILE)
CHAIN = [
    "gpt-4o-mini",
    "claude-3-5-haiku",
    "gemini-2.0-flash",
    "gpt-4.1",
    "claude-sonnet-4",
    "o3",
    "claude-opus-4-1",
]
SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
    "required": ["city", "population"],
}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def response(content=None, finish="stop", tool_calls=None, refusal=None, usage=None):
    message = {"role": "assistant", "content": content}
    if tool_calls is not None:
        message["tool_calls"] = tool_calls
    if refusal is not None:
        message["refusal"] = refusal
    body = {"choices": [{"index": 0, "message": message, "finish_reason": finish}]}
    if usage is not None:
        body["usage"] = usage
    return body


def tool_call(name, arguments):
    return {"id": "call_1", "type": "function", "function": {"name": name, "arguments": arguments}}


def json_request(schema=None):
    form = (
        {"type": "json_object"}
        if schema is None
        else {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    )
    return {"messages": [{"role": "user", "content": "give JSON"}], "response_format": form}


PLAIN = {"messages": [{"role": "user", "content": "hello"}]}


def reason(request, answer):
    failure = check_answer(request, answer)
    return None if failure is None else failure.reason


# -- checks ---------------------------------------------------------------------------------------


def test_a_good_plain_answer_passes():
    assert reason(PLAIN, response("Hello! How can I help?")) is None


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (response("The answer is", finish="length"), TRUNCATED),
        (response(""), EMPTY),
        (response("   \n"), EMPTY),
        (response(None), EMPTY),
        ({"choices": []}, EMPTY),
        (response(None, refusal="I can't help with that."), REFUSAL),
        (response("", finish="content_filter"), REFUSAL),
        (response("I'm sorry, but I can't help with that."), REFUSAL),
        (response("Sorry, I cannot assist with this request."), REFUSAL),
        (response("I\u2019m unable to provide that information."), REFUSAL),
        (response("Unfortunately, I won't be able to help with that."), REFUSAL),
        (response("Unfortunately the API is down; here is a workaround: retry later."), None),
    ],
)
def test_local_checks_on_plain_answers(answer, expected):
    assert reason(PLAIN, answer) == expected


def test_a_long_answer_that_opens_with_i_cannot_is_not_a_refusal():
    text = "I can't help noticing the loop is quadratic. " + "Here is the fix, step by step. " * 30
    assert reason(PLAIN, response(text)) is None


def test_json_object_answers():
    assert reason(json_request(), response('{"a": 1}')) is None
    assert reason(json_request(), response('{"a": 1')) == INVALID_JSON
    assert reason(json_request(), response('```json\n{"a": 1}\n```')) == INVALID_JSON
    assert reason(json_request(), response("[1, 2]")) == INVALID_JSON  # json_object: an object
    assert reason(PLAIN, response('{"a": 1')) is None  # JSON not asked for


def test_json_schema_answers():
    good = json.dumps({"city": "Oslo", "population": 709000})
    assert reason(json_request(SCHEMA), response(good)) is None
    assert reason(json_request(SCHEMA), response('{"city": "Oslo"}')) == SCHEMA_MISMATCH
    failure = check_answer(json_request(SCHEMA), response('{"city": "Oslo", "population": "many"}'))
    assert failure.reason == SCHEMA_MISMATCH and "population" in failure.detail
    broken_schema = {"type": "no-such-type"}
    assert reason(json_request(broken_schema), response('{"x": 1}')) is None  # cannot be held against it


def test_tool_call_answers():
    request = {**PLAIN, "tools": [WEATHER_TOOL]}
    assert reason(request, response(None, tool_calls=[tool_call("get_weather", '{"city": "Oslo"}')])) is None
    assert (
        reason(request, response(None, tool_calls=[tool_call("get_weather", '{"city": ')]))
        == INVALID_TOOL_CALL
    )
    assert reason(request, response(None, tool_calls=[tool_call("get_weather", "{}")])) == INVALID_TOOL_CALL
    assert (
        reason(request, response(None, tool_calls=[tool_call("get_weather", '{"city": 3}')]))
        == INVALID_TOOL_CALL
    )
    assert reason(request, response(None, tool_calls=[tool_call("delete_all", "{}")])) == INVALID_TOOL_CALL
    assert reason(request, response("It is sunny.")) is None  # tool_choice auto: text is fine
    required = {**request, "tool_choice": "required"}
    assert reason(required, response("It is sunny.")) == INVALID_TOOL_CALL


def test_a_tool_call_answers_a_json_request_without_text():
    request = {**json_request(), "tools": [WEATHER_TOOL]}
    assert reason(request, response(None, tool_calls=[tool_call("get_weather", '{"city": "Oslo"}')])) is None


def test_checks_can_be_turned_off():
    assert check_answer(json_request(), response('{"a": 1'), frozenset({"truncated"})) is None
    assert check_answer(PLAIN, response("x", finish="length"), frozenset({"json"})) is None


def test_every_choice_is_checked_and_litellm_objects_are_read():
    litellm = pytest.importorskip("litellm")
    answer = litellm.ModelResponse(
        choices=[
            {"index": 0, "message": {"role": "assistant", "content": "fine"}, "finish_reason": "stop"},
            {"index": 1, "message": {"role": "assistant", "content": "cut"}, "finish_reason": "length"},
        ]
    )
    assert reason(PLAIN, answer) == TRUNCATED


def test_structured_requests():
    assert is_structured(json_request()) and is_structured({**PLAIN, "tools": [WEATHER_TOOL]})
    assert not is_structured(PLAIN) and not is_structured({**PLAIN, "response_format": {"type": "text"}})


def test_usage_from_the_response_or_estimated():
    assert response_usage(PLAIN, response("hi", usage={"prompt_tokens": 7, "completion_tokens": 3})) == Usage(
        7, 3
    )
    estimated = response_usage(PLAIN, response("x" * 40))
    assert estimated.completion_tokens == 11 and estimated.prompt_tokens > 0


# -- settings --------------------------------------------------------------------------------------


def test_settings_defaults_and_off():
    assert parse_cascade(None) is None
    assert parse_cascade({"enabled": False}) is None
    config = parse_cascade({})
    assert config == CascadeConfig()
    assert config.max_retries == 1 and config.max_usd_per_request == 0.05 and config.streams == "buffer"
    judged = parse_cascade({"judge": {"model": "o3", "share": 0.1, "failure_rate": 0.2}})
    assert judged.judge.model == "o3" and judged.judge.min_grade == 4 and judged.judge.failure_rate == 0.2


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"max_retries": -1}, "max_retries"),
        ({"max_retries": 1.5}, "max_retries"),
        ({"max_usd_per_request": "a lot"}, "max_usd_per_request"),
        ({"checks": ["json", "vibes"]}, "checks"),
        ({"streams": "sometimes"}, "streams"),
        ({"retries": 2}, "unknown key"),
        ({"judge": {"share": 0.1}}, "model"),
        ({"judge": {"model": "o3", "min_grade": 6}}, "min_grade"),
        ({"enabled": "yes"}, "enabled"),
    ],
)
def test_bad_settings_name_the_key(raw, key):
    with pytest.raises(CascadeConfigError, match=key):
        parse_cascade(raw, "my.yaml")


# -- the planner ------------------------------------------------------------------------------------


def planner(**settings):
    return RetryPlanner(POLICY, CascadeConfig(**settings))


USAGE = Usage(prompt_tokens=1000, completion_tokens=200)


def test_next_tier_up_with_its_own_fallbacks():
    plan = planner().next_rung(CHAIN, "fast", 0, 0.0, USAGE, private=False)
    assert plan.rung.tier == "balanced" and plan.rung.group == "gpt-4.1"
    assert plan.rung.fallbacks == ("claude-sonnet-4", "o3", "claude-opus-4-1")
    assert plan.estimated_usd == pytest.approx((1000 * 2.0 + 300 * 8.0) / 1e6)  # expected output 300


def test_from_the_tier_that_answered_not_the_routed_one():
    # the fast groups all erred and LiteLLM's fallbacks answered with balanced: the retry goes to frontier
    plan = planner(max_retries=2).next_rung(CHAIN, "balanced", 0, 0.0, USAGE, private=False)
    assert plan.rung.group == "o3"


def test_stops():
    assert planner(max_retries=1).next_rung(CHAIN, "balanced", 1, 0.0, USAGE, False).stop == STOP_MAX_RETRIES
    assert planner(max_retries=0).next_rung(CHAIN, "fast", 0, 0.0, USAGE, False).stop == STOP_MAX_RETRIES
    assert planner(max_retries=5).next_rung(CHAIN, "frontier", 0, 0.0, USAGE, False).stop == STOP_TOP
    capped = CHAIN[:5]  # max_tier balanced: the chain stops there
    assert planner(max_retries=5).next_rung(capped, "balanced", 0, 0.0, USAGE, False).stop == STOP_TOP
    plan = planner(max_usd_per_request=0.003).next_rung(CHAIN, "fast", 0, 0.0005, USAGE, False)
    assert plan.stop == STOP_COST_CAP and plan.rung is None
    assert planner(max_usd_per_request=None).next_rung(CHAIN, "fast", 0, 99.0, USAGE, False).rung is not None


def test_a_private_request_never_leaves_the_private_tier():
    private_chain = ["llama-3.3-70b-selfhosted"]
    for chain in (private_chain, CHAIN):  # even if a caller passed a public chain
        plan = planner(max_retries=5, max_usd_per_request=None).next_rung(chain, "private", 0, 0, USAGE, True)
        assert plan.rung is None and plan.stop == STOP_PRIVATE
    plan = planner(max_retries=5).next_rung(private_chain, "private", 0, 0.0, USAGE, private=False)
    assert plan.stop == STOP_PRIVATE  # the private tier answered: private, whatever the flag says


def test_mapped_group_names_and_max_tokens():
    mapped = RetryPlanner(POLICY, CascadeConfig(), {"gpt-4.1": "my-gpt41"})
    plan = mapped.next_rung(["gpt-4o-mini", "my-gpt41", "o3"], "fast", 0, 0.0, USAGE, False, max_tokens=50)
    assert plan.rung.group == "my-gpt41" and mapped.tier_of("my-gpt41") == "balanced"
    assert plan.estimated_usd == pytest.approx((1000 * 2.0 + 50 * 8.0) / 1e6)
    assert mapped.cost_usd("fast", Usage(1_000_000, 0)) == pytest.approx(0.15)


# -- what a failed check says: never the answer's values ------------------------------------------

SSN = "123-45-6789"
EMAIL = "jane.doe@example.com"
PERSON_SCHEMA = {
    "type": "object",
    "properties": {"ssn": {"type": "string", "pattern": "^[0-9]{9}$"}, "tags": {"type": "array"}},
    "additionalProperties": {"type": "integer"},
    "required": ["ssn"],
}


@pytest.mark.parametrize(
    ("request_body", "answer", "expected"),
    [
        (json_request(PERSON_SCHEMA), response(json.dumps({"ssn": SSN})), "ssn: pattern"),
        (json_request(PERSON_SCHEMA), response(json.dumps({"ssn": "123456789", EMAIL: SSN})), "*: type"),
        (json_request(PERSON_SCHEMA), response(json.dumps({"ssn": ["x", EMAIL]})), "ssn: type"),
        (json_request(), response(f'{{"email": "{EMAIL}", "ssn": {SSN}}}'), None),
        (
            {**PLAIN, "tools": [WEATHER_TOOL]},
            response(None, tool_calls=[tool_call("get_weather", json.dumps({"city": 3, "note": EMAIL}))]),
            "get_weather: city: type",
        ),
        (
            {**PLAIN, "tools": [WEATHER_TOOL]},
            response(None, tool_calls=[tool_call(f"mail_{EMAIL}", "{}")]),
            "calls a tool the request does not offer",
        ),
        (
            {**PLAIN, "tools": [WEATHER_TOOL]},
            response(None, tool_calls=[tool_call("get_weather", f'{{"city": "{EMAIL}" {SSN}')]),
            None,
        ),
    ],
)
def test_a_failed_check_names_where_and_which_rule_never_the_value(request_body, answer, expected):
    failure = check_answer(request_body, answer)
    assert failure is not None
    assert SSN not in failure.detail and EMAIL not in failure.detail and "jane" not in failure.detail
    assert "6789" not in failure.detail
    if expected is not None:
        assert failure.detail == expected


def test_a_retrys_fallbacks_keep_only_tiers_whose_estimate_fits_the_cap():
    # balanced's estimate (0.0044) fits a cap of 0.01; frontier's (0.0375) does not: a retry whose
    # balanced groups all err must not fall back to frontier and spend past the cap
    capped = planner(max_usd_per_request=0.01).next_rung(CHAIN, "fast", 0, 0.0005, USAGE, False)
    assert capped.rung.group == "gpt-4.1" and capped.rung.fallbacks == ("claude-sonnet-4",)
    roomy = planner(max_usd_per_request=0.05).next_rung(CHAIN, "fast", 0, 0.0005, USAGE, False)
    assert roomy.rung.fallbacks == ("claude-sonnet-4", "o3", "claude-opus-4-1")
    uncapped = planner(max_usd_per_request=None).next_rung(CHAIN, "fast", 0, 9.0, USAGE, False)
    assert uncapped.rung.fallbacks == ("claude-sonnet-4", "o3", "claude-opus-4-1")


def test_the_planner_takes_the_gateways_group_names_and_still_knows_the_policys():
    plain = planner()
    assert plain.tier_of("my-gpt41") is None
    plain.use_model_groups({"gpt-4.1": "my-gpt41"})
    assert plain.tier_of("my-gpt41") == "balanced" and plain.tier_of("gpt-4.1") == "balanced"
    plan = plain.next_rung(["gpt-4o-mini", "my-gpt41", "o3"], "fast", 0, 0.0, USAGE, False)
    assert plan.rung.group == "my-gpt41"
