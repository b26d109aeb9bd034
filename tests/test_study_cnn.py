"""CNN studies: ``[base] layers`` / ``[base] backbone``, what the variants count on a CNN, and
``study.compare`` / ``graftnet study --compare`` (two bases' gains over scratch, side by side)."""

from __future__ import annotations

import copy
import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from graftnet import report, study
from graftnet.cli import main
from graftnet.errors import ConfigError
from graftnet.layers import Activation, BatchNorm, Conv2d, Dense, Flatten, MaxPool
from graftnet.network import Network
from graftnet.stats import bootstrap_interval, holm, paired_test

REPO = Path(__file__).resolve().parents[1]

# A VGG-style CNN on scikit-learn's 8x8 digits: conv-conv-pool, conv-conv-pool (BatchNorm), dense.
CNN_LAYERS = [
    {"type": "conv2d", "name": "block1_conv1", "filters": 4, "padding": "same", "bias": False},
    {"type": "batchnorm", "name": "block1_bn1"},
    {"type": "activation", "name": "block1_relu1", "activation": "relu"},
    {"type": "conv2d", "name": "block1_conv2", "filters": 4, "padding": "same", "bias": False},
    {"type": "batchnorm", "name": "block1_bn2"},
    {"type": "activation", "name": "block1_relu2", "activation": "relu"},
    {"type": "maxpool", "name": "block1_pool"},
    {"type": "conv2d", "name": "block2_conv1", "filters": 8, "padding": "same", "bias": False},
    {"type": "batchnorm", "name": "block2_bn1"},
    {"type": "activation", "name": "block2_relu1", "activation": "relu"},
    {"type": "conv2d", "name": "block2_conv2", "filters": 8, "padding": "same", "bias": False},
    {"type": "batchnorm", "name": "block2_bn2"},
    {"type": "activation", "name": "block2_relu2", "activation": "relu"},
    {"type": "maxpool", "name": "block2_pool"},
    {"type": "flatten", "name": "flatten"},
    {"type": "dense", "name": "dense1", "units": 16, "activation": "relu"},
    {"type": "dense", "name": "outputs", "units": 10, "activation": "softmax"},
]
CNN_BASE = {"name": "digits-cnn", "data": "digits", "epochs": 2, "batch_size": 64,
            "optimizer": {"type": "adam", "lr": 1e-2}, "seed": 0, "layers": CNN_LAYERS}
MLP_BASE = {"name": "digits-mlp", "data": "digits", "hidden": [16, 16, 16], "activation": "relu", "epochs": 2,
            "batch_size": 64, "optimizer": {"type": "adam", "lr": 1e-2}, "seed": 0}
STUDY = {"seeds": 2, "variants": ["scratch", "frozen", "unfreeze-all", "drop-top1"], "epochs": 2, "head_epochs": 1,
         "batch_size": 32, "optimizer": {"type": "sgd", "lr": 0.05}, "finetune_lr_mult": 1.0}
TASK = {"data": "digits", "only": ["3", "8"], "positive": "8", "train_size": 40}


def _cnn() -> Network:
    return Network(study._layers_from_table(CNN_LAYERS), (1, 8, 8), name="cnn")


# ------------------------------------------------------------------ what a layer is on a CNN
def test_cnn_hidden_layers_are_its_weighted_layers_with_what_rides_along():
    assert study.hidden_blocks(_cnn()) == [
        ["block1_conv1", "block1_bn1", "block1_relu1"],
        ["block1_conv2", "block1_bn2", "block1_relu2", "block1_pool"],
        ["block2_conv1", "block2_bn1", "block2_relu1"],
        ["block2_conv2", "block2_bn2", "block2_relu2", "block2_pool", "flatten"],
        ["dense1"],
    ]


@pytest.mark.parametrize("variant, reused_top, unfrozen", [
    ("frozen", "dense1", []),
    ("unfreeze-top1", "dense1", ["dense1"]),
    ("unfreeze-top2", "dense1", ["block2_conv2", "block2_bn2", "block2_relu2", "block2_pool", "flatten", "dense1"]),
    ("drop-top1", "flatten", []),
    ("drop-top2", "block2_relu1", []),
    ("drop-top1-unfreeze-top2", "flatten", ["block2_conv1", "block2_bn1", "block2_relu1", "block2_conv2",
                                            "block2_bn2", "block2_relu2", "block2_pool", "flatten"]),
])
def test_cnn_variants_count_weighted_layers_from_the_top(variant, reused_top, unfrozen):
    base = _cnn()
    reused, trains, _ = study._plan(base, study.parse_variant(variant))
    assert reused[-1] == reused_top and trains == unfrozen
    model, _, _ = study._build(base, study.parse_variant(variant), _digits_task(), seed=0)
    # a feature map on top (drop-top2) gets a flatten before the new head; the head is always new
    assert model.layer_names[len(reused):] == (["head_flatten", "outputs"] if variant == "drop-top2" else ["outputs"])
    assert set(model.frozen) == set(reused)  # stage 1: every reused layer frozen, BatchNorm statistics included


def test_mlp_counting_is_unchanged():
    mlp = Network.mlp((1, 28, 28), [300, 100, 50, 50, 50], 8)
    assert [b[-1] for b in study.hidden_blocks(mlp)] == ["hidden1", "hidden2", "hidden3", "hidden4", "hidden5"]
    assert study.hidden_blocks(mlp)[0] == ["flatten", "hidden1"]


def _digits_task():
    return study.task_from_recipe({k: v for k, v in TASK.items() if k != "train_size"})


# ------------------------------------------------------------------ [base] layers
def test_base_from_a_layers_list_trains_that_network_and_keeps_it(tmp_path):
    lines = []
    base = study.base_from_recipe(CNN_BASE, cache_dir=tmp_path, progress=lines.append)
    assert base.layer_names == [d["name"] for d in CNN_LAYERS]
    assert [s.to_dict() for s in base.specs] == [s.to_dict() for s in _cnn().specs]
    assert any(line.startswith("base: training digits-cnn on digits") for line in lines)
    again = study.base_from_recipe(copy.deepcopy(CNN_BASE), cache_dir=tmp_path, progress=lines.append)
    assert lines[-1].startswith("base: reusing")  # the same table: not trained again
    for name, tensor in base.state_dict().items():
        assert torch.equal(tensor, again.state_dict()[name])


def test_the_base_cache_key_of_an_mlp_recipe_is_unchanged():
    # MLP studies measured before [base] took layers must find their trained base again
    table = study.load_recipe(REPO / "examples/recipes/study_fashion_ab.toml")["base"]
    assert study._hash(dict(table)) == "5a815a707484"  # model-a-5a815a707484, the folder examples/results names


def test_keras_style_layer_type_names_are_accepted():
    specs = study._layers_from_table([{"type": "Conv2D", "filters": 2}, {"type": "MaxPool"}, {"type": "Flatten"},
                                      {"type": "Dense", "units": 3}])
    assert [type(s) for s in specs] == [Conv2d, MaxPool, Flatten, Dense]


@pytest.mark.parametrize("table, message", [
    ({"layers": [{"type": "conv3d", "filters": 2}]},
     r"\[base\] layers\[0\]: unknown layer type 'conv3d'; known types are dense, conv2d, .*maxpool"),
    ({"layers": [{"type": "conv2d", "filter": 2}]},
     r"\[base\] layers\[0\] \(conv2d\): unknown key\(s\) 'filter'; conv2d takes .*filters"),
    ({"layers": [{"type": "dense"}]}, r"\[base\] layers\[0\] \(dense\): .*units"),
    ({"layers": []}, r"\[base\] layers must be a non-empty list of layer tables"),
    ({"layers": "conv2d"}, r"\[base\] layers must be a non-empty list of layer tables .*got 'conv2d'"),
    ({"layers": CNN_LAYERS, "hidden": [10]}, r"\[base\] has hidden and layers; give one of"),
    ({"layers": CNN_LAYERS, "activation": "relu"}, r"\[base\] has both layers and MLP settings \(activation\)"),
    ({"layers": CNN_LAYERS[:-1]},
     r"must end with the output layer of 'digits', a dense layer of 10 units .*the last layer given is a dense of 16"),
    ({"layers": CNN_LAYERS[:-2]}, r"the last layer given is a flatten"),
    ({"lyers": CNN_LAYERS}, r"unknown key 'lyers' in \[base\].*Did you mean 'layers'"),
])
def test_bad_layers_are_refused_naming_what_exists(tmp_path, table, message):
    table = {"data": "digits", "epochs": 1, **table}
    with pytest.raises(ConfigError, match=message):
        study.base_from_recipe(table, cache_dir=tmp_path)
    assert not any(tmp_path.iterdir())  # nothing trained, nothing kept


# ------------------------------------------------------------------ [base] backbone
def test_backbone_base_is_the_builder_s_network_with_the_weights_file(tmp_path):
    """keras.applications.MobileNetV2 (fixed seed) saved with Keras' legacy HDF5 writer, as a study base."""
    import h5py
    import keras
    from keras.src.legacy.saving.legacy_h5_format import save_weights_to_hdf5_group

    keras.backend.clear_session()
    keras.utils.set_random_seed(3)
    model = keras.applications.MobileNetV2(weights=None, alpha=0.35, include_top=True, classes=3,
                                           input_shape=(32, 32, 3))
    path = tmp_path / "mobilenetv2.h5"
    with h5py.File(path, "w") as f:
        save_weights_to_hdf5_group(f, model)
    base = study.base_from_recipe({"backbone": "keras:mobilenetv2", "weights": str(path), "name": "mnv2",
                                   "options": {"alpha": 0.35, "classes": 3, "input_shape": [32, 32, 3]}})
    assert base.name == "mnv2" and base.layer_names[-1] == "predictions"
    x = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)).astype("float32")
    with torch.no_grad():
        ours = base.eval()(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
    assert np.abs(ours - model.predict(x, verbose=0)).max() < 1e-4  # the weights of the file, not random ones
    reused = [n for block in study.hidden_blocks(base) for n in block]
    assert "predictions" not in reused and "Conv1" in reused  # the classifier is the head, never reused


@pytest.mark.parametrize("table, message", [
    ({"backbone": "vgg61"}, r"backbone = 'vgg61' is not a backbone; give a builder of graftnet.backbones "
                            r"\(.*vgg16.*\) or a zoo name .*\. Did you mean 'vgg1[69]'"),
    ({"backbone": "vgg16", "data": "digits"}, r"used as it is, pretrained; it takes weights, options and name, "
                                              r"not data"),
    ({"backbone": "vgg16", "weights": "/no/such/vgg16.h5"}, r"weights = '/no/such/vgg16.h5' is not a file"),
    ({"backbone": "vgg16", "options": {"include_tops": False}}, r"options of backbone 'vgg16': .*include_tops.*; "
                                                                r"it takes include_top, weights, input_shape"),
    ({"backbone": "vgg16", "path": "models/x"}, r"\[base\] has path and backbone; give one of"),
])
def test_bad_backbones_are_refused_naming_what_exists(table, message):
    with pytest.raises(ConfigError, match=message):
        study.base_from_recipe(table)


# ------------------------------------------------------------------ two studies side by side
@pytest.fixture(scope="module")
def two_studies(tmp_path_factory):
    """The same tiny study (digits 3 vs 8, 2 seeds) with an MLP base and a CNN base."""
    root = tmp_path_factory.mktemp("compare")
    out = {}
    for label, base in (("MLP", MLP_BASE), ("CNN", CNN_BASE)):
        recipe = {"study": dict(STUDY), "task": dict(TASK), "base": dict(base)}
        out[label] = study.run_recipe(recipe, base_cache=root / "bases", out=root / label, report=False,
                                      progress=lambda _m: None)
    return out, root


def _per_seed(result, name):
    return {r["seed"]: r["test"]["accuracy"] * 100 for r in result.runs if r["variant"] == name}


def test_compare_pairs_the_gains_by_seed_and_holm_adjusts_across_variants(two_studies):
    results, _ = two_studies
    c = study.compare(results)
    assert c.labels == ["MLP", "CNN"] and c.seeds == [0, 1] and c.paired_draws
    assert [v.name for v in c.variants] == ["frozen", "unfreeze-all", "drop-top1"]
    assert c.primary == "unfreeze-all" and c.summary("unfreeze-all").primary
    raw = []
    for row in c.variants:
        gains = {}
        for label, result in results.items():
            mine, scratch = _per_seed(result, row.name), _per_seed(result, "scratch")
            gains[label] = [mine[s] - scratch[s] for s in (0, 1)]
            assert row.gains[label].mean == pytest.approx(np.mean(gains[label]))
            assert row.gain_ci[label] == bootstrap_interval(gains[label])
            assert row.p_adjusted[label] == result.summary(row.name).p_adjusted  # the study's own Holm p
        between = [b - a for a, b in zip(gains["MLP"], gains["CNN"])]
        assert row.difference.mean == pytest.approx(np.mean(between))
        assert row.difference_ci == bootstrap_interval(between)
        raw.append(paired_test(between).p)
    assert [row.difference_p_adjusted for row in c.variants] == holm(raw)
    assert c.headline() == c.summary("unfreeze-all").verdict
    assert c.headline().startswith("unfreeze-all vs scratch: ")


def test_compare_refuses_studies_it_cannot_pair(two_studies):
    results, _ = two_studies
    mlp, cnn = results["MLP"], results["CNN"]
    with pytest.raises(ConfigError, match=r"no seed in common \(MLP: \[0, 1\], CNN: \[7\]\)"):
        study.compare({"MLP": mlp, "CNN": dataclasses.replace(cnn, seeds=[7])})
    with pytest.raises(ConfigError, match=r"compare takes two studies"):
        study.compare([mlp])
    with pytest.raises(ConfigError, match=r"the same label 'x'"):
        study.compare([mlp, cnn], labels=["x", "x"])
    with pytest.raises(ConfigError, match=r"primary = 'unfreeze-top9' was not run in both studies"):
        study.compare([mlp, cnn], labels=["MLP", "CNN"], primary="unfreeze-top9")


def test_comparison_report_has_both_studies_the_difference_and_a_legend(two_studies, tmp_path):
    results, _ = two_studies
    c = study.compare(results)
    paths = report.write_comparison(c, tmp_path / "cmp")
    md = paths["markdown"].read_text()
    assert md.startswith("# MLP vs CNN base: does reuse help more with the CNN?")
    assert "| variant | MLP: test acc. % (mean ± sd) | MLP: gain vs scratch [95% bootstrap CI] | MLP: Holm p |" in md
    assert "CNN − MLP gain [95% bootstrap CI]" in md and "Holm-adjusted p" in md
    row = next(line for line in md.splitlines() if line.startswith("| unfreeze-all (primary) |"))
    assert f"{c.summary('unfreeze-all').difference.mean:+.2f}" in row
    assert "MLP/report.md" in md and "block2_conv2+block2_bn2+block2_relu2+block2_pool+flatten" in md
    assert paths["gains"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "data:image/png;base64" in paths["html"].read_text()
    fig = report.comparison_figure(c)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "MLP base: gain over scratch" in legend and "CNN base: gain over scratch" in legend
    assert "reuse helps more with CNN (Holm p < 0.05)" in legend and "no evidence of a difference in gain" in legend


def test_cli_compare_writes_the_report_and_prints_each_verdict(two_studies, tmp_path, capsys):
    _, root = two_studies
    code = main(["study", "--compare", str(root / "MLP"), str(root / "CNN"), "--labels", "MLP,CNN",
                 "--out", str(tmp_path / "c")])
    printed = capsys.readouterr().out
    assert code == 0
    assert len(re.findall(r"^- (frozen|unfreeze-all|drop-top1) vs scratch: ", printed, re.M)) == 3
    assert "verdict: primary comparison unfreeze-all (CNN vs MLP): " in printed
    assert (tmp_path / "c" / "comparison.md").is_file()
    assert main(["study", "--compare", str(root / "MLP"), str(root / "CNN"), "--labels", "MLP"]) == 2
    assert "--labels takes two names" in capsys.readouterr().err
    assert main(["study", "--labels", "a,b", "--report-only", str(root / "MLP")]) == 2
    assert "--labels names the two studies of --compare" in capsys.readouterr().err


def test_the_cnn_recipes_parse_and_build_the_bases_they_describe():
    for name, data, outputs in (("study_fashion_ab_cnn.toml", "fashion", 8), ("study_mnist_0-4_to_5-9_cnn.toml",
                                                                              "mnist:5-9", 5)):
        recipe = study.load_recipe(REPO / "examples/recipes" / name)
        mlp = study.load_recipe(REPO / "examples/recipes" / name.replace("_cnn", ""))
        assert recipe["study"]["variants"] == mlp["study"]["variants"] and recipe["study"]["seeds"] >= 10
        assert {k: v for k, v in recipe["study"].items() if k not in ("title", "budgets")} == \
            {k: v for k, v in mlp["study"].items() if k not in ("title", "budgets")}
        assert recipe["task"]["data"] == data and recipe["task"]["train_size"] == mlp["task"]["train_size"]
        net = Network(study._layers_from_table(recipe["base"]["layers"]), (1, 28, 28))
        assert len(study.hidden_blocks(net)) == 5 and net.specs[-1].units == outputs
        assert sum(isinstance(s, BatchNorm) for s in net.specs) == 4
        assert [type(s) for s in net.specs[:3]] == [Conv2d, BatchNorm, Activation]
