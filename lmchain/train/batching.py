"""Batches for CPU-fast training: length-grouped order and dynamic padding.

Padding every batch of randomly ordered texts to its longest text wastes most of the compute
on short-text data (an SST-2 batch of 32 is padded to about 3x its mean length). Grouping texts
of similar length into the same batch, then padding each batch only to its own longest text,
removes that waste while batches still arrive in random order. Pure Python: testable without
torch.
"""

from __future__ import annotations

import random


def length_grouped_batches(
    lengths: list[int], batch_size: int, seed: int, group_batches: int = 64, drop_last: bool = True
) -> list[list[int]]:
    """Indices of each batch for one epoch.

    Shuffle, cut into pools of ``group_batches`` batches, sort each pool by length, slice it
    into batches and shuffle the batches. Pools keep some randomness in which texts meet;
    ``group_batches=1`` gives plain random batches.
    """
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    pool = batch_size * max(1, group_batches)
    batches: list[list[int]] = []
    for start in range(0, len(order), pool):
        chunk = sorted(order[start : start + pool], key=lambda i: lengths[i])
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    if drop_last:
        batches = [b for b in batches if len(b) == batch_size]
    rng.shuffle(batches)
    return batches


def sorted_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Evaluation batches: by length, so each batch pads as little as possible."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def padded_tokens(batches: list[list[int]], lengths: list[int]) -> int:
    """Token slots a run of these batches computes, padding included (for the bench's log)."""
    return sum(len(b) * max(lengths[i] for i in b) for b in batches if b)


def word_dropout(ids: list[int], rate: float, special: set[int], rng: random.Random) -> list[int]:
    """Drop each non-special token with probability ``rate``: a cheap augmentation that makes
    the classifier rely on more than one cue word. Never returns fewer than the special tokens."""
    if rate <= 0:
        return ids
    return [t for t in ids if t in special or rng.random() >= rate]
