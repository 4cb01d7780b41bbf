"""Runs triggered through a real Airflow api-server's REST API: params are validated against the
trigger form's JSON schema at trigger time, so a bad value never becomes a run. The DAG is parsed
with the deployer's bounds: sources under LMCHAIN_SOURCE_ROOTS, overrides of the default allow-list."""

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from lmchain.netutil import free_port

AIRFLOW = str(Path(sys.executable).with_name("airflow"))


@pytest.fixture(scope="module")
def roots(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("inbox")
    (root / "corpus.txt").write_text("a line of text to collect\n")
    return root


@pytest.fixture(scope="module")
def api(airflow_db, tmp_path_factory, roots):
    env = {**os.environ, "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True", "LMCHAIN_SOURCE_ROOTS": str(roots),
           # The form's schema depends on the environment it is parsed in; a dag.test() of an earlier
           # test may have stored its own less than 30 s ago, which reserialize would keep.
           "AIRFLOW__CORE__MIN_SERIALIZED_DAG_UPDATE_INTERVAL": "0"}
    env.pop("LMCHAIN_OVERRIDE_KEYS", None)  # the default allow-list
    subprocess.run([AIRFLOW, "dags", "reserialize"], check=True, capture_output=True, env=env, timeout=300)
    port = free_port("127.0.0.1")
    log = open(tmp_path_factory.mktemp("api") / "api-server.log", "w")
    proc = subprocess.Popen([AIRFLOW, "api-server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        assert proc.poll() is None, open(log.name).read()[-3000:]
        try:
            if httpx.get(base + "/api/v2/monitor/health", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "api-server not up in 180s"
        time.sleep(0.5)
    token = httpx.get(base + "/auth/token", timeout=30).json()["access_token"]
    client = httpx.Client(base_url=base + "/api/v2", headers={"Authorization": f"Bearer {token}"}, timeout=60)
    yield client
    client.close()
    proc.terminate()
    proc.wait(timeout=30)


def _trigger(api, conf):
    return api.post("/dags/lmchain_pipeline/dagRuns", json={"logical_date": None, "conf": conf})


def test_a_valid_form_creates_a_run_with_its_params(api):
    resp = _trigger(api, {"recipe": "tiny", "epochs": 2, "finetune_method": "lora", "stop_after": "gate",
                          "seeds": ["http://127.0.0.1:9/"], "dry_run": True})
    assert resp.status_code == 200, resp.text
    run = resp.json()
    assert run["conf"]["epochs"] == 2 and run["conf"]["finetune_method"] == "lora"
    assert api.delete(f"/dags/lmchain_pipeline/dagRuns/{run['dag_run_id']}").status_code == 204


def test_sources_under_the_roots_and_allowed_overrides_are_accepted(api, roots):
    resp = _trigger(api, {"recipe": "tiny", "sources": [str(roots / "corpus.txt"), f"{roots}/*.txt", str(roots)],
                          "overrides": ["finetune.learning_rate=1e-4", "annotate.seed=3"], "dry_run": True})
    assert resp.status_code == 200, resp.text
    assert api.delete(f"/dags/lmchain_pipeline/dagRuns/{resp.json()['dag_run_id']}").status_code == 204


@pytest.mark.parametrize("conf,field", [
    ({"epochs": -1}, "epochs"),
    ({"recipe": "no-such-recipe"}, "recipe"),
    ({"finetune_method": "qlora"}, "finetune_method"),
    ({"seeds": ["ftp://example.org/"]}, "seeds"),
    ({"promotion_margin": 2}, "promotion_margin"),
    ({"stop_after": "train"}, "stop_after"),
    ({"overrides": ["no equals sign"]}, "overrides"),
    # Files outside the source roots: the worker's secrets, a way out with '..', unexpanded names.
    ({"sources": ["/etc/passwd"]}, "sources"),
    ({"sources": ["{root}/../../../etc/passwd"]}, "sources"),
    ({"sources": ["{root}x/corpus.txt"]}, "sources"),  # a sibling whose name starts like the root
    ({"sources": ["corpus.txt"]}, "sources"),
    ({"sources": ["{root}/$HOME/.ssh/id_rsa"]}, "sources"),
    ({"sources": ["~/.ssh/id_rsa"]}, "sources"),
    # Keys off the allow-list: store URLs, key files, paths, hosts, commands.
    ({"overrides": ["deploy.service.store_url=sqlite:////tmp/x.db"]}, "overrides"),
    ({"overrides": ["deploy.service.api_keys_file=/tmp/keys"]}, "overrides"),
    ({"overrides": ["collect.files=[{path: /etc/passwd}]"]}, "overrides"),
    ({"overrides": ["finetune.hostfile=/etc/hosts"]}, "overrides"),
    ({"overrides": ["collect.crawl.allow_private_networks=true"]}, "overrides"),
    ({"overrides": ["finetune={epochs: 1, hostfile: /etc/hosts}"]}, "overrides"),
    ({"overrides": ["finetune.epochs=2", "deploy.host=0.0.0.0"]}, "overrides"),
])
def test_invalid_params_are_refused_at_trigger_time(api, roots, conf, field):
    conf = {k: [v.replace("{root}", str(roots)) for v in vs] if isinstance(vs, list) else vs for k, vs in conf.items()}
    before = api.get("/dags/lmchain_pipeline/dagRuns").json()["total_entries"]
    resp = _trigger(api, conf)
    assert resp.status_code == 400, resp.text
    assert field in resp.text
    assert api.get("/dags/lmchain_pipeline/dagRuns").json()["total_entries"] == before
