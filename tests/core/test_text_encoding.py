"""The training/serving hand-off: what ids the encoder makes of a request, for both strategies."""

import pytest
from tierwise.core.model_folder import Truncation
from tierwise.core.request_text import ClassifierInput
from tierwise.core.text_encoding import TextEncoder, clip_chars, keep_head_tail

from tests.helpers.tiny_model import VOCAB, build_tokenizer

TASK_FIRST = Truncation(head_tokens=40, tail_tokens=20, strategy="task_first", context_tokens=12)
HEAD_TAIL = Truncation(head_tokens=40, tail_tokens=20)


def encoder(truncation: Truncation) -> TextEncoder:
    return TextEncoder(build_tokenizer(), truncation)


def ids_of(*words: str) -> list[int]:
    return [VOCAB.index(w) for w in words]


def test_keep_head_tail():
    ids = list(range(100))
    assert keep_head_tail(ids, 120, 20) == ids
    kept = keep_head_tail(ids, 30, 20)  # the tail is at most a third of the budget
    assert kept == list(range(20)) + list(range(90, 100))
    assert keep_head_tail(ids, 30, 0) == list(range(30))


def test_clip_chars_keeps_head_and_tail():
    text = "a" * 50 + "b" * 50
    clipped = clip_chars(text, 30)
    assert clipped.startswith("a" * 20) and clipped.endswith("b" * 10) and len(clipped) < len(text)


def test_plain_text_reads_the_same_in_both_strategies():
    text = "hello please summarize the email"
    assert encoder(TASK_FIRST).encode_ids([text]) == encoder(HEAD_TAIL).encode_ids([text])
    rows, counts = encoder(TASK_FIRST).encode_ids([ClassifierInput.plain(text)])
    assert rows == [
        [VOCAB.index("[CLS]"), *ids_of("hello", "please", "summarize", "the", "email"), VOCAB.index("[SEP]")]
    ]
    assert counts == [5]


def test_task_first_puts_the_task_first_and_the_sketch_after_a_separator():
    enc = encoder(TASK_FIRST)
    read = ClassifierInput(
        task="prove the theorem", sketch="hello hello", full_text="hello hello prove the theorem"
    )
    (row,), (count,) = enc.encode_ids([read])
    cls, sep = VOCAB.index("[CLS]"), VOCAB.index("[SEP]")
    assert row == [cls, *ids_of("prove", "the", "theorem"), sep, *ids_of("hello", "hello"), sep]
    assert count == 5  # every word of the request counts for the long-context rule


def test_a_long_context_can_never_crowd_out_the_task():
    enc = encoder(TASK_FIRST)
    task = " ".join(["prove"] * 100)
    read = ClassifierInput(task=task, sketch=" ".join(["hello"] * 500), full_text="x")
    (row,), _ = enc.encode_ids([read])
    assert (
        len(row) == 2 + TASK_FIRST.content_tokens
    )  # [CLS] + 60 content tokens (incl. the 2nd [SEP]) + [SEP]
    assert row.count(VOCAB.index("prove")) == TASK_FIRST.content_tokens - 1 - TASK_FIRST.context_tokens
    assert row.count(VOCAB.index("hello")) == TASK_FIRST.context_tokens


def test_a_short_wrapped_task_stays_short():
    enc = encoder(TASK_FIRST)
    read = ClassifierInput(task="hi", sketch=" ".join(["prove"] * 500), full_text="x")
    (row,), _ = enc.encode_ids([read])
    assert row.count(VOCAB.index("hi")) == 1
    assert row.count(VOCAB.index("prove")) == TASK_FIRST.context_tokens
    assert len(row) == 1 + 1 + 1 + TASK_FIRST.context_tokens + 1


def test_head_tail_models_read_the_whole_conversation_context_first():
    enc = encoder(HEAD_TAIL)
    read = ClassifierInput(task="hi", sketch="ignored", full_text="prove the theorem\n\nhi")
    (row,), _ = enc.encode_ids([read])
    assert row[1:-1] == ids_of("prove", "the", "theorem", "hi")


@pytest.mark.parametrize("strategy", ["task_first", "head_tail"])
def test_counts_are_extrapolated_past_max_chars(strategy):
    truncation = Truncation(
        head_tokens=40, tail_tokens=20, max_chars=200, strategy=strategy, context_tokens=12
    )
    text = "hello " * 1000
    _, (count,) = encoder(truncation).encode_ids([text])
    assert 900 <= count <= 1100
