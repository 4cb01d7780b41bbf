"""Training: model references, the DeepSpeed launcher, the rank worker and the two stages."""
