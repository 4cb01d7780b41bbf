"""How finetune_throughput.py's learning rate was chosen: on validation only.

Runs lmchain's fine-tune job (the settings of ``finetune_throughput.LMCHAIN``) once per candidate
setting on the same 8,000 SST-2 sentences, and picks the one with the best macro-F1 on the 500
held-out training sentences that the job validates on. SST-2 dev is scored and printed for every
candidate, but it plays no part in the choice. Ends with
``RESULT finetune_lr_sweep chosen=... val_macro_f1=... dev_acc=...``.

    BENCH_SWEEP="learning_rate=5e-5;learning_rate=1e-4;learning_rate=2e-4;learning_rate=3e-4" \\
        .venv/bin/python bench/finetune_lr_sweep.py
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import finetune_throughput as bench  # noqa: E402

DEFAULT = "learning_rate=5e-5;learning_rate=1e-4;learning_rate=2e-4;learning_rate=3e-4"


def main() -> None:
    candidates = [c.strip() for c in os.environ.get("BENCH_SWEEP", DEFAULT).split(";") if c.strip()]
    train, validation, dev = bench.sst2()
    rows = []
    for candidate in candidates:
        os.environ["BENCH_FINETUNE_SET"] = candidate  # read by bench.lmchain()
        with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
            result = bench.lmchain(train, validation, dev, Path(tmp))
            metrics = json.loads((Path(tmp) / "job" / "metrics.json").read_text())
        row = {"set": candidate, "val_macro_f1": metrics["best_macro_f1"], "val_acc": metrics["best_accuracy"],
               "dev_acc": result["acc"], "best_step": result["best_step"], "steps": result["steps"],
               "samples_per_second": round(result["samples_per_second"], 1),
               "loop_samples_per_second": round(result["loop_samples_per_second"], 1)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    best = max(rows, key=lambda r: r["val_macro_f1"])  # validation only; ties: the earlier candidate
    print(f"RESULT finetune_lr_sweep chosen={best['set'].replace(' ', ',')} val_macro_f1={best['val_macro_f1']:.4f} "
          f"dev_acc={best['dev_acc']:.4f}")


if __name__ == "__main__":
    main()
