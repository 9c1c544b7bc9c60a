"""One source for every setting: each config section and the library dataclass it converts to
have the same fields, so a setting cannot exist on one side only."""

import dataclasses

import pytest

from configs import demo, gradual, oneshot_base, structured, wanda
from experiments import oneshot_job, train_job
from jaxprune import oneshot, training
from jaxprune import structured as structured_lib


@pytest.mark.parametrize("config", [wanda.get_config(), oneshot_base.oneshot_config(
    "sparsegpt", "2:4")], ids=["wanda", "sparsegpt"])
def test_oneshot_config_fields_are_the_library_settings(config):
    pruning = set(config) - set(oneshot_job.JOB_FIELDS)
    assert pruning == oneshot.registry.config_fields()
    settings = oneshot.settings_from_config(config)
    for name in oneshot.registry.plain_fields():
        assert getattr(settings, name) == config[name], name


def test_method_options_reach_the_method_value():
    config = oneshot_base.oneshot_config("sparsegpt", "2:4")
    config.blocksize, config.damp = 64, 0.05
    assert oneshot.settings_from_config(config).method == oneshot.SparseGPT(64, 0.05)
    config.method, config.ria_alpha = "ria", 1.0
    assert oneshot.settings_from_config(config).method == oneshot.ria_method(1.0)
    config.method, config.allocation, config.owl_lambda = "wanda", "owl", 0.1
    assert oneshot.settings_from_config(config).allocation == oneshot.OWL(0.1, 5.0)


def test_demo_config_carries_the_same_pruning_fields():
    assert oneshot.registry.config_fields() <= set(demo.get_config())


def test_train_section_fields_are_train_settings():
    for config in (gradual.get_config(), structured.get_config("mlp,distill")):
        section = set(config.train) - set(train_job.TEXT_FIELDS)
        fields = {f.name for f in dataclasses.fields(training.TrainSettings)} - {"seed"}
        assert section == fields
        settings = train_job.train_settings(config)
        assert settings.steps == config.train.steps and settings.seed == config.seed


def test_every_rule_and_criterion_name_has_one_registry():
    assert tuple(gradual.RULES) == tuple(training.RULES)
    config = gradual.get_config()
    for name in training.RULES:
        rule = training.rule_from_config(name, config.sparsity)
        assert rule is None if name == "dense" else isinstance(rule, training.MaskRule)
    with pytest.raises(ValueError, match=r"config.rule='rigll' is not one of \['dense'"):
        training.rule_from_config("rigll", config.sparsity)
    cut = structured.get_config("mlp").cut
    assert set(structured_lib.WIDTH_CRITERIA) >= {cut.criterion}
