"""The service on a real registered model: a tiny BERT classifier logged to a real MLflow store."""

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from lmchain import registry
from lmchain.artifacts import RunContext
from lmchain.config import RegisterConfig
from lmchain.register import run as register
from lmchain.serve.app import MAX_TEXTS, create_app
from lmchain.serve.predictor import Predictor
from lmchain.train.models import TINY_BERT, packaged_minilm


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    path = tmp_path_factory.mktemp("tiny-cls")
    config = AutoConfig.for_model(**TINY_BERT, num_labels=2, id2label={0: "neg", 1: "pos"},
                                  label2id={"neg": 0, "pos": 1})
    AutoModelForSequenceClassification.from_config(config).save_pretrained(path)
    AutoTokenizer.from_pretrained(packaged_minilm()).save_pretrained(path)
    return path


def _register(model_dir, run_id, accuracy, name="lmchain-serve-test", promote=True):
    ctx = RunContext(run_id, model_name=name)
    inputs = {"finetune": {"outputs": {"model": str(model_dir)}, "inputs": {"train": "t.jsonl", "base_model": "x"}},
              "evaluate": {"metrics": {"accuracy": accuracy, "macro_f1": accuracy},
                           "info": {"decision": {"promote": promote, "reason": f"test decision {promote}"}}}}
    return register(RegisterConfig(model_name=name), ctx, inputs)


def test_predictor_keeps_input_order(tiny_model_dir):
    p = Predictor(tiny_model_dir, batch_size=2)
    texts = ["a much longer text than the others here", "short", "medium length text"]
    out = p.predict(texts)
    assert len(out) == 3 and all(set(r) == {"label", "label_id", "scores"} for r in out)
    assert out == [p.predict([t])[0] for t in texts]


def test_register_moves_aliases_by_the_decision(tiny_model_dir):
    first = _register(tiny_model_dir, "promo_1", 0.70, name="lmchain-promo")
    assert first.info["promoted"] and first.info["alias"] == "champion"
    kept = _register(tiny_model_dir, "promo_2", 0.60, name="lmchain-promo", promote=False)
    assert not kept.info["promoted"] and kept.info["previous_champion"] == first.info["version"]
    client = registry.client()
    assert str(registry.champion("lmchain-promo").version) == str(first.info["version"])
    assert str(client.get_model_version_by_alias("lmchain-promo", "challenger").version) == str(kept.info["version"])
    again = _register(tiny_model_dir, "promo_2", 0.60, name="lmchain-promo", promote=False)  # rerun: same version
    assert again.info["version"] == kept.info["version"]
    version = client.get_model_version("lmchain-promo", str(kept.info["version"]))
    assert version.tags["lmchain.promoted"] == "false" and version.tags["lmchain.decision"] == "test decision False"
    assert version.tags["metric.accuracy"] == "0.6" and version.tags[registry.RUN_TAG] == "promo_2"
    assert version.tags["lineage.airflow.run_id"] == "promo_2" and "lineage.code_version" in version.tags
    # Artifacts live under LMCHAIN_HOME, not in ./mlruns of the working directory.
    exp = registry.client().get_experiment_by_name("lmchain")
    assert exp.artifact_location == registry.artifact_root()
    assert not (Path.cwd() / "mlruns").exists()


def test_service_predicts_one_label_per_text(tiny_model_dir):
    m = _register(tiny_model_dir, "serve_1", 0.5)
    with TestClient(create_app("models:/lmchain-serve-test@champion")) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["version"] == str(m.info["version"])
        resp = client.post("/v1/predict", json={"texts": ["great film", "awful", "meh"]})
        assert resp.status_code == 200
        body = resp.json()
        assert body["model"] == "lmchain-serve-test" and body["version"] == str(m.info["version"])
        assert [p["label"] in ("neg", "pos") for p in body["predictions"]] == [True] * 3
        assert all(abs(sum(p["scores"].values()) - 1) < 1e-4 for p in body["predictions"])
        assert client.post("/v1/predict", json={"texts": []}).status_code == 422
        assert client.post("/v1/predict", json={"texts": ["x"] * (MAX_TEXTS + 1)}).status_code == 422
        assert client.post("/v1/predict", json={"text": "x"}).status_code == 422
