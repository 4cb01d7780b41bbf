"""Corpus-level steps: exact and near-duplicate removal (with an index that outlives the run)
and eval-set decontamination.

Per-document work (hashing, MinHash signatures, n-gram look-ups) runs in the worker processes;
the decisions that depend on what came before run here, in input order, so the first document
of a cluster is the one kept whatever the number of workers.
"""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path

import numpy as np

from lmchain.curate.minhash import LshIndex, word_ngram_keys
from lmchain.locking import file_lock

log = logging.getLogger(__name__)
HISTORY = -2  # owner of an exact duplicate of a text an earlier run kept (-1: no match)


class SignatureStore:
    """MinHash signatures of kept documents by owner id, in one growing array (doubling), so
    candidates can be verified: 4 bytes per hash function and kept document."""

    def __init__(self, width: int):
        self.data = np.empty((1024, width), dtype=np.uint32)
        self.row: dict[int, int] = {}

    def add(self, owners: list[int], sigs: np.ndarray) -> None:
        need = len(self.row) + len(owners)
        if need > len(self.data):
            grown = np.empty((max(need, 2 * len(self.data)), self.data.shape[1]), dtype=np.uint32)
            grown[: len(self.row)] = self.data[: len(self.row)]
            self.data = grown
        start = len(self.row)
        self.data[start : start + len(owners)] = sigs
        for k, owner in enumerate(owners):
            self.row[owner] = start + k

    def agreement(self, owner: int, sig: np.ndarray) -> float:
        return float(np.count_nonzero(self.data[self.row[owner]] == sig)) / len(sig)


def history_owner(k: int) -> int:
    """Owner ids of documents kept by earlier runs: -3, -4, ... (-1 means no match)."""
    return -3 - k


class Deduper:
    """Exact (64-bit prefix of the normalised text's sha256) and MinHash-LSH near duplicates.

    A document sharing an LSH band with a kept one is a candidate; it is a near-duplicate when
    their signatures agree on at least ``threshold`` of the hash functions (the estimated
    Jaccard similarity), which removes most of the band's false positives. Only kept documents
    enter the index, so every dropped document is a near-duplicate of a kept one (no chains
    through dropped documents), and memory grows with the kept corpus: per kept document 8 bytes
    of exact key, 16 bytes per band and 4 bytes per hash function.
    """

    def __init__(self, exact: bool, near: bool, bands: int, width: int = 0, threshold: float = 0.0):
        self.exact, self.near = exact, near
        self.threshold = threshold
        self.exact_seen: dict[int, int] = {}
        self.history_exact = np.empty(0, dtype=np.uint64)
        self.lsh = LshIndex(bands)
        self.sigs = SignatureStore(width) if near and threshold > 0 else None
        self.kept_exact: list[int] = []
        self.kept_bands: list[np.ndarray] = []
        self.kept_sigs: list[np.ndarray] = []

    def _near_owner(self, candidates, sig) -> int | None:
        for owner in sorted(set(candidates)):
            if self.sigs is None or self.sigs.agreement(owner, sig) >= self.threshold:
                return owner
        return None

    def check(
        self, exact_keys: list[int], band_keys: np.ndarray | None, ordinals: list[int], sigs: np.ndarray | None = None
    ) -> list[tuple[str, int] | None]:
        """For each document of a chunk (in input order): None (new) or (reason, owner id of the
        kept document it duplicates: its ordinal, or a negative id for one an earlier run kept)."""
        n = len(ordinals)
        verdicts: list[tuple[str, int] | None] = [None] * n
        in_history = (
            np.isin(np.array(exact_keys, dtype=np.uint64), self.history_exact)
            if self.exact and len(self.history_exact)
            else np.zeros(n, bool)
        )
        # None: no near-duplicate check for this chunk (off, no band keys, or nothing to check)
        near_keys = band_keys if self.near and n > 0 else None
        earlier = self.lsh.lookup_all(near_keys) if near_keys is not None else None
        in_chunk: dict[int, list[int]] = {}  # band key -> owners kept earlier in this chunk
        kept = []
        for i in range(n):
            if self.exact and in_history[i]:
                verdicts[i] = ("exact_duplicate", HISTORY)
                continue
            if self.exact and exact_keys[i] in self.exact_seen:
                verdicts[i] = ("exact_duplicate", self.exact_seen[exact_keys[i]])
                continue
            if near_keys is not None and earlier is not None:
                row = near_keys[i].tolist()
                candidates = [o for o in earlier[i].tolist() if o != -1]
                candidates += [o for k in row for o in in_chunk.get(k, ())]
                owner = self._near_owner(candidates, sigs[i] if sigs is not None else None) if candidates else None
                if owner is not None:
                    verdicts[i] = ("near_duplicate", owner)
                    continue
            kept.append(i)
            self.exact_seen[exact_keys[i]] = ordinals[i]
            self.kept_exact.append(exact_keys[i])
            if near_keys is not None:
                if self.sigs is not None:
                    assert sigs is not None  # a deduper that keeps signatures is given each chunk's
                    self.sigs.add([ordinals[i]], sigs[i : i + 1])
                for k in row:
                    in_chunk.setdefault(k, []).append(ordinals[i])
        if near_keys is not None and kept:
            rows = near_keys[kept]
            self.lsh.add(rows, np.array([ordinals[i] for i in kept], dtype=np.int64))
            self.kept_bands.append(rows)
            if sigs is not None:
                self.kept_sigs.append(sigs[kept])
        return verdicts

    # ------------------------------------------------------------------ history across runs

    def load_history(self, folder: Path, own_run: str, signature: str) -> int:
        """Read what other runs kept (``<run>.npz`` files of this index); returns their count."""
        if not folder.is_dir():
            return 0
        exact, bands, sigs = [], [], []
        # Shared: runs read the index together; a run saving its file waits (and is waited for).
        with file_lock(folder, shared=True):
            for path in sorted(folder.glob("*.npz")):
                if path.stem == own_run or path.name.startswith("."):
                    continue  # own earlier output (a rerun), or another run's file being written
                with np.load(path) as data:
                    if str(data["signature"]) != signature:
                        log.warning(
                            "curate: ignoring %s: made with other MinHash settings (%s, now %s)",
                            path,
                            data["signature"],
                            signature,
                        )
                        continue
                    exact.append(data["exact"])
                    bands.append(data["bands"])
                    sigs.append(data["sigs"])
        if exact:
            self.history_exact = np.unique(np.concatenate(exact))
        if bands and self.near:
            stacked = np.concatenate(bands)
            owners = [history_owner(k) for k in range(len(stacked))]
            if len(stacked):
                self.lsh.add(stacked, np.array(owners, dtype=np.int64))
                if self.sigs is not None:
                    self.sigs.add(owners, np.concatenate(sigs))
        return sum(len(e) for e in exact)

    def save_history(self, folder: Path, run: str, signature: str) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        bands = np.concatenate(self.kept_bands) if self.kept_bands else np.empty((0, self.lsh.bands), np.uint64)
        width = self.sigs.data.shape[1] if self.sigs is not None else 0
        sigs = np.concatenate(self.kept_sigs) if self.kept_sigs else np.empty((len(bands), width), np.uint32)
        path = folder / f"{run}.npz"
        tmp = folder / f".{run}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp.npz"  # two attempts never share one
        with file_lock(folder):
            np.savez(
                tmp,
                exact=np.array(self.kept_exact, dtype=np.uint64),
                bands=bands,
                sigs=sigs,
                signature=np.array(signature),
            )
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
