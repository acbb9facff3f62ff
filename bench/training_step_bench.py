"""What each of the small model's training shortcuts buys, side by side (issue 16: training time).

    python -m bench.training_step_bench [--steps 20] [--rounds 3]

Times the parts of a training step of the `small` recipe (batch 128, 64 px, a random model)
with each shortcut off and on, in interleaved rounds (best round kept), and prints each
ratio to its baseline: the ResNet's forward and backward in fp32 NCHW, channels-last, and
channels-last under bf16 autocast, then on 64, 48 and 32 px inputs; the text tower on the
full context with the flash attention kernel against cut ids with the math kernel; AdamW's
foreach and fused updates; and the whole step (embedder_service.export.small_model._step,
backward, update) with the 16 fresh scenes drawn on the training thread against drawn by
scene_stream's process. Run it on idle cores.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from embedder_service.bundle import ImageConfig
from embedder_service.export import scene_stream, small_model
from embedder_service.export.attribute_heads import AttributeHeads
from embedder_service.export.cpu_training import bf16_supported, fast_math
from embedder_service.preprocess import ImageLimits, ImagePreprocessor
from embedder_service.tokenizer import TextTokenizer
from imagesearch import synthetic

IMAGE = ImageConfig(size=64, mean=small_model.MEAN, std=small_model.STD)
AHEAD = 8  # RefreshStream's default queue depth


def image_tower(layout: torch.memory_format, bf16: bool) -> Callable[[], None]:
    model = small_model.build_model().visual.to(memory_format=layout)
    pixels = torch.randn(128, 3, 64, 64).contiguous(memory_format=layout)

    def run() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(pixels)
        out.float().sum().backward()
    return run


def image_tower_at(size: int, bf16: bool) -> Callable[[], None]:
    """The recipe's tower (channels-last, bf16 as the CPU allows) on inputs of another size:
    what a step at half size (--low-res-first) or a 48 px model (--image-size) costs."""
    model = small_model.build_model().to(memory_format=torch.channels_last)
    pixels = torch.randn(128, 3, size, size).contiguous(memory_format=torch.channels_last)

    def run() -> None:
        with fast_math(bf16):
            out = small_model.encode_image(model, pixels)
        out.float().sum().backward()
    return run


def text_tower(tokenizer: TextTokenizer, shortcut: bool, bf16: bool) -> Callable[[], None]:
    model = small_model.build_model()
    rng = random.Random(0)
    texts = [synthetic.caption(synthetic.random_scene(rng), rng) for _ in range(128)]
    full = small_model.tokenize(tokenizer, texts)
    cut = small_model.CachedTokens(tokenizer)(texts)

    def run() -> None:
        if shortcut:
            with fast_math(bf16):
                out = small_model.encode_text(model, cut)
        else:
            with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
                out = model.encode_text(full, normalize=True)
        out.float().sum().backward()
    return run


def adamw(fused: bool) -> Callable[[], None]:
    model = small_model.build_model()
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05,
                            foreach=not fused, fused=fused)
    return opt.step


def whole_step(tokenizer: TextTokenizer, in_process: bool, bf16: bool) -> Callable[[], None]:
    """The trainer's own step on a pool of 2000 scenes; 16 of them re-drawn after each."""
    data = small_model.Data(2000, 1, IMAGE, varied=0.6, processes=1)
    model = small_model.build_model().to(memory_format=torch.channels_last)
    heads = AttributeHeads(64)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05, fused=True)
    plan = small_model.Schedule(1000, 0.6, 0, True, True, 16, bf16=bf16)
    tokens = small_model.CachedTokens(tokenizer)
    stream = data.refreshes(16) if in_process else None
    preprocess, rng = ImagePreprocessor(IMAGE, ImageLimits()), random.Random(2)

    def run() -> None:
        # As in the trainer: one torch thread fewer while the refresh process draws.
        with small_model._one_thread_fewer(stream is not None):
            loss = small_model._step(model, heads, data, tokens, plan, 0)
            opt.zero_grad()
            loss.backward()
            opt.step()
        data.refresh(stream.next() if stream is not None else
                     scene_stream.draw_refresh(data.drawn_varied, 16, rng, preprocess))
    return run


def mean_ms(run: Callable[[], None], steps: int, untimed: int) -> float:
    for _ in range(untimed):
        run()
    started = time.perf_counter()
    for _ in range(steps):
        run()
    return 1000 * (time.perf_counter() - started) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    bf16 = bf16_supported()
    tokenizer = small_model.clip_tokenizers()[2]
    groups = {
        "image tower fwd+bwd": {
            "fp32, NCHW": image_tower(torch.contiguous_format, False),
            "fp32, channels-last": image_tower(torch.channels_last, False),
            f"channels-last, bf16 {bf16}": image_tower(torch.channels_last, bf16)},
        f"image tower fwd+bwd by input size, channels-last, bf16 {bf16}": {
            "64 px (the recipe)": image_tower_at(64, bf16),
            "48 px": image_tower_at(48, bf16),
            "32 px": image_tower_at(32, bf16)},
        "text tower fwd+bwd": {
            "full context, flash kernel": text_tower(tokenizer, False, False),
            f"cut ids, math kernel, bf16 {bf16}": text_tower(tokenizer, True, bf16)},
        "AdamW update": {"foreach": adamw(False), "fused": adamw(True)},
        "whole step, bf16 as the CPU allows": {
            "fresh scenes on the training thread": whole_step(tokenizer, False, bf16),
            "fresh scenes in a process beside": whole_step(tokenizer, True, bf16)},
    }
    print(f"torch threads {torch.get_num_threads()}, bf16 supported: {bf16}\n")
    runs = [(part, name, run) for part, settings in groups.items()
            for name, run in settings.items()]
    for _, _, run in runs:
        run()  # warm-up: the first calls choose kernels
    times: list[list[float]] = [[] for _ in runs]
    for _ in range(args.rounds):  # interleaved, so that a busy moment hits every setting
        for i, (part, _, run) in enumerate(runs):
            # The refresh process fills its queue (8 steps) while other parts are timed:
            # those steps would get their scenes free. Both whole-step settings run 8 first.
            untimed = AHEAD if part.startswith("whole step") else 0
            times[i].append(mean_ms(run, args.steps, untimed))
    best = [min(t) for t in times]
    print("| part | setting | ms | ratio to the first |\n|---|---|---|---|")
    first: dict[str, float] = {}
    for (part, name, _), ms in zip(runs, best, strict=True):
        first.setdefault(part, ms)
        print(f"| {part} | {name} | {ms:.1f} | {ms / first[part]:.2f}x |")


if __name__ == "__main__":
    main()
