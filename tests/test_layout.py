"""Where state lives: only lmchain/home.py knows LMCHAIN_HOME, and MLflow URIs stay per client.

A path under the home built by hand somewhere else, or a process-wide MLflow URI set as a side
effect, is what let one home's state leak into another's (and a test work around it)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from lmchain.home import Home

pytestmark = pytest.mark.unit

PACKAGE = Path(__file__).resolve().parent.parent / "lmchain"


def package_files_holding(text: str) -> list[str]:
    hits = []
    for path in sorted(PACKAGE.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            try:
                if text in path.read_text(encoding="utf-8"):
                    hits.append(str(path.relative_to(PACKAGE.parent)))
            except UnicodeDecodeError:
                continue
    return hits


def test_only_home_py_names_lmchain_home():
    assert package_files_holding("LMCHAIN_HOME") == ["lmchain/home.py"]


@pytest.mark.parametrize("call", ["set_tracking_uri", "set_registry_uri"])
def test_nothing_in_lmchain_sets_mlflows_process_wide_uris(call):
    assert package_files_holding(call) == []


@pytest.mark.parametrize("call", ["unicodedata.normalize", "import ftfy", 'r"[^\\w\\s]'])
def test_only_text_py_normalises_text(call):
    """One definition of the normalised text and of the dedup key: a second, slightly different
    copy would let a test sentence leak into training or a label miss its corpus text."""
    assert package_files_holding(call) == ["lmchain/text.py"]


@pytest.mark.parametrize("call,owner", [("csv.reader", "lmchain/sources/files.py"),
                                        ("import pyarrow.parquet", "lmchain/sources/files.py"),
                                        ("load_from_disk", "lmchain/sources/hf.py")])
def test_user_files_are_read_in_lmchain_sources(call, owner):
    """Collect, curate, annotate and fine-tune read the files a user names through one reader, so
    a bad row is handled (and reported) the same way whichever stage reads it."""
    assert package_files_holding(call) == [owner]


def test_every_path_of_a_home_lies_under_its_root(tmp_path):
    home = Home.at(tmp_path / "home")
    paths = {name: getattr(home, name) for name, attr in vars(Home).items() if isinstance(attr, property)}
    paths = {name: p for name, p in paths.items() if isinstance(p, Path)}
    paths.update(run_dir=home.run_dir("manual__2026-01-01T00:00:00+00:00"),
                 quarantine_dir=home.quarantine_dir("../../escape", "curated"),
                 crawl_state=home.crawl_state("0123abcd"), model_cache=home.model_cache("m", "3"),
                 slash=home / "x")
    assert len(paths) > 30
    outside = {name: p for name, p in paths.items() if not p.resolve().is_relative_to(home.root.resolve())}
    assert outside == {}
    assert home.tracking_uri == f"sqlite:///{home.mlflow_db}" and home.store_url == f"sqlite:///{home.serving_db}"
    assert str(home) == os.fspath(home) == str(tmp_path / "home")


def test_settings_come_from_the_environment_once_in_home_py(tmp_path):
    env = {"LMCHAIN_HOME": str(tmp_path / "h"), "MLFLOW_TRACKING_URI": "http://mlflow:5000",
           "LMCHAIN_DEPLOY_KEY": "k", "LMCHAIN_DATA": str(tmp_path / "data"), "AIRFLOW_HOME": str(tmp_path / "af")}
    home = Home.from_env(env)
    assert home.root == (tmp_path / "h").resolve() and home.root.is_dir()
    assert home.tracking_uri == home.registry_uri == "http://mlflow:5000"
    assert home.deploy_key_value == "k" and home.data == tmp_path / "data"
    assert home.airflow_home == tmp_path / "af" and home.airflow == home.root / "airflow"
    # What a child process gets: the same home (AIRFLOW_HOME is Airflow's; airflow_env passes it on).
    assert Home.from_env(home.env()) == dataclasses.replace(home, airflow_home_value=None)


def test_a_run_context_given_a_path_gets_a_home_there(tmp_path):
    from lmchain.artifacts import RunContext

    ctx = RunContext("r:1", home=tmp_path / "h")
    assert isinstance(ctx.home, Home) and ctx.home == Home.at(tmp_path / "h")
    assert ctx.run_dir == tmp_path / "h" / "runs" / "r_1" and ctx.home / "x" == tmp_path / "h" / "x"


def _mlflow_uris():
    import mlflow

    return (mlflow.get_tracking_uri(), mlflow.get_registry_uri(),
            os.environ.get("MLFLOW_TRACKING_URI"), os.environ.get("MLFLOW_REGISTRY_URI"))


def test_a_registry_client_leaves_mlflows_uris_alone(tmp_path):
    from lmchain import registry

    before = _mlflow_uris()
    home = Home.at(tmp_path / "h")
    client = registry.client(home)
    assert client.tracking_uri == home.tracking_uri and client._registry_uri == home.registry_uri
    registry.client()
    assert _mlflow_uris() == before


def test_the_fluent_scope_points_mlflow_at_the_home_and_restores_it(tmp_path):
    import mlflow

    from lmchain import registry

    before = _mlflow_uris()
    home = Home.at(tmp_path / "h")
    with registry.fluent(home):
        assert (mlflow.get_tracking_uri(), mlflow.get_registry_uri()) == (home.tracking_uri, home.registry_uri)
    assert _mlflow_uris() == before
    with pytest.raises(RuntimeError), registry.fluent(home):
        raise RuntimeError("the block failed")
    assert _mlflow_uris() == before
