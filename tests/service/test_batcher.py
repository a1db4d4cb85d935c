import asyncio
import threading
import time

import numpy as np
import pytest
from tierwise.service.batcher import DirectScorer, MicroBatcher

from tests.helpers.timing import HANG_SECONDS, FakeClock, until


class RecordingModel:
    """Probabilities encode the text's number, so each caller can check it got its own row.

    With a `clock` (FakeClock) a call takes `delay` seconds of that clock instead of sleeping; with a
    `gate`, a call waits until the test sets it (only calls holding `gated_text`, when given): the
    classifier is busy for exactly as long as the test says, however loaded the machine is."""

    def __init__(
        self,
        delay: float = 0.0,
        fail_on: str | None = None,
        clock: FakeClock | None = None,
        gate: threading.Event | None = None,
        gated_text: str | None = None,
    ) -> None:
        self.batches: list[list[str]] = []
        self.delay = delay
        self.fail_on = fail_on
        self.clock = clock
        self.gate = gate
        self.gated_text = gated_text
        self.lock = threading.Lock()

    def __call__(self, texts):
        with self.lock:
            self.batches.append(list(texts))
        if self.gate is not None and (self.gated_text is None or self.gated_text in texts):
            assert self.gate.wait(HANG_SECONDS), "the test never let the classifier call finish"
        if self.clock is not None:
            self.clock.advance(self.delay)
        elif self.delay:
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
        # held for a full batch of 32 it would never be answered; HANG_SECONDS only detects that
        (score,) = await asyncio.wait_for(batcher.score(["solo-1"]), timeout=HANG_SECONDS)
        return score

    score = asyncio.run(with_batcher(model, body, max_batch_size=32, max_wait_ms=10, clock=time.monotonic))
    assert model.batches == [["solo-1"]] and score.probabilities[0] == 1
    assert score.queue_wait_ms >= 10  # it waited out max_wait for company (a bound no load can break)


def test_callers_past_their_deadline_are_skipped():
    gate = threading.Event()
    model = RecordingModel(gate=gate)

    async def body(batcher):
        blocker = asyncio.ensure_future(batcher.score(["first-0"]))
        await until(lambda: len(model.batches) == 1, "the first batch in the classifier")
        with pytest.raises(TimeoutError):  # the classifier cannot answer until the gate opens
            await asyncio.wait_for(batcher.score(["late-1"]), timeout=0.01)
        gate.set()
        await blocker
        await batcher.score(["next-2"])

    asyncio.run(with_batcher(model, body, max_batch_size=8, max_wait_ms=0))
    assert model.batches == [["first-0"], ["next-2"]]  # the abandoned text never reached the classifier


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
    # The max wait, on the event loop's own clock: a lone text cannot start before it has passed.
    lone = asyncio.run(
        with_batcher(
            RecordingModel(),
            lambda b: b.score(["lone-1"]),
            max_batch_size=8,
            max_wait_ms=30,
            clock=time.monotonic,
        )
    )[0]
    assert lone.queue_wait_ms >= 30  # it waited out max_wait for company
    # The classifier's time, on a fake clock the classifier moves by its 50 ms of inference.
    clock, gate = FakeClock(), threading.Event()
    model = RecordingModel(delay=0.05, clock=clock, gate=gate)

    async def body(batcher):
        first = asyncio.ensure_future(batcher.score(["first-2"]))
        await until(lambda: len(model.batches) == 1, "the first batch in the classifier")
        behind = asyncio.ensure_future(batcher.score(["behind-3"]))  # queued behind it
        await asyncio.sleep(0)  # behind-3 is in the queue
        gate.set()
        return (await first)[0], (await behind)[0]

    first, behind = asyncio.run(with_batcher(model, body, max_batch_size=8, max_wait_ms=0, clock=clock))
    assert first.queue_wait_ms == 0.0  # the classifier was idle
    assert behind.queue_wait_ms == pytest.approx(50.0)  # the first batch's inference
    assert behind.probabilities[0] == 3


def test_direct_scorer_reports_its_wait_for_the_classifier_thread():
    clock, gate = FakeClock(), threading.Event()
    model = RecordingModel(delay=0.03, clock=clock, gate=gate)

    async def body():
        scorer = DirectScorer(model, clock=clock)
        try:
            both = asyncio.gather(scorer.score(["a-1"]), scorer.score(["b-2"]))
            await until(lambda: len(model.batches) == 1, "the first call in the classifier thread")
            gate.set()  # both calls were submitted before the first could finish
            return await both
        finally:
            await scorer.close()

    first, second = asyncio.run(body())
    assert model.batches == [["a-1"], ["b-2"]]
    assert first[0].queue_wait_ms == 0.0  # the thread was free
    assert second[0].queue_wait_ms == pytest.approx(30.0)  # it waited for the first call's 30 ms


def test_a_short_request_is_scored_before_a_long_one_in_the_same_batch():
    long_text = "x" * 18_000 + "-1"  # 18,002 characters: a group of its own
    long_may_finish = threading.Event()
    model = RecordingModel(gate=long_may_finish, gated_text=long_text)

    async def body(batcher):
        long = asyncio.ensure_future(batcher.score([long_text]))
        short, other = await asyncio.gather(batcher.score(["short-2"]), batcher.score(["hi-3"]))
        answered_first = not long.done()  # the long call cannot have finished: its gate is shut
        long_may_finish.set()
        await long
        return answered_first, short[0], other[0]

    answered_first, short, other = asyncio.run(with_batcher(model, body, max_batch_size=8, max_wait_ms=20))
    assert model.batches[0] == ["hi-3", "short-2"] and model.batches[1] == [long_text]
    assert answered_first and short.probabilities[0] == 2 and other.probabilities[0] == 3


def test_a_long_group_whose_caller_gave_up_during_the_short_group_is_not_scored():
    gate = threading.Event()
    model = RecordingModel(gate=gate, gated_text="short-2")
    long_text = "x" * 18_000 + "-1"

    async def body(batcher):
        short = asyncio.ensure_future(batcher.score(["short-2"]))
        long = asyncio.ensure_future(batcher.score([long_text]))  # the same batch
        await until(lambda: len(model.batches) == 1, "the short group in the classifier")
        with pytest.raises(TimeoutError):  # gives up while the short group is in the classifier
            await asyncio.wait_for(long, timeout=0.01)
        gate.set()
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
    clock, gate = FakeClock(), threading.Event()
    model = RecordingModel(delay=0.2, clock=clock, gate=gate)

    async def body(batcher):
        assert batcher.expected_wait_s(1) == 0.0  # idle: always tried
        gate.set()
        await batcher.score(["warm-0"])  # the moving average learns a batch takes 0.2 s
        gate.clear()
        running = asyncio.ensure_future(batcher.score(["busy-1"]))
        await until(lambda: len(model.batches) == 2, "the second batch in the classifier")
        clock.advance(0.05)
        early = batcher.expected_wait_s(1)  # 0.15 left of the running batch + 0.2 for its own
        clock.advance(0.1)
        later = batcher.expected_wait_s(1)  # 0.05 left + 0.2
        gate.set()
        await running
        return early, later, batcher.expected_wait_s(1)

    early, later, idle = asyncio.run(with_batcher(model, body, max_batch_size=4, max_wait_ms=1, clock=clock))
    assert early == pytest.approx(0.35) and later == pytest.approx(0.25) and idle == 0.0


def test_a_batch_its_callers_gave_up_on_still_teaches_the_batch_time():
    # Under overload most batches finish after their callers' deadline; skipping them kept the
    # estimate at the unloaded time and let admission queue requests that then missed the deadline.
    clock, gate = FakeClock(), threading.Event()
    model = RecordingModel(delay=0.2, clock=clock, gate=gate)

    async def body(batcher):
        gate.set()
        await batcher.score(["warm-1"])  # a batch someone waited for sets the scale: 0.2 s
        model.delay = 0.4
        gate.clear()
        late = asyncio.ensure_future(batcher.score(["late-2"]))
        await until(lambda: len(model.batches) == 2, "the late batch in the classifier")
        with pytest.raises(TimeoutError):  # its caller gives up while it runs
            await asyncio.wait_for(late, timeout=0.01)
        gate.set()  # the batch runs on after its caller left, and is learned
        await until(lambda: batcher.expected_wait_s(1) == 0.0, "the batcher idle again")
        return batcher.batch_time.seconds

    learned = asyncio.run(with_batcher(model, body, max_wait_ms=1, clock=clock))
    assert learned == pytest.approx(0.2 + 0.2 * (0.4 - 0.2))


def test_a_hung_classifier_call_and_a_failed_one_teach_nothing(monkeypatch):
    monkeypatch.setattr("tierwise.service.batcher.HANG_SECONDS", 0.1)
    clock = FakeClock()
    slow, failing = RecordingModel(delay=0.2, clock=clock), RecordingModel(fail_on="bad-1")

    async def hung(batcher):
        await batcher.score(["slow-1"])  # 0.2 s: past the (patched) hang bound
        await asyncio.sleep(0.01)
        return batcher.batch_time.seconds

    async def failed(batcher):
        with pytest.raises(RuntimeError):
            await batcher.score(["bad-1"])
        await asyncio.sleep(0.01)
        return batcher.batch_time.seconds

    assert asyncio.run(with_batcher(slow, hung, max_wait_ms=1, clock=clock)) == 0.0
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
    clock, gate = FakeClock(), threading.Event()
    model = RecordingModel(delay=0.2, clock=clock, gate=gate)  # e.g. a stall on the very first call

    async def body(batcher):
        late = asyncio.ensure_future(batcher.score(["late-1"]))
        await until(lambda: len(model.batches) == 1, "the first batch in the classifier")
        with pytest.raises(TimeoutError):  # its caller gives up while it runs
            await asyncio.wait_for(late, timeout=0.01)
        gate.set()
        await until(lambda: finished, "the batch to finish")  # it is learned in the same step
        return batcher.batch_time.seconds

    finished: list[float] = []

    def on_batch(size: int, seconds: float) -> None:
        finished.append(seconds)

    assert asyncio.run(with_batcher(model, body, max_wait_ms=1, clock=clock, on_batch=on_batch)) == 0.0
    assert finished == [pytest.approx(0.2)]  # it ran, for 0.2 s, and taught nothing
