"""Corpus-level steps: exact and near-duplicate removal (with an index that outlives the run)
and eval-set decontamination.

Per-document work (hashing, MinHash signatures, n-gram look-ups) runs in the worker processes;
the decisions that depend on what came before run here, in input order, so the first document
of a cluster is the one kept whatever the number of workers.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from lmchain.curate.minhash import LshIndex, word_ngram_keys

log = logging.getLogger(__name__)
HISTORY = -2  # owner of index entries that earlier runs kept (-1: no match)


def exact_key(sha256_hex: str) -> int:
    return int(sha256_hex[:16], 16)


class Deduper:
    """Exact (64-bit prefix of the normalised text's sha256) and MinHash-LSH near duplicates.

    Only kept documents enter the index, so every dropped document is a near-duplicate of a
    kept one (no chains through dropped documents), and memory grows with the kept corpus:
    8 bytes per kept text for exact keys plus 16 bytes per band for LSH keys.
    """

    def __init__(self, exact: bool, near: bool, bands: int):
        self.exact, self.near = exact, near
        self.exact_seen: dict[int, int] = {}
        self.history_exact = np.empty(0, dtype=np.uint64)
        self.lsh = LshIndex(bands)
        self.kept_exact: list[int] = []
        self.kept_bands: list[np.ndarray] = []

    def check(self, exact_keys: list[int], band_keys: np.ndarray | None, ordinals: list[int]) -> list[tuple[str, int] | None]:
        """For each document of a chunk (in input order): None (new) or (reason, ordinal of the
        kept document it duplicates, HISTORY for one kept by an earlier run)."""
        n = len(ordinals)
        verdicts: list[tuple[str, int] | None] = [None] * n
        in_history = np.isin(np.array(exact_keys, dtype=np.uint64), self.history_exact) \
            if self.exact and len(self.history_exact) else np.zeros(n, bool)
        near = self.near and band_keys is not None and n > 0
        earlier = self.lsh.lookup(band_keys) if near else None
        in_chunk: dict[int, int] = {}  # band key -> ordinal, for documents kept earlier in this chunk
        kept = []
        for i in range(n):
            if self.exact and in_history[i]:
                verdicts[i] = ("exact_duplicate", HISTORY)
            elif self.exact and exact_keys[i] in self.exact_seen:
                verdicts[i] = ("exact_duplicate", self.exact_seen[exact_keys[i]])
            elif near and earlier[i] != -1:
                verdicts[i] = ("near_duplicate", int(earlier[i]))
            elif near and (owner := next((in_chunk[k] for k in band_keys[i].tolist() if k in in_chunk), None)) \
                    is not None:
                verdicts[i] = ("near_duplicate", owner)
            else:
                kept.append(i)
                self.exact_seen[exact_keys[i]] = ordinals[i]
                self.kept_exact.append(exact_keys[i])
                if near:
                    for k in band_keys[i].tolist():
                        in_chunk.setdefault(k, ordinals[i])
        if near and kept:
            rows = band_keys[kept]
            self.lsh.add(rows, np.array([ordinals[i] for i in kept], dtype=np.int64))
            self.kept_bands.append(rows)
        return verdicts

    # ------------------------------------------------------------------ history across runs

    def load_history(self, folder: Path, own_run: str, signature: str) -> int:
        """Read what other runs kept (``<run>.npz`` files of this index); returns their count."""
        if not folder.is_dir():
            return 0
        exact, bands = [], []
        for path in sorted(folder.glob("*.npz")):
            if path.stem == own_run:
                continue  # a rerun of the same run must not dedup against its own earlier output
            with np.load(path) as data:
                if str(data["signature"]) != signature:
                    log.warning("curate: ignoring %s: made with other MinHash settings (%s, now %s)",
                                path, data["signature"], signature)
                    continue
                exact.append(data["exact"])
                bands.append(data["bands"])
        if exact:
            self.history_exact = np.unique(np.concatenate(exact))
        if bands and self.near:
            stacked = np.concatenate(bands)
            if len(stacked):
                self.lsh.add(stacked, np.full(len(stacked), HISTORY, dtype=np.int64))
        return sum(len(e) for e in exact)

    def save_history(self, folder: Path, run: str, signature: str) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        bands = np.concatenate(self.kept_bands) if self.kept_bands else np.empty((0, self.lsh.bands), np.uint64)
        path = folder / f"{run}.npz"
        tmp = folder / f".{run}.tmp.npz"
        np.savez(tmp, exact=np.array(self.kept_exact, dtype=np.uint64), bands=bands,
                 signature=np.array(signature))
        tmp.replace(path)
        return path


class Decontaminator:
    """Drops texts sharing a word n-gram (default 13, as in GPT-3's and others' decontamination)
    with an evaluation text; texts shorter than n words are compared whole (normalised: case,
    punctuation and digits folded)."""

    name = "decontaminate"

    def __init__(self, eval_texts: list[str], n: int = 13):
        self.n = n
        self.keys: set[int] = set()
        for text in eval_texts:
            self.keys.update(word_ngram_keys(text, n).tolist())

    def __call__(self, rec: dict) -> str | None:
        if self.keys and not self.keys.isdisjoint(word_ngram_keys(rec["text"], self.n).tolist()):
            return "decontaminated"
        return None
