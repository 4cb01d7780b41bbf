"""Champion/challenger with real tiny models through the evaluate stage and a real registry."""

import json

import pytest

from lmchain import registry
from lmchain.artifacts import RunContext
from lmchain.config import EvaluateConfig, RegisterConfig
from lmchain.stages.evaluate import run as evaluate
from lmchain.stages.register import run as register
from tiny_models import dataset, train_tiny, write_jsonl

CFG = EvaluateConfig(slices=["length", "label"], length_buckets=[8], guarded_slices=["length", "label"],
                     min_slice_size=30, bootstrap_samples=1000)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-models")
    train = dataset(200, 200)
    long_only = [r for r in train if r["id"].startswith("L")]
    flipped = [r for r in train if r["id"].startswith("S")] + [{**r, "label": 1 - r["label"]} for r in long_only]
    test = dataset(240, 60, offset=1000)
    return {
        "strong": train_tiny(root / "strong", train),
        "random": train_tiny(root / "random", [], steps=0, seed=7),
        "long_only": train_tiny(root / "long_only", long_only),
        "flipped_long": train_tiny(root / "flipped_long", flipped),
        "test": write_jsonl(root / "test.jsonl", test),
    }


def _register_champion(model_dir, name):
    ctx = RunContext(f"{name}-champion", model_name=name)
    inputs = {"finetune": {"outputs": {"model": str(model_dir)}, "inputs": {}},
              "evaluate": {"metrics": {"accuracy": 0.0}, "info": {"decision": {"promote": True, "reason": "seed"}}}}
    m = register(RegisterConfig(model_name=name), ctx, inputs)
    registry.client().set_registered_model_alias(name, "champion", str(m.info["version"]))  # as deploy would


def _challenge(models, champion, challenger, name):
    _register_champion(models[champion], name)
    ctx = RunContext(f"{name}-challenger", model_name=name)
    m = evaluate(CFG, ctx, {"finetune": {"outputs": {"model": str(models[challenger])}},
                            "annotate": {"outputs": {"test": str(models["test"])}}})
    return m


def test_models_have_the_intended_strengths(models):
    m = _challenge(models, "random", "strong", "tiny-sanity")
    assert m.metrics["accuracy"] > 0.95
    assert m.info["champion_accuracy"] < 0.7


def test_worse_challenger_is_never_promoted(models):
    m = _challenge(models, "strong", "random", "tiny-worse")
    d = m.info["decision"]
    assert not d["promote"] and d["bootstrap"]["upper"] < 0
    assert "does not clear margin" in d["reason"]


def test_equal_challenger_is_not_promoted(models):
    m = _challenge(models, "strong", "strong", "tiny-equal")
    d = m.info["decision"]
    assert not d["promote"] and d["bootstrap"]["delta"] == 0.0


def test_clearly_better_challenger_is_promoted_and_handed_to_deploy(models):
    m = _challenge(models, "random", "strong", "tiny-better")
    d = m.info["decision"]
    assert d["promote"] and d["bootstrap"]["lower"] > 0 and d["mcnemar"]["p_value"] < 0.01
    ctx = RunContext("tiny-better-challenger", model_name="tiny-better")
    reg = register(RegisterConfig(model_name="tiny-better"), ctx,
                   {"finetune": {"outputs": {"model": str(models["strong"])}, "inputs": {}}, "evaluate": m.to_dict()})
    # The decision is recorded on the version; the alias moves only after deploy's infra validation.
    assert reg.info["promoted"] and str(registry.champion("tiny-better").version) != str(reg.info["version"])
    tags = registry.client().get_model_version("tiny-better", str(reg.info["version"])).tags
    assert tags["lmchain.promoted"] == "true"


def test_registered_model_has_signature_input_example_and_tokenizer(models):
    import mlflow
    import pandas as pd

    m = _challenge(models, "random", "strong", "tiny-signature")
    ctx = RunContext("tiny-signature-challenger", model_name="tiny-signature")
    reg = register(RegisterConfig(model_name="tiny-signature"), ctx,
                   {"finetune": {"outputs": {"model": str(models["strong"])}, "inputs": {}}, "evaluate": m.to_dict()})
    uri = f"models:/tiny-signature/{reg.info['version']}"
    info = mlflow.models.get_model_info(uri)
    assert info.signature.inputs.input_names() == ["text"]
    assert info.signature.outputs.input_names() == ["label", "label_id", "scores"]
    assert info.saved_input_example_info["type"] == "dataframe"
    folder = registry.local_model(uri)
    assert (folder / "tokenizer.json").is_file() or (folder / "vocab.txt").is_file()
    out = mlflow.pyfunc.load_model(uri).predict(pd.DataFrame({"text": ["great great", "awful awful"]}))
    assert list(out.columns) == ["label", "label_id", "scores"] and len(out) == 2


def test_slice_regression_blocks_promotion(models):
    m = _challenge(models, "long_only", "flipped_long", "tiny-slice")
    d = m.info["decision"]
    assert d["bootstrap"]["lower"] > 0  # better overall...
    assert not d["promote"]  # ...but the long texts got worse
    assert any(r["slice"] == "length=words>8" for r in d["slice_regressions"])
    assert "length=words>8" in d["reason"]


def test_report_renders_figures(models):
    import matplotlib.image as mpimg
    import numpy as np

    m = _challenge(models, "random", "strong", "tiny-report")
    html = open(m.outputs["report"], encoding="utf-8").read()
    assert "Decision: PROMOTE" in html and "Champion vs challenger" in html and html.count("<img") == 3
    for key in ("confusion", "reliability", "slices"):
        img = mpimg.imread(m.outputs[key])
        assert img.shape[0] > 200 and img.shape[1] > 300
        assert float(np.std(img)) > 0.05  # not a blank canvas
    decision = json.loads(open(m.outputs["decision"]).read())
    assert decision["promote"] is True
