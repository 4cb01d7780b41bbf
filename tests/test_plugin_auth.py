"""The plugin's report pages on a real Airflow api-server (127.0.0.1, a home of its own): behind
Airflow's login, only evaluation reports and Data Docs, sandboxed.

Two servers: the simple auth manager (what `lmchain up` runs) and the FAB auth manager (what
compose runs, with its admin created by lmchain.compose_init from AIRFLOW_ADMIN_*)."""

import json
import secrets
import subprocess
import sys

import httpx
import jwt
import pytest

import airflow_server
from conftest import REPO

REPORT = "/lmchain/runs/r1/evaluate/report.html"
DOCS = "/lmchain/data-docs/index.html"
SERVED = [REPORT, "/lmchain/runs/r1/evaluate/confusion.png", DOCS, "/lmchain/data-docs/static/styles/docs.css",
          "/lmchain/data-docs/validations/curated/r1/page.html"]
# Everything else a run folder or the GX project holds, and ways around the allow-list.
NEVER = ["/lmchain/runs/r1/curate/rejects.jsonl", "/lmchain/runs/r1/collect/records.jsonl",
         "/lmchain/runs/r1/annotate/train.jsonl", "/lmchain/runs/r1/finetune/model/model.safetensors",
         "/lmchain/runs/r1/finetune/model/config.json", "/lmchain/runs/r1/evaluate/predictions.jsonl",
         "/lmchain/runs/r1/evaluate/manifest.json", "/lmchain/runs/r1/evaluate/", "/lmchain/runs/r1/",
         "/lmchain/runs/", "/lmchain/runs/r1/evaluate/report.html/", "/lmchain/runs/r1/evaluate/../curate/rejects.jsonl",
         "/lmchain/runs/r1/evaluate/%2e%2e/curate/rejects.jsonl", "/lmchain/runs/r1%2Fcurate/rejects.jsonl",
         "/lmchain/runs/r1/evaluate/..%2f..%2f..%2fsecret.txt", "/lmchain/runs/r1/evaluate/.hidden.png",
         "/lmchain/data-docs/validations/curated/r1/result.json", "/lmchain/data-docs/static/",
         "/lmchain/data-docs/link.html", "/lmchain/data-docs/%2e%2e/%2e%2e/%2e%2e/%2e%2e/secret.txt",
         "/lmchain/data-docs/..%2F..%2F..%2F..%2Fruns/r1/curate/rejects.jsonl"]
SECRET_MARK = "SECRET-ROW-4242"


def plant(home):
    """A run folder and a Data Docs site with what a real run leaves there."""
    run = home / "runs" / "r1"
    files = {
        "evaluate/report.html": "<!doctype html><h1>evaluation report</h1>",
        "evaluate/predictions.jsonl": SECRET_MARK, "evaluate/manifest.json": SECRET_MARK,
        "curate/rejects.jsonl": json.dumps({"text": f"call me at +1 555 0100 {SECRET_MARK}"}),
        "collect/records.jsonl": SECRET_MARK, "annotate/train.jsonl": SECRET_MARK,
        "finetune/model/model.safetensors": SECRET_MARK, "finetune/model/config.json": SECRET_MARK,
        "evaluate/.hidden.png": SECRET_MARK,
    }
    for rel, text in files.items():
        (run / rel).parent.mkdir(parents=True, exist_ok=True)
        (run / rel).write_text(text)
    (run / "evaluate" / "confusion.png").write_bytes(b"\x89PNG\r\n\x1a\nfigure")
    docs = home / "gx" / "uncommitted" / "data_docs" / "local_site"
    for rel, text in {"index.html": "<h1>Data Docs</h1>", "static/styles/docs.css": "body{}",
                      "validations/curated/r1/page.html": "<p>validation</p>",
                      "validations/curated/r1/result.json": SECRET_MARK}.items():
        (docs / rel).parent.mkdir(parents=True, exist_ok=True)
        (docs / rel).write_text(text)
    (docs / "link.html").symlink_to(run / "curate" / "rejects.jsonl")  # an allowed name, outside the site
    (home / "secret.txt").write_text(SECRET_MARK)


def assert_sandboxed(resp):
    assert resp.headers["content-security-policy"].startswith("sandbox"), resp.headers
    assert resp.headers["x-content-type-options"] == "nosniff"
    assert resp.headers["referrer-policy"] == "no-referrer" and resp.headers["cache-control"] == "no-store"


@pytest.fixture(scope="module")
def simple(tmp_path_factory):
    root = tmp_path_factory.mktemp("plugin-simple")
    # "nobody" has no role: the simple auth manager authenticates it and authorizes nothing.
    home, env = airflow_server.prepare(root, {"AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin,nobody:"})
    plant(home)
    server = airflow_server.start(root, home, env)
    passwords = json.loads((home / "airflow" / "simple_auth_manager_passwords.json.generated").read_text())
    yield server, passwords
    server.stop()


def token(base, username, password):
    resp = httpx.post(base + "/auth/token", json={"username": username, "password": password}, timeout=60)
    assert resp.status_code == 201, resp.text
    return resp.json()["access_token"]


def bearer(tok):
    return {"Authorization": f"Bearer {tok}"}


def test_without_a_valid_login_every_page_is_401(simple):
    server, _ = simple
    forged = jwt.encode({"sub": "admin", "role": "admin", "aud": "apache-airflow", "exp": 4102444800},
                        "not-the-servers-secret-" * 4, algorithm="HS512")
    for path in SERVED + NEVER[:3]:
        for headers in ({}, bearer("garbage"), bearer(forged), {"Cookie": f"_token={forged}"}):
            resp = httpx.get(server.base + path, headers=headers, timeout=30)
            assert resp.status_code == 401, (path, headers, resp.status_code, resp.text)
            assert SECRET_MARK not in resp.text and "log in" in resp.text
            assert_sandboxed(resp)


def test_a_logged_in_user_reads_reports_and_data_docs(simple):
    server, passwords = simple
    tok = token(server.base, "admin", passwords["admin"])
    for path in SERVED:
        resp = httpx.get(server.base + path, headers=bearer(tok), timeout=30)
        assert resp.status_code == 200, (path, resp.text)
        assert_sandboxed(resp)
    report = httpx.get(server.base + REPORT, headers=bearer(tok), timeout=30)
    assert "evaluation report" in report.text and report.headers["content-type"].startswith("text/html")
    # The UI's own session: the _token cookie set at login.
    resp = httpx.get(server.base + DOCS, cookies={"_token": tok}, timeout=30)
    assert resp.status_code == 200 and "Data Docs" in resp.text


def test_run_data_and_anything_off_the_allow_list_is_404(simple):
    server, passwords = simple
    tok = token(server.base, "admin", passwords["admin"])
    with httpx.Client(base_url=server.base, headers=bearer(tok), timeout=30) as client:
        for path in NEVER:
            # The raw path as written: no client-side normalisation of '..' or %2e%2e.
            resp = client.send(client.build_request("GET", httpx.URL(server.base + path)))
            assert resp.status_code == 404 and SECRET_MARK not in resp.text, (path, resp.status_code)
            assert_sandboxed(resp)
        assert client.post(REPORT).status_code == 405


def test_a_user_the_auth_manager_does_not_authorize_is_403(simple):
    server, passwords = simple
    tok = token(server.base, "nobody", passwords["nobody"])
    for path in SERVED:
        resp = httpx.get(server.base + path, headers=bearer(tok), timeout=30)
        assert resp.status_code == 403, (path, resp.status_code)
        assert_sandboxed(resp)


# --------------------------------------------------------------------------- FAB (compose's auth manager)


@pytest.fixture(scope="module")
def fab(tmp_path_factory):
    root = tmp_path_factory.mktemp("plugin-fab")
    home, env = airflow_server.prepare(root, {"AIRFLOW__CORE__AUTH_MANAGER": airflow_server.FAB})
    plant(home)
    admin_password = secrets.token_urlsafe(24)
    init = subprocess.run([sys.executable, "-m", "lmchain.compose_init", "airflow-admin"], capture_output=True,
                          text=True, timeout=300, cwd=REPO,
                          env={**env, "AIRFLOW_ADMIN_USERNAME": "boss", "AIRFLOW_ADMIN_PASSWORD": admin_password})
    assert init.returncode == 0 and "created Airflow admin 'boss'" in init.stdout, init.stdout + init.stderr
    server = airflow_server.start(root, home, env)
    public_password = secrets.token_urlsafe(24)
    made = server.airflow("users", "create", "--username", "guest", "--role", "Public", "--firstname", "g",
                          "--lastname", "g", "--email", "guest@localhost",
                          f"--password={public_password}")  # a password may start with "-"
    assert made.returncode == 0, made.stderr[-2000:]
    yield server, admin_password, public_password
    server.stop()


def test_fab_login_is_required_and_a_bad_password_is_refused(fab):
    server, admin_password, _ = fab
    assert httpx.get(server.base + "/api/v2/dags", timeout=30).status_code == 401
    for wrong in ("admin", admin_password[:-1], ""):
        resp = httpx.post(server.base + "/auth/token", json={"username": "boss", "password": wrong}, timeout=60)
        assert resp.status_code in (400, 401), (wrong, resp.status_code)
    # No default account: airflow/airflow and admin/admin do not exist.
    for user, password in (("airflow", "airflow"), ("admin", "admin")):
        resp = httpx.post(server.base + "/auth/token", json={"username": user, "password": password}, timeout=60)
        assert resp.status_code == 401
    tok = token(server.base, "boss", admin_password)
    assert httpx.get(server.base + "/api/v2/dags", headers=bearer(tok), timeout=30).status_code == 200


def test_fab_guards_the_plugin_pages(fab):
    server, admin_password, public_password = fab
    assert httpx.get(server.base + REPORT, timeout=30).status_code == 401
    admin = token(server.base, "boss", admin_password)
    resp = httpx.get(server.base + REPORT, headers=bearer(admin), timeout=30)
    assert resp.status_code == 200 and "evaluation report" in resp.text
    assert_sandboxed(resp)
    assert httpx.get(server.base + NEVER[0], headers=bearer(admin), timeout=30).status_code == 404
    guest = token(server.base, "guest", public_password)  # logged in, but the Public role reads nothing
    resp = httpx.get(server.base + REPORT, headers=bearer(guest), timeout=30)
    assert resp.status_code == 403 and SECRET_MARK not in resp.text


def test_rerunning_init_with_a_new_admin_password_rotates_it(fab):
    server, old, _ = fab
    new = secrets.token_urlsafe(24)
    init = subprocess.run([sys.executable, "-m", "lmchain.compose_init", "airflow-admin"], capture_output=True,
                          text=True, timeout=300, cwd=REPO,
                          env={**server.env, "AIRFLOW_ADMIN_USERNAME": "boss", "AIRFLOW_ADMIN_PASSWORD": new})
    assert init.returncode == 0 and "password reset" in init.stdout, init.stdout + init.stderr
    refused = httpx.post(server.base + "/auth/token", json={"username": "boss", "password": old}, timeout=60)
    assert refused.status_code == 401
    assert token(server.base, "boss", new)
