"""The deploy stage: variant choice, infra validation in a real server process, validation tag,
alias move; and a running service that follows the alias only onto validated versions."""

import json
import logging
import time

import httpx
import pytest
from serve_support import make_champion, make_tiny_classifier, register_version, running_server

from lmchain import registry
from lmchain.artifacts import RunContext, write_jsonl
from lmchain.config import DeployConfig, ServeConfig
from lmchain.serve.app import create_app
from lmchain.serve.auth import new_key
from lmchain.serve.validation import DeployFailed
from lmchain.stages.deploy import FALLBACK_SMOKE_TEXTS, smoke_texts
from lmchain.stages.deploy import run as deploy

TEXTS = ["a gripping film", "dull", "one of the best performances of the year", "i walked out",
         "not bad at all", "a mess", "funny and warm", "too long by an hour"]
# A topic task's validation split: the smoke test must send these, not sentiment phrases.
TOPICS = [f"{t} (report {i})" for i in range(6) for t in (
    "the central bank raised interest rates by a quarter point", "the striker scored twice in the cup final",
    "the new chip doubles battery life in laptops", "parliament passed the budget after a long debate")]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("deploy")
    test = root / "test.jsonl"
    write_jsonl(test, [{"id": str(i), "text": t, "label": i % 2} for i, t in enumerate(TEXTS * 5)])
    validation = root / "validation.jsonl"
    write_jsonl(validation, [{"id": f"v{i}", "text": t, "label": i % 4} for i, t in enumerate(TOPICS)])
    return {"v1": make_tiny_classifier(root / "v1", seed=0), "v2": make_tiny_classifier(root / "v2", seed=1),
            "labelled": {"outputs": {"test": str(test)}},
            "topics": {"outputs": {"test": str(test), "validation": str(validation)}}, "root": root}


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
               {"register": first.to_dict(), "annotate": setup["topics"]})
    version = str(first.info["version"])
    # The smoke texts are the run's own validation texts (a topic task here), 8 of them by default.
    smoke = json.loads((RunContext("dep_ok_1").stage_dir("deploy") / "smoke.json").read_text())
    assert m.info["smoke_source"] == "validation" and m.counts["smoke_texts"] == 8
    assert len(smoke["smoke"]) == 8 and {s["text"] for s in smoke["smoke"]} <= set(TOPICS)
    assert all(s["label"] in ("neg", "pos") for s in smoke["smoke"])  # the service answered each
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
    # Tagged before the alias moved, and the tag verifies with the deploy key.
    assert registry.validation_problem(name, version) is None
    tag = json.loads(tags[registry.VALIDATED_TAG])
    assert tag["pipeline_run"] == "dep_ok_1" and tag["by"] == "deploy" and current["validated"]["at"] == tag["at"]


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
    assert "no lmchain.validated tag" in registry.validation_problem(name, new.info["version"])


def test_not_promoted_version_redeploys_the_current_champion(setup):
    name = "lmchain-deploy-keep"
    old = register_version(setup["v1"], "dep_keep_1", name=name)
    make_champion(name, old.info["version"])
    new = register_version(setup["v2"], "dep_keep_2", name=name, promote=False)
    m = deploy(_cfg(setup["root"], p95_slo_ms=5000, variants=["fp32"]), RunContext("dep_keep_2", model_name=name),
               {"register": new.to_dict(), "annotate": setup["labelled"]})
    assert m.info["version"] == str(old.info["version"]) and not m.info["promoted"]
    assert str(registry.champion(name).version) == str(old.info["version"])


def test_smoke_texts_are_a_seeded_sample_of_the_validation_split(tmp_path):
    validation = tmp_path / "validation.jsonl"
    write_jsonl(validation, [{"id": str(i), "text": t, "label": 0} for i, t in enumerate(TOPICS)])
    annotate = {"outputs": {"validation": str(validation)}}
    texts, source = smoke_texts(DeployConfig(smoke_samples=5), annotate)
    assert source == "validation" and len(texts) == 5 and set(texts) <= set(TOPICS)
    assert smoke_texts(DeployConfig(smoke_samples=5), annotate)[0] == texts  # seeded: the same every run
    assert smoke_texts(DeployConfig(smoke_samples=5, smoke_seed=1), annotate)[0] != texts
    # Cut to what the service accepts, and no more texts than one request may carry.
    cut = smoke_texts(DeployConfig(smoke_samples=50, service=ServeConfig(max_chars_per_text=10,
                                                                         max_texts_per_request=3)), annotate)[0]
    assert len(cut) == 3 and all(len(t) <= 10 for t in cut)
    # A recipe's own texts win; no validation split (or an empty one) falls back to the built-in pair.
    assert smoke_texts(DeployConfig(smoke_texts=["hallo welt"]), annotate) == (["hallo welt"], "config")
    assert smoke_texts(DeployConfig(), {"outputs": {"test": str(validation)}}) == (FALLBACK_SMOKE_TEXTS, "fallback")
    empty = tmp_path / "empty.jsonl"
    write_jsonl(empty, [])
    assert smoke_texts(DeployConfig(), {"outputs": {"validation": str(empty)}})[1] == "fallback"


def _served_version(base: str) -> str:
    r = httpx.post(base + "/v1/predict", json={"texts": ["a gripping film"]}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["version"]


def _swap_failures(base: str) -> float:
    line = next(l for l in httpx.get(base + "/metrics").text.splitlines()
                if l.startswith("lmchain_model_swap_failures_total "))
    return float(line.split()[1])


def _wait_for(predicate, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def test_the_service_follows_the_alias_only_onto_deploy_validated_versions(setup, tmp_path, caplog):
    name = "lmchain-deploy-follow"
    v1 = str(register_version(setup["v1"], "dep_follow_1", name=name).info["version"])
    make_champion(name, v1)
    settings = ServeConfig(store_url=f"sqlite:///{tmp_path / 'store.db'}", follow_alias_s=0.2)
    caplog.set_level(logging.ERROR, logger="lmchain.serve")
    with running_server(create_app(f"models:/{name}@champion", settings)) as base:
        assert _served_version(base) == v1
        # Someone with registry write access moves the alias by hand: no deploy, no tag.
        v2 = str(register_version(setup["v2"], "dep_follow_2", name=name).info["version"])
        registry.client().set_registered_model_alias(name, "champion", v2)
        assert _wait_for(lambda: _swap_failures(base) == 1), "the unvalidated version was not refused"
        time.sleep(1.0)  # five more polls: still refused, and counted once
        assert _served_version(base) == v1 and _swap_failures(base) == 1
        assert f"refusing {name} version {v2}" in caplog.text and "no lmchain.validated tag" in caplog.text
        # A tag copied from a validated version does not verify for another one.
        client = registry.client()
        client.set_model_version_tag(name, v2, registry.VALIDATED_TAG,
                                     client.get_model_version(name, v1).tags[registry.VALIDATED_TAG])
        assert _wait_for(lambda: _swap_failures(base) == 2)
        assert _served_version(base) == v1 and "does not verify" in caplog.text
        # The deploy stage validates a new version and moves the alias: the service swaps to it.
        v3m = register_version(setup["v2"], "dep_follow_3", name=name)
        deploy(_cfg(setup["root"], p95_slo_ms=5000, variants=["fp32"]), RunContext("dep_follow_3", model_name=name),
               {"register": v3m.to_dict(), "annotate": setup["labelled"]})
        v3 = str(v3m.info["version"])
        assert _wait_for(lambda: _served_version(base) == v3), "the deploy-validated version was not swapped in"
        assert _swap_failures(base) == 2
