"""`graftnet study` and `graftnet demo` on the command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from graftnet.cli import build_parser, main
from graftnet.cli import study as cli_study
from graftnet.data import save_npz
from graftnet.io.checkpoint import save_model

sys.path.insert(0, str(Path(__file__).parent))
from test_study import tiny_base, tiny_task  # noqa: E402


@pytest.fixture()
def files(tmp_path):
    base_dir = save_model(tiny_base(), tmp_path / "base")
    task = save_npz(tiny_task(), tmp_path / "task.npz")
    return base_dir, task, tmp_path


def test_study_on_a_tiny_base_writes_the_report_and_prints_the_verdict(files, capsys):
    base_dir, task, tmp = files
    out = tmp / "out"
    code = main(["study", str(base_dir), "--data", str(task), "--seeds", "2", "--epochs", "2", "--head-epochs", "1",
                 "--optimizer", "sgd", "--lr", "0.05", "--variants", "scratch,frozen,drop-top1", "--sample", "60",
                 "--out", str(out), "--quiet"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "verdict: " in printed and f"report: {out / 'report.html'}" in printed
    runs = json.loads((out / "results.json").read_text())["runs"]
    assert sorted((r["variant"], r["seed"]) for r in runs) == [
        ("drop-top1", 0), ("drop-top1", 1), ("frozen", 0), ("frozen", 1), ("scratch", 0), ("scratch", 1)]
    assert {r["budget"] for r in runs} == {60}
    assert (out / "report.md").is_file()


def test_study_recipe_with_an_unknown_key_fails_naming_it(files, capsys):
    base_dir, task, tmp = files
    recipe = tmp / "study.toml"
    recipe.write_text("[study]\nseeds = 2\nepocs = 3\n")
    code = main(["study", str(base_dir), "--data", str(task), "--recipe", str(recipe)])
    assert code == 2
    assert "unknown key 'epocs' in [study]" in capsys.readouterr().err


def test_study_without_base_or_task_says_what_to_pass(files, capsys):
    _, task, _ = files
    assert main(["study", "--data", str(task)]) == 2
    assert "no BASE given" in capsys.readouterr().err


def test_budget_larger_than_the_data_is_a_clear_error(files, capsys):
    base_dir, task, tmp = files
    code = main(["study", str(base_dir), "--data", str(task), "--budgets", "50,5000", "--out", str(tmp / "o")])
    assert code == 2
    assert "budget of 5000 training examples is larger than the 120" in capsys.readouterr().err


def test_demo_is_the_study_module_s_command():
    parser = build_parser()
    args = parser.parse_args(["demo", "--seeds", "3"])
    assert args.func is cli_study.run_demo and args.seeds == 3 and args.out == "runs/demo"
    assert cli_study.COMMANDS == ("study", "demo")


TINY_DEMO = {
    "study": {"title": "tiny demo", "seeds": 2, "variants": ["scratch", "frozen", "unfreeze-all"], "epochs": 2,
              "head_epochs": 1, "batch_size": 32, "optimizer": {"type": "sgd", "lr": 0.05}},
    "task": {"data": "digits", "only": ["8", "9"], "positive": "9", "train_size": 40},
    "base": {"name": "model-a", "data": "digits", "hidden": [16, 16], "epochs": 1, "seed": 1},
    "reference": {"source": "the book", "values": {"scratch": 97.05, "unfreeze-all": 99.25},
                  "labels": {"scratch": "model B", "unfreeze-all": "model B on A"}},
}


def test_demo_trains_model_a_once_keyed_by_its_recipe(tmp_path, monkeypatch, capsys):
    from graftnet import study

    monkeypatch.setattr(study, "DEMO_RECIPE", TINY_DEMO)
    cache, out = tmp_path / "cache", tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--base-cache", str(cache)]) == 0
    first = capsys.readouterr()
    assert "base: training model-a" in first.err
    assert "verdict: " in first.out and f"report: {out / 'report.html'}" in first.out
    assert "scratch        book  97.05%   ours" in first.out and "unfreeze-all   book  99.25%" in first.out
    assert "trained in this run" in (out / "report.md").read_text()

    assert main(["demo", "--out", str(out), "--base-cache", str(cache)]) == 0
    again = capsys.readouterr()
    assert "base: reusing" in again.err  # the same recipe: model A is not retrained
    assert "resuming: 6 finished run(s)" in again.err  # and no finished run is redone
    assert "reused from" in (out / "report.md").read_text()

    changed = {**TINY_DEMO["base"], "hidden": [16, 8]}
    study.base_from_recipe(changed, cache_dir=cache, progress=print)
    assert "base: training model-a" in capsys.readouterr().out  # a changed recipe retrains
    assert len(list(cache.iterdir())) == 2


def test_threads_flag_sets_torch_threads(files, monkeypatch):
    import torch

    calls = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    base_dir, task, tmp = files
    assert main(["study", str(base_dir), "--data", str(task), "--threads", "0"]) == 2
    cli_study._set_threads(1)
    assert calls == [1]


def test_report_only_rewrites_an_old_study_s_report(tmp_path, capsys):
    fixture = Path(__file__).parent / "fixtures/study/results-v1.json"
    (tmp_path / "results.json").write_text(fixture.read_text())
    assert main(["study", "--report-only", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "verdict: primary comparison unfreeze-all vs scratch (epochs budget): " in printed
    assert "Holm-adjusted p" in (tmp_path / "report.md").read_text()


def test_demo_compares_the_three_budgets(tmp_path, monkeypatch, capsys):
    from graftnet import study

    tiny = {**TINY_DEMO, "study": {**TINY_DEMO["study"], "epochs": 2}}
    monkeypatch.setattr(study, "DEMO_RECIPE", tiny)
    monkeypatch.setattr(study, "MAX_EPOCHS_FACTOR", 3)  # caps of 6 epochs keep the test short
    out = tmp_path / "demo"
    assert main(["demo", "--budget", "all", "--out", str(out), "--base-cache", str(tmp_path / "cache"),
                 "--quiet"]) == 0
    printed = capsys.readouterr().out
    for budget in ("epochs", "compute", "convergence"):
        assert f"== {budget} budget ==" in printed
        saved = json.loads((out / budget / "results.json").read_text())
        assert saved["key"]["budget"] == budget
    text = (out / "budgets.md").read_text()
    assert "| variant | epochs: test acc." in text and "compute: test acc." in text and "convergence: test" in text
    assert "Published ranking (unfreeze-all > scratch)" in text
