"""The deploy stage: variant choice, infra validation in a real server process, alias move."""

import json

import pytest
from serve_support import make_champion, make_tiny_classifier, register_version

from lmchain import registry
from lmchain.artifacts import RunContext, write_jsonl
from lmchain.config import DeployConfig, ServeConfig
from lmchain.serve.auth import new_key
from lmchain.serve.deploy import DeployFailed
from lmchain.serve.deploy import run as deploy

TEXTS = ["a gripping film", "dull", "one of the best performances of the year", "i walked out",
         "not bad at all", "a mess", "funny and warm", "too long by an hour"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("deploy")
    test = root / "test.jsonl"
    write_jsonl(test, [{"id": str(i), "text": t, "label": i % 2} for i, t in enumerate(TEXTS * 5)])
    return {"v1": make_tiny_classifier(root / "v1", seed=0), "v2": make_tiny_classifier(root / "v2", seed=1),
            "labelled": {"outputs": {"test": str(test)}}, "root": root}


def _cfg(root, **kw):
    key, line = new_key()
    (root / "keys").write_text(line + "\n")
    # API keys on: the validation must authenticate with a key of its own.
    service = ServeConfig(api_keys_file=str(root / "keys"), store_url=f"sqlite:///{root / 'store.db'}")
    return DeployConfig(latency_probe_requests=20, ready_timeout_s=120, service=service, **kw)


def test_deploy_validates_the_candidate_then_moves_the_champion(setup):
    name = "lmchain-deploy-ok"
    first = register_version(setup["v1"], "dep_ok_1", name=name)
    m = deploy(_cfg(setup["root"], p95_slo_ms=5000), RunContext("dep_ok_1", model_name=name),
               {"register": first.to_dict(), "annotate": setup["labelled"]})
    version = str(first.info["version"])
    assert str(registry.champion(name).version) == version and m.info["promoted"]
    assert m.metrics["p95_ms"] < 5000 and m.counts["probe_requests"] == 20
    tags = registry.client().get_model_version(name, version).tags
    report = json.loads(tags["lmchain.variant_report"])
    assert set(report) == {"fp32", "onnx", "onnx-int8"} and tags["lmchain.serving_variant"] == m.info["variant"]
    assert report[m.info["variant"]]["kept"] and report["fp32"]["accuracy_drop"] == 0
    assert report["onnx"]["accuracy"] == report["fp32"]["accuracy"]  # same graph, same labels
    validation = json.loads((RunContext("dep_ok_1").stage_dir("deploy") / "validation.json").read_text())
    assert validation["label_mismatches"] == 0 and validation["chosen"] == m.info["variant"]
    current = json.loads((RunContext("dep_ok_1").home / "deployments" / "current.json").read_text())
    assert current["version"] == version and current["model_uri"] == f"models:/{name}@champion"


def test_failed_infra_validation_keeps_the_old_champion(setup):
    name = "lmchain-deploy-slo"
    old = register_version(setup["v1"], "dep_slo_1", name=name)
    make_champion(name, old.info["version"])
    new = register_version(setup["v2"], "dep_slo_2", name=name)
    with pytest.raises(DeployFailed, match=r"p95 latency .* exceeds deploy.p95_slo_ms=0.01"):
        deploy(_cfg(setup["root"], p95_slo_ms=0.01, variants=["fp32"]), RunContext("dep_slo_2", model_name=name),
               {"register": new.to_dict(), "annotate": setup["labelled"]})
    assert str(registry.champion(name).version) == str(old.info["version"])
    assert not (RunContext("dep_slo_2").stage_dir("deploy") / "manifest.json").exists()


def test_not_promoted_version_redeploys_the_current_champion(setup):
    name = "lmchain-deploy-keep"
    old = register_version(setup["v1"], "dep_keep_1", name=name)
    make_champion(name, old.info["version"])
    new = register_version(setup["v2"], "dep_keep_2", name=name, promote=False)
    m = deploy(_cfg(setup["root"], p95_slo_ms=5000, variants=["fp32"]), RunContext("dep_keep_2", model_name=name),
               {"register": new.to_dict(), "annotate": setup["labelled"]})
    assert m.info["version"] == str(old.info["version"]) and not m.info["promoted"]
    assert str(registry.champion(name).version) == str(old.info["version"])
