"""The config models: every error at once with its dotted key, choices and ranges from the
models, did-you-mean suggestions, overrides parsed as YAML, and the trigger form's schema
generated from the models (recipes from LMCHAIN_CONFIGS)."""

from __future__ import annotations

import pytest

from lmchain.config import (AnnotateConfig, CrawlConfig, FinetuneConfig, PipelineConfig, ServeConfig, choices,
                            describe, load_config, parse_overrides, recipes, replace)
from lmchain.errors import ConfigError


def test_every_error_is_reported_at_once_with_its_key_and_the_recipe(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("finetune:\n  batch_size: 0\n  lr_schedule: cosin\n  epoch: 2\n"
                   "curate:\n  language:\n    min_score: 1.5\n"
                   "collect:\n  crawl:\n    seeds: [example.org]\n")
    with pytest.raises(ConfigError) as exc:
        load_config(bad)
    msg = str(exc.value)
    assert msg.startswith(f"5 config errors (in {bad}):")
    for part in ("'finetune.batch_size': must be >= 1, got 0", "'finetune.lr_schedule'",
                 "unknown config key 'finetune.epoch': did you mean 'epochs'?",
                 "'curate.language.min_score': must be in [0, 1], got 1.5",
                 "'collect.crawl.seeds[0]': 'example.org' is not an http(s) URL"):
        assert part in msg, part


def test_one_error_keeps_the_one_line_form():
    with pytest.raises(ConfigError) as exc:
        load_config("demo", ["finetune.batch_size=0"])
    assert "\n" not in str(exc.value)
    assert str(exc.value).startswith("config key 'finetune.batch_size': must be >= 1, got 0 (in ")
    assert str(exc.value).endswith("demo.yaml with overrides)")


def test_a_choice_error_lists_the_choices_and_suggests_one():
    with pytest.raises(ConfigError, match=r"config key 'finetune.lr_schedule': must be 'linear' or 'cosine', "
                                          r"got 'cosin'; did you mean 'cosine'\?"):
        load_config("demo", ["finetune.lr_schedule=cosin"])
    with pytest.raises(ConfigError, match=r"'curate.pii.kinds\[1\]': must be 'email', .* or 'phone', got 'ssn'"):
        load_config("demo", ["curate.pii.kinds=[email, ssn]"])
    assert choices(FinetuneConfig, "method") == ["full", "lora"]
    assert choices(ServeConfig, "variant") == ["auto", "fp32", "onnx", "onnx-int8"]


def test_range_errors_name_the_whole_range_and_hint():
    with pytest.raises(ConfigError, match=r"'annotate.test_fraction': must be in \(0, 1\), got 1.5"):
        load_config("demo", ["annotate.test_fraction=1.5"])
    with pytest.raises(ConfigError, match=r"'curate.workers': must be >= 0 \(0: one per CPU core\), got -1"):
        load_config("demo", ["curate.workers=-1"])
    with pytest.raises(ConfigError, match=r"'collect.crawl.per_host_concurrency': must be > 0, got 0"):
        CrawlConfig(per_host_concurrency=0)  # built directly: the same key as in a recipe


def test_unknown_keys_get_a_suggestion_or_the_valid_keys():
    with pytest.raises(ConfigError, match="unknown config key 'deploy.service.prot': did you mean 'port'"):
        load_config("demo", ["deploy.service.prot=80"])
    with pytest.raises(ConfigError, match="unknown config key 'register.zzz': valid keys here: model_name, "
                                          "experiment"):
        load_config("demo", ["register.zzz=1"])


def test_values_are_not_coerced():
    with pytest.raises(ConfigError, match="'finetune.batch_size': expected int, got '8'"):
        load_config("demo", ["finetune.batch_size='8'"])
    with pytest.raises(ConfigError, match="'pretrain.enabled': expected bool, got 1"):
        load_config("demo", ["pretrain.enabled=1"])
    assert isinstance(load_config("demo", ["finetune.learning_rate=1"]).finetune.learning_rate, float)


def test_cross_field_checks_name_their_key():
    with pytest.raises(ConfigError, match="'annotate.test_fraction': validation_fraction \\+ test_fraction"):
        load_config("demo", ["annotate.validation_fraction=0.5", "annotate.test_fraction=0.5"])
    with pytest.raises(ConfigError, match="'annotate.labels': add at least one label file"):
        AnnotateConfig(labels=[])
    cfg = FinetuneConfig()
    with pytest.raises(ConfigError, match="'finetune.batch_size'"):
        replace(cfg, batch_size=0)  # replace validates, like dataclasses.replace did
    assert replace(cfg, batch_size=4).batch_size == 4 and cfg.batch_size == 16


def test_overrides_are_yaml_values():
    assert parse_overrides(["finetune.epochs=2", "annotate.label_names=[a, b]", "curate.history=",
                            "deploy.service.store_url=sqlite:///x.db", "x.y={a: 1}"]) == {
        "finetune": {"epochs": 2}, "annotate": {"label_names": ["a", "b"]}, "curate": {"history": ""},
        "deploy": {"service": {"store_url": "sqlite:///x.db"}}, "x": {"y": {"a": 1}}}
    with pytest.raises(ConfigError, match="'finetune' is not a section"):
        parse_overrides(["finetune=1", "finetune.epochs=2"])
    cfg = load_config("demo", ["finetune.epochs=2", "finetune.search.space={epochs: [1, 2]}"])
    assert cfg.finetune.epochs == 2.0 and cfg.finetune.search.space == {"epochs": [1, 2]}


def test_describe_documents_every_leaf_from_the_models():
    rows = {key: (text, default) for key, text, default in describe()}
    assert rows["finetune.lr_schedule"] == (FinetuneConfig.model_fields["lr_schedule"].description, "linear")
    assert rows["collect.crawl.max_pages"][1] == 50 and "finetune.search.method" in rows
    assert PipelineConfig().to_dict()["collect"]["files"][0]["path"] == "${SST2}/train.tsv"


def test_the_trigger_form_takes_its_choices_and_recipes_from_the_models(tmp_path, monkeypatch):
    from lmchain import params

    fields = params.schema()
    assert fields["finetune_method"]["enum"] == [None, *choices(FinetuneConfig, "method")]
    assert fields["annotation_mode"]["enum"] == [None, *choices(AnnotateConfig, "mode")]
    assert FinetuneConfig.model_fields["method"].description in fields["finetune_method"]["description"]
    assert fields["recipe"]["enum"] == recipes() and "demo" in recipes()
    (tmp_path / "mine.yaml").write_text("name: mine\n")
    (tmp_path / "other.yaml").write_text("name: other\n")
    monkeypatch.setenv("LMCHAIN_CONFIGS", str(tmp_path))
    assert params.schema()["recipe"]["enum"] == ["mine", "other"] == recipes()
    assert load_config("mine").name == "mine"


def test_cli_crawl_flags_come_from_the_crawl_model():
    from lmchain.cli import CRAWL_FLAGS, build_parser

    args = build_parser().parse_args(["collect", "--out", "x", "--seed", "https://a.org/", "--max-pages", "7",
                                      "--ignore-robots", "--delay", "0.5"])
    crawl = {name: getattr(args, dest) for name, dest in CRAWL_FLAGS.items() if getattr(args, dest) not in (None, [])}
    assert crawl == {"seeds": ["https://a.org/"], "max_pages": 7, "respect_robots": False, "delay_s": 0.5}
    assert set(CRAWL_FLAGS) <= set(CrawlConfig.model_fields)
