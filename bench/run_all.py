"""Run benches one after another and keep their figures in one place: ``bench/RESULTS.md``.

Each bench runs as its own process (the project's venv, the repository root as working folder).
While it runs, the 1-minute load average is sampled every 5 s; the table row for the bench gets
its RESULT line, the date, the wall time and the load (mean and max) during the run, so a figure
taken on a busy machine is visibly one. Rows of benches not run this time are kept as they were;
a bench that fails or prints no RESULT line gets a row saying so (and this exits non-zero).

    .venv/bin/python bench/run_all.py                       # every bench, in the order below
    .venv/bin/python bench/run_all.py sst2_sentences tapt_low_label
    make bench BENCHES="sst2_sentences"
"""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
# Cheapest first; the GPU bench says "skipped" and exits 0 without a CUDA GPU.
ORDER = [
    "pretrain_overhead",
    "finetune_throughput",
    "crawl",
    "curate_vs_datatrove",
    "serve_load",
    "langid_english",
    "sst2_sentences",
    "tapt_low_label",
    "annotation_value",
    "active_learning",
    "feedback_loop",
    "gpu_pretrain",
]
HEADER = (
    "# Bench results\n\n"
    "Written by `make bench` (`bench/run_all.py`); each row is the bench's last run. Load: the 1-minute load "
    "average sampled every 5 s during the run (mean / max) on this machine's {cores} cores.\n\n"
    "| bench | date (UTC) | wall | load mean / max | RESULT |\n|---|---|---|---|---|\n"
)
ROW = re.compile(r"^\| `(?P<name>[a-z0-9_]+)` \|")


def run_one(name: str) -> str:
    samples: list[float] = []
    done = threading.Event()

    def sample() -> None:
        while not done.wait(5):
            samples.append(os.getloadavg()[0])

    threading.Thread(target=sample, daemon=True).start()
    started = dt.datetime.now(dt.timezone.utc)
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, str(HERE / f"{name}.py")],
        cwd=HERE.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    result = None
    assert proc.stdout is not None
    for line in proc.stdout:  # stream it: the benches print progress
        sys.stdout.write(line)
        if line.startswith("RESULT "):
            result = line.strip()
    code = proc.wait()
    done.set()
    wall = time.perf_counter() - t0
    load = f"{sum(samples) / len(samples):.2f} / {max(samples):.2f}" if samples else "n/a"
    outcome = f"`{result}`" if code == 0 and result else f"FAILED (exit {code}{', no RESULT line' if not result else ''})"
    return f"| `{name}` | {started:%Y-%m-%d %H:%M} | {wall / 60:.1f} min | {load} | {outcome} |"


def merge(rows: dict[str, str]) -> str:
    kept: dict[str, str] = {}
    if RESULTS.is_file():
        for line in RESULTS.read_text().splitlines():
            m = ROW.match(line)
            if m:
                kept[m["name"]] = line
    kept.update(rows)
    ordered = [kept[n] for n in ORDER if n in kept] + [v for k, v in kept.items() if k not in ORDER]
    return HEADER.format(cores=os.cpu_count()) + "\n".join(ordered) + "\n"


def main(argv: list[str]) -> int:
    names = argv or ORDER
    unknown = [n for n in names if not (HERE / f"{n}.py").is_file()]
    if unknown:
        print(f"no such bench: {', '.join(unknown)}; choose from {', '.join(ORDER)}", file=sys.stderr)
        return 2
    failed = 0
    for name in names:
        row = run_one(name)
        failed += "FAILED" in row
        RESULTS.write_text(merge({name: row}))  # after each bench: a later crash keeps the earlier rows
        print(row, flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
