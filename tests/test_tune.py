"""graftnet tune: search spaces written in recipes, Optuna with SQLite storage, resuming,
pruning, worker processes, a real local Ray instance, and the report."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from graftnet.errors import ConfigError
from graftnet.recipe import load_recipe
from graftnet.tune import SearchSpace, check_tune_recipe, tune

optuna = pytest.importorskip("optuna")

RECIPE = {
    "model": {"hidden": {"choice": [[32], [16, 16]]}, "activation": {"choice": ["relu", "elu"]}},
    "data": {"source": "digits", "train_size": 400},
    "train": {"epochs": 2, "batch_size": 64,
              "optimizer": {"type": "sgd", "lr": {"log_uniform": [1e-3, 3e-1]}}},
    "tune": {"trials": 3, "sampler": "random", "seed": 1},
}


def _recipe(**tune_settings):
    recipe = copy.deepcopy(RECIPE)
    recipe["tune"].update(tune_settings)
    return recipe


def _states(folder: Path, name: str) -> list[str]:
    """The trial states of study ``name`` in ``folder/tune.db``, read without writing to it
    (Optuna's own loader creates its tables, which races a tune that is creating them)."""
    import sqlite3

    path = folder / "tune.db"
    if not path.exists():
        return []
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30) as db:
            rows = db.execute("SELECT t.state FROM trials t JOIN studies s ON t.study_id = s.study_id "
                              "WHERE s.study_name = ? ORDER BY t.number", (name,)).fetchall()
    except sqlite3.Error:  # the tables are not there yet
        return []
    return [row[0] for row in rows]


def test_the_search_space_is_found_where_it_is_written():
    space = SearchSpace.find(RECIPE)
    assert set(space.params) == {"model.hidden", "model.activation", "train.optimizer.lr", }
    filled = space.fill(RECIPE, {"model.hidden": [16, 16], "model.activation": "elu", "train.optimizer.lr": 0.01})
    assert filled["model"]["hidden"] == [16, 16] and filled["train"]["optimizer"] == {"type": "sgd", "lr": 0.01}
    assert RECIPE["model"]["hidden"] == {"choice": [[32], [16, 16]]}  # not changed in place


@pytest.mark.parametrize("bad, message", [
    ({"model": {"hidden": {"choice": []}}}, r"model.hidden = \{ choice = ... \} needs a non-empty list"),
    ({"train": {"epochs": {"normal": [1, 2]}}}, r"\[train\] epochs must be an integer"),
    ({"train": {"batch_size": {"int": [64, 8]}}}, r"low must be below high"),
    ({"train": {"optimizer": {"type": "sgd", "lr": {"log_uniform": [0, 1]}}}}, r"a log scale needs low > 0"),
    ({"train": {"dropout": {"uniform": [0, 1], "stpe": 0.1}}}, r"does not take 'stpe'"),
    ({"tune": {"trails": 3}}, r"unknown key 'trails' in \[tune\].*Did you mean 'trials'"),
    ({"tune": {"backend": "dask"}}, r"backend must be one of local, ray, got 'dask'"),
])
def test_bad_search_spaces_are_named(bad, message):
    recipe = copy.deepcopy(RECIPE)
    for section, body in bad.items():
        recipe.setdefault(section, {}).update(body)
    with pytest.raises(ConfigError, match=message):
        check_tune_recipe(recipe, "t.toml")


def test_a_storage_that_cannot_be_opened_says_what_was_given(tmp_path):
    with pytest.raises(ConfigError, match=r"storage 'sqlite:////no/such/folder/t.db' cannot be opened"):
        tune(_recipe(storage="sqlite:////no/such/folder/t.db"), folder=tmp_path, name="t", log=lambda s: None)


def test_a_tune_writes_the_best_recipe_and_a_report_and_continues_where_it_stopped(tmp_path):
    result = tune(_recipe(), folder=tmp_path, name="digits", log=lambda s: None)
    assert result.trials_done == 3 and _states(tmp_path, "digits") == ["COMPLETE"] * 3
    best = load_recipe(tmp_path / "best_recipe.toml")  # a valid training recipe, ready for graftnet train
    assert best["train"]["optimizer"]["lr"] == pytest.approx(result.best_params["train.optimizer.lr"])
    values = [t.value for t in result.study.trials]
    assert result.best_value == max(values)
    report = (tmp_path / "report.md").read_text()
    assert "| trial | val_accuracy |" in report and "fANOVA" in report
    for picture in ("history.png", "importances.png"):
        assert (tmp_path / picture).read_bytes()[:4] == b"\x89PNG"
    again = tune(_recipe(trials=4), folder=tmp_path, name="digits", log=lambda s: None)
    assert again.trials_done == 1 and len(again.study.trials) == 4


def test_bad_trials_are_pruned_from_per_epoch_validation(tmp_path):
    good, bad = {"train.optimizer.lr": 0.3}, {"train.optimizer.lr": 1e-6}
    recipe = _recipe(trials=3, pruner="median", startup_trials=1, enqueue=[good, bad, bad])
    recipe["model"] = {"hidden": [32]}
    recipe["train"]["epochs"] = 4
    recipe["train"]["optimizer"]["lr"] = {"choice": [0.3, 1e-6]}
    result = tune(recipe, folder=tmp_path, name="p", log=lambda s: None)
    first, *rest = result.study.trials
    assert first.state.name == "COMPLETE" and len(first.intermediate_values) == 4
    assert [t.params["train.optimizer.lr"] for t in rest] == [1e-6, 1e-6]
    assert all(t.state.name == "PRUNED" and len(t.intermediate_values) < 4 for t in rest)


def test_two_worker_processes_share_one_search(tmp_path):
    result = tune(_recipe(trials=4, jobs=2), folder=tmp_path, name="jobs", log=lambda s: None)
    states = _states(tmp_path, "jobs")
    assert states.count("COMPLETE") >= 4 and len(states) <= 5  # each worker may start one more


def test_a_killed_tune_resumes_where_it_stopped(tmp_path):
    import tomli_w

    recipe = _recipe(trials=4)
    recipe["train"]["epochs"] = 6
    path = tmp_path / "killed.toml"
    path.write_text(tomli_w.dumps(recipe))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "graftnet", "tune", str(path), "--out", str(tmp_path / "out")],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db = tmp_path / "out" / "tune.db"
    deadline = time.time() + 120
    while time.time() < deadline:
        if db.exists() and "COMPLETE" in _states(tmp_path / "out", "killed"):
            break
        time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = _states(tmp_path / "out", "killed")
    assert 1 <= before.count("COMPLETE") < 4
    result = tune(path, folder=tmp_path / "out", name="killed", log=lambda s: None)
    after = _states(tmp_path / "out", "killed")
    assert after.count("COMPLETE") + after.count("PRUNED") == 4 and result.trials_done == 4 - before.count("COMPLETE")


RAY_SCENARIO = """
import json, sys
import ray
from graftnet.tune import tune
recipe, folder = json.loads(sys.argv[1]), sys.argv[2]
ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
try:
    result = tune(recipe, folder=folder, name="ray", log=lambda s: None)
finally:
    ray.shutdown()
print(json.dumps({"best": result.best_value}))
"""


def run_bounded(code: str, *args: str, timeout: float = 300, tries: int = 2) -> subprocess.CompletedProcess:
    """Run a Python scenario in its own process under a hard time limit (a Ray start-up that
    stalls on a loaded machine must not hang the suite); a stalled first try is retried once."""
    for attempt in range(tries):
        try:
            return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                                  timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            if attempt == tries - 1:
                raise


def test_the_same_trials_run_on_a_real_local_ray_instance(tmp_path):
    pytest.importorskip("ray")
    import json

    done = run_bounded(RAY_SCENARIO, json.dumps(_recipe(trials=2, jobs=2, backend="ray")), str(tmp_path))
    assert done.returncode == 0, done.stderr[-2000:]
    states = _states(tmp_path, "ray")
    assert states.count("COMPLETE") >= 2 and json.loads(done.stdout.splitlines()[-1])["best"] > 0.1


def test_a_ray_address_that_does_not_answer_is_named(tmp_path):
    pytest.importorskip("ray")
    with pytest.raises(ConfigError, match=r"cannot reach the Ray cluster at '127.0.0.1:1'"):
        tune(_recipe(backend="ray", address="127.0.0.1:1"), folder=tmp_path, name="r", log=lambda s: None)
