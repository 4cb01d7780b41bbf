"""LoRA adapters (peft) for sequence classification: a few hundred thousand trained weights
instead of the whole encoder. The saved model has the adapters merged back into the encoder,
so evaluation and serving load a plain Hugging Face folder and pay no adapter overhead."""

from __future__ import annotations


def wrap(model, r: int, alpha: int, dropout: float, targets: list[str]):
    from peft import LoraConfig, TaskType, get_peft_model

    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    missing = [t for t in targets if t not in names]
    if missing:
        raise ValueError(
            f"finetune.lora_targets {missing} name no module of this model; "
            f"linear layers here include: {sorted(n for n in names if n in _LINEAR_HINTS)}"
        )
    # The classification head starts from random weights: it must be trained in full.
    head = [n for n in ("classifier", "score", "pooler") if n in names]
    config = LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=list(targets),
        modules_to_save=head,
    )
    return get_peft_model(model, config)


_LINEAR_HINTS = {
    "query",
    "key",
    "value",
    "dense",
    "q_lin",
    "k_lin",
    "v_lin",
    "out_lin",
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "lin1",
    "lin2",
    "fc1",
    "fc2",
}


def merged(model):
    """The plain model with the adapters folded into its weights (peft models only)."""
    return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model
