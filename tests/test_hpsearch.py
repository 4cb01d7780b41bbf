"""Hyperparameter search: the trials, their validation, and a real search through Airflow's
dynamic task mapping (one mapped task per trial) on a tiny model."""

import json
import subprocess

import pytest

from conftest import REPO, lmchain_cmd, needs_sst2, subprocess_env
from lmchain.config import FinetuneConfig, SearchConfig, load_config
from lmchain.errors import ConfigError
from lmchain.train.hpsearch import trial_config, trial_settings


def test_grid_is_every_combination_in_a_fixed_order():
    search = SearchConfig(method="grid", space={"learning_rate": [1e-4, 5e-5], "epochs": [1, 2]})
    assert trial_settings(search) == [{"epochs": 1, "learning_rate": 1e-4}, {"epochs": 1, "learning_rate": 5e-5},
                                      {"epochs": 2, "learning_rate": 1e-4}, {"epochs": 2, "learning_rate": 5e-5}]
    assert trial_settings(SearchConfig()) == []  # off


def test_random_search_draws_distinct_trials_reproducibly():
    space = {"learning_rate": [1e-5, 3e-5, 1e-4, 3e-4], "batch_size": [16, 32, 64]}
    a = trial_settings(SearchConfig(method="random", space=space, trials=5, seed=3))
    b = trial_settings(SearchConfig(method="random", space=space, trials=5, seed=3))
    assert a == b and len(a) == 5 and len({json.dumps(t, sort_keys=True) for t in a}) == 5
    assert a != trial_settings(SearchConfig(method="random", space=space, trials=5, seed=4))
    # More trials than combinations: the whole grid, once each.
    assert len(trial_settings(SearchConfig(method="random", space={"epochs": [1, 2]}, trials=9))) == 2


def test_bad_searches_are_refused_with_the_key():
    with pytest.raises(ConfigError, match="finetune.search.space.learning_rat"):
        load_config("tiny", ["finetune.search.method=grid", "finetune.search.space={learning_rat: [1.0e-4]}"])
    with pytest.raises(ConfigError, match="finetune.search.space.epochs"):
        SearchConfig(method="grid", space={"epochs": []})
    with pytest.raises(ConfigError, match="max_trials"):
        trial_settings(SearchConfig(method="grid", space={"epochs": [1, 2, 3], "seed": [1, 2, 3]}, max_trials=8))
    # A candidate value the fine-tune config rejects names the search key and the field.
    cfg = FinetuneConfig(search=SearchConfig(method="grid", space={"batch_size": [0]}))
    with pytest.raises(ConfigError, match="finetune.batch_size"):
        trial_config(cfg, trial_settings(cfg.search)[0])


@needs_sst2
@pytest.mark.e2e
def test_search_runs_one_mapped_task_per_trial_and_keeps_the_best(tmp_path):
    home = tmp_path / "home"
    env = subprocess_env(home)
    overrides = ["pretrain.enabled=false", "finetune.base_model=tiny-bert", "finetune.search.method=grid",
                 "finetune.search.space={learning_rate: [1.0e-3, 1.0e-6]}"]
    code = ("import json, sys; from lmchain import airflow_env; from lmchain.home import Home; "
            "airflow_env.apply(Home.from_env()); airflow_env.ensure_db(Home.from_env()); "
            "from lmchain.dagrun import run_pipeline_dag; "
            "r = run_pipeline_dag('tiny', json.loads(sys.argv[1]), {'stop_after': 'finetune'}); "
            "print(json.dumps({'run_id': r.run_id, 'tasks': r.tasks}, default=str))")
    proc = subprocess.run([lmchain_cmd()[0], "-c", code, json.dumps(overrides)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    trials = [t for t in report["tasks"] if t["task_id"] == "finetune_trial"]
    assert sorted(t["map_index"] for t in trials) == [0, 1] and all(t["state"] == "success" for t in trials)
    assert [t["state"] for t in report["tasks"] if t["task_id"] == "evaluate"] == ["skipped"]

    run_dir = next((home / "runs").iterdir())
    chosen = json.loads((run_dir / "finetune" / "manifest.json").read_text())
    table = json.loads((run_dir / "finetune" / "search.json").read_text())
    scores = {row["trial"]: row["val_macro_f1"] for row in table["trials"]}
    assert len(scores) == 2
    best = table["best_trial"]
    assert scores[best] == max(scores.values()) and best == min(t for t, s in scores.items() if s == scores[best])
    trial_dir = run_dir / f"finetune_trial_{best:02d}"
    assert chosen["outputs"]["model"] == str(trial_dir / "model")
    assert (trial_dir / "model" / "model.safetensors").is_file()
    assert chosen["info"]["search"]["best_settings"] == json.loads((trial_dir / "manifest.json").read_text())[
        "info"]["settings"]
    assert (run_dir / "finetune" / "search.png").stat().st_size > 10_000
