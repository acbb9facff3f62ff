"""The trainer's shortcuts change its speed, never what it computes or draws.

Text features from ids cut after the longest caption equal open_clip's on the full context;
the scene pool and the per-step fresh scenes drawn in other processes depend only on the seed;
the refresh process ends when the trainer is killed.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from embedder_service.bundle import ImageConfig
from embedder_service.export import scene_stream, small_model
from embedder_service.tokenizer import TextTokenizer
from imagesearch import synthetic

IMAGE = ImageConfig(size=32, mean=small_model.MEAN, std=small_model.STD)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tokenizer() -> TextTokenizer:
    return small_model.clip_tokenizers()[2]


def _captions(seed: int, count: int) -> list[str]:
    rng = random.Random(seed)
    return [synthetic.caption(synthetic.random_scene(rng), rng) for _ in range(count)]


def test_trimmed_text_features_equal_open_clips_on_the_full_context(tokenizer):
    torch.manual_seed(0)
    model = small_model.build_model().eval()
    texts = [*_captions(1, 20), "a", "three large pink crosses at the top on a dark background"]
    with torch.no_grad():
        full = model.encode_text(small_model.tokenize(tokenizer, texts), normalize=True)
        trimmed = small_model.encode_text(model, small_model.CachedTokens(tokenizer)(texts))
    assert small_model.CachedTokens(tokenizer)(texts).shape[1] < small_model.CONTEXT_LENGTH
    torch.testing.assert_close(trimmed, full, atol=1e-6, rtol=0)


def test_image_features_at_full_size_are_open_clips():
    torch.manual_seed(0)
    model = small_model.build_model().eval()
    pixels = torch.randn(5, 3, 64, 64)
    with torch.no_grad():
        ours = small_model.encode_image(model, pixels)
        theirs = model.encode_image(pixels, normalize=True)
    assert torch.equal(ours, theirs)


def test_half_size_images_train_the_full_size_positional_embedding():
    torch.manual_seed(0)
    model = small_model.build_model().train()
    pool = model.visual.attnpool
    native = pool.positional_embedding.detach().clone()
    features = small_model.encode_image(model, torch.randn(6, 3, 32, 32))
    assert features.shape == (6, 64)
    torch.testing.assert_close(features.norm(dim=-1), torch.ones(6))
    features[:, 0].sum().backward()
    grad = pool.positional_embedding.grad
    assert grad is not None and torch.isfinite(grad).all() and grad[1:].abs().sum() > 0
    assert torch.equal(pool.positional_embedding.detach(), native)  # put back, not replaced
    assert small_model.encode_image(model.eval(), torch.randn(2, 3, 64, 64)).shape == (2, 64)


def test_image_features_on_other_grids_non_square_included():
    torch.manual_seed(0)
    model = small_model.build_model().eval()
    with torch.no_grad():
        wide = small_model.encode_image(model, torch.randn(2, 3, 64, 96))
    assert wide.shape == (2, 64) and torch.isfinite(wide).all()
    with pytest.raises(ValueError, match="32 or more"):
        small_model.encode_image(model, torch.randn(1, 3, 16, 16))


@pytest.mark.parametrize("argv", [["--variant", "wide"], ["--image-size", "48"]])
def test_half_size_first_is_refused_where_the_tower_cannot_take_it(argv, capsys):
    code = small_model.main([*argv, "--low-res-first", "0.5", "--steps", "10"])
    assert code == 2 and "ResNet image tower on 64 px or more" in capsys.readouterr().err


def test_cached_tokens_give_the_same_ids_when_texts_repeat(tokenizer):
    tokens = small_model.CachedTokens(tokenizer)
    texts = _captions(2, 30)
    first = tokens(texts)
    again = tokens([*reversed(texts), "a new caption never seen"])
    assert torch.equal(again[:30].flip(0)[:, : first.shape[1]], first)
    expected = tokenizer.pad([t.ids for t in tokenizer.encode_batch(texts)])
    assert np.array_equal(first.numpy(), expected)


def test_the_pool_depends_on_the_seed_not_on_how_many_processes_finish_first():
    one = scene_stream.draw_pool(9, seed=5, varied=0.5, image=IMAGE, processes=2)
    two = scene_stream.draw_pool(9, seed=5, varied=0.5, image=IMAGE, processes=2)
    other = scene_stream.draw_pool(9, seed=6, varied=0.5, image=IMAGE, processes=2)
    assert one.scenes == two.scenes and one.varied == two.varied
    assert np.array_equal(one.pixels, two.pixels)
    assert one.pixels.shape == (9, 3, 32, 32) and one.pixels.dtype == np.float32
    assert one.scenes != other.scenes
    assert any(one.varied) and not all(one.varied)


def test_a_pool_smaller_than_its_processes_is_drawn():
    pool = scene_stream.draw_pool(1, seed=5, varied=0.0, image=IMAGE, processes=2)
    assert len(pool.scenes) == 1 and pool.pixels.shape == (1, 3, 32, 32)
    with pytest.raises(ValueError, match="at least one scene"):
        scene_stream.draw_pool(0, seed=5, varied=0.0, image=IMAGE, processes=2)


def test_refreshes_are_the_same_sequence_for_the_same_seed():
    varied = [False, True] * 10

    def first_three(seed: int) -> list[scene_stream.Refresh]:
        with scene_stream.RefreshStream(seed, varied, IMAGE, per_step=4, ahead=2) as stream:
            return [stream.next() for _ in range(3)]

    a, b = first_three(11), first_three(11)
    for x, y in zip(a, b, strict=True):
        assert x.slots == y.slots and x.scenes == y.scenes
        assert np.array_equal(x.pixels, y.pixels)
        assert len(set(x.slots)) == 4 and all(0 <= s < len(varied) for s in x.slots)
    assert [r.slots for r in first_three(12)] != [r.slots for r in a]


def test_close_ends_the_refresh_process():
    stream = scene_stream.RefreshStream(1, [True] * 8, IMAGE, per_step=2, ahead=1)
    stream.next()
    stream.close()
    assert not stream._process.is_alive()


_ORPHAN = """
import sys, time
from embedder_service.bundle import ImageConfig
from embedder_service.export.scene_stream import RefreshStream
stream = RefreshStream(1, [False] * 8, ImageConfig(size=32, mean=(0.5,) * 3, std=(0.5,) * 3),
                       per_step=2, ahead=1)
stream.next()
print(stream._process.pid, flush=True)
time.sleep(120)
"""


def test_the_refresh_process_ends_when_the_trainer_is_killed():
    trainer = subprocess.Popen([sys.executable, "-c", _ORPHAN], stdout=subprocess.PIPE,
                               cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, text=True)
    child = 0
    try:
        child = int(trainer.stdout.readline())
        assert _running(child)
        trainer.send_signal(signal.SIGKILL)
        trainer.wait()
        deadline = time.monotonic() + 20
        while _running(child) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _running(child), "the refresh process outlived its trainer"
    finally:
        trainer.kill()
        trainer.wait()
        if child and _running(child):
            os.kill(child, signal.SIGKILL)


def _running(pid: int) -> bool:
    """Alive and not a zombie left for its new parent to reap."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    state = next(line for line in status.splitlines() if line.startswith("State:"))
    return "Z" not in state.split()[1]
