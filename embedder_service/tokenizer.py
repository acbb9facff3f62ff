"""Text tokenisation for any bundle: cleaning as open_clip does, then a `tokenizers` file.

The bundle's tokenizer.json holds the whole vocabulary and pre-tokenisation rules (CLIP's BPE
for OpenAI-style models, SentencePiece/BPE for multilingual ones), so nothing here assumes a
particular tokenizer. The runtime adds the start and end tokens itself and keeps the end token
when it truncates, which is what both open_clip tokenizers produce.
"""

from __future__ import annotations

import gzip
import html
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import ftfy
import numpy as np
from tokenizers import Tokenizer

from embedder_service.bundle import TokenizerConfig


def _basic_clean(text: str) -> str:
    # ftfy repairs mojibake; entities are unescaped twice because captions scraped from the web
    # are often double-escaped ("&amp;amp;").
    return html.unescape(html.unescape(ftfy.fix_text(text))).strip()


def _whitespace_clean(text: str) -> str:
    return " ".join(text.split())


CLEANERS: dict[str, Callable[[str], str]] = {
    "lower": lambda text: _whitespace_clean(_basic_clean(text)).lower(),
    "whitespace": lambda text: _whitespace_clean(_basic_clean(text)),
}


def load_tokenizer(path: Path) -> Tokenizer:
    """Reads a `tokenizers` JSON file, gzip-compressed when its name ends in .gz."""
    if path.suffix == ".gz":
        return Tokenizer.from_str(gzip.decompress(path.read_bytes()).decode("utf-8"))
    return Tokenizer.from_file(str(path))


@dataclass(frozen=True)
class TokenizedText:
    ids: np.ndarray  # int64 [n], n <= context_length, starting with bos and ending with eos
    truncated: bool


class TextTokenizer:
    """Thread-safe; `encode_batch` runs the Rust tokenizer over many texts at once."""

    def __init__(self, path: Path, config: TokenizerConfig, context_length: int) -> None:
        self._tokenizer = load_tokenizer(path)
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()
        self._clean = CLEANERS[config.clean]
        self._bos = config.bos_id
        self._eos = config.eos_id
        self.pad_id = config.pad_id
        self.context_length = context_length

    @staticmethod
    def is_blank(text: str) -> bool:
        return not text.strip()

    def encode_batch(self, texts: list[str]) -> list[TokenizedText]:
        cleaned = [self._clean(text) for text in texts]
        encodings = self._tokenizer.encode_batch(cleaned, add_special_tokens=False)
        room = self.context_length - 2
        results = []
        for encoding in encodings:
            body = encoding.ids
            ids = np.empty(min(len(body), room) + 2, dtype=np.int64)
            ids[0], ids[-1] = self._bos, self._eos
            ids[1:-1] = body[:room]
            results.append(TokenizedText(ids, truncated=len(body) > room))
        return results

    def pad(self, items: list[np.ndarray]) -> np.ndarray:
        """Pads a batch to its longest item (the text tower takes any length up to context)."""
        longest = max(len(ids) for ids in items)
        batch = np.full((len(items), longest), self.pad_id, dtype=np.int64)
        for row, ids in enumerate(items):
            batch[row, : len(ids)] = ids
        return batch
