"""Airflow UI for lmchain: links to MLflow, the model service, Data Docs and evaluation reports.

The Data Docs site and the run folders are static files under LMCHAIN_HOME; the plugin mounts
them on the Airflow API server (/lmchain/data-docs, /lmchain/runs) so they open from the
Airflow navigation and from the gate and evaluate tasks' extra links. MLflow and the service
run as their own processes (`lmchain up`); their URLs come from LMCHAIN_MLFLOW_URL and
LMCHAIN_SERVE_URL. These mounts are not behind Airflow's login: keep the API server on a
trusted network, as the default 127.0.0.1 setup does.
"""

import os

from airflow.plugins_manager import AirflowPlugin
from airflow.sdk.bases.operatorlink import BaseOperatorLink

MLFLOW_URL = os.environ.get("LMCHAIN_MLFLOW_URL", "http://127.0.0.1:5000")
SERVE_URL = os.environ.get("LMCHAIN_SERVE_URL", "http://127.0.0.1:8000/docs")


def _static_app(folder_of):
    from fastapi import FastAPI
    from fastapi.staticfiles import StaticFiles

    from lmchain.artifacts import home

    folder = folder_of(home())
    folder.mkdir(parents=True, exist_ok=True)  # empty until the first run writes into it
    app = FastAPI()
    app.mount("/", StaticFiles(directory=str(folder), html=True), name="files")
    return app


def _data_docs(home):
    from lmchain.quality import data_docs_dir

    return data_docs_dir(home)


class StageReportLink(BaseOperatorLink):
    """The gate task links to Data Docs; the evaluate task to its run's evaluation report."""

    name = "lmchain report"

    def get_link(self, operator, *, ti_key):
        from lmchain.artifacts import safe_run_id

        if ti_key.task_id == "evaluate":
            return f"/lmchain/runs/{safe_run_id(ti_key.run_id)}/evaluate/report.html"
        if ti_key.task_id == "gate":
            return "/lmchain/data-docs/index.html"
        return ""


class LmchainPlugin(AirflowPlugin):
    name = "lmchain"
    fastapi_apps = [
        {"app": _static_app(_data_docs), "url_prefix": "/lmchain/data-docs", "name": "lmchain Data Docs"},
        {"app": _static_app(lambda home: home / "runs"), "url_prefix": "/lmchain/runs", "name": "lmchain runs"},
    ]
    global_operator_extra_links = [StageReportLink()]
    external_views = [
        {"name": "MLflow (lmchain)", "href": MLFLOW_URL, "destination": "nav", "category": "lmchain"},
        {"name": "Model service (lmchain)", "href": SERVE_URL, "destination": "nav", "category": "lmchain"},
        {"name": "Data Docs (lmchain)", "href": "/lmchain/data-docs/index.html", "destination": "nav",
         "category": "lmchain"},
    ]
