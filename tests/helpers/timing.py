"""Time under the test's control: a clock that moves only when told to, and waits for a condition
(not for a duration), so a loaded machine makes a test slower but never changes what it sees."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

# How long a wait for something that must happen may take before the test calls it a hang: far past
# anything a loaded machine adds, and only ever spent when the code under test is broken.
HANG_SECONDS = 30.0


class FakeClock:
    """A monotonic clock in seconds that moves only by `advance` (thread-safe: a fake classifier in an
    executor thread advances it by its inference time instead of sleeping)."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


async def until(condition: Callable[[], bool], what: str = "the condition") -> None:
    """Yield to the event loop until `condition()` holds (AssertionError after HANG_SECONDS)."""
    deadline = time.monotonic() + HANG_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {HANG_SECONDS:.0f} s")
        await asyncio.sleep(0.001)


def wait_until(condition: Callable[[], bool], what: str = "the condition") -> None:
    """`until` for code outside an event loop."""
    deadline = time.monotonic() + HANG_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {HANG_SECONDS:.0f} s")
        time.sleep(0.001)


class HeldCalls:
    """Wraps a function so that each call waits until the test sets `release`: work that outlasts any
    deadline, for exactly as long as the test says, then the wrapped function's answer. A deadline
    test releases it after the answer it checks, so that answer cannot have waited for the work."""

    def __init__(self, inner: Callable[..., Any]) -> None:
        self.inner = inner
        self.release = threading.Event()
        self.calls = 0

    def __call__(self, *args: Any) -> Any:
        self.calls += 1
        if not self.release.wait(HANG_SECONDS):
            raise AssertionError("the test never released the held call")
        return self.inner(*args)
