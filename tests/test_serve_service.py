"""The service's parts without a server or a model: PredictorService driven in an event loop, the
routes through FastAPI's TestClient, and the one loader of registered models. A stand-in
predictor takes the model's place (no torch), so the module runs in a few seconds."""

import asyncio
import threading
import time

import pytest
from fastapi.testclient import TestClient

from lmchain.config import ServeConfig
from lmchain.home import Home
from lmchain.serve import registered
from lmchain.serve.app import create_app
from lmchain.serve.auth import new_key
from lmchain.serve.batcher import Overloaded
from lmchain.serve.feedback import FeedbackRejected
from lmchain.serve.routes import ROUTES
from lmchain.serve.schemas import request_models
from lmchain.serve.service import FeedbackStoreFailed, NotReady, PredictorService
from lmchain.serve.slot import Loaded
from lmchain.serve.store import DuplicateFeedback

LOCAL = "http://localhost"


class Echo:
    """'pos' for texts with 'good' in them, else 'neg'; ``gate`` (when set) holds each call until released."""

    labels = ["neg", "pos"]

    def __init__(self, gate: threading.Event | None = None):
        self.gate = gate
        self.started = threading.Event()
        self.calls: list[list[str]] = []

    def predict(self, texts):
        self.calls.append(list(texts))
        self.started.set()
        if self.gate is not None:
            assert self.gate.wait(10), "test never released the model"
        out = []
        for t in texts:
            best = int("good" in t)
            out.append({"label": self.labels[best], "label_id": best,
                        "scores": {"neg": 1.0 - best, "pos": float(best)}})
        return out


def _loaded(predictor=None, version="3") -> Loaded:
    return Loaded("m", version, "fp32", predictor or Echo(), time.time())


def _settings(tmp_path, **kw) -> ServeConfig:
    return ServeConfig(store_url=f"sqlite:///{tmp_path / 'store.db'}", spill_path=str(tmp_path / "spill.jsonl"),
                       **kw)


def _stand_in(service: PredictorService, loaded: Loaded | None, error: str | None) -> PredictorService:
    def load_sync(version=None):  # what ModelSlot would load from the folder, without torch
        if error:
            raise RuntimeError(error)
        return loaded or _loaded()

    service.slot.load_sync = load_sync
    return service


def _service(tmp_path, loaded: Loaded | None = None, error: str | None = None, **kw) -> PredictorService:
    service = PredictorService(_settings(tmp_path, **kw), model_dir=tmp_path, home=Home.at(tmp_path / "home"))
    return _stand_in(service, loaded, error)


async def _until(condition, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        await asyncio.sleep(0.005)


# --------------------------------------------------------------------------- the service, no HTTP


def test_not_ready_says_loading_then_why_the_load_failed(tmp_path):
    service = _service(tmp_path, error="no weights here")
    with pytest.raises(NotReady, match="^model is loading$"):
        service.ready_model()

    async def scenario():
        async with service.running():
            await _until(lambda: service.slot.load_error is not None)
            with pytest.raises(NotReady, match="model failed to load: RuntimeError: no weights here"):
                await service.predict(["good"])

    asyncio.run(scenario())


def test_predict_answers_and_stores_every_text_then_feedback_takes_the_stored_answer(tmp_path):
    service = _service(tmp_path)

    async def scenario():
        async with service.running():
            await _until(lambda: service.slot.current is not None)
            assert service.readiness() == {"status": "ready", "model": "m", "version": "3", "variant": "fp32"}
            body = await service.predict(["a good film", "a dull one"])
            record = await asyncio.to_thread(service.feedback, body["request_id"], 1, "pos")
            return body, record

    body, record = asyncio.run(scenario())
    assert [p["label"] for p in body["predictions"]] == ["pos", "neg"]
    assert (body["model"], body["version"], body["variant"]) == ("m", "3", "fp32") and len(body["request_id"]) == 32
    assert record["predicted_label"] == "neg" and record["text"] == "a dull one" and record["correct_label"] == "pos"
    rows = service.store.prediction(body["request_id"])  # the store was closed (drained) on the way out
    assert sorted((r["position"], r["label"]) for r in rows) == [(0, "pos"), (1, "neg")]
    assert service.store.count("feedback") == 1
    text = service.render_metrics().decode()
    assert "lmchain_predicted_texts_total 2.0" in text and "lmchain_feedback_total 1.0" in text
    assert 'lmchain_model_info{model="m",variant="fp32",version="3"} 1.0' in text


def test_feedback_refusals_are_typed(tmp_path):
    service = _service(tmp_path)

    async def scenario():
        async with service.running():
            await _until(lambda: service.slot.current is not None)
            rid = (await service.predict(["good"]))["request_id"]
            await asyncio.to_thread(service.feedback, rid, 0, "neg")
            with pytest.raises(DuplicateFeedback):
                await asyncio.to_thread(service.feedback, rid, 0, "pos")
            with pytest.raises(FeedbackRejected) as unknown:
                service.feedback("no-such-request", 0, "pos")
            assert unknown.value.status == 404
            with pytest.raises(FeedbackRejected) as label:
                service.feedback(rid, 0, "maybe")
            assert label.value.status == 422 and "not one of the model's labels" in label.value.detail

            def broken(record):
                raise RuntimeError("database is locked")

            service.store.add_feedback = broken
            rid2 = (await service.predict(["good"]))["request_id"]
            with pytest.raises(FeedbackStoreFailed):
                service.feedback(rid2, 0, "pos")

    asyncio.run(scenario())
    assert "lmchain_feedback_store_errors_total 1.0" in service.render_metrics().decode()


def test_a_full_queue_refuses_at_once_and_a_client_that_left_costs_no_model_time(tmp_path):
    gate = threading.Event()
    model = Echo(gate)
    service = _service(tmp_path, _loaded(model), max_batch_size=1, max_queue_texts=3, max_wait_ms=0)

    async def scenario():
        async with service.running():
            await _until(lambda: service.slot.current is not None)
            first = asyncio.create_task(service.predict(["good"]))
            await _until(model.started.is_set)  # the model is busy with the first text
            second = asyncio.create_task(service.predict(["x", "y"]))
            left = asyncio.Event()
            third = asyncio.create_task(service.predict(["never run"], client_gone=left.wait))
            await _until(lambda: service.batcher.waiting_texts == 3)
            assert service.queue_full()
            with pytest.raises(Overloaded):
                await service.predict(["z"])
            left.set()  # the client disconnects while its text still waits
            assert await third is None
            gate.set()
            return await first, await second

    first, second = asyncio.run(scenario())
    assert first["predictions"][0]["label"] == "pos" and len(second["predictions"]) == 2
    assert ["never run"] not in model.calls
    assert service.store.prediction(first["request_id"]) and not service.store.count("feedback")
    text = service.render_metrics().decode()
    assert "lmchain_overloaded_total 1.0" in text and "lmchain_disconnected_total 1.0" in text
    assert "lmchain_skipped_texts_total 1.0" in text


def test_reload_reports_a_swap_and_counts_it(tmp_path):
    service = _service(tmp_path)
    new = _loaded(version="4")

    async def refresh():
        service.slot.current = new
        return True

    async def scenario():
        async with service.running():
            await _until(lambda: service.slot.current is not None)
            service.slot.refresh = refresh
            return await service.reload()

    assert asyncio.run(scenario()) == {"swapped": True, "model": "m", "version": "4", "variant": "fp32"}
    text = service.render_metrics().decode()
    assert "lmchain_model_swaps_total 1.0" in text and 'version="4"} 1.0' in text


def test_request_models_carry_the_configured_limits():
    predict, feedback = request_models(ServeConfig(max_texts_per_request=2, max_chars_per_text=5))
    assert predict(texts=["12345", "a"]).texts == ["12345", "a"]
    for bad in ([], ["a", "b", "c"], ["123456"], [""]):
        with pytest.raises(ValueError):
            predict(texts=bad)
    with pytest.raises(ValueError):
        feedback(request_id="r", correct_label="pos", text="123456")
    assert feedback(request_id="r", correct_label="pos").position == 0


# --------------------------------------------------------------------------- the routes, through TestClient


def _client(tmp_path, loaded: Loaded | None = None, error: str | None = None,
            **kw) -> tuple[TestClient, PredictorService]:
    app = create_app(settings=_settings(tmp_path, **kw), model_dir=tmp_path, home=Home.at(tmp_path / "home"))
    return TestClient(app, base_url=LOCAL), _stand_in(app.state.service, loaded, error)


def _ready(client: TestClient) -> None:
    for _ in range(200):
        if client.get("/readyz").status_code == 200:
            return
        time.sleep(0.01)
    raise AssertionError("never ready")


def test_the_metrics_labels_are_the_service_routes(tmp_path):
    app = create_app(settings=_settings(tmp_path), model_dir=tmp_path, home=Home.at(tmp_path / "home"))
    served = {r.path for r in app.routes} - {"/docs", "/docs/oauth2-redirect", "/openapi.json", "/redoc"}
    assert served == ROUTES


def test_routes_map_refusals_to_status_codes_and_headers(tmp_path, monkeypatch):
    key, line = new_key()
    admin, admin_line = new_key()
    monkeypatch.setenv("LMCHAIN_API_KEY_HASHES", line)
    monkeypatch.setenv("LMCHAIN_ADMIN_KEY_HASHES", admin_line)
    client, service = _client(tmp_path, feedback_rate_per_s=0.001, feedback_burst=2)
    auth = {"X-API-Key": key}
    with client:
        assert client.get("/healthz").json() == {"status": "ok"}
        _ready(client)
        assert client.post("/v1/predict", json={"texts": ["good"]}).status_code == 401
        ok = client.post("/v1/predict", json={"texts": ["good"]}, headers=auth)
        assert ok.status_code == 200 and ok.headers["X-Request-ID"] == ok.json()["request_id"]
        rid = ok.json()["request_id"]
        fb = client.post("/v1/feedback", json={"request_id": rid, "correct_label": "neg"}, headers=auth)
        assert fb.status_code == 200 and fb.json()["predicted_label"] == "pos" and fb.json()["stored"]
        again = client.post("/v1/feedback", json={"request_id": rid, "correct_label": "pos"}, headers=auth)
        assert again.status_code == 409 and "never replaced" in again.json()["detail"]
        limited = client.post("/v1/feedback", json={"request_id": rid, "correct_label": "pos"}, headers=auth)
        assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
        assert client.post("/v1/admin/reload", headers=auth).status_code == 403
        assert client.post("/v1/admin/reload", headers={"Authorization": f"Bearer {admin}"}).json()["swapped"] is False
        service.slot.current = None  # as while a model loads
        busy = client.post("/v1/predict", json={"texts": ["good"]}, headers=auth)
        assert busy.status_code == 503 and busy.headers["Retry-After"] == "5" and busy.json()["detail"] == \
            "model is loading"
        assert client.get("/readyz").status_code == 503
        metrics = client.get("/metrics").text
    assert 'lmchain_requests_total{route="/v1/feedback",status="409"} 1.0' in metrics
    assert 'lmchain_rate_limited_total{route="/v1/feedback"} 1.0' in metrics


def test_a_failed_load_keeps_the_probes_up_and_says_why(tmp_path):
    client, _ = _client(tmp_path, error="weights missing")
    with client:
        for _ in range(200):
            ready = client.get("/readyz")
            if "failed" in ready.text:
                break
            time.sleep(0.01)
        assert ready.status_code == 503 and ready.json()["detail"] == \
            "model failed to load: RuntimeError: weights missing"
        assert client.get("/healthz").status_code == 200


# --------------------------------------------------------------------------- registered models


def test_registered_references_parse_or_say_what_they_should_look_like():
    assert registered.parse("models:/clf@champion") == ("clf", "champion", None)
    assert registered.parse("models:/team/clf/7") == ("team/clf", None, "7")
    for bad in ("clf@champion", "models:/clf", "/tmp/model"):
        with pytest.raises(ValueError, match="must look like models:/<name>@<alias> or models:/<name>/<version>"):
            registered.parse(bad)


def test_auto_serves_the_variant_the_deploy_stage_tagged(tmp_path):
    tagged = registered.RegisteredModel("clf", "2", tmp_path, {registered.VARIANT_TAG: "onnx-int8"})
    assert tagged.variant("auto") == "onnx-int8" and tagged.variant("onnx") == "onnx"
    assert registered.RegisteredModel("clf", "2", tmp_path).variant("auto") == "fp32"
    assert tagged.uri == "models:/clf/2"


class FakeRegistry:
    """The three registry calls resolve makes (a real, empty registry: test_annotate_weak's
    no-champion test; a real one with versions: test_serve, test_deploy, test_promotion)."""

    def __init__(self, tmp_path, holder=None):
        self.tmp_path, self.holder, self.calls = tmp_path, holder, []

    def champion(self, name, alias, home):
        self.calls.append(("alias", name, alias))
        return self.holder

    def resolve_model(self, uri, home):
        self.calls.append(("download", uri))
        return "ignored", "ignored", self.tmp_path / uri.rsplit("/", 1)[1]

    def client(self, home):
        calls = self.calls

        class Client:
            def get_model_version(self, name, version):
                calls.append(("tags", name, version))
                return type("MV", (), {"tags": {"by": "version"}})()

        return Client()


def _fake_registry(monkeypatch, tmp_path, holder=None) -> FakeRegistry:
    from lmchain import registry

    fake = FakeRegistry(tmp_path, holder)
    for name in ("champion", "resolve_model", "client"):
        monkeypatch.setattr(registry, name, getattr(fake, name))
    return fake


def test_an_alias_resolves_to_its_version_with_the_alias_lookups_tags(monkeypatch, tmp_path):
    held = type("MV", (), {"version": 5, "tags": {registered.VARIANT_TAG: "onnx"}})()
    fake = _fake_registry(monkeypatch, tmp_path, held)
    model = registered.resolve("models:/clf@champion", Home.at(tmp_path / "home"))
    assert model == registered.RegisteredModel("clf", "5", tmp_path / "5", {registered.VARIANT_TAG: "onnx"})
    assert fake.calls == [("alias", "clf", "champion"), ("download", "models:/clf/5")]  # no second tag lookup


def test_a_fixed_version_downloads_first_then_reads_its_tags(monkeypatch, tmp_path):
    fake = _fake_registry(monkeypatch, tmp_path)
    model = registered.resolve("models:/clf/7", Home.at(tmp_path / "home"))
    assert model is not None and (model.version, model.tags) == ("7", {"by": "version"})
    assert fake.calls == [("download", "models:/clf/7"), ("tags", "clf", "7")]


def test_an_alias_that_holds_no_version_resolves_to_none(monkeypatch, tmp_path):
    fake = _fake_registry(monkeypatch, tmp_path, holder=None)
    assert registered.resolve("models:/clf@champion", Home.at(tmp_path / "home")) is None
    assert registered.load("models:/clf@champion", Home.at(tmp_path / "home")) is None
    assert [c[0] for c in fake.calls] == ["alias", "alias"]  # nothing downloaded, no predictor built


def test_with_nothing_deployed_the_service_stays_up_not_ready_then_serves_the_first_champion(monkeypatch, tmp_path):
    """`lmchain serve` started before the pipeline ever deployed (the compose service is): it stays
    up, /readyz answers 503 with why (what the container's healthcheck reads), and the first
    champion is served once the deploy stage has written its record and moved the alias."""
    import json

    from lmchain import registry
    from lmchain.cli import _champion_uri
    from lmchain.errors import LmchainError

    fake = _fake_registry(monkeypatch, tmp_path)
    monkeypatch.setattr(registry, "validation_problem", lambda name, version, home: None)  # deploy-validated
    home = Home.at(tmp_path / "home")
    assert _champion_uri(None, home, follow_alias_s=10.0) is None  # the CLI lets the service wait
    with pytest.raises(LmchainError, match="follow_alias_s is 0"):
        _champion_uri(None, home, follow_alias_s=0.0)  # nothing would notice the deploy: refused as before
    app = create_app(settings=_settings(tmp_path, follow_alias_s=0.02), home=home)
    built = []
    app.state.service.slot._build = lambda name, version, folder, variant: built.append(version) or _loaded(
        version=version)

    def readyz_until(client, text):
        for _ in range(300):
            ready = client.get("/readyz")
            if text in ready.text:
                return ready
            time.sleep(0.01)
        raise AssertionError(f"/readyz never said {text!r}: {ready.text}")

    with TestClient(app, base_url=LOCAL) as client:
        waiting = readyz_until(client, "no deployment record")
        assert waiting.status_code == 503 and waiting.headers["Retry-After"] == "5"
        assert waiting.json()["detail"].startswith("no champion yet") and str(home.current_deployment) in waiting.text
        assert client.get("/healthz").status_code == 200
        assert client.post("/v1/predict", json={"texts": ["good"]}).status_code == 503
        home.current_deployment.parent.mkdir(parents=True, exist_ok=True)
        home.current_deployment.write_text(json.dumps({"model_uri": "models:/clf@champion"}))
        assert readyz_until(client, "points at no version").status_code == 503  # the record, no alias yet
        fake.holder = type("MV", (), {"version": 4, "tags": {}})()
        _ready(client)
        assert client.get("/readyz").json() == {"status": "ready", "model": "m", "version": "4", "variant": "fp32"}
        assert client.post("/v1/predict", json={"texts": ["good"]}).json()["predictions"][0]["label"] == "pos"
    assert built == ["4"] and ("download", "models:/clf/4") in fake.calls
