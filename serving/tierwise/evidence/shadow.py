"""Shadow evaluation: live per-tier quality from a judge, off the request path.

With a `shadow:` section in the policy (serving/tierwise/evidence/shadow_config.py), a sampled share of the requests
routed below the top tier is put on a bounded queue (`offer` never blocks; a full queue drops and
counts). A background thread with its own event loop calls the routed model and the top tier's
model with the request, asks the judge whether the routed answer is as good (both orders, as
`tierwise label` does), and writes the verdict to the decision log as feedback with source
`shadow` (passed: true/false on the served tier, the evidence in `feedback.evidence`). An hourly
spend cap skips evaluations once reached. `tierwise report` reads these outcomes back
(serving/tierwise/ops/shadow_report.py); the rolling under-routing rate per tier and route is a Prometheus gauge.

Which requests: a hash of "shadow:" + request id below `share`, so the choice is the same on every
replica and independent of the canary split.

With the per-segment controller on (tierwise.evidence.segment_control), its evidence must be a
uniform sample of each segment's traffic and must say what every cheaper tier would have done: then a
sampled request of any public tier, the top included, is evaluated, every tier below the top answers
and is judged against the top tier's answer (`tier_verdicts` in the evidence), and the share is the
segment's (boosted while its bound is wide). A private request is never sampled, on any path.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tierwise.core.policy import Decision, Policy
from tierwise.core.scoring import request_cost_usd, tier_serving
from tierwise.evidence import judge
from tierwise.evidence.llm_api import ChatClient, RetryPolicy, api_key_from_env
from tierwise.evidence.segment_control import TIER_VERDICTS, SegmentController
from tierwise.evidence.shadow_config import ShadowConfig, ShadowConfigError

logger = logging.getLogger("tierwise.shadow")

WINDOW = 500  # verdicts per (tier, route) behind the gauge
MAX_ROUTE_LABELS = 20  # distinct routes on the gauge; the rest are "other"
WILSON_Z = 1.96


def wilson_interval(failures: int, total: int, z: float = WILSON_Z) -> tuple[float, float]:
    """The Wilson score interval of a proportion (95% with the default z); (0, 1) when total is 0."""
    if total <= 0:
        return 0.0, 1.0
    p = failures / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * ((p * (1 - p) / total + z * z / (4 * total * total)) ** 0.5) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def sampled(request_id: str, share: float) -> bool:
    digest = hashlib.sha256(f"shadow:{request_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


@dataclass(frozen=True)
class ShadowJob:
    request_id: str
    route: str | None
    tier: str
    model: str
    messages: list[dict[str, Any]]
    judged_tiers: tuple[str, ...] = ()  # every tier below the top (controller on); () = the served tier


class HourlySpend:
    """USD spent in the last hour (a sliding window)."""

    def __init__(self, cap: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.cap = cap
        self.clock = clock
        self._spent: deque[tuple[float, float]] = deque()

    def total(self) -> float:
        cutoff = self.clock() - 3600
        while self._spent and self._spent[0][0] < cutoff:
            self._spent.popleft()
        return sum(cost for _, cost in self._spent)

    def allows(self) -> bool:
        return self.total() < self.cap

    def add(self, cost: float) -> None:
        self._spent.append((self.clock(), cost))


class VerdictWindow:
    """The last WINDOW shadow verdicts per (tier, route label), for the gauge."""

    def __init__(self) -> None:
        self._verdicts: dict[tuple[str, str], deque[bool]] = {}
        self._lock = threading.Lock()

    def route_label(self, route: str | None) -> str:
        label = route or "-"
        known = {r for _, r in self._verdicts}
        return label if label in known or len(known) < MAX_ROUTE_LABELS else "other"

    def add(self, tier: str, route: str | None, under_routed: bool) -> None:
        with self._lock:
            key = (tier, self.route_label(route))
            self._verdicts.setdefault(key, deque(maxlen=WINDOW)).append(under_routed)

    def rates(self) -> dict[tuple[str, str], tuple[int, int]]:
        """(under-routed, judged) per (tier, route)."""
        with self._lock:
            return {key: (sum(v), len(v)) for key, v in self._verdicts.items()}


class ShadowEvaluator:
    """The queue and the background loop; `offer` is what the request path calls."""

    def __init__(
        self,
        config: ShadowConfig,
        policy: Policy,
        base_url: str,
        store: Any = None,
        metrics: Any = None,
        controller: SegmentController | None = None,
    ) -> None:
        self.config = config
        self.controller = controller
        self.policy = policy
        self.base_url = base_url
        self.store = store  # tierwise.evidence.decision_log.DecisionRecorder, or None (gauge only)
        self.metrics = metrics
        self.window = VerdictWindow()
        self.spend = HourlySpend(config.max_usd_per_hour)
        self.counts: dict[str, int] = {}
        self._counts_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[ShadowJob] | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._pending = 0
        self._idle = threading.Condition()

    # --- the request path -----------------------------------------------------------------

    def offer(
        self, request_id: str, route: str | None, record: Callable[[], dict[str, Any]], decision: Decision
    ) -> bool:
        """Queue a routed request for evaluation when it is sampled; never blocks, never raises.
        `record()` gives the request's `text` or `messages` (built only for a sampled request)."""
        try:
            if decision.private_data or decision.tier not in self.policy.tier_names:
                return False  # private data never reaches a public model, shadow included
            judged_tiers: tuple[str, ...] = ()
            if self.controller is None:
                share = self.config.share
                if decision.tier not in self.config.tiers:
                    return False
            else:
                pinned = self.policy.routes.get(route or "")
                if pinned is not None and pinned.tier is not None:
                    return False  # a route pinned to a tier: no setting of the controller matters
                share = self.controller.shadow_share(decision.segment, self.config.share)
                judged_tiers = self.policy.tier_names[:-1]
            if not sampled(request_id, share) or self._loop is None or self._queue is None:
                return False
            body = record()
            messages = body.get("messages") or [{"role": "user", "content": body.get("text", "")}]
            job = ShadowJob(request_id, route, decision.tier, decision.model, list(messages), judged_tiers)
            with self._idle:
                self._pending += 1
            self._loop.call_soon_threadsafe(self._enqueue, job)
            return True
        except Exception as err:  # shadowing must never fail an answer
            logger.error("shadow evaluation: could not queue a request: %s", err)
            return False

    def _enqueue(self, job: ShadowJob) -> None:
        assert self._queue is not None
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            self._count("dropped")
            self._done()

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> ShadowEvaluator:
        self._thread = threading.Thread(target=self._run_loop, name="tierwise-shadow", daemon=True)
        self._thread.start()
        self._ready.wait(timeout=10)
        return self

    def close(self, timeout: float = 5.0) -> None:
        loop = self._loop
        if loop is not None and self._thread is not None:
            loop.call_soon_threadsafe(self._stop_event.set)
            self._thread.join(timeout=timeout)
        self._loop = None

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every queued request is evaluated (tests and benchmarks)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout=timeout)

    def _run_loop(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue(maxsize=self.config.queue_size)
        self._stop_event = asyncio.Event()
        client = ChatClient(
            self.base_url,
            api_key_from_env(self.config.api_key_env),
            self.config.timeout_seconds,
            RetryPolicy(attempts=3, base_seconds=0.5),
            max_connections=self.config.concurrency * 3,
        )
        workers = [asyncio.create_task(self._worker(client)) for _ in range(self.config.concurrency)]
        self._ready.set()
        await self._stop_event.wait()
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        await client.aclose()

    async def _worker(self, client: ChatClient) -> None:
        assert self._queue is not None
        while True:
            job = await self._queue.get()
            try:
                await self._evaluate(client, job)
            except Exception as err:
                self._count("failed")
                logger.warning("shadow evaluation failed for %s: %s", job.request_id, err)
            finally:
                self._done()

    def _done(self) -> None:
        with self._idle:
            self._pending -= 1
            self._idle.notify_all()

    def _count(self, outcome: str) -> None:
        with self._counts_lock:
            self.counts[outcome] = self.counts.get(outcome, 0) + 1
        if self.metrics is not None:
            self.metrics.shadow_evaluations.inc(outcome)

    # --- one evaluation -------------------------------------------------------------------

    def price(self, model: str) -> tuple[float, float]:
        tier = tier_serving(self.policy, model) or self.policy.tiers[-1]  # unknown model: the dear side
        return tier.input_price_per_million, tier.output_price_per_million

    def cost(self, model: str, completion: Any) -> float:
        price_in, price_out = self.price(model)
        return request_cost_usd(
            completion.prompt_tokens or 0, completion.completion_tokens or 0, price_in, price_out
        )

    async def _evaluate(self, client: ChatClient, job: ShadowJob) -> None:
        if not self.spend.allows():
            self._count("over_budget")
            return
        top_model = self.policy.tiers[-1].models[0]
        tiers = job.judged_tiers or (job.tier,)
        models = [
            job.model if t == job.tier else self.policy.tiers[self.policy.tier_index(t)].models[0]
            for t in tiers
        ]
        answers = await asyncio.gather(*(client.complete(m, job.messages) for m in (*models, top_model)))
        reference = answers[-1]
        text = judge.conversation_block(job.messages)
        judge_model = self.config.judge_model
        verdicts = await asyncio.gather(
            *(
                client.complete(judge_model, messages, judge.JUDGE_MAX_TOKENS)
                for answer in answers[:-1]
                for messages in (
                    judge.pairwise_messages(text, reference.text, answer.text),
                    judge.pairwise_messages(text, answer.text, reference.text),
                )
            )
        )
        cost = sum(self.cost(m, a) for m, a in zip((*models, top_model), answers, strict=True))
        cost += sum(self.cost(judge_model, v) for v in verdicts)
        self.spend.add(cost)
        results = [
            judge.PairwiseResult(judge.parse_pairwise(first.text), judge.parse_pairwise(second.text))
            for first, second in zip(verdicts[::2], verdicts[1::2], strict=True)
        ]
        accepted = {t: r.accepted for t, r in zip(tiers, results, strict=True)}
        if any(a is None for a in accepted.values()):
            self._count("unreadable_verdict")
            return
        served = results[tiers.index(job.tier)] if job.tier in tiers else None
        evidence: dict[str, Any] = {
            "judge_model": judge_model,
            "routed_model": job.model,
            "reference_model": top_model,
            "cost_usd": round(cost, 8),
        }
        if served is not None:
            evidence["verdicts"] = {
                "reference_first": served.reference_first,
                "candidate_first": served.candidate_first,
            }
            evidence["position_bias"] = served.position_bias
        if job.judged_tiers:
            evidence[TIER_VERDICTS] = {t: bool(a) for t, a in accepted.items()}
        passed = accepted.get(job.tier)
        if passed is not None:
            self.window.add(job.tier, job.route, under_routed=not passed)
            self._update_gauge(job.tier, job.route)
        await asyncio.to_thread(self._store_verdict, job, passed, evidence)
        self._count("judged")

    def _update_gauge(self, tier: str, route: str | None) -> None:
        if self.metrics is None:
            return
        label = self.window.route_label(route)
        under, total = self.window.rates()[(tier, label)]
        self.metrics.shadow_under_routing.set(under / total, tier, label)
        self.metrics.shadow_under_routing_upper.set(wilson_interval(under, total)[1], tier, label)

    def _store_verdict(self, job: ShadowJob, passed: bool | None, evidence: dict[str, Any]) -> None:
        """Feedback on the decision (the decision row may still be in the recorder's queue). With a
        verdict per tier, the needed tier is the cheapest one the judge passed (the top if none)."""
        if self.store is None:
            return
        from tierwise.evidence.decision_log import FeedbackRecord, outcome_range, utc_now

        self.store.wait_idle(2.0)
        if self.store.store.get_decision(job.request_id) is None:
            self._count("no_decision")
            return
        needed = None
        if job.judged_tiers:
            verdicts = evidence[TIER_VERDICTS]
            needed = next((t for t in job.judged_tiers if verdicts[t]), self.policy.top_tier)
        bounds = outcome_range(self.policy.tier_names, job.tier, needed, passed)
        self.store.store.insert_feedback(
            FeedbackRecord(
                request_id=job.request_id,
                created_at=utc_now(),
                needed_tier=needed,
                passed=passed,
                source="shadow",
                low_tier=bounds[0] if bounds else None,
                high_tier=bounds[1] if bounds else None,
                evidence=evidence,
            )
        )


def start_shadow(
    policy_file: Any, policy: Policy, recorder: Any, metrics: Any, controller: SegmentController | None = None
) -> ShadowEvaluator | None:
    """The started evaluator when the policy has a `shadow` section with a share above 0."""
    import os

    from tierwise.evidence.shadow_config import load_shadow_config

    config = load_shadow_config(policy_file, policy.tier_names)
    if config is None:
        return None
    base_url = config.base_url or os.environ.get("TIERWISE_LLM_BASE_URL")
    if not base_url:
        raise ValueError(
            "policy shadow: set shadow.base_url or TIERWISE_LLM_BASE_URL (the OpenAI-compatible API)"
        )
    if recorder is None:
        logger.warning("shadow evaluation without the decision log: verdicts reach only the /metrics gauge")
    below_top = tuple(policy.tier_names[:-1])
    if controller is not None and tuple(config.tiers) != below_top:
        raise ShadowConfigError(
            f"{policy_file}: with segment_control the shadow judges every tier below the top, so "
            f"shadow.tiers must be {list(below_top)} or left out (it is {list(config.tiers)})"
        )
    evaluator = ShadowEvaluator(config, policy, base_url, recorder, metrics, controller).start()
    logger.info("shadow evaluation on", extra={"share": config.share, "tiers": list(config.tiers)})
    return evaluator


def offer_shadow(
    evaluator: Any,
    request_id: str,
    route: str | None,
    record: Callable[[], dict[str, Any]],
    decision: Decision,
) -> None:
    if evaluator is not None:
        evaluator.offer(request_id, route, record, decision)


def close_shadow(evaluator: Any) -> None:
    if evaluator is not None:
        evaluator.close()
