"""Run directories: names, atomic files, learning curves, TensorBoard, and a regression run."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

from graftnet.data import from_arrays, save_npz
from graftnet.io.checkpoint import load_model
from graftnet.recipe import resolve
from graftnet.runs import RunDir, TensorBoardLogger, plot_learning_curves, train_run
from graftnet.train import History

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def history(stages: bool = False, valid: bool = True, metric: str = "accuracy") -> History:
    rows = []
    for epoch in range(1, 7):
        row = {"epoch": epoch, "loss": 1.0 / epoch, metric: 0.5 + epoch / 20}
        if valid:
            row.update({"val_loss": 1.2 / epoch, f"val_{metric}": 0.45 + epoch / 20})
        if stages:
            row["stage"] = "head" if epoch <= 2 else "all"
        row.update({"lr": 0.01, "seconds": 0.1})
        rows.append(row)
    return History(epochs=rows)


def test_create_makes_unique_stamped_folders(tmp_path):
    first, second = RunDir.create(tmp_path, "exp"), RunDir.create(tmp_path, "exp")
    assert first.path != second.path and first.path.is_dir() and second.path.is_dir()
    assert first.path.name.startswith("exp-") and len(first.path.name) == len("exp-20250101-120000")


def test_latest_is_the_newest_run_with_a_checkpoint(tmp_path):
    for name in ("exp-20250101-120000", "exp-20250102-120000", "exp-20250102-120000-2", "exp-20250103-120000",
                 "exp2-20250104-120000"):
        (tmp_path / name).mkdir()
    for name in ("exp-20250101-120000", "exp-20250102-120000", "exp-20250102-120000-2", "exp2-20250104-120000"):
        (tmp_path / name / "checkpoint").mkdir()
    assert RunDir.latest(tmp_path, "exp").path.name == "exp-20250102-120000-2"  # -03 has no checkpoint
    assert RunDir.latest(tmp_path, "other") is None


def test_recipe_and_metrics_files_round_trip_without_leftovers(tmp_path):
    run = RunDir(tmp_path / "run")
    recipe = resolve({"data": {"source": "digits"}})
    run.write_recipe(recipe)
    assert resolve(run.read_recipe()) == recipe
    run.write_metrics({"test": {"accuracy": 0.5}, "epochs": 3})
    assert json.loads(run.metrics_path.read_text()) == {"test": {"accuracy": 0.5}, "epochs": 3}
    run.write_history(history())
    assert run.history_path.read_text().splitlines()[0] == "epoch,loss,accuracy,val_loss,val_accuracy,lr,seconds"
    assert sorted(p.name for p in run.path.iterdir()) == ["history.csv", "metrics.json", "recipe.toml"]


@pytest.mark.parametrize("kind", ["classification", "stages", "no-valid", "regression"])
def test_learning_curves_png(tmp_path, kind):
    h = {"classification": history(), "stages": history(stages=True), "no-valid": history(valid=False),
         "regression": history(metric="mae")}[kind]
    path = plot_learning_curves(h, tmp_path / "curves.png", title="t")
    assert path.read_bytes().startswith(PNG_MAGIC)
    with Image.open(path) as image:
        image.verify()
        width, height = image.size
    assert width >= 2 * height  # two panels side by side: loss and accuracy (or mae)


def test_tensorboard_logger_writes_train_and_validation_scalars(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = TensorBoardLogger(tmp_path / "tb")
    for row in history().epochs:
        logger(row, None)
    logger.close()
    train = EventAccumulator(str(tmp_path / "tb" / "train")).Reload()
    valid = EventAccumulator(str(tmp_path / "tb" / "validation")).Reload()
    assert {"epoch_loss", "epoch_accuracy", "epoch_learning_rate"} <= set(train.Tags()["scalars"])
    assert [e.step for e in valid.Scalars("epoch_loss")] == [1, 2, 3, 4, 5, 6]
    assert valid.Scalars("epoch_loss")[1].value == pytest.approx(0.6)


def test_train_run_on_a_regression_npz(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(240, 5)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5, 0.0, 3.0]) + 1.0).astype(np.float32)
    save_npz(from_arrays(x[:160], y[:160], x[160:200], y[160:200], x[200:], y[200:], task="regression"),
             tmp_path / "reg.npz")
    recipe = resolve({"data": {"source": str(tmp_path / "reg.npz")}, "model": {"hidden": [16]},
                      "train": {"epochs": 30, "batch_size": 16, "optimizer": {"type": "adam", "lr": 0.01},
                                "metrics": ["mae"], "device": "cpu"},
                      "output": {"checkpoint": False}}, name="reg")
    result = train_run(recipe, RunDir(tmp_path / "run"), verbose=False)
    first, last = result.history.epochs[0]["loss"], result.history.epochs[-1]["loss"]
    assert last < 0.05 * first
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert set(metrics["test"]) == {"loss", "mae"} and metrics["test"]["mae"] < 1.0
    assert not (tmp_path / "run" / "checkpoint").exists()
    model = load_model(tmp_path / "run" / "model")
    assert model.info["task"] == "regression" and model.info["classes"] is None
    assert math.isclose(model.info["metrics"]["test"]["mae"], metrics["test"]["mae"])
