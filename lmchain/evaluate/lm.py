"""Language-model metrics of a pretrain output: masked-LM loss, perplexity and accuracy."""

from __future__ import annotations

import math


def mlm_metrics(
    model_dir,
    texts: list[str],
    mlm_probability: float = 0.15,
    max_length: int = 64,
    batch_size: int = 32,
    seed: int = 0,
) -> dict[str, float]:
    """Mask held-out texts the way training does (with a fixed seed) and score the predictions."""
    import torch
    from transformers import AutoModelForMaskedLM, AutoTokenizer, DataCollatorForLanguageModeling

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForMaskedLM.from_pretrained(str(model_dir)).eval()
    collate = DataCollatorForLanguageModeling(tokenizer, mlm_probability=mlm_probability)
    torch.manual_seed(seed)
    loss_sum, tokens, correct = 0.0, 0, 0
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            enc = tokenizer(texts[start : start + batch_size], truncation=True, max_length=max_length)
            batch = collate([{"input_ids": ids} for ids in enc["input_ids"]])
            logits = model(
                input_ids=batch["input_ids"], attention_mask=(batch["input_ids"] != tokenizer.pad_token_id).long()
            ).logits
            mask = batch["labels"] != -100
            n = int(mask.sum())
            if n == 0:
                continue
            loss_sum += float(torch.nn.functional.cross_entropy(logits[mask], batch["labels"][mask], reduction="sum"))
            correct += int((logits[mask].argmax(-1) == batch["labels"][mask]).sum())
            tokens += n
    if tokens == 0:
        return {"mlm_loss": float("nan"), "perplexity": float("nan"), "mlm_accuracy": float("nan"), "masked_tokens": 0}
    mean = loss_sum / tokens
    return {
        "mlm_loss": mean,
        "perplexity": math.exp(min(mean, 50.0)),
        "mlm_accuracy": correct / tokens,
        "masked_tokens": tokens,
    }


def clm_metrics(model_dir, texts: list[str], max_length: int = 64, batch_size: int = 32) -> dict[str, float]:
    """Causal-LM loss, perplexity and next-token accuracy of held-out texts (each text on its own)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir)).eval()
    eos = tokenizer.eos_token_id
    loss_sum, tokens, correct = 0.0, 0, 0
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            enc = tokenizer(
                texts[start : start + batch_size], add_special_tokens=False, truncation=True, max_length=max_length - 1
            )
            # Each text starts after an end-of-text token, as texts do inside the packed training stream.
            seqs = [[eos] + ids for ids in enc["input_ids"] if ids]
            if not seqs:
                continue
            width = max(map(len, seqs))
            ids = torch.full((len(seqs), width), eos)
            mask = torch.zeros((len(seqs), width), dtype=torch.long)
            for i, s in enumerate(seqs):
                ids[i, : len(s)], mask[i, : len(s)] = torch.tensor(s), 1
            logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
            target, valid = ids[:, 1:], mask[:, 1:].bool()
            loss_sum += float(torch.nn.functional.cross_entropy(logits[valid], target[valid], reduction="sum"))
            correct += int((logits[valid].argmax(-1) == target[valid]).sum())
            tokens += int(valid.sum())
    if tokens == 0:
        return {
            "lm_loss": float("nan"),
            "perplexity": float("nan"),
            "next_token_accuracy": float("nan"),
            "predicted_tokens": 0,
        }
    mean = loss_sum / tokens
    return {
        "lm_loss": mean,
        "perplexity": math.exp(min(mean, 50.0)),
        "next_token_accuracy": correct / tokens,
        "predicted_tokens": tokens,
    }
