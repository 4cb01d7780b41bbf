"""The service on real registered models (tiny BERT classifiers in a real MLflow store), served
by a real uvicorn server on 127.0.0.1 where concurrency matters."""

import concurrent.futures as cf
import json
import os
import threading
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from lmchain import registry
from lmchain.config import ServeConfig
from lmchain.errors import ConfigError
from lmchain.serve import variants
from lmchain.serve.app import create_app
from lmchain.serve.auth import ApiKeys, hash_key, new_key
from lmchain.serve.predictor import Predictor
from lmchain.serve.store import ServingStore
from serve_support import make_champion, make_tiny_classifier, register_version, running_server

LOCAL = "http://localhost"  # TestClient's default Host, testserver, is not an allowed host
TEXTS = ["a gripping film", "dull", "one of the best performances of the year, and a script to match",
         "i walked out", "not bad at all", "x"]


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    return make_tiny_classifier(tmp_path_factory.mktemp("tiny-cls"))


@pytest.fixture(scope="module")
def served(tiny_model_dir):
    """A registered model with a champion: (name, version)."""
    m = register_version(tiny_model_dir, "serve_1", 0.5, name="lmchain-serve-test")
    make_champion("lmchain-serve-test", m.info["version"])
    return "lmchain-serve-test", str(m.info["version"])


def _wait_ready(client: TestClient) -> dict:
    for _ in range(300):
        r = client.get("/readyz")
        if r.status_code == 200:
            return r.json()
        assert r.status_code == 503
        time.sleep(0.1)
    raise AssertionError("service never became ready")


def test_predictor_keeps_input_order(tiny_model_dir):
    p = Predictor(tiny_model_dir, batch_size=2)
    out = p.predict(TEXTS)
    assert len(out) == len(TEXTS) and all(set(r) == {"label", "label_id", "scores"} for r in out)
    assert out == [p.predict([t])[0] for t in TEXTS]


def test_onnx_variants_match_pytorch(tiny_model_dir):
    ref = Predictor(tiny_model_dir).predict(TEXTS)
    onnx = variants.load(tiny_model_dir, "onnx").predict(TEXTS)
    for a, b in zip(ref, onnx):
        assert abs(a["scores"]["pos"] - b["scores"]["pos"]) < 1e-4
    int8 = variants.load(tiny_model_dir, "onnx-int8")
    assert [set(p["scores"]) for p in int8.predict(TEXTS)] == [{"neg", "pos"}] * len(TEXTS)
    built = variants.variant_file(tiny_model_dir, "onnx-int8")
    assert built.is_file() and variants.build(tiny_model_dir, "onnx-int8") == built  # cached, not rebuilt
    with pytest.raises(variants.VariantError, match="unknown serving variant"):
        variants.load(tiny_model_dir, "int4")


def test_register_sets_challenger_and_leaves_champion_to_deploy(tiny_model_dir):
    first = register_version(tiny_model_dir, "promo_1", 0.70, name="lmchain-promo")
    assert first.info["promoted"] and first.info["alias"] == "challenger"
    assert registry.champion("lmchain-promo") is None  # deploy moves it, after infra validation
    make_champion("lmchain-promo", first.info["version"])
    kept = register_version(tiny_model_dir, "promo_2", 0.60, name="lmchain-promo", promote=False)
    assert not kept.info["promoted"] and kept.info["previous_champion"] == first.info["version"]
    client = registry.client()
    assert str(registry.champion("lmchain-promo").version) == str(first.info["version"])
    assert str(client.get_model_version_by_alias("lmchain-promo", "challenger").version) == str(kept.info["version"])
    again = register_version(tiny_model_dir, "promo_2", 0.60, name="lmchain-promo", promote=False)  # rerun
    assert again.info["version"] == kept.info["version"]
    version = client.get_model_version("lmchain-promo", str(kept.info["version"]))
    assert version.tags["lmchain.promoted"] == "false" and version.tags["lmchain.decision"] == "test decision False"
    assert version.tags["metric.accuracy"] == "0.6" and version.tags[registry.RUN_TAG] == "promo_2"
    assert version.tags["lineage.airflow.run_id"] == "promo_2" and "lineage.code_version" in version.tags
    exp = registry.client().get_experiment_by_name("lmchain")
    assert exp.artifact_location == registry.artifact_root()
    assert not (Path.cwd() / "mlruns").exists()


def test_service_predicts_stores_and_reports(served, tmp_path):
    name, version = served
    settings = ServeConfig(store_url=f"sqlite:///{tmp_path / 'store.db'}", max_texts_per_request=8,
                           max_chars_per_text=100)
    app = create_app(f"models:/{name}@champion", settings)
    with TestClient(app, base_url=LOCAL) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        assert _wait_ready(client)["version"] == version
        resp = client.post("/v1/predict", json={"texts": ["great film", "awful", "meh"]})
        assert resp.status_code == 200
        body = resp.json()
        assert body["model"] == name and body["version"] == version and body["variant"] == "fp32"
        assert resp.headers["x-request-id"] == body["request_id"] and len(body["request_id"]) == 32
        assert [p["label"] in ("neg", "pos") for p in body["predictions"]] == [True] * 3
        assert all(abs(sum(p["scores"].values()) - 1) < 1e-4 for p in body["predictions"])
        # Bad input: clear 4xx, never a 5xx.
        assert client.post("/v1/predict", json={"texts": []}).status_code == 422
        assert client.post("/v1/predict", json={"texts": ["x"] * 9}).status_code == 422
        too_long = client.post("/v1/predict", json={"texts": ["ok", "y" * 101]})
        assert too_long.status_code == 422 and "100 characters" in too_long.text
        assert client.post("/v1/predict", json={"text": "x"}).status_code == 422
        assert client.post("/v1/predict", content=b"not json", headers={"content-type": "application/json"}
                           ).status_code == 422
        fb = client.post("/v1/feedback", json={"request_id": body["request_id"], "position": 1, "correct_label": "neg",
                                               "comment": "clearly negative"})
        assert fb.status_code == 200 and fb.json()["stored"]
        assert fb.json()["predicted_label"] == body["predictions"][1]["label"]
        bad = client.post("/v1/feedback", json={"request_id": body["request_id"], "correct_label": "meh"})
        assert bad.status_code == 422 and "not one of the model's labels" in bad.text
        metrics = client.get("/metrics").text
    assert 'lmchain_requests_total{route="/v1/predict",status="200"} 1.0' in metrics
    assert 'lmchain_requests_total{route="/v1/predict",status="422"} 5.0' in metrics
    assert f'lmchain_model_info{{model="{name}",variant="fp32",version="{version}"}} 1.0' in metrics
    assert "lmchain_request_latency_seconds_bucket" in metrics and "lmchain_batch_size_count 1.0" in metrics
    store = ServingStore(settings.store_url)
    rows = store.prediction(body["request_id"])
    assert [r["text"] for r in rows] == ["great film", "awful", "meh"]
    assert [r["label"] for r in rows] == [p["label"] for p in body["predictions"]]
    (fb_row,) = store.feedback_since(0)
    assert fb_row["request_id"] == body["request_id"] and fb_row["correct_label"] == "neg"
    # Text and predicted label are the prediction's, not the client's.
    assert fb_row["text"] == "awful" and fb_row["predicted_label"] == rows[1]["label"] and fb_row["position"] == 1
    store.close()


def test_api_keys_are_required_when_configured(served, tmp_path, monkeypatch):
    name, _ = served
    key, line = new_key()
    other_key, other_line = new_key()
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"# ops team\n{line}\n")
    monkeypatch.setenv("LMCHAIN_API_KEY_HASHES", other_line)
    assert hash_key(key) == line and key not in keys_file.read_text()
    app = create_app(f"models:/{name}@champion", ServeConfig(api_keys_file=str(keys_file),
                                                              store_url=f"sqlite:///{tmp_path / 's.db'}"))
    payload = {"texts": ["fine"]}
    with TestClient(app, base_url=LOCAL) as client:
        _wait_ready(client)
        assert client.post("/v1/predict", json=payload).status_code == 401
        assert client.post("/v1/predict", json=payload, headers={"X-API-Key": "lmk_wrong"}).status_code == 401
        assert client.post("/v1/feedback", json={"request_id": "r", "correct_label": "pos"}).status_code == 401
        assert client.post("/v1/predict", json=payload, headers={"X-API-Key": key}).status_code == 200
        assert client.post("/v1/predict", json=payload, headers={"Authorization": f"Bearer {other_key}"}
                           ).status_code == 200
        assert client.get("/healthz").status_code == 200 and client.get("/metrics").status_code == 200
    keys_file.write_text("lmk_a-raw-key-by-mistake\n")
    with pytest.raises(ConfigError, match="not a 'sha256:<64 hex digits>' key hash"):
        ApiKeys.load(str(keys_file))


def test_request_texts_stay_out_of_logs(served, tmp_path, caplog):
    name, _ = served
    secret = "my account number is 12345 and I hate this film"
    with TestClient(create_app(f"models:/{name}@champion",
                               ServeConfig(store_url=f"sqlite:///{tmp_path / 's.db'}")), base_url=LOCAL) as client:
        _wait_ready(client)
        with caplog.at_level("DEBUG"):
            assert client.post("/v1/predict", json={"texts": [secret]}).status_code == 200
    assert secret not in caplog.text


def test_concurrent_requests_coalesce_and_feedback_is_never_lost(served, tmp_path):
    name, _ = served
    settings = ServeConfig(store_url=f"sqlite:///{tmp_path / 'store.db'}", max_wait_ms=20, max_batch_size=32,
                           feedback_rate_per_s=0)
    app = create_app(f"models:/{name}@champion", settings)
    n_requests, n_feedback, per_request = 64, 300, 5
    local = threading.local()  # one connection pool per thread: httpx clients are not shared safely

    def http() -> httpx.Client:
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=base, timeout=30)
        return local.client

    with running_server(app) as base:
        def predict(i):
            texts = [TEXTS[(i + k) % len(TEXTS)] for k in range(per_request)]
            r = http().post("/v1/predict", json={"texts": texts})
            return r.status_code, r.json()["predictions"][0]["label"], r.json()["request_id"]

        with cf.ThreadPoolExecutor(32) as pool:
            answers = list(pool.map(predict, range(n_requests)))
            named = [(rid, k) for _, _, rid in answers for k in range(per_request)][:n_feedback]

            def feedback(i):
                request_id, position = named[i]
                r = http().post("/v1/feedback", json={"request_id": request_id, "position": position,
                                                    "correct_label": "neg"})
                return r.status_code

            fb_status = list(pool.map(feedback, range(n_feedback)))
        metrics = httpx.get(base + "/metrics").text
    assert [s for s, _, _ in answers] == [200] * n_requests and fb_status == [200] * n_feedback
    # Same text, same label, whichever batch it landed in.
    by_text = {}
    for i, (_, label, _) in enumerate(answers):
        by_text.setdefault(TEXTS[i % len(TEXTS)], set()).add(label)
    assert all(len(labels) == 1 for labels in by_text.values())
    batches = float(next(l.split()[-1] for l in metrics.splitlines() if l.startswith("lmchain_batch_size_count")))
    assert batches < n_requests, f"{n_requests} concurrent requests ran as {batches} batches: no coalescing"
    store = ServingStore(settings.store_url)
    assert store.count("feedback") == n_feedback
    assert {(r["request_id"], r["position"]) for r in store.feedback_since(0)} == set(named)
    assert store.count("predictions") == n_requests * per_request  # answered only once stored
    store.close()


def test_hot_swap_under_load_fails_no_request(tiny_model_dir, tmp_path):
    name = "lmchain-swap-test"
    v1 = register_version(tiny_model_dir, "swap_1", 0.5, name=name).info["version"]
    make_champion(name, v1)
    v2_dir = make_tiny_classifier(tmp_path / "v2", seed=1)
    v2 = register_version(v2_dir, "swap_2", 0.6, name=name).info["version"]
    settings = ServeConfig(store_url=f"sqlite:///{tmp_path / 'store.db'}", follow_alias_s=0.2)
    app = create_app(f"models:/{name}@champion", settings)
    results: list[tuple[int, str]] = []
    stop = threading.Event()
    with running_server(app) as base:
        def client_loop():
            with httpx.Client(base_url=base, timeout=30) as http:
                while not stop.is_set():
                    r = http.post("/v1/predict", json={"texts": TEXTS[:3]})
                    results.append((r.status_code, r.json().get("version") if r.status_code == 200 else r.text))

        threads = [threading.Thread(target=client_loop) for _ in range(8)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        make_champion(name, v2)  # the alias moves while 8 clients keep sending
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(v == str(v2) for _, v in results[-20:]):
            time.sleep(0.1)
        time.sleep(0.5)
        stop.set()
        for t in threads:
            t.join()
        metrics = httpx.get(base + "/metrics").text
    failed = [r for r in results if r[0] != 200]
    versions = [v for _, v in results]
    assert not failed, failed[:3]
    assert str(v1) in versions and str(v2) in versions
    first_v2 = versions.index(str(v2))
    assert set(versions[first_v2 + 8 * 2:]) == {str(v2)}  # after the swap (and in-flight ones), only v2
    assert "lmchain_model_swaps_total 1.0" in metrics


@pytest.fixture(scope="module")
def keyed_server(served, tmp_path_factory):
    name, _ = served
    key, line = new_key()
    folder = tmp_path_factory.mktemp("schema")
    (folder / "keys").write_text(line + "\n")
    app = create_app(f"models:/{name}@champion", ServeConfig(api_keys_file=str(folder / "keys"),
                                                              store_url=f"sqlite:///{folder / 's.db'}"))
    with running_server(app) as base:
        yield base, key


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_openapi_fuzzing_finds_no_server_error(keyed_server, mode):
    """schemathesis generates valid (positive) and invalid (negative) requests for every operation
    of the served OpenAPI spec; none may get a 5xx, and none succeeds without a valid key."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis.checks import not_a_server_error
    from schemathesis.generation import GenerationMode

    base, key = keyed_server
    schema = schemathesis.openapi.from_url(base + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/predict", "/v1/feedback", "/readyz", "/metrics"}
    if mode == "negative":  # only operations that take input can be sent invalid input
        operations = [op for op in operations if op.path in ("/v1/predict", "/v1/feedback")]
    calls = []
    for op in operations:
        @given(case=op.as_strategy(generation_mode=GenerationMode(mode)))
        @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case):
            response = case.call(base_url=base, headers={"X-API-Key": key})
            case.validate_response(response, checks=[not_a_server_error])
            calls.append((op.path, response.status_code))
            if op.path in ("/v1/predict", "/v1/feedback", "/v1/admin/reload"):
                anonymous = case.call(base_url=base, headers={"X-API-Key": "lmk_not-a-key"})
                assert anonymous.status_code == 401 if response.status_code == 200 else anonymous.status_code >= 400

        check()
    assert not [c for c in calls if c[1] >= 500]
    if mode == "positive":  # valid requests do get through
        assert any(path == "/v1/predict" and status == 200 for path, status in calls)


def _postgres_url() -> str | None:
    import sqlalchemy as sa

    url = os.environ.get("LMCHAIN_TEST_POSTGRES", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")
    try:
        with sa.create_engine(url).connect() as conn:
            conn.execute(sa.text("select 1"))
        return url
    except Exception:
        return None


@pytest.mark.skipif(_postgres_url() is None, reason="PostgreSQL not reachable on 127.0.0.1:5432")
def test_store_on_postgresql_keeps_every_concurrent_feedback():
    import sqlalchemy as sa

    store = ServingStore(_postgres_url())
    with store.engine.begin() as conn:  # a clean slate: this database is shared with other tests
        conn.execute(sa.text("delete from feedback"))
        conn.execute(sa.text("delete from predictions"))

    def post(i):
        store.add_feedback({"feedback_id": f"pg{i}", "created_at": time.time(), "request_id": None,
                            "text": f"text {i}", "text_sha256": "0" * 64, "predicted_label": "pos",
                            "correct_label": "neg", "comment": None, "model": "m", "version": "1"})

    with cf.ThreadPoolExecutor(16) as pool:
        list(pool.map(post, range(200)))
    store.log_predictions([{"request_id": "r1", "position": i, "created_at": time.time(), "model": "m",
                            "version": "1", "variant": "fp32", "text_sha256": "0" * 64, "text": "t",
                            "label": "pos", "score": 0.9} for i in range(3)])
    assert store.flush()
    assert store.count("feedback") == 200 and len(store.prediction("r1")) == 3
    store.close()


def test_predictions_the_database_refuses_are_kept_in_a_spill_file(tmp_path):
    import sqlalchemy as sa

    store = ServingStore(f"sqlite:///{tmp_path / 'store.db'}", spill_path=tmp_path / "spill.jsonl", retry_delays=())
    with store.engine.begin() as conn:  # the table is gone: every insert now fails
        conn.execute(sa.text("drop table predictions"))
    row = {"request_id": "r1", "position": 0, "created_at": 1.0, "model": "m", "version": "1", "variant": "fp32",
           "text_sha256": "0" * 64, "text": "kept anyway", "label": "pos", "score": 0.9}
    store.log_predictions([row])
    assert store.flush()
    assert store.stats.unstored_rows == 1 and store.stats.spilled_rows == 1
    assert [json.loads(line)["text"] for line in (tmp_path / "spill.jsonl").read_text().splitlines()] == ["kept anyway"]
    store.close()
