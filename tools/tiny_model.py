"""A tiny model folder built on the fly (no training): WordPiece tokenizer + 3-logit ONNX graph.

Words carry a fixed direction: greetings push to `fast`, writing tasks to `balanced`, proofs and
designs to `frontier`; every other token is neutral. So tests can predict the classifier's output.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from tierwise.core.policy_file import DEFAULT_POLICY_FILE
from tierwise.service.settings import Settings
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
FAST_WORDS = ["hi", "hello", "thanks", "yes", "ok"]
BALANCED_WORDS = ["summarize", "write", "email", "explain", "list"]
FRONTIER_WORDS = ["prove", "theorem", "optimize", "design", "distributed"]
NEUTRAL_WORDS = ["the", "a", "of", "and", "to", "is", "in", "please", "my", "word", "me", "at", "."]
VOCAB = SPECIAL + FAST_WORDS + BALANCED_WORDS + FRONTIER_WORDS + NEUTRAL_WORDS
TIERS = ["fast", "balanced", "frontier"]
WORD_STRENGTH = 9.0

MANIFEST = {
    "name": "tiny",
    "tiers": TIERS,
    "max_length": 64,
    "truncation": {"head_tokens": 40, "tail_tokens": 20, "max_chars": 8000},
    "temperature": 1.5,
    "escalation": {"q": 0.7, "target_under_routing": 0.05},
    "data_hash": "test",
    "git_commit": "test",
}


def build_tokenizer() -> Tokenizer:
    tokenizer = Tokenizer(models.WordPiece({w: i for i, w in enumerate(VOCAB)}, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    return tokenizer


def build_onnx() -> onnx.ModelProto:
    embeddings = np.zeros((len(VOCAB), len(TIERS)), dtype=np.float32)
    for tier_index, words in enumerate((FAST_WORDS, BALANCED_WORDS, FRONTIER_WORDS)):
        for word in words:
            embeddings[VOCAB.index(word), tier_index] = WORD_STRENGTH
    weights = np.eye(len(TIERS), dtype=np.float32)
    bias = np.zeros(len(TIERS), dtype=np.float32)
    initializers = [
        numpy_helper.from_array(embeddings, "embeddings"),
        numpy_helper.from_array(weights, "weights"),
        numpy_helper.from_array(bias, "bias"),
        numpy_helper.from_array(np.array([2], dtype=np.int64), "axis_feature"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axis_sequence"),
        numpy_helper.from_array(np.array(1.0, dtype=np.float32), "one"),
    ]
    nodes = [
        helper.make_node("Gather", ["embeddings", "input_ids"], ["token_vectors"], axis=0),
        helper.make_node("Cast", ["attention_mask"], ["mask"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["mask", "axis_feature"], ["mask3"]),
        helper.make_node("Mul", ["token_vectors", "mask3"], ["masked"]),
        helper.make_node("ReduceSum", ["masked", "axis_sequence"], ["summed"], keepdims=0),
        helper.make_node("ReduceSum", ["mask3", "axis_sequence"], ["count"], keepdims=0),
        helper.make_node("Max", ["count", "one"], ["safe_count"]),
        helper.make_node("Div", ["summed", "safe_count"], ["mean"]),
        helper.make_node("MatMul", ["mean", "weights"], ["projected"]),
        helper.make_node("Add", ["projected", "bias"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_tier_classifier",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "sequence"]),
        ],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", len(TIERS)])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def write_model_folder(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    build_tokenizer().save(str(folder / "tokenizer.json"))
    onnx.save(build_onnx(), str(folder / "model.onnx"))
    (folder / "manifest.json").write_text(json.dumps(MANIFEST, indent=2), encoding="utf-8")
    return folder


def write_int8_model_folder(folder: Path) -> Path:
    """The tiny folder with its graph dynamically int8 quantized the way `make train` ships models
    (per-channel QInt8 weights; DynamicQuantizeLinear picks activation scales at run time over the whole
    input tensor, so a padded batch changes every row's scores unless rows are run apart)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    write_model_folder(folder)
    fp32 = folder / "model.fp32.onnx"
    (folder / "model.onnx").rename(fp32)
    quantize_dynamic(str(fp32), str(folder / "model.onnx"), weight_type=QuantType.QInt8, per_channel=True)
    fp32.unlink()
    return folder


def make_settings(model_dir: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "model_dir": model_dir,
        "policy_file": DEFAULT_POLICY_FILE,
        "onnx_threads": 1,
        "micro_batch_max_wait_ms": 1.0,
        "record_decisions": False,  # tests that need the decision log pass decision_db=<tmp file>
        # The policy's 50 ms deadline is for production; on a loaded CI machine the first call of a
        # test app can miss it and turn a predictable tier into classifier_unavailable. Tests of the
        # deadline pass their own.
        "deadline_ms": 5_000.0,
        # Tests switch a classifier to raise or sleep and re-send the same text: a cached score would
        # hide that. Tests of the cache turn it on.
        "score_cache_size": 0,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]
