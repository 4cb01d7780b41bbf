"""MLflow: the tracking store, one MLflow run per pipeline run, model versions and aliases.

Embedded default: an SQLite tracking/registry store at ``<home>/mlflow/mlflow.db`` with
artifacts under ``<home>/mlflow/artifacts``. With a tracking server configured (``Home.mlflow_uri``,
from MLFLOW_TRACKING_URI) the same calls go there instead (the scale-out path).

Every client is built with the home's URIs; nothing here sets MLflow's process-wide URIs. The
fluent API (``mlflow.start_run``, ``mlflow.log_*``, ``mlflow.pyfunc.log_model``) takes no
client, so the blocks that use it run inside :func:`fluent`, which points it at the home for
that block only.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import secrets
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from lmchain.artifacts import RunContext
from lmchain.errors import LmchainError
from lmchain.home import DEPLOY_KEY_ENV, Home

if TYPE_CHECKING:
    from mlflow import MlflowClient

RUN_TAG = "lmchain.run_id"
KIND_TAG = "lmchain.kind"  # "pipeline" on the parent run, "stage" on its children
# Set by the deploy stage on a model version that passed infra validation; the service follows
# an alias only onto versions that carry a valid one (see validation_problem).
VALIDATED_TAG = "lmchain.validated"
# MLflow's fluent API reads these when no process-wide URI is set (see fluent()).
_FLUENT_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


def tracking_uri(home: Home | None = None) -> str:
    return Home.of(home).tracking_uri


def artifact_root(home: Home | None = None) -> str:
    return Home.of(home).mlflow_artifacts.as_uri()


def _quiet() -> None:
    # Creating the SQLite store logs schema migrations at INFO on stderr: noise for a CLI whose
    # stderr is reserved for the one error line a user must read.
    for name in ("mlflow.store.db.utils", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


def client(home: Home | None = None) -> MlflowClient:
    """A client of the home's tracking store and registry (MLflow's global URIs are left alone)."""
    from mlflow import MlflowClient

    home = Home.of(home)
    _quiet()
    home.mlflow_dir.mkdir(parents=True, exist_ok=True)
    return MlflowClient(tracking_uri=home.tracking_uri, registry_uri=home.registry_uri)


@contextlib.contextmanager
def fluent(home: Home) -> Iterator[None]:
    """Point MLflow's fluent API at ``home``'s store for the block, then restore what was there.

    ``mlflow.start_run``, ``mlflow.log_*`` and ``mlflow.pyfunc.log_model`` take no client: each
    call resolves the URIs from MLflow's process-wide setting (its ``set_*_uri`` functions) or,
    without one, from MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI. Setting the process-wide URIs
    for good (as ``client()`` once did on every call) leaked one home's store into every later
    caller in the process; so the block gets the environment variables, restored on the way out
    (subprocesses started inside it, such as a training launch, inherit them as before).

    Scoped in time, not per thread: a block is one stage attempt in its own process (an Airflow
    task, a CLI command), where nothing else uses the fluent API meanwhile. A process-wide URI
    set by someone else would silently win over the environment, so it is refused.
    """
    import mlflow

    home.mlflow_dir.mkdir(parents=True, exist_ok=True)
    _quiet()
    saved = {key: os.environ.get(key) for key in _FLUENT_ENV}
    os.environ.update(dict(zip(_FLUENT_ENV, (home.tracking_uri, home.registry_uri))))
    try:
        found = (mlflow.get_tracking_uri(), mlflow.get_registry_uri())
        if found != (home.tracking_uri, home.registry_uri):
            raise LmchainError(
                f"MLflow's process-wide tracking/registry URIs {found}, set in this process, "
                f"override this home's store {home.tracking_uri}: lmchain logs to the home's store; "
                "reset both to None (mlflow.set_*_uri(None)) before calling it"
            )
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def is_local_store(uri: str) -> bool:
    """A database or folder on this machine, as opposed to a tracking server."""
    return not uri.startswith(("http://", "https://", "databricks"))


def experiment_id(name: str, home: Home | None = None) -> str:
    """Get or create the experiment.

    With a local store MLflow would put artifacts in ./mlruns of whatever directory the
    process runs in; they belong under the home. A tracking server decides for itself.
    """
    home = Home.of(home)
    c = client(home)
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = artifact_root(home) if is_local_store(home.tracking_uri) else None
    return c.create_experiment(name, artifact_location=location)


def pipeline_run_id(ctx: RunContext, experiment: str) -> str:
    """The MLflow run of this pipeline run: found by tag, created on first use (idempotent)."""
    c = client(ctx.home)
    exp_id = experiment_id(experiment, ctx.home)
    found = c.search_runs(
        [exp_id], filter_string=f"tags.`{RUN_TAG}` = '{ctx.run_id}' and tags.`{KIND_TAG}` = 'pipeline'", max_results=1
    )
    if found:
        return found[0].info.run_id
    run = c.create_run(
        exp_id,
        run_name=ctx.run_id,
        tags={RUN_TAG: ctx.run_id, KIND_TAG: "pipeline", "lmchain.run_dir": str(ctx.run_dir)},
    )
    return run.info.run_id


@contextlib.contextmanager
def active_run(ctx: RunContext, experiment: str) -> Iterator[Any]:
    """Resume the pipeline's MLflow run so that ``mlflow.log_*`` calls in the block land in it
    (the block runs inside :func:`fluent` for the run's home)."""
    import mlflow

    run_id = pipeline_run_id(ctx, experiment)
    with fluent(ctx.home), mlflow.start_run(run_id=run_id) as run:
        yield run


@contextlib.contextmanager
def stage_run(ctx: RunContext, experiment: str, stage: str, log_system_metrics: bool = False) -> Iterator[Any]:
    """A child run of the pipeline's run for one attempt of a stage.

    Params are immutable in MLflow; a fresh child per attempt lets a retried or re-run stage
    log its (possibly changed) params without clashing, and keeps every attempt visible.
    ``log_system_metrics``: MLflow samples CPU, memory (and GPU) use while the run is open.
    """
    import mlflow

    with active_run(ctx, experiment):
        # Without experiment_id a nested run lands in MLflow's Default experiment.
        with mlflow.start_run(
            run_name=stage,
            nested=True,
            experiment_id=experiment_id(experiment, ctx.home),
            tags={RUN_TAG: ctx.run_id, KIND_TAG: "stage", "lmchain.stage": stage},
            log_system_metrics=log_system_metrics or None,
        ) as run:
            yield run


def log_training(
    ctx: RunContext,
    experiment: str,
    prefix: str,
    metrics: dict[str, Any],
    params: dict[str, Any],
    run_name: str | None = None,
) -> str:
    """Params, loss curve and throughput of a training job, in the stage's child run (its id returned).
    Metric names carry ``prefix``; the child run is named ``run_name`` (default: the prefix), so
    search trials share metric names and MLflow can chart them side by side."""
    import mlflow

    with stage_run(ctx, experiment, run_name or prefix) as run:
        mlflow.log_params({f"{prefix}.{k}": v for k, v in params.items()})
        for step, loss in metrics.get("losses", []):
            mlflow.log_metric(f"{prefix}/loss", loss, step=int(step))
        for key in (
            "samples_per_second",
            "train_seconds",
            "wall_seconds",
            "final_loss",
            "mlm_loss",
            "perplexity",
            "mlm_accuracy",
        ):  # the last three: held-out LM metrics
            if key in metrics:
                mlflow.log_metric(f"{prefix}/{key}", float(metrics[key]))
        return run.info.run_id


def champion(name: str, alias: str = "champion", home: Home | None = None):
    """The version holding ``alias``, or None."""
    from mlflow.exceptions import MlflowException

    try:
        return client(home).get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def model_version(uri: str, c: MlflowClient) -> tuple[str, str]:
    """``models:/name@alias`` or ``models:/name/version`` -> (name, version), an alias resolved
    with ``c``."""
    ref = uri.removeprefix("models:/")
    if not uri.startswith("models:/") or not ("@" in ref or "/" in ref):
        raise ValueError(f"model URI {uri!r} must look like models:/<name>@<alias> or models:/<name>/<version>")
    if "@" in ref:
        name, alias = ref.split("@", 1)
        return name, str(c.get_model_version_by_alias(name, alias).version)
    name, version = ref.rsplit("/", 1)
    return name, version


def model_dir_from_uri(uri: str, dst: Path | None = None, home: Home | None = None) -> Path:
    """Download a registered model's files (``models:/name/version`` or ``models:/name@alias``)
    into ``dst`` (default: a new temp folder) and return that folder."""
    import tempfile

    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    home = Home.of(home)
    # mlflow.artifacts.download_artifacts resolves models:/ URIs with MLflow's process-wide
    # registry URI, whatever registry_uri it is given: resolved here with the home's client, then
    # read from where the version's files are (the same repository MLflow would use).
    c = client(home)
    name, version = model_version(uri, c)
    repo = get_artifact_repository(
        c.get_model_version_download_uri(name, version), tracking_uri=home.tracking_uri, registry_uri=home.registry_uri
    )
    target = Path(dst) if dst else Path(tempfile.mkdtemp(prefix="lmchain-model-"))
    target.mkdir(parents=True, exist_ok=True)
    return Path(repo.download_artifacts("", dst_path=str(target)))


def resolve_model(model_uri: str, home: Home | None = None) -> tuple[str, str, Path]:
    """``models:/name@alias`` or ``models:/name/version`` -> (name, version, local model folder).

    Downloads once into ``<home>/serving/<name>/v<version>``; later calls reuse it.
    """
    from lmchain.artifacts import attempt_path, publish_dir

    home = Home.of(home)
    name, version = model_version(model_uri, client(home))
    target = home.model_cache(name, version)
    if not target.is_dir():
        tmp = attempt_path(target)  # services resolving the same version at once: one download each
        tmp.mkdir(parents=True)
        model_dir_from_uri(f"models:/{name}/{version}", tmp, home)
        if target.is_dir():  # another one finished first: keep its folder (variants may be built in it)
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            publish_dir(tmp, target)
    configs = sorted(target.glob("artifacts/*/config.json"))
    if not configs:
        raise ValueError(f"{model_uri} (downloaded to {target}) holds no transformers model folder")
    return name, version, configs[0].parent


def local_model(model_uri: str, home: Home | None = None) -> Path:
    """The local transformers folder of a registered model."""
    return resolve_model(model_uri, home)[2]


# --------------------------------------------------------------------------- deploy validation tags
#
# The tag holds an HMAC over what identifies the version (name, number, run id, source) and who
# validated it when, keyed by the deploy key. Whoever can write to the registry can still move
# the alias, but without the key cannot make the service load what the deploy stage never
# validated, nor copy a tag from a validated version onto another.


def deploy_key_file(home: Home | None = None) -> Path:
    return Home.of(home).deploy_key_file


def deploy_key(create: bool = False, home: Home | None = None) -> bytes | None:
    """The home's deploy key (LMCHAIN_DEPLOY_KEY), else its key file (made, mode 0600, when ``create``)."""
    home = Home.of(home)
    if home.deploy_key_value:
        return home.deploy_key_value.encode()
    path = home.deploy_key_file
    if not path.is_file() and create:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(f".deploy.key.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32) + "\n")
        try:
            os.link(tmp, path)  # fails if another process made it first: both then use that one
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return path.read_bytes().strip() if path.is_file() else None


def _validation_digest(key: bytes, name: str, mv, claims: dict) -> str:
    message = json.dumps(
        {"name": name, "version": str(mv.version), "run_id": mv.run_id or "", "source": mv.source or "", **claims},
        sort_keys=True,
    )
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()


def mark_validated(name: str, version: str, *, pipeline_run: str, by: str = "deploy", home: Home | None = None) -> dict:
    """Tag ``version`` as validated by the deploy stage (call it before moving an alias onto it)."""
    from lmchain.artifacts import now_iso

    home = Home.of(home)
    c = client(home)
    mv = c.get_model_version(name, str(version))
    claims = {"by": by, "pipeline_run": pipeline_run, "at": now_iso()}
    key = deploy_key(create=True, home=home)
    assert key is not None  # create=True makes the key file when it is missing
    tag = {**claims, "hmac": _validation_digest(key, name, mv, claims)}
    c.set_model_version_tag(name, str(version), VALIDATED_TAG, json.dumps(tag, sort_keys=True))
    return tag


def validation_problem(name: str, version: str, home: Home | None = None) -> str | None:
    """Why ``version`` must not be served from an alias (None: the deploy stage validated it)."""
    home = Home.of(home)
    mv = client(home).get_model_version(name, str(version))
    raw = (mv.tags or {}).get(VALIDATED_TAG)
    if not raw:
        return (
            f"it has no {VALIDATED_TAG} tag: only the deploy stage, after infra validation, may put a version "
            "into service (run the pipeline's deploy stage, not a bare alias move)"
        )
    key = deploy_key(home=home)
    if key is None:
        return (
            f"no deploy key to check its {VALIDATED_TAG} tag: set {DEPLOY_KEY_ENV} to the deploy stage's key "
            f"(or share {home.deploy_key_file})"
        )
    try:
        tag = json.loads(raw)
        claims = {k: tag[k] for k in ("by", "pipeline_run", "at")}
        given = str(tag["hmac"])
    except (ValueError, TypeError, KeyError):
        return f"its {VALIDATED_TAG} tag is malformed"
    if not hmac.compare_digest(given, _validation_digest(key, name, mv, claims)):
        return (
            f"its {VALIDATED_TAG} tag does not verify: it was not written by the deploy stage for this "
            f"version, or {DEPLOY_KEY_ENV} changed since (re-run the deploy stage)"
        )
    return None
