"""The one place that knows LMCHAIN_HOME, the settings beside it, and every path under it.

A :class:`Home` is a value: a root folder plus the settings that decide where its MLflow store is
and which deploy key it uses. :meth:`Home.from_env` reads them from the environment, once, at
an entry point (a CLI command, an Airflow task, the service's app factory, a DAG file at parse
time); everything else receives the Home (or the one path it needs) as an argument. Library
functions whose ``home`` is optional (for tests, benchmarks and the REPL) take ``None`` to mean
``Home.from_env()``; lmchain's own code always passes one.

Layout (default root ``./.lmchain``, relative to the working directory, so that ``lmchain serve``
run from the repository root after ``lmchain demo`` finds the demo)::

    airflow/                Airflow home (SQLite metadata DB, logs) unless AIRFLOW_HOME says otherwise
    mlflow/mlflow.db        MLflow tracking + registry (SQLite), unless MLFLOW_TRACKING_URI names a server
    mlflow/artifacts/       MLflow artifacts of the embedded store
    gx/                     Great Expectations project (suites, checkpoints, Data Docs)
    quality/reference/      reference distributions of the gate's suites
    quarantine/<run>/<suite>/  batches and rows a gate held back (operator-only)
    runs/<run_id>/<stage>/  one folder per stage, with manifest.json
    crawl/<seeds>.sqlite    crawl state (validators, frontier) per set of seeds
    curate_index/<name>/    dedup history that runs share
    annotation/queue/, annotation/returned/   active-learning queues out, labelled files back
    tokenizers/             trained tokenizers, by corpus hash
    feedback/               merged feedback labels, the watermark, the retrain trigger's state
    serving/store.db        the service's predictions and feedback (SQLite default)
    serving/<name>/v<N>/    registered model versions downloaded for serving
    serving/variants/       ONNX variants built from model folders
    deployments/current.json  what the deploy stage put into service
    secrets/                generated keys and passwords (deploy.key, ...)
    data/sst2/              SST-2, when downloaded
    inbox/                  files a user drops for the trigger form's source paths
    logs/                   `lmchain up`'s service logs
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

HOME_ENV = "LMCHAIN_HOME"
DATA_ENV = "LMCHAIN_DATA"
DEPLOY_KEY_ENV = "LMCHAIN_DEPLOY_KEY"
TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
AIRFLOW_HOME_ENV = "AIRFLOW_HOME"


def safe_run_id(run_id: str) -> str:
    """Airflow run ids carry ':' and '+'; keep folder names portable."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", run_id).strip("_") or "run"


@dataclass(frozen=True)
class Home:
    """An lmchain home: its root folder, the settings read with it, and every path under it.

    ``home / "x"``, ``str(home)`` and ``os.fspath(home)`` act on the root, as on the Path that
    a Home replaced; lmchain's own code uses the named paths below instead.
    """

    root: Path
    # MLFLOW_TRACKING_URI: a tracking server (the scale-out path). None: the embedded SQLite store.
    mlflow_uri: str | None = None
    # LMCHAIN_DEPLOY_KEY: the key of deploy validation tags. None: the key file under secrets/.
    deploy_key_value: str | None = None
    # LMCHAIN_DATA: where a user keeps data sets (SST-2), searched first.
    data: Path | None = None
    # AIRFLOW_HOME as exported (None: the airflow/ folder below, which airflow_env exports).
    airflow_home_value: Path | None = None

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Home:
        """The home the environment names (LMCHAIN_HOME, default ``./.lmchain``), created if missing,
        with MLFLOW_TRACKING_URI, LMCHAIN_DEPLOY_KEY, LMCHAIN_DATA and AIRFLOW_HOME."""
        env = os.environ if environ is None else environ
        root = Path(env.get(HOME_ENV) or Path.cwd() / ".lmchain").resolve()
        root.mkdir(parents=True, exist_ok=True)
        return cls(
            root,
            mlflow_uri=env.get(TRACKING_URI_ENV) or None,
            deploy_key_value=env.get(DEPLOY_KEY_ENV) or None,
            data=Path(env[DATA_ENV]) if env.get(DATA_ENV) else None,
            airflow_home_value=Path(env[AIRFLOW_HOME_ENV]) if env.get(AIRFLOW_HOME_ENV) else None,
        )

    @classmethod
    def at(cls, root: str | os.PathLike[str]) -> Home:
        """A home at ``root`` with the embedded defaults (nothing read from the environment)."""
        return cls(Path(root))

    @classmethod
    def of(cls, home: Home | str | os.PathLike[str] | None) -> Home:
        """``home`` as a Home: a Home as it is, a path as :meth:`at`, None as :meth:`from_env`."""
        if isinstance(home, Home):
            return home
        return cls.from_env() if home is None else cls.at(home)

    def env(self) -> dict[str, str]:
        """The environment that gives a child process this home (its :meth:`from_env` equals it)."""
        env = {HOME_ENV: str(self.root), TRACKING_URI_ENV: self.tracking_uri}
        if self.deploy_key_value:
            env[DEPLOY_KEY_ENV] = self.deploy_key_value
        if self.data is not None:
            env[DATA_ENV] = str(self.data)
        return env

    # ------------------------------------------------------------------ the root, as a Path

    def __truediv__(self, part: str | os.PathLike[str]) -> Path:
        return self.root / part

    def __fspath__(self) -> str:
        return str(self.root)

    def __str__(self) -> str:
        return str(self.root)

    # ------------------------------------------------------------------ MLflow

    @property
    def mlflow_dir(self) -> Path:
        return self.root / "mlflow"

    @property
    def mlflow_db(self) -> Path:
        return self.mlflow_dir / "mlflow.db"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.mlflow_dir / "artifacts"

    @property
    def mlflow_auth_db(self) -> Path:
        return self.mlflow_dir / "auth.db"

    @property
    def mlflow_auth_dir(self) -> Path:
        return self.mlflow_dir / "auth"

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_uri or f"sqlite:///{self.mlflow_db}"

    @property
    def registry_uri(self) -> str:
        # The registry lives in the tracking store, embedded or on the server alike.
        return self.tracking_uri

    # ------------------------------------------------------------------ Airflow

    @property
    def airflow(self) -> Path:
        """The Airflow home lmchain points Airflow at (exported by airflow_env unless set)."""
        return self.root / "airflow"

    @property
    def airflow_home(self) -> Path:
        """The Airflow home in effect: AIRFLOW_HOME as exported, else :attr:`airflow`."""
        return self.airflow_home_value or self.airflow

    # ------------------------------------------------------------------ runs and data quality

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    def run_dir(self, run_id: str) -> Path:
        return self.runs / safe_run_id(run_id)

    @property
    def gx(self) -> Path:
        return self.root / "gx"

    @property
    def data_docs(self) -> Path:
        """The static Data Docs site that the checkpoints rebuild."""
        return self.gx / "uncommitted" / "data_docs" / "local_site"

    @property
    def quality_reference(self) -> Path:
        return self.root / "quality" / "reference"

    @property
    def quarantine(self) -> Path:
        return self.root / "quarantine"

    def quarantine_dir(self, run_id: str, suite: str) -> Path:
        return self.quarantine / safe_run_id(run_id) / suite

    # ------------------------------------------------------------------ collect, curate, annotate, train

    @property
    def crawl(self) -> Path:
        return self.root / "crawl"

    def crawl_state(self, key: str) -> Path:
        return self.crawl / f"{key}.sqlite"

    @property
    def curate_index(self) -> Path:
        return self.root / "curate_index"

    @property
    def annotation_queue(self) -> Path:
        return self.root / "annotation" / "queue"

    @property
    def annotation_returned(self) -> Path:
        return self.root / "annotation" / "returned"

    @property
    def tokenizers(self) -> Path:
        return self.root / "tokenizers"

    @property
    def inbox(self) -> Path:
        return self.root / "inbox"

    @property
    def recipes(self) -> Path:
        """Users' own recipes, which the trigger form offers by path (beside configs/)."""
        return self.root / "recipes"

    @property
    def sst2_download(self) -> Path:
        return self.root / "data" / "sst2"

    # ------------------------------------------------------------------ feedback

    @property
    def feedback(self) -> Path:
        return self.root / "feedback"

    @property
    def feedback_labels(self) -> Path:
        return self.feedback / "labels.jsonl"

    @property
    def watermark(self) -> Path:
        return self.feedback / "watermark.json"

    @property
    def trigger_state(self) -> Path:
        """The feedback DAG's retrain trigger: what it decided last, and when."""
        return self.feedback / "trigger_state.json"

    # ------------------------------------------------------------------ serving and deploy

    @property
    def serving(self) -> Path:
        return self.root / "serving"

    @property
    def serving_db(self) -> Path:
        return self.serving / "store.db"

    @property
    def store_url(self) -> str:
        """The service's default store (SQLite under serving/)."""
        return f"sqlite:///{self.serving_db}"

    @property
    def spill_file(self) -> Path:
        """Where the service spills predictions its database did not take."""
        return self.serving / "unstored_predictions.jsonl"

    @property
    def variants(self) -> Path:
        return self.serving / "variants"

    def model_cache(self, name: str, version: str) -> Path:
        """A registered model version's files, downloaded once for serving."""
        return self.serving / name / f"v{version}"

    @property
    def deployments(self) -> Path:
        return self.root / "deployments"

    @property
    def current_deployment(self) -> Path:
        return self.deployments / "current.json"

    @property
    def secrets(self) -> Path:
        return self.root / "secrets"

    @property
    def deploy_key_file(self) -> Path:
        return self.secrets / "deploy.key"

    @property
    def logs(self) -> Path:
        return self.root / "logs"
