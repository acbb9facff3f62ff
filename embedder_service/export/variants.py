"""Precision variants of exported fp32 graphs.

- fp16: for GPUs. Weights and activations in half precision, inputs and outputs kept float32 so
  the runtime feeds every variant the same way. (ONNX Runtime's CPU provider crashes on these
  graphs at the default optimisation level: fp16 is served on GPU only.)
- int8: dynamic quantisation of MatMul/Gemm weights for CPU serving. QUInt8, not the default
  QInt8: on CPUs without VNNI, QInt8 saturates and cosine to fp32 drops to ~0.98, while QUInt8
  keeps ~0.9997 at ~1.5x the fp32 speed. Convolutions stay fp32: quantised they become
  ConvInteger, which ONNX Runtime's CPU provider ran 1.5x slower than fp32 on the bundled ResNet
  to save 1.5 of its 21 MB (`python -m bench.int8_conv_bench`, bench/RESULTS.md).
"""

from __future__ import annotations

from pathlib import Path

import onnx
from onnxruntime.quantization import QuantType, quantize_dynamic
from onnxruntime.transformers.float16 import convert_float_to_float16
from onnxruntime.transformers.onnx_model import OnnxModel


def to_fp16(source: Path, target: Path) -> None:
    model = onnx.load(str(source))
    # keep_io_types: float32 in and out; LayerNorm/Softmax-heavy ops stay fp32 where the
    # converter's block list says they lose too much precision.
    converted = OnnxModel(convert_float_to_float16(model, keep_io_types=True))
    # The converter appends the input casts after their consumers; ONNX requires node order.
    converted.topological_sort()
    onnx.save(converted.model, str(target))


def to_int8(source: Path, target: Path) -> None:
    quantize_dynamic(
        str(source), str(target), weight_type=QuantType.QUInt8,
        # Gather too: the token-embedding table is most of a text tower's bytes.
        op_types_to_quantize=["MatMul", "Gemm", "Gather"],
    )
