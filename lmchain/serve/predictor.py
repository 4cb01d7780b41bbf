"""Batched text classification with a fine-tuned model folder.

Used by the evaluate stage and by the service, so that what was measured is what is served.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class Predictor:
    def __init__(self, model_dir: str | Path, max_length: int = 128, batch_size: int = 64,
                 tokenizer_dir: str | Path | None = None):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self._torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir or model_dir))
        self.model = AutoModelForSequenceClassification.from_pretrained(str(model_dir)).eval()
        self.max_length = max_length
        self.batch_size = batch_size
        id2label = self.model.config.id2label
        self.labels = [id2label[i] for i in range(len(id2label))]

    def predict(self, texts: list[str]) -> list[dict[str, Any]]:
        """One {label, label_id, scores} per text, in input order."""
        torch = self._torch
        # Sorting by length keeps padding (wasted compute) small inside each batch.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        results: list[dict[str, Any]] = [{}] * len(texts)
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                idx = order[start:start + self.batch_size]
                enc = self.tokenizer([texts[i] for i in idx], truncation=True, max_length=self.max_length,
                                     padding=True, return_tensors="pt")
                probs = torch.softmax(self.model(**enc).logits.float(), dim=-1)
                for i, row in zip(idx, probs.tolist()):
                    best = max(range(len(row)), key=row.__getitem__)
                    results[i] = {"label": self.labels[best], "label_id": best,
                                  "scores": {name: round(p, 6) for name, p in zip(self.labels, row)}}
        return results
