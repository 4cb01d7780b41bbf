"""pretrain and finetune: the DeepSpeed jobs' settings, and the fine-tune hyperparameter search."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

from pydantic import field_validator

from lmchain.config.annotate import LabelSource
from lmchain.config.base import Section, doc, model_validator, problems


class TrainCommon(Section):
    ranks: int = doc("DeepSpeed processes (GPUs, or CPU ranks where there is no GPU).", 1, ge=1)
    zero_stage: Literal[0, 1, 2, 3] = doc("DeepSpeed ZeRO stage (0-3).", 0)
    batch_size: int = doc("Micro-batch size per rank.", 16, ge=1)
    learning_rate: float = doc("Peak learning rate (AdamW).", 5e-5, gt=0)
    max_length: int = doc("Truncate texts to this many tokens.", 64, ge=8, le=512)
    max_steps: int = doc("Stop after this many optimizer steps (0: run the epochs).", 0)
    epochs: float = doc("Passes over the data when max_steps is 0.", 1.0)
    warmup_ratio: float = doc("Share of steps with linear learning-rate warm-up.", 0.06)
    lr_schedule: Literal["linear", "cosine"] = doc(
        "Decay after warm-up: 'linear' or 'cosine' (both reach zero at the last step).", "linear"
    )
    weight_decay: float = doc("AdamW weight decay (not applied to biases and LayerNorm).", 0.01, ge=0)
    group_by_length: bool = doc(
        "Batch texts of similar length together (in random order) and pad each batch "
        "only to its longest text: far less padding on short texts.",
        True,
    )
    threads: int = doc(
        "Torch threads per CPU rank (0: the machine's cores divided among the ranks).", 0, ge=0, hint="(0: automatic)"
    )
    precision: Literal["fp32", "bf16"] = doc(
        "CPU ranks: 'fp32', or 'bf16' to autocast matmuls to bfloat16 (needs AVX512-BF16 or AMX to pay off). GPU "
        "ranks always train in bf16.",
        "fp32",
    )
    seed: int = doc("Random seed.", 42)
    timeout_s: int = doc("Kill the training job after this many seconds.", 3600)
    hostfile: str = doc(
        "DeepSpeed hostfile (`host slots=N` per line) for a job over several machines, reached "
        "by passwordless ssh; ranks is then the processes per machine. Empty: this machine.",
        "",
    )
    num_nodes: int = doc(
        "With a hostfile: use only the first this many machines (0: all of them).",
        0,
        ge=0,
        hint="(0: every machine of the hostfile)",
    )

    @field_validator("hostfile")
    @classmethod
    def _hostfile_exists(cls, hostfile: str) -> str:
        if hostfile and not Path(hostfile).expanduser().is_file():
            raise ValueError(f"{hostfile} does not exist; write one `host slots=N` line per machine, or leave it empty")
        return hostfile

    @model_validator(mode="after")
    def _some_training(self) -> Any:
        return problems(
            self, [("epochs", "set epochs > 0 or max_steps > 0")] if not (self.max_steps > 0 or self.epochs > 0) else []
        )


HEAD_WARMUP_STEPS = 40
FINETUNE_MAX_EPOCHS = 10.0


class PretrainConfig(TrainCommon):
    KEY = "pretrain"
    enabled: bool = doc("Run pretraining; when false the stage passes base_model through.", True)
    base_model: str = doc(
        "Continue from 'minilm' (packaged MiniLM-L6), a model folder (e.g. an earlier pretrain "
        "output) or a hub id; or train a named size from scratch (configs/models/sizes.yaml: "
        "tiny-bert, tiny-gpt2, bert-mini, bert-small, bert-medium, bert-base, gpt2-small, "
        "gpt2-medium).",
        "minilm",
    )
    objective: Literal["auto", "mlm", "clm"] = doc(
        "'mlm' (masked LM, BERT-style), 'clm' (causal LM, GPT-2-style) or 'auto' (by the model's family).", "auto"
    )
    tokenizer: Literal["auto", "base", "train"] = doc(
        "'auto': the base model's tokenizer when continuing from weights, a new one trained on the corpus for a "
        "named size; 'base': always the base model's; 'train': always train one (WordPiece for MLM, byte-level "
        "BPE for CLM; cached by corpus hash and reused).",
        "auto",
    )
    tokenizer_vocab_size: int = doc(
        "Vocabulary size of a trained tokenizer (a small corpus may give fewer).", 8000, ge=100
    )
    tokenizer_lowercase: bool = doc("Lower-case text in a trained tokenizer (an uncased model).", True)
    block_size: int = doc(
        "Tokens per training block: texts are concatenated (with a separator) and cut into "
        "blocks of this length, so no compute goes to padding.",
        128,
        ge=8,
        le=4096,
    )
    gradient_accumulation: int = doc("Micro-batches per optimizer step (per rank).", 1, ge=1)
    gradient_clipping: float = doc("Clip the global gradient norm to this (0: off).", 1.0, ge=0, hint="(0: off)")
    mlm_probability: float = doc("MLM: share of tokens chosen as prediction targets.", 0.15, gt=0, lt=1)
    mask_token_prob: float = doc("MLM: share of the targets replaced by [MASK] (BERT: 0.8).", 0.8, ge=0)
    random_token_prob: float = doc(
        "MLM: share of the targets replaced by a random token (BERT: 0.1); the rest stay as they are.", 0.1, ge=0
    )
    checkpoint_every: int = doc(
        "Save a resumable checkpoint (weights, optimizer, schedule, data position) every "
        "this many steps, and at the end; a retried job resumes from the latest.",
        50,
        ge=0,
        hint="(0: only at the end)",
    )
    keep_checkpoints: int = doc("Checkpoints kept on disk (the newest).", 1, ge=1)
    peak_tflops: float = doc(
        "Peak TFLOP/s of one device for the MFU estimate; 0: the GPU's dense bf16 peak from "
        "a table (no MFU on CPU ranks unless set).",
        0.0,
        ge=0,
    )
    max_texts: int | None = doc("Pretrain on at most this many corpus texts (None: all).", None)
    head_warmup_steps: int = doc(
        "When the base checkpoint has no LM head (e.g. the packaged MiniLM, a sentence-transformer): steps that fit "
        "the new head (decoder tied to the embeddings, bias from the corpus) with the encoder frozen, before "
        "continued pretraining. Cheap: only the head trains, on the masked positions.",
        HEAD_WARMUP_STEPS,
        ge=0,
        hint="(0: no warm-up)",
    )
    head_warmup_learning_rate: float = doc("Learning rate of the head warm-up (AdamW).", 1e-2, gt=0)
    allow_worse_perplexity: bool = doc(
        "Publish a model whose held-out perplexity is worse after pretraining than before it (experiments); "
        "by default the stage fails.",
        False,
    )

    @model_validator(mode="after")
    def _mask_shares(self) -> Any:
        return problems(
            self,
            [("random_token_prob", "mask_token_prob and random_token_prob must be >= 0 and sum to at most 1")]
            if self.mask_token_prob + self.random_token_prob > 1
            else [],
        )


SEARCHABLE_EXCLUDED = ("search", "report_on")


class SearchConfig(Section):
    """Hyperparameter search of the fine-tune stage: one trial per setting, best on validation."""

    KEY = "finetune.search"
    method: Literal["off", "grid", "random"] = doc(
        "'off' (one run with the recipe's settings), 'grid' (every combination of `space`) or 'random' (`trials` "
        "combinations drawn from `space`). In Airflow each trial is a mapped task (dynamic task mapping); the "
        "best validation macro-F1 wins.",
        "off",
    )
    space: dict = doc(
        "Fine-tune setting -> candidate values, e.g. {learning_rate: [5.0e-5, 1.0e-4], epochs: [1, 2]}.", factory=dict
    )
    trials: int = doc("Trials of a random search (a grid runs every combination).", 4, ge=1)
    max_trials: int = doc("Refuse a search with more trials than this (a guard against a huge grid).", 32, ge=1)
    seed: int = doc("Seed of the random search's draws.", 0)

    @model_validator(mode="after")
    def _space(self) -> Any:
        if self.method == "off":
            return self
        if not self.space:
            return problems(self, [("space", "give at least one setting with candidate values")])
        return problems(
            self,
            [
                (f"space.{key}", "must be a non-empty list of candidate values")
                for key, values in self.space.items()
                if not (isinstance(values, list) and values)
            ],
        )


class FinetuneConfig(TrainCommon):
    KEY = "finetune"
    base_model: str = doc(
        "'pretrain' (this run's pretrain output), 'minilm', 'tiny-bert', a path or a hub id.", "pretrain"
    )
    # A new task's recipe rarely knows how many passes its data needs: a few hundred examples want
    # ten or more, ten thousand two or three. So by default epochs is an upper bound and validation
    # chooses: scored once per epoch (eval_every 0), stopped after `patience` (3) epochs without a
    # better macro-F1, the best epoch's weights kept. The manifest says which epoch won and why
    # training stopped (best_epoch, stop_reason).
    epochs: float = doc(
        "Passes over the data when max_steps is 0. With a validation split and patience > 0 an upper "
        "bound: training stops when validation stops improving and keeps the best weights. Without a "
        "validation split every pass runs.",
        FINETUNE_MAX_EPOCHS,
    )
    method: Literal["full", "lora"] = doc(
        "'full' (train every weight) or 'lora' (low-rank adapters and the head; merged on save).", "full"
    )
    lora_r: int = doc("LoRA rank.", 8, ge=1)
    lora_alpha: int = doc("LoRA scaling numerator (the update is scaled by alpha / r).", 16)
    lora_dropout: float = doc("Dropout on the LoRA branch.", 0.1)
    lora_targets: list[str] = doc(
        "Names of the linear layers that get adapters.",
        factory=lambda: ["query", "key", "value", "dense"],
        min_length=1,
        hint="name at least one linear layer, e.g. [query, value]",
    )
    dropout: float | None = doc(
        "Override the model's hidden/attention/classifier dropout (None: keep it).", None, ge=0, lt=1, hint="or null"
    )
    class_weights: Literal["none", "balanced"] = doc(
        "'none', or 'balanced' to weigh the loss by inverse class frequency.", "none"
    )
    layer_lr_decay: float = doc(
        "Layer-wise learning-rate decay: the top transformer block trains at learning_rate x this, each block "
        "below at one more factor, the embeddings lowest; the head at the full rate (1.0: off).",
        1.0,
        gt=0,
        le=1,
    )
    ema_decay: float = doc(
        "Validate and save an exponential moving average of the weights with this decay, e.g. 0.999 "
        "(0: off; ZeRO-3 not supported).",
        0.0,
        ge=0,
        lt=1,
    )
    word_dropout: float = doc("Augmentation: drop each training token with this probability (0: off).", 0.0, ge=0, lt=1)
    eval_every: int = doc("Score the validation split every this many steps (0: once per epoch).", 0, ge=0)
    eval_batch_size: int = doc("Batch size when scoring validation texts (no gradients: can be large).", 128, ge=1)
    patience: int = doc(
        "Stop after this many validation scores without a better macro-F1 (0: never). The "
        "weights with the best validation macro-F1 are the ones saved.",
        3,
        ge=0,
    )
    report_on: LabelSource | None = doc(
        "An extra labelled file scored with the saved model, e.g. "
        "${SST2}/dev.tsv; its accuracy goes to the manifest and MLflow.",
        None,
    )
    search: SearchConfig = doc("Hyperparameter search (off by default).", factory=SearchConfig)

    @model_validator(mode="after")
    def _searchable(self) -> Any:
        searchable = sorted(set(type(self).model_fields) - set(SEARCHABLE_EXCLUDED))

        def unknown(key: str) -> str:
            close = difflib.get_close_matches(str(key), searchable, n=1)
            return (
                f"not a fine-tune setting; {f'did you mean {close[0]!r}? ' if close else ''}choose from "
                f"{', '.join(searchable)}"
            )

        return problems(
            self, [(f"search.space.{key}", unknown(key)) for key in self.search.space if key not in searchable]
        )
