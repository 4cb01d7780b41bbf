"""Issue 18's stored-script case end to end, on real servers on 127.0.0.1: a served prediction
whose text carries a script and an e-mail address gets a correction through /v1/feedback; the
feedback DAG (dag.test) holds that row in the operator's quarantine and merges the other 30;
no Data Docs page, GX result, validation file or MLflow artifact holds the script or the
address, and the plugin's pages answer 401 without an Airflow login (sandboxed either way)."""

import json
import re
import subprocess

import httpx
import pytest

import airflow_server
from conftest import REPO, lmchain_cmd
from lmchain.artifacts import RunContext, read_jsonl
from lmchain.feedback import labels_path
from lmchain.quality.gate import quarantine_dir
from lmchain.serve.auth import new_key
from serve_support import make_tiny_classifier, serve_process

XSS = "<img src=x onerror=alert(1)>"
EMAIL = "victim@example.com"
PLANTED = f"the film was great, write to {EMAIL} {XSS} for more"
SECRETS = (XSS.encode(), EMAIL.encode(), b"onerror=alert")


def good(i: int) -> str:
    return f"the film number {i} was a good story and the cast did it well"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """One LMCHAIN_HOME shared by `lmchain serve`, the feedback DAG and an Airflow api-server."""
    root = tmp_path_factory.mktemp("xss-e2e")
    home, env = airflow_server.prepare(root)
    model = make_tiny_classifier(root / "tiny")  # labels neg/pos
    key, key_hash = new_key()
    texts = [good(i) for i in range(15)] + [PLANTED] + [good(i) for i in range(15, 30)]
    with serve_process(home, "--model-dir", str(model), env={"LMCHAIN_API_KEY_HASHES": key_hash}) as (base, _):
        auth = {"X-API-Key": key}
        pred = httpx.post(base + "/v1/predict", json={"texts": texts}, headers=auth, timeout=120)
        assert pred.status_code == 200, pred.text
        body = pred.json()
        for position, p in enumerate(body["predictions"]):
            correct = "pos" if p["label"] == "neg" else "neg"
            fb = httpx.post(base + "/v1/feedback", headers=auth, timeout=60, json={
                "request_id": body["request_id"], "position": position, "correct_label": correct})
            assert fb.status_code == 200, fb.text
        # The feedback cannot smuggle a different text in: the stored prediction's text is used.
        forged = httpx.post(base + "/v1/feedback", headers=auth, timeout=60, json={
            "request_id": body["request_id"], "position": 0, "correct_label": "pos", "text": XSS})
        assert forged.status_code in (409, 422), forged.text
    run = subprocess.run(lmchain_cmd("feedback", "--recipe", "tiny", "--set", "annotate.label_names=[neg, pos]",
                                     "--set", "feedback.min_new_labels=1000"),
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    run_id = re.search(r"lmchain_feedback run (\S+):", run.stdout).group(1)
    server = airflow_server.start(root, home, env)
    passwords = json.loads((home / "airflow" / "simple_auth_manager_passwords.json.generated").read_text())
    yield home, run_id, server, passwords, texts
    server.stop()


def test_the_planted_row_is_held_and_the_other_30_merge(stack):
    home, run_id, _, _, texts = stack
    merged = {r["text"] for r in read_jsonl(labels_path(home))}
    assert len(merged) == 30 and not any(EMAIL in t for t in merged)
    (held,) = read_jsonl(quarantine_dir(home, run_id, "feedback") / "rows.jsonl")
    assert held["text"] == PLANTED and "expect_column_values_to_not_contain_pii" in held["reasons"]


def test_no_data_docs_page_gx_result_or_mlflow_artifact_holds_the_payload(stack):
    home, run_id, _, _, _ = stack
    docs = home / "gx" / "uncommitted" / "data_docs" / "local_site"
    pages = list(docs.rglob("*.html"))
    gx_results = list((home / "gx" / "uncommitted" / "validations").rglob("*.json"))
    mlflow_files = [p for p in (home / "mlflow").rglob("*") if p.is_file()]
    assert pages and gx_results and mlflow_files, "the gate published nothing to look at"
    assert any("feedback_gate" in str(p) for p in mlflow_files)
    # Raw text lives only where it must: the operator's quarantine, the service's own store and
    # the export the gate reads. Everything published (Data Docs, GX results, stage outputs,
    # MLflow's store and artifacts, Airflow's DB and task logs) is scanned byte for byte.
    raw_by_design = [home / "quarantine", home / "serving", RunContext(run_id, home=home).stage_dir("feedback_export")]
    leaks = [str(p) for p in home.rglob("*") if p.is_file() and not any(p.is_relative_to(d) for d in raw_by_design)
             and any(s in p.read_bytes() for s in SECRETS)]
    assert leaks == []


def test_the_plugin_pages_need_an_airflow_login_and_are_sandboxed(stack):
    home, run_id, server, passwords, _ = stack
    page = "/lmchain/data-docs/index.html"
    anonymous = httpx.get(server.base + page, timeout=30)
    assert anonymous.status_code == 401
    assert anonymous.headers["content-security-policy"].startswith("sandbox")
    tok = httpx.post(server.base + "/auth/token", json={"username": "admin", "password": passwords["admin"]},
                     timeout=60).json()["access_token"]
    docs = home / "gx" / "uncommitted" / "data_docs" / "local_site"
    for html in docs.rglob("*.html"):
        resp = httpx.get(f"{server.base}/lmchain/data-docs/{html.relative_to(docs)}",
                         headers={"Authorization": f"Bearer {tok}"}, timeout=30)
        assert resp.status_code == 200, (html, resp.status_code)
        assert resp.headers["content-security-policy"].startswith("sandbox")
        assert resp.headers["x-content-type-options"] == "nosniff"
        assert not any(s.decode() in resp.text for s in SECRETS)
    # The quarantine, which does hold the row, is not served at all (raw paths: no client-side
    # normalisation of '..').
    rows = quarantine_dir(home, run_id, "feedback") / "rows.jsonl"
    rel = rows.relative_to(home)
    with httpx.Client(headers={"Authorization": f"Bearer {tok}"}, timeout=30) as client:
        for path in (f"/lmchain/runs/../{rel}", f"/lmchain/runs/%2e%2e/{rel}", f"/lmchain/data-docs/../../../../{rel}"):
            resp = client.send(client.build_request("GET", httpx.URL(server.base + path)))
            # ('..' may reach Airflow's own UI page, which is fine: never the file.)
            assert EMAIL not in resp.text and "store_id" not in resp.text, (path, resp.status_code)
