"""The runtime tokenizer gives exactly open_clip's token ids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from open_clip.tokenizer import SimpleTokenizer, default_bpe

from embedder_service.bundle import TokenizerConfig
from embedder_service.export.clip_bpe import build_clip_tokenizer, clip_special_ids
from embedder_service.tokenizer import TextTokenizer

CORPUS = [
    "a photo of a dog", "A Dog Catching a FRISBEE on the beach.", "", "   \t\n ",
    "Hello, World!!! It's 2026 -- isn't it?", "café naïve résumé Ångström", "日本語のテキストです",
    "Привет, мир", "مرحبا بالعالم", "emoji 🐶🐱👍🏽 and flags 🇫🇷", "😀" * 100,
    "&amp;amp; &lt;b&gt;bold&lt;/b&gt; &quot;quoted&quot; &#39;x&#39;",
    "ctrl\x00chars\x07here\ttab\nnewline\r\n", "mojibake: Ã©tÃ© cafÃ©", "\u200b zero width \ufeff",
    "<start_of_text> literal <end_of_text>", "don't can't we're I'll you've she'd",
    "123456 3.14159 1e10 #42 @user https://example.com/a?b=c", "ＦＵＬＬ-ｗｉｄｔｈ",
    "Straße ǅ ß İstanbul", "x" * 1000, "word " * 200, "a" + " " * 500 + "b",
]


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory) -> tuple[TextTokenizer, SimpleTokenizer]:
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    built = build_clip_tokenizer(Path(default_bpe()))
    built.save(str(path))
    sot, eot = clip_special_ids(built)
    config = TokenizerConfig(file=path.name, clean="lower", bos_id=sot, eos_id=eot, pad_id=0)
    return TextTokenizer(path, config, 77), SimpleTokenizer()


@pytest.mark.parametrize("text", CORPUS)
def test_token_ids_equal_open_clips(tokenizers, text):
    ours, reference = tokenizers
    expected = reference(text, 77)[0].numpy()
    expected = expected[: int((expected != 0).sum())]
    (actual,) = ours.encode_batch([text])
    np.testing.assert_array_equal(actual.ids, expected)
    assert actual.truncated == (len(reference.encode(text)) > 75)


def test_truncation_keeps_the_end_token(tokenizers):
    ours, _ = tokenizers
    (long,) = ours.encode_batch(["word " * 200])
    assert len(long.ids) == 77 and long.ids[-1] == 49407 and long.truncated


def test_padding_fills_to_the_longest_text(tokenizers):
    ours, _ = tokenizers
    batch = ours.pad([t.ids for t in ours.encode_batch(["a", "a much longer caption here"])])
    assert batch.shape == (2, 7)
    assert list(batch[0, 3:]) == [0, 0, 0, 0]
