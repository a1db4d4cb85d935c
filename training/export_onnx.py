"""Export the fine-tuned classifier to ONNX (a standalone step with a parity check), then int8.

    python -m tierwise.training.export_onnx runs/default/checkpoint out_dir/   # fp32 + int8 + parity

Known pitfalls handled here: exporting through a wrapper leaves the model in training mode
(dropout on), so both are put back in eval mode; the legacy exporter (opset 17) is used because
the dynamo exporter's graph breaks `quantize_dynamic`; per-channel int8 drifts half as much.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np
import onnx
import torch
from onnxruntime.quantization import QuantType, quantize_dynamic

log = logging.getLogger("tierwise.export")

PARITY_TOLERANCE = 1e-4  # max |logit difference| between PyTorch and the fp32 graph
OPSET = 17


class LogitsOnly(torch.nn.Module):
    """The graph takes ids and mask and returns logits (B, K) under the name `logits`."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


def export_fp32(model: torch.nn.Module, path: Path) -> Path:
    """Dynamic batch and sequence axes; returns the written path."""
    wrapper = LogitsOnly(model).eval()
    model.eval()
    dummy_ids = torch.tensor([[101, 7592, 2088, 102], [101, 2307, 102, 0]], dtype=torch.long)
    dummy_mask = (dummy_ids != 0).long()
    with torch.no_grad():
        torch.onnx.export(
            wrapper,
            (dummy_ids, dummy_mask),
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=["input_ids", "attention_mask"],
            output_names=["logits"],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "sequence"},
                "attention_mask": {0: "batch", 1: "sequence"},
                "logits": {0: "batch"},
            },
        )
    wrapper.eval()
    model.eval()  # the exporter can leave modules in training mode (dropout on)
    onnx.checker.check_model(str(path))
    return path


def onnx_logits(path: Path, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(["logits"], {"input_ids": input_ids, "attention_mask": attention_mask})
    return logits.astype(np.float64)


def parity_max_diff(
    model: torch.nn.Module, path: Path, input_ids: np.ndarray, attention_mask: np.ndarray
) -> float:
    """max |PyTorch logit - ONNX logit| over a padded batch (padding exercises the mask)."""
    model.eval()
    with torch.no_grad():
        expected = model(
            input_ids=torch.from_numpy(input_ids), attention_mask=torch.from_numpy(attention_mask)
        ).logits
    got = onnx_logits(path, input_ids, attention_mask)
    return float(np.max(np.abs(expected.numpy().astype(np.float64) - got)))


def fuse_bert_graph(fp32_path: Path, fused_path: Path, num_heads: int, hidden_size: int) -> Path:
    """onnxruntime's BERT fusion (attention, layer norm, GELU): about 30% faster on CPU.

    Fusion only matches graphs exported with eager attention; the caller checks parity again.
    """
    from onnxruntime.transformers.optimizer import optimize_model

    optimized = optimize_model(
        str(fp32_path), model_type="bert", num_heads=num_heads, hidden_size=hidden_size
    )
    optimized.save_model_to_file(str(fused_path))
    return fused_path


def quantize_int8(fp32_path: Path, int8_path: Path, symmetric_activations: bool = False) -> Path:
    """Dynamic int8 quantization of the weights, per channel (half the drift of per-tensor).

    Symmetric activation ranges cost no speed and, on the fused graph, drift less from fp32.
    """
    extra = {"DefaultTensorType": onnx.TensorProto.FLOAT}  # needed for fused graphs
    if symmetric_activations:
        extra["ActivationSymmetric"] = True
    quantize_dynamic(
        str(fp32_path), str(int8_path), weight_type=QuantType.QInt8, per_channel=True, extra_options=extra
    )
    return int8_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkpoint", type=Path, help="a saved Hugging Face checkpoint folder")
    parser.add_argument("out_dir", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(str(args.checkpoint)).eval()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    fp32 = export_fp32(model, args.out_dir / "model.fp32.onnx")
    ids = np.array([[101, 2054, 2003, 1037, 3231, 1029, 102], [101, 7592, 102, 0, 0, 0, 0]], dtype=np.int64)
    diff = parity_max_diff(model, fp32, ids, (ids != 0).astype(np.int64))
    log.info("parity: max |dlogit| = %.2e (tolerance %.0e)", diff, PARITY_TOLERANCE)
    fused = fuse_bert_graph(
        fp32, args.out_dir / "model.fused.onnx", model.config.num_attention_heads, model.config.hidden_size
    )
    fused_diff = parity_max_diff(model, fused, ids, (ids != 0).astype(np.int64))
    log.info("fused parity: max |dlogit| = %.2e", fused_diff)
    quantize_int8(fused, args.out_dir / "model.int8.onnx")
    return 0 if max(diff, fused_diff) <= PARITY_TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main())
