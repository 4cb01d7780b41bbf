"""Airflow UI links for lmchain: MLflow, the model service and the Great Expectations Data Docs.

The Data Docs site is a folder of static HTML under LMCHAIN_HOME; the plugin mounts it on the
Airflow API server at /lmchain/data-docs so it opens from the Airflow navigation. MLflow and
the service run as their own processes (`lmchain up`); their URLs come from
LMCHAIN_MLFLOW_URL and LMCHAIN_SERVE_URL.
"""

import os

from airflow.plugins_manager import AirflowPlugin

MLFLOW_URL = os.environ.get("LMCHAIN_MLFLOW_URL", "http://127.0.0.1:5000")
SERVE_URL = os.environ.get("LMCHAIN_SERVE_URL", "http://127.0.0.1:8000/docs")


def _data_docs_app():
    from fastapi import FastAPI
    from fastapi.staticfiles import StaticFiles

    from lmchain.artifacts import home
    from lmchain.quality import data_docs_dir

    site = data_docs_dir(home())
    site.mkdir(parents=True, exist_ok=True)  # empty until the first gate runs
    app = FastAPI(title="lmchain Data Docs")
    app.mount("/", StaticFiles(directory=str(site), html=True), name="data-docs")
    return app


class LmchainPlugin(AirflowPlugin):
    name = "lmchain"
    fastapi_apps = [{"app": _data_docs_app(), "url_prefix": "/lmchain/data-docs", "name": "lmchain Data Docs"}]
    external_views = [
        {"name": "MLflow (lmchain)", "href": MLFLOW_URL, "destination": "nav", "category": "lmchain"},
        {"name": "Model service (lmchain)", "href": SERVE_URL, "destination": "nav", "category": "lmchain"},
        {"name": "Data Docs (lmchain)", "href": "/lmchain/data-docs/index.html", "destination": "nav",
         "category": "lmchain"},
    ]
