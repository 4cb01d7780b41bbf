"""BERT-base masked-LM pretraining in bf16 on one GPU, for a few minutes: tokens/s and MFU.

Runs lmchain's pretrain stage (the ``deepspeed`` launcher, one GPU rank, DeepSpeed bf16,
ZeRO-0, fused torch AdamW, packed 128-token blocks of SST-2 training sentences, BERT's 30,522
uncased WordPiece vocabulary) on a BERT-base built from configs/models/sizes.yaml, then the bare
DeepSpeed script (bench/bare_pretrain.py) on the same blocks, model, config and steps as the
baseline. MFU is model FLOPs (6N + 6HV + 12LHT per token, lmchain.train.flops) over the GPU's
dense bf16 peak from lmchain.train.flops.GPU_PEAK_TFLOPS.

Where there is no CUDA GPU it says so and exits 0 (``RESULT gpu_pretrain skipped=no_cuda_gpu``).
Ends with ``RESULT gpu_pretrain tok_s=... mfu=... bare_tok_s=... ratio=... gpu=...``.

Environment: BENCH_GPU_STEPS (3000; about 3 minutes on an H100-class GPU), BENCH_GPU_BATCH (64),
BENCH_GPU_BLOCK (128).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

STEPS = int(os.environ.get("BENCH_GPU_STEPS", 3000))
BATCH = int(os.environ.get("BENCH_GPU_BATCH", 64))
BLOCK = int(os.environ.get("BENCH_GPU_BLOCK", 128))


def main() -> int:
    import torch

    if not torch.cuda.is_available():
        print("gpu_pretrain: no CUDA GPU on this machine; this bench measures BERT-base bf16 pretraining on one "
              "GPU, so nothing was measured. Run it on a GPU worker.")
        print("RESULT gpu_pretrain skipped=no_cuda_gpu")
        return 0
    import pretrain_overhead as bench
    from lmchain.train.flops import gpu_peak_tflops

    name = torch.cuda.get_device_name()
    os.environ.setdefault("LMCHAIN_HOME", tempfile.mkdtemp(prefix="bench-gpu-home-"))
    work = Path(tempfile.mkdtemp(prefix="bench-gpu-"))
    corpus = work / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in bench.sst2_sentences(70000)))
    settings = dict(base_model="bert-base", tokenizer="base", ranks=1, zero_stage=0, batch_size=BATCH,
                    block_size=BLOCK, max_steps=STEPS, checkpoint_every=1000, learning_rate=1e-4,
                    warmup_ratio=0.01)
    print(f"gpu_pretrain: BERT-base MLM, bf16, {name}, {STEPS} steps of {BATCH} x {BLOCK} tokens", flush=True)
    ours, spec = bench.run_lmchain(work, corpus, 0, settings)
    bare = bench.run_bare(spec, work, 0)
    peak = gpu_peak_tflops(name)
    mfu = ours.get("mfu")
    bare_mfu = bare["tokens_per_second"] * ours["flops_per_token"] / (peak * 1e12) if peak else None
    ratio = ours["tokens_per_second"] / bare["tokens_per_second"]
    print(f"lmchain: {ours['tokens_per_second']:.0f} tokens/s, MFU "
          f"{f'{mfu:.1%}' if mfu is not None else 'n/a'} of {peak} TFLOP/s, final loss {ours['final_loss']:.3f}, "
          f"loop {ours['train_seconds']:.0f}s")
    print(f"bare:    {bare['tokens_per_second']:.0f} tokens/s, MFU "
          f"{f'{bare_mfu:.1%}' if bare_mfu is not None else 'n/a'}; ratio lmchain/bare {ratio:.3f}")
    print(f"RESULT gpu_pretrain tok_s={ours['tokens_per_second']:.0f} mfu={mfu if mfu is not None else 'na'} "
          f"bare_tok_s={bare['tokens_per_second']:.0f} ratio={ratio:.3f} gpu={name.replace(' ', '_')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
