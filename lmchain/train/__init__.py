"""Training: model references, the DeepSpeed launcher, the rank workers, and the pieces of the
``pretrain`` and ``finetune`` stages (which are in :mod:`lmchain.stages`)."""
