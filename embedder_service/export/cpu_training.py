"""Training on CPU cores, as the bundled small model and its multilingual tower are trained.

bfloat16 autocast on CPUs with bf16 instructions (AVX512-BF16, AMX): the weights, the optimizer
and the losses stay fp32; measured on this project's two-core machine, it takes the small
model's ResNet step from 183 to 118 ms and the multilingual tower's from 65 to 42 ms
(bench/RESULTS.md, issue 16: training time). The exported bundles are fp32 and int8 either way.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel


def bf16_supported() -> bool:
    return bool(torch.backends.mkldnn.is_available()
                and torch.ops.mkldnn._is_mkldnn_bf16_supported())


@contextlib.contextmanager
def fast_math(bf16: bool) -> Iterator[None]:
    """A training step's forward pass: bfloat16 autocast when `bf16`, and scaled-dot-product
    attention by its plain math kernel, whose backward under autocast is ~2x faster than the
    CPU flash kernel's at these sizes. Features normalised inside it come out in bf16 (norms
    within 0.3% of 1; the measured runs trained so); the caller takes them to fp32 for the
    loss."""
    with (sdpa_kernel([SDPBackend.MATH]),
          torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)):
        yield
