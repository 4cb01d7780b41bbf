"""A language-model head for a checkpoint that has none, fitted before continued pretraining.

An encoder saved without its pretraining head (the packaged MiniLM is a sentence-transformer, saved
as a ``BertModel``) loads into ``AutoModelForMaskedLM`` with a head of random weights: the first
loss is about ln(vocabulary), and the few steps of a short continued pretraining go to fitting
that head while its random gradients flow into the encoder. So, when the checkpoint's missing keys
say the head is absent (never judged by the model's name):

- the decoder is tied to the input embeddings (which the checkpoint has): BERT-style models share
  them, and the embeddings already place the tokens;
- the output bias starts at the corpus's log unigram frequencies, so even the first prediction is
  the frequent tokens rather than a uniform guess;
- the other untrained parts (BERT: the transform's dense layer and LayerNorm) are fitted for
  ``head_warmup_steps`` steps with the encoder frozen, before the whole model trains.

Kept free of DeepSpeed: the rank program calls these on the plain model before the engine exists,
and the unit tests call them on a tiny local BERT.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator


def head_missing_keys(model, missing_keys) -> list[str]:
    """The missing keys outside the base model (``bert.``, ``roberta.``, ``transformer.``): the
    head's. A missing encoder weight is a broken checkpoint, not a missing head."""
    prefix = model.base_model_prefix + "."
    return sorted(k for k in missing_keys if not k.startswith(prefix))


def decoder_tied(model) -> bool:
    out, embeddings = model.get_output_embeddings(), model.get_input_embeddings()
    return out is not None and embeddings is not None and out.weight is embeddings.weight


def tie_decoder(model) -> bool:
    """Share the output embeddings with the input embeddings (and say so in the config, so that a
    saved and reloaded model ties them again). -> whether the decoder is now tied."""
    out, embeddings = model.get_output_embeddings(), model.get_input_embeddings()
    if out is None or embeddings is None or out.weight.shape != embeddings.weight.shape:
        return False
    if out.weight is not embeddings.weight:
        model.config.tie_word_embeddings = True
        model.tie_weights()
        if out.weight is not embeddings.weight:  # a model whose tying mapping does not cover it
            out.weight = embeddings.weight
    return True


def untrained_parameters(model, missing: list[str]) -> dict[str, Any]:
    """name -> parameter for the missing head weights that tying did not fill from a loaded one."""
    params = dict(model.named_parameters(remove_duplicate=False))
    loaded = {id(p) for name, p in params.items() if name not in missing}
    out: dict[str, Any] = {}
    for name in missing:
        p = params.get(name)
        if p is not None and id(p) not in loaded and all(p is not q for q in out.values()):
            out[name] = p
    return out


def output_bias(model):
    """The bias added to the decoder's logits (BERT: ``cls.predictions.bias``), or None."""
    out = model.get_output_embeddings()
    return getattr(out, "bias", None) if out is not None else None


def unigram_bias_(bias, blocks, special_ids, smoothing: float = 0.1, max_blocks: int = 20_000) -> None:
    """Set ``bias`` to the log frequency of each token in the packed blocks (special tokens, never
    prediction targets, get the smallest value), counted on at most ``max_blocks`` blocks spread
    over the corpus (a large corpus is memory-mapped: no need to read it all). In place."""
    import numpy as np
    import torch

    sample = np.asarray(blocks[:: max(1, len(blocks) // max_blocks)]).ravel()
    counts = np.bincount(sample, minlength=bias.numel())[: bias.numel()].astype(np.float64)
    counts[list(special_ids)] = 0
    logp = np.log((counts + smoothing) / (counts.sum() + smoothing * bias.numel()))
    with torch.no_grad():
        bias.copy_(torch.from_numpy(logp - logp.mean()).to(bias.dtype))


def init_head(model, missing_keys, blocks=None, special_ids=()) -> dict[str, Any]:
    """Initialise a head the checkpoint lacks: tie the decoder, set the bias from the corpus.
    -> the parameters still untrained (name -> parameter), for :func:`warm_up`; {} when the
    checkpoint had its head."""
    missing = head_missing_keys(model, missing_keys)
    if not missing:
        return {}
    tie_decoder(model)
    untrained = untrained_parameters(model, missing)
    bias = output_bias(model)
    if blocks is not None and bias is not None and any(p is bias for p in untrained.values()):
        unigram_bias_(bias, blocks, special_ids)
    return untrained


def head_loss(model, batch: dict, objective: str):
    """The LM loss of ``batch`` with the base model run without gradients (it is frozen): only the
    head's graph is built. BERT/RoBERTa-style heads (one module beside the base model) see only the
    masked positions, which is most of the saving; other models run whole."""
    import torch

    heads = [m for name, m in model.named_children() if name != model.base_model_prefix]
    if len(heads) != 1:
        return model(**batch).loss
    with torch.no_grad():
        hidden = model.base_model(
            input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask")
        ).last_hidden_state
    labels = batch["labels"]
    if objective == "clm":
        hidden, labels = hidden[:, :-1], labels[:, 1:]
    keep = labels != -100
    return torch.nn.functional.cross_entropy(heads[0](hidden[keep]), labels[keep])


def warm_up(
    model,
    untrained: dict[str, Any],
    batches: Iterator[dict],
    steps: int,
    lr: float,
    objective: str,
    all_reduce: Callable[[Any], Any] | None = None,
    world: int = 1,
    log: Callable[[str], None] = lambda _msg: None,
    log_every: int = 0,
) -> list[list[float]]:
    """Fit the untrained head parameters for ``steps`` steps (AdamW, linear warm-up over the first
    tenth, then constant) with every other parameter frozen; restore ``requires_grad`` after.
    With ``world`` > 1 ranks, ``all_reduce`` sums a tensor over them in place: the ranks start
    from the same head and average their gradients, so they stay identical. -> [[step, loss]]
    (the loss averaged over the ranks)."""
    import torch

    if not untrained or steps <= 0:
        return []
    trainable = list(untrained.values())
    was = {id(p): p.requires_grad for p in model.parameters()}
    for p in model.parameters():
        p.requires_grad_(False)
    for p in trainable:
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(trainable, lr=lr, weight_decay=0.0)
    ramp = max(1, steps // 10)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / ramp))
    every = log_every or max(1, steps // 5)
    losses = []
    model.train()
    try:
        for step in range(1, steps + 1):
            loss = head_loss(model, next(batches), objective)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            value = loss.detach().float().reshape(1)
            if all_reduce is not None and world > 1:
                # One message per step: every gradient and the loss, summed over the ranks.
                flat = torch.cat([p.grad.reshape(-1) for p in trainable] + [value]).div_(world)
                all_reduce(flat)
                offset = 0
                for p in trainable:
                    p.grad.copy_(flat[offset : offset + p.numel()].view_as(p.grad))
                    offset += p.numel()
                value = flat[-1:]
            optimizer.step()
            scheduler.step()
            if step % every == 0 or step == 1 or step == steps:
                losses.append([step, float(value)])
                log(f"head warm-up step {step}/{steps} loss {float(value):.4f} (encoder frozen)")
    finally:
        for p in model.parameters():
            p.requires_grad_(was[id(p)])
    return losses
