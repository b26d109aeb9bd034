"""train.fit / evaluate / predict: optimizers, schedules, clipping, early stopping, NaN, seeds, tasks."""

from __future__ import annotations

import math

import pytest
import torch

from graftnet.data import Dataset, Split, from_arrays
from graftnet.errors import ConfigError
from graftnet.network import Network
from graftnet.optim import Cosine, Exponential, OneCycle, PiecewiseConstant, Plateau, Power
from graftnet.train import EarlyStopping, evaluate, fit, predict, seed_everything


def blobs(n: int = 240, classes: int = 3, features: int = 6, seed: int = 0, valid: int = 60) -> Dataset:
    """Gaussian blobs, one per class: easy to learn, quick to train on."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(classes, features, generator=g) * 3
    y = torch.arange(n) % classes
    x = centers[y] + torch.randn(n, features, generator=g)
    return from_arrays(x[valid:], y[valid:], x[:valid], y[:valid], x[:valid], y[:valid])


def mlp(data: Dataset, hidden=(16,), seed: int = 0, **kw) -> Network:
    seed_everything(seed)
    return Network.mlp(data.input_shape, list(hidden), data.n_outputs, **kw)


def weights(model: Network) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


QUIET = {"verbose": False, "device": "cpu", "cache": False}


# ---------------------------------------------------------------- optimizers
@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "nesterov", "adam", "adamw", "nadam", "rmsprop", "adagrad"])
def test_each_optimizer_learns(optimizer):
    data = blobs()
    model = mlp(data)
    before = evaluate(model, data.valid, task="multiclass")["loss"]
    lr = 0.05 if optimizer in ("sgd", "momentum", "nesterov", "adagrad") else 0.01
    history = fit(model, data, epochs=5, batch_size=32, optimizer=optimizer, lr=lr, seed=0, **QUIET)
    assert history["lr"] == [pytest.approx(lr)] * 5
    assert history["val_loss"][-1] < 0.5 * before
    assert history["val_accuracy"][-1] > 0.9


def test_unknown_optimizer_is_named():
    with pytest.raises(ValueError, match=r"unknown optimizer 'adamm'.*Did you mean 'adam'"):
        fit(mlp(blobs()), blobs(), epochs=1, optimizer="adamm", **QUIET)


# ---------------------------------------------------------------- schedules
def lrs(schedule, epochs: int = 6, lr: float = 0.1, batch_size: int = 32, data: Dataset | None = None) -> list[float]:
    data = data or blobs()
    history = fit(mlp(data), data, epochs=epochs, batch_size=batch_size, optimizer="sgd", lr=lr, schedule=schedule,
                  seed=0, **QUIET)
    return history["lr"]  # the rate used during each epoch


def test_piecewise_constant_values_at_the_given_epochs():
    assert lrs(PiecewiseConstant([2, 4], [0.1, 0.05, 0.01])) == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.01, 0.01])


def test_exponential_is_ten_times_smaller_every_s_epochs():
    assert lrs(Exponential(s=2)) == pytest.approx([0.1 * 0.1 ** (e / 2) for e in range(6)])


def test_power_schedule():
    assert lrs(Power(s=2, c=1)) == pytest.approx([0.1 / (1 + e / 2) for e in range(6)])


def test_cosine_schedule():
    expected = [0.001 + (0.1 - 0.001) * (1 + math.cos(math.pi * e / 6)) / 2 for e in range(6)]
    assert lrs(Cosine(min_lr=0.001)) == pytest.approx(expected)


def test_one_cycle_peaks_at_max_lr():
    # one batch per epoch: each recorded rate is the rate of that epoch's only step
    rates = lrs(OneCycle(max_lr=0.5, pct_start=0.3), epochs=10, batch_size=1000)
    peak = rates.index(max(rates))
    assert max(rates) == pytest.approx(0.5)
    assert peak == 2  # the warm-up ends at step 0.3 * 10 - 1
    assert rates[0] == pytest.approx(0.5 / 25) and rates[-1] == pytest.approx(0.5 / 25 / 1e4)  # torch's defaults
    assert all(a < b for a, b in zip(rates[:peak], rates[1:peak + 1]))
    assert all(a > b for a, b in zip(rates[peak:], rates[peak + 1:]))


def test_plateau_halves_the_rate_when_val_loss_stalls():
    # a rate so small that the validation loss cannot improve by the 1e-4 relative threshold
    assert lrs(Plateau(factor=0.5, patience=0), epochs=4, lr=1e-7) == pytest.approx([1e-7, 1e-7, 5e-8, 2.5e-8])


# ---------------------------------------------------------------- clipping
def last_grads(data: Dataset, **kw) -> list[torch.Tensor]:
    """p.grad after the last step. Plain SGD's fused step folds the update into the gradient
    GEMM and never writes p.grad, so the unclipped run uses autograd (fused=False); with
    clipping the fused step writes p.grad, clips it and calls the optimizer."""
    if not kw:
        kw = {"fused": False}
    grads = []
    model = mlp(data)
    fit(model, data, epochs=1, batch_size=len(data.train), lr=1e-6, seed=0,
        callbacks=[lambda row, m: grads.extend(p.grad.clone() for p in m.parameters())], **QUIET, **kw)
    return grads


def test_clip_value_and_clip_norm_bound_the_gradients():
    data = blobs()
    data = from_arrays(data.train.x * 100, data.train.y)  # large inputs, large gradients
    free = last_grads(data)
    assert max(g.abs().max() for g in free) > 1.0
    by_value = last_grads(data, clip_value=0.01)
    assert max(g.abs().max() for g in by_value) <= 0.01 + 1e-9
    by_norm = last_grads(data, clip_norm=1.0)
    assert torch.linalg.vector_norm(torch.cat([g.flatten() for g in by_norm])) == pytest.approx(1.0, rel=1e-4)
    assert torch.linalg.vector_norm(torch.cat([g.flatten() for g in free])) > 10.0


# ---------------------------------------------------------------- early stopping and NaN
def test_early_stopping_restores_the_best_weights():
    data = blobs()
    wrong = Split(data.valid.x, (data.valid.y + 1) % 3)  # validation labels that training makes worse
    data = Dataset("swapped", data.train, wrong, data.test, data.classes, "multiclass")
    model, snapshots = mlp(data), []
    history = fit(model, data, epochs=30, batch_size=32, lr=0.05, seed=0, early_stopping=EarlyStopping(patience=3),
                  callbacks=[lambda row, m: snapshots.append(weights(m))], **QUIET)
    best = min(range(len(history)), key=lambda i: history["val_loss"][i])
    assert len(history) == best + 1 + 3 < 30
    assert "early stopping: val_loss did not improve for 3 epochs" in history.stop_reason
    for key, value in model.state_dict().items():
        assert torch.equal(value, snapshots[best][key])
    assert not torch.equal(model.state_dict()["hidden1.weight"], snapshots[-1]["hidden1.weight"])


def test_nan_loss_stops_and_restores_the_last_good_weights():
    data = blobs()
    model, snapshots = mlp(data), []

    def poison_after_epoch_2(row, m):
        snapshots.append(weights(m))
        if row["epoch"] == 2:
            with torch.no_grad():
                m.layer("hidden1").weight[0, 0] = float("nan")

    history = fit(model, data, epochs=5, batch_size=32, lr=0.05, seed=0, callbacks=[poison_after_epoch_2], **QUIET)
    assert len(history) == 2
    assert "loss became non-finite in epoch 3" in history.stop_reason
    assert all(torch.isfinite(v).all() for v in model.state_dict().values())
    for key, value in model.state_dict().items():
        assert torch.equal(value, snapshots[1][key])


# ---------------------------------------------------------------- reproducibility and resuming
def test_seeded_runs_are_bit_identical():
    data = blobs()
    runs = []
    for _ in range(2):
        model = mlp(data, hidden=(16, 8), dropout=0.2, seed=5)
        history = fit(model, data, epochs=3, batch_size=16, optimizer="adam", seed=11, **QUIET)
        runs.append((weights(model), [{k: v for k, v in r.items() if k != "seconds"} for r in history.epochs]))
    assert runs[0][1] == runs[1][1]
    for key in runs[0][0]:
        assert torch.equal(runs[0][0][key], runs[1][0][key])
    other = mlp(data, hidden=(16, 8), dropout=0.2, seed=5)
    fit(other, data, epochs=3, batch_size=16, optimizer="adam", seed=12, **QUIET)
    assert not torch.equal(weights(other)["hidden1.weight"], runs[0][0]["hidden1.weight"])


def test_resume_continues_exactly(tmp_path):
    data = blobs()
    settings = dict(epochs=4, batch_size=16, optimizer="nesterov", lr=0.05, schedule=Cosine(), seed=3, **QUIET)
    straight = mlp(data, dropout=0.3, seed=1)
    fit(straight, data, **settings)

    def interrupt(row, m):
        if row["epoch"] == 3:  # before epoch 3's checkpoint: the checkpoint holds 2 epochs
            raise KeyboardInterrupt

    cut = mlp(data, dropout=0.3, seed=1)
    with pytest.raises(KeyboardInterrupt):
        fit(cut, data, checkpoint=tmp_path / "ckpt", callbacks=[interrupt], **settings)
    resumed = mlp(data, dropout=0.3, seed=99)  # other initial weights: the checkpoint's must win
    history = fit(resumed, data, checkpoint=tmp_path / "ckpt", resume=True, **settings)
    assert history["epoch"] == [1, 2, 3, 4]
    for key, value in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[key], value, rtol=0, atol=1e-6)


# ---------------------------------------------------------------- tasks
def test_binary_task_trains():
    data = blobs(classes=2)
    binary = Dataset("b", Split(data.train.x, data.train.y.float()), Split(data.valid.x, data.valid.y.float()),
                     None, ["a", "b"], "binary")
    model = mlp(binary)
    assert model.output_shape == (1,)
    history = fit(model, binary, epochs=5, batch_size=32, lr=0.1, seed=0, **QUIET)
    assert history["val_accuracy"][-1] > 0.95
    probabilities = predict(model, binary.valid.x, proba=True)
    assert probabilities.shape == (60, 1) and ((probabilities >= 0) & (probabilities <= 1)).all()


def test_regression_task_trains():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 4, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.5
    data = from_arrays(x[:240], y[:240], x[240:], y[240:])
    assert data.task == "regression"
    model = mlp(data, hidden=(32,))
    history = fit(model, data, epochs=30, batch_size=16, optimizer="adam", lr=0.01, metrics=("mae",), seed=0, **QUIET)
    assert history["val_loss"][-1] < 0.02 * history["val_loss"][0]
    assert "val_mae" in history.epochs[0] and "accuracy" not in history.epochs[0]


def test_top_k_metric():
    data = blobs(classes=5)
    model = mlp(data)
    fit(model, data, epochs=1, batch_size=32, lr=0.01, seed=0, **QUIET)
    scores = evaluate(model, data.valid, task="multiclass", metrics=("accuracy", "top3"))
    assert scores["accuracy"] <= scores["top3"] <= 1.0
    assert scores["top3"] > scores["accuracy"] or scores["accuracy"] == 1.0


# ---------------------------------------------------------------- regularization
def test_l2_penalty_shrinks_the_weights():
    data = blobs()
    norms = {}
    for l2 in (0.0, 0.1):
        model = mlp(data, l2=l2)
        fit(model, data, epochs=10, batch_size=32, lr=0.05, seed=0, **QUIET)
        norms[l2] = model.layer("hidden1").weight.norm().item()
    assert norms[0.1] < 0.7 * norms[0.0]


def test_max_norm_bounds_each_unit_after_training():
    data = blobs()
    data = from_arrays(data.train.x * 10, data.train.y)
    free = mlp(data)
    fit(free, data, epochs=5, batch_size=16, lr=0.05, seed=0, **QUIET)
    assert free.layer("hidden1").weight.norm(dim=1).max() > 1.0
    bounded = mlp(data, max_norm=1.0)
    fit(bounded, data, epochs=5, batch_size=16, lr=0.05, seed=0, **QUIET)
    assert bounded.layer("hidden1").weight.norm(dim=1).max() <= 1.0 + 1e-5


def test_progress_bar_only_on_a_terminal(monkeypatch, capsys):
    import sys

    from graftnet import train as train_mod
    from graftnet.data import from_arrays

    assert train_mod._StepBar.maybe(10, None) is None  # captured stderr is not a terminal
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert isinstance(train_mod._StepBar.maybe(10, None), train_mod._StepBar)
    assert train_mod._StepBar.maybe(10, False) is None  # verbose=False: never
    torch.manual_seed(0)
    data = from_arrays(torch.randn(64, 4).numpy(), (torch.arange(64) % 2).numpy())
    model = Network.mlp(4, [8], 2)
    history = fit(model, data, epochs=2, batch_size=16)
    assert len(history) == 2
    assert "epoch 2/2" in capsys.readouterr().err  # the epoch line stays after the bar


# ---------------------------------------------------------------- resuming: what load finds, and nothing
def test_resume_finds_the_checkpoint_a_killed_save_left_at_prev(tmp_path):
    """A kill between the save's two renames leaves the checkpoint at NAME.prev: resume must
    continue from it (as load_model does), not restart at epoch 1 and then delete it."""
    data = blobs()
    settings = dict(epochs=3, batch_size=16, lr=0.05, seed=3, **QUIET)
    straight = mlp(data, seed=1)
    fit(straight, data, **settings)

    def interrupt(row, m):
        if row["epoch"] == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(mlp(data, seed=1), data, checkpoint=tmp_path / "ck", callbacks=[interrupt], **settings)
    (tmp_path / "ck").rename(tmp_path / "ck.prev")  # the instant between the two renames
    resumed = mlp(data, seed=8)
    history = fit(resumed, data, checkpoint=tmp_path / "ck", resume=True, **settings)
    assert history["epoch"] == [1, 2, 3]
    for key, value in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[key], value, rtol=0, atol=1e-6)
    assert (tmp_path / "ck" / "state.json").is_file() and not (tmp_path / "ck.prev").exists()


def test_resuming_from_nothing_is_an_error(tmp_path):
    from graftnet.errors import CheckpointError

    data = blobs()
    with pytest.raises(CheckpointError, match=r"no training checkpoint at .*typo: the folder does not exist; "
                                              r".*resume=False"):
        fit(mlp(data), data, epochs=1, checkpoint=tmp_path / "typo", resume=True, **QUIET)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"empty: it holds no state.json \(found: nothing\)"):
        fit(mlp(data), data, epochs=1, checkpoint=tmp_path / "empty", resume=True, **QUIET)
    with pytest.raises(ConfigError, match="resume=True needs checkpoint=DIR"):
        fit(mlp(data), data, epochs=1, resume=True, **QUIET)


def test_resume_with_no_epochs_left_says_nothing_was_trained(tmp_path):
    data = blobs()
    fit(mlp(data), data, epochs=2, checkpoint=tmp_path / "ck", **QUIET)
    with pytest.warns(UserWarning, match=r"already at epoch 2 and epochs=1: nothing was trained; pass epochs > 2"):
        history = fit(mlp(data), data, epochs=1, checkpoint=tmp_path / "ck", resume=True, **QUIET)
    assert len(history) == 2


# ---------------------------------------------------------------- one seed, a whole run
@pytest.mark.parametrize("cache", [False, True])
def test_fit_seed_fixes_a_grafted_head_whatever_the_rng_did_before(cache):
    """One seed makes a grafted run reproducible: the new head is drawn from fit's seed, so runs
    with and without the frozen-prefix cache end with the same weights without seeding by hand."""
    from graftnet.layers import Dense
    from graftnet.transfer import graft

    data = blobs()
    base = mlp(data, hidden=(16, 16), seed=0)
    fit(base, data, epochs=1, seed=0, **QUIET)
    finals = []
    for rng_state, use_cache in ((1, False), (2, cache)):
        torch.manual_seed(rng_state)  # whatever ran before the graft
        model = graft(base, reuse=":-1", head=Dense(3), freeze=True)
        fit(model, data, epochs=2, batch_size=16, lr=0.05, seed=5, **{**QUIET, "cache": use_cache})
        finals.append(weights(model))
    for key in finals[0]:
        torch.testing.assert_close(finals[1][key], finals[0][key], rtol=0, atol=1e-5)
    assert "untrained" not in model.lineage  # trained now: a later fit(seed=) must not draw it again


def test_history_last_is_a_method_naming_what_was_recorded():
    from graftnet.train import History

    data = blobs()
    history = fit(mlp(data), data, epochs=2, **QUIET)
    assert history.last() == history.epochs[-1] and history.last("epoch") == 2
    assert history.last("val_accuracy") == history["val_accuracy"][-1]
    with pytest.raises(KeyError, match=r"no metric 'val_acc' in the last epoch; recorded: accuracy, epoch"):
        history.last("val_acc")
    assert History().last() == {}


def test_fit_records_the_task_and_classes_a_saved_model_carries(tmp_path):
    import json

    from graftnet.io.checkpoint import save_model

    data = blobs()
    model = mlp(data)
    fit(model, data, epochs=1, **QUIET)
    save_model(model, tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "metadata.json").read_text())
    assert (meta["task"], meta["classes"], meta["output_activation"]) == ("multiclass", ["0", "1", "2"], "linear")
