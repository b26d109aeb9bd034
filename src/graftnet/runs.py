"""Run directories: what one training run leaves behind, and the run itself.

A run directory records the resolved configuration next to its outputs::

    runs/fashion_mlp-20250101-120000/
        recipe.toml            the resolved recipe (every default filled in)
        metrics.json           final train/valid/test metrics, epochs, seconds, device
        history.csv            one row per epoch (loss, accuracy, val_*, lr, seconds)
        learning_curves.png    loss and accuracy per epoch, train vs valid
        model/                 the trained model (io.checkpoint.save_model)
        checkpoint/            the last training checkpoint (``--resume`` continues from it)
        tensorboard/           TensorBoard event files, when asked for

Every file is written atomically, so a run killed at any moment leaves complete files.

    >>> from graftnet.recipe import resolve
    >>> recipe = resolve({"data": {"source": "digits"}, "model": {"hidden": [32]},
    ...                   "train": {"epochs": 3}})
    >>> run = RunDir.create("runs", "digits")                 # doctest: +SKIP
    >>> result = train_run(recipe, run)                       # doctest: +SKIP
    >>> result.metrics["test"]["accuracy"]                    # doctest: +SKIP
    0.93
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import math
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


from graftnet.data import Dataset
from graftnet.errors import ConfigError
from graftnet.io.checkpoint import atomic_write_bytes, atomic_write_text, json_default, save_model
from graftnet.network import Network
from graftnet.train import History, evaluate

__all__ = ["RunDir", "RunResult", "TensorBoardLogger", "plot_learning_curves", "train_run"]


class RunDir:
    """The files of one run, under ``path``.

        >>> run = RunDir("runs/fashion_mlp-20250101-120000")
        >>> run.metrics_path.name
        'metrics.json'
    """

    RECIPE = "recipe.toml"
    METRICS = "metrics.json"
    HISTORY = "history.csv"
    CURVES = "learning_curves.png"
    MODEL = "model"
    CHECKPOINT = "checkpoint"
    TENSORBOARD = "tensorboard"

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    @classmethod
    def create(cls, root: str | os.PathLike, name: str) -> RunDir:
        """A new, empty ``root/<name>-<YYYYmmdd-HHMMSS>`` (``-2``, ``-3``... if taken)."""
        root = Path(root)
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ConfigError(f"cannot create the run folder {root}: {err.strerror or err}") from None
        for suffix in [""] + [f"-{i}" for i in range(2, 1000)]:
            path = root / f"{name}-{stamp}{suffix}"
            try:
                path.mkdir()
            except FileExistsError:
                continue
            return cls(path)
        raise ConfigError(f"cannot create a run folder for {name!r} in {root}: too many runs this second")

    @classmethod
    def latest(cls, root: str | os.PathLike, name: str) -> RunDir | None:
        """The newest ``root/<name>-<timestamp>`` holding a training checkpoint, or None."""
        root = Path(root)
        if not root.is_dir():
            return None
        runs = [p for p in root.glob(f"{name}-*") if (p / cls.CHECKPOINT).is_dir() and _is_stamped(p.name, name)]
        return cls(max(runs, key=lambda p: _stamp_key(p.name, name))) if runs else None

    # -- paths
    @property
    def recipe_path(self) -> Path:
        return self.path / self.RECIPE

    @property
    def metrics_path(self) -> Path:
        return self.path / self.METRICS

    @property
    def history_path(self) -> Path:
        return self.path / self.HISTORY

    @property
    def curves_path(self) -> Path:
        return self.path / self.CURVES

    @property
    def model_dir(self) -> Path:
        return self.path / self.MODEL

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / self.CHECKPOINT

    @property
    def tensorboard_dir(self) -> Path:
        return self.path / self.TENSORBOARD

    # -- writers
    def write_recipe(self, recipe: dict[str, Any]) -> Path:
        """Write ``recipe`` as TOML (tomli_w); TOML has no null, so None values are left out."""
        import tomli_w

        atomic_write_text(self.recipe_path, tomli_w.dumps(_drop_none(recipe)))
        return self.recipe_path

    def read_recipe(self) -> dict[str, Any]:
        from graftnet.recipe import load_recipe

        return load_recipe(self.recipe_path)

    def write_metrics(self, metrics: dict[str, Any]) -> Path:
        atomic_write_text(self.metrics_path, json.dumps(metrics, indent=2, default=json_default) + "\n")
        return self.metrics_path

    def write_history(self, history: History) -> Path:
        atomic_write_text(self.history_path, history.to_csv())
        return self.history_path

    def plot_learning_curves(self, history: History, title: str | None = None) -> Path:
        return plot_learning_curves(history, self.curves_path, title=title)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"


def _is_stamped(folder: str, name: str) -> bool:
    rest = folder[len(name) + 1:]
    return len(rest) >= 15 and rest[:8].isdigit() and rest[8] == "-" and rest[9:15].isdigit()


def _stamp_key(folder: str, name: str) -> tuple[str, int]:
    rest = folder[len(name) + 1:]
    suffix = rest[16:] if len(rest) > 15 else ""
    return rest[:15], int(suffix) if suffix.isdigit() else 1


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_drop_none(v) for v in value]
    return value


# ---------------------------------------------------------------- learning curves
def _series(history: History, key: str) -> list[float]:
    return [float("nan") if row.get(key) is None else float(row[key]) for row in history.epochs]


def _curve_metrics(history: History) -> list[str]:
    """Metrics worth a panel: loss first, then accuracy / topK / mae, in the order recorded."""
    keys: list[str] = []
    for row in history.epochs:
        keys += [k for k in row if k not in keys]
    wanted = [k for k in keys if k == "loss" or k in ("accuracy", "mae") or (k.startswith("top") and k[3:].isdigit())]
    return wanted or ["loss"]


def plot_learning_curves(history: History, path: str | os.PathLike, *, title: str | None = None) -> Path:
    """A PNG with one panel per metric (loss, accuracy, ...): train and valid per epoch.

    Stages (rows with a ``stage`` field, from staged fine-tuning) are marked by dashed
    lines. Uses matplotlib's Agg canvas directly, so no display and no pyplot state.

        >>> plot_learning_curves(history, "curves.png")   # doctest: +SKIP
        PosixPath('curves.png')
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    metrics = _curve_metrics(history)
    epochs = [row.get("epoch", i + 1) for i, row in enumerate(history.epochs)]
    fig = Figure(figsize=(5.5 * len(metrics), 4.2), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, metric in zip(axes, metrics):
        ax.plot(epochs, _series(history, metric), marker="o", markersize=3, label="train")
        if any(f"val_{metric}" in row for row in history.epochs):
            ax.plot(epochs, _series(history, f"val_{metric}"), marker="o", markersize=3, label="valid")
        _mark_stages(ax, history, epochs)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.set_title(metric)
        ax.grid(True, alpha=0.3)
        ax.legend()
        if len(epochs) <= 20:
            ax.set_xticks(epochs)
    if title:
        fig.suptitle(title)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    atomic_write_bytes(path, buffer.getvalue())
    return path


def _mark_stages(ax: Any, history: History, epochs: list[Any]) -> None:
    previous = None
    for epoch, row in zip(epochs, history.epochs):
        stage = row.get("stage")
        if stage is not None and previous is not None and stage != previous:
            ax.axvline(epoch - 0.5, color="grey", linestyle="--", linewidth=1)
            ax.annotate(str(stage), (epoch - 0.5, 1.0), xycoords=("data", "axes fraction"),
                        va="top", fontsize=8, color="grey")
        previous = stage


# ---------------------------------------------------------------- TensorBoard
class TensorBoardLogger:
    """A ``fit`` callback writing each epoch's numbers as TensorBoard scalars.

    Training numbers go to ``log_dir/train`` and validation numbers (``val_*``) to
    ``log_dir/validation`` under the same tags (``epoch_loss``, ``epoch_accuracy``), so
    TensorBoard draws them on one chart, as it does for Keras.

        >>> logger = TensorBoardLogger("runs/x/tensorboard")       # doctest: +SKIP
        >>> fit(model, data, callbacks=[logger]); logger.close()   # doctest: +SKIP
    """

    _SKIP = ("epoch", "stage")

    def __init__(self, log_dir: str | os.PathLike) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:
            raise ConfigError(f"TensorBoard logging needs the tensorboard package ({err}); install it with "
                              f"`pip install tensorboard` or set tensorboard = false in [output]") from None
        self.log_dir = Path(log_dir)
        self._train = SummaryWriter(str(self.log_dir / "train"))
        self._valid = SummaryWriter(str(self.log_dir / "validation"))

    def __call__(self, row: dict[str, Any], model: Network | None = None) -> None:
        step = int(row.get("epoch", 0))
        for key, value in row.items():
            if key in self._SKIP or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if key.startswith("val_"):
                self._valid.add_scalar(f"epoch_{key[4:]}", value, step)
            elif key == "lr":
                self._train.add_scalar("epoch_learning_rate", value, step)
            else:
                self._train.add_scalar(f"epoch_{key}", value, step)
        self._train.flush()
        self._valid.flush()

    def close(self) -> None:
        self._train.close()
        self._valid.close()


# ---------------------------------------------------------------- the run
def _mlflow_logger(recipe: dict[str, Any], run: RunDir) -> Any:
    """The MLflow logger ``[output] mlflow`` asks for (``true``: the local store in the runs folder), or None."""
    setting = recipe["output"].get("mlflow", False)
    if setting is False or setting == "":
        return None
    from graftnet.tracking import MLflowLogger

    return MLflowLogger(None if setting is True else setting, experiment=recipe["output"]["name"],
                        run_name=run.path.name, run_dir=run.path, params=recipe, runs_dir=recipe["output"]["dir"])


@dataclass
class RunResult:
    """What ``train_run`` returns: the trained model, its history, data and metrics."""

    run: RunDir
    model: Network
    data: Dataset
    history: History
    metrics: dict[str, Any]


def _split_metrics(model: Network, data: Dataset, metrics: Iterable[str]) -> dict[str, dict[str, float]]:
    out = {}
    for name in ("train", "valid", "test"):
        split = getattr(data, name)
        if split is not None and len(split):
            scores = evaluate(model, split, task=data.task, metrics=tuple(metrics))
            out[name] = {k: round(v, 6) if math.isfinite(v) else v for k, v in scores.items()}
    return out


def train_run(recipe: dict[str, Any], run: RunDir, *, data: Dataset | None = None, model: Network | None = None,
              resume: bool = False, verbose: bool | None = None) -> RunResult:
    """Train the network a resolved recipe describes and write every file of ``run``.

    ``data`` and ``model`` default to what ``recipe.build_data`` / ``build_model`` give
    (pass them when already built, e.g. to check a recipe before making its folder).
    With ``resume=True`` training continues from ``run/checkpoint`` (written after every
    epoch) and ends with the same weights as a run that was never interrupted.
    """
    from graftnet import distributed
    from graftnet import recipe as recipes
    from graftnet.train import fit

    t0 = time.perf_counter()
    world = distributed.current()  # under torchrun rank 0 alone writes the run's files
    data = data if data is not None else recipes.build_data(recipe)
    model = model if model is not None else recipes.build_model(recipe, data)
    history = History()
    callbacks: list[Any] = []
    logger = tracker = None
    if world.is_main:
        tracker = _mlflow_logger(recipe, run)  # a store that cannot be opened: an error before any file
        run.path.mkdir(parents=True, exist_ok=True)
        run.write_recipe(recipe)
        callbacks.append(lambda row, _model: run.write_history(history))
        logger = TensorBoardLogger(run.tensorboard_dir) if recipe["output"]["tensorboard"] else None
        callbacks += [c for c in (logger, tracker) if c is not None]
    checkpoint = run.checkpoint_dir if recipe["output"]["checkpoint"] else None
    try:
        fit(model, data, **recipes.fit_kwargs(recipe), checkpoint=checkpoint, resume=resume,
            history=history, callbacks=callbacks, verbose=verbose)
    except BaseException as err:
        if tracker is not None:
            tracker.close("KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED")
        raise
    finally:
        if logger is not None:
            logger.close()
    metrics = {
        **_split_metrics(model, data, recipe["train"]["metrics"]),
        "epochs": len(history),
        "stop_reason": history.stop_reason,
        "train_seconds": round(sum(row.get("seconds", 0.0) for row in history.epochs), 3),
        "wall_seconds": round(time.perf_counter() - t0, 3),
        "device": str(next(model.parameters()).device),
        "params": model.count_params(),
        "data": data.name,
        "examples": {name: len(getattr(data, name)) for name in ("train", "valid", "test")
                     if getattr(data, name) is not None},
    }
    if world.active:
        metrics["processes"] = world.size
    if world.is_main:
        run.write_history(history)
        run.write_metrics(metrics)
        run.plot_learning_curves(history, title=f"{recipe['output']['name']}: {model.name} on {data.name}")
        save_model(model, run.model_dir, metadata={
            "data": data.source, "data_name": data.name, "task": data.task, "classes": data.classes,
            "metrics": {k: metrics[k] for k in ("train", "valid", "test") if k in metrics},
            "recipe": recipe, "run": str(run.path)})
        if tracker is not None:
            tracker.log_run_dir(run.path)
            tracker.close()
    distributed.barrier(world)  # the run's files are complete when any rank returns
    return RunResult(run, model, data, history, metrics)
