"""Turn requests into model input ids, identically in training and serving.

`task_first` models read `[CLS] task [SEP] context sketch [SEP]`: the task keeps its head and tail
within a budget a long system prompt can never take (see `Truncation`). Older `head_tail` models
read the whole conversation as one text. The full token count of every word of the request is
reported separately, for the long-context policy.

Segments are told apart by [SEP] alone (token_type_ids stay 0): all-MiniLM-L6-v2 was tuned on
single segments, and the exported graph keeps its two inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from tierwise.core.model_folder import Truncation
from tierwise.core.request_text import ClassifierInput

# The sketch is read from its head, context_tokens at most: this many characters is plenty.
SKETCH_MAX_CHARS = 1200


@dataclass(frozen=True)
class EncodedBatch:
    input_ids: np.ndarray  # (B, T) int64, padded to the longest row
    attention_mask: np.ndarray  # (B, T) int64
    token_counts: list[int]  # full token count per request, before truncation (estimated past max_chars)


def clip_chars(text: str, max_chars: int) -> str:
    """Keep the head and tail of absurdly long text before tokenizing (tokenizing is O(len))."""
    if len(text) <= max_chars:
        return text
    head = (max_chars * 2) // 3
    return text[:head] + "\n...\n" + text[-(max_chars - head) :]


def as_input(item: ClassifierInput | str) -> ClassifierInput:
    return item if isinstance(item, ClassifierInput) else ClassifierInput.plain(item)


def keep_head_tail(ids: list[int], budget: int, tail: int) -> list[int]:
    """At most `budget` ids: the head and the last `tail` (at most a third of the budget)."""
    if len(ids) <= budget:
        return ids
    tail = min(tail, budget // 3)
    return ids[: budget - tail] + (ids[-tail:] if tail else [])


class TextEncoder:
    """Wraps a `tokenizers.Tokenizer` (BERT WordPiece) with the model's truncation."""

    def __init__(self, tokenizer: Tokenizer, truncation: Truncation) -> None:
        self.tokenizer = tokenizer
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        self.truncation = truncation
        self.cls_id = self._special_id("[CLS]")
        self.sep_id = self._special_id("[SEP]")
        self.pad_id = self._special_id("[PAD]")

    @classmethod
    def from_file(cls, tokenizer_path: Path, truncation: Truncation) -> TextEncoder:
        return cls(Tokenizer.from_file(str(tokenizer_path)), truncation)

    def _special_id(self, token: str) -> int:
        token_id = self.tokenizer.token_to_id(token)
        if token_id is None:
            raise ValueError(f"tokenizer has no {token} token; tierwise expects a BERT WordPiece tokenizer.")
        return token_id

    def _tokenize(self, texts: list[str]) -> tuple[list[list[int]], list[int]]:
        """Ids of each text (clipped past max_chars) and its full token count (extrapolated)."""
        max_chars = self.truncation.max_chars
        clipped = [clip_chars(t, max_chars) for t in texts]
        encodings = self.tokenizer.encode_batch(clipped, add_special_tokens=False)
        counts = []
        for text, short, enc in zip(texts, clipped, encodings, strict=True):
            n = len(enc.ids)
            if len(short) < len(text):  # extrapolate the count of what was clipped away
                n = round(n * len(text) / max(len(short), 1))
            counts.append(n)
        return [enc.ids for enc in encodings], counts

    def _head_tail_row(self, ids: list[int]) -> list[int]:
        """The whole text as one segment (head_tail models)."""
        kept = keep_head_tail(ids, self.truncation.content_tokens, self.truncation.tail_tokens)
        return [self.cls_id, *kept, self.sep_id]

    def _task_first_row(self, task: list[int], sketch: list[int]) -> list[int]:
        """[CLS] task [SEP] (sketch [SEP]): the sketch's head, at most context_tokens, never more, so a
        wrapped short request stays short (and cheap); the task keeps its head and tail in the rest."""
        if not sketch:
            return self._head_tail_row(task)
        sketch_kept = sketch[: self.truncation.context_tokens]
        budget = self.truncation.content_tokens - 1 - len(sketch_kept)  # -1: the second [SEP]
        task_kept = keep_head_tail(task, budget, self.truncation.tail_tokens)
        return [self.cls_id, *task_kept, self.sep_id, *sketch_kept, self.sep_id]

    def encode_ids(self, items: Sequence[ClassifierInput | str]) -> tuple[list[list[int]], list[int]]:
        """Token ids with special tokens (unpadded) and the full token count of each request."""
        inputs = [as_input(i) for i in items]
        if self.truncation.strategy == "head_tail":
            ids, counts = self._tokenize([i.text for i in inputs])
            return [self._head_tail_row(r) for r in ids], counts
        task_ids, task_counts = self._tokenize([i.task for i in inputs])
        sketch_ids, _ = self._tokenize([i.sketch[:SKETCH_MAX_CHARS] for i in inputs])
        # Every word counts for the long-context rule, not only what the encoder reads.
        with_context = [n for n, i in enumerate(inputs) if i.full_text]
        _, full_counts = self._tokenize([inputs[n].full_text for n in with_context])
        counts = list(task_counts)
        for n, count in zip(with_context, full_counts, strict=True):
            counts[n] = count
        rows = [self._task_first_row(t, s) for t, s in zip(task_ids, sketch_ids, strict=True)]
        return rows, counts

    def count_tokens(self, items: Sequence[ClassifierInput | str]) -> list[int]:
        """The full token count of each request, as `encode_ids` reports it."""
        return self._tokenize([as_input(i).text for i in items])[1]

    def pad(self, rows: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        """Encoded rows padded to the longest: input_ids (B, T) and attention_mask (B, T), int64."""
        width = max(len(r) for r in rows)
        input_ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        attention_mask = np.zeros((len(rows), width), dtype=np.int64)
        for i, row in enumerate(rows):
            input_ids[i, : len(row)] = row
            attention_mask[i, : len(row)] = 1
        return input_ids, attention_mask

    def encode(self, items: Sequence[ClassifierInput | str]) -> EncodedBatch:
        rows, counts = self.encode_ids(items)
        input_ids, attention_mask = self.pad(rows)
        return EncodedBatch(input_ids=input_ids, attention_mask=attention_mask, token_counts=counts)
