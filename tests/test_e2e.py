"""End to end through Airflow: `lmchain demo --recipe PATH` (the tiny recipe, copied outside the
checkout) in a fresh LMCHAIN_HOME.

It runs the real chain (GX checkpoint, DeepSpeed CPU ranks, MLflow registry, the service in
its own process) on a few hundred SST-2 sentences with a tiny BERT, then serves the champion
with `lmchain serve` and asks it for predictions.
"""

import json
import socket
import subprocess
import time
import urllib.request

import pytest

from conftest import REPO, lmchain_cmd, needs_sst2, subprocess_env
from lmchain.stages import STAGES

pytestmark = [pytest.mark.e2e, needs_sst2]


_env = subprocess_env


@pytest.fixture(scope="module")
def demo_by_path(tmp_path_factory):
    home = tmp_path_factory.mktemp("e2e") / "home"
    # A user's own recipe, outside the checkout and outside every recipe folder: the CLI lets it
    # through the form's recipe check for its own run.
    recipe = tmp_path_factory.mktemp("my-recipes") / "my-tiny.yaml"
    tiny = (REPO / "configs" / "tiny.yaml").read_text()
    assert tiny.count("limit: 600") == 2  # collect's and the labels'
    recipe.write_text(tiny.replace("limit: 600", "limit: 590", 1))  # a mark of this recipe: collect reads 590
    t0 = time.perf_counter()
    proc = subprocess.run(lmchain_cmd("demo", "--recipe", str(recipe)), cwd=REPO, env=_env(home),
                          capture_output=True, text=True, timeout=900)
    print(f"e2e demo (tiny) took {time.perf_counter() - t0:.1f}s")
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    return home, proc.stdout, recipe


@pytest.fixture(scope="module")
def demo_run(demo_by_path):
    home, stdout, _ = demo_by_path
    return home, stdout


def test_a_recipe_outside_the_checkout_ran_through_airflow(demo_by_path):
    home, stdout, recipe = demo_by_path
    (run_dir,) = list((home / "runs").iterdir())
    collect = json.loads((run_dir / "collect" / "manifest.json").read_text())
    assert collect["config"]["files"][0]["limit"] == 590 and collect["counts"]["records"] == 590
    assert "lmchain_pipeline run" in stdout and f"recipe {recipe}" in stdout


def test_every_stage_published_its_manifest(demo_run):
    home, stdout = demo_run
    (run_dir,) = list((home / "runs").iterdir())
    for stage in STAGES:
        manifest = json.loads((run_dir / stage / "manifest.json").read_text())
        assert manifest["stage"] == stage and manifest["finished_at"]
        assert not (run_dir / f"{stage}.tmp").exists()
    counts = json.loads((run_dir / "annotate" / "manifest.json").read_text())["counts"]
    assert counts["train"] > 100 and counts["test"] > 20
    assert (run_dir / "pretrain" / "model" / "model.safetensors").is_file()
    assert "lmchain_pipeline run" in stdout and "orchestration" in stdout
    assert not (REPO / "mlruns").exists()  # everything stays under LMCHAIN_HOME


def test_deploy_smoke_tested_texts_of_the_runs_own_validation_split(demo_run):
    home, stdout = demo_run
    (run_dir,) = list((home / "runs").iterdir())
    validation = {json.loads(line)["text"] for line in (run_dir / "annotate" / "validation.jsonl").open()}
    smoke = json.loads((run_dir / "deploy" / "smoke.json").read_text())
    assert smoke["smoke_source"] == "validation" and len(smoke["smoke"]) == 8
    assert {s["text"] for s in smoke["smoke"]} <= validation
    assert "8 smoke texts (from the validation split)" in stdout
    # The tiny recipe's fine-tune is a fixed 6 steps: the manifest says so, and which step validation kept.
    info = json.loads((run_dir / "finetune" / "manifest.json").read_text())["info"]
    assert info["stop_reason"] == "max_steps" and info["steps"] == 6 and 1 <= info["best_step"] <= 6


def test_mlflow_has_champion_with_metrics(demo_run):
    home, _ = demo_run
    code = ("import json; from lmchain import registry; v = registry.champion('lmchain-tiny'); "
            "print(json.dumps({'version': v.version, 'tags': v.tags}))")
    out = subprocess.run([lmchain_cmd()[0], "-c", code], env=_env(home), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    champ = json.loads(out.stdout.strip().splitlines()[-1])
    assert str(champ["version"]) == "1"
    assert 0.0 <= float(champ["tags"]["metric.accuracy"]) <= 1.0


def test_lineage_reaches_the_source_files(demo_run):
    home, _ = demo_run
    out = subprocess.run(lmchain_cmd("lineage", "lmchain-tiny@champion"), env=_env(home), cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    sst2 = subprocess.run([lmchain_cmd()[0], "-c",
                           "from lmchain.datasets import sst2_dir; print(sst2_dir().resolve())"],
                          env=_env(home), capture_output=True, text=True).stdout.strip()
    text = out.stdout
    assert "models:/lmchain-tiny/1" in text and "champion" in text
    assert f"source files[0]: {sst2}/train.tsv" in text
    assert f"labels from {sst2}/train.tsv" in text and "${SST2}" not in text
    for stage in ("finetune", "pretrain", "annotate", "gate", "curate", "collect"):
        assert f"  {stage}" in text


def test_evaluation_report_and_stage_runs_in_mlflow(demo_run):
    home, _ = demo_run
    (run_dir,) = list((home / "runs").iterdir())
    report = (run_dir / "evaluate" / "report.html").read_text()
    assert "Decision: PROMOTE" in report and "no champion yet" in report
    code = ("import json; from lmchain import registry; c = registry.client(); "
            "runs = c.search_runs([c.get_experiment_by_name('lmchain').experiment_id]); "
            "print(json.dumps(sorted(r.data.tags.get('lmchain.stage', 'pipeline') for r in runs)))")
    out = subprocess.run([lmchain_cmd()[0], "-c", code], env=_env(home), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    stages = json.loads(out.stdout.strip().splitlines()[-1])
    assert stages == ["deploy", "evaluate", "finetune", "gate", "gate_labels", "pipeline", "pretrain", "register"]


def test_lmchain_serve_without_flags_answers_predictions(demo_run):
    home, _ = demo_run
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(lmchain_cmd("serve", "--port", str(port)), env=_env(home), cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                with urllib.request.urlopen(base + "/readyz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "service not ready in 120s"
            time.sleep(0.5)
        texts = ["an utterly charming film", "a waste of two hours", "it is a movie"]
        req = urllib.request.Request(base + "/v1/predict", data=json.dumps({"texts": texts}).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            body = json.loads(r.read())
        assert body["model"] == "lmchain-tiny" and body["version"] == "1"
        deployed = json.loads((home / "deployments" / "current.json").read_text())
        assert body["variant"] == deployed["variant"]  # 'auto' serves what deploy validated
        assert len(body["predictions"]) == 3
        assert all(p["label"] in ("negative", "positive") for p in body["predictions"])
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_bad_config_key_is_one_clear_line(tmp_path):
    proc = subprocess.run(lmchain_cmd("demo", "--recipe", "tiny", "--set", "finetune.epoch=2"), cwd=REPO,
                          env=_env(tmp_path / "home"), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "unknown config key 'finetune.epoch': did you mean 'epochs'?" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_missing_input_file_is_one_clear_line(tmp_path):
    missing = tmp_path / "nowhere" / "train.tsv"
    proc = subprocess.run(lmchain_cmd("demo", "--recipe", "tiny", "--set",
                                      f"collect.files=[{{path: {missing}, text_field: sentence}}]"),
                          cwd=REPO, env=_env(tmp_path / "home"), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert f"input file {missing} does not exist" in proc.stderr and "Traceback" not in proc.stderr


def test_gate_failure_stops_the_dag_and_names_the_expectation(tmp_path):
    home = tmp_path / "home"
    proc = subprocess.run(lmchain_cmd("demo", "--recipe", "tiny", "--set", "gate.curated.min_rows=100000"), cwd=REPO,
                          env=_env(home), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and "failed at stage gate" in err[0]
    assert "expect_table_row_count_to_be_between" in err[0] and "min_value': 100000" in err[0]
    (run_dir,) = list((home / "runs").iterdir())
    assert (run_dir / "gate" / "validation.json").is_file()  # the evidence is kept
    assert not (run_dir / "annotate").exists()  # nothing downstream ran


def test_pii_in_the_corpus_blocks_the_run_and_quarantines_the_batch_intact(tmp_path):
    """A corrupted source (leaked e-mail addresses) through the real DAG: gate fails, no training."""
    from lmchain.artifacts import sha256_file

    rows = [f"the film was a {w} story about people and places, part {i}" for i, w in
            enumerate(["good", "bad", "fine", "dull"] * 60)]
    rows += [f"write to fan{i}@example.com for the soundtrack of part {i}" for i in range(40)]
    src = tmp_path / "leaky.tsv"
    src.write_text("sentence\tlabel\n" + "".join(f"{t}\t{i % 2}\n" for i, t in enumerate(rows)))
    home = tmp_path / "home"
    # Curation redacts PII by default; here it is off (a recipe that forgot it), and the gate is
    # the last line of defence. The templated rows are near-duplicates by design: keep them.
    sets = [f"collect.files=[{{path: {src}, text_field: sentence}}]",
            f"annotate.labels=[{{path: {src}, text_field: sentence}}]",
            "curate.pii.enabled=false", "curate.near_dedup.enabled=false"]
    proc = subprocess.run(lmchain_cmd("demo", "--recipe", "tiny", *[a for s in sets for a in ("--set", s)]),
                          cwd=REPO, env=_env(home), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "failed at stage gate" in proc.stderr and "expect_column_values_to_not_contain_pii" in proc.stderr, \
        proc.stderr[-1500:]
    (run_dir,) = list((home / "runs").iterdir())
    assert not (run_dir / "pretrain").exists() and not (run_dir / "finetune").exists()
    qdir = home / "quarantine" / run_dir.name / "curated"
    batch = json.loads((qdir / "batch.json").read_text())
    curated = run_dir / "curate" / "records.jsonl"
    assert batch["rows"] == sum(1 for _ in open(curated)) == 280
    assert sha256_file(qdir / "records.jsonl") == sha256_file(curated)


def _webhook_receiver():
    """A real HTTP endpoint on 127.0.0.1 that records the JSON bodies posted to it."""
    import http.server
    import threading

    received = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, received


def test_malformed_input_file_fails_the_collect_task_with_one_message(tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text("text\tlabel\nsome sentence here\t1\n")
    home = tmp_path / "home"
    server, received = _webhook_receiver()
    env = {**_env(home), "LMCHAIN_WEBHOOK_URL": f"http://127.0.0.1:{server.server_port}/hook"}
    proc = subprocess.run(lmchain_cmd("demo", "--recipe", "tiny", "--set",
                                      f"collect.files=[{{path: {bad}, text_field: sentence}}]"),
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    server.shutdown()
    # The failure callback told the webhook which task failed, and why, once (no retries).
    assert [(r["dag_id"], r["task_id"]) for r in received] == [("lmchain_pipeline", "collect")], received
    assert "has no column 'sentence'" in received[0]["message"]
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and "failed at stage collect" in err[0]
    assert f"{bad} has no column 'sentence' (columns: text, label)" in err[0]
    (run_dir,) = list((home / "runs").iterdir())
    assert not (run_dir / "collect").exists() and not (run_dir / "curate").exists()
