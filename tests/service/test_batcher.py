import asyncio
import threading
import time

import numpy as np
import pytest
from tierwise.service.batcher import DirectScorer, MicroBatcher


class RecordingModel:
    """Probabilities encode the text's number, so each caller can check it got its own row."""

    def __init__(self, delay: float = 0.0, fail_on: str | None = None) -> None:
        self.batches: list[list[str]] = []
        self.delay = delay
        self.fail_on = fail_on
        self.lock = threading.Lock()

    def __call__(self, texts):
        with self.lock:
            self.batches.append(list(texts))
        if self.delay:
            time.sleep(self.delay)
        if self.fail_on is not None and self.fail_on in texts:
            raise RuntimeError(f"cannot score {self.fail_on}")
        values = np.array([float(t.split("-")[1]) for t in texts])
        return np.stack([values, -values], axis=1), [len(t) for t in texts]


async def with_batcher(model, body, **options):
    batcher = MicroBatcher(model, **options)
    batcher.start()
    try:
        return await body(batcher)
    finally:
        await batcher.close()


def test_results_go_back_to_the_right_caller():
    model = RecordingModel(delay=0.005)

    async def body(batcher):
        texts = [f"text-{i}" for i in range(40)]
        return await asyncio.gather(*(batcher.score([t]) for t in texts))

    results = asyncio.run(with_batcher(model, body, max_batch_size=16, max_wait_ms=5))
    for i, (score,) in enumerate(results):
        assert score.probabilities[0] == i and score.token_count == len(f"text-{i}")
    assert max(len(b) for b in model.batches) <= 16
    assert len(model.batches) < 40  # concurrent callers were coalesced
    assert sorted(t for b in model.batches for t in b) == sorted(f"text-{i}" for i in range(40))


def test_a_caller_with_many_texts_gets_them_in_order():
    model = RecordingModel()

    async def body(batcher):
        return await asyncio.gather(
            batcher.score([f"a-{i}" for i in range(10)]), batcher.score([f"b-{i}" for i in range(100, 105)])
        )

    first, second = asyncio.run(with_batcher(model, body, max_batch_size=4, max_wait_ms=1))
    assert [s.probabilities[0] for s in first] == list(range(10))
    assert [s.probabilities[0] for s in second] == list(range(100, 105))
    assert max(len(b) for b in model.batches) <= 4


def test_a_failing_batch_fails_each_of_its_callers_and_the_batcher_goes_on():
    model = RecordingModel(fail_on="bad-1")

    async def body(batcher):
        together = await asyncio.gather(
            batcher.score(["ok-0"]), batcher.score(["bad-1"]), batcher.score(["ok-2"]), return_exceptions=True
        )
        later = await batcher.score(["ok-3"])
        return together, later

    together, later = asyncio.run(with_batcher(model, body, max_batch_size=8, max_wait_ms=20))
    assert model.batches[0] == ["ok-0", "ok-2", "bad-1"]  # one call, shortest first
    assert all(isinstance(r, RuntimeError) and "bad-1" in str(r) for r in together)
    assert later[0].probabilities[0] == 3


def test_max_wait_bounds_the_wait_for_a_lone_request():
    model = RecordingModel()

    async def body(batcher):
        started = time.perf_counter()
        await batcher.score(["solo-1"])
        return time.perf_counter() - started

    assert asyncio.run(with_batcher(model, body, max_batch_size=32, max_wait_ms=10)) < 0.2


def test_callers_past_their_deadline_are_skipped():
    model = RecordingModel(delay=0.1)

    async def body(batcher):
        blocker = asyncio.ensure_future(batcher.score(["first-0"]))
        await asyncio.sleep(0.01)  # the first batch is now in the classifier
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(batcher.score(["late-1"]), timeout=0.02)
        await blocker
        await batcher.score(["next-2"])

    asyncio.run(with_batcher(model, body, max_batch_size=8, max_wait_ms=0))
    assert ["late-1"] not in model.batches  # the abandoned text never reached the classifier


def test_scoring_without_a_running_batcher_says_what_to_do():
    batcher = MicroBatcher(RecordingModel())
    with pytest.raises(RuntimeError, match="start"):
        asyncio.run(batcher.score(["x-1"]))


def test_direct_scorer_scores_each_call_alone():
    model = RecordingModel()

    async def body():
        scorer = DirectScorer(model)
        try:
            return await asyncio.gather(scorer.score(["a-1"]), scorer.score(["b-2"]))
        finally:
            await scorer.close()

    first, second = asyncio.run(body())
    assert first[0].probabilities[0] == 1 and second[0].probabilities[0] == 2
    assert sorted(map(tuple, model.batches)) == [("a-1",), ("b-2",)]


def test_each_score_says_how_long_its_text_waited_in_the_queue():
    model = RecordingModel(delay=0.05)

    async def body(batcher):
        lone = await batcher.score(["lone-1"])  # waits out max_wait for company
        first = asyncio.ensure_future(batcher.score(["first-2"]))
        await asyncio.sleep(0.045)  # the first batch is in the classifier for 50 ms
        behind = await batcher.score(["behind-3"])  # waits for it, then for max_wait
        return lone[0], (await first)[0], behind[0]

    lone, first, behind = asyncio.run(with_batcher(model, body, max_batch_size=8, max_wait_ms=30))
    assert 25 <= lone.queue_wait_ms < 1000
    assert 25 <= first.queue_wait_ms < 1000
    assert behind.queue_wait_ms >= 30  # behind the first batch's inference and the max wait
    assert behind.probabilities[0] == 3


def test_direct_scorer_reports_its_wait_for_the_classifier_thread():
    model = RecordingModel(delay=0.03)

    async def body():
        scorer = DirectScorer(model)
        try:
            return await asyncio.gather(scorer.score(["a-1"]), scorer.score(["b-2"]))
        finally:
            await scorer.close()

    first, second = asyncio.run(body())
    waits = sorted([first[0].queue_wait_ms, second[0].queue_wait_ms])
    assert waits[0] >= 0 and waits[1] >= 25  # the second call waited for the first's 30 ms


def test_a_short_request_is_scored_before_a_long_one_in_the_same_batch():
    model = RecordingModel(delay=0.05)
    long_text = "x" * 18_000 + "-1"  # 18,002 characters: a group of its own

    async def body(batcher):
        finished: dict[str, float] = {}

        async def timed(name: str, text: str) -> None:
            await batcher.score([text])
            finished[name] = time.perf_counter()

        await asyncio.gather(timed("long", long_text), timed("short", "short-2"), timed("other", "hi-3"))
        return finished

    finished = asyncio.run(with_batcher(model, body, max_batch_size=8, max_wait_ms=20))
    assert model.batches[0] == ["hi-3", "short-2"] and model.batches[1] == [long_text]
    assert finished["short"] < finished["long"] - 0.03  # answered before the long call ran


def test_a_long_group_whose_caller_gave_up_during_the_short_group_is_not_scored():
    model = RecordingModel(delay=0.1)
    long_text = "x" * 18_000 + "-1"

    async def body(batcher):
        short = asyncio.ensure_future(batcher.score(["short-2"]))
        with pytest.raises(TimeoutError):  # gives up while the short group is in the classifier
            await asyncio.wait_for(batcher.score([long_text]), timeout=0.05)
        await short
        await batcher.score(["next-3"])

    asyncio.run(with_batcher(model, body, max_batch_size=8, max_wait_ms=20))
    assert model.batches == [["short-2"], ["next-3"]]  # the abandoned long text never ran


def test_length_groups_bound_count_times_longest():
    from tierwise.service.batcher import _Pending, length_groups

    loop = asyncio.new_event_loop()
    try:
        pending = [_Pending(t, loop.create_future(), 0.0) for t in ["a" * 10, "b" * 10, "c" * 30, "d" * 100]]
        groups = length_groups(pending, 60)
    finally:
        loop.close()
    assert [[len(p.text) for p in g] for g in groups] == [[10, 10], [30], [100]]  # 3 x 30 > 60


def test_expected_wait_counts_what_is_left_of_the_running_batch_and_the_queue():
    model = RecordingModel(delay=0.2)

    async def body(batcher):
        assert batcher.expected_wait_s(1) == 0.0  # idle: always tried
        await batcher.score(["warm-0"])  # the moving average learns a batch takes ~0.2 s
        running = asyncio.ensure_future(batcher.score(["busy-1"]))
        await asyncio.sleep(0.05)
        early = batcher.expected_wait_s(1)  # ~0.15 left of the running batch + ~0.2 for its own
        await asyncio.sleep(0.1)
        later = batcher.expected_wait_s(1)
        await running
        return early, later, batcher.expected_wait_s(1)

    early, later, idle = asyncio.run(with_batcher(model, body, max_batch_size=4, max_wait_ms=1))
    assert 0.3 < early < 0.4 and later < early and idle == 0.0


def test_a_batch_its_callers_gave_up_on_still_teaches_the_batch_time():
    # Under overload most batches finish after their callers' deadline; skipping them kept the
    # estimate at the unloaded time and let admission queue requests that then missed the deadline.
    model = RecordingModel(delay=0.2)

    async def body(batcher):
        await batcher.score(["warm-1"])  # a batch someone waited for sets the scale: ~0.2 s
        model.delay = 0.4
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(batcher.score(["late-2"]), timeout=0.05)
        await asyncio.sleep(0.5)  # the batch runs on after its caller left, and is learned
        return batcher.batch_time.seconds

    learned = asyncio.run(with_batcher(model, body, max_wait_ms=1))
    assert learned == pytest.approx(0.2 + 0.2 * (0.4 - 0.2), abs=0.03)


def test_a_hung_classifier_call_and_a_failed_one_teach_nothing(monkeypatch):
    monkeypatch.setattr("tierwise.service.batcher.HANG_SECONDS", 0.1)
    slow, failing = RecordingModel(delay=0.2), RecordingModel(fail_on="bad-1")

    async def hung(batcher):
        await batcher.score(["slow-1"])  # 0.2 s: past the (patched) hang bound
        await asyncio.sleep(0.01)
        return batcher.batch_time.seconds

    async def failed(batcher):
        with pytest.raises(RuntimeError):
            await batcher.score(["bad-1"])
        await asyncio.sleep(0.01)
        return batcher.batch_time.seconds

    assert asyncio.run(with_batcher(slow, hung, max_wait_ms=1)) == 0.0
    assert asyncio.run(with_batcher(failing, failed, max_wait_ms=1)) == 0.0


def test_one_outlier_call_moves_the_batch_time_a_bounded_step():
    from tierwise.service.batcher import BatchTime

    batch_time = BatchTime(smoothing=0.2, max_jump=4.0)
    batch_time.observe(0.01)
    batch_time.observe(0.9)  # a stall: learned as 4 x 0.01 at most
    assert batch_time.seconds == pytest.approx(0.01 + 0.2 * (0.04 - 0.01))
    for _ in range(30):  # an overload that grows step by step is followed in full
        batch_time.observe(min(0.9, batch_time.seconds * 2))
    assert batch_time.seconds == pytest.approx(0.9, rel=0.05)


def test_a_first_batch_nobody_waited_for_does_not_set_the_scale():
    model = RecordingModel(delay=0.2)  # e.g. a stall on the very first call

    async def body(batcher):
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(batcher.score(["late-1"]), timeout=0.05)
        await asyncio.sleep(0.3)
        return batcher.batch_time.seconds

    assert asyncio.run(with_batcher(model, body, max_wait_ms=1)) == 0.0
