"""Rendering for the small model's training, in processes beside the training step.

Drawing a scene and putting it through the serving preprocessing costs ~2-3.5 ms of Python and
Pillow; the pool (20000 scenes) and the 16 fresh scenes of every step (embedder_service.export.
scene_batches) were a fifth of a run's time on the training thread. Here the pool is drawn by
two processes and the fresh scenes by a process that keeps a few steps ahead, so they overlap
the step's tensor work (bench/RESULTS.md, issue 16: training time).

Every draw depends only on the seed, never on timing or the machine: each pool chunk (always
two) and the refresh stream have a random.Random of their own, and the trainer takes exactly
one refresh per step. The processes use no torch, but spawn imports the trainer's main module
in each (torch, open_clip: ~4 s and ~0.5 GB of its own memory per process).
"""

from __future__ import annotations

import io
import multiprocessing
import multiprocessing.queues
import multiprocessing.synchronize
import os
import queue
import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from embedder_service.bundle import ImageConfig
from embedder_service.preprocess import ImageLimits, ImagePreprocessor
from imagesearch import synthetic, synthetic_varied

_CONTEXT = multiprocessing.get_context("spawn")  # no fork of a process holding torch threads


def draw(scene: synthetic.Scene, varied: bool, rng: random.Random,
         preprocess: ImagePreprocessor) -> np.ndarray:
    """One scene drawn by the varied renderer or the plain one, as the model's input."""
    if varied:
        image = synthetic_varied.render(scene, rng.choice((48, 64, 96, 128, 160)), rng)
    else:
        image = _plain(scene, rng)
    return preprocess.from_image(image)


def _plain(scene: synthetic.Scene, rng: random.Random) -> Image.Image:
    image = synthetic.render(scene, rng.choice((64, 96, 128, 160)), rng)
    if rng.random() < 0.3:  # JPEG artefacts, as in real uploads and near-duplicates
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=rng.randint(50, 95))
        image = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    return image


@dataclass
class Drawn:
    """Scenes, which renderer drew each, and their pixels ([n, 3, size, size] float32)."""

    scenes: list[synthetic.Scene]
    varied: list[bool]
    pixels: np.ndarray


def draw_pool(count: int, seed: int, varied: float, image: ImageConfig,
              processes: int) -> Drawn:
    """`count` random scenes, a `varied` fraction by the varied renderer, drawn in
    `processes` chunks side by side. The same arguments give the same pool."""
    if count < 1:
        raise ValueError("a pool needs at least one scene")
    sizes = [count // processes + (k < count % processes) for k in range(processes)]
    jobs = [(size, f"pool:{seed}:{k}", varied, image) for k, size in enumerate(sizes) if size]
    if len(jobs) == 1:
        parts = [_draw_chunk(*jobs[0])]
    else:
        with _CONTEXT.Pool(processes) as pool:
            parts = pool.starmap(_draw_chunk, jobs)
    return Drawn([s for p in parts for s in p.scenes], [v for p in parts for v in p.varied],
                 np.concatenate([p.pixels for p in parts]))


def _draw_chunk(count: int, seed: str, varied: float, image: ImageConfig) -> Drawn:
    rng, preprocess = random.Random(seed), ImagePreprocessor(image, ImageLimits())
    scenes = [synthetic.random_scene(rng) for _ in range(count)]
    flags = [varied > 0 and rng.random() < varied for _ in scenes]
    pixels = np.stack([draw(s, v, rng, preprocess) for s, v in zip(scenes, flags, strict=True)])
    return Drawn(scenes, flags, pixels)


@dataclass
class Refresh:
    """New scenes for some pool slots; each slot keeps the renderer it had."""

    slots: list[int]
    scenes: list[synthetic.Scene]
    pixels: np.ndarray


def draw_refresh(varied: Sequence[bool], per_step: int, rng: random.Random,
                 preprocess: ImagePreprocessor) -> Refresh:
    """New scenes for `per_step` random slots of a pool whose slots were drawn `varied`."""
    slots = rng.sample(range(len(varied)), per_step)
    scenes = [synthetic.random_scene(rng) for _ in slots]
    return Refresh(slots, scenes, np.stack([draw(s, varied[i], rng, preprocess)
                                            for s, i in zip(scenes, slots, strict=True)]))


class RefreshStream:
    """`per_step` fresh scenes a step, drawn by a process that stays up to `ahead` steps in
    front. It stops with close(), and by itself when the trainer's process is gone."""

    def __init__(self, seed: int, varied: Sequence[bool], image: ImageConfig, per_step: int,
                 ahead: int = 8) -> None:
        self._queue = _CONTEXT.Queue(maxsize=ahead)
        self._stop = _CONTEXT.Event()
        self._process = _CONTEXT.Process(
            target=_produce, name="scene-refresh", daemon=True,
            args=(f"refresh:{seed}", list(varied), image, per_step, self._queue, self._stop,
                  os.getpid()))
        self._process.start()

    def next(self) -> Refresh:
        """The next step's scenes; waits while the process draws them."""
        while True:
            try:
                return self._queue.get(timeout=1.0)
            except queue.Empty:
                if not self._process.is_alive():
                    raise RuntimeError("the scene refresh process ended "
                                       f"(exit code {self._process.exitcode})") from None

    def close(self) -> None:
        self._stop.set()
        self._process.join(timeout=10)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
        self._queue.close()

    def __enter__(self) -> RefreshStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _produce(seed: str, varied: list[bool], image: ImageConfig, per_step: int,
             out: multiprocessing.queues.Queue[Refresh], stop: multiprocessing.synchronize.Event,
             parent: int) -> None:
    out.cancel_join_thread()  # unread items must never keep this process from ending
    rng, preprocess = random.Random(seed), ImagePreprocessor(image, ImageLimits())
    while not stop.is_set() and os.getppid() == parent:
        drawn = draw_refresh(varied, per_step, rng, preprocess)
        while True:
            try:
                out.put(drawn, timeout=1.0)
                break
            except queue.Full:
                if stop.is_set() or os.getppid() != parent:
                    return
