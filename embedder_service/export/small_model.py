"""Trains the small bundled CLIP on generated scenes and exports it as a bundle.

    python -m embedder_service.export.small_model [--variant small|small-vit|wide] [--out DIR]
        [--steps N] [--varied FRACTION] [--plain-first FRACTION] [--[no-]caption-targets]
        [--[no-]dihedral] [--refresh N] [--aux-weight W] [--lr RATE] [--batch N]
        [--low-res-first FRACTION] [--image-size PX] [--[no-]bf16]

A real open_clip CLIP architecture (a small ResNet or ViT image tower, causal text
transformer, the real CLIP BPE tokenizer and vocabulary) made small enough to train on two CPU
cores (`small` ~10 minutes, `wide` ~4.5: bf16 autocast where the CPU has it, scenes drawn in
processes beside the step; bench/training_step_bench.py). It prints text->image top-1 accuracy
on a held-out generated set and fails below the variant's floor. `small` is the bundled
primary model; `wide` is a second, different model (another embedding dimension, input size
and widths, hence another space) for serving several models.

`--varied F` draws that fraction of the training scenes with imagesearch.synthetic_varied (many
shades, geometries, fills, backgrounds including photographs, degradations) instead of
imagesearch.synthetic's single style, so the model learns the words rather than one drawing
style (issue 16); early stopping then needs both held-out sets, the plain and the varied one.
Choose between runs with bench/validation_eval.py (the training renderers, unseen seeds);
measure the chosen one on a renderer it never saw with bench/generalisation_eval.py.

`small` trains this way by default (bench/RESULTS.md, issue 16, second experiment): a
convolutional image tower, 60% varied scenes after a plain-only start; `--caption-targets` make
position words work; `--dihedral` and `--refresh` (embedder_service.export.scene_batches) show
new drawings each step; `--aux-weight` adds a training-only shape/count loss
(embedder_service.export.attribute_heads).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import random
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from open_clip.modified_resnet import ModifiedResNet
from open_clip.tokenizer import default_bpe
from PIL import Image
from tokenizers import Tokenizer

from embedder_service.bundle import ImageConfig, TextConfig, TokenizerConfig
from embedder_service.export import scene_batches, scene_stream
from embedder_service.export.attribute_heads import AttributeHeads
from embedder_service.export.bundle_writer import export_bundle
from embedder_service.export.clip_bpe import build_clip_tokenizer, clip_special_ids
from embedder_service.export.cpu_training import bf16_supported, fast_math
from embedder_service.export.small_variants import CONTEXT_LENGTH, VARIANTS, ModelVariant
from embedder_service.preprocess import ImageLimits, ImagePreprocessor
from embedder_service.tokenizer import TextTokenizer
from imagesearch import synthetic, synthetic_varied

BUNDLES = Path(__file__).resolve().parents[1] / "bundles"
MODELS = Path(__file__).resolve().parents[2] / "models"
HELD_OUT_SEED = 20261123
MEAN, STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


def build_model(variant: ModelVariant = VARIANTS["small"]) -> torch.nn.Module:
    return open_clip.CLIP(**variant.model_cfg())


class Data:
    """Scenes, their images (through the serving preprocessing) and fresh captions per draw;
    drawn in processes beside training (embedder_service.export.scene_stream)."""

    def __init__(self, count: int, seed: int, image: ImageConfig, varied: float = 0.0,
                 processes: int = 2) -> None:
        self.rng, self.seed, self.image = random.Random(seed), seed, image
        drawn = scene_stream.draw_pool(count, seed, varied, image, processes)
        self.scenes, self.drawn_varied = drawn.scenes, drawn.varied
        self.pixels = torch.from_numpy(drawn.pixels)
        self.plain = [i for i, d in enumerate(self.drawn_varied) if not d]

    def refreshes(self, per_step: int) -> scene_stream.RefreshStream:
        return scene_stream.RefreshStream(self.seed, self.drawn_varied, self.image, per_step)

    def refresh(self, drawn: scene_stream.Refresh) -> None:
        """Puts new scenes in their slots (each slot keeps the renderer it had)."""
        for slot, scene in zip(drawn.slots, drawn.scenes, strict=True):
            self.scenes[slot] = scene
        self.pixels[drawn.slots] = torch.from_numpy(drawn.pixels)


def clip_tokenizers() -> tuple[Tokenizer, TextConfig, TextTokenizer]:
    """The real CLIP BPE (as the bundle exports it), its text config, and the serving
    tokenizer over it: training sees exactly the ids the service will send."""
    raw = build_clip_tokenizer(Path(default_bpe()))
    sot, eot = clip_special_ids(raw)
    config = TextConfig(context_length=CONTEXT_LENGTH, tokenizer=TokenizerConfig(
        clean="lower", bos_id=sot, eos_id=eot, pad_id=0))
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "tokenizer.json"
        raw.save(str(path))
        return raw, config, TextTokenizer(path, config.tokenizer, CONTEXT_LENGTH)


def tokenize(tokenizer: TextTokenizer, texts: list[str]) -> torch.Tensor:
    """Padded to the full context: open_clip's own encode_text expects that length."""
    ids = tokenizer.pad([t.ids for t in tokenizer.encode_batch(texts)])
    full = np.full((len(texts), tokenizer.context_length), tokenizer.pad_id, dtype=np.int64)
    full[:, : ids.shape[1]] = ids
    return torch.from_numpy(full)


class CachedTokens:
    """Texts to ids padded to the longest (for encode_text below), each distinct text
    tokenized once: the captions' grammar is small, so most of a step's are seen before."""

    def __init__(self, tokenizer: TextTokenizer) -> None:
        self.tokenizer, self.ids = tokenizer, dict[str, np.ndarray]()

    def __call__(self, texts: list[str]) -> torch.Tensor:
        new = [text for text in dict.fromkeys(texts) if text not in self.ids]
        if new:
            self.ids.update(zip(new, (t.ids for t in self.tokenizer.encode_batch(new)),
                                strict=True))
        return torch.from_numpy(self.tokenizer.pad([self.ids[text] for text in texts]))


def encode_text(model: Any, ids: torch.Tensor) -> torch.Tensor:
    """open_clip's CLIP.encode_text (normalised) on ids cut after the longest text: under the
    causal mask the padding after a text's end token never reaches that token, whose output is
    the text's feature, so the result is the same up to float rounding (tests/embedder_service/
    test_small_model_training.py) and a step needs a third of the text tower's work."""
    n = ids.shape[1]
    x = model.token_embedding(ids) + model.positional_embedding[:n]
    x = model.ln_final(model.transformer(x, attn_mask=model.attn_mask[:n, :n]))
    x = x[torch.arange(len(ids)), ids.argmax(dim=-1)]  # the end token has the highest id
    return F.normalize(x @ model.text_projection, dim=-1)


def encode_image(model: Any, pixels: torch.Tensor) -> torch.Tensor:
    """open_clip's CLIP.encode_image (normalised), also at a smaller input than a ResNet
    tower's (--low-res-first, progressive resizing: the tower's half-size steps cost ~0.45x,
    a whole step ~0.55x; measured, the model they make is worse for the time saved - bench/
    RESULTS.md, "half the training's work"). The attention pool's positional embedding is
    learnt on the full-size grid; on a smaller one it is resized (bilinear, as open_clip
    resizes a ViT's), and the gradient reaches the full-size one through the resize."""
    visual = model.visual
    if not isinstance(visual, ModifiedResNet):
        return F.normalize(visual(pixels), dim=-1)
    rows, cols = (size // 32 for size in pixels.shape[-2:])  # features on a stride-32 grid
    native = visual.attnpool.positional_embedding
    side = math.isqrt(native.shape[0] - 1)
    if (rows, cols) == (side, side):
        return F.normalize(visual(pixels), dim=-1)
    if not rows or not cols:
        raise ValueError(f"images of {tuple(pixels.shape[-2:])} px: the ResNet needs 32 or more")
    spatial = native[1:].T.reshape(1, -1, side, side)
    spatial = F.interpolate(spatial, size=(rows, cols), mode="bilinear", antialias=True)
    resized = torch.cat([native[:1], spatial.reshape(-1, rows * cols).T])
    pooled = torch.func.functional_call(
        visual, {"attnpool.positional_embedding": resized}, (pixels,), strict=False)
    return F.normalize(pooled, dim=-1)


def soft_targets(scenes: list[synthetic.Scene]) -> torch.Tensor:
    """Pairs whose scenes share colour, shape and count count as positives (not negatives)."""
    keys = [(s.colour, s.shape, s.count) for s in scenes]
    same = torch.tensor([[a == b for b in keys] for a in keys], dtype=torch.float32)
    return same / same.sum(dim=1, keepdim=True)


@dataclass(frozen=True)
class Schedule:
    """How a run draws its batches (the defaults train as the bundled model was trained)."""

    steps: int
    varied: float = 0.0  # fraction of the pool drawn by imagesearch.synthetic_varied
    plain_steps: int = 0  # the first steps draw only imagesearch.synthetic's scenes
    by_caption: bool = False  # caption_targets instead of soft_targets
    dihedral: bool = False  # flips/quarter turns per image, positions moved with them
    refresh: int = 0  # pool slots re-drawn with new scenes each step
    aux_weight: float = 0.0  # weight of attribute_heads' shape/count loss on the image tower
    bf16: bool = False  # bfloat16 autocast in the forward pass (fast_math)
    lr: float = 1.5e-3  # AdamW's peak rate (warm-up over the first 5% of steps, then cosine)
    low_res_steps: int = 0  # the first steps see the images at half size (encode_image)
    batch: int = 128  # image-caption pairs a step


def train(model: torch.nn.Module, data: Data, tokenizer: TextTokenizer, plan: Schedule,
          evaluate: Any, target: float) -> None:
    """Trains up to `plan.steps`; stops early once held-out accuracy reaches `target`. The
    first `plan.plain_steps` draw only imagesearch.synthetic's scenes (a curriculum: shape is
    learnt there first, then kept across the varied drawings)."""
    steps = plan.steps
    heads = AttributeHeads(_embed_dim(model))  # unused at aux_weight 0
    opt = torch.optim.AdamW([*model.parameters(), *heads.parameters()], lr=plan.lr,
                            weight_decay=0.05, fused=True)  # one kernel: ~4x faster on CPU
    tokens = CachedTokens(tokenizer)
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5
                                                 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    model.train()
    started = time.monotonic()
    refreshes = data.refreshes(plan.refresh) if plan.refresh else contextlib.nullcontext()
    with refreshes as fresh, _one_thread_fewer(bool(plan.refresh)):
        for step in range(steps):
            loss = _step(model, heads, data, tokens, plan, step)
            opt.zero_grad()
            loss.backward()
            opt.step()
            schedule.step()
            if fresh is not None:
                data.refresh(fresh.next())
            if step % 100 == 0 or step == steps - 1:
                print(f"step {step:5d}  loss {loss.item():.3f}  "
                      f"{time.monotonic() - started:.0f}s", flush=True)
            if step >= steps // 3 and step % 250 == 249:
                accuracy = evaluate()
                model.train()
                print(f"step {step:5d}  held-out accuracy {accuracy:.3f}", flush=True)
                if accuracy >= target:
                    return


@contextlib.contextmanager
def _one_thread_fewer(when: bool) -> Iterator[None]:
    """torch's threads, one fewer while the refresh process draws: on two cores the step is
    ~7% faster on one thread than on two threads that wait for the renderer's core."""
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, before - 1) if when else before)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _embed_dim(model: Any) -> int:
    return int(model.text_projection.shape[-1])


def _step(model: Any, heads: AttributeHeads, data: Data, tokens: CachedTokens,
          plan: Schedule, step: int) -> torch.Tensor:
    pool = data.plain if step < plan.plain_steps else range(len(data.scenes))
    index = data.rng.sample(pool, plan.batch)
    pixels, scenes = data.pixels[index], [data.scenes[i] for i in index]
    if plan.dihedral:
        pixels, scenes = scene_batches.dihedral(pixels, scenes, data.rng)
    texts = [synthetic.caption(scene, data.rng) for scene in scenes]
    if step < plan.low_res_steps:
        pixels = F.avg_pool2d(pixels, 2)
    with fast_math(plan.bf16):
        image_features = encode_image(model, pixels.contiguous(memory_format=torch.channels_last))
        text_features = encode_text(model, tokens(texts))
    image_features, text_features = image_features.float(), text_features.float()
    logit_scale = model.logit_scale.exp()
    logits = logit_scale * image_features @ text_features.T
    targets = (scene_batches.caption_targets(scenes, texts) if plan.by_caption
               else soft_targets(scenes))
    loss = (F.cross_entropy(logits, targets / targets.sum(1, keepdim=True))
            + F.cross_entropy(logits.T, targets.T / targets.T.sum(1, keepdim=True))) / 2
    if plan.aux_weight:
        loss = loss + plan.aux_weight * heads.loss(image_features, scenes)
    return loss


def held_out_accuracy(model: Any, tokenizer: TextTokenizer, preprocess: ImagePreprocessor,
                      varied: bool = False) -> float:
    """Top-1 over imagesearch.synthetic's held-out set; with `varied`, the lower of that and
    the same scenes drawn by the varied renderer (training photos, another seed)."""
    items = synthetic.held_out_set(HELD_OUT_SEED)
    plain = _top1(model, tokenizer, preprocess, items)
    if not varied:
        return plain
    rng = random.Random(HELD_OUT_SEED + 1)
    drawn = [(scene, synthetic_varied.render(scene, 96, rng), text) for scene, _, text in items]
    return min(plain, _top1(model, tokenizer, preprocess, drawn))


def _top1(model: Any, tokenizer: TextTokenizer, preprocess: ImagePreprocessor,
          items: list[tuple[synthetic.Scene, Image.Image, str]]) -> float:
    pixels = torch.from_numpy(np.stack([preprocess.from_image(img) for _, img, _ in items]))
    ids = tokenize(tokenizer, [text for _, _, text in items])
    model.eval()
    with torch.no_grad():
        sims = model.encode_text(ids, normalize=True) @ model.encode_image(pixels, normalize=True).T
    return float((sims.argmax(dim=1) == torch.arange(len(items))).float().mean())


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    variant = VARIANTS[args.variant]
    if args.image_size is not None:
        variant = dataclasses.replace(variant, image_size=args.image_size)
    plan = _plan(variant, args)
    varied = plan.varied > 0
    model_name, out = _destination(args, variant, plan)
    seed = variant.seed if args.seed is None else args.seed
    torch.manual_seed(seed)
    raw_tokenizer, text_cfg, tokenizer = clip_tokenizers()
    image_cfg = ImageConfig(size=variant.image_size, mean=MEAN, std=STD)
    out.parent.mkdir(parents=True, exist_ok=True)
    preprocess = ImagePreprocessor(image_cfg, ImageLimits())
    model = build_model(variant)
    if plan.low_res_steps and not (isinstance(model.visual, ModifiedResNet)
                                   and variant.image_size >= 64):
        print("--low-res-first needs a ResNet image tower on 64 px or more; "
              f"{args.variant} at {variant.image_size} px is not", file=sys.stderr)
        return 2
    if args.checkpoint is not None:
        model.load_state_dict(torch.load(args.checkpoint))
    else:
        started = time.monotonic()
        data = Data(args.scenes or variant.scenes, seed, image_cfg, plan.varied)
        print(f"rendered {len(data.scenes)} scenes in {time.monotonic() - started:.0f}s "
              f"(bf16: {plan.bf16})", flush=True)
        model.to(memory_format=torch.channels_last)  # oneDNN's faster layout for convolutions
        train(model, data, tokenizer, plan,
              lambda: held_out_accuracy(model, tokenizer, preprocess, varied), args.target)
        model.to(memory_format=torch.contiguous_format)
    checkpoint = out.parent / (out.name + ".pt")
    if args.checkpoint is None:
        torch.save(model.state_dict(), checkpoint)  # lets the export be redone without training
    print(f"saved {checkpoint} (not committed)")
    accuracy = held_out_accuracy(model, tokenizer, preprocess, varied)
    print(f"text->image top-1 accuracy on held-out generated set: {accuracy:.3f}")
    floor = variant.min_accuracy if args.min_accuracy is None else args.min_accuracy
    if accuracy < floor:
        print(f"accuracy below {floor}: not exporting", file=sys.stderr)
        return 1
    model.eval()
    manifest = export_bundle(
        model, out, model_name=model_name,
        architecture=f"open_clip.CLIP({args.variant})", pretrained=None, image=image_cfg,
        text=text_cfg, tokenizer=raw_tokenizer, precisions=("fp32", "int8"),
    )
    print(f"exported {out} ({manifest.fingerprint})")
    return 0


def _destination(args: argparse.Namespace, variant: ModelVariant, plan: Schedule
                 ) -> tuple[str, Path]:
    """The model's name and folder. Another mix of training data or input size gives another
    vector space, so another name; any run off the variant's recipe is an experiment, not the
    bundled model: its default folder (models/) is gitignored."""
    base = VARIANTS[args.variant]
    recipe = _plan(base, _parse_args(["--variant", args.variant]))
    other_size = variant.image_size != base.image_size
    experiment = (dataclasses.replace(plan, bf16=recipe.bf16) != recipe or other_size
                  or args.scenes not in (None, base.scenes) or args.seed not in (None, base.seed))
    name = base.model_name + ("-varied" if plan.varied != base.varied else "") + (
        f"-{variant.image_size}px" if other_size else "")
    return name, args.out or (MODELS if experiment else BUNDLES) / name


def _plan(variant: ModelVariant, args: argparse.Namespace) -> Schedule:
    """The variant's training defaults, with the flags given on the command line."""
    def pick(name: str) -> Any:
        given = getattr(args, name)
        return getattr(variant, name) if given is None else given

    steps = args.steps or variant.steps
    bf16 = bf16_supported() if args.bf16 is None else args.bf16
    return Schedule(steps, varied=pick("varied"), plain_steps=int(pick("plain_first") * steps),
                    by_caption=pick("caption_targets"), dihedral=pick("dihedral"),
                    refresh=pick("refresh"), aux_weight=pick("aux_weight"), bf16=bf16,
                    lr=pick("lr"), low_res_steps=int(pick("low_res_first") * steps),
                    batch=args.batch or Schedule.batch)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", choices=sorted(VARIANTS), default="small",
                        help="architecture; each has its own bundle folder, steps and seed")
    parser.add_argument("--out", type=Path, default=None,
                        help="bundle folder (default: embedder_service/bundles/<model name> "
                        "for the variant's own recipe, models/<model name> for any other run)")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--target", type=float, default=0.98,
                        help="stop early once held-out accuracy reaches this")
    parser.add_argument("--scenes", type=int, default=None)
    parser.add_argument("--image-size", type=_at_least(32), default=None,
                        help="another input size than the variant's (another model, named "
                        "<model name>-<size>px)")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="skip training: export these weights (a .pt the trainer saved)")
    # Training data and batches: None takes the variant's default (`small`: all on).
    parser.add_argument("--varied", type=float, default=None,
                        help="fraction of training scenes drawn by imagesearch.synthetic_varied "
                        "(another fraction than the variant's writes to models/<name>-varied)")
    parser.add_argument("--plain-first", type=float, default=None,
                        help="with --varied: this fraction of the steps sees plain scenes only")
    parser.add_argument("--caption-targets", action=argparse.BooleanOptionalAction,
                        help="positives are the captions true of each image (position, size "
                        "and background words included), not all of the same colour, shape, count")
    parser.add_argument("--dihedral", action=argparse.BooleanOptionalAction,
                        help="flip/turn each training image at random, its position words with it")
    parser.add_argument("--refresh", type=int, default=None,
                        help="re-draw this many pool scenes with new ones every step")
    parser.add_argument("--aux-weight", type=float, default=None,
                        help="weight of a shape/count classification loss on the image tower "
                        "(training only; the heads are not exported)")
    parser.add_argument("--lr", type=float, default=None, help="peak learning rate")
    parser.add_argument("--batch", type=_at_least(2), default=None,
                        help="image-caption pairs a step")
    parser.add_argument("--low-res-first", type=_fraction, default=None,
                        help="this fraction of the steps sees the images at half size "
                        "(ResNet image towers only)")
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction,
                        help="bfloat16 autocast in training (default: where the CPU has "
                        "bf16 instructions; the exported bundle is fp32 and int8 either way)")
    parser.add_argument("--min-accuracy", type=float, default=None,
                        help="refuse to export below this held-out accuracy")
    return parser.parse_args(argv)


def _at_least(low: int) -> Any:
    def parse(text: str) -> int:
        value = int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is under {low}")
        return value
    return parse


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not in [0, 1)")
    return value


if __name__ == "__main__":
    sys.exit(main())
