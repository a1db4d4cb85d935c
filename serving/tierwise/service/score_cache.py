"""A bounded cache of the encoder's scores, keyed by a hash of exactly what the classifier reads.

Production traffic repeats itself: retries, templated requests, agents asking the same thing in a
loop. A repeated request gets the score the encoder gave it before, without queueing for it. The
key is a BLAKE2b digest of the task, the context sketch and the full text (the token count reads
every word), so two requests share a score only when the classifier would see the same input; the
digest, not the text, is kept. One cache belongs to one loaded model (a reload builds a new router
and so an empty cache). Least recently used entries go first; `size` 0 turns it off.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable

from tierwise.core.request_text import ClassifierInput
from tierwise.service.batcher import Score

CacheObserver = Callable[[str, int], None]  # (outcome "hit" | "miss", count)


def input_key(item: ClassifierInput) -> bytes:
    digest = hashlib.blake2b(digest_size=16)
    for part in (item.task, item.sketch, item.full_text):
        encoded = part.encode("utf-8", "surrogatepass")
        digest.update(len(encoded).to_bytes(8, "little"))  # length-prefixed: no two splits collide
        digest.update(encoded)
    return digest.digest()


class ScoreCache:
    def __init__(self, size: int, on_lookup: CacheObserver | None = None) -> None:
        if size < 0:
            raise ValueError(f"the score cache size must be >= 0, got {size}")
        self.size = size
        self._entries: OrderedDict[bytes, Score] = OrderedDict()
        self._on_lookup = on_lookup

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, items: list[ClassifierInput]) -> list[Score | None]:
        """The cached score of each item, None for a miss (an entry found becomes the most recent)."""
        found: list[Score | None] = []
        for item in items:
            key = input_key(item)
            score = self._entries.get(key)
            if score is not None:
                self._entries.move_to_end(key)
                score = Score(score.probabilities, score.token_count, queue_wait_ms=0.0)
            found.append(score)
        if self._on_lookup is not None and items:
            hits = sum(s is not None for s in found)
            self._on_lookup("hit", hits)
            self._on_lookup("miss", len(items) - hits)
        return found

    def store(self, items: list[ClassifierInput], scores: list[Score]) -> None:
        if self.size == 0:
            return
        for item, score in zip(items, scores, strict=True):
            key = input_key(item)
            self._entries[key] = score
            self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
