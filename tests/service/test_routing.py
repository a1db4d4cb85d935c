"""The router under load: encoder in time, the estimator when it cannot be (admission control or a
missed deadline), the top tier only when nothing can answer. Every decision says which it was."""

import asyncio
import zlib
from dataclasses import replace

import numpy as np
import pytest
from tierwise.core.estimator import Estimator, EstimatorSettings
from tierwise.core.policy import (
    CLASSIFIER_UNAVAILABLE,
    DECIDED_BY_ENCODER,
    DECIDED_BY_ESTIMATOR,
    DECIDED_BY_FALLBACK,
    ESTIMATED,
    LONG_CONTEXT,
    RoutingInput,
)
from tierwise.core.policy_file import parse_policy
from tierwise.core.request_text import ClassifierInput
from tierwise.service.batcher import DirectScorer, Score
from tierwise.service.routing import Router, approximate_token_counts
from tierwise.service.score_cache import ScoreCache, input_key
from tierwise.service.settings import Settings

from tests.core.test_policy import CONFIDENT_FAST, POLICY_YAML
from tests.helpers.timing import HANG_SECONDS, HeldCalls

N = 2**10
IN_TIME_MS = HANG_SECONDS * 1000  # a deadline only a hung encoder misses: these encoders answer at once


def word_estimator() -> Estimator:
    """'theorem' -> frontier, 'email' -> balanced, anything else leans fast."""
    weights = np.zeros((N, 3), dtype=np.float32)
    weights[zlib.crc32(b"theorem") % N, 2] = 30.0
    weights[zlib.crc32(b"email") % N, 1] = 30.0
    return Estimator(weights, np.array([3.0, 0.0, 0.0]), EstimatorSettings(N, 1.0, 0.7))


def encoder_says_fast(texts):
    return np.tile(np.array(CONFIDENT_FAST), (len(texts), 1)), [5] * len(texts)


def raising_encoder(texts):
    raise RuntimeError("model crashed")


class BusyScorer:
    """A scorer whose queue is already far deeper than any deadline."""

    def __init__(self) -> None:
        self.score_calls = 0

    def expected_wait_s(self, text_count: int) -> float:
        return 10.0

    async def score(self, texts):
        self.score_calls += 1
        return [Score(np.array(CONFIDENT_FAST), 5) for _ in texts]

    async def close(self) -> None:
        pass


async def route(
    scorer, texts, estimator=None, deadline_ms=20.0, count_tokens=None, policy=POLICY_YAML, cache=None
):
    router = Router(
        parse_policy(policy),
        scorer,
        0.7,
        deadline_ms=deadline_ms,
        estimator=estimator,
        count_tokens=count_tokens,
        cache=cache,
    )
    try:
        return await router.route([RoutingInput(text=t) for t in texts])
    finally:
        await scorer.close()


def test_the_encoder_decides_when_it_answers_in_time():
    routed = asyncio.run(
        route(DirectScorer(encoder_says_fast), ["prove the theorem"], word_estimator(), IN_TIME_MS)
    )
    [decision] = routed.decisions
    assert decision.tier == "fast" and decision.decided_by == DECIDED_BY_ENCODER
    assert ESTIMATED not in decision.reasons and routed.classifier_error is None


def test_past_the_deadline_the_estimator_answers_not_the_top_tier():
    held = HeldCalls(encoder_says_fast)  # answers only once the routing is done: the answer cannot wait
    try:
        routed = asyncio.run(
            route(DirectScorer(held), ["hi there", "write an email", "the theorem"], word_estimator())
        )
    finally:
        held.release.set()
    assert [d.tier for d in routed.decisions] == ["fast", "balanced", "frontier"]
    assert all(d.decided_by == DECIDED_BY_ESTIMATOR and d.reasons[0] == ESTIMATED for d in routed.decisions)
    assert all(CLASSIFIER_UNAVAILABLE not in d.reasons for d in routed.decisions)
    assert "deadline" in (routed.classifier_error or "")


def test_admission_control_answers_from_the_estimator_without_queueing():
    scorer = BusyScorer()
    routed = asyncio.run(route(scorer, ["write an email"], word_estimator(), deadline_ms=50))
    assert scorer.score_calls == 0  # never queued behind work it could not wait for
    assert routed.decisions[0].tier == "balanced" and routed.decisions[0].decided_by == DECIDED_BY_ESTIMATOR
    assert "admission" in (routed.classifier_error or "")


def test_without_an_estimator_a_busy_queue_is_still_tried_then_falls_back():
    held = HeldCalls(encoder_says_fast)
    try:
        routed = asyncio.run(route(DirectScorer(held), ["write an email"]))
    finally:
        held.release.set()
    [decision] = routed.decisions
    assert decision.tier == "frontier" and decision.decided_by == DECIDED_BY_FALLBACK
    assert decision.reasons == (CLASSIFIER_UNAVAILABLE,)


def test_an_encoder_error_falls_back_upward_even_with_an_estimator():
    # A crash is not load: the estimator is for slowness, an error routes to the strong model.
    routed = asyncio.run(route(DirectScorer(raising_encoder), ["hi"], word_estimator(), IN_TIME_MS))
    assert routed.decisions[0].tier == "frontier" and routed.decisions[0].decided_by == DECIDED_BY_FALLBACK


def test_a_failing_estimator_falls_back_upward():
    class BrokenEstimator(Estimator):
        def predict_proba(self, items):
            raise RuntimeError("corrupt weights")

    broken = BrokenEstimator(np.zeros((N, 3), np.float32), np.zeros(3), EstimatorSettings(N, 1.0, 0.7))
    routed = asyncio.run(route(BusyScorer(), ["hi"], broken))
    assert routed.decisions[0].tier == "frontier" and routed.decisions[0].decided_by == DECIDED_BY_FALLBACK


def test_estimated_decisions_keep_the_policy_rules():
    def count(texts: list[ClassifierInput]) -> list[int]:
        return [300_000 for _ in texts]  # past the fast tier's context

    routed = asyncio.run(
        route(BusyScorer(), ["hi", "mail me at a@example.com"], word_estimator(), count_tokens=count)
    )
    long, private = routed.decisions
    assert long.tier != "fast" and LONG_CONTEXT in long.reasons and long.token_count == 300_000
    assert private.tier == "private" and private.decided_by == DECIDED_BY_ESTIMATOR


def test_token_counts_are_approximated_without_a_tokenizer():
    assert approximate_token_counts([ClassifierInput.plain("x" * 400)]) == [100]


class CountingScorer:
    """Scores every text as confidently fast and counts the texts it was asked for."""

    def __init__(self) -> None:
        self.texts: list[ClassifierInput] = []

    def expected_wait_s(self, text_count: int) -> float:
        return 0.0

    async def score(self, texts):
        self.texts += texts
        return [Score(np.array(CONFIDENT_FAST), 5) for _ in texts]

    async def close(self) -> None:
        pass


def test_a_repeated_request_is_scored_once_and_answered_from_the_cache():
    lookups: list[tuple[str, int]] = []
    scorer = CountingScorer()
    cache = ScoreCache(100, lambda outcome, n: lookups.append((outcome, n)))
    router = Router(parse_policy(POLICY_YAML), scorer, 0.7, deadline_ms=500, cache=cache)

    async def twice():
        first = await router.route([RoutingInput(text="hello"), RoutingInput(text="write an email")])
        second = await router.route([RoutingInput(text="hello"), RoutingInput(text="something new")])
        return first, second

    first, second = asyncio.run(twice())
    assert [t.task for t in scorer.texts] == ["hello", "write an email", "something new"]
    assert lookups == [("hit", 0), ("miss", 2), ("hit", 1), ("miss", 1)]
    assert second.decisions[0] == replace(first.decisions[0], queue_wait_ms=0.0)
    assert second.decisions[0].decided_by == DECIDED_BY_ENCODER


def test_under_load_cached_texts_keep_the_encoder_score_and_only_the_rest_are_estimated():
    cache = ScoreCache(100)
    cache.store([ClassifierInput.plain("write an email")], [Score(np.array(CONFIDENT_FAST), 5)])
    routed = asyncio.run(
        route(BusyScorer(), ["write an email", "the theorem"], word_estimator(), cache=cache)
    )
    cached, new = routed.decisions
    assert cached.tier == "fast" and cached.decided_by == DECIDED_BY_ENCODER  # the encoder's earlier score
    assert new.tier == "frontier" and new.decided_by == DECIDED_BY_ESTIMATOR


def test_the_cache_is_bounded_and_keyed_by_what_the_classifier_reads():
    cache = ScoreCache(2)
    score = Score(np.array(CONFIDENT_FAST), 5)
    a, b, c = (ClassifierInput.plain(t) for t in "abc")
    cache.store([a, b], [score, score])
    cache.lookup([a])  # a is now the most recent
    cache.store([c], [score])
    assert len(cache) == 2 and cache.lookup([b]) == [None] and cache.lookup([a])[0] is not None
    assert input_key(ClassifierInput("ab", "c")) != input_key(ClassifierInput("a", "bc"))
    assert input_key(ClassifierInput("hi", "", "sys\nhi")) != input_key(ClassifierInput.plain("hi"))
    off = ScoreCache(0)
    off.store([a], [score])
    assert len(off) == 0


# -- deadlines, admission, escalation q, failures the caller never sees ------------------------------
UNSURE_FAST = [0.5, 0.3, 0.2]  # cumulative 0.5, 0.8, 1.0: q picks the tier


def constant_estimator(
    probabilities: list[float], escalation_q: float, tier_offsets: tuple[float, ...] = ()
) -> Estimator:
    """Answers `probabilities` for any text (zero weights, the bias is their log)."""
    bias = np.log(np.array(probabilities))
    settings = EstimatorSettings(N, 1.0, escalation_q, tier_offsets)
    return Estimator(np.zeros((N, 3), np.float32), bias, settings)


class QueueScorer(CountingScorer):
    """A scorer that says how long a new call would wait, and answers `probabilities` at once."""

    def __init__(self, expected_wait_s: float, probabilities: list[float] = CONFIDENT_FAST) -> None:
        super().__init__()
        self.wait_s, self.probabilities = expected_wait_s, probabilities

    def expected_wait_s(self, text_count: int) -> float:
        return self.wait_s

    async def score(self, texts):
        self.texts += texts
        return [Score(np.array(self.probabilities), 5, queue_wait_ms=3.5) for _ in texts]


def make_router(scorer, **options) -> Router:
    return Router(parse_policy(POLICY_YAML), scorer, options.pop("default_q", 0.7), **options)


def test_a_batch_gets_one_deadline_per_micro_batch_of_texts():
    router = make_router(CountingScorer(), deadline_ms=100, texts_per_deadline=4)
    assert [router.deadline_seconds(n) for n in (1, 4, 5, 9)] == pytest.approx([0.1, 0.1, 0.2, 0.3])
    assert make_router(CountingScorer(), deadline_ms=100, texts_per_deadline=0).deadline_seconds(2) == 0.2
    assert make_router(CountingScorer()).deadline_ms == POLICY_YAML["deadline_ms"]  # the policy's deadline


@pytest.mark.parametrize("admission_share", [0.4, 0.8])
def test_admission_waits_for_the_encoder_up_to_its_share_of_the_deadline(admission_share):
    deadline_ms = 100.0
    # The encoder says confidently fast; the estimator says balanced for "email" (30/sqrt(6) ~ 12.2
    # against fast's bias 3): a shed request carries the estimator's tier, not only its label.
    for wait_share, decided_by, tier in (
        (admission_share - 0.01, DECIDED_BY_ENCODER, "fast"),
        (admission_share + 0.01, DECIDED_BY_ESTIMATOR, "balanced"),
    ):
        scorer = QueueScorer(expected_wait_s=deadline_ms / 1000 * wait_share)
        router = make_router(
            scorer, deadline_ms=deadline_ms, estimator=word_estimator(), admission_share=admission_share
        )
        [decision] = asyncio.run(router.route([RoutingInput(text="write an email")])).decisions
        assert (decision.decided_by, decision.tier) == (decided_by, tier), wait_share
        assert len(scorer.texts) == (1 if decided_by == DECIDED_BY_ENCODER else 0)


def test_the_default_admission_share_is_the_settings_default():
    assert make_router(CountingScorer()).admission_share == Settings().admission_share == 0.4
    with pytest.raises(ValueError, match="admission_share"):
        make_router(CountingScorer(), admission_share=0.0)


def test_without_an_estimator_there_is_no_admission_control():
    scorer = QueueScorer(expected_wait_s=10.0)
    routed = asyncio.run(make_router(scorer, deadline_ms=50).route([RoutingInput(text="hi")]))
    assert len(scorer.texts) == 1 and routed.decisions[0].decided_by == DECIDED_BY_ENCODER
    assert routed.decisions[0].queue_wait_ms == 3.5  # the encoder's queue wait reaches the decision


def test_encoder_decisions_escalate_with_the_router_q_estimated_ones_with_the_estimators():
    estimator = constant_estimator(UNSURE_FAST, escalation_q=0.4)
    encoder = QueueScorer(0.0, UNSURE_FAST)
    for default_q, tier in ((0.4, "fast"), (0.7, "balanced"), (0.95, "frontier")):
        router = make_router(encoder, default_q=default_q, deadline_ms=500, estimator=estimator)
        [decision] = asyncio.run(router.route([RoutingInput(text="hi")])).decisions
        assert (decision.tier, decision.decided_by) == (tier, DECIDED_BY_ENCODER)
    busy = make_router(BusyScorer(), default_q=0.95, deadline_ms=500, estimator=estimator)
    [estimated] = asyncio.run(busy.route([RoutingInput(text="hi")])).decisions
    assert (estimated.tier, estimated.decided_by) == ("fast", DECIDED_BY_ESTIMATOR)  # its own q, 0.4
    assert estimated.queue_wait_ms is None
    # The other way round: the router's q 0.4 would keep fast; the estimator's 0.95 is met only at the
    # top (cumulative 0.5, 0.8, 1), so the estimated answer escalates to frontier.
    cautious = make_router(
        BusyScorer(), default_q=0.4, deadline_ms=500, estimator=constant_estimator(UNSURE_FAST, 0.95)
    )
    [escalated] = asyncio.run(cautious.route([RoutingInput(text="hi")])).decisions
    assert (escalated.tier, escalated.predicted_tier, escalated.decided_by) == (
        "frontier",
        "fast",
        DECIDED_BY_ESTIMATOR,
    )
    assert escalated.reasons == (ESTIMATED, "low_confidence")


def test_the_encoder_tier_offsets_apply_to_encoder_scores_only():
    close_call = [0.5, 0.45, 0.05]
    estimator = constant_estimator(close_call, escalation_q=0.0)
    offsets = [0.0, 0.3, 0.0]  # balanced x e^0.3: 0.61 > 0.5
    encoder = make_router(QueueScorer(0.0, close_call), default_q=0.0, deadline_ms=500, tier_offsets=offsets)
    [decision] = asyncio.run(encoder.route([RoutingInput(text="hi")])).decisions
    assert (decision.tier, decision.predicted_tier, decision.decided_by) == (
        "balanced",
        "balanced",
        DECIDED_BY_ENCODER,
    )
    busy = make_router(
        BusyScorer(), default_q=0.0, deadline_ms=500, estimator=estimator, tier_offsets=offsets
    )
    [estimated] = asyncio.run(busy.route([RoutingInput(text="hi")])).decisions
    assert (estimated.tier, estimated.decided_by) == ("fast", DECIDED_BY_ESTIMATOR)  # its own plain argmax


def test_estimated_decisions_use_the_estimators_own_tier_offsets():
    close_call = [0.5, 0.45, 0.05]
    encoder_offsets = [0.0, 0.0, 0.0]
    for estimator_offsets, tier in (((0.0, 0.3, 0.0), "balanced"), ((0.0, -0.3, 0.0), "fast")):
        estimator = constant_estimator(close_call, escalation_q=0.0, tier_offsets=estimator_offsets)
        busy = make_router(
            BusyScorer(), default_q=0.0, deadline_ms=500, estimator=estimator, tier_offsets=encoder_offsets
        )
        [estimated] = asyncio.run(busy.route([RoutingInput(text="hi")])).decisions
        assert (estimated.tier, estimated.decided_by) == (tier, DECIDED_BY_ESTIMATOR), estimator_offsets


def test_a_policy_that_raises_routes_that_request_upward_and_says_so():
    class PolicyWithABug:
        def __init__(self) -> None:
            self.policy = parse_policy(POLICY_YAML)
            self.deadline_ms = self.policy.deadline_ms

        def decide(self, request, probabilities, token_count, default_q, tier_offsets=None, guard=None):
            if request.text == "trigger":
                raise KeyError("bug")
            return self.policy.decide(request, probabilities, token_count, default_q, tier_offsets, guard)

        def unavailable_decision(self, request):
            return self.policy.unavailable_decision(request)

    router = Router(PolicyWithABug(), CountingScorer(), 0.7)
    routed = asyncio.run(router.route([RoutingInput(text="hi"), RoutingInput(text="trigger")]))
    fine, broken = routed.decisions
    assert fine.tier == "fast" and fine.decided_by == DECIDED_BY_ENCODER
    assert broken.tier == "frontier" and broken.decided_by == DECIDED_BY_FALLBACK
    assert routed.classifier_error == "the policy raised; see the service log"


def test_a_failed_call_stores_nothing_in_the_cache_so_the_next_request_is_scored():
    calls = {"n": 0}

    def fails_once(texts):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("transient")
        return encoder_says_fast(texts)

    lookups: list[tuple[str, int]] = []
    cache = ScoreCache(10, lambda outcome, n: lookups.append((outcome, n)))
    router = make_router(DirectScorer(fails_once), deadline_ms=IN_TIME_MS, cache=cache)

    async def twice():
        try:
            return [await router.route([RoutingInput(text="hi")]) for _ in range(2)]
        finally:
            await router.scorer.close()

    first, second = asyncio.run(twice())
    assert first.decisions[0].decided_by == DECIDED_BY_FALLBACK and "RuntimeError" in first.classifier_error
    assert second.decisions[0].decided_by == DECIDED_BY_ENCODER and second.classifier_error is None
    assert lookups == [("hit", 0), ("miss", 1), ("hit", 0), ("miss", 1)] and len(cache) == 1


def test_for_classifier_takes_q_counts_and_deadlines_from_the_folder_and_settings(tiny_classifier):
    policy = parse_policy(POLICY_YAML)
    settings = Settings(estimator=False, deadline_ms=None, micro_batch_max_size=8)
    router = Router.for_classifier(policy, CountingScorer(), tiny_classifier, settings)
    assert router.default_q == tiny_classifier.manifest.escalation_q
    assert router.tier_offsets == tiny_classifier.manifest.tier_offsets
    assert router.deadline_ms == POLICY_YAML["deadline_ms"] and router.texts_per_deadline == 8
    assert router.estimator is None and router.cache is None
    words = [ClassifierInput.plain("hello please write the email")]
    assert router.count_tokens(words) == tiny_classifier.count_tokens(words) == [5]
    faster = Router.for_classifier(policy, CountingScorer(), tiny_classifier, Settings(deadline_ms=120))
    assert faster.deadline_ms == 120


def test_route_or_fail_upward_turns_any_routing_failure_into_top_tier_decisions():
    class RouterWithABug(Router):
        async def route(self, requests):
            raise RuntimeError("a bug in routing")

    router = RouterWithABug(parse_policy(POLICY_YAML), CountingScorer(), 0.7)
    requests = [RoutingInput(text="hi"), RoutingInput(text="write an email", min_tier="balanced")]
    routed = asyncio.run(router.route_or_fail_upward(requests))
    assert [d.tier for d in routed.decisions] == ["frontier", "frontier"]
    assert all(d.decided_by == DECIDED_BY_FALLBACK for d in routed.decisions)
    assert routed.classifier_error == "RuntimeError: a bug in routing"
    healthy = asyncio.run(make_router(CountingScorer()).route_or_fail_upward([RoutingInput(text="hi")]))
    assert healthy.decisions[0].tier == "fast" and healthy.classifier_error is None


class StubController:
    """The controller's request-path face: a fixed setting per segment."""

    def __init__(self, settings):
        self.settings = settings
        self.models = []

    def guard(self, segment):
        from tierwise.core.policy import SegmentGuard

        return SegmentGuard(segment, self.settings.get(segment), 0.01)

    def set_model(self, q, offsets, version=None):
        self.models.append((q, version))


def test_under_overload_a_top_only_segment_stays_on_the_top_and_a_cheap_one_is_not_lowered():
    from tierwise.core.segment_guard import SEGMENT_GUARD, GuardSetting

    held = HeldCalls(encoder_says_fast)
    router = Router(
        parse_policy(POLICY_YAML), DirectScorer(held), 0.7, deadline_ms=20.0, estimator=word_estimator()
    )
    controller = StubController({"guarded": GuardSetting(top_only=True), "cheap": GuardSetting(delta=-0.7)})
    router.attach_controller(controller)
    requests = [
        RoutingInput(text="hi there", route="guarded"),
        RoutingInput(text="write an email", route="cheap"),
    ]
    try:
        routed = asyncio.run(router.route(requests))
    finally:
        held.release.set()
    guarded, cheap = routed.decisions
    assert guarded.decided_by == DECIDED_BY_ESTIMATOR and guarded.tier == "frontier"
    assert SEGMENT_GUARD in guarded.reasons and guarded.segment == "guarded"
    assert cheap.tier == "balanced"  # the estimator's own tier for it: the guard may not lower it
    assert controller.models == [(0.7, None)]


def test_a_canary_router_is_guarded_upward_only_and_does_not_set_the_controllers_model():
    from tierwise.core.segment_guard import GuardSetting

    controller = StubController({"s": GuardSetting(delta=-0.7)})
    router = Router(parse_policy(POLICY_YAML), DirectScorer(encoder_says_fast), 0.7)
    router.attach_controller(controller, evidence=False)
    [guard] = router.guards([RoutingInput(text="x", route="s")], [ClassifierInput.plain("x")])
    assert guard.may_lower is False and controller.models == []
