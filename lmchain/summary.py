"""The end-of-demo summary: what each stage did, the model, the timings and where to look."""

from __future__ import annotations

from lmchain.stages import STAGES
from lmchain.artifacts import Manifest, RunContext
from lmchain.home import Home
from lmchain.quality import data_docs_dir


def stage_line(m: Manifest) -> str:
    c, x, info = m.counts, m.metrics, m.info
    if m.stage == "collect":
        return f"{c.get('records', 0)} records, {c.get('rejects', 0)} rejected {m.drop_reasons or ''}"
    if m.stage == "curate":
        return f"{c['input']} in -> {c['records']} kept; dropped {m.drop_reasons}"
    if m.stage in ("gate", "gate_labels"):
        rows = ", ".join(f"{k[:-5]} {v}" for k, v in c.items() if k.endswith("_rows"))
        warn = f", {c['warnings']} warning(s)" if c.get("warnings") else ""
        accepted = f", accepted by hand: {sorted(info['accepted'])}" if info.get("accepted") else ""
        return (
            f"{'PASSED' if info.get('passed') else 'BLOCKED'}: {c['expectations'] - c['failed']}/"
            f"{c['expectations']} expectations ({rows} rows){warn}{accepted}"
        )
    if m.stage == "annotate":
        weak = f", {c['weak_labels']} semi-automatic" if c.get("weak_labels") else ""
        return (
            f"train {c['train']} / validation {c['validation']} / test {c['test']} ({info.get('mode', 'human')}"
            f"{weak}); {c['rejects']} label rows set aside {m.drop_reasons}"
        )
    if m.stage == "review_queue":
        if info.get("skipped"):
            return f"skipped ({info['skipped']})"
        return (
            f"{c['queue']} of {c['pool']} unlabelled texts queued for review ({info['strategy']}, scored by "
            f"{info['scorer']}): {info['published']}"
        )
    if m.stage in ("pretrain", "finetune"):
        if info.get("skipped"):
            return f"skipped (base model {info.get('base_model')})"
        lm = held_out_line(x)
        return (
            f"{info['steps']} steps on {info['world_size']} {info['device']} rank(s), final loss "
            f"{x['final_loss']:.3f}, {x['samples_per_second']:.1f} samples/s{lm}{chosen_line(info, x)}"
        )
    if m.stage == "evaluate":
        verdict = "promote" if info["decision"]["promote"] else "keep champion"
        return (
            f"accuracy {x['accuracy']:.4f}, macro-F1 {x['macro_f1']:.4f}, ECE {x['ece']:.3f} on "
            f"{c['test']} test examples; decision: {verdict}"
        )
    if m.stage == "register":
        if info.get("promoted"):
            alias = "alias 'champion'"
        else:
            alias = f"alias 'challenger', champion stays version {info.get('previous_champion')}"
        return f"{info['model_name']} version {info['version']}, {alias} ({info['reason']})"
    if m.stage == "deploy":
        source = {"validation": "from the validation split", "config": "from deploy.smoke_texts"}.get(
            info.get("smoke_source", ""), "built-in"
        )
        smoke = info["predictions"]
        return f"served version {info['version']}: {len(smoke)} smoke texts ({source}) -> {smoke}"
    return str(c)


def chosen_line(info: dict, x: dict) -> str:
    """', best validation epoch 2 of 5 run (macro-F1 0.912), stopped by patience': what validation chose."""
    if info.get("best_epoch") is None:
        return ""
    return (
        f", best validation epoch {info['best_epoch']:g} of {info['epochs_run']:g} run "
        f"(macro-F1 {x['best_macro_f1']:.3f}), stopped by {info['stop_reason']}"
    )


def held_out_line(x: dict) -> str:
    """', held-out perplexity 3950.2 -> 412.7, MLM accuracy 0.1% -> 12.4%': before (step 0) -> after training."""
    if "perplexity" not in x:
        return ""
    before = f"{x['perplexity_before']:.1f} -> " if "perplexity_before" in x else ""
    line = f", held-out perplexity {before}{x['perplexity']:.1f}"
    for key, name in (("mlm_accuracy", "MLM accuracy"), ("next_token_accuracy", "next-token accuracy")):
        if key in x:
            before = f"{x[key + '_before']:.1%} -> " if key + "_before" in x else ""
            line += f", {name} {before}{x[key]:.1%}"
    return line


def stage_seconds(tasks: list[dict]) -> dict[str, float]:
    """Task time per stage: its own task plus its helper tasks (``finetune_trials`` and every mapped
    ``finetune_trial``, where the training happens; the ``finetune`` task itself only picks the
    best trial). A task named after another stage (``gate_labels``) is that stage's, not ``gate``'s."""
    seconds: dict[str, float] = {}
    for t in tasks:
        tid = t["task_id"]
        owner = tid if tid in STAGES else next((s for s in STAGES if tid.startswith(s + "_")), tid)
        seconds[owner] = seconds.get(owner, 0.0) + (t["duration"] or 0.0)
    return seconds


def print_summary(report, lm_home: Home, total_seconds: float) -> None:
    ctx = RunContext(report.run_id, home=lm_home)
    durations = stage_seconds(report.tasks)
    print("\n" + "=" * 78)
    print(f"lmchain_pipeline run {report.run_id}: {report.state}")
    print("=" * 78)
    for stage in STAGES:
        path = ctx.stage_dir(stage)
        if (path / "manifest.json").is_file():
            secs = durations.get(stage)
            print(f"{stage:11s} {f'{secs:6.1f}s' if secs else '       '}  {stage_line(Manifest.read(path))}")
    print("-" * 78)
    print(
        f"DAG run wall time {report.wall_seconds:.1f}s = task run time {report.task_seconds:.1f}s "
        f"+ orchestration {report.overhead_seconds:.1f}s; whole command {total_seconds:.1f}s"
    )
    print(f"run folder:  {ctx.run_dir}")
    print(f"data docs:   {data_docs_dir(lm_home) / 'index.html'}")
    print(f"evaluation:  {ctx.stage_dir('evaluate') / 'report.html'}")
    print("\nNext:")
    print("  lmchain up        # Airflow UI http://127.0.0.1:8080, MLflow UI http://127.0.0.1:5000,")
    print("                    # model service http://127.0.0.1:8000/docs")
    print("  lmchain serve     # just the service; then:")
    print("  curl -s -X POST http://127.0.0.1:8000/v1/predict -H 'Content-Type: application/json' \\")
    print('       -d \'{"texts": ["a moving, funny film", "a tedious mess"]}\'')
