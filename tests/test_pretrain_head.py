"""An LM head for a checkpoint without one (issue 19): found from the checkpoint's missing keys,
decoder tied to the embeddings, fitted with the encoder frozen; and the stage's before/after
perplexity check. A tiny BERT built here, no DeepSpeed."""

import math
from types import SimpleNamespace

import numpy as np
import pytest

from lmchain.config import PretrainConfig
from lmchain.summary import held_out_line
from lmchain.train import head
from lmchain.train.pretrain import PretrainingRegressed, check_not_worse
from lmchain.train.pretrain_worker import build_model, mask_tokens

VOCAB, SPECIAL, MASK_ID = 300, [0, 1, 2, 3, 4], 4  # [PAD] [UNK] [CLS] [SEP] [MASK]


def _tiny_bert_config(**extra):
    from transformers import BertConfig

    return BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=64, max_position_embeddings=64, **extra)


def _encoder_only(tmp_path, **extra):
    """A checkpoint like the packaged MiniLM: a BertModel, saved without any LM head."""
    import torch
    from transformers import BertModel

    torch.manual_seed(0)
    BertModel(_tiny_bert_config(**extra)).save_pretrained(tmp_path / "encoder")
    return tmp_path / "encoder"


def _blocks(n=256, width=24, seed=0):
    """Packed blocks of a low-entropy language: each block repeats a 3-token phrase of 12 words."""
    rng = np.random.default_rng(seed)
    words = np.arange(10, 22)
    rows = []
    for _ in range(n):
        phrase = rng.choice(words, 3, replace=False)
        rows.append([2] + list(np.resize(phrase, width - 2)) + [3])
    return np.array(rows, dtype=np.int64)


def _batches(blocks, batch_size=32, seed=0):
    import torch

    job = SimpleNamespace(mlm_probability=0.15, mask_token_prob=0.8, random_token_prob=0.1)
    gen = torch.Generator().manual_seed(seed)
    special = torch.tensor(SPECIAL)
    while True:
        idx = torch.randint(len(blocks), (batch_size,), generator=gen)
        ids = torch.from_numpy(blocks[idx.numpy()])
        inputs, labels = mask_tokens(ids, torch.isin(ids, special), MASK_ID, VOCAB, job, gen)
        yield {"input_ids": inputs, "labels": labels, "attention_mask": torch.ones_like(ids)}


def _held_out(blocks):
    batches = _batches(blocks, seed=99)
    return [next(batches) for _ in range(4)]


def _loss(model, batches) -> float:
    import torch

    model.eval()
    with torch.no_grad():
        return float(np.mean([float(model(**b).loss) for b in batches]))


def _job(model_dir):
    return SimpleNamespace(model=str(model_dir), objective="mlm", config=None)


def test_a_checkpoint_without_a_head_gets_a_tied_decoder_and_a_fitted_head(tmp_path):
    import torch

    # Untied in the checkpoint's config: tying is the head's initialisation, not the config's.
    model, missing = build_model(_job(_encoder_only(tmp_path, tie_word_embeddings=False)), [None] * VOCAB)
    assert head.head_missing_keys(model, missing) == [k for k in missing if k.startswith("cls.")] != []
    assert not head.decoder_tied(model)
    blocks = _blocks()
    untrained = head.init_head(model, missing, blocks, SPECIAL)
    assert head.decoder_tied(model) and model.config.tie_word_embeddings
    # The decoder's weight is the loaded embedding: not among the untrained parameters.
    assert "cls.predictions.decoder.weight" not in untrained and "cls.predictions.transform.dense.weight" in untrained
    bias = head.output_bias(model)
    assert bias[10:22].min() > bias[100:].max()  # the corpus's words start ahead of unseen tokens

    encoder_before = {k: v.clone() for k, v in model.bert.state_dict().items()}
    held = _held_out(blocks)
    # The corpus bias alone puts the first loss at the language's unigram entropy (ln 12 here).
    assert _loss(model, held) < 0.5 * math.log(VOCAB)
    head.warm_up(model, untrained, _batches(blocks), steps=20, lr=3e-3, objective="mlm")
    # The encoder was frozen (the embeddings too: they are the decoder) and trains again afterwards.
    assert all(torch.equal(v, model.bert.state_dict()[k]) for k, v in encoder_before.items())
    assert all(p.requires_grad for p in model.parameters())

    # Saved and reloaded, the head is whole and still tied.
    model.save_pretrained(tmp_path / "initial")
    again, missing_again = build_model(_job(tmp_path / "initial"), [None] * VOCAB)
    assert head.head_missing_keys(again, missing_again) == [] and head.decoder_tied(again)


def test_the_warm_up_alone_takes_a_random_head_far_below_uniform(tmp_path):
    model, missing = build_model(_job(_encoder_only(tmp_path)), [None] * VOCAB)
    untrained = head.init_head(model, missing)  # no corpus: the bias stays at zero
    held = _held_out(_blocks())
    at_init = _loss(model, held)
    assert at_init > 0.9 * math.log(VOCAB)  # about uniform: what the MiniLM demo started from
    losses = head.warm_up(model, untrained, _batches(_blocks()), steps=100, lr=3e-2, objective="mlm")
    assert [losses[0][0], losses[-1][0]] == [1, 100]
    after = _loss(model, held)
    assert after < 0.5 * math.log(VOCAB), (at_init, after, losses)


def test_a_checkpoint_with_its_head_or_a_model_from_scratch_is_left_alone(tmp_path):
    from transformers import BertForMaskedLM

    BertForMaskedLM(_tiny_bert_config()).save_pretrained(tmp_path / "mlm")
    model, missing = build_model(_job(tmp_path / "mlm"), [None] * VOCAB)
    assert head.head_missing_keys(model, missing) == [] and head.init_head(model, missing, _blocks(), SPECIAL) == {}
    assert head.warm_up(model, {}, _batches(_blocks()), steps=10, lr=1e-3, objective="mlm") == []


def test_worse_held_out_perplexity_fails_the_stage_naming_both_figures():
    cfg = PretrainConfig()
    check_not_worse({"perplexity_before": 80.0, "perplexity": 40.0}, cfg)
    check_not_worse({"perplexity": 40.0}, cfg)  # no held-out texts before: nothing to compare
    with pytest.raises(PretrainingRegressed, match=r"40\.0 at step 0 .* -> 80\.0 after 12 steps") as failure:
        check_not_worse({"perplexity_before": 40.0, "perplexity": 80.0, "steps": 12}, cfg)
    assert not failure.value.retryable
    check_not_worse({"perplexity_before": 40.0, "perplexity": 80.0}, PretrainConfig(allow_worse_perplexity=True))


def test_the_summary_line_says_perplexity_and_accuracy_before_and_after():
    line = held_out_line({"perplexity_before": 3950.24, "perplexity": 412.71, "mlm_accuracy_before": 0.001,
                          "mlm_accuracy": 0.124})
    assert line == ", held-out perplexity 3950.2 -> 412.7, MLM accuracy 0.1% -> 12.4%"
    assert held_out_line({"perplexity": 1226.2}) == ", held-out perplexity 1226.2"
    assert held_out_line({}) == ""
