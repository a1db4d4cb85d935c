"""Score texts with the classifier off the event loop, micro-batching concurrent requests.

`MicroBatcher` queues texts from concurrent requests and hands them to the classifier together:
a batch closes when it holds `max_batch_size` texts or `max_wait_ms` after its first text arrived,
whichever comes first. It is scored shortest first in groups of similar length (`length_groups`),
and each caller gets its score when its group is done, so a short request never waits for a long
one. The classifier runs in a one-thread executor (so onnxruntime gets the cores and calls run one
after another), and each caller gets its own rows back. A call that raises fails every caller in
it. A caller that gave up (its deadline passed) is skipped before inference.
Each score says how long its text waited (`queue_wait_ms`: queued until its batch started in the
classifier thread), which the router hands on to the decision and the trace.

`DirectScorer` is the same interface without batching: one classifier call per request.

Both say how long new texts would wait for their scores (`expected_wait_s`: the batches queued ahead
times a moving average of a batch's time in the classifier), so the router can answer a request
whose deadline cannot be met from the estimator at once instead of queueing it (admission control).
Both measure queue waits and batch times with `clock` (time.perf_counter; tests pass a fake one).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from tierwise.core.request_text import ClassifierInput
from tierwise.core.text_encoding import SKETCH_MAX_CHARS

# One classifier call holds texts whose count x longest length stays under this many characters
# (about 4,000 tokens of encoder work; the classifier runs each row alone, so this bounds how long
# a group's callers wait, not padding), so a long text is scored apart.
DEFAULT_GROUP_CHARS = 16_000
PredictProba = Callable[[list[ClassifierInput]], tuple[np.ndarray, list[int]]]
BatchObserver = Callable[[int, float], None]  # (batch size, seconds in the classifier)
Clock = Callable[[], float]  # seconds, monotonic


@dataclass(frozen=True)
class Score:
    """The classifier's output for one text."""

    probabilities: np.ndarray  # (K,) calibrated, in tier order
    token_count: int
    queue_wait_ms: float | None = None  # from score() until its batch started in the classifier thread


class Scorer(Protocol):
    async def score(self, texts: list[ClassifierInput]) -> list[Score]: ...

    def expected_wait_s(self, text_count: int) -> float: ...

    async def close(self) -> None: ...


HANG_SECONDS = 1.0  # a classifier call this long is a fault, not a batch time to learn


class BatchTime:
    """Moving average of a classifier call's seconds (0 until the first call is seen).

    One call moves it at most as far as `max_jump` times the current average would: a hung
    classifier's call is a fault, not a batch time, and learning all of it would shed requests long
    after the hang; an overload that grows batch times step by step is followed in full."""

    def __init__(self, smoothing: float = 0.2, max_jump: float = 4.0) -> None:
        self.smoothing = smoothing
        self.max_jump = max_jump
        self.seconds = 0.0

    def observe(self, seconds: float, waited_for: bool = True) -> None:
        """Learn one call's seconds. A failed call (0 s) or one past HANG_SECONDS teaches nothing; a
        batch whose callers all gave up (`waited_for` False: under overload most batches) only moves
        a scale that a batch someone waited for has set."""
        if not 0.0 < seconds < HANG_SECONDS or (self.seconds == 0.0 and not waited_for):
            return
        if self.seconds == 0.0:
            self.seconds = seconds
            return
        seconds = min(seconds, self.max_jump * self.seconds)
        self.seconds += self.smoothing * (seconds - self.seconds)


def _split(
    probabilities: np.ndarray, token_counts: list[int], expected: int, waits_ms: list[float]
) -> list[Score]:
    if len(probabilities) != expected or len(token_counts) != expected:
        raise RuntimeError(f"the classifier returned {len(probabilities)} rows for {expected} texts")
    return [
        Score(row, int(n), wait) for row, n, wait in zip(probabilities, token_counts, waits_ms, strict=True)
    ]


# A micro-batch closes at this many texts or this long after its first text (TIERWISE_MICRO_BATCH_*).
DEFAULT_MAX_BATCH_SIZE = 32
DEFAULT_MAX_WAIT_MS = 2.0


def classifier_executor() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="tierwise-classifier")


class DirectScorer:
    """One classifier call per request, run in the executor; no coalescing."""

    def __init__(
        self,
        predict_proba: PredictProba,
        executor: Executor | None = None,
        on_batch: BatchObserver | None = None,
        clock: Clock = time.perf_counter,
    ) -> None:
        self._predict_proba = predict_proba
        self._owns_executor = executor is None
        self._executor = executor or classifier_executor()
        self._on_batch = on_batch
        self._clock = clock
        self.batch_time = BatchTime()
        self._in_flight = 0  # calls submitted and not finished (one runs, the rest wait for the thread)

    def expected_wait_s(self, text_count: int) -> float:
        """Seconds until a new call's scores: every call ahead of it, then its own. 0 when nothing is
        ahead: an idle scorer is always tried (the deadline still holds), so one slow call cannot
        keep it out of use."""
        if self._in_flight == 0:
            return 0.0
        return (self._in_flight + 1) * self.batch_time.seconds

    def _run(self, texts: list[ClassifierInput], queued: float) -> list[Score]:
        started = self._clock()
        probabilities, counts = self._predict_proba(texts)
        seconds = self._clock() - started
        self.batch_time.observe(seconds)
        if self._on_batch is not None:
            self._on_batch(len(texts), seconds)
        wait_ms = (started - queued) * 1000.0  # waiting for the executor thread
        return _split(probabilities, counts, len(texts), [wait_ms] * len(texts))

    async def score(self, texts: list[ClassifierInput]) -> list[Score]:
        if not texts:
            return []
        loop = asyncio.get_running_loop()
        self._in_flight += 1
        try:
            return await loop.run_in_executor(self._executor, self._run, texts, self._clock())
        finally:
            self._in_flight -= 1

    async def close(self) -> None:
        if self._owns_executor:
            self._executor.shutdown(wait=False, cancel_futures=True)


def input_chars(item: ClassifierInput | str) -> int:
    """About what the encoder reads of a request, in characters (its cost grows with it)."""
    if isinstance(item, str):
        return len(item)
    return len(item.task) + min(len(item.sketch), SKETCH_MAX_CHARS)


def length_groups(batch: list[_Pending], max_group_chars: int) -> list[list[_Pending]]:
    """The batch shortest first, cut into groups whose size x longest text stays within
    `max_group_chars`: short requests are scored first and never wait for a long one."""
    ordered = sorted(batch, key=lambda pending: input_chars(pending.text))
    groups: list[list[_Pending]] = []
    for pending in ordered:
        if groups and (len(groups[-1]) + 1) * input_chars(pending.text) <= max_group_chars:
            groups[-1].append(pending)
        else:
            groups.append([pending])
    return groups


@dataclass
class _Pending:
    text: ClassifierInput
    future: asyncio.Future[Score]
    queued: float  # the batcher's clock when score() put it in the queue


class MicroBatcher:
    """Coalesces concurrent `score` calls into classifier batches. Start it inside a running loop."""

    def __init__(
        self,
        predict_proba: PredictProba,
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        max_wait_ms: float = DEFAULT_MAX_WAIT_MS,
        executor: Executor | None = None,
        on_batch: BatchObserver | None = None,
        max_batch_chars: int = DEFAULT_GROUP_CHARS,
        clock: Clock = time.perf_counter,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        self._predict_proba = predict_proba
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000.0
        self.max_batch_chars = max_batch_chars
        self._owns_executor = executor is None
        self._executor = executor or classifier_executor()
        self._on_batch = on_batch
        self._clock = clock
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self.batch_time = BatchTime()
        self._busy = False  # a batch is in the classifier thread
        self._busy_since = 0.0  # when it started (the clock)

    def expected_wait_s(self, text_count: int) -> float:
        """Seconds until `text_count` new texts are scored: what is left of the batch in the classifier,
        the batches queued ahead, then theirs (a moving average of a batch's time each). 0 when nothing
        is ahead: an idle batcher is always tried (the deadline still holds), so one slow batch cannot
        keep it out of use."""
        queued = self._queue.qsize()
        if queued == 0 and not self._busy:
            return 0.0
        average = self.batch_time.seconds
        running = max(0.0, average - (self._clock() - self._busy_since)) if self._busy else 0.0
        return running + math.ceil((queued + text_count) / self.max_batch_size) * average

    def start(self) -> None:
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._run(), name="tierwise-micro-batcher")

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        while not self._queue.empty():
            pending = self._queue.get_nowait()
            if not pending.future.done():
                pending.future.set_exception(RuntimeError("the classifier is shutting down"))
        if self._owns_executor:
            self._executor.shutdown(wait=False, cancel_futures=True)

    async def score(self, texts: list[ClassifierInput]) -> list[Score]:
        """Scores for `texts`, in order; raises what the classifier raised for their batch."""
        if not texts:
            return []
        if self._worker is None or self._worker.done():
            raise RuntimeError("the micro-batcher is not running; call start() inside the event loop")
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[Score]] = []
        queued = self._clock()
        for text in texts:
            future: asyncio.Future[Score] = loop.create_future()
            futures.append(future)
            self._queue.put_nowait(_Pending(text, future, queued))
        try:
            return list(await asyncio.gather(*futures))
        finally:  # on cancellation (deadline) or error, let the worker skip what is left
            for future in futures:
                future.cancel()

    async def _collect(self) -> list[_Pending]:
        """The next batch: wait for a first text, then up to max size or max wait (timed by the event
        loop, which times the wait itself)."""
        batch = [await self._queue.get()]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait_s
        while len(batch) < self.max_batch_size:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), timeout=remaining))
            except TimeoutError:
                break
        return [pending for pending in batch if not pending.future.done()]

    def _predict(self, texts: list[ClassifierInput]) -> tuple[np.ndarray, list[int], float, float]:
        """(probabilities, token counts, when the batch started, seconds in the classifier)."""
        started = self._clock()
        probabilities, counts = self._predict_proba(texts)
        return probabilities, counts, started, self._clock() - started

    async def _run(self) -> None:
        while True:
            batch = await self._collect()
            if not batch:
                continue
            self._busy, self._busy_since = True, self._clock()
            try:
                seconds = 0.0
                for group in length_groups(batch, self.max_batch_chars):
                    # A caller whose deadline passed while an earlier group ran has its answer
                    # already: scoring its text would only delay everyone queued behind it.
                    live = [pending for pending in group if not pending.future.done()]
                    if live:
                        seconds += await self._score_group(live)
                # Also a batch whose callers all gave up while it ran: skipping those kept the
                # estimate at the unloaded time, so admission let in requests that then missed the
                # deadline. BatchTime bounds what such a batch (or a hang) can teach.
                waited_for = not all(pending.future.cancelled() for pending in batch)
                self.batch_time.observe(seconds, waited_for)
            finally:
                self._busy = False

    async def _score_group(self, group: list[_Pending]) -> float:
        """One classifier call for texts of similar length; each caller gets its score as soon as its
        group is done. -> seconds in the classifier (0 when it failed)"""
        loop = asyncio.get_running_loop()
        texts = [pending.text for pending in group]
        try:
            probabilities, counts, started, seconds = await loop.run_in_executor(
                self._executor, self._predict, texts
            )
            waits_ms = [(started - pending.queued) * 1000.0 for pending in group]
            scores = _split(probabilities, counts, len(texts), waits_ms)
        except asyncio.CancelledError:
            for pending in group:
                if not pending.future.done():
                    pending.future.set_exception(RuntimeError("the classifier is shutting down"))
            raise
        except Exception as err:  # a failing call fails each of its callers, not the worker
            for pending in group:
                if not pending.future.done():
                    pending.future.set_exception(err)
            return 0.0
        if self._on_batch is not None:
            self._on_batch(len(texts), seconds)
        for pending, score in zip(group, scores, strict=True):
            if not pending.future.done():
                pending.future.set_result(score)
        return seconds
