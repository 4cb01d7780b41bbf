import pytest

from lmchain.config import PipelineConfig, configs_dir, describe, load_config, parse_overrides
from lmchain.errors import ConfigError


@pytest.mark.parametrize("recipe", sorted(p.name for p in configs_dir().glob("*.yaml")))
def test_every_recipe_loads(recipe):
    cfg = load_config(configs_dir() / recipe)
    assert isinstance(cfg, PipelineConfig)


def test_recipe_by_name_and_overrides():
    cfg = load_config("demo", ["finetune.epochs=2", "pretrain.enabled=false", "annotate.label_names=[a, b]"])
    assert cfg.finetune.epochs == 2.0 and isinstance(cfg.finetune.epochs, float)
    assert cfg.pretrain.enabled is False
    assert cfg.annotate.label_names == ["a", "b"]
    assert cfg.collect.files[0].text_field == "sentence"


def test_unknown_key_names_key_file_and_suggestion(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("finetune:\n  epoch: 3\n")
    with pytest.raises(ConfigError) as exc:
        load_config(bad)
    msg = str(exc.value)
    assert "finetune.epoch" in msg and "did you mean 'epochs'" in msg and str(bad) in msg


def test_unknown_override_key_and_section():
    with pytest.raises(ConfigError, match="unknown config key 'trainer'"):
        load_config("demo", ["trainer.lr=1"])
    with pytest.raises(ConfigError, match="pretrain.learning_rat"):
        load_config("demo", ["pretrain.learning_rat=1e-4"])


def test_wrong_type_and_invalid_value_name_the_field():
    with pytest.raises(ConfigError, match="finetune.batch_size.*expected int"):
        load_config("demo", ["finetune.batch_size=big"])
    with pytest.raises(ConfigError, match="pretrain.zero_stage.*0, 1, 2 or 3"):
        load_config("demo", ["pretrain.zero_stage=5"])
    with pytest.raises(ConfigError, match="annotate.test_fraction"):
        load_config("demo", ["annotate.test_fraction=0.95"])


def test_bad_override_syntax_and_missing_recipe():
    with pytest.raises(ConfigError, match="section.key=value"):
        parse_overrides(["finetune.epochs"])
    with pytest.raises(ConfigError, match="recipe 'nope' not found.*demo"):
        load_config("nope")


def test_malformed_yaml_names_file(tmp_path):
    bad = tmp_path / "broken.yaml"
    bad.write_text("collect: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yaml is not valid YAML"):
        load_config(bad)


def test_every_field_is_documented():
    rows = describe()
    assert len(rows) > 40
    undocumented = [key for key, doc, _ in rows if not doc]
    assert undocumented == []


def test_suite_threshold_errors_name_the_suite():
    with pytest.raises(ConfigError, match="config key 'gate.labelled.min_class_share': must be in"):
        load_config("demo", ["gate.labelled.min_class_share=1.5"])
    cfg = load_config("demo", ["gate.curated.warn=[expect_column_duplicate_rate_to_be_between]"])
    assert cfg.gate.curated.warn == ["expect_column_duplicate_rate_to_be_between"] and cfg.gate.curated.min_rows == 1000
