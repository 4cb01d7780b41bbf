"""MinHash signatures of word n-gram sets, and their LSH band keys, vectorised with numpy.

A document becomes the set of its word n-grams (lower-cased, punctuation removed, digits
folded to 0, as datatrove simplifies text before shingling). Each n-gram is hashed to 32 bits;
``bands * rows`` universal hash functions ``(a*h + b) mod (2^61 - 1)``, truncated to 32 bits
(datasketch's scheme), give the signature: per function, the minimum over the n-grams. Two
documents agree on one signature value with probability equal to their Jaccard similarity, on
a whole band of ``rows`` values with J^rows, and share at least one of ``bands`` band keys with
1 - (1 - J^rows)^bands: the S-curve that makes them candidates.

Speed: the n-gram hashes of many documents go through the hash functions as one matrix and
``np.minimum.reduceat`` takes the per-document minima, in slices that bound the matrix size.
"""

from __future__ import annotations

import zlib

import numpy as np

from lmchain.text import shingle_words

MERSENNE = np.uint64((1 << 61) - 1)
MAX_HASH = np.uint64(0xFFFFFFFF)
_MULT = np.uint64(0x9E3779B97F4A7C15)
_MIX = np.uint64(0xBF58476D1CE4E5B9)
_MATRIX_CELLS = 1 << 22  # n-grams x hash functions per slice: ~32 MiB of uint64


_word_hash: dict[str, int] = {}


def word_ids(text: str) -> np.ndarray:
    """crc32 of each simplified word (deterministic across processes, unlike ``hash``)."""
    if len(_word_hash) > 500_000:
        _word_hash.clear()  # bounded memory on corpora with endless unique tokens
    ids = []
    for w in shingle_words(text):
        h = _word_hash.get(w)
        if h is None:
            h = _word_hash[w] = zlib.crc32(w.encode("utf-8"))
        ids.append(h)
    return np.array(ids, dtype=np.uint64)


def word_ngram_keys(text: str, n: int) -> np.ndarray:
    """Distinct 64-bit keys of the word n-grams; a text shorter than n words is one n-gram."""
    words = word_ids(text)
    if len(words) == 0:
        return np.empty(0, dtype=np.uint64)
    n = min(n, len(words))
    keys = words[: len(words) - n + 1].copy()
    for k in range(1, n):
        keys = keys * _MULT + words[k : len(words) - n + 1 + k]
    keys = (keys ^ (keys >> np.uint64(31))) * _MIX
    return np.unique(keys ^ (keys >> np.uint64(29)))


class MinHasher:
    def __init__(self, ngram: int = 5, bands: int = 16, rows: int = 8, seed: int = 1):
        self.ngram, self.bands, self.rows = ngram, bands, rows
        rng = np.random.RandomState(seed)
        n = bands * rows
        # a < 2^31 and h < 2^32 keep a*h + b below 2^64: no overflow before the modulo.
        self.a = rng.randint(1, 1 << 31, size=n, dtype=np.uint64)
        self.b = rng.randint(0, 1 << 31, size=n, dtype=np.uint64)

    def shingles(self, text: str) -> np.ndarray:
        """32-bit hashes of the distinct word n-grams (an empty text: one fixed shingle)."""
        keys = word_ngram_keys(text, self.ngram)
        if len(keys) == 0:
            return np.zeros(1, dtype=np.uint64)
        return np.unique((keys >> np.uint64(32)) ^ (keys & MAX_HASH))

    def signatures(self, texts: list[str]) -> np.ndarray:
        """(len(texts), bands*rows) uint32 MinHash signatures."""
        sets = [self.shingles(t) for t in texts]
        out = np.empty((len(texts), len(self.a)), dtype=np.uint32)
        per_slice = max(1, _MATRIX_CELLS // len(self.a))
        start = 0
        while start < len(sets):
            stop, cells = start, 0
            while stop < len(sets) and (stop == start or cells + len(sets[stop]) <= per_slice):
                cells += len(sets[stop])
                stop += 1
            flat = np.concatenate(sets[start:stop])
            values = (flat[:, None] * self.a + self.b) % MERSENNE & MAX_HASH
            offsets = np.cumsum([0] + [len(s) for s in sets[start : stop - 1]])
            out[start:stop] = np.minimum.reduceat(values, offsets, axis=0)
            start = stop
        return out

    def band_keys(self, sigs: np.ndarray) -> np.ndarray:
        """(n, bands) uint64: one key per band, equal exactly when the band's rows are equal
        (up to 64-bit hash collisions)."""
        x = sigs.astype(np.uint64).reshape(len(sigs), self.bands, self.rows)
        keys = np.zeros((len(sigs), self.bands), dtype=np.uint64)
        for r in range(self.rows):
            keys = (keys + x[:, :, r]) * _MULT
        return keys ^ (np.arange(self.bands, dtype=np.uint64) * _MIX)  # band j never matches band k

    def keys(self, texts: list[str]) -> np.ndarray:
        return self.band_keys(self.signatures(texts))


def candidate_probability(jaccard: float, bands: int, rows: int) -> float:
    """P(two documents with this Jaccard similarity share a band)."""
    return 1.0 - (1.0 - jaccard**rows) ** bands


class LshIndex:
    """Band keys of the documents kept so far, as sorted numpy segments (log-structured merge),
    so memory is 16 bytes per kept document and band and lookups are vectorised."""

    def __init__(self, bands: int):
        self.bands = bands
        self._segments: list[tuple[np.ndarray, np.ndarray]] = []  # (sorted keys, owner) over all bands

    def __len__(self) -> int:
        return sum(len(k) for k, _ in self._segments) // max(self.bands, 1)

    def add(self, keys: np.ndarray, owners: np.ndarray) -> None:
        """keys: (n, bands); owners: (n,) int64 ids (ordinals) of the documents."""
        if len(keys) == 0:
            return
        flat = keys.reshape(-1)
        own = np.repeat(owners.astype(np.int64), keys.shape[1])
        order = np.argsort(flat, kind="stable")
        self._segments.append((flat[order], own[order]))
        while len(self._segments) > 1 and len(self._segments[-1][0]) * 2 >= len(self._segments[-2][0]):
            (k2, o2), (k1, o1) = self._segments.pop(), self._segments.pop()
            k, o = np.concatenate([k1, k2]), np.concatenate([o1, o2])
            order = np.argsort(k, kind="stable")
            self._segments.append((k[order], o[order]))

    def lookup_all(self, keys: np.ndarray) -> np.ndarray:
        """(n, bands) owner of each band key (the smallest over segments), -1 where none."""
        flat = keys.reshape(-1)
        best = np.full(len(flat), np.iinfo(np.int64).max, dtype=np.int64)
        for seg_keys, seg_owners in self._segments:
            pos = np.minimum(np.searchsorted(seg_keys, flat), len(seg_keys) - 1)
            best = np.where(seg_keys[pos] == flat, np.minimum(best, seg_owners[pos]), best)
        return np.where(best == np.iinfo(np.int64).max, -1, best).reshape(keys.shape)
