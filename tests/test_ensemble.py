"""A study's seeds trained together as one batched ensemble give each seed's serial run.

The study below is the book's Fashion-MNIST A -> B set-up at a small size: a base trained on
task A (8 classes), task B Sandal vs Shirt with 100 drawn images per seed, every kind of
variant (scratch, frozen, unfreeze-top1/all with a head stage, drop-top1). It is run twice,
``ensemble=False`` (each run alone) and ``ensemble=True``, and every run's record is compared.
"""

from __future__ import annotations

import pytest
import torch

from graftnet import study
from graftnet.data import Dataset
from graftnet.ensemble import EnsembleUnavailable, fit_stages_together
from graftnet.layers import Dense, Dropout, Flatten
from graftnet.network import Network
from graftnet.optim import SGD, Adam
from graftnet.train import fit
from graftnet.transfer import Stage

VARIANTS = ["scratch", "frozen", "unfreeze-top1", "unfreeze-all", "drop-top1"]


@pytest.fixture(scope="module")
def task_a_and_b(fashion):
    a = fashion.without_classes(["Sandal", "Shirt"])
    a = Dataset(a.name, a.train.head(3000), a.valid.head(500), a.test.head(500), a.classes, a.task, a.source)
    b = fashion.only_classes(["Sandal", "Shirt"]).as_binary("Shirt")
    b = Dataset(b.name, b.train, b.valid.head(300), b.test.head(600), b.classes, b.task, b.source)
    torch.manual_seed(0)
    base = Network.mlp((1, 28, 28), [64, 32, 32], 8, activation="selu", output_activation="softmax", name="model-a")
    fit(base, a, epochs=2, optimizer=SGD(lr=1e-2), seed=0, verbose=False)
    return base, b


def _study(base, task, ensemble, optimizer, seeds=(0, 1, 2), **kw):
    return study.run(base, task, seeds=list(seeds), variants=VARIANTS, epochs=4, head_epochs=1, batch_size=32,
                     optimizer=optimizer, finetune_lr_mult=1.0, train_size=100, report=False, ensemble=ensemble,
                     progress=lambda line: None, **kw)


@pytest.mark.parametrize("optimizer", [{"type": "sgd", "lr": 1e-2}, {"type": "sgd", "lr": 1e-2, "momentum": 0.9}],
                         ids=["sgd", "momentum"])
def test_ensemble_runs_equal_serial_runs(task_a_and_b, optimizer):
    base, task = task_a_and_b
    serial = {(r["variant"], r["seed"]): r for r in _study(base, task, False, optimizer).runs}
    together = {(r["variant"], r["seed"]): r for r in _study(base, task, True, optimizer).runs}
    assert sorted(serial) == sorted(together) and len(serial) == len(VARIANTS) * 3
    for key, one in serial.items():
        other = together[key]
        assert other.get("ensemble") == 3 and "ensemble" not in one
        assert other["test"]["accuracy"] == pytest.approx(one["test"]["accuracy"], abs=1e-3), key  # <= 0.1 points
        assert other["epochs"] == one["epochs"] == 4
        assert other["flops"] == one["flops"]
        # the same look-ups (hit or miss depends on what the process-wide cache holds by then)
        assert other["cache"]["cut"] == one["cache"]["cut"], key
        assert other["cache"]["hits"] + other["cache"]["misses"] == one["cache"]["hits"] + one["cache"]["misses"]
        for r_one, r_other in zip(one["history"], other["history"], strict=True):
            assert r_other["stage"] == r_one["stage"] and r_other["epoch"] == r_one["epoch"]
            for metric in ("loss", "val_loss"):
                assert r_other[metric] == pytest.approx(r_one[metric], rel=1e-5, abs=1e-7), (key, metric)
            for metric in ("accuracy", "val_accuracy"):
                assert r_other[metric] == pytest.approx(r_one[metric], abs=1e-9), (key, metric)


def test_an_ensemble_study_resumes(task_a_and_b, tmp_path):
    base, task = task_a_and_b
    opt = {"type": "sgd", "lr": 1e-2}
    first = _study(base, task, True, opt, seeds=(0, 1), out=tmp_path)
    again = _study(base, task, True, opt, seeds=(0, 1, 2), out=tmp_path)
    assert again.resumed_runs == len(first.runs) == 2 * len(VARIANTS) and len(again.runs) == 3 * len(VARIANTS)
    kept = {(r["variant"], r["seed"]): r["test"] for r in first.runs}
    assert all(r["test"] == kept[(r["variant"], r["seed"])] for r in again.runs if r["seed"] < 2)


def test_what_cannot_train_together_runs_alone_and_says_why(task_a_and_b):
    base, task = task_a_and_b
    lines: list[str] = []
    result = study.run(base, task, seeds=[0, 1], variants=["scratch", "frozen"], epochs=2, head_epochs=1,
                       batch_size=32, optimizer={"type": "adam", "lr": 1e-3}, train_size=100, report=False,
                       progress=lines.append)
    assert len(result.runs) == 4 and not any("ensemble" in r for r in result.runs)
    assert "scratch: trained seed by seed, not as an ensemble: optimizer Adam (an ensemble trains with plain SGD " \
           "only)" in lines


def test_fit_stages_together_refuses_before_training(task_a_and_b):
    base, task = task_a_and_b
    torch.manual_seed(1)
    models = [Network([Flatten(), Dense(16, "relu"), Dropout(0.3), Dense(1, "sigmoid")], (1, 28, 28))
              for _ in range(2)]
    data = Dataset(task.name, task.train.head(64), None, None, task.classes, task.task, task.source)
    before = [m.state_dict()["dense1.weight"].clone() for m in models]
    with pytest.raises(EnsembleUnavailable, match=r"layer 'dropout1' \(dropout\) has no fused form"):
        fit_stages_together(models, [data, data], [0, 1], [Stage(1, name="all")], batch_size=32,
                            optimizer=SGD(lr=0.1))
    assert all(torch.equal(m.state_dict()["dense1.weight"], w) for m, w in zip(models, before))
    with pytest.raises(EnsembleUnavailable, match="optimizer Adam"):
        fit_stages_together(models, [data, data], [0, 1], [Stage(1, name="all")], batch_size=32,
                            optimizer=Adam(lr=0.1))
