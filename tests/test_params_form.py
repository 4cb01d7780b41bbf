"""The trigger form's bounds at run time: form sources under the deployer's roots (after resolving
symbolic links and '..'), free overrides from the deployer's allow-list. The REST API refuses what
the form's JSON schema can see (tests/test_api_trigger.py); symbolic links are only visible on the
worker, so they fail the run's first task, with the message, through a real Airflow run."""

from __future__ import annotations

import os
import re

import pytest

from conftest import REPO
from lmchain.config import load_config
from lmchain.errors import ConfigError, LmchainError
from lmchain.params import DEFAULT_OVERRIDE_KEYS, check_overrides, check_sources, schema, to_overrides


@pytest.fixture
def roots(tmp_path, monkeypatch):
    inbox, outside = tmp_path / "inbox", tmp_path / "outside"
    (inbox / "docs").mkdir(parents=True)
    outside.mkdir()
    (inbox / "corpus.txt").write_text("a line of text\n")
    (inbox / "docs" / "a.txt").write_text("another line of text\n")
    (outside / "secret.txt").write_text("the worker's secret\n")
    monkeypatch.setenv("LMCHAIN_SOURCE_ROOTS", f"{inbox}{os.pathsep}{tmp_path / 'data'}")
    return inbox, outside


def test_sources_under_the_roots_pass(roots):
    inbox, _ = roots
    check_sources([str(inbox / "corpus.txt"), str(inbox / "docs"), f"{inbox}/**/*.txt", str(inbox / "missing.txt")])
    overrides = to_overrides({"recipe": "tiny", "sources": [str(inbox / "corpus.txt")]})
    assert str(inbox / "corpus.txt") in [f.path for f in load_config("tiny", overrides).collect.files]


@pytest.mark.parametrize("make, problem", [
    (lambda inbox, outside: str(outside / "secret.txt"), "outside the allowed folders"),
    (lambda inbox, outside: f"{inbox}/../outside/secret.txt", "outside the allowed folders"),
    (lambda inbox, outside: "secret.txt", "not an absolute path"),
    (lambda inbox, outside: f"{inbox}/${{HOME}}/x.txt", "$VARIABLES"),
    (lambda inbox, outside: "hf:glue", "not an absolute path"),
    (lambda inbox, outside: _link(inbox / "innocent.txt", outside / "secret.txt"), "outside the allowed folders"),
    (lambda inbox, outside: _link(inbox / "mirror", outside) + "/secret.txt", "outside the allowed folders"),
    (lambda inbox, outside: (_link(inbox / "docs" / "trap.txt", outside / "secret.txt"), f"{inbox}/docs/*.txt")[1],
     "through a symbolic link"),
    (lambda inbox, outside: (_link(inbox / "docs" / "sub", outside), str(inbox))[1], "through a symbolic link"),
])
def test_sources_outside_the_roots_are_refused_naming_the_field_and_roots(roots, make, problem):
    inbox, outside = roots
    source = make(inbox, outside)
    with pytest.raises(ConfigError) as err:
        to_overrides({"recipe": "tiny", "sources": [source]})
    message = str(err.value)
    assert message.startswith(f"sources: '{source}'") and problem in message and str(inbox) in message
    assert "LMCHAIN_SOURCE_ROOTS" in message and "secret" not in message.replace(source, "")


def _link(link, target) -> str:
    link.symlink_to(target)
    return str(link)


def test_overrides_are_limited_to_the_allow_list(monkeypatch):
    monkeypatch.delenv("LMCHAIN_OVERRIDE_KEYS", raising=False)
    check_overrides(["finetune.epochs=2", "annotate.seed=3", " evaluate.margin =0.01"])
    for item in ("deploy.service.store_url=sqlite:////tmp/x", "collect.files=[]", "finetune={hostfile: /x}",
                 "pretrain.hostfile=/etc/hosts", "collect.crawl.allow_networks=[0.0.0.0/0]"):
        with pytest.raises(ConfigError, match=r"^overrides: '.*' may not be set from the trigger form; allowed keys: "
                                              r"pretrain\.enabled, .*LMCHAIN_OVERRIDE_KEYS"):
            to_overrides({"recipe": "tiny", "overrides": [item]})
    # No path, host, URL, key file or command among the defaults.
    assert not [k for k in DEFAULT_OVERRIDE_KEYS if any(w in k for w in ("path", "host", "url", "file", "dir",
                                                                         "model", "command", "allow", "seeds"))]
    monkeypatch.setenv("LMCHAIN_OVERRIDE_KEYS", "finetune.*, curate.c4.enabled")
    check_overrides(["finetune.seed=1", "curate.c4.enabled=false"])
    with pytest.raises(ConfigError, match="allowed keys: finetune.\\*, curate.c4.enabled"):
        check_overrides(["annotate.seed=3"])
    assert "finetune\\.[A-Za-z0-9_.]*" in schema()["overrides"]["items"]["pattern"]
    monkeypatch.setenv("LMCHAIN_OVERRIDE_KEYS", "*")
    check_overrides(["deploy.service.store_url=sqlite:////tmp/x"])


def test_default_roots_are_the_recipes_data_folders(monkeypatch, tmp_path):
    from lmchain.params import source_roots

    monkeypatch.delenv("LMCHAIN_SOURCE_ROOTS", raising=False)
    monkeypatch.setenv("LMCHAIN_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("LMCHAIN_HOME", str(tmp_path / "home"))
    roots = source_roots()
    assert roots[0] == tmp_path / "data" and roots[-1] == tmp_path / "home" / "inbox"
    assert any(r.parts[-2:] == ("shared", "data") for r in roots)


def _recipe(folder, name="mine"):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text((REPO / "configs" / "tiny.yaml").read_text())
    return path


def test_a_recipe_by_path_must_be_a_yaml_file_in_a_recipe_folder(monkeypatch, tmp_path):
    from lmchain.params import check_recipe, recipes

    monkeypatch.delenv("LMCHAIN_RECIPE_ROOTS", raising=False)
    monkeypatch.setenv("LMCHAIN_HOME", str(tmp_path / "home"))
    mine = _recipe(tmp_path / "home" / "recipes")
    elsewhere = _recipe(tmp_path / "elsewhere", "other")
    (tmp_path / "home" / "recipes" / "link.yaml").symlink_to(elsewhere)
    (tmp_path / "home" / "recipes" / "notes.txt").write_text("not a recipe")
    check_recipe("tiny")  # a name of configs/
    check_recipe(str(mine))
    assert str(mine) in recipes() and "tiny" in recipes()  # the form offers both
    assert not any(r.endswith(("other.yaml", "notes.txt")) for r in recipes())
    for bad, problem in [(str(elsewhere), "not in a recipe folder"),
                         (str(tmp_path / "home" / "recipes" / "link.yaml"), "not in a recipe folder"),
                         ("home/recipes/mine.yaml", "neither a recipe name"),
                         (str(tmp_path / "home" / "recipes" / "notes.txt"), "neither a recipe name"),
                         ("/etc/passwd", "neither a recipe name"), ("nosuch", "neither a recipe name")]:
        with pytest.raises(ConfigError, match=re.escape(problem)) as err:
            check_recipe(bad)
        assert "LMCHAIN_RECIPE_ROOTS" in str(err.value) and "tiny" in str(err.value)
    monkeypatch.setenv("LMCHAIN_RECIPE_ROOTS", str(tmp_path / "elsewhere"))
    check_recipe(str(elsewhere))  # the deployer's folders replace the defaults
    with pytest.raises(ConfigError, match="not in a recipe folder"):
        check_recipe(str(mine))


def test_the_first_task_refuses_a_recipe_outside_the_folders(monkeypatch, tmp_path):
    monkeypatch.setenv("LMCHAIN_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("LMCHAIN_RECIPE_ROOTS", raising=False)
    outside = _recipe(tmp_path / "outside")
    with pytest.raises(ConfigError, match="not in a recipe folder"):
        to_overrides({"recipe": str(outside)})


def test_a_symlinked_source_fails_the_first_task_with_the_message(airflow_db, roots):
    from lmchain.artifacts import RunContext
    from lmchain.dagrun import run_pipeline_dag, task_instances

    inbox, outside = roots
    link = _link(inbox / "notes.txt", outside / "secret.txt")
    with pytest.raises(LmchainError) as err:
        run_pipeline_dag("tiny", [], {"sources": [link], "dry_run": True})
    message = str(err.value)
    assert f"sources: '{link}' is outside the allowed folders" in message, message
    run_id = re.search(r"run (\S+) failed", message)[1]
    states = {t["task_id"]: t["state"] for t in task_instances("lmchain_pipeline", run_id)}
    assert states["collect"] == "failed" and states["curate"] == "upstream_failed", states
    assert not (RunContext(run_id).run_dir / "collect").exists()
