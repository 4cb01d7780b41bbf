"""Throughput figures: training FLOPs per token and model FLOPs utilisation (MFU).

MFU = achieved model FLOPs / peak FLOPs, with the model FLOPs of a transformer training step
counted as in the PaLM paper (Chowdhery et al., 2022, appendix B): 6 N per token for the
weights (forward + backward) plus 12 L H T for attention scores, where N excludes embeddings.
Recomputation is not counted, so MFU does not reward it. Peaks are dense bf16 tensor-core
figures (no sparsity) from the vendors' data sheets.
"""

from __future__ import annotations

# Dense bf16 TFLOP/s per device, by a substring of torch.cuda.get_device_name(). Longest match wins.
GPU_PEAK_TFLOPS = {
    "H200": 989.0,
    "H100": 989.0,
    "H100 NVL": 835.0,
    "H100 PCIe": 756.0,
    "GH200": 989.0,  # "H100 80GB HBM3": SXM
    "B200": 2250.0,
    "B100": 1750.0,
    "A100": 312.0,
    "A800": 312.0,
    "L40S": 362.0,
    "L40": 181.0,
    "L4": 121.0,
    "A10G": 70.0,
    "A10": 125.0,
    "A30": 165.0,
    "A40": 150.0,
    "RTX 4090": 165.0,
    "RTX 6000 Ada": 364.0,
    "RTX A6000": 155.0,
    "V100": 125.0,
    "T4": 65.0,  # V100/T4: fp16 (no bf16)
}


def gpu_peak_tflops(device_name: str) -> float | None:
    """The dense bf16 peak of a GPU model, or None when it is not in the table."""
    hits = [k for k in GPU_PEAK_TFLOPS if k.lower() in device_name.lower()]
    return GPU_PEAK_TFLOPS[max(hits, key=len)] if hits else None


def non_embedding_params(model) -> int:
    """Parameters outside the token and position embeddings (those cost no matmul FLOPs)."""
    skip = {id(m.weight) for m in model.modules() if m.__class__.__name__ == "Embedding"}
    return sum(p.numel() for p in model.parameters() if id(p) not in skip)


def train_flops_per_token(n_params: int, n_layers: int, hidden: int, seq_len: int, vocab: int = 0) -> float:
    """6N (+ the output projection onto the vocabulary, 6 H V, when given) + 12 L H T."""
    return 6.0 * n_params + 6.0 * hidden * vocab + 12.0 * n_layers * hidden * seq_len


def mfu(tokens_per_second: float, flops_per_token: float, devices: int, peak_tflops: float | None) -> float | None:
    """Share of the devices' peak that the model FLOPs reach; None without a peak (CPU)."""
    if not peak_tflops or tokens_per_second <= 0:
        return None
    return tokens_per_second * flops_per_token / (devices * peak_tflops * 1e12)
