"""graftnet.study: statistics, verdicts, variants, per-seed draws, resume, bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from graftnet import study
from graftnet.data import Dataset, Split, from_arrays
from graftnet.errors import ConfigError, DataError, ShapeError
from graftnet.network import Network
from graftnet.study import Interval, StudyWarning, paired_difference, summarize, verdict

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ tiny data and base
def _blobs(n: int, seed: int, n_classes: int = 3, features: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Linearly separable-ish classes around random centres (same centres for every seed)."""
    centres = torch.randn(n_classes, features, generator=torch.Generator().manual_seed(0)) * 2
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % n_classes
    x = centres[y] + torch.randn(n, features, generator=g)
    return x, y


def tiny_task(n_train: int = 120, n_classes: int = 3) -> Dataset:
    xt, yt = _blobs(n_train, 1, n_classes)
    xv, yv = _blobs(60, 2, n_classes)
    xs, ys = _blobs(90, 3, n_classes)
    return from_arrays(xt, yt, xv, yv, xs, ys, classes=[f"c{i}" for i in range(n_classes)], name="tiny")


def tiny_base(seed: int = 0) -> Network:
    torch.manual_seed(seed)
    return Network.mlp(8, [16, 16, 16], 4, activation="relu", name="tiny-base")


FAST = dict(epochs=3, head_epochs=1, batch_size=32, optimizer={"type": "sgd", "lr": 0.05})


# ------------------------------------------------------------------ statistics
def test_summarize_matches_scipy_t_interval():
    values = [97.1, 98.4, 96.9, 97.7, 98.8, 97.0]
    iv = summarize(values)
    sem = stats.sem(values)
    low, high = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=sem)
    assert iv.n == 6
    assert iv.mean == pytest.approx(np.mean(values))
    assert iv.std == pytest.approx(np.std(values, ddof=1))
    assert (iv.low, iv.high) == (pytest.approx(low), pytest.approx(high))


def test_summarize_hand_computed_two_values():
    # mean 2, sd sqrt(2), t(0.975, 1) = 12.7062, half width = 12.7062 * sqrt(2) / sqrt(2)
    iv = summarize([1.0, 3.0])
    assert iv.std == pytest.approx(math.sqrt(2))
    assert iv.half_width == pytest.approx(12.706204736, rel=1e-6)


def test_summarize_one_value_has_no_spread():
    iv = summarize([97.5])
    assert (iv.n, iv.mean, iv.std, iv.low, iv.high) == (1, 97.5, None, None, None)
    assert "no spread" in iv.describe()


def test_paired_difference_matches_scipy_ttest_rel():
    a = {0: 98.0, 1: 97.5, 2: 99.0, 3: 98.2, 4: 97.9}
    b = {0: 97.0, 1: 97.6, 2: 97.8, 3: 97.1, 4: 96.5, 9: 50.0}  # seed 9 has no partner: ignored
    d = paired_difference(a, b)
    seeds = sorted(a)
    ci = stats.ttest_rel([a[s] for s in seeds], [b[s] for s in seeds]).confidence_interval()
    assert d.n == 5
    assert d.mean == pytest.approx(np.mean([a[s] - b[s] for s in seeds]))
    assert (d.low, d.high) == (pytest.approx(ci.low), pytest.approx(ci.high))


# ------------------------------------------------------------------ verdicts
def test_verdict_better():
    text = verdict("reusing hidden1..hidden3 frozen", Interval(10, 1.93, 1.0, 1.21, 2.64))
    assert text == "reusing hidden1..hidden3 frozen beats scratch by 1.9 points, 95% CI [1.2, 2.6], 10 seeds"


def test_verdict_worse_gives_the_size_of_the_loss():
    text = verdict("reusing hidden1 frozen", Interval(8, -3.0, 1.0, -4.1, -1.9))
    assert text == "reusing hidden1 frozen is worse than scratch by 3.0 points, 95% CI [1.9, 4.1], 8 seeds"


def test_verdict_no_evidence_when_the_interval_holds_zero():
    text = verdict("reusing hidden1..hidden5 frozen", Interval(5, 0.4, 1.0, -0.8, 1.6))
    assert text.startswith("no evidence of a difference between reusing hidden1..hidden5 frozen and scratch")
    assert "95% CI [-0.8, 1.6], 5 seeds" in text


def test_verdict_single_seed_says_no_interval():
    text = verdict("frozen", Interval(1, 2.0, None, None, None))
    assert "only 1 seed, so no interval can be given" in text


def test_verdict_small_differences_keep_two_decimals():
    text = verdict("frozen", Interval(10, 0.05, 0.01, 0.02, 0.08))
    assert "by 0.05 points, 95% CI [0.02, 0.08]" in text


# ------------------------------------------------------------------ variants
@pytest.mark.parametrize("name, drop, unfreeze, scratch", [
    ("scratch", 0, 0, True), ("frozen", 0, 0, False), ("unfreeze-top2", 0, 2, False),
    ("unfreeze-all", 0, "all", False), ("drop-top1", 1, 0, False), ("drop-top1-unfreeze-top2", 1, 2, False),
])
def test_parse_variant(name, drop, unfreeze, scratch):
    v = study.parse_variant(name)
    assert (v.drop, v.unfreeze, v.scratch) == (drop, unfreeze, scratch)


def test_unknown_variant_names_the_forms_and_a_close_one():
    with pytest.raises(ConfigError, match=r"unknown variant 'unfreze-top1'.*Did you mean 'unfreeze-top1'"):
        study.parse_variant("unfreze-top1")


def test_hidden_blocks_keep_batchnorm_with_its_dense():
    net = Network.mlp((1, 4, 4), [8, 8], 3, batch_norm=True)
    assert study.hidden_blocks(net) == [["flatten", "hidden1", "bn1", "act1"], ["hidden2", "bn2", "act2"]]


def test_plan_describes_what_is_reused_and_trained():
    base = tiny_base()
    reused, unfrozen, words = study._plan(base, study.parse_variant("drop-top1-unfreeze-top1"))
    assert reused == ["hidden1", "hidden2"] and unfrozen == ["hidden2"]
    assert words == "reusing hidden1, hidden2, top 1 (hidden2) fine-tuned after the head"


def test_dropping_every_hidden_layer_is_an_error():
    with pytest.raises(ConfigError, match="drops the top 3 hidden layer.*has 3"):
        study._plan(tiny_base(), study.parse_variant("drop-top3"))


# ------------------------------------------------------------------ draws per seed
def test_draw_stratified_is_reproducible_and_keeps_shares():
    task = tiny_task()
    a, b, c = study.draw(task, 30, seed=1), study.draw(task, 30, seed=1), study.draw(task, 30, seed=2)
    assert torch.equal(a.train.x, b.train.x) and not torch.equal(a.train.x, c.train.x)
    assert torch.bincount(a.train.y).tolist() == [10, 10, 10]
    assert a.valid is task.valid and a.test is task.test


def test_draw_balanced_takes_the_same_number_per_class():
    x = torch.randn(100, 8)
    y = torch.tensor([0] * 70 + [1] * 30)
    both = torch.tensor([0, 1] * 5)
    task = from_arrays(x, y, x[:10], both, x[:10], both)
    drawn = study.draw(task, 40, seed=0, sampling="balanced", valid_size=4)
    assert torch.bincount(drawn.train.y).tolist() == [20, 20]
    assert torch.bincount(drawn.valid.y).tolist() == [2, 2]
    with pytest.raises(DataError, match="needs 35 of class '1' but the training split has 30"):
        study.draw(task, 70, seed=0, sampling="balanced")


# ------------------------------------------------------------------ bad input
def test_base_of_another_input_shape_is_refused():
    base = Network.mlp(5, [4, 4], 2)
    with pytest.raises(ShapeError, match=r"takes inputs of shape \(5,\) but task 'tiny' has examples of shape \(8,\)"):
        study.run(base, tiny_task(), seeds=2, **FAST)


def test_single_class_task_is_refused():
    task = tiny_task()
    ones = Split(task.train.x, torch.zeros(len(task.train), dtype=torch.long))
    single = Dataset("one-class", ones, task.valid, task.test, task.classes, "multiclass")
    with pytest.raises(DataError, match=r"single class in its training split \(\['c0'\]\)"):
        study.run(tiny_base(), single, seeds=2, **FAST)


def test_budget_larger_than_the_data_says_how_many_exist():
    with pytest.raises(DataError, match="budget of 500 training examples is larger than the 120 that task 'tiny' has"):
        study.run(tiny_base(), tiny_task(), seeds=2, budgets=[50, 500], **FAST)


def test_one_seed_warns_and_the_verdict_says_so():
    with pytest.warns(StudyWarning, match="only 1 seed: no confidence interval"):
        result = study.run(tiny_base(), tiny_task(), seeds=1, variants=["scratch", "frozen"], **FAST)
    assert "no interval can be given" in result.summary("frozen").verdict
    assert result.summary("frozen").test.low is None


def test_unknown_recipe_key_is_named():
    with pytest.raises(ConfigError, match=r"unknown key 'epocs' in \[study\].*Did you mean 'epochs'"):
        study.load_recipe({"study": {"epocs": 3}})
    with pytest.raises(ConfigError, match=r"unknown key 'dorp' in \[variants.mine\]"):
        study.load_recipe({"variants": {"mine": {"dorp": 1}}})


# ------------------------------------------------------------------ running
def test_run_records_every_run_and_compares_with_scratch():
    result = study.run(tiny_base(), tiny_task(), seeds=2, variants=["scratch", "frozen", "unfreeze-all"],
                       train_size=60, **FAST)
    assert len(result.runs) == 6
    run = result.runs[0]
    for key in ("variant", "seed", "budget", "test", "best_val", "last_val", "epochs", "seconds", "cache"):
        assert key in run
    assert {r["budget"] for r in result.runs} == {60}
    scratch = {r["seed"]: r["test"]["accuracy"] * 100 for r in result.runs if r["variant"] == "scratch"}
    frozen = {r["seed"]: r["test"]["accuracy"] * 100 for r in result.runs if r["variant"] == "frozen"}
    assert result.summary("frozen").difference.mean == pytest.approx(np.mean([frozen[s] - scratch[s] for s in (0, 1)]))
    stages = [row["stage"] for row in next(r for r in result.runs if r["variant"] == "unfreeze-all")["history"]]
    assert stages == ["head", "fine-tune", "fine-tune"]


def test_repeated_seeds_hit_the_process_wide_cache():
    # the whole training split is used, so every seed's frozen prefix sees the same data
    result = study.run(tiny_base(seed=7), tiny_task(), seeds=2, variants=["frozen"], **FAST)
    second = next(r for r in result.runs if r["seed"] == 1)
    assert second["cache"]["misses"] == 0 and second["cache"]["hits"] == 2  # train and valid features


def test_resume_skips_finished_runs(tmp_path, monkeypatch):
    calls: list[tuple[str, int]] = []
    real = study._one_run

    def counting(base, variant, data, seed, *args, **kwargs):
        calls.append((variant.name, seed))
        if len(calls) == 3 and interrupt:
            raise KeyboardInterrupt  # killed in the middle of the study
        return real(base, variant, data, seed, *args, **kwargs)

    monkeypatch.setattr(study, "_one_run", counting)
    base, task = tiny_base(), tiny_task()
    # one run at a time (an ensemble trains a variant's seeds together and saves them together)
    settings = dict(variants=["scratch", "frozen"], out=tmp_path, report=False, ensemble=False, **FAST)
    interrupt = True
    with pytest.raises(KeyboardInterrupt):
        study.run(base, task, seeds=2, **settings)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert len(saved["runs"]) == 2  # written after each finished run
    interrupt, calls[:] = False, []
    result = study.run(base, task, seeds=2, **settings)
    assert calls == [("scratch", 1), ("frozen", 1)]
    assert result.resumed_runs == 2 and len(result.runs) == 4
    calls.clear()
    study.run(base, task, seeds=3, **settings)  # one more seed: only its runs
    assert calls == [("scratch", 2), ("frozen", 2)]


def test_resume_refuses_results_of_other_settings(tmp_path):
    base, task = tiny_base(), tiny_task()
    study.run(base, task, seeds=2, variants=["frozen"], out=tmp_path, report=False, **FAST)
    changed = {**FAST, "epochs": 4}
    with pytest.raises(ConfigError, match=r"holds runs of a study with other settings \(epochs: 3 -> 4\)"):
        study.run(base, task, seeds=2, variants=["frozen"], out=tmp_path, report=False, **changed)
    result = study.run(base, task, seeds=2, variants=["frozen"], out=tmp_path, report=False, resume=False, **changed)
    assert result.resumed_runs == 0 and {r["epochs"] for r in result.runs} == {4}


def test_budget_curve_has_scratch_and_the_primary_variant():
    result = study.run(tiny_base(), tiny_task(), seeds=2, variants=["scratch", "frozen", "drop-top1"],
                       primary="drop-top1", train_size=60, budgets=[30, 90], **FAST)
    assert result.primary == "drop-top1" and set(result.budget_curve) == {"scratch", "drop-top1"}
    assert [p["budget"] for p in result.budget_curve["scratch"]] == [30, 60, 90]
    assert all(p["n"] == 2 for p in result.budget_curve["scratch"])


def test_recipe_variant_tables_define_new_variants():
    recipe = {"study": {"seeds": 2, "variants": ["scratch", "mine"], **FAST}, "variants": {"mine": {"drop": 1}}}
    result = study.run_recipe(recipe, base=tiny_base(), task=tiny_task())
    assert result.summary("mine").description == "reusing hidden1, hidden2 frozen"


def test_demo_recipe_is_the_published_recipe_with_five_seeds():
    published = study.load_recipe(REPO / "examples/recipes/study_fashion_ab.toml")
    demo = json.loads(json.dumps(study.DEMO_RECIPE))
    for table in ("study", "task", "base", "reference"):
        mine, theirs = dict(demo[table]), dict(published[table])
        for key in ("seeds", "title", "budgets"):
            mine.pop(key, None), theirs.pop(key, None)
        assert mine == theirs, table
    assert demo["study"]["seeds"] == 5 and published["study"]["seeds"] >= 10
    assert set(demo["study"]["budgets"]) <= set(published["study"]["budgets"])


def test_stage_learning_rates_follow_the_settings():
    base, task = tiny_base(), tiny_task()
    settings = study.Settings(epochs=10, head_epochs=3, optimizer={"type": "sgd", "lr": 1e-3}, head_lr=1e-2,
                              finetune_lr_mult=0.1)
    variant = study.parse_variant("unfreeze-top1")
    model, unfrozen, _ = study._build(base, variant, task, seed=0)
    stages = study._stages(model, variant, unfrozen, settings, lr=1e-3)
    assert [(s.epochs, s.lr, s.layers(model)) for s in stages] == [
        (3, 1e-2, ["outputs"]), (7, pytest.approx(1e-4), ["hidden3", "outputs"])]
    frozen = study.parse_variant("frozen")
    model, unfrozen, _ = study._build(base, frozen, task, seed=0)
    assert [(s.epochs, s.lr) for s in study._stages(model, frozen, unfrozen, settings, lr=1e-3)] == [(10, 1e-2)]


def test_scratch_with_drop_has_the_lower_layers_only_and_fresh_weights():
    base = tiny_base()
    variant = study.parse_variant("scratch", {"scratch": True, "drop": 1})
    model, unfrozen, words = study._build(base, variant, tiny_task(), seed=3)  # the base was built with seed 0
    assert model.layer_names == ["hidden1", "hidden2", "outputs"] and model.frozen == [] and unfrozen == []
    assert not torch.equal(model.layer("hidden1").weight, base.layer("hidden1").weight)
    assert words == "from scratch (hidden1, hidden2 and a head, random init)"


# ------------------------------------------------------------------ primary comparison and Holm
def test_primary_is_declared_from_the_variant_list_never_from_results():
    assert study.choose_primary(["scratch", "frozen", "unfreeze-all"]) == "unfreeze-all"
    assert study.choose_primary(["scratch", "drop-top1", "frozen"]) == "drop-top1"
    assert study.choose_primary(["scratch"]) is None
    with pytest.raises(ConfigError, match=r"primary = 'unfreeze-top9' is not among the variants"):
        study.choose_primary(["scratch", "frozen"], "unfreeze-top9")
    with pytest.raises(ConfigError, match="primary = 'scratch'"):
        study.choose_primary(["scratch", "frozen"], "scratch")


def _runs(accuracy: dict[str, list[float]]) -> list[dict]:
    return [{"variant": name, "seed": seed, "budget": 100, "description": name, "test": {"accuracy": value / 100},
             "epochs": 3, "seconds": 1.0, "cache": {"hits": 0, "build_seconds": 0.0}, "history": []}
            for name, values in accuracy.items() for seed, value in enumerate(values)]


def test_verdicts_are_holm_adjusted_and_say_how_many_seeds_would_do():
    scratch = [97.0, 97.5, 98.0, 96.5, 97.2]
    small = [0.1, 0.9, 0.3, 1.2, 0.5]  # alone: p < 0.05; not after adjusting for 3 comparisons
    accuracy = {"scratch": scratch, "frozen": [s - 8 + 0.1 * i for i, s in enumerate(scratch)],
                "unfreeze-all": [s + d for s, d in zip(scratch, small)],
                "drop-top1": [s + (0.3 if i % 2 else -0.3) for i, s in enumerate(scratch)]}
    variants = [study.parse_variant(name) for name in accuracy]
    summaries = {v.name: v for v in study._summarize_variants(_runs(accuracy), variants, list(range(5)), 100,
                                                               primary="unfreeze-all")}
    raw = {name: summaries[name].test_p["p"] for name in ("frozen", "unfreeze-all", "drop-top1")}
    assert raw["unfreeze-all"] < 0.05
    assert [summaries[n].p_adjusted for n in raw] == pytest.approx(study_holm(list(raw.values())))
    primary = summaries["unfreeze-all"]
    assert primary.primary and primary.p_adjusted >= 0.05 and primary.difference.low > 0
    needed = stats_seeds(np.std(small, ddof=1))
    assert primary.seeds_needed == needed
    assert primary.verdict.startswith("no evidence of a difference between unfreeze-all and scratch")
    assert f"Holm-adjusted p = {primary.p_adjusted:.3f} over 3 comparisons" in primary.verdict
    assert f"would need about {needed} seeds" in primary.verdict
    assert summaries["frozen"].verdict.startswith("frozen is worse than scratch by 7.8 points")
    assert summaries["frozen"].seeds_needed is None  # a clear verdict needs no more seeds


def study_holm(p):
    from graftnet.stats import holm

    return holm(p)


def stats_seeds(sd):
    from graftnet.stats import seeds_needed

    return seeds_needed(sd, 1.0)


# ------------------------------------------------------------------ budgets
BUDGET_STUDY = dict(seeds=2, variants=["scratch", "frozen", "unfreeze-all"], train_size=60, epochs=3, head_epochs=1,
                    batch_size=32, optimizer={"type": "sgd", "lr": 0.05}, max_epochs=12)


def test_epochs_budget_trains_every_variant_the_same_epochs():
    result = study.run(tiny_base(), tiny_task(), budget="epochs", **BUDGET_STUDY)
    assert {r["epochs"] for r in result.runs} == {3}
    assert result.training_budget == "epochs" and "max_epochs" not in result.settings
    by = {v.name: v.flops_per_run for v in result.variants}
    assert by["frozen"] < by["unfreeze-all"] < by["scratch"]  # cached epochs cost less


def test_compute_budget_gives_cached_and_frozen_variants_more_epochs():
    base, task = tiny_base(), tiny_task()
    # unfreeze-all: 2 cheap head epochs on cached features, then what scratch's 3 epochs of FLOPs leave
    result = study.run(base, task, budget="compute", **{**BUDGET_STUDY, "head_epochs": 2})
    epochs = {v.name: v.epochs.mean for v in result.variants}
    assert epochs["scratch"] == 3
    assert epochs["scratch"] < epochs["unfreeze-all"] < epochs["frozen"] == 12  # the cap
    allowed = 3 * study.scratch_flops(base, task)  # FLOPs per training example
    for run in result.runs:
        flops, last = run["flops"], run["flops"]["stages"][-1]
        assert flops["per_example"] <= allowed
        if run["epochs"] < 12:  # not capped: one more epoch would exceed the budget
            assert flops["per_example"] + last["step_per_example"] > allowed
    assert result.summary("frozen").epochs_uncapped > 12


def test_convergence_budget_stops_on_validation_loss():
    result = study.run(tiny_base(), tiny_task(), budget="convergence", early_stopping=1, **BUDGET_STUDY)
    assert result.settings["early_stopping"] == 1 and result.settings["max_epochs"] == 12
    assert all(r["epochs"] <= 12 for r in result.runs)
    stopped = [r for r in result.runs if (r["stop_reason"] or "").startswith("early stopping")]
    assert stopped and all(r["epochs"] < 12 for r in stopped)
    assert study.Settings(budget="convergence").early_stopping == 10  # the default patience


def test_unknown_budget_is_named():
    with pytest.raises(ConfigError, match=r"budget must be one of epochs, compute, convergence.*'compute'"):
        study.run(tiny_base(), tiny_task(), seeds=2, budget="comptue", **FAST)


# ------------------------------------------------------------------ old results files
V1 = REPO / "tests/fixtures/study/results-v1.json"
V1_SETTINGS = dict(seeds=3, variants=["scratch", "frozen", "unfreeze-all", "drop-top1"], train_size=60, **FAST)


def test_results_of_graftnet_0_1_resume_without_redoing_a_run(tmp_path):
    (tmp_path / "results.json").write_text(V1.read_text())
    old = json.loads(V1.read_text())["runs"]
    result = study.run(tiny_base(), tiny_task(), out=tmp_path, **V1_SETTINGS)
    assert result.resumed_runs == 12 and result.runs == old  # nothing trained again
    assert result.summary("unfreeze-all").p_adjusted is not None
    text = (tmp_path / "report.md").read_text()
    assert "the primary comparison was named after 12 runs had finished" in text


def test_load_results_rebuilds_an_old_study_with_todays_statistics(tmp_path):
    result = study.load_results(V1)
    assert result.primary == "unfreeze-all" and result.training_budget == "epochs"
    compared = [v for v in result.variants if v.name != "scratch"]
    assert all(v.p_adjusted is not None and v.test.method == "bootstrap-percentile" for v in compared)
    assert result.declared["runs_finished"] == 12 and result.declared["at"] is None
    assert "Holm-adjusted p" in result.headline()


def test_a_primary_changed_after_runs_is_reported_as_such(tmp_path):
    base, task = tiny_base(), tiny_task()
    settings = dict(seeds=2, variants=["scratch", "frozen", "unfreeze-all"], out=tmp_path, **FAST)
    study.run(base, task, report=False, **settings)
    saved = json.loads((tmp_path / "results.json").read_text())["declarations"]
    assert [(d["primary"], d["runs_finished"]) for d in saved] == [("unfreeze-all", 0)]
    study.run(base, task, primary="frozen", **settings)
    saved = json.loads((tmp_path / "results.json").read_text())["declarations"]
    assert [(d["primary"], d["runs_finished"]) for d in saved] == [("unfreeze-all", 0), ("frozen", 6)]
    text = (tmp_path / "report.md").read_text()
    assert "named after 6 runs had finished (it replaced 'unfreeze-all')" in text


def test_worker_processes_give_the_results_of_a_serial_study(tmp_path):
    """--jobs 2: every run recorded, each equal to the serial run of the same variant and seed."""
    import torch

    from graftnet import study
    from graftnet.data import digits
    from graftnet.network import Network
    from graftnet.train import fit

    task = digits()
    base = Network.mlp(task.input_shape, [32, 16], task.n_outputs, name="digits-base")
    fit(base, task, epochs=1, batch_size=128, verbose=False, seed=0)
    kwargs = dict(seeds=[0, 1], epochs=2, head_epochs=1, batch_size=128, report=False, train_size=300,
                  variants=["scratch", "frozen", "unfreeze-all"], progress=lambda s: None)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # what each of the two workers gets on 2 cores
    try:
        serial = study.run(base, task, out=tmp_path / "serial", **kwargs)
    finally:
        torch.set_num_threads(threads)
    parallel = study.run(base, task, out=tmp_path / "jobs", jobs=2, **kwargs)
    one = {(r["variant"], r["seed"]): r for r in serial.runs}
    two = {(r["variant"], r["seed"]): r for r in parallel.runs}
    assert one.keys() == two.keys() and len(two) == 6
    for key, record in one.items():
        assert two[key]["test"]["accuracy"] == record["test"]["accuracy"], key
        assert abs(two[key]["test"]["loss"] - record["test"]["loss"]) < 1e-5, key
    saved = json.loads((tmp_path / "jobs" / "results.json").read_text())
    assert len(saved["runs"]) == 6


# ------------------------------------------------------------------ variants with their own base
def test_a_variant_with_its_own_base_runs_as_a_study_of_that_base_would():
    """One study comparing two bases: each variant that names a base gives exactly the runs
    a study of that base alone gives (same seeds, same drawn data), and the report says which base."""
    other = tiny_base(seed=7)
    other.name = "other-base"
    tables = {"other-frozen": {"base": "b"}, "other-fine-tuned": {"base": "b", "unfreeze": "all"}}
    both = study.run(tiny_base(), tiny_task(), seeds=2, variants=["scratch", "frozen", "other-frozen",
                     "other-fine-tuned"], variant_tables=tables, bases={"b": other}, train_size=60,
                     report=False, progress=lambda line: None, **FAST)
    alone = study.run(other, tiny_task(), seeds=2, variants=["scratch", "frozen", "unfreeze-all"], train_size=60,
                      report=False, progress=lambda line: None, **FAST)
    for mine, theirs in (("other-frozen", "frozen"), ("other-fine-tuned", "unfreeze-all")):
        assert [r["test"] for r in both.runs if r["variant"] == mine] == \
            [r["test"] for r in alone.runs if r["variant"] == theirs]
    assert both.summary("other-frozen").description == "reusing base 'other-base': hidden1..hidden3 frozen"
    assert both.summary("frozen").test.mean != both.summary("other-frozen").test.mean
    from graftnet.stats import holm

    compared = ["frozen", "other-frozen", "other-fine-tuned"]  # Holm over the comparisons of both bases
    raw = [both.summary(name).test_p["p"] for name in compared]
    assert [both.summary(name).p_adjusted for name in compared] == pytest.approx(holm(raw))
    assert set(both.base["variant_bases"]) == {"b"}


def test_a_variant_base_folder_from_a_recipe_and_its_errors(tmp_path):
    from graftnet.io.checkpoint import save_model

    other = tiny_base(seed=7)
    save_model(other, tmp_path / "other")
    recipe = {"study": {"seeds": 2, "variants": ["scratch", "o"], **FAST},
              "variants": {"o": {"base": str(tmp_path / "other")}}}
    result = study.run_recipe(recipe, base=tiny_base(), task=tiny_task(), out=tmp_path / "s", report=False,
                              progress=lambda line: None)
    assert result.summary("o").description == "reusing base 'tiny-base': hidden1..hidden3 frozen"  # the saved name
    saved = json.loads((tmp_path / "s" / "results.json").read_text())
    assert list(saved["key"]["variant_bases"]) == [str(tmp_path / "other")]
    with pytest.raises(ConfigError, match=r"variant 'o' reuses base 'nowhere', which is neither a name in bases nor "
                                          r"a saved model folder"):
        study.run(tiny_base(), tiny_task(), seeds=2, variants=["scratch", "o"],
                  variant_tables={"o": {"base": "nowhere"}}, report=False, **FAST)
    with pytest.raises(ConfigError, match=r"bases \['unused'\] are given but no variant names them"):
        study.run(tiny_base(), tiny_task(), seeds=2, variants=["scratch", "frozen"], bases={"unused": other},
                  report=False, **FAST)
    wide = Network.mlp(5, [16, 16], 3, name="wide")
    with pytest.raises(ShapeError, match=r"variant base 'w' \('wide'\) takes inputs of shape \(5,\) but task 'tiny' "
                                         r"has examples of shape \(8,\)"):
        study.run(tiny_base(), tiny_task(), seeds=2, variants=["scratch", "o"], variant_tables={"o": {"base": "w"}},
                  bases={"w": wide}, report=False, **FAST)
    with pytest.raises(ConfigError, match=r"\[variants.o\] base must be a saved model folder"):
        study.parse_variant("o", {"base": 3})
