"""The feedback loop end to end, with a shifted slice, through a real Airflow scheduler.

1. Train and deploy a champion on SST-2 without one domain (sentences about comedy: 'comedy',
   'funny', 'laugh', 'humor', 'joke'), with `lmchain demo` (pretraining off, for time).
2. Serve it with `lmchain serve`; for a pool of comedy sentences from SST-2 train, ask
   /v1/predict and post the true label to /v1/feedback (corrections and confirmations).
3. Run `lmchain_feedback` (`lmchain feedback`): export, gate, merge; decide emits the
   feedback-labels asset event.
4. Start Airflow (`airflow standalone`: scheduler, api-server, dag-processor, triggerer) with
   `lmchain_pipeline` unpaused: the scheduler turns the asset event into a pipeline run, which
   retrains with the feedback labels, evaluates against the champion and deploys if promoted.
5. Accuracy of the old and the new champion on the comedy sentences of SST-2 dev (never seen by
   either) and on the rest of dev.
6. The control arm: is the lift the loop's, or just that of any in-domain labels? The same
   number of comedy sentences, drawn at random from the same shuffled slice pool of SST-2 train
   (disjoint from the feedback sentences) and never sent through the service, are added as plain
   labelled training data (a second file in collect.files and annotate.labels, beside the base
   file) to the same retraining, and scored on the same dev texts. The bench posts feedback for
   every sentence of its pool (confirmations and corrections), not only for the model's
   mistakes, so a random draw of the same size from the same pool is the matching control.

   The control is trained by ``lmchain run`` (the stages collect ... finetune in this process)
   with the recipe and the very overrides the asset-triggered run used (its trigger.json),
   plus only the data change and ``feedback.include_in_training=false`` (the home's feedback
   labels must not leak into the control). The bench checks that the two resolved configs
   differ in those keys and nowhere else: same base data, base model, seeds, epochs, splits by
   text hash, curation and gates. ``lmchain run`` calls the same stage functions through the same
   runner as the DAG's tasks; the scheduler decides when a run happens, not what it computes, so
   a second Airflow start (minutes) would add time, not comparability. Both arms are compared as
   trained models (the retrained feedback model is its run's fine-tune output, also when the
   evaluate stage did not promote it), with a paired bootstrap CI on the slice's dev texts.

Ends with ``RESULT feedback_loop slice_before=... slice_after=... rest_before=... rest_after=...
promoted=... pipeline_run=... corrections=... control_after=... control_rest_after=...
retrained_after=... retrained_rest_after=... vs_control=... vs_control_ci_low=... vs_control_ci_high=...
feedback_train=... control_train=...`` (slice_after/rest_after: the champion after the loop, the old
one when the retrain was not promoted; retrained_*: the feedback arm's retrained model; vs_control: its
slice accuracy minus the control's; *_train: the arm's comedy sentences in the training split).
The vs_control CI resamples the dev texts of one training run per arm: it does not cover which
sentences each arm drew or the training's own noise, so a difference inside a few points is not yet
the loop's (that needs several seeds of both arms, ~30 min each here). Took 47 min on 2 CPU cores
shared with other jobs (load 5-9): first champion 15 min, feedback 1 min, retrain 19 min, control 9 min.

    .venv/bin/python bench/feedback_loop.py [--home DIR] [--base 4000] [--feedback 800]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))  # paired.py
SLICE = re.compile(r"comedy|funny|laugh|humor|joke", re.I)
BIN = Path(sys.executable).parent


def read_tsv(path: Path) -> list[tuple[str, int]]:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines()[1:]:
        text, _, label = line.rpartition("\t")
        if text.strip() and label.strip() in ("0", "1"):
            rows.append((text.strip(), int(label)))
    return rows


def write_tsv(path: Path, rows) -> None:
    path.write_text("sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in rows), encoding="utf-8")


def run(cmd: list[str], env: dict, timeout: int = 3600) -> str:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    print(f"  ({' '.join(Path(c).name if i == 0 else c for i, c in enumerate(cmd[:3]))}: "
          f"{time.perf_counter() - t0:.0f}s)", flush=True)
    return proc.stdout


def correct(model_dir: Path, rows) -> list[bool]:
    """Whether the model (the service's fp32 predictor) gets each row right."""
    from lmchain.serve.predictor import Predictor

    preds = Predictor(model_dir).predict([t for t, _ in rows])
    return [p["label_id"] == y for p, (_, y) in zip(preds, rows)]


def accuracy(model_dir: Path, rows) -> float:
    hits = correct(model_dir, rows)
    return sum(hits) / len(hits)


def finetuned_model(home: Path, run_id: str) -> Path:
    """The fine-tune stage's output of run ``run_id`` (trained whether or not it was promoted)."""
    from lmchain.artifacts import Manifest, RunContext

    return Path(Manifest.read(RunContext(run_id, home=home).stage_dir("finetune")).outputs["model"])


def set_flags(overrides: list[str]) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


def champion(name: str):
    from lmchain.serve import registered

    model = registered.resolve(f"models:/{name}@champion")
    return (model.version, model.folder) if model else (None, None)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--home", help="LMCHAIN_HOME for the experiment (default: a new temp folder)")
    ap.add_argument("--base", type=int, default=4000, help="training sentences outside the slice")
    ap.add_argument("--feedback", type=int, default=800, help="comedy sentences posted as feedback")
    ap.add_argument("--timeout", type=int, default=2400, help="seconds to wait for the scheduled retrain")
    ap.add_argument("--epochs", type=float, default=1.0, help="fine-tuning epochs of both runs")
    args = ap.parse_args()

    from lmchain.datasets import sst2_dir

    home = Path(args.home or tempfile.mkdtemp(prefix="lmchain-feedback-loop-"))
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW") and k != "MLFLOW_TRACKING_URI"}
    env["LMCHAIN_HOME"] = str(home)
    os.environ.update({"LMCHAIN_HOME": str(home)})
    from lmchain import airflow_env

    env.update(airflow_env.apply(home))

    data = sst2_dir()
    train, dev = read_tsv(data / "train.tsv"), read_tsv(data / "dev.tsv")
    rng = random.Random(0)
    base = [r for r in train if not SLICE.search(r[0]) and len(r[0].split()) >= 4]
    pool = [r for r in train if SLICE.search(r[0]) and len(r[0].split()) >= 4]
    rng.shuffle(base)
    rng.shuffle(pool)
    if 2 * args.feedback > len(pool):
        raise SystemExit(f"--feedback {args.feedback}: the slice has {len(pool)} sentences, too few for a feedback "
                         "set and a disjoint control set of that size")
    # The control arm's sentences: the next ones of the same shuffled slice pool, i.e. a random
    # draw of the same size from the same pool, disjoint from the feedback sentences.
    base, pool, control = base[:args.base], pool[:args.feedback], pool[args.feedback:2 * args.feedback]
    slice_dev = [r for r in dev if SLICE.search(r[0])]
    rest_dev = [r for r in dev if not SLICE.search(r[0])][:1000]
    base_file = home / "base.tsv"
    write_tsv(base_file, base)
    print(f"home {home}\nbase training sentences (no comedy): {len(base)}; feedback pool: {len(pool)}; "
          f"control (random comedy sentences, plain labels): {len(control)}; "
          f"dev: {len(slice_dev)} comedy, {len(rest_dev)} other; load {os.getloadavg()}", flush=True)

    name = "lmchain-feedback-loop"
    overrides = [f"collect.files=[{{path: {base_file}, text_field: sentence}}]",
                 f"annotate.labels=[{{path: {base_file}, text_field: sentence, label_field: label}}]",
                 "annotate.max_examples=null", "pretrain.enabled=false", "finetune.base_model=minilm",
                 f"finetune.epochs={args.epochs}",
                 f"register.model_name={name}", f"feedback.min_new_labels={max(1, args.feedback // 2)}"]
    sets = set_flags(overrides)
    # This bench deploys its own Airflow: the asset-triggered run re-applies the feedback run's
    # overrides, whose keys (data files, model name) lie beyond the trigger form's default
    # allow-list, so the deployer's list names exactly them (the CLI's own runs allow any key).
    from lmchain.params import OVERRIDE_KEYS_ENV

    env[OVERRIDE_KEYS_ENV] = os.environ[OVERRIDE_KEYS_ENV] = ",".join(sorted({o.split("=", 1)[0] for o in overrides}))

    print("\n1. train and deploy the first champion (lmchain demo)", flush=True)
    run([str(BIN / "lmchain"), "demo", "--recipe", "demo", *sets], env)
    v1, v1_dir = champion(name)
    before = {"slice": accuracy(v1_dir, slice_dev), "rest": accuracy(v1_dir, rest_dev)}
    print(f"  champion v{v1}: comedy dev accuracy {before['slice']:.4f}, other dev {before['rest']:.4f}")

    print("\n2. predictions and feedback through the service's API", flush=True)
    from lmchain.netutil import free_port

    port = free_port("127.0.0.1")
    # One client posts every correction: lift the per-key feedback rate limit (10/s by default).
    serve = subprocess.Popen([str(BIN / "lmchain"), "serve", "--port", str(port), "--model-name", name,
                              "--set", "deploy.service.follow_alias_s=0",
                              "--set", "deploy.service.feedback_rate_per_s=0"], env=env, cwd=REPO,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    corrected = 0
    try:
        base_url = f"http://127.0.0.1:{port}"
        for _ in range(240):
            try:
                if httpx.get(base_url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        labels = ["negative", "positive"]
        with httpx.Client(base_url=base_url, timeout=60) as http:
            for text, y in pool:
                answer = http.post("/v1/predict", json={"texts": [text]}).json()
                predicted = answer["predictions"][0]["label"]
                corrected += predicted != labels[y]
                # The service takes the text and its own answer from the stored prediction.
                http.post("/v1/feedback", json={"request_id": answer["request_id"],
                                                "correct_label": labels[y]}).raise_for_status()
    finally:
        serve.terminate()
        serve.wait(timeout=30)
    print(f"  posted {len(pool)} feedback records, {corrected} of them corrections "
          f"({corrected / len(pool):.0%} of the champion's answers on the slice were wrong)")

    # The pipeline must be unpaused before the feedback run: Airflow queues an asset event only
    # for the consuming DAGs that are active at that moment.
    airflow = str(BIN / "airflow")
    subprocess.run([airflow, "dags", "reserialize"], env=env, check=True, capture_output=True)
    subprocess.run([airflow, "dags", "unpause", "lmchain_pipeline"], env=env, check=True, capture_output=True)

    print("\n3. the feedback DAG (lmchain feedback)", flush=True)
    out = run([str(BIN / "lmchain"), "feedback", "--recipe", "demo", *sets], env)
    print("  " + "\n  ".join(l for l in out.splitlines() if l.startswith(("decision", "asset event"))))
    if "asset event" not in out:
        raise SystemExit("the feedback DAG did not decide to retrain")

    print("\n4. Airflow scheduler: the asset event schedules lmchain_pipeline", flush=True)
    log = open(home / "standalone.log", "w")
    standalone = subprocess.Popen([airflow, "standalone"], env={**env, "PATH": f"{BIN}:{env.get('PATH', '')}",
                                                                **airflow_env.api_port_env(free_port("127.0.0.1"))},
                                  cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    t0 = time.perf_counter()
    run_info = None
    try:
        while time.perf_counter() - t0 < args.timeout:
            time.sleep(15)
            listed = subprocess.run([airflow, "dags", "list-runs", "lmchain_pipeline", "--output", "json"],
                                    env=env, capture_output=True, text=True)
            runs = json.loads(listed.stdout.strip().splitlines()[-1]) if listed.stdout.strip() else []
            triggered = [r for r in runs if "asset" in str(r.get("run_type", r.get("run_id", "")))]
            if triggered:
                run_info = triggered[0]
                state = run_info.get("state")
                print(f"  {run_info['run_id']}: {state} after {time.perf_counter() - t0:.0f}s", flush=True)
                if state in ("success", "failed"):
                    break
    finally:
        os.killpg(standalone.pid, signal.SIGTERM)  # the whole group: scheduler, api-server, workers
        try:
            standalone.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(standalone.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if not run_info or run_info.get("state") != "success":
        raise SystemExit(f"no successful asset-triggered pipeline run (see {home / 'standalone.log'}): {run_info}")
    from lmchain.artifacts import RunContext

    trigger_file = RunContext(run_info["run_id"], home=home).run_dir / "trigger.json"
    trigger = json.loads(trigger_file.read_text()) if trigger_file.is_file() else None
    if trigger:
        print(f"  why: {[e.get('reason') for e in trigger['asset_events']]} ({trigger['run_type']})")

    v2, v2_dir = champion(name)
    after = {"slice": accuracy(v2_dir, slice_dev), "rest": accuracy(v2_dir, rest_dev)}
    promoted = v2 != v1
    print(f"\n5. champion v{v2} ({'promoted' if promoted else 'not promoted: v' + v1 + ' kept'}):")
    print(f"  comedy dev accuracy {before['slice']:.4f} -> {after['slice']:.4f} "
          f"({100 * (after['slice'] - before['slice']):+.1f} pt); other dev {before['rest']:.4f} -> "
          f"{after['rest']:.4f} ({100 * (after['rest'] - before['rest']):+.1f} pt); load {os.getloadavg()}")
    retrained_dir = finetuned_model(home, run_info["run_id"])
    retrained = {"slice": correct(retrained_dir, slice_dev), "rest": correct(retrained_dir, rest_dev)}
    feedback_labels = labelled_count(home, run_info["run_id"], pool)

    print(f"\n6. control arm: {len(control)} random comedy sentences as plain labels, the same retraining "
          "(lmchain run)", flush=True)
    # The asset-triggered run's own recipe and overrides (what its tasks loaded), so the two arms
    # differ in their extra labelled data only.
    from lmchain.config import load_config
    from lmchain.params import to_overrides

    recipe = (trigger or {}).get("params", {}).get("recipe") or "demo"
    run_overrides = to_overrides(trigger["params"]) if trigger else overrides
    control_file = home / "control.tsv"
    write_tsv(control_file, control)
    control_overrides = [*run_overrides,
                         f"collect.files=[{{path: {base_file}, text_field: sentence}}, "
                         f"{{path: {control_file}, text_field: sentence}}]",
                         f"annotate.labels=[{{path: {base_file}, text_field: sentence, label_field: label}}, "
                         f"{{path: {control_file}, text_field: sentence, label_field: label}}]",
                         "feedback.include_in_training=false"]
    differ = config_difference(load_config(recipe, run_overrides), load_config(recipe, control_overrides))
    if not {"collect.files", "annotate.labels"} <= differ:
        raise SystemExit(f"the control arm's overrides did not add its data (differs only in {sorted(differ)})")
    if differ - {"collect.files", "annotate.labels", "feedback.include_in_training"}:
        raise SystemExit(f"the control arm's config differs from the retrain's beyond its data: {sorted(differ)}")
    print(f"  config differs from the feedback retrain's in: {', '.join(sorted(differ))}")
    run([str(BIN / "lmchain"), "run", "--recipe", recipe, *set_flags(control_overrides), "--run-id", "bench_control",
         "--stages", "collect,curate,gate,annotate,review_queue,gate_labels,pretrain,finetune"], env)
    control_dir = finetuned_model(home, "bench_control")
    controlled = {"slice": correct(control_dir, slice_dev), "rest": correct(control_dir, rest_dev)}
    control_labels = labelled_count(home, "bench_control", control)
    from paired import seeds_ci

    def acc(hits: list[bool]) -> float:
        return sum(hits) / len(hits)

    vs = seeds_ci([controlled["slice"]], [retrained["slice"]])
    vs_rest = seeds_ci([controlled["rest"]], [retrained["rest"]])
    print(f"  comedy sentences labelled by annotate (train/validation/test split by text hash): feedback arm "
          f"{feedback_labels}, control arm {control_labels}")
    print(f"  comedy dev accuracy: before {before['slice']:.4f}, feedback retrain {acc(retrained['slice']):.4f}, "
          f"control {acc(controlled['slice']):.4f}; other dev: before {before['rest']:.4f}, feedback retrain "
          f"{acc(retrained['rest']):.4f}, control {acc(controlled['rest']):.4f}; load {os.getloadavg()}")
    for where, ci, n in (("comedy", vs, len(slice_dev)), ("other", vs_rest, len(rest_dev))):
        print(f"  {where} dev, feedback retrain minus control: {100 * ci['delta']:+.2f} pt, 95% CI "
              f"[{100 * ci['lower']:+.2f}, {100 * ci['upper']:+.2f}] (paired bootstrap over the {n} texts)")
    print(f"RESULT feedback_loop slice_before={before['slice']:.4f} slice_after={after['slice']:.4f} "
          f"rest_before={before['rest']:.4f} rest_after={after['rest']:.4f} promoted={str(promoted).lower()} "
          f"pipeline_run={run_info['run_id']} corrections={corrected} "
          f"control_after={acc(controlled['slice']):.4f} control_rest_after={acc(controlled['rest']):.4f} "
          f"retrained_after={acc(retrained['slice']):.4f} retrained_rest_after={acc(retrained['rest']):.4f} "
          f"vs_control={vs['delta']:.4f} vs_control_ci_low={vs['lower']:.4f} vs_control_ci_high={vs['upper']:.4f} "
          f"feedback_train={feedback_labels['train']} control_train={control_labels['train']}")
    return 0


def config_difference(a, b) -> set[str]:
    """The dotted keys (two levels: section.field) where two resolved recipes differ."""
    da, db = a.to_dict(), b.to_dict()
    keys = set()
    for section in set(da) | set(db):
        sa, sb = da.get(section), db.get(section)
        if isinstance(sa, dict) and isinstance(sb, dict):
            keys |= {f"{section}.{k}" for k in set(sa) | set(sb) if sa.get(k) != sb.get(k)}
        elif sa != sb:
            keys.add(section)
    return keys


def labelled_count(home: Path, run_id: str, rows) -> dict[str, int]:
    """How many of ``rows`` the run's annotate stage kept as labelled examples, per split."""
    from lmchain.artifacts import Manifest, RunContext, read_jsonl
    from lmchain.text import normalise_for_dedup

    wanted = {normalise_for_dedup(t) for t, _ in rows}
    outputs = Manifest.read(RunContext(run_id, home=home).stage_dir("annotate")).outputs
    return {split: len({normalise_for_dedup(r["text"]) for r in read_jsonl(outputs[split])} & wanted)
            for split in ("train", "validation", "test") if outputs.get(split)}


if __name__ == "__main__":
    sys.exit(main())
