"""The text towers of a bundle: each an ONNX graph with its tokenizer and its own batcher.

Each tower batches only its own texts: a batch is one graph call, and towers differ in
vocabulary and context length, so texts for different towers cannot share one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from embedder_service.batcher import BatchObserver, DynamicBatcher
from embedder_service.bundle import DEFAULT_TOWER
from embedder_service.runtime import Tower
from embedder_service.tokenizer import TextTokenizer


@dataclass(frozen=True)
class TextTowerInfo:
    name: str
    languages: tuple[str, ...]
    context_length: int
    is_default: bool


@dataclass
class TextModel:
    """One text tower: tokenizer, graph, and (once started) the batcher in front of the graph."""

    name: str
    languages: tuple[str, ...]
    tower: Tower
    tokenizer: TextTokenizer
    batcher: DynamicBatcher[np.ndarray, np.ndarray] | None = field(default=None, init=False)

    @property
    def info(self) -> TextTowerInfo:
        return TextTowerInfo(self.name, self.languages, self.tokenizer.context_length,
                             self.name == DEFAULT_TOWER)

    @property
    def metric_name(self) -> str:
        # The default tower keeps the "text" label its metrics had before towers existed.
        return "text" if self.name == DEFAULT_TOWER else f"text-{self.name}"

    def run(self, ids: list[np.ndarray]) -> list[np.ndarray]:
        return list(self.tower.run(self.tokenizer.pad(ids)))

    def warm_up(self, batch: int) -> np.ndarray:
        return self.tower.run(self.tokenizer.pad(
            [t.ids for t in self.tokenizer.encode_batch(["a"] * batch)]))

    def start(self, max_batch_size: int, max_delay_s: float, max_inflight: int, max_queue: int,
              observer: BatchObserver | None) -> None:
        self.batcher = DynamicBatcher(
            self.metric_name, self.run, max_batch_size=max_batch_size, max_delay_s=max_delay_s,
            max_inflight=max_inflight, max_queue=max_queue, observer=observer)
        self.batcher.start()
