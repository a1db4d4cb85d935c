"""Turn request text into model input ids, identically in training and serving.

Long prompts keep their head and tail (the instruction is often at one end, the question at the
other); the full token count is reported separately, for the long-context policy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from serving.model_folder import Truncation


@dataclass(frozen=True)
class EncodedBatch:
    input_ids: np.ndarray  # (B, T) int64, padded to the longest row
    attention_mask: np.ndarray  # (B, T) int64
    token_counts: list[int]  # full token count per text, before truncation (estimated past max_chars)


def clip_chars(text: str, max_chars: int) -> str:
    """Keep the head and tail of absurdly long text before tokenizing (tokenizing is O(len))."""
    if len(text) <= max_chars:
        return text
    head = (max_chars * 2) // 3
    return text[:head] + "\n...\n" + text[-(max_chars - head) :]


class TextEncoder:
    """Wraps a `tokenizers.Tokenizer` (BERT WordPiece) with head+tail truncation."""

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

    def _head_tail(self, ids: list[int]) -> list[int]:
        head, tail = self.truncation.head_tokens, self.truncation.tail_tokens
        if len(ids) > head + tail:
            ids = ids[:head] + (ids[-tail:] if tail else [])
        return [self.cls_id, *ids, self.sep_id]

    def encode_ids(self, texts: list[str]) -> tuple[list[list[int]], list[int]]:
        """Token ids with special tokens (unpadded) and the full token count of each text."""
        max_chars = self.truncation.max_chars
        clipped = [clip_chars(t, max_chars) for t in texts]
        encodings = self.tokenizer.encode_batch(clipped, add_special_tokens=False)
        rows, counts = [], []
        for text, short, enc in zip(texts, clipped, encodings, strict=True):
            n = len(enc.ids)
            if len(short) < len(text):  # extrapolate the count of what was clipped away
                n = round(n * len(text) / max(len(short), 1))
            rows.append(self._head_tail(enc.ids))
            counts.append(n)
        return rows, counts

    def pad(self, rows: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        """Encoded rows padded to the longest: input_ids (B, T) and attention_mask (B, T), int64."""
        width = max(len(r) for r in rows)
        input_ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        attention_mask = np.zeros((len(rows), width), dtype=np.int64)
        for i, row in enumerate(rows):
            input_ids[i, : len(row)] = row
            attention_mask[i, : len(row)] = 1
        return input_ids, attention_mask

    def encode(self, texts: list[str]) -> EncodedBatch:
        rows, counts = self.encode_ids(texts)
        input_ids, attention_mask = self.pad(rows)
        return EncodedBatch(input_ids=input_ids, attention_mask=attention_mask, token_counts=counts)
