"""The pure pieces of fine-tuning: batch order, learning-rate schedule, class weights, F1."""

import random

import pytest

from lmchain.train.batching import length_grouped_batches, padded_tokens, sorted_batches, word_dropout
from lmchain.train.optim import accuracy, balanced_class_weights, lr_factor, macro_f1


def test_length_grouped_batches_cover_each_text_once_and_pad_less_than_random():
    rng = random.Random(0)
    lengths = [rng.randint(3, 60) for _ in range(1000)]
    grouped = length_grouped_batches(lengths, 32, seed=1, group_batches=16, drop_last=False)
    plain = length_grouped_batches(lengths, 32, seed=1, group_batches=1, drop_last=False)
    assert sorted(i for b in grouped for i in b) == list(range(1000))
    assert sorted(i for b in plain for i in b) == list(range(1000))
    assert padded_tokens(grouped, lengths) < 0.7 * padded_tokens(plain, lengths)
    # Batches come in random order, not shortest first.
    maxima = [max(lengths[i] for i in b) for b in grouped]
    assert maxima != sorted(maxima)


def test_drop_last_keeps_only_full_batches_and_epochs_differ():
    lengths = list(range(100))
    epoch0 = length_grouped_batches(lengths, 8, seed=0, group_batches=4)
    assert all(len(b) == 8 for b in epoch0) and len(epoch0) == len(length_grouped_batches(lengths, 8, seed=5,
                                                                                           group_batches=4))
    assert epoch0 != length_grouped_batches(lengths, 8, seed=5, group_batches=4)


def test_sorted_batches_are_by_length():
    batches = sorted_batches([5, 1, 3, 2], 2)
    assert batches == [[1, 3], [2, 0]]


def test_word_dropout_keeps_special_tokens():
    ids = [101] + list(range(1000, 1100)) + [102]
    out = word_dropout(ids, 0.5, {101, 102}, random.Random(0))
    assert out[0] == 101 and out[-1] == 102 and 20 < len(out) - 2 < 80
    assert word_dropout(ids, 0.0, {101, 102}, random.Random(0)) == ids


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_schedule_warms_up_then_decays_to_zero(kind):
    factors = [lr_factor(s, 100, 10, kind) for s in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[9:], factors[10:]))
    assert factors[-1] < 0.02 and lr_factor(100, 100, 10, kind) == pytest.approx(0.0)
    assert lr_factor(55, 100, 10, "cosine") == pytest.approx(0.5)
    assert lr_factor(55, 100, 10, "linear") == pytest.approx(0.5)


def test_balanced_class_weights_favour_the_rare_class():
    weights = balanced_class_weights([0] * 90 + [1] * 10, 3)
    assert weights[0] == pytest.approx(100 / 270) and weights[1] == pytest.approx(100 / 30)
    assert weights[2] == 1.0


def test_macro_f1_and_accuracy():
    confusion = [[8, 2], [0, 0]]  # class 1 never true, predicted twice
    assert accuracy(confusion) == pytest.approx(0.8)
    assert macro_f1(confusion) == pytest.approx((2 * 8 / (8 + 10) + 0.0) / 2)
    assert macro_f1([[5, 0], [0, 5]]) == 1.0
