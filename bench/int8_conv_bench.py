"""What quantising a convolutional image tower's convolutions to int8 would buy, side by side.

    python -m bench.int8_conv_bench [--bundle DIR] [--images N] [--rounds R]

The bundle's fp32 image graph, its int8 graph as exported (embedder_service.export.variants:
MatMul/Gemm/Gather weights only) and the same with Conv quantised too (ONNX Runtime's dynamic
quantisation makes them ConvInteger), each run on one thread over the same N scenes of
imagesearch.synthetic_varied; the rounds interleave the graphs, each figure is the best round.
Prints bytes, milliseconds per batch, their ratio to fp32 and the embeddings' cosine to fp32.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnxruntime.quantization import QuantType, quantize_dynamic

from embedder_service.bundle import read_manifest
from embedder_service.preprocess import ImageLimits, ImagePreprocessor
from embedder_service.settings import BUNDLED_MODEL
from imagesearch import synthetic, synthetic_varied


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=BUNDLED_MODEL)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    manifest = read_manifest(args.bundle)
    rng = random.Random(0)
    preprocess = ImagePreprocessor(manifest.image, ImageLimits())
    batch = np.stack([preprocess.from_image(synthetic_varied.render(
        synthetic.random_scene(rng), 96, rng)) for _ in range(args.images)])
    with tempfile.TemporaryDirectory() as scratch:
        conv = Path(scratch) / "image_int8_conv.onnx"
        quantize_dynamic(str(args.bundle / "image_fp32.onnx"), str(conv),
                         weight_type=QuantType.QUInt8,
                         op_types_to_quantize=["MatMul", "Gemm", "Gather", "Conv"])
        graphs = {"fp32": args.bundle / "image_fp32.onnx",
                  "int8 (as exported)": args.bundle / "image_int8.onnx",
                  "int8 with Conv": conv}
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # the per-image cost, not the machine's parallelism
        sessions = {name: ort.InferenceSession(str(path), options,
                                               providers=["CPUExecutionProvider"])
                    for name, path in graphs.items()}
        sizes = {name: path.stat().st_size for name, path in graphs.items()}
        best = dict.fromkeys(graphs, float("inf"))
        outputs: dict[str, np.ndarray] = {}
        for _ in range(args.rounds):
            for name, session in sessions.items():
                feed = {session.get_inputs()[0].name: batch}
                started = time.perf_counter()
                outputs[name] = session.run(None, feed)[0]
                best[name] = min(best[name], time.perf_counter() - started)
    unit = {name: out / np.linalg.norm(out, axis=1, keepdims=True)
            for name, out in outputs.items()}
    print(f"{args.bundle.name}, {args.images} images, best of {args.rounds} rounds, 1 thread")
    print("| graph | bytes | ms per batch | time / fp32 | cosine to fp32 (min / mean) |")
    print("|---|---|---|---|---|")
    for name in graphs:
        cosine = (unit[name] * unit["fp32"]).sum(axis=1)
        print(f"| {name} | {sizes[name]:,} | {best[name] * 1000:.1f} | "
              f"{best[name] / best['fp32']:.2f}x | {cosine.min():.4f} / {cosine.mean():.4f} |")


if __name__ == "__main__":
    main()
