"""Builds a `tokenizers` file equivalent to CLIP's byte-level BPE (open_clip's SimpleTokenizer).

CLIP's vocabulary file lists merges only; the vocabulary is derived from them: the 256 byte
symbols, the same with the end-of-word marker, one token per merge, then the two specials.
The pre-tokeniser splits on CLIP's regex and maps bytes to the printable symbols GPT-2 uses.
"""

from __future__ import annotations

import gzip
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, models, pre_tokenizers

SOT, EOT = "<start_of_text>", "<end_of_text>"
END_OF_WORD = "</w>"
# CLIP's word pattern (the text is lower-cased before it is applied).
WORD_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
_MERGE_COUNT = 49152 - 256 - 2


def byte_symbols() -> list[str]:
    """The printable stand-in for each byte value, in CLIP's (= GPT-2's) vocabulary order."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    codes = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return [chr(code) for code in codes]


def build_clip_tokenizer(bpe_vocab_gz: Path) -> Tokenizer:
    with gzip.open(bpe_vocab_gz, "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    merges = [tuple(line.split()) for line in lines[1 : _MERGE_COUNT + 1]]
    symbols = byte_symbols()
    vocab_list = symbols + [s + END_OF_WORD for s in symbols]
    vocab_list += ["".join(pair) for pair in merges] + [SOT, EOT]
    vocab = {token: index for index, token in enumerate(vocab_list)}
    model = models.BPE(
        vocab=vocab, merges=[(a, b) for a, b in merges], end_of_word_suffix=END_OF_WORD,
        fuse_unk=False,
    )
    tokenizer = Tokenizer(model)
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(WORD_PATTERN), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    # open_clip matches the specials literally inside text; so do we.
    tokenizer.add_special_tokens(
        [AddedToken(SOT, normalized=False), AddedToken(EOT, normalized=False)])
    return tokenizer


def clip_special_ids(tokenizer: Tokenizer) -> tuple[int, int]:
    sot, eot = tokenizer.token_to_id(SOT), tokenizer.token_to_id(EOT)
    if sot is None or eot is None:
        raise ValueError("tokenizer has no CLIP start/end tokens")
    return sot, eot
