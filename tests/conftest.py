"""Shared fixtures.

Airflow reads its configuration when first imported, so the whole session gets one
LMCHAIN_HOME (and with it AIRFLOW_HOME, the SQLite DB, the MLflow store) before any test
imports Airflow. Tests that need a fresh home of their own run lmchain in a subprocess.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SESSION_HOME = Path(tempfile.mkdtemp(prefix="lmchain-test-home-"))
os.environ["LMCHAIN_HOME"] = str(SESSION_HOME)
for key in [k for k in os.environ if k.startswith("AIRFLOW__") or k in ("AIRFLOW_HOME", "MLFLOW_TRACKING_URI")]:
    del os.environ[key]  # a developer's own Airflow/MLflow settings must not leak into tests

from lmchain import airflow_env  # noqa: E402

airflow_env.apply(SESSION_HOME)


# The longest modules, longest first (per-module times of a full run). `make test` runs three
# pytest-xdist workers that take whole modules in collection order; it passes
# --no-loadscope-reorder, as xdist would otherwise sort modules by their number of tests and run
# one-test modules such as test_nightly last. Starting these first keeps one long module from
# running alone at the end while the other workers idle.
LONGEST_FIRST = ("test_e2e.py", "test_scaleout.py", "test_train_finetune.py", "test_chain_quality.py",
                 "test_pretrain.py", "test_promotion.py", "test_plugin_auth.py", "test_feedback_noloss.py",
                 "test_nightly.py", "test_feedback.py", "test_hpsearch.py", "test_deploy.py", "test_gate.py", "test_up.py",
                 "test_pretrain_retry.py", "test_xss_e2e.py")


# The unit tier (`make test-unit`, under a minute): modules that start no server, Airflow,
# DeepSpeed rank or training job. A new module is left out until it is shown to be that fast.
UNIT_MODULES = frozenset({
    "test_annotate.py", "test_annotate_import.py", "test_annotate_weak.py", "test_artifacts.py", "test_collect.py",
    "test_compose.py", "test_config.py", "test_crawl_parts.py", "test_curate.py", "test_curate_dedup.py",
    "test_curate_filters.py", "test_curate_pii.py", "test_curate_text.py", "test_evaluate.py",
    "test_config_models.py", "test_gate_privacy.py", "test_pretrain_head.py", "test_schedule.py",
    "test_serve_service.py", "test_stages.py",
    "test_train_job.py", "test_train_parts.py", "test_bench_runner.py",
    "test_text_spans.py", "test_ner_sources.py", "test_curate_spans.py", "test_annotate_ner.py"})


def pytest_collection_modifyitems(items):
    for item in items:
        if item.path.name in UNIT_MODULES:
            item.add_marker(pytest.mark.unit)
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: file order otherwise kept


def sst2_dir() -> Path | None:
    from lmchain.datasets import sst2_dir as find
    from lmchain.errors import InputError

    try:
        return find(download=False)
    except InputError:
        return None


needs_sst2 = pytest.mark.skipif(sst2_dir() is None, reason="SST-2 not found (see README: data)")


def conll_dir() -> Path | None:
    from lmchain.datasets import conll_dir as find
    from lmchain.errors import InputError

    try:
        folder = find()
    except InputError:
        return None
    return folder if (folder / "valid.txt").is_file() else None


needs_conll = pytest.mark.skipif(conll_dir() is None, reason="CoNLL-2003 not found (see README: data)")


@pytest.fixture
def ctx(tmp_path):
    from lmchain.artifacts import RunContext

    return RunContext("test_run", home=tmp_path / "home")


@pytest.fixture(scope="session")
def airflow_db():
    airflow_env.ensure_db(SESSION_HOME)
    return SESSION_HOME


def subprocess_env(home: Path) -> dict[str, str]:
    """This process's environment for an lmchain subprocess with a home of its own: without the
    session's Airflow and MLflow settings, which the subprocess derives from LMCHAIN_HOME."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW") and k != "MLFLOW_TRACKING_URI"}
    env["LMCHAIN_HOME"] = str(home)
    return env


def sigkill_when(killed: list[int], *markers: str, ready=lambda: True, delay: float = 0.0,
                 stop: threading.Event | None = None, timeout: float = 600) -> None:
    """SIGKILL the first process whose command line holds every marker, once ``ready()`` is true
    (``delay`` seconds after finding it); its pid goes into ``killed``. Run in a thread beside the job."""
    import psutil

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not killed and not (stop and stop.is_set()):
        if ready():
            for proc in psutil.process_iter(["cmdline"]):
                if all(marker in " ".join(proc.info["cmdline"] or []) for marker in markers):
                    time.sleep(delay)
                    os.kill(proc.pid, signal.SIGKILL)
                    killed.append(proc.pid)
                    return
        time.sleep(0.2)


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_records(path: Path, records: list[dict]) -> Path:
    return write_lines(path, [json.dumps(r) for r in records])


def lmchain_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "lmchain.cli", *args]


# Skips CI may accept: things this project cannot install on a CI machine. Anything else that
# skips under LMCHAIN_NO_SKIPS=1 (set by .ci/run) fails the run, so that a missing data set,
# browser or service can never turn a broken chain into a green CI.
ALLOWED_CI_SKIPS = ("no docker CLI",)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("LMCHAIN_NO_SKIPS") != "1" or not report.skipped:
        return
    reason = str(report.longrepr[-1]) if isinstance(report.longrepr, tuple) else str(report.longrepr)
    if any(allowed in reason for allowed in ALLOWED_CI_SKIPS):
        return
    report.outcome = "failed"
    report.longrepr = (f"skipped under LMCHAIN_NO_SKIPS=1, which CI sets: {reason}\n"
                       "CI must be able to run this test: install what it needs in .ci/run or make setup")
