"""The router under load: encoder in time, the estimator when it cannot be (admission control or a
missed deadline), the top tier only when nothing can answer. Every decision says which it was."""

import asyncio
import time
import zlib
from dataclasses import replace

import numpy as np
from test_policy import CONFIDENT_FAST, POLICY_YAML
from tierwise.core.estimator import Estimator, EstimatorSettings
from tierwise.core.policy import (
    CLASSIFIER_UNAVAILABLE,
    DECIDED_BY_ENCODER,
    DECIDED_BY_ESTIMATOR,
    DECIDED_BY_FALLBACK,
    ESTIMATED,
    LONG_CONTEXT,
    RoutingInput,
    parse_policy,
)
from tierwise.core.request_text import ClassifierInput
from tierwise.service.batcher import DirectScorer, Score
from tierwise.service.routing import Router, approximate_token_counts
from tierwise.service.score_cache import ScoreCache, input_key

N = 2**10


def word_estimator() -> Estimator:
    """'theorem' -> frontier, 'email' -> balanced, anything else leans fast."""
    weights = np.zeros((N, 3), dtype=np.float32)
    weights[zlib.crc32(b"theorem") % N, 2] = 30.0
    weights[zlib.crc32(b"email") % N, 1] = 30.0
    return Estimator(weights, np.array([3.0, 0.0, 0.0]), EstimatorSettings(N, 1.0, 0.7))


def encoder_says_fast(texts):
    return np.tile(np.array(CONFIDENT_FAST), (len(texts), 1)), [5] * len(texts)


def sleeping_encoder(texts):
    time.sleep(0.3)
    return encoder_says_fast(texts)


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
    routed = asyncio.run(route(DirectScorer(encoder_says_fast), ["prove the theorem"], word_estimator(), 500))
    [decision] = routed.decisions
    assert decision.tier == "fast" and decision.decided_by == DECIDED_BY_ENCODER
    assert ESTIMATED not in decision.reasons and routed.classifier_error is None


def test_past_the_deadline_the_estimator_answers_not_the_top_tier():
    started = time.perf_counter()
    routed = asyncio.run(
        route(DirectScorer(sleeping_encoder), ["hi there", "write an email", "the theorem"], word_estimator())
    )
    assert time.perf_counter() - started < 0.25  # at the deadline, not after the encoder's 300 ms
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
    routed = asyncio.run(route(DirectScorer(sleeping_encoder), ["write an email"]))
    [decision] = routed.decisions
    assert decision.tier == "frontier" and decision.decided_by == DECIDED_BY_FALLBACK
    assert decision.reasons == (CLASSIFIER_UNAVAILABLE,)


def test_an_encoder_error_falls_back_upward_even_with_an_estimator():
    # A crash is not load: the estimator is for slowness, an error routes to the strong model.
    routed = asyncio.run(route(DirectScorer(raising_encoder), ["hi"], word_estimator(), 500))
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
