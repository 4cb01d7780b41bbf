"""Batched text classification with a fine-tuned model folder.

Used by the evaluate stage, the deploy stage and the service, so that what was measured is what
is served. :class:`Predictor` runs the transformers model in PyTorch (fp32); the ONNX Runtime
variants in :mod:`lmchain.serve.variants` share the batching and the output format through
:class:`BasePredictor`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


class BasePredictor:
    """Tokenise in length-sorted batches, get logits from the subclass, return softmax scores."""

    variant = "base"

    def __init__(self, tokenizer_dir: str | Path, labels: list[str], max_length: int, batch_size: int):
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
        self.labels = labels
        self.max_length = max_length
        self.batch_size = batch_size

    def _logits(self, texts: list[str]) -> np.ndarray:
        raise NotImplementedError

    def predict(self, texts: list[str]) -> list[dict[str, Any]]:
        """One {label, label_id, scores} per text, in input order."""
        # Sorting by length keeps padding (wasted compute) small inside each batch.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        results: list[dict[str, Any]] = [{}] * len(texts)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            logits = self._logits([texts[i] for i in idx]).astype(np.float64)
            logits -= logits.max(axis=1, keepdims=True)
            probs = np.exp(logits)
            probs /= probs.sum(axis=1, keepdims=True)
            for i, row in zip(idx, probs.tolist()):
                best = max(range(len(row)), key=row.__getitem__)
                results[i] = {
                    "label": self.labels[best],
                    "label_id": best,
                    "scores": {name: round(p, 6) for name, p in zip(self.labels, row)},
                }
        return results


def labels_of(config) -> list[str]:
    return [config.id2label[i] for i in range(len(config.id2label))]


class Predictor(BasePredictor):
    """The fine-tuned transformers model in PyTorch, fp32 (the reference variant)."""

    variant = "fp32"

    def __init__(
        self,
        model_dir: str | Path,
        max_length: int = 128,
        batch_size: int = 64,
        tokenizer_dir: str | Path | None = None,
    ):
        import torch
        from transformers import AutoModelForSequenceClassification

        self._torch = torch
        self.model = AutoModelForSequenceClassification.from_pretrained(str(model_dir)).eval()
        super().__init__(tokenizer_dir or model_dir, labels_of(self.model.config), max_length, batch_size)

    def _logits(self, texts: list[str]) -> np.ndarray:
        enc = self.tokenizer(texts, truncation=True, max_length=self.max_length, padding=True, return_tensors="pt")
        with self._torch.inference_mode():
            return self.model(**enc).logits.float().numpy()
