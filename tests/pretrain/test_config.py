"""Hydra composition of configs/train.yaml against the typed schema."""

from __future__ import annotations

import pytest
from hydra.errors import ConfigCompositionException, MissingConfigException

from pretrain.config import load_train_config
from pretrain.model.config import Activation
from pretrain.objectives import ObjectiveName


def test_defaults_compose() -> None:
    cfg = load_train_config()
    assert cfg.model.name == "tiny" and cfg.objective.name is ObjectiveName.clm
    assert cfg.run_dir == "runs/tiny-clm"


def test_group_choice_and_field_override() -> None:
    cfg = load_train_config(["model=gpt-350m", "model.n_layers=4", "objective=span", "model.activation=gelu"])
    assert (cfg.model.n_layers, cfg.model.d_model) == (4, 1024)
    assert cfg.model.activation is Activation.gelu
    assert cfg.objective.name is ObjectiveName.span


def test_misspelt_key_is_an_error_naming_it() -> None:
    with pytest.raises(ConfigCompositionException) as error:
        load_train_config(["model.n_layer=4"])
    assert "model.n_layer" in str(error.value)
    with pytest.raises(ValueError, match="model.n_layer"):
        load_train_config(["+model.n_layer=4"])  # adding a key the schema lacks fails too


def test_bad_value_and_unknown_group_option_are_errors() -> None:
    with pytest.raises(ConfigCompositionException) as error:
        load_train_config(["model.activation=relu"])
    assert "relu" in str(error.value.__cause__)
    with pytest.raises(ConfigCompositionException):
        load_train_config(["model.n_layers=four"])
    with pytest.raises(MissingConfigException, match="objective"):
        load_train_config(["objective=bert"])
