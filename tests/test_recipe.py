"""TOML recipes: validation messages, defaults, and what they build."""

from __future__ import annotations

import tomllib

import pytest
import tomli_w
import torch

from graftnet.errors import ConfigError
from graftnet.recipe import SCHEMA, build_data, build_model, fit_kwargs, load_recipe, merge, resolve, validate
from graftnet.train import EarlyStopping


def write(tmp_path, text: str, name: str = "r.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


# ---------------------------------------------------------------- validation
def test_unknown_key_names_file_key_valid_keys_and_suggestion(tmp_path):
    path = write(tmp_path, '[data]\nsource = "digits"\n[train]\nepoch = 3\n')
    with pytest.raises(ConfigError) as err:
        load_recipe(path)
    message = str(err.value)
    assert str(path) in message
    assert "unknown key 'epoch' in [train]" in message
    assert "valid keys are epochs, batch_size" in message
    assert "Did you mean 'epochs'?" in message


def test_unknown_section_lists_sections(tmp_path):
    path = write(tmp_path, '[trian]\nepochs = 3\n')
    with pytest.raises(ConfigError, match=r"unknown section \[trian\]; valid sections are \[model\], \[data\], "
                                          r"\[train\], \[output\]\. Did you mean 'train'\?"):
        load_recipe(path)


@pytest.mark.parametrize("text, message", [
    ('[train]\nepochs = "ten"', r"\[train\] epochs must be an integer, got 'ten' \(string\)"),
    ('[train]\nepochs = true', r"\[train\] epochs must be an integer, got True \(boolean\)"),
    ('[model]\nhidden = [300, "a"]', r"\[model\] hidden must be a list of integers"),
    ('[train]\nclip_norm = "x"', r"clip_norm must be a number, or false for none"),
    ('[data]\ntrain_size = -1', r'train_size must be a count >= 0, or "all"'),
    ('train = 3', r"\[train\] must be a table of settings, got 3 \(integer\)"),
])
def test_types_are_checked(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_recipe(write(tmp_path, text))


def test_invalid_toml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"r\.toml is not valid TOML"):
        load_recipe(write(tmp_path, "[train\nepochs = 3"))
    with pytest.raises(ConfigError, match="no recipe at .*nope.toml"):
        load_recipe(tmp_path / "nope.toml")


def test_layers_and_mlp_shorthand_are_exclusive():
    with pytest.raises(ConfigError, match=r"both 'layers' and MLP settings \(hidden\)"):
        validate({"model": {"hidden": [3], "layers": [{"type": "dense", "units": 2}]}})


def test_source_is_required():
    with pytest.raises(ConfigError, match=r"\[data\] source is required"):
        resolve({"train": {"epochs": 1}})


@pytest.mark.parametrize("train, message", [
    ({"optimizer": {"type": "adam", "momentum": 0.9}}, r"\[train\] optimizer: optimizer 'adam': unknown setting"),
    ({"optimizer": "adamm"}, r"unknown optimizer 'adamm'.*Did you mean 'adam'"),
    ({"schedule": {"type": "piecewise", "boundaries": [5], "values": [0.1]}}, r"\[train\] schedule: .*one more value"),
    ({"early_stopping": {"patience": 3, "monitr": "val_loss"}}, r"early_stopping: unknown key 'monitr'"),
    ({"augment": {"shfit": 2}}, r"\[train\] augment: unknown augmentation setting"),
    ({"epochs": -1, "batch_size": 0}, r"epochs must be >= 0.*batch_size must be >= 1"),
    ({"precision": "fp8"}, r"precision must be fp32, bf16 or fp16"),
])
def test_nested_tables_are_checked(train, message):
    with pytest.raises(ConfigError, match=message):
        resolve({"data": {"source": "digits"}, "train": train}, source="my.toml")


# ---------------------------------------------------------------- resolving
def test_resolve_fills_every_default():
    recipe = resolve({"data": {"source": "digits"}}, name="exp")
    for section, keys in SCHEMA.items():
        expected = set(keys) - ({"layers"} if section == "model" else set())
        assert set(recipe[section]) == expected, section
    assert recipe["model"]["init"] == "he_normal"  # what Network.mlp picks for relu
    assert recipe["train"]["optimizer"] == {"type": "sgd", "lr": 0.01, "momentum": 0.0, "nesterov": False,
                                            "weight_decay": 0.0}
    assert recipe["train"]["augment"] == {"shift": 0, "rotate": 0.0, "flip": False, "crop": 0}
    assert recipe["output"]["name"] == "exp"


def test_resolve_normalises_tables():
    recipe = resolve({"data": {"source": "digits"}, "model": {"activation": "selu"},
                      "train": {"optimizer": "nesterov", "early_stopping": 4, "schedule": "one_cycle"}})
    assert recipe["model"]["init"] == "lecun_normal"
    assert recipe["train"]["optimizer"]["momentum"] == 0.9 and recipe["train"]["optimizer"]["nesterov"] is True
    assert recipe["train"]["early_stopping"] == {"monitor": "val_loss", "patience": 4, "min_delta": 0.0,
                                                 "restore_best": True}
    assert recipe["train"]["schedule"] == {"type": "one_cycle", "pct_start": 0.3}  # max_lr unset: left out


def test_resolved_recipe_round_trips_through_toml():
    recipe = resolve({"data": {"source": "digits", "train_size": 100},
                      "train": {"optimizer": "adam", "schedule": {"type": "piecewise", "boundaries": [2],
                                                                   "values": [0.1, 0.01]}}})
    again = resolve(tomllib.loads(tomli_w.dumps(recipe)))
    assert again == recipe


def test_merge_overrides_keys_not_sections():
    assert merge({"train": {"epochs": 30, "seed": 1}, "data": {"source": "x"}}, {"train": {"epochs": 2}}) == {
        "train": {"epochs": 2, "seed": 1}, "data": {"source": "x"}}


# ---------------------------------------------------------------- building
def test_build_data_selects_classes_then_limits_sizes():
    recipe = resolve({"data": {"source": "digits", "classes": ["3", "5"], "positive": "5", "train_size": 50,
                               "test_size": 20}})
    data = build_data(recipe)
    assert data.task == "binary" and data.classes == ["3", "5"]
    assert (len(data.train), len(data.test)) == (50, 20)
    assert len(data.valid) > 0  # "all" keeps the split whole


def test_build_model_mlp_and_layers():
    data = build_data(resolve({"data": {"source": "digits", "train_size": 100}}))
    mlp = build_model(resolve({"data": {"source": "digits"},
                               "model": {"hidden": [16, 8], "batch_norm": True, "dropout": 0.1, "max_norm": 2.0}}),
                      data)
    assert mlp.layer_names == ["flatten", "hidden1", "bn1", "act1", "dropout1", "hidden2", "bn2", "act2",
                               "dropout2", "outputs"]
    assert mlp.spec_of("hidden1").max_norm == 2.0
    layered = build_model(resolve({"data": {"source": "digits"}, "model": {"layers": [
        {"type": "flatten"}, {"type": "dense", "units": 12, "activation": "elu", "name": "h"},
        {"type": "dense", "units": 10, "name": "outputs"}]}}), data)
    assert layered.layer_names == ["flatten", "h", "outputs"]


def test_build_model_bad_layer_names_the_place():
    with pytest.raises(ConfigError, match=r"my\.toml: \[model\] layers\[1\]: unknown layer type 'dence'"):
        resolve({"data": {"source": "digits"}, "model": {"layers": [{"type": "flatten"}, {"type": "dence"}]}},
                source="my.toml")


def test_normalize_layer_standardizes_training_inputs():
    recipe = resolve({"data": {"source": "digits"}, "model": {"hidden": [8], "normalize": True}})
    data = build_data(recipe)
    model = build_model(recipe, data)
    assert model.layer_names[0] == "normalize"
    out = model(data.train.x, stop=1).double()
    assert abs(out.mean().item()) < 1e-5 and out.std().item() == pytest.approx(1.0, abs=1e-4)
    plain = build_model(resolve({"data": {"source": "digits"}, "model": {"hidden": [8]}}), data)
    assert torch.equal(plain.state_dict()["hidden1.weight"], model.state_dict()["hidden1.weight"])  # same seed


def test_same_seed_same_initial_weights_other_seed_other_weights():
    data = build_data(resolve({"data": {"source": "digits", "train_size": 10}}))
    def weights(seed):
        return build_model(resolve({"data": {"source": "digits"}, "train": {"seed": seed}}), data).state_dict()
    assert torch.equal(weights(1)["hidden1.weight"], weights(1)["hidden1.weight"])
    assert not torch.equal(weights(1)["hidden1.weight"], weights(2)["hidden1.weight"])


def test_fit_kwargs_maps_off_values_to_none():
    kwargs = fit_kwargs(resolve({"data": {"source": "digits"}, "train": {"early_stopping": 3, "clip_norm": 1.0}}))
    assert kwargs["clip_norm"] == 1.0 and kwargs["clip_value"] is None
    assert kwargs["schedule"] is None and kwargs["augment"] is None and kwargs["device"] is None
    assert kwargs["early_stopping"] == EarlyStopping(patience=3)
    shifted = fit_kwargs(resolve({"data": {"source": "digits"}, "train": {"augment": {"shift": 1}}}))
    assert shifted["augment"].shift == 1
