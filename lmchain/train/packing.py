"""Packed fixed-length training blocks in a memory-mapped array, shuffled and sharded per rank.

The corpus is tokenised once, in the Airflow task, into one stream: every text followed by a
separator ([SEP] for BERT-style models, <|endoftext|> for GPT-2-style ones). The stream is cut
into blocks of ``block_size`` tokens (BERT-style blocks get [CLS] ... [SEP] around them) and
written as a ``.npy`` array that every rank memory-maps: no padding, no per-rank copy of the
data. The order of the blocks is a permutation drawn from (seed, epoch), so it is the same on
every rank and every attempt; rank r takes every world-th block of it, so ranks see distinct
blocks, and the position of any optimizer step is a function of the step number alone (which
is what makes resuming from a checkpoint exact).
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path

import numpy as np

from lmchain.artifacts import attempt_path, read_jsonl, remove_stale_attempts, write_json

META = "blocks.json"
BLOCKS = "blocks.npy"


def pack(corpus: Path, tokenizer_dir: str, block_size: int, out: Path, objective: str, batch: int = 1000) -> dict:
    """Tokenise ``corpus`` (JSONL, field ``text``) into ``out/blocks.npy``; returns the metadata.

    Written into a temp folder and renamed, so ``out`` is complete or absent.
    """
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    if objective == "mlm":
        if tok.cls_token_id is None or tok.sep_token_id is None or tok.mask_token_id is None:
            raise ValueError(f"tokenizer {tokenizer_dir} has no [CLS]/[SEP]/[MASK]: it cannot train a masked LM")
        sep, body, head, tail = tok.sep_token_id, block_size - 2, [tok.cls_token_id], [tok.sep_token_id]
    else:
        if tok.eos_token_id is None:
            raise ValueError(f"tokenizer {tokenizer_dir} has no end-of-text token: it cannot train a causal LM")
        sep, body, head, tail = tok.eos_token_id, block_size, [], []
    dtype = np.uint16 if len(tok) <= np.iinfo(np.uint16).max else np.uint32

    remove_stale_attempts(out)
    tmp = attempt_path(out)
    tmp.mkdir(parents=True)
    stream_path = tmp / "stream.bin"
    n_texts = n_tokens = 0
    with open(stream_path, "wb") as stream:
        chunk: list[str] = []

        def flush() -> None:
            nonlocal n_tokens
            ids = tok(chunk, add_special_tokens=False)["input_ids"]
            flat = np.fromiter((t for doc in ids for t in (*doc, sep)), dtype=dtype)
            flat.tofile(stream)
            n_tokens += len(flat)

        for rec in read_jsonl(corpus):
            chunk.append(rec["text"])
            n_texts += 1
            if len(chunk) == batch:
                flush()
                chunk = []
        if chunk:
            flush()
    n_blocks = n_tokens // body
    stream_arr = np.memmap(stream_path, dtype=dtype, mode="r", shape=(n_tokens,)) if n_tokens else np.zeros(0, dtype)
    blocks = np.lib.format.open_memmap(tmp / BLOCKS, mode="w+", dtype=dtype, shape=(n_blocks, block_size))
    step = 100_000  # blocks written per slice: bounded memory on big corpora
    for start in range(0, n_blocks, step):
        stop = min(n_blocks, start + step)
        part = np.asarray(stream_arr[start * body : stop * body]).reshape(stop - start, body)
        blocks[start:stop] = (
            np.concatenate(
                [
                    np.full((stop - start, len(head)), head, dtype),
                    part,
                    np.full((stop - start, len(tail)), tail, dtype),
                ],
                axis=1,
            )
            if head or tail
            else part
        )
    blocks.flush()
    del blocks, stream_arr
    stream_path.unlink()
    meta = {
        "n_blocks": n_blocks,
        "block_size": block_size,
        "dtype": np.dtype(dtype).name,
        "texts": n_texts,
        "tokens": n_tokens,
        "dropped_tail_tokens": n_tokens - n_blocks * body,
        "objective": objective,
        "vocab_size": len(tok),
        "tokenizer": str(tokenizer_dir),
    }
    write_json(tmp / META, meta)
    if out.exists():
        import shutil

        shutil.rmtree(out)
    os.replace(tmp, out)
    return meta


def load(folder: str | Path) -> tuple[np.ndarray, dict]:
    """(blocks memmap of shape [n_blocks, block_size], metadata)."""
    folder = Path(folder)
    return np.load(folder / BLOCKS, mmap_mode="r"), json.loads((folder / META).read_text())


@lru_cache(maxsize=2)  # the current epoch's order, drawn once, not per step
def epoch_order(n_blocks: int, seed: int, epoch: int) -> np.ndarray:
    """The same permutation of the blocks on every rank and every attempt."""
    return np.random.default_rng([seed, epoch]).permutation(n_blocks)


def rank_share(n_blocks: int, world: int) -> int:
    """Blocks per rank per epoch: equal on every rank (collectives need the same step count)."""
    return n_blocks // world


def micro_batch(n_blocks: int, seed: int, rank: int, world: int, micro_bs: int, micro_index: int) -> np.ndarray:
    """Block indices of rank ``rank``'s ``micro_index``-th micro-batch since the start of training.

    Rank r takes positions r, r+world, r+2*world, ... of each epoch's permutation, so no two
    ranks share a block within an epoch; epochs follow each other without a partial batch.
    """
    per_epoch = rank_share(n_blocks, world) // micro_bs
    if per_epoch == 0:
        raise ValueError(f"{n_blocks} blocks over {world} rank(s) is less than one micro-batch of {micro_bs}")
    epoch, within = divmod(micro_index, per_epoch)
    order = epoch_order(n_blocks, seed, epoch)
    mine = order[rank : rank_share(n_blocks, world) * world : world]
    return mine[within * micro_bs : (within + 1) * micro_bs]


def block_digest(block: np.ndarray) -> str:
    """A short content hash of one block: what the per-rank "seen" logs record."""
    return hashlib.sha1(np.ascontiguousarray(block).tobytes()).hexdigest()[:16]
