"""An exponential moving average of the weights while fine-tuning ("EMA" / Polyak averaging).

The average of the last few hundred steps' weights sits nearer the middle of the basin SGD
bounces around in than any one step's weights, and usually generalises better at no cost in
serving: the model saved is still one model of the same size. The average is what validation
scores (so early stopping and the best checkpoint are judged on it) and what is saved.

The decay ramps up from 0 ((1 + t) / (10 + t), capped at ``decay``) so that the first steps'
weights, still near the pretrained start, do not linger in the average.
"""

from __future__ import annotations

from contextlib import contextmanager


class WeightAverage:
    def __init__(self, module, decay: float):
        import torch

        self.decay = decay
        self.params = [p for p in module.parameters() if p.requires_grad]
        with torch.no_grad():
            self.shadow = [p.detach().clone() for p in self.params]
        self.updates = 0

    def update(self) -> None:
        import torch

        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        with torch.no_grad():
            torch._foreach_lerp_(self.shadow, [p.detach() for p in self.params], 1.0 - d)

    @contextmanager
    def swapped_in(self):
        """The model holds the average inside the block, its training weights again after it."""
        import torch

        with torch.no_grad():
            backup = [p.detach().clone() for p in self.params]
            for p, s in zip(self.params, self.shadow):
                p.copy_(s)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, b in zip(self.params, backup):
                    p.copy_(b)

    def copy_to_model(self) -> None:
        import torch

        with torch.no_grad():
            for p, s in zip(self.params, self.shadow):
                p.copy_(s)
