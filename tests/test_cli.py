"""The ``graftnet`` command, in process through ``main([...])`` and once as a subprocess."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import tomllib
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import graftnet
import graftnet.cli as cli
import graftnet.train as train_module
from graftnet.cli import main
from graftnet.cli._common import add_train_args, parse_schedule, print_table, train_kwargs
from graftnet.io.checkpoint import load_model, read_checkpoint, save_model
from graftnet.recipe import SCHEMA

RECIPE = """
[model]
name = "tiny"
hidden = [16]
normalize = true

[data]
source = "digits"
train_size = 300
valid_size = 100
test_size = 100

[train]
epochs = {epochs}
batch_size = 32
optimizer = {{ type = "sgd", lr = 0.05, momentum = 0.9 }}
schedule = {{ type = "cosine" }}
seed = 7
device = "cpu"

[output]
dir = "{out}"
tensorboard = {tensorboard}
"""


def write_recipe(tmp_path: Path, epochs: int = 3, tensorboard: bool = False, out: str = "runs",
                 name: str = "tiny.toml") -> Path:
    path = tmp_path / name
    path.write_text(RECIPE.format(epochs=epochs, out=tmp_path / out, tensorboard=str(tensorboard).lower()))
    return path


def only_run(folder: Path) -> Path:
    runs = [p for p in folder.iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One finished run (3 epochs on 300 digits), shared by the tests that read it."""
    tmp_path = tmp_path_factory.mktemp("trained")
    assert main(["train", str(write_recipe(tmp_path, tensorboard=True)), "-q"]) == 0
    return only_run(tmp_path / "runs")


# ---------------------------------------------------------------- help and version
def test_help_in_a_subprocess():
    script = Path(sys.executable).with_name("graftnet")
    done = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    for text in ("examples:", "graftnet train examples/recipes/fashion_mlp.toml", "train", "evaluate",
                 "predict", "inspect", "demo"):
        assert text in done.stdout


@pytest.mark.parametrize("command", ["train", "evaluate", "predict", "inspect", "demo"])
def test_each_command_has_examples(command, capsys, monkeypatch):
    monkeypatch.setattr(cli, "MODULES", ("graftnet.cli.train",))  # this module's own demo, not the study's
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and f"graftnet {command}" in out


def test_version(capsys):
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip().startswith(f"graftnet {graftnet.__version__} (torch ")


def test_a_later_module_replaces_a_command(monkeypatch, capsys):
    def register(subparsers):
        parser = subparsers.add_parser("demo", help="the study demo")
        parser.set_defaults(func=lambda args: print("study demo ran") or 0)

    fake = types.ModuleType("fake_study")
    fake.COMMANDS, fake.register = ("demo",), register
    monkeypatch.setitem(sys.modules, "fake_study", fake)
    monkeypatch.setattr(cli, "MODULES", ("graftnet.cli.train", "graftnet.cli.not_written_yet", "fake_study"))
    assert main(["demo"]) == 0
    assert capsys.readouterr().out == "study demo ran\n"


# ---------------------------------------------------------------- train
def test_train_writes_every_run_file(trained):
    names = {p.name for p in trained.iterdir()}
    assert names == {"recipe.toml", "metrics.json", "history.csv", "learning_curves.png", "model", "checkpoint",
                     "tensorboard"}
    recipe = tomllib.loads((trained / "recipe.toml").read_text())
    assert set(recipe["train"]) == set(SCHEMA["train"])  # resolved: every default written out
    assert recipe["train"]["optimizer"] == {"type": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": False,
                                            "weight_decay": 0.0}
    assert recipe["output"]["name"] == "tiny"  # the recipe file's name
    metrics = json.loads((trained / "metrics.json").read_text())
    assert metrics["epochs"] == 3 and metrics["device"] == "cpu"
    assert metrics["examples"] == {"train": 300, "valid": 100, "test": 100}
    assert set(metrics["test"]) == {"loss", "accuracy"} and metrics["test"]["accuracy"] > 0.5
    rows = list(csv.DictReader((trained / "history.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert float(rows[0]["lr"]) == pytest.approx(0.05) and float(rows[2]["lr"]) < 0.05  # cosine schedule
    png = trained / "learning_curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(png) as image:
        image.verify()
    assert list((trained / "tensorboard" / "train").glob("events.out.tfevents.*"))
    model = load_model(trained / "model")
    assert model.info["classes"] == [str(d) for d in range(10)]
    assert model.info["metrics"]["test"] == metrics["test"]
    assert (trained / "checkpoint" / "state.json").is_file()


def test_flags_override_the_recipe(tmp_path):
    recipe = write_recipe(tmp_path)
    assert main(["train", str(recipe), "--epochs", "1", "--lr", "0.02", "--hidden", "8", "4", "--name", "short",
                 "-q"]) == 0
    run = only_run(tmp_path / "runs")
    assert run.name.startswith("short-")
    resolved = tomllib.loads((run / "recipe.toml").read_text())
    assert resolved["train"]["epochs"] == 1 and resolved["model"]["hidden"] == [8, 4]
    assert resolved["train"]["optimizer"]["lr"] == 0.02 and resolved["train"]["optimizer"]["momentum"] == 0.9


def test_lr_flag_keeps_the_recipes_optimizer(tmp_path):
    recipe = tmp_path / "adam.toml"
    recipe.write_text('[data]\nsource = "digits"\ntrain_size = 50\n[model]\nhidden = [4]\n'
                      '[train]\nepochs = 0\noptimizer = { type = "adam", betas = [0.8, 0.9] }\n'
                      f'[output]\ndir = "{tmp_path}"\n')
    assert main(["train", str(recipe), "--lr", "0.003", "-q"]) == 0
    optimizer = tomllib.loads((only_run(tmp_path) / "recipe.toml").read_text())["train"]["optimizer"]
    assert optimizer["type"] == "adam" and optimizer["lr"] == 0.003 and optimizer["betas"] == [0.8, 0.9]


def test_train_from_flags_alone(tmp_path):
    assert main(["train", "--data", "digits", "--train-size", "200", "--hidden", "8", "--epochs", "1",
                 "--optimizer", "adam", "--lr", "0.01", "--device", "cpu", "--output-dir", str(tmp_path), "-q"]) == 0
    resolved = tomllib.loads((only_run(tmp_path) / "recipe.toml").read_text())
    assert resolved["train"]["optimizer"]["type"] == "adam" and resolved["data"]["train_size"] == 200


def test_resume_gives_the_weights_of_an_uninterrupted_run(tmp_path, monkeypatch, capsys):
    full = write_recipe(tmp_path, epochs=4, out="full", name="full.toml")
    assert main(["train", str(full), "-q"]) == 0
    expected = load_file(str(only_run(tmp_path / "full") / "model" / "weights.safetensors"))

    original_save = train_module._save

    def save_then_interrupt(*args, **kwargs):  # Ctrl-C right after the checkpoint of epoch 2
        original_save(*args, **kwargs)
        if args[6] == 2:
            raise KeyboardInterrupt

    cut = write_recipe(tmp_path, epochs=4, out="cut", name="cut.toml")
    monkeypatch.setattr(train_module, "_save", save_then_interrupt)
    assert main(["train", str(cut), "-q"]) == 130
    assert "graftnet train --resume" in capsys.readouterr().err
    run = only_run(tmp_path / "cut")
    assert read_checkpoint(run / "checkpoint")[1]["state"]["epoch"] == 2
    assert not (run / "model").exists()
    monkeypatch.setattr(train_module, "_save", original_save)

    assert main(["train", str(cut), "--resume", "-q"]) == 0
    assert only_run(tmp_path / "cut") == run  # continued in the same run folder
    resumed = load_file(str(run / "model" / "weights.safetensors"))
    assert resumed.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(resumed[key], expected[key], rtol=0, atol=1e-6)
    assert len(list(csv.DictReader((run / "history.csv").open()))) == 4


def test_resume_with_another_model_is_refused(tmp_path, capsys):
    recipe = write_recipe(tmp_path, epochs=1)
    assert main(["train", str(recipe), "-q"]) == 0
    run = only_run(tmp_path / "runs")
    assert main(["train", str(recipe), "--resume", str(run), "--hidden", "32", "-q"]) == 2
    assert "differs from the run's recipe.toml in [model] hidden" in capsys.readouterr().err


def test_unknown_recipe_key_exits_2_naming_the_key(tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text('[data]\nsource = "digits"\n[train]\nepochs = 3\nlearning_rate = 0.1\n')
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"graftnet: error: {path}: unknown key 'learning_rate' in [train]; valid keys are epochs")
    assert "Traceback" not in err


def test_bad_data_fails_before_a_run_folder_is_made(tmp_path, capsys):
    assert main(["train", "--data", "digitz", "--output-dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("graftnet: error: unknown dataset 'digitz'") and "Did you mean 'digits'?" in err
    assert not (tmp_path / "runs").exists()


def test_errors_are_one_line_without_traceback(tmp_path, capsys):
    assert main(["inspect", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err == f"graftnet: error: no model at {tmp_path / 'missing'}: the directory does not exist\n"


def test_interim_demo_trains_saves_reloads_and_tests(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli, "MODULES", ("graftnet.cli.train",))  # without the study module's demo
    assert main(["demo", "--epochs", "0", "--output-dir", str(tmp_path), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "test accuracy of the reloaded model: " in out and "(10,000 test images; before saving: " in out
    run = only_run(tmp_path)
    assert load_model(run / "model").layer_names == ["normalize", "flatten", "hidden1", "hidden2", "outputs"]


# ---------------------------------------------------------------- shared helpers
def test_print_table_plain_and_rich(capsys, monkeypatch):
    rows = [{"layer": "hidden1", "params": 235500}, {"layer": "outputs", "params": 1010}]
    print_table(rows, right=("params",))
    assert capsys.readouterr().out.splitlines() == ["layer     params", "-------  -------",
                                                    "hidden1  235,500", "outputs    1,010"]
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    print_table(rows, title="net")
    out = capsys.readouterr().out
    assert "net" in out and "235,500" in out and "│" in out  # rich's box drawing


def test_train_kwargs_from_flags():
    import argparse

    parser = argparse.ArgumentParser()
    add_train_args(parser)
    args = parser.parse_args(["--epochs", "3", "--momentum", "0.9", "--lr", "0.1", "--no-cache",
                              "--schedule", "piecewise:boundaries=[5],values=[0.1,0.01]"])
    assert train_kwargs(args) == {"epochs": 3, "lr": 0.1, "cache": False,
                                  "optimizer": {"type": "sgd", "momentum": 0.9},
                                  "schedule": {"type": "piecewise", "boundaries": [5], "values": [0.1, 0.01]}}
    assert train_kwargs(parser.parse_args([])) == {}
    assert parse_schedule("cosine") == "cosine"
    with pytest.raises(ValueError, match=r"--schedule .exponential:s=.: settings must be TOML key=value pairs"):
        parse_schedule("exponential:s=")


# ---------------------------------------------------------------- inspect, evaluate, predict
def test_inspect_shows_layers_trainable_and_metadata(trained, tmp_path, capsys):
    assert main(["inspect", str(trained)]) == 0  # a run folder means its model/
    out = capsys.readouterr().out
    for text in ("layer", "trainable", "normalize", "flatten", "hidden1", "outputs", "(None, 16)", "1,210",
                 "data:      digits", "classes:   0, 1, 2", "metrics:   test loss", "created:"):
        assert text in out, text
    model = load_model(trained / "model")
    model.freeze("hidden1")
    model.lineage = {"base": "models/fashion-a", "layers": {"hidden1": "fashion-a/hidden1"}}
    save_model(model, tmp_path / "frozen")
    assert main(["inspect", str(tmp_path / "frozen")]) == 0
    out = capsys.readouterr().out
    hidden1 = next(line for line in out.splitlines() if line.startswith("hidden1"))
    assert "frozen" in hidden1 and "fashion-a/hidden1" in hidden1
    assert "lineage:   base models/fashion-a" in out
    assert main(["inspect", str(tmp_path / "frozen"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert [layer["trainable"] for layer in info["layers"]][:3] == ["-", "-", "frozen"]


def test_evaluate_uses_the_training_data_by_default(trained, capsys):
    metrics = json.loads((trained / "metrics.json").read_text())
    assert main(["evaluate", str(trained / "model"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["split"] == "test" and result["examples"] == 100
    assert result["accuracy"] == pytest.approx(metrics["test"]["accuracy"], abs=1e-6)
    assert main(["evaluate", str(trained), "--data", "digits", "--split", "valid"]) == 0
    assert capsys.readouterr().out.startswith("digits valid (300 examples): loss ")


def test_evaluate_on_data_that_does_not_fit(trained, tmp_path, capsys):
    x = np.zeros((10, 5), dtype=np.float32)
    np.savez(tmp_path / "other.npz", x_train=x, y_train=np.arange(10) % 2, x_test=x, y_test=np.arange(10) % 2)
    assert main(["evaluate", str(trained), "--data", str(tmp_path / "other.npz")]) == 2
    assert "has examples of shape (5,) but the model expects (1, 8, 8)" in capsys.readouterr().err


def test_predict_csv_npy_and_npz_input(trained, tmp_path, capsys):
    csv_path, npy_path = tmp_path / "preds.csv", tmp_path / "probs.npy"
    assert main(["predict", str(trained), "--split", "test", "-o", str(csv_path)]) == 0
    rows = list(csv.reader(csv_path.open()))
    assert rows[0] == ["predicted"] + [str(d) for d in range(10)] and len(rows) == 101
    probs = np.array([[float(v) for v in row[1:]] for row in rows[1:]])
    assert np.allclose(probs.sum(1), 1.0, atol=1e-5)
    assert [row[0] for row in rows[1:]] == [str(i) for i in probs.argmax(1)]

    model = load_model(trained / "model")
    from graftnet.recipe import build_data, resolve
    data = build_data(resolve({"data": model.info["recipe"]["data"]}))
    flat = data.test.x.reshape(100, -1).numpy()  # (N, 64): reshaped to the model's (1, 8, 8)
    np.savez(tmp_path / "inputs.npz", x=flat)
    assert main(["predict", str(trained / "model"), str(tmp_path / "inputs.npz"), "-o", str(npy_path)]) == 0
    assert np.allclose(np.load(npy_path), probs, atol=1e-5)
    capsys.readouterr()
    assert main(["predict", str(trained), str(tmp_path / "inputs.npz")]) == 0  # CSV to stdout
    assert capsys.readouterr().out.splitlines()[1].split(",")[0] == rows[1][0]
    np.savez(tmp_path / "wrong.npz", x=np.zeros((3, 7)))
    assert main(["predict", str(trained), str(tmp_path / "wrong.npz")]) == 2
    assert "inputs of shape (3, 7) do not fit the model, which expects (N, 1, 8, 8)" in capsys.readouterr().err


def test_hidden_sizes_accept_spaces_or_commas():
    from graftnet.cli import train as cli_train
    import argparse

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    cli_train.register(sub)
    spaced = parser.parse_args(["train", "--hidden", "300", "100"])
    commas = parser.parse_args(["train", "--hidden", "300,100"])
    assert cli_train._overrides(spaced)["model"]["hidden"] == [300, 100]
    assert cli_train._overrides(commas)["model"]["hidden"] == [300, 100]
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--hidden", "300,x"])


# ---------------------------------------------------------------- models that know what they are
def test_predict_a_model_saved_from_python_prints_classes_and_probabilities(tmp_path, capsys):
    """The README's flow (gn.fit + gn.save_model, no recipe) gives a model whose predictions are
    classes and probabilities, not raw logits under a regression header."""
    from graftnet.data import digits
    from graftnet.network import Network
    from graftnet.train import fit

    data = digits().head(train=200)
    model = Network.mlp(data.input_shape, [16], data.n_outputs)
    fit(model, data, epochs=1, verbose=False, cache=False, device="cpu")
    save_model(model, tmp_path / "m")
    assert main(["predict", str(tmp_path / "m"), "--data", "digits", "-o", str(tmp_path / "p.csv")]) == 0
    rows = list(csv.reader((tmp_path / "p.csv").open()))
    assert rows[0] == ["predicted", *data.classes] and len(rows) == 1 + len(data.test)
    probs = np.array([[float(v) for v in row[1:]] for row in rows[1:]])
    assert np.allclose(probs.sum(1), 1.0, atol=1e-5) and (probs >= 0).all()
    assert [row[0] for row in rows[1:]] == [data.classes[i] for i in probs.argmax(1)]


def test_predict_an_imported_keras_softmax_model_prints_classes(tmp_path, capsys):
    fixture = Path(__file__).parent / "fixtures" / "keras" / "keras2_cnn.keras"
    assert main(["import", str(fixture), "-o", str(tmp_path / "k")]) == 0
    meta = json.loads((tmp_path / "k" / "metadata.json").read_text())
    assert (meta["task"], meta["output_activation"], meta["classes"]) == ("multiclass", "softmax",
                                                                           [str(i) for i in range(10)])
    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((4, 3, 12, 12), dtype=np.float32))
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "k"), str(tmp_path / "x.npy")]) == 0
    rows = list(csv.reader(capsys.readouterr().out.splitlines()))
    assert rows[0] == ["predicted", *[str(i) for i in range(10)]] and len(rows) == 5
    assert np.allclose([sum(float(v) for v in row[1:]) for row in rows[1:]], 1.0, atol=1e-5)


def test_predict_says_when_nothing_describes_the_outputs(tmp_path, capsys):
    from graftnet.network import Network

    save_model(Network.mlp(4, [8], 3), tmp_path / "bare")  # linear outputs, never trained: logits or values?
    np.save(tmp_path / "x.npy", np.zeros((2, 4), dtype=np.float32))
    assert main(["predict", str(tmp_path / "bare"), str(tmp_path / "x.npy")]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines()[0] == "output_0,output_1,output_2"
    assert "does not say what its outputs are" in captured.err and "--data" in captured.err


# ---------------------------------------------------------------- --debug anywhere
@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_works_anywhere_on_the_command_line(tmp_path, capsys, where):
    words = ["inspect", str(tmp_path / "missing")]
    argv = ["--debug", *words] if where == "before" else [*words, "--debug"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.rstrip().endswith(f"no model at {tmp_path / 'missing'}: the directory does "
                                                        f"not exist")


# ---------------------------------------------------------------- the recipe on disk describes what ran
def test_resume_refuses_settings_the_checkpoint_fixes_and_keeps_the_recipe_true(tmp_path, capsys):
    recipe = write_recipe(tmp_path, epochs=2)
    assert main(["train", str(recipe), "-q"]) == 0
    run = only_run(tmp_path / "runs")
    written = (run / "recipe.toml").read_text()
    assert main(["train", "--resume", str(run), "--lr", "0.5", "--epochs", "3", "-q"]) == 2
    err = capsys.readouterr().err
    assert "[train] optimizer (" in err and "cannot apply" in err and "0.5" in err
    assert main(["train", "--resume", str(run), "--seed", "8", "--epochs", "3", "-q"]) == 2
    assert "[train] seed (7 in the run, 8 given)" in capsys.readouterr().err
    assert main(["train", "--resume", str(run), "--epochs", "1", "-q"]) == 2
    assert "already trained 2 epoch(s) and epochs = 1, so there is nothing left to train; pass --epochs N with " \
           "N > 2" in capsys.readouterr().err
    assert (run / "recipe.toml").read_text() == written  # refused: nothing rewritten
    assert main(["train", "--resume", str(run), "--epochs", "3", "-q"]) == 0
    assert "trained 3 epoch(s)" in capsys.readouterr().out
    saved = tomllib.loads((run / "recipe.toml").read_text())
    assert saved["train"]["epochs"] == 3 and saved["train"]["optimizer"]["lr"] == 0.05


# ---------------------------------------------------------------- data folders
def test_data_root_is_one_convention_and_only_read(tmp_path, capsys):
    """--data-root, a recipe's root and Python's root= name the same folder (holding mnist/), and
    a root that lacks the files is an error that writes nothing there."""
    from graftnet.data import find_idx_dir

    source = find_idx_dir("mnist")
    assert source is not None
    root = tmp_path / "data"
    (root / "mnist").mkdir(parents=True)
    for path in source.iterdir():
        (root / "mnist" / path.name).symlink_to(path)
    out = tmp_path / "runs"
    args = ["train", "--data", "mnist:0-1", "--data-root", str(root), "--train-size", "50", "--valid-size", "20",
            "--test-size", "20", "--epochs", "1", "--hidden", "8", "--output-dir", str(out), "--device", "cpu"]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert (f"data: mnist:0-1 from train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, "
            f"t10k-labels-idx1-ubyte.gz in {root / 'mnist'} (sha256 verified)") in err
    run = only_run(out)
    meta = json.loads((run / "model" / "metadata.json").read_text())
    assert meta["data"]["root"] == str(root / "mnist") and len(meta["data"]["files"]) == 4
    assert tomllib.loads((run / "recipe.toml").read_text())["data"]["root"] == str(root)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([*args[:3], "--data-root", str(empty), *args[5:]]) == 2
    assert "MNIST not found" in capsys.readouterr().err
    assert list(empty.iterdir()) == []  # given only for reading: nothing downloaded or created there
