"""The stage registry: every DAG task is a module of lmchain/stages/ named as the task, and the task
calls that module's function (one jump from a task to its code); a blocked gate's manifest stops
every stage after it, in Airflow, in the runner and in `lmchain run --run-id` reuse."""

import json
import pkgutil
import subprocess
import sys

import pytest

from conftest import REPO, lmchain_cmd, subprocess_env, write_records
from lmchain import stages
from lmchain.artifacts import BLOCKED, Manifest, RunContext, write_json
from lmchain.config import load_config
from lmchain.errors import GateFailed
from lmchain.stages.runner import run_all, run_stage


@pytest.fixture(scope="module")
def dags():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.import_errors == {}
    return bag.dags


def _callable(task):
    # A mapped task keeps its callable among the partial kwargs.
    return getattr(task, "python_callable", None) or task.partial_kwargs["python_callable"]


@pytest.mark.parametrize("dag_id, package, registry", [
    ("lmchain_pipeline", "lmchain.stages", stages.PIPELINE),
    ("lmchain_feedback", "lmchain.stages.feedback", stages.FEEDBACK),
])
def test_every_task_is_a_stage_module_and_the_dag_calls_its_run(dags, dag_id, package, registry):
    dag = dags[dag_id]
    on_disk = {m.name for m in pkgutil.iter_modules(sys.modules[package].__path__) if m.name not in ("feedback",
                                                                                                     "runner")}
    assert on_disk == {stages.name(m) for m in registry}, "a module of lmchain/stages/ is missing from the registry"
    runs = set()
    for task in dag.tasks:
        fn = _callable(task).stage_run  # the one jump: the function the DAG names
        module = sys.modules[fn.__module__]
        assert module in registry
        if fn.__name__ == "run":
            assert module.__name__ == f"{package}.{task.task_id}", f"task {task.task_id} runs {module.__name__}"
            runs.add(task.task_id)
        else:  # another task of the stage: <stage>_<function>
            assert task.task_id == f"{stages.name(module)}_{fn.__name__}"
        assert getattr(module, fn.__name__) is fn
        # What the module declares is what the DAG wires: its inputs upstream, its assets as outlets.
        reads = getattr(fn, "reads", module.READS)
        assert set(reads) <= set(task.upstream_task_ids), f"{task.task_id} reads {reads}"
        assert sorted(a.name for a in task.outlets) == (sorted(module.ASSETS) if fn.__name__ == "run" else [])
        assert module.CONFIG is None or isinstance(module.CONFIG, str)
    assert runs == {stages.name(m) for m in registry}
    assert tuple(stages.name(m) for m in stages.PIPELINE) == stages.STAGES


def test_finetune_entry_points_are_named_tasks():
    assert [stages.task_id(f) for f in (stages.finetune.trials, stages.finetune.trial, stages.finetune.run)] == \
        ["finetune_trials", "finetune_trial", "finetune"]


# ---------------------------------------------------------------------------- a blocked gate stops the chain

TEXTS = [f"the film was a {adj} story about {noun} and the cast did it well in part {i}"
         for i, (adj, noun) in enumerate((a, n) for a in "good bad fine dull bright dark warm cold quick slow".split()
                                         for n in "people places families cities rivers towns".split())]


def _recipe(tmp_path):
    data = write_records(tmp_path / "data.jsonl", [{"text": t, "label": ["negative", "positive"][i % 2]}
                                                   for i, t in enumerate(TEXTS)])
    # 60 rows against a floor of 1000: the curated suite blocks.
    return ["collect.files=[{path: %s, text_field: text}]" % data,
            "annotate.labels=[{path: %s, text_field: text, label_field: label}]" % data,
            "gate.curated.min_rows=1000"]


def test_a_blocked_gate_stops_lmchain_run_reuse(tmp_path):
    home = tmp_path / "home"
    overrides = _recipe(tmp_path)
    cfg = load_config("tiny", overrides)
    with pytest.raises(GateFailed, match="expect_table_row_count_to_be_between"):
        run_all(cfg, "r1", ("collect", "curate", "gate"), lmchain_home=home)
    ctx = RunContext("r1", home=home)
    assert Manifest.read(ctx.stage_dir("gate")).status == BLOCKED  # published, as evidence, and marked

    # The CLI, asked to go on from the gate's output of the same run: it refuses, and says what to do.
    out = subprocess.run(lmchain_cmd("run", "--recipe", "tiny", *[a for o in overrides for a in ("--set", o)],
                                     "--run-id", "r1", "--stages", "annotate,gate_labels"),
                         capture_output=True, text=True, env=subprocess_env(home), cwd=REPO, timeout=300)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "annotate cannot run: the gate stage of run r1 is blocked" in out.stderr
    assert "lmchain gate --accept r1 --suite curated" in out.stderr and "--stages gate," in out.stderr
    assert not ctx.stage_dir("annotate").exists()

    # Asked to rerun the gate too: it stops again at the gate.
    with pytest.raises(GateFailed, match="data-quality gate blocked run r1"):
        run_all(cfg, "r1", ("gate", "annotate"), lmchain_home=home)
    assert not ctx.stage_dir("annotate").exists()


def _fake(ctx, stage, status="ok"):
    write_json(ctx.stage_dir(stage) / "manifest.json", Manifest(stage=stage, run_id=ctx.run_id, status=status).to_dict())


def test_no_reuse_passes_a_blocked_gate_even_through_reused_outputs(tmp_path):
    """annotate's output of an earlier pass came through a gate that is blocked now: the review
    queue, which reads annotate only, must not run on it either."""
    home = tmp_path / "home"
    ctx = RunContext("r2", home=home)
    for stage in ("collect", "curate"):
        _fake(ctx, stage)
    _fake(ctx, "gate", BLOCKED)
    _fake(ctx, "annotate")
    with pytest.raises(GateFailed, match="review_queue cannot run: the gate stage of run r2 is blocked"):
        run_all(load_config("tiny"), "r2", ("review_queue",), lmchain_home=home)
    assert not ctx.stage_dir("review_queue").exists()


def test_the_runner_refuses_a_blocked_manifest_as_input(tmp_path):
    """What a DAG task calls: a blocked upstream manifest (a gate that held its batch) is no input."""
    blocked = Manifest(stage="feedback_gate", run_id="r3", status=BLOCKED).to_dict()
    with pytest.raises(GateFailed, match="merge cannot run: the gate stage of run r3 is blocked"):
        run_stage(stages.feedback.merge.run, load_config("tiny"), "r3", {"gate": blocked},
                  lmchain_home=tmp_path / "home")
    assert not RunContext("r3", home=tmp_path / "home").stage_dir("feedback_merge").exists()


def test_manifests_without_a_status_read_as_ok(tmp_path):
    """Manifests written before statuses existed still load (and are not blocked)."""
    data = Manifest(stage="curate", run_id="old").to_dict()
    del data["status"]
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    assert not Manifest.read(tmp_path).blocked


def test_the_summary_times_a_stage_with_its_helper_tasks_and_not_another_stages():
    from lmchain.summary import stage_seconds

    tasks = [
        {"task_id": "finetune_trials", "duration": 0.2},
        {"task_id": "finetune_trial", "map_index": 0, "duration": 100.0},
        {"task_id": "finetune_trial", "map_index": 1, "duration": 50.0},
        {"task_id": "finetune", "duration": 0.1},
        {"task_id": "gate", "duration": 3.0},
        {"task_id": "gate_labels", "duration": 2.0},
        {"task_id": "check_recipe", "duration": None},
    ]
    seconds = stage_seconds(tasks)
    assert seconds["finetune"] == pytest.approx(150.3)
    assert seconds["gate"] == 3.0 and seconds["gate_labels"] == 2.0
