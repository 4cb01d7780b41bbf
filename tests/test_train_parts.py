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


def test_layer_decay_scales_blocks_from_the_top_down_and_keeps_the_head_at_full_rate():
    from lmchain.train.optim import layer_scales

    names = [
        "bert.embeddings.word_embeddings.weight",
        "bert.encoder.layer.0.attention.self.query.weight",
        "bert.encoder.layer.5.output.dense.weight",
        "bert.pooler.dense.weight",
        "classifier.weight",
    ]
    s = layer_scales(names, 0.8)
    assert s["classifier.weight"] == s["bert.pooler.dense.weight"] == 1.0
    assert s["bert.encoder.layer.5.output.dense.weight"] == pytest.approx(0.8)
    assert s["bert.encoder.layer.0.attention.self.query.weight"] == pytest.approx(0.8**6)
    assert s["bert.embeddings.word_embeddings.weight"] == pytest.approx(0.8**7)
    assert layer_scales(names, 1.0) == dict.fromkeys(names, 1.0)


def test_decay_groups_with_layer_decay_cover_every_trainable_parameter_once_at_its_rate():
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from lmchain.train.optim import decay_groups

    model = BertForSequenceClassification(
        BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=32)
    )
    groups = decay_groups(model.named_parameters(), 0.01, layer_decay=0.5, lr=1e-3)
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters()) and len(ids) == len(set(ids))
    rates = {g["lr"] for g in groups}
    assert max(rates) == pytest.approx(1e-3) and min(rates) == pytest.approx(1e-3 * 0.5**4)
    assert all(g["weight_decay"] == 0.0 for g in groups if any(p.dim() == 1 for p in g["params"]))
    torch.optim.AdamW(groups, lr=1e-3)  # the groups are a valid optimizer spec


def test_weight_average_tracks_the_weights_and_swaps_back():
    import torch

    from lmchain.train.average import WeightAverage

    layer = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        layer.weight.fill_(0.0)
    avg = WeightAverage(layer, decay=0.5)
    with torch.no_grad():
        layer.weight.fill_(1.0)
    avg.update()  # decay min(0.5, 2/11): the average moves 9/11 of the way
    assert avg.shadow[0][0, 0].item() == pytest.approx(9 / 11)
    with avg.swapped_in():
        assert layer.weight[0, 0].item() == pytest.approx(9 / 11)
    assert layer.weight[0, 0].item() == 1.0
    avg.copy_to_model()
    assert layer.weight[0, 0].item() == pytest.approx(9 / 11)
