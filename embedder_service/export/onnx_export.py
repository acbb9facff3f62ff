"""Exports an open_clip model's two towers to ONNX graphs the runtime can serve.

Image graph: pixel_values float32 [N, 3, S, S] -> embedding float32 [N, D] (not normalised).
Text graph:  input_ids int64 [N, L] -> embedding float32 [N, D], any L up to context_length.

The text graph takes a dynamic sequence length: positions and the causal mask are sliced to
the input, so the runtime can trim padding to the longest text in a batch. That gives the same
embeddings (causal attention never looks at later padding, and pooling reads the end token),
at a fraction of the cost for short queries.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

IMAGE_INPUT, TEXT_INPUT, OUTPUT = "pixel_values", "input_ids", "embedding"
OPSET = 17


class ImageTower(nn.Module):
    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixel_values)


class _Block(nn.Module):
    """An open_clip ResidualAttentionBlock with attention written out shape-free.

    nn.MultiheadAttention reshapes with sizes read from its input, and the TorchScript-based
    exporter freezes the sequence length among them into constants; a graph traced at length 8
    then fails at any other length. Here every reshape names only the head count, so batch and
    length stay symbolic.
    """

    def __init__(self, block: Any) -> None:
        super().__init__()
        if not isinstance(block.attn, nn.MultiheadAttention) or hasattr(block, "ln_1_kv"):
            raise ValueError(f"text block {type(block).__name__} is not supported")
        self.block = block
        self.heads = block.attn.num_heads
        self.scale = (block.attn.embed_dim // self.heads) ** -0.5

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b = self.block
        x = x + b.ls_1(self._attention(b.ln_1(x), mask))
        return x + b.ls_2(b.mlp(b.ln_2(x)))

    def _attention(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        attn = self.block.attn
        qkv = F.linear(x, attn.in_proj_weight, attn.in_proj_bias)
        q, k, v = (t.unflatten(-1, (self.heads, -1)).transpose(1, 2) for t in qkv.chunk(3, -1))
        scores = (q * self.scale) @ k.transpose(-2, -1)
        if mask is not None:
            scores = scores + mask
        out = scores.softmax(dim=-1) @ v
        return attn.out_proj(out.transpose(1, 2).flatten(2))


class TextTower(nn.Module):
    """open_clip's built-in text transformer, with everything sliced to the input length."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        owner = model.text if hasattr(model, "text") else model
        if getattr(owner, "cls_emb", None) is not None:
            raise ValueError("text towers with a class token (CoCa) are not supported")
        self.token_embedding = owner.token_embedding
        self.positional_embedding = owner.positional_embedding
        if not getattr(owner.transformer, "batch_first", True):
            raise ValueError("sequence-first text transformers are not supported")
        self.blocks = nn.ModuleList(_Block(block) for block in owner.transformer.resblocks)
        self.ln_final = owner.ln_final
        self.text_projection = owner.text_projection
        self.attn_mask: torch.Tensor | None
        self.register_buffer("attn_mask", owner.attn_mask, persistent=False)
        self.pool_type = getattr(owner, "text_pool_type", getattr(owner, "pool_type", "argmax"))
        eos_id = getattr(owner, "text_eos_id", getattr(owner, "eos_id", None))
        self.eos_id: int = -1 if eos_id is None else int(eos_id)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        length = input_ids.shape[1]
        x = self.token_embedding(input_ids) + self.positional_embedding[:length]
        mask = None if self.attn_mask is None else self.attn_mask[:length, :length]
        for block in self.blocks:
            x = block(x, mask)
        x = self.ln_final(x)
        rows = torch.arange(x.shape[0])
        if self.pool_type == "argmax":
            # The end token has the highest id in CLIP's vocabulary.
            x = x[rows, input_ids.argmax(dim=-1)]
        elif self.pool_type == "eos":
            x = x[rows, torch.eq(input_ids, self.eos_id).int().argmax(dim=-1)]
        elif self.pool_type == "first":
            x = x[:, 0]
        else:
            raise ValueError(f"text pool type {self.pool_type!r} is not supported")
        if isinstance(self.text_projection, nn.Linear):
            return self.text_projection(x)
        return x @ self.text_projection


class HFTextTower(nn.Module):
    """A Hugging Face text encoder (e.g. XLM-RoBERTa); its attention mask comes from pad ids."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model.encode_text(input_ids)


def text_tower(model: Any) -> nn.Module:
    text = getattr(model, "text", None)
    if text is not None and text.__class__.__name__ == "HFTextEncoder":
        return HFTextTower(model)
    return TextTower(model)


def export_image_tower(model: Any, image_size: int, path: Path) -> None:
    example = torch.randn(2, 3, image_size, image_size)
    _export(ImageTower(model), example, IMAGE_INPUT, path)


def export_text_tower(model: Any, context_length: int, path: Path) -> None:
    # Any ids trace the same graph; the length axis is declared dynamic below.
    example = torch.randint(1, 100, (2, min(8, context_length)), dtype=torch.long)
    _export(text_tower(model), example, TEXT_INPUT, path, dynamic_length=True)


def export_text_module(module: nn.Module, example: torch.Tensor, path: Path) -> None:
    """Any text module taking input_ids [N, L] (for towers built outside open_clip)."""
    _export(module, example, TEXT_INPUT, path, dynamic_length=True)


def _export(module: nn.Module, example: torch.Tensor, input_name: str, path: Path,
            dynamic_length: bool = False) -> None:
    module.eval()
    axes = {0: "batch", 1: "length"} if dynamic_length else {0: "batch"}
    # PyTorch's fused multi-head-attention fast path does not trace; use the plain ops.
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.no_grad():
            torch.onnx.export(
                module, (example,), str(path), input_names=[input_name], output_names=[OUTPUT],
                dynamic_axes={input_name: axes, OUTPUT: {0: "batch"}}, opset_version=OPSET,
                do_constant_folding=True, dynamo=False,
            )
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
