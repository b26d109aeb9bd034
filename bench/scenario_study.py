"""(d) The Fashion-MNIST A -> B study end to end (``graftnet.study``), and its dominant cost.

Part 1 runs ``study.run_recipe(examples/recipes/study_fashion_ab.toml)`` with a fresh
base folder (so model A is trained, 20 epochs on task A), ``--study-seeds`` seeds (2 by
default, 1 with --quick) and the recipe's variants at budget 200, and reports the wall
time of each phase. Part 2 times one epoch of model A (5 x Dense(100, selu), batch 32,
SGD 1e-3, task A: 8 classes, ~44,000 images), which is most of part 1's time, in
graftnet, a plain PyTorch loop and Keras.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import torch.nn as nn

from common import Row, Scenario, measure, ratio
from contenders import GraftnetFit, TensorLoop
from keras_side import KerasEpoch

RECIPE = Path(__file__).resolve().parent.parent / "examples" / "recipes" / "study_fashion_ab.toml"


def _selu_mlp() -> nn.Module:
    layers: list[nn.Module] = [nn.Flatten()]
    width = 784
    for _ in range(5):
        layers += [nn.Linear(width, 100), nn.SELU()]
        width = 100
    return nn.Sequential(*layers, nn.Linear(100, 8))


def _end_to_end(ctx: Any) -> Scenario:
    from graftnet import study

    seeds = ctx.args.study_seeds or (1 if ctx.quick else 2)
    s = Scenario("study_end_to_end", f"(d1) Fashion A->B study end to end: {RECIPE.name}, {seeds} seed(s), budget 200",
                 unit="s")
    overrides: dict[str, Any] = {"seeds": seeds, "budgets": [200]}
    if ctx.quick:
        overrides["epochs"] = 5
    with tempfile.TemporaryDirectory(prefix="graftnet-bench-study-") as tmp:
        t0 = time.perf_counter()
        table = study.load_recipe(RECIPE)["base"]
        if ctx.quick:
            table = {**table, "epochs": 2}
        base = study.base_from_recipe(table, cache_dir=Path(tmp) / "bases", device=ctx.device)
        base_seconds = time.perf_counter() - t0
        t1 = time.perf_counter()
        result = study.run_recipe(RECIPE, base=base, overrides=overrides, out=Path(tmp) / "out", resume=False,
                                  device=ctx.device)
        study_seconds = time.perf_counter() - t1
    s.rows = [Row("train model A (base)", [base_seconds], note=f"{table['epochs']} epochs"),
              Row("study runs + report", [study_seconds], note=f"{len(result.runs)} runs"),
              Row("total", [base_seconds + study_seconds])]
    s.figures["headline"] = result.headline()
    s.figures["runs"] = len(result.runs)
    return s


def _model_a_epoch(ctx: Any) -> Scenario:
    from graftnet.data import load
    from graftnet.network import Network

    task_a = load("fashion:A")
    from graftnet.data import Dataset

    data = Dataset(task_a.name, task_a.train, None, None, task_a.classes, task_a.task, task_a.source)
    x, y = data.train.x, data.train.y
    s = Scenario("study_model_a", f"(d2) model A epoch: 784-5x100(selu)-8 softmax, batch 32, {len(x):,} images, "
                 f"{ctx.device.type}", reference="torch tensor loop")

    def model_a():
        return Network.mlp((1, 28, 28), [100] * 5, 8, activation="selu", init="lecun_normal",
                           output_activation="softmax")

    contenders = [
        TensorLoop("torch tensor loop", _selu_mlp, x, y, batch=32, device=ctx.device, lr=1e-3,
                   note="logits + cross_entropy"),
        GraftnetFit("graftnet fit", model_a, data, batch=32, device=ctx.device, optimizer="sgd", lr=1e-3, cache=False,
                    note="softmax output, as the recipe"),
    ]
    if ctx.device.type == "cpu":
        ctx.keras_load("fashionA", x.squeeze(1).numpy(), y.numpy())
        contenders.append(KerasEpoch("keras fit", ctx.keras, {"op": "mlp", "hidden": [100] * 5, "outputs": 8,
                                                              "lr": 1e-3, "activation": "selu",
                                                              "init": "lecun_normal"},
                                     "fashionA", 32, why=ctx.keras_why))
    ctx.log(s.title)
    s.rows = measure(contenders, ctx.passes, log=ctx.log)
    keras, gn = s.median("keras fit"), s.median("graftnet fit")
    if keras is not None:
        s.figures["keras / graftnet (speed-up)"] = round(ratio(keras, gn) or 0, 3)
    s.figures["graftnet / torch tensor loop"] = round(ratio(gn, s.median("torch tensor loop")) or 0, 3)
    return s


def scenarios(ctx: Any) -> list[Scenario]:
    try:
        from graftnet import study  # noqa: F401
    except ImportError as err:
        return [Scenario("study", "(d) Fashion A->B study", notes=[f"graftnet.study not importable: {err}"])]
    return [_model_a_epoch(ctx), _end_to_end(ctx)]
