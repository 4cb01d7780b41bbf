"""Tokenizer training with Hugging Face ``tokenizers``: WordPiece for BERT-style models, byte-level
BPE for GPT-2-style models.

A trained tokenizer is cached under ``<home>/tokenizers/`` by the hash of its corpus and
settings: a later run (or a retry) on the same corpus reuses it instead of training again, and
token ids stay comparable between runs. The pretrain stage saves it beside the model.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Iterator

from lmchain.artifacts import attempt_path, read_jsonl, remove_stale_attempts, sha256_file

KINDS = ("wordpiece", "bpe")
BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
GPT2_SPECIAL = "<|endoftext|>"
VERSION = 2  # bump when the training recipe below changes, so old caches are not reused


def cache_key(corpus: Path, kind: str, vocab_size: int, lowercase: bool) -> str:
    settings = json.dumps(
        {
            "corpus": sha256_file(corpus),
            "kind": kind,
            "vocab_size": vocab_size,
            "lowercase": lowercase,
            "version": VERSION,
        },
        sort_keys=True,
    )
    return hashlib.sha256(settings.encode()).hexdigest()[:16]


def texts(corpus: Path, batch: int = 1000) -> Iterator[list[str]]:
    chunk: list[str] = []
    for rec in read_jsonl(corpus):
        chunk.append(rec["text"])
        if len(chunk) == batch:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def train(corpus: Path, kind: str, vocab_size: int, out: Path, lowercase: bool = True):
    """Train a tokenizer on the ``text`` field of a JSONL corpus and save it (HF format) to ``out``."""
    from tokenizers.implementations import BertWordPieceTokenizer, ByteLevelBPETokenizer
    from tokenizers.processors import BertProcessing
    from transformers import PreTrainedTokenizerFast

    if kind == "wordpiece":
        wordpiece = BertWordPieceTokenizer(lowercase=lowercase)  # BERT's normaliser, pre-tokeniser, [CLS] x [SEP]
        # type: ignore: tokenizers types the iterator as Iterator[Iterator[str]]; batches as lists are
        # what its own docs pass (any iterable of strings works)
        wordpiece.train_from_iterator(
            texts(corpus),  # type: ignore[arg-type]
            vocab_size=vocab_size,
            min_frequency=2,
            special_tokens=list(BERT_SPECIALS),
            show_progress=False,
        )
        # The implementation adds [CLS]/[SEP] only when built from an existing vocabulary.
        backend = wordpiece._tokenizer
        sep, cls = backend.token_to_id("[SEP]"), backend.token_to_id("[CLS]")
        assert sep is not None and cls is not None  # both are special tokens of the vocabulary just trained
        backend.post_processor = BertProcessing(("[SEP]", sep), ("[CLS]", cls))
        tok = PreTrainedTokenizerFast(
            tokenizer_object=wordpiece._tokenizer,
            unk_token="[UNK]",
            sep_token="[SEP]",
            pad_token="[PAD]",
            cls_token="[CLS]",
            mask_token="[MASK]",
            model_max_length=512,
        )
    elif kind == "bpe":
        bpe = ByteLevelBPETokenizer(add_prefix_space=False, lowercase=lowercase)
        # type: ignore: batches as lists, as above
        bpe.train_from_iterator(
            texts(corpus),  # type: ignore[arg-type]
            vocab_size=vocab_size,
            min_frequency=2,
            special_tokens=[GPT2_SPECIAL],
            show_progress=False,
        )
        # GPT-2 has no padding token; blocks are packed, so padding only matters for evaluation.
        tok = PreTrainedTokenizerFast(
            tokenizer_object=bpe._tokenizer,
            bos_token=GPT2_SPECIAL,
            eos_token=GPT2_SPECIAL,
            unk_token=GPT2_SPECIAL,
            pad_token=GPT2_SPECIAL,
            model_max_length=1024,
        )
    else:
        raise ValueError(f"tokenizer kind {kind!r}: use one of {KINDS}")
    tok.save_pretrained(out)
    return tok


def trained_for(
    corpus: Path, kind: str, vocab_size: int, cache_root: Path, lowercase: bool = True
) -> tuple[Path, bool]:
    """The cached tokenizer folder for this corpus and settings, trained on first use.

    Returns (folder, reused). The folder appears whole or not at all (trained into a temp
    folder, then renamed), so a run killed mid-training never leaves a broken cache entry.
    """
    final = cache_root / f"{kind}-{vocab_size}-{cache_key(corpus, kind, vocab_size, lowercase)}"
    if (final / "tokenizer.json").is_file():
        return final, True
    remove_stale_attempts(final)
    tmp = attempt_path(final)  # two runs may train the same tokenizer at once: one folder each
    train(corpus, kind, vocab_size, tmp, lowercase)
    (tmp / "lmchain-tokenizer.json").write_text(
        json.dumps(
            {
                "corpus": str(corpus),
                "corpus_sha256": sha256_file(corpus),
                "kind": kind,
                "vocab_size": vocab_size,
                "lowercase": lowercase,
            },
            indent=2,
        )
    )
    try:
        tmp.rename(final)
    except OSError:  # another run trained the same one meanwhile: theirs is as good
        shutil.rmtree(tmp, ignore_errors=True)
    return final, False
