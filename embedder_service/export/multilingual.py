"""Distils a multilingual text tower from a bundle's English one and adds it to the bundle.

    python -m embedder_service.export.multilingual [--bundle DIR] [--steps N]

Captions of generated scenes in de, fr, es, ru, zh and ar (imagesearch.synthetic_i18n, with
English as well) are paired with the English caption of the same content; a small causal
transformer with its own WordPiece tokenizer learns to map each to the English tower's
embedding of the English caption (the M-CLIP recipe: the teacher's space, hence every stored
image vector, stays as it is). The teacher is whatever default text tower the bundle has, so
re-running this after the English model is retrained gives a tower for the new space.
Held-out colour x shape pairs are never trained on; their mean cosine to the teacher is printed
per language (text->image R@1 through the service: bench/multilingual_eval.py).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from open_clip.transformer import TextTransformer
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

from embedder_service.bundle import ExtraTextTower, TextConfig, TokenizerConfig, load_bundle
from embedder_service.export import onnx_export
from embedder_service.export.bundle_writer import add_text_tower
from embedder_service.export.cpu_training import bf16_supported, fast_math
from embedder_service.runtime import RuntimeOptions, Tower
from embedder_service.settings import BUNDLED_MODEL
from embedder_service.tokenizer import TextTokenizer
from imagesearch import synthetic_i18n as i18n

SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]")
CONTEXT_LENGTH = 32
SERVED = ("de", "fr", "es", "ru", "zh", "ar")  # English stays with the teacher


def train_tokenizer(texts: list[str], vocab_size: int) -> Tokenizer:
    """WordPiece over all languages; BERT's normaliser puts spaces around each Han character,
    so Chinese (written without spaces) splits into characters the model composes."""
    tokenizer = Tokenizer(models.WordPiece(unk_token=SPECIALS[1]))
    tokenizer.normalizer = normalizers.BertNormalizer(
        lowercase=True, strip_accents=False, handle_chinese_chars=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.train_from_iterator(texts, trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIALS)))
    return tokenizer


def tower_config(tokenizer: Tokenizer, name: str) -> TextConfig:
    pad, _, bos, eos = (tokenizer.token_to_id(token) for token in SPECIALS)
    return TextConfig(context_length=CONTEXT_LENGTH, tokenizer=TokenizerConfig(
        file=f"text_{name}_tokenizer.json.gz", clean="whitespace", bos_id=bos, eos_id=eos,
        pad_id=pad))


def serving_tokenizer(tokenizer: Tokenizer, config: TextConfig, scratch: Path) -> TextTokenizer:
    """The serving tokenizer itself, so training sees exactly the ids the service will send."""
    path = scratch / "tokenizer.json"
    tokenizer.save(str(path))
    return TextTokenizer(path, config.tokenizer, config.context_length)


def encode(tokenizer: TextTokenizer, texts: list[str]) -> torch.Tensor:
    full = np.full((len(texts), tokenizer.context_length), tokenizer.pad_id, dtype=np.int64)
    for row, tokens in enumerate(tokenizer.encode_batch(texts)):
        full[row, : len(tokens.ids)] = tokens.ids
    return torch.from_numpy(full)


def teacher_embeddings(bundle_dir: Path, texts: list[str]) -> torch.Tensor:
    bundle = load_bundle(bundle_dir)
    m = bundle.manifest
    tower = Tower(bundle.path(bundle.variant("fp32").text), RuntimeOptions())
    tokenizer = TextTokenizer(bundle.path(m.text.tokenizer.file), m.text.tokenizer,
                              m.text.context_length)
    out = [tower.run(tokenizer.pad([t.ids for t in tokenizer.encode_batch(texts[i:i + 512])]))
           for i in range(0, len(texts), 512)]
    return torch.from_numpy(np.concatenate(out))


def build_student(vocab_size: int, dim: int, config: TextConfig) -> TextTransformer:
    return TextTransformer(context_length=CONTEXT_LENGTH, vocab_size=vocab_size, width=64,
                           heads=4, layers=2, output_dim=dim, pool_type="eos",
                           eos_id=config.tokenizer.eos_id, pad_id=config.tokenizer.pad_id)


def distil(student: TextTransformer, ids: torch.Tensor, targets: torch.Tensor,
           steps: int, seed: int, bf16: bool = False) -> None:
    """Cosine to the teacher, plus a contrastive term against the batch's other targets that
    keeps captions of different scenes apart (what retrieval needs, beyond closeness)."""
    opt = torch.optim.AdamW(student.parameters(), lr=2e-3, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    generator = torch.Generator().manual_seed(seed)
    started = time.monotonic()
    student.train()
    for step in range(steps):
        index = torch.randint(0, len(ids), (256,), generator=generator)
        with fast_math(bf16):
            predicted = F.normalize(student(ids[index]).float(), dim=-1)
        target = targets[index]
        same = (target @ target.T > 0.995).float()
        logits = 30 * predicted @ target.T
        loss = (1 - (predicted * target).sum(-1)).mean() + 0.1 * F.cross_entropy(
            logits, same / same.sum(1, keepdim=True))
        opt.zero_grad()
        loss.backward()
        opt.step()
        schedule.step()
        if step % 250 == 0 or step == steps - 1:
            print(f"step {step:5d}  loss {loss.item():.4f}  {time.monotonic() - started:.0f}s",
                  flush=True)


def held_out_cosines(student: TextTransformer, tokenizer: TextTokenizer,
                     bundle_dir: Path) -> dict[str, float]:
    specs = i18n.held_out_specs()
    teacher = teacher_embeddings(bundle_dir, [i18n.render(s, "en") for s in specs])
    student.eval()
    cosines = {}
    with torch.no_grad():
        for language in i18n.LANGUAGES:
            ids = encode(tokenizer, [i18n.render(s, language) for s in specs])
            predicted = F.normalize(student(ids), dim=-1)
            cosines[language] = float((predicted * teacher).sum(-1).mean())
    return cosines


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=BUNDLED_MODEL)
    parser.add_argument("--name", default="multilingual")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--specs", type=int, default=12000,
                        help="training scenes; each is captioned in every language")
    parser.add_argument("--vocab", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction,
                        help="bfloat16 autocast in training (default: where the CPU has bf16 "
                        "instructions)")
    parser.add_argument("--min-cosine", type=float, default=0.8,
                        help="refuse to export when a language's held-out mean cosine is lower")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    specs = list(i18n.training_specs(args.specs, args.seed))
    captions = [(i, i18n.render(spec, lang)) for i, spec in enumerate(specs)
                for lang in i18n.LANGUAGES]
    raw_tokenizer = train_tokenizer([text for _, text in captions], args.vocab)
    config = tower_config(raw_tokenizer, args.name)
    teacher = teacher_embeddings(args.bundle, [i18n.render(spec, "en") for spec in specs])
    with tempfile.TemporaryDirectory() as scratch:
        tokenizer = serving_tokenizer(raw_tokenizer, config, Path(scratch))
        student = build_student(raw_tokenizer.get_vocab_size(), teacher.shape[1], config)
        distil(student, encode(tokenizer, [text for _, text in captions]),
               teacher[[i for i, _ in captions]], args.steps, args.seed,
               bf16_supported() if args.bf16 is None else args.bf16)
        cosines = held_out_cosines(student, tokenizer, args.bundle)
        print("held-out mean cosine to the teacher: " + ", ".join(
            f"{lang} {value:.3f}" for lang, value in cosines.items()))
        if min(cosines.values()) < args.min_cosine:
            print(f"a language is below {args.min_cosine}: not exporting", file=sys.stderr)
            return 1
        graph = Path(scratch) / "tower.onnx"
        onnx_export.export_text_tower(student.eval(), CONTEXT_LENGTH, graph)
        tower = ExtraTextTower(name=args.name, languages=SERVED, text=config,
                               variants={"fp32": f"text_{args.name}_fp32.onnx"})
        manifest = add_text_tower(args.bundle, tower, raw_tokenizer, {"fp32": graph})
    print(f"added text tower {args.name!r} to {args.bundle} (fingerprint unchanged: "
          f"{manifest.fingerprint})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
