"""MLflow tracking against a real local store (SQLite): read the logged run back with MLflow's client."""

from __future__ import annotations

import csv

import pytest

from graftnet.cli import main
from graftnet.errors import ConfigError
from graftnet.tracking import MLflowLogger, default_uri, flatten_params

mlflow = pytest.importorskip("mlflow")

RECIPE = """\
[model]
hidden = [16]
[data]
source = "digits"
[train]
epochs = 2
batch_size = 64
device = "cpu"
"""


def test_train_with_mlflow_logs_params_metrics_per_epoch_and_the_run_folder(tmp_path):
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(RECIPE)
    runs = tmp_path / "runs"
    assert main(["train", str(recipe), "--output-dir", str(runs), "--mlflow", "-q"]) == 0
    (run_dir,) = [p for p in runs.iterdir() if p.is_dir() and p.name.startswith("tiny-")]
    client = mlflow.tracking.MlflowClient(tracking_uri=default_uri(runs))
    experiment = client.get_experiment_by_name("tiny")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == run_dir.name
    assert run.data.tags["graftnet.run_dir"] == str(run_dir.resolve())
    params = run.data.params
    assert params["train.batch_size"] == "64" and params["model.hidden"] == "[16]"
    assert params["data.source"] == "digits" and params["train.optimizer.lr"] == "0.01"
    with open(run_dir / "history.csv") as f:
        rows = list(csv.DictReader(f))
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        logged = client.get_metric_history(run.info.run_id, key)
        assert [m.step for m in logged] == [1, 2]
        assert [m.value for m in logged] == pytest.approx([float(r[key]) for r in rows], rel=1e-12)
    top = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert top == {"recipe.toml", "metrics.json", "history.csv", "learning_curves.png", "model"}  # no checkpoint
    model = {a.path for a in client.list_artifacts(run.info.run_id, "model")}
    assert {"model/spec.json", "model/weights.safetensors", "model/metadata.json"} <= model
    # a resume of the same run folder continues this MLflow run instead of starting another
    again = MLflowLogger(default_uri(runs), experiment="tiny", run_dir=run_dir)
    assert again.run_id == run.info.run_id
    again.close()


def test_a_store_that_cannot_be_opened_is_one_error_naming_it(tmp_path, capsys):
    (tmp_path / "file").write_text("not a folder")
    uri = f"sqlite:///{tmp_path / 'file' / 'mlflow.db'}"
    recipe = tmp_path / "bad.toml"
    recipe.write_text(RECIPE + f'[output]\nmlflow = "{uri}"\ndir = "{tmp_path / "runs"}"\n')
    assert main(["train", str(recipe), "-q"]) == 2
    err = capsys.readouterr().err
    assert f"cannot open the MLflow tracking store '{uri}'" in err
    with pytest.raises(ConfigError, match=r"cannot open the MLflow tracking store 'nope://x'"):
        MLflowLogger("nope://x")


def test_recipe_params_are_flattened_to_dotted_strings():
    flat = flatten_params({"train": {"optimizer": {"lr": 0.01, "nesterov": False}, "metrics": ["accuracy"]},
                           "data": {"source": "digits", "root": None}})
    assert flat == {"train.optimizer.lr": "0.01", "train.optimizer.nesterov": "false",
                    "train.metrics": "['accuracy']", "data.source": "digits"}
