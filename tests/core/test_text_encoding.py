"""The training/serving hand-off: what ids the encoder makes of a request, for both strategies."""

import numpy as np
import pytest
from tierwise.core.model_folder import Truncation
from tierwise.core.request_text import ClassifierInput, request_input
from tierwise.core.text_encoding import TextEncoder, clip_chars, keep_head_tail
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

from tools.tiny_model import VOCAB, build_tokenizer

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


# -- the conversation hand-off: structural signals, budgets, counts, padding --------------------------
SIGNAL_WORDS = [
    "system", "prompt", "very", "long", "first", "turn", "earlier", "turns", "tools", "results",
    "attachments", "code", "in", "context", "previous", "short", "medium", "no", ";", "|", ":",
]  # fmt: skip


def signal_encoder(truncation: Truncation) -> TextEncoder:
    """The tiny vocabulary plus the words of the context signals, so a test can read the sketch back."""
    vocab = VOCAB + [w for w in SIGNAL_WORDS if w not in VOCAB]
    tokenizer = Tokenizer(models.WordPiece({w: i for i, w in enumerate(vocab)}, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    return TextEncoder(tokenizer, truncation)


def words_of(enc: TextEncoder, ids: list[int]) -> list[str]:
    return [enc.tokenizer.id_to_token(i) for i in ids]


def test_structural_signals_come_first_in_the_sketch_whatever_the_system_prompt_holds():
    enc = signal_encoder(TASK_FIRST)
    body = {
        "messages": [
            {"role": "system", "content": "word " * 1000},
            {"role": "user", "content": "prove the theorem"},
        ]
    }
    (row,), (count,) = enc.encode_ids([request_input(body)])
    words = words_of(enc, row)
    first_sep = words.index("[SEP]")
    assert words[:first_sep] == ["[CLS]", "prove", "the", "theorem"]
    sketch = words[first_sep + 1 : -1]
    assert len(sketch) == TASK_FIRST.context_tokens and words[-1] == "[SEP]"
    assert " ".join(sketch) == "system prompt very long ; first turn | system : word word"
    assert count == 1000 + 3  # every word of the conversation, the 1,000-word system prompt included


def test_a_long_task_keeps_its_head_and_its_tail_next_to_the_sketch():
    enc = encoder(TASK_FIRST)
    task = " ".join(["hi"] * 30 + ["the"] * 50 + ["prove"] * 10)  # the ask is at the end
    (row,), (count,) = enc.encode_ids([ClassifierInput(task=task, sketch="hello", full_text="x")])
    budget = TASK_FIRST.content_tokens - 1 - 1  # the second [SEP], one sketch token
    tail = budget // 3  # the configured tail (20) is capped at a third of the budget
    assert len(row) == 1 + budget + 1 + 1 + 1
    assert row.count(VOCAB.index("prove")) == 10 and row.count(VOCAB.index("hi")) == 30
    assert row.count(VOCAB.index("the")) == budget - 30 - 10
    assert row[1 + budget - tail : 1 + budget] == ids_of(*["the"] * (tail - 10), *["prove"] * 10)
    assert count == 1  # full_text ("x") is what the long-context rule counts


def test_a_conversation_without_context_text_reads_like_a_plain_prompt():
    enc = encoder(TASK_FIRST)
    single = request_input({"messages": [{"role": "user", "content": "hello please write"}]})
    assert enc.encode_ids([single]) == enc.encode_ids(["hello please write"])


@pytest.mark.parametrize("truncation", [TASK_FIRST, HEAD_TAIL], ids=["task_first", "head_tail"])
def test_count_tokens_reports_what_encode_ids_reports(truncation):
    enc = encoder(truncation)
    items = [
        "hello",
        ClassifierInput(task="prove it", sketch="hello hello", full_text="hello hello\n\nprove it"),
        ClassifierInput.plain("write the email please " * 20),
    ]
    assert enc.count_tokens(items) == enc.encode_ids(items)[1] == [1, 4, 80]


def test_encode_pads_to_the_longest_row_and_masks_the_padding():
    enc = encoder(HEAD_TAIL)
    batch = enc.encode(["hi", "hello please write the email"])
    pad, cls, sep = (VOCAB.index(t) for t in ("[PAD]", "[CLS]", "[SEP]"))
    assert batch.input_ids.dtype == np.int64 and batch.attention_mask.dtype == np.int64
    assert batch.input_ids.shape == batch.attention_mask.shape == (2, 7)
    assert batch.input_ids[0].tolist() == [cls, VOCAB.index("hi"), sep, pad, pad, pad, pad]
    assert batch.attention_mask.tolist() == [[1, 1, 1, 0, 0, 0, 0], [1] * 7]
    assert batch.token_counts == [1, 5]


def test_the_tokenizers_own_truncation_and_padding_are_switched_off():
    tokenizer = build_tokenizer()
    tokenizer.enable_truncation(max_length=3)
    tokenizer.enable_padding(length=50)
    enc = TextEncoder(tokenizer, HEAD_TAIL)
    (row,), (count,) = enc.encode_ids(["hello " * 10])
    assert count == 10 and len(row) == 12  # the encoder's budget (60) applies, not the tokenizer's 3


def test_a_tokenizer_without_bert_special_tokens_is_refused():
    tokenizer = Tokenizer(models.WordPiece({"[UNK]": 0, "hello": 1}, unk_token="[UNK]"))
    with pytest.raises(ValueError, match=r"\[CLS\]"):
        TextEncoder(tokenizer, HEAD_TAIL)
