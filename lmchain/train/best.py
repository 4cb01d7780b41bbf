"""Keep the best weights seen during training in memory and put them back at the end.

Only trainable parameters are copied (all of them in full fine-tuning, the adapters and the
head with LoRA), so a snapshot costs one model's worth of memory at most. Under ZeRO-3 the
parameters are partitioned across ranks: they are gathered for the copy and scattered back
on restore, which every rank must call together.
"""

from __future__ import annotations

from contextlib import nullcontext


class BestWeights:
    def __init__(self, module, zero3: bool, higher_is_better: bool = True):
        self.module, self.zero3, self.sign = module, zero3, 1 if higher_is_better else -1
        self.state: dict | None = None
        self.score: float | None = None
        self.step: int | None = None

    def _params(self, names=None):
        return [(n, p) for n, p in self.module.named_parameters() if (p.requires_grad if names is None else n in names)]

    def _gathered(self, params, modifier_rank=None):
        if not self.zero3:
            return nullcontext()
        import deepspeed

        return deepspeed.zero.GatheredParameters([p for _, p in params], modifier_rank=modifier_rank)

    def offer(self, score: float, step: int) -> bool:
        """Snapshot the weights if ``score`` beats the best so far; True when it did."""
        if self.score is not None and self.sign * score <= self.sign * self.score:
            return False
        params = self._params()
        with self._gathered(params):
            self.state = {n: p.detach().clone() for n, p in params}
        self.score, self.step = score, step
        return True

    def restore(self) -> None:
        if self.state is None:
            return
        import torch

        params = self._params(self.state)
        with self._gathered(params, modifier_rank=0), torch.no_grad():
            for n, p in params:
                p.copy_(self.state[n])
