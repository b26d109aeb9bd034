"""fit / evaluate / predict: the training loop.

The dataset lives as tensors on the device and is batched by indexing with a random
permutation (no DataLoader, no worker processes). The hot loop never synchronises with
the host: loss sums, correct counts and a non-finite flag accumulate on the device and
are read once per epoch. When the lowest layers are frozen and nothing random happens
below them, their output is computed once (``graftnet.cache``) and only the trainable
rest runs each step.

    >>> history = fit(model, fashion, epochs=30, batch_size=50, optimizer=SGD(lr=0.01))
    >>> evaluate(model, fashion.test)["accuracy"]
    0.8853
"""

from __future__ import annotations

import csv
import io
import logging
import math
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from graftnet import distributed
from graftnet.data import Dataset, Split
from graftnet.errors import ConfigError, ShapeError
from graftnet.network import Network
from graftnet.optim import OptimizerSpec, Plateau, Schedule, optimizer_from, param_groups, schedule_from

__all__ = ["EarlyStopping", "History", "fit", "evaluate", "predict", "seed_everything", "default_device"]

log = logging.getLogger("graftnet")


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA) so that building and training a network is reproducible."""
    torch.manual_seed(seed)


def default_device() -> torch.device:
    """CUDA when it is there, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# ---------------------------------------------------------------- history
@dataclass
class History:
    """Per-epoch records: ``history["val_accuracy"]`` is a list, ``history.epochs`` the rows.

    Each row has ``epoch``, ``loss``, the metrics, their ``val_`` versions, ``lr``,
    ``seconds`` and, when the frozen-prefix cache was used, ``cache_build_seconds`` and
    ``cache_hits``. ``steps`` says, for each ``fit`` call that appended to it, which training
    step ran: ``"fused Dense-chain step ..."`` or ``"autograd (why not fused)"``.
    """

    epochs: list[dict[str, Any]] = field(default_factory=list)
    stop_reason: str | None = None
    steps: list[str] = field(default_factory=list)

    def __getitem__(self, key: str) -> list[Any]:
        if not any(key in row for row in self.epochs):
            known = sorted({k for row in self.epochs for k in row})
            raise KeyError(f"no metric {key!r} in history; recorded: {', '.join(known)}")
        return [row.get(key) for row in self.epochs]

    def __len__(self) -> int:
        return len(self.epochs)

    def last(self, key: str | None = None) -> Any:
        """The last epoch's row, or one value of it: ``history.last("val_accuracy")``.

        A method, like ``len(history)`` and ``history["loss"]`` read the records; the row is
        ``{}`` before any epoch, and a key no epoch recorded is a KeyError listing those recorded.
        """
        row = self.epochs[-1] if self.epochs else {}
        if key is None:
            return dict(row)
        if key not in row:
            known = sorted(row)
            raise KeyError(f"no metric {key!r} in the last epoch; recorded: {', '.join(known) or 'nothing yet'}")
        return row[key]

    def to_dict(self) -> dict[str, Any]:
        return {"epochs": self.epochs, "stop_reason": self.stop_reason, "steps": self.steps}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> History:
        return cls(epochs=list(d.get("epochs", [])), stop_reason=d.get("stop_reason"), steps=list(d.get("steps", [])))

    def to_csv(self) -> str:
        keys: list[str] = []
        for row in self.epochs:
            keys += [k for k in row if k not in keys]
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=keys)
        writer.writeheader()
        writer.writerows(self.epochs)
        return out.getvalue()


@dataclass
class EarlyStopping:
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs;
    ``restore_best`` puts back the weights of the best epoch."""

    monitor: str = "val_loss"
    patience: int = 5
    min_delta: float = 0.0
    restore_best: bool = True

    @property
    def mode(self) -> str:
        return "max" if "acc" in self.monitor else "min"

    def improved(self, value: float, best: float | None) -> bool:
        if best is None:
            return True
        return value < best - self.min_delta if self.mode == "min" else value > best + self.min_delta


# ---------------------------------------------------------------- losses and metrics
def _loss_fn(task: str, output_activation: str, reduction: str = "sum") -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The task's loss; ``reduction="batch_mean"`` is the sum divided by the batch size,
    computed as a mean where that is the same thing (one autograd node fewer per step)."""
    mean = reduction == "batch_mean"
    red = "mean" if mean else "sum"
    if task == "multiclass":
        if output_activation == "softmax":  # the network outputs probabilities
            return lambda out, y: F.nll_loss(torch.log(out.clamp_min(1e-12)), y, reduction=red)
        return lambda out, y: F.cross_entropy(out, y, reduction=red)
    if task == "binary":
        if output_activation == "sigmoid":
            return lambda out, y: F.binary_cross_entropy(out.squeeze(1), y, reduction=red)
        return lambda out, y: F.binary_cross_entropy_with_logits(out.squeeze(1), y, reduction=red)
    if task == "regression":  # (B, k) targets: the per-example sum over k, averaged over the batch
        if mean:
            return lambda out, y: F.mse_loss(out.reshape(y.shape), y, reduction="sum") / len(y)
        return lambda out, y: F.mse_loss(out.reshape(y.shape), y, reduction="sum")
    raise ConfigError(f"unknown task {task!r}; expected multiclass, binary or regression")


def _threshold(output_activation: str) -> float:
    """Where a binary network's single output says "positive": 0.5 for a probability, 0 for a logit."""
    return 0.5 if output_activation == "sigmoid" else 0.0


def _predict_into(task: str, output_activation: str, out: torch.Tensor, buffer: torch.Tensor) -> None:
    """Write the batch's predicted classes into ``buffer`` (a slice of the epoch's predictions)."""
    if task == "multiclass":
        torch.argmax(out, 1, out=buffer)  # (B, classes) -> (B,)
    else:
        torch.gt(out.squeeze(1), _threshold(output_activation), out=buffer)


def _count_correct(task: str, output_activation: str, out: torch.Tensor, y: torch.Tensor, k: int = 1) -> torch.Tensor:
    if task == "multiclass":
        if k == 1:
            return (out.argmax(1) == y).sum()
        return (out.topk(k, dim=1).indices == y[:, None]).any(1).sum()
    return ((out.squeeze(1) > _threshold(output_activation)) == (y > 0.5)).sum()


def _metric_names(task: str, metrics: Sequence[str]) -> list[str]:
    if task == "regression":
        return [m for m in metrics if m in ("mae",)]
    out = []
    for m in metrics:
        if m == "accuracy" or (m.startswith("top") and m[3:].isdigit() and task == "multiclass"):
            out.append(m)
        elif m not in ("mae",):
            raise ConfigError(f"unknown metric {m!r}; expected accuracy, topK (e.g. top5) or mae")
    return out


def _check_fits(model: Network, data: Dataset) -> None:
    if tuple(data.input_shape) != tuple(model.input_shape):
        raise ShapeError(f"data {data.name!r} has examples of shape {tuple(data.input_shape)} but the network "
                         f"expects {tuple(model.input_shape)}")
    out = model.output_shape
    want = data.n_outputs
    if out != (want,):
        what = {"multiclass": f"{want} classes", "binary": "a binary task (1 output)",
                "regression": f"{want} target(s)"}[data.task]
        raise ShapeError(f"the network outputs {out} per example but data {data.name!r} is {what}: "
                         f"its last layer should be Dense({want})")


def _output_activation(model: Network) -> str:
    return getattr(model.specs[-1], "activation_name", "linear")


# ---------------------------------------------------------------- evaluation
@torch.inference_mode()
def _outputs(model: Network, x: torch.Tensor, batch_size: int | None, device: torch.device, start: int = 0) -> torch.Tensor:
    batch_size = batch_size or model.inference_batch_size(start)
    was_training = model.training
    model.eval()
    try:
        parts = [model(x[i:i + batch_size].to(device, non_blocking=True), start=start)
                 for i in range(0, len(x), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(parts) if parts else torch.empty(0)


def _scores(model: Network, task: str, out: torch.Tensor, y: torch.Tensor, metrics: Sequence[str]) -> dict[str, float]:
    act = _output_activation(model)
    n = len(y)
    result = {"loss": (_loss_fn(task, act)(out, y) / n).item()}
    for m in metrics:
        if m == "accuracy":
            result[m] = (_count_correct(task, act, out, y) / n).item()
        elif m.startswith("top"):
            result[m] = (_count_correct(task, act, out, y, int(m[3:])) / n).item()
        elif m == "mae":
            result[m] = (out.reshape(y.shape) - y).abs().mean().item()
    return result


def evaluate(model: Network, data: Dataset | Split, *, task: str | None = None, metrics: Sequence[str] = ("accuracy",),
             batch_size: int | None = None, device: str | torch.device | None = None) -> dict[str, float]:
    """Loss and metrics of ``model`` on a dataset's test split, or on a given split.

    >>> evaluate(model, fashion.test, task="multiclass")["accuracy"]
    """
    if isinstance(data, Dataset):
        task, split = data.task, data.test
        if split is None:
            raise ConfigError(f"data {data.name!r} has no test split; pass a split such as data.valid")
    else:
        split = data
        if task is None:
            task = "multiclass" if not split.y.is_floating_point() else "regression"
    device = torch.device(device) if device else next(model.parameters()).device
    out = _outputs(model, split.x, batch_size, device)
    return _scores(model, task, out, split.y.to(device), _metric_names(task, metrics))


def predict(model: Network, x: torch.Tensor | Split, *, proba: bool = False, batch_size: int | None = None) -> torch.Tensor:
    """Network outputs for ``x`` (batched, no autograd); ``proba=True`` applies softmax/sigmoid
    to a network whose last layer outputs logits."""
    x = x.x if isinstance(x, Split) else torch.as_tensor(x)
    if tuple(x.shape[1:]) != tuple(model.input_shape):
        raise ShapeError(f"input of shape {tuple(x.shape)} does not fit the network, which expects "
                         f"(N, {', '.join(map(str, model.input_shape))})")
    device = next(model.parameters()).device
    out = _outputs(model, x.float(), batch_size, device)
    if proba and _output_activation(model) == "linear":
        out = torch.sigmoid(out) if out.shape[1] == 1 else torch.softmax(out, dim=1)
    return out


# ---------------------------------------------------------------- fitting
@dataclass
class _Run:
    """What one call to ``fit`` works with (built once, read by the helpers below)."""

    model: Network
    device: torch.device
    task: str
    act: str
    metrics: list[str]
    start: int  # first layer that runs each step (0, or the cache cut)
    x: torch.Tensor  # training inputs for layers start.. (raw or cached features)
    y: torch.Tensor
    vx: torch.Tensor | None
    vy: torch.Tensor | None
    cache_info: dict[str, Any]
    views: torch.Tensor | None = None  # (K, N, *features): K augmented views of each training example, cached


def _prepare(model: Network, data: Dataset, device: torch.device, cache: Any, augment: Any,
             metrics: Sequence[str], log_fn: Callable[[str], None], weights_from: Path | None = None,
             world: distributed.World = distributed.World(), cache_views: int | None = None,
             generator: torch.Generator | None = None) -> _Run:
    _check_fits(model, data)
    if weights_from is not None:  # resuming: the cached prefix must be computed with the checkpoint's weights
        from graftnet.io.checkpoint import load_model

        saved = load_model(weights_from)
        if saved.to_spec()["layers"] == model.to_spec()["layers"]:  # else _restore reports the mismatch
            model.load_state_dict({k: v.to(device) for k, v in saved.state_dict().items()})
    train, valid = data.train, data.valid
    start, cache_info, views = 0, {}, None
    x, vx = train.x, (valid.x if valid is not None and len(valid) else None)
    if cache is not False:
        from graftnet import cache as cache_mod

        store = cache if isinstance(cache, cache_mod.FeatureCache) else cache_mod.default_cache()
        cut = cache_mod.cache_cut(model, None)  # where the cut would be without augmentation
        if augment is not None:  # it changes the inputs at every step: cached only as cache_views
            if cut and not cache_views:
                cache_info = {"cache_off": _augment_blocks_cache(model, cut, augment)}
                log_fn(f"cache: off: {cache_info['cache_off']}")
                cut = 0
            elif not cut and cache_views:
                cache_info = {"cache_off": f"cache_views={cache_views} not used: no frozen layers at the bottom "
                                           f"to cache; the augmentation runs at every step"}
                log_fn(f"cache: {cache_info['cache_off']}")
        if cut:
            prefix, _ = model.split(cut - 1)
            before = store.stats()
            t0 = time.perf_counter()
            try:
                if augment is not None:  # cache_views: K augmented copies of the training set, each cached
                    assert generator is not None and cache_views
                    views = _view_features(store, prefix, train, device, world, augment, cache_views, generator)
                    cx = views[0]
                else:
                    cx = _prefix_features(store, prefix, train, device, world)
                cvx = _prefix_features(store, prefix, valid, device, world) if vx is not None else None
            except cache_mod.CacheUnavailable as err:  # e.g. a read-only or full cache folder
                cut = 0
                warnings.warn(f"feature cache not used: {err}; training runs every layer at each step",
                              cache_mod.CacheWarning, stacklevel=3)
                log_fn(f"cache: not used ({err})")
        if cut:
            x, vx = cx, cvx
            after = store.stats()
            start = cut
            crossing = model.cut_names(cut)  # the frozen outputs that trainable layers read
            cache_info = {"cache_cut": model.layer_names[cut - 1],
                          "cache_build_seconds": round(after["build_seconds"] - before["build_seconds"], 4),
                          "cache_hits": after["hits"] - before["hits"],
                          "cache_seconds": round(time.perf_counter() - t0, 4)}
            if len(crossing) > 1 or crossing[0] != model.layer_names[cut - 1]:
                cache_info["cache_tensors"] = ", ".join(crossing)
            what = (f"their output {tuple(x.shape[1:])}" if len(crossing) == 1 else
                    "the outputs of " + ", ".join(f"{c} {model.shape_of(c)}" for c in crossing) + " (packed)")
            if views is not None:
                cache_info["cache_views"] = len(views)
                what += (f" on {len(views)} augmented views of each training image (each epoch trains on one view "
                         f"per image, drawn at random: not fresh augmentation)")
            log_fn(f"cache: layers {model.layer_names[0]}..{model.layer_names[cut - 1]} ({cut} layers) are frozen; "
                   f"{what} {'was reused' if after['misses'] == before['misses'] else 'was computed once'} "
                   f"in {cache_info['cache_seconds']:.2f}s, training runs layers {model.layer_names[cut]}.. only")
    on_device = lambda t: None if t is None else t.to(device)  # noqa: E731
    return _Run(model, device, data.task, _output_activation(model), _metric_names(data.task, metrics), start,
                on_device(x), on_device(train.y), on_device(vx), on_device(valid.y if vx is not None else None),
                cache_info, on_device(views))


def _augment_blocks_cache(model: Network, cut: int, augment: Any) -> str:
    """Why the frozen prefix is not cached when a random augmentation runs on the inputs."""
    names = model.layer_names
    return (f"the random augmentation {augment!r} changes the inputs at every step, and layers "
            f"{names[0]}..{names[cut - 1]} ({cut} frozen layers) read them, so their output is not the same twice "
            f"and they run at every step; fit(cache_views=K) computes K augmented views of each image through "
            f"them once and trains on one per epoch")


def _view_features(store: Any, prefix: Network, split: Split, device: torch.device, world: distributed.World,
                   augment: Any, k: int, generator: torch.Generator) -> torch.Tensor:
    """(K, N, *out_shape): the prefix's output on K augmented copies of ``split``, each cached.

    The views are drawn from a stream seeded from ``generator`` (the same on every rank), in
    chunks of the prefix's inference batch, so they depend on the fit's seed only."""
    view_generator = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))
    step = max(1, prefix.inference_batch_size())
    out = None
    for view in range(k):
        x = torch.cat([augment(split.x[i:i + step], view_generator) for i in range(0, len(split), step)])
        features = _prefix_features(store, prefix, Split(x, split.y), device, world).to("cpu")
        if out is None:
            out = torch.empty((k, *features.shape), dtype=features.dtype)  # (K, N, *out_shape)
        out[view] = features
    assert out is not None
    return out


def _prefix_features(store: Any, prefix: Network, split: Split, device: torch.device,
                     world: distributed.World) -> torch.Tensor:
    """The frozen prefix's output on ``split``: (N, *out_shape). Under DDP each rank computes
    (or finds in its cache) the features of its shard only and the shards are all-gathered,
    so the build is split across the ranks; a rank that cannot cache makes every rank go on
    without the cache."""
    from graftnet.cache import CacheUnavailable

    if not world.active:
        return store.features(prefix, split, device=device)
    start, stop = distributed.rank_slice(len(split), world)
    part, failure = None, None
    try:
        part = store.features(prefix, Split(split.x[start:stop], split.y[start:stop]), device=device)
    except CacheUnavailable as err:
        failure = err
    failed = distributed.all_reduce_sum(torch.tensor([int(failure is not None)], device=distributed.comm_device()))
    if int(failed.item()):
        raise failure or CacheUnavailable("another process could not cache its shard of the features")
    gathered = distributed.all_gather_rows(part.to(distributed.comm_device()), len(split), world)
    return gathered.to(device)


def _make_optimizer(model: Network, spec: OptimizerSpec, device: torch.device, lr_mult, layer_decay) -> torch.optim.Optimizer:
    groups = param_groups(model, lr=spec.lr, lr_mult=lr_mult, layer_decay=layer_decay)
    if not groups:
        raise ConfigError(f"nothing to train: every layer with parameters is frozen ({', '.join(model.frozen)}); "
                          f"unfreeze some layers first")
    return spec.build(groups, device)


class _StepBar:
    """A progress bar over one epoch's steps, on a terminal only (then cleared, leaving the
    epoch's line). Advancing it reads nothing from the device."""

    def __init__(self, steps: int) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.steps = steps
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeRemainingColumn(), transient=True, refresh_per_second=8)
        self.task: Any = None

    @classmethod
    def maybe(cls, steps: int, verbose: bool | None) -> _StepBar | None:
        return cls(steps) if verbose is not False and sys.stderr.isatty() else None

    def start(self, label: str) -> None:
        self.progress.start()
        self.task = self.progress.add_task(label, total=self.steps)

    def advance(self) -> None:
        self.progress.advance(self.task)

    def stop(self) -> None:
        self.progress.stop()
        self.progress.remove_task(self.task)


def _reporter(verbose: bool | None) -> Callable[[str], None]:
    """Where progress lines go: stderr unless ``verbose=False`` (then only the log)."""
    if verbose is False:
        return lambda msg: log.info(msg)
    return lambda msg: print(msg, file=sys.stderr, flush=True)


def fit(
    model: Network,
    data: Dataset,
    *,
    epochs: int = 10,
    batch_size: int = 32,
    optimizer: OptimizerSpec | str | dict[str, Any] = "sgd",
    lr: float | None = None,
    schedule: Schedule | str | dict[str, Any] | None = None,
    metrics: Sequence[str] = ("accuracy",),
    clip_norm: float | None = None,
    clip_value: float | None = None,
    early_stopping: EarlyStopping | int | None = None,
    lr_mult: dict[str, float] | None = None,
    layer_decay: float | None = None,
    augment: Any = None,
    cache: Any = True,
    cache_views: int | None = None,
    seed: int | None = None,
    device: str | torch.device | None = None,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    history: History | None = None,
    verbose: bool | None = None,
    callbacks: Sequence[Callable[[dict[str, Any], Network], None]] = (),
    precision: str = "fp32",
    stage: str | None = None,
    fused: bool | None = None,
) -> History:
    """Train ``model`` on ``data.train``, validating on ``data.valid`` after each epoch.

    Args:
        optimizer: a spec (``SGD(lr=0.01, momentum=0.9)``), a name (``"adam"``,
            ``"nesterov"``) or a dict; ``lr`` overrides its learning rate.
        schedule: ``PiecewiseConstant``, ``Exponential``, ``Power``, ``Plateau``,
            ``OneCycle``, ``Cosine`` (or their names / dicts).
        early_stopping: an ``EarlyStopping`` or a patience (monitors ``val_loss``).
        lr_mult / layer_decay: per-layer learning rates (see ``optim.param_groups``).
        augment: a callable ``(x, generator) -> x`` applied to each training batch
            (``graftnet.augment.Augment``, ``ImageAugment``); it turns the frozen-prefix
            cache off (the log line and the History's ``cache_off`` say why) unless
            ``cache_views`` is given.
        cache: ``True`` (automatic), ``False``, or a ``FeatureCache`` to use.
        cache_views: with ``augment`` and frozen bottom layers: compute ``K`` augmented
            views of each training image through the frozen layers once, and train each
            epoch on one view per image drawn at random (``cache_views`` in the History).
            That is not the same training as fresh augmentation at every step: the model
            sees at most K variants of each image.
        seed: seeds the batch order and dropout; same seed, same result on CPU.
        checkpoint: a directory written atomically after every epoch (model, optimizer,
            schedule, RNG, history); with ``resume=True`` training continues from it exactly.
        history: a History to append to (epoch numbers continue), e.g. across stages.
        precision: "fp32", "bf16" or "fp16" (autocast; fp16 only on CUDA).
        fused: on a CPU, train a chain of Dense layers (the trainable part above the
            cache) with ``graftnet.fused``'s hand-written step instead of autograd: same
            arithmetic up to float rounding, 2-3x fewer microseconds per small step.
            ``None`` (default) uses it where it applies and logs why not where it does
            not; ``True`` requires it (a ConfigError says why it cannot); ``False`` is
            autograd. ``History.steps`` says which step ran. With plain SGD the fused
            step applies the update inside the gradient GEMM and never writes ``p.grad``;
            other optimizers, clipping and penalties get ``p.grad`` as usual.

    Under ``torchrun`` (a process group initialised, e.g. by ``graftnet train`` or
    ``graftnet.distributed.init_from_env()``), ``fit`` trains with DistributedDataParallel:
    ``batch_size`` is the global batch, each rank trains on its slice of it, and the weights
    and History equal one process's with the same batch size (up to float rounding; dropout
    and BatchNorm statistics are per rank, so models with them train differently). The
    frozen-prefix cache is built on each rank's shard and gathered. Rank 0 writes the
    checkpoint; callbacks run on every rank (``distributed.current().is_main`` is rank 0).

    Returns the History. A loss that becomes NaN or infinite stops training, puts back
    the weights of the last good epoch and sets ``history.stop_reason``.
    """
    if epochs < 0 or batch_size < 1:
        raise ConfigError(f"epochs must be >= 0 and batch_size >= 1, got epochs={epochs}, batch_size={batch_size}")
    if cache_views is not None:
        if isinstance(cache_views, bool) or not isinstance(cache_views, int) or cache_views < 1:
            raise ConfigError(f"cache_views must be a whole number >= 1 of augmented views per image, got "
                              f"{cache_views!r}")
        if augment is None or cache is False:
            raise ConfigError(f"cache_views={cache_views} caches augmented views of the inputs: it needs augment=... "
                              f"and the cache on (got augment={augment!r}, cache={cache!r})")
    world = distributed.current()  # more than one process under torchrun
    device = torch.device(device) if device else default_device()
    if world.active and device.type == "cuda" and device.index is None:
        device = torch.device("cuda", world.local_rank)
    opt_spec = optimizer_from(optimizer, lr)
    sched_spec = schedule_from(schedule)
    stopper = EarlyStopping(patience=early_stopping) if isinstance(early_stopping, int) and not isinstance(early_stopping, bool) else early_stopping
    history = history if history is not None else History()
    say = _reporter(verbose if world.is_main else False)  # one process prints
    model.to(device)
    if seed is not None:
        torch.manual_seed(seed)
    _seed_new_layers(model, seed)
    order_seed = seed if seed is not None else int(torch.randint(0, 2**31, (1,)))
    # every rank draws the same batch order: rank 0's seed
    generator = torch.Generator().manual_seed(distributed.broadcast_int(order_seed, world))
    resume_from = _resume_folder(checkpoint) if resume else None
    run = _prepare(model, data, device, cache, augment, metrics, say, resume_from, world, cache_views, generator)
    # the model now knows what it is: save_model writes these, predict reads them
    model.info.update(task=data.task, classes=list(data.classes) if data.classes else None,
                      output_activation=run.act, data_name=data.name)
    if data.source.get("preprocess") not in (None, "unit"):  # image_folder(preprocess=...): what the inputs are
        model.info["preprocess_input"] = data.source["preprocess"]
    _say_data(data, say)
    n = len(run.x)
    if n == 0:
        raise ConfigError(f"data {data.name!r} has no training examples")
    distributed.check_splittable(n, batch_size, world)
    steps = max(1, math.ceil(n / batch_size))
    opt = _make_optimizer(model, opt_spec, device, lr_mult, layer_decay)
    scheduler = sched_spec.build(opt, epochs, steps) if sched_spec else None
    first_epoch, best, best_state, wait = 0, None, None, 0

    if resume_from is not None:
        first_epoch, best, best_state, wait = _restore(resume_from, model, opt, scheduler, generator, history, device)
        say(f"resumed from {resume_from} after epoch {first_epoch}")
        if first_epoch >= epochs:
            message = (f"the checkpoint {resume_from} is already at epoch {first_epoch} and epochs={epochs}: "
                       f"nothing was trained; pass epochs > {first_epoch} to train more")
            warnings.warn(message, stacklevel=2)
            say(message)

    net = _data_parallel(model, device, world)  # the model itself in a world of one
    trainable = [p for g in opt.param_groups for p in g["params"]]
    autocast = _autocast(precision, device)
    # fp16 gradients underflow without loss scaling; bf16 has fp32's range and needs none
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    good_state = _cpu_state(model)
    epoch_base = len(history) - first_epoch  # epoch numbers continue across fit calls
    use_penalty = any(getattr(s, "l1", 0) or getattr(s, "l2", 0) for s in model.specs)
    use_constraints = model.has_constraints()
    # one process: each step's mean loss. Several: each rank's summed loss, scaled in the
    # step by world size / global batch so that DDP's averaged gradients are the global mean's
    loss_of = _loss_fn(run.task, run.act, "sum" if world.active else "batch_mean")
    predicting = "accuracy" in run.metrics and run.task != "regression"
    batches = [(lo, min(n, lo + batch_size)) for lo in range(0, n, batch_size)]  # global [lo, hi) per step
    mine = _rank_parts(batches, world)  # this rank's [lo, hi) of each global batch (all of it in a world of one)
    sizes = torch.tensor([float(hi - lo) for lo, hi in batches], device=device)  # examples per step
    if world.active:
        sizes.fill_(1.0)  # the steps' losses are sums already
    offsets = [0]  # where each step's predictions go in this rank's buffer
    for lo, hi in mine:
        offsets.append(offsets[-1] + hi - lo)
    positions = (torch.cat([torch.arange(lo, hi) for lo, hi in mine]).to(device) if world.active else None)

    def train_step(xb: torch.Tensor, yb: torch.Tensor, scale: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward, loss, backward, update: (the batch's loss, its outputs); ``scale``
        multiplies the loss that is differentiated (not the one returned)."""
        with autocast:
            out = net(xb, start=run.start)
            loss = loss_of(out.float(), yb)
        objective = loss if scale is None else loss * scale
        if use_penalty:
            penalty = model.penalty()
            if penalty is not None:
                objective = objective + penalty
        opt.zero_grad(set_to_none=True)
        if scaler is None:
            objective.backward()
        else:
            scaler.scale(objective).backward()
            scaler.unscale_(opt)  # clipping below sees true gradients
        if clip_value is not None:
            torch.nn.utils.clip_grad_value_(trainable, clip_value)
        if clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(trainable, clip_norm, foreach=True)
        if scaler is None:
            opt.step()
        else:
            scaler.step(opt)  # skipped when the scaled gradients overflowed
            scaler.update()
        if use_constraints:
            model.apply_constraints()
        return loss.detach(), out.detach()

    graphed = None if world.active else _GraphedStep.maybe(train_step, opt, device, augment, sched_spec, clip_value,
                                                           clip_norm, precision)
    fused_step, why_not = None, "fused=False"
    if fused is not False:
        from graftnet.fused import plan_fused

        fused_step, why_not = plan_fused(model, run.start, opt, task=run.task, act=run.act, device=device,
                                         precision=precision, distributed=world.active, clip_value=clip_value,
                                         clip_norm=clip_norm)
        if fused_step is None and fused:
            raise ConfigError(f"fused=True, but this model cannot train with the fused step: {why_not}; "
                              f"pass fused=None to use autograd where it cannot")
    step_info = fused_step.describe() if fused_step is not None else f"autograd ({why_not})"
    say(f"step: {step_info}")
    history.steps.append(step_info)

    bar = _StepBar.maybe(steps, verbose if world.is_main else False)
    for epoch in range(first_epoch, epochs):
        t0 = time.perf_counter()
        model.train()
        perm = torch.randperm(n, generator=generator).to(device)
        # cache_views: which of the K cached views each example trains on this epoch
        view_of = (torch.randint(len(run.views), (n,), generator=generator).to(device)
                   if run.views is not None else None)
        # under DDP the ranks augment different examples: each its own stream, drawn from the shared one
        aug_generator = (torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator))
                                                       + world.rank) if world.active and augment is not None
                         else generator)
        losses = torch.zeros(steps, device=device)  # each step's loss, read once per epoch
        preds = torch.empty(offsets[-1], device=device, dtype=torch.long if run.task == "multiclass" else torch.bool)
        if bar is not None:
            bar.start(f"epoch {epoch_base + epoch + 1}/{epochs + epoch_base}")
        try:
            for step in range(steps):
                if bar is not None:
                    bar.advance()
                lo, hi = mine[step]
                idx = perm[lo:hi]
                lr_used = opt.param_groups[-1]["lr"]  # before a per-step schedule moves it on
                if fused_step is not None and view_of is None and augment is None:
                    loss, out = fused_step.gathered(run.x, run.y, idx)  # gathers into its own buffers
                else:
                    xb, yb = run.x.index_select(0, idx), run.y.index_select(0, idx)  # (B, ...) on the device
                    if view_of is not None:
                        xb = run.views[view_of[idx], idx]  # (B, *features): each example's view of this epoch
                    elif augment is not None:
                        xb = augment(xb, aug_generator)
                    if fused_step is not None:
                        loss, out = fused_step(xb, yb)
                    elif graphed is not None and hi - lo == batch_size:
                        loss, out = graphed(xb, yb)
                    else:
                        global_lo, global_hi = batches[step]
                        loss, out = train_step(xb, yb, world.size / (global_hi - global_lo) if world.active else None)
                if fused_step is not None and use_constraints:  # the eager step applies them itself
                    model.apply_constraints()
                if scheduler is not None and sched_spec.per_step:
                    scheduler.step()
                with torch.no_grad():
                    losses[step] = loss
                    if predicting:
                        where = preds[offsets[step]:offsets[step + 1]]
                        if fused_step is not None:
                            fused_step.predict_into(where)
                        else:
                            _predict_into(run.task, run.act, out, where)
        finally:
            if bar is not None:
                bar.stop()
        with torch.no_grad():
            loss_sum = (losses * sizes).sum()  # non-finite iff a step's loss was
            if predicting:
                order = perm if positions is None else perm[positions]  # this rank's examples, as trained
                labels = run.y.index_select(0, order)  # (N,) in this epoch's order
                correct = (preds == (labels if run.task == "multiclass" else labels > 0.5)).sum()
            if world.active:  # every rank's History is the one-process History
                totals = distributed.all_reduce_sum(torch.stack([loss_sum.float(), correct.float() if predicting
                                                                 else loss_sum.new_zeros(())]))
                loss_sum, correct = totals[0], totals[1]
        if not bool(torch.isfinite(loss_sum)):  # one host sync per epoch
            _put_back(model, good_state)
            history.stop_reason = (f"loss became non-finite in epoch {epoch + 1}; training stopped and the "
                                   f"weights of the last good epoch ({epoch}) were put back")
            say(history.stop_reason + (f"; the last good checkpoint is {checkpoint}" if checkpoint else ""))
            log.warning(history.stop_reason)
            break
        row = {"epoch": epoch_base + epoch + 1, **({"stage": stage} if stage else {}),
               "loss": (loss_sum / n).item()}
        if "accuracy" in run.metrics:
            row["accuracy"] = (correct / n).item()
        if run.vx is not None:
            vout = _outputs(model, run.vx, None, device, start=run.start)
            row.update({f"val_{k}": v for k, v in _scores(model, run.task, vout, run.vy, run.metrics).items()})
        row["lr"] = lr_used  # the rate of the epoch's last step (not the next step's)
        row["seconds"] = round(time.perf_counter() - t0, 4)
        if epoch == first_epoch and run.cache_info:
            row.update(run.cache_info)
        if run.views is not None:
            row["cache_views"] = len(run.views)  # every epoch: trained on one of K cached views per image
        history.epochs.append(row)
        if scheduler is not None and not sched_spec.per_step:
            if isinstance(sched_spec, Plateau):
                if sched_spec.monitor not in row:
                    raise ConfigError(f"plateau schedule monitors {sched_spec.monitor!r}, which is not recorded "
                                      f"(recorded: {', '.join(row)}); add validation data or change monitor")
                scheduler.step(row[sched_spec.monitor])
            else:
                scheduler.step()
        say(_format_row(row, epochs + epoch_base))
        good_state = _cpu_state(model)
        for callback in callbacks:
            callback(row, model)
        if callbacks and not use_constraints and model.has_constraints():
            use_constraints = True  # a callback added one (graftnet.sparse.PruneDuring's masks)
            graphed = None  # a captured CUDA step would not apply it
        stop = False
        if stopper is not None:
            if stopper.monitor not in row:
                raise ConfigError(f"early stopping monitors {stopper.monitor!r}, which is not recorded "
                                  f"(recorded: {', '.join(row)})")
            if stopper.improved(row[stopper.monitor], best):
                best, best_state, wait = row[stopper.monitor], good_state, 0
            else:
                wait += 1
                stop = wait >= stopper.patience
        if checkpoint:
            if world.is_main:  # the others wait, then a resume on any rank reads a complete checkpoint
                _save(Path(checkpoint), model, opt, scheduler, generator, history, epoch + 1, best, best_state, wait,
                      data)
            distributed.barrier(world)
        if stop:
            history.stop_reason = (f"early stopping: {stopper.monitor} did not improve for {stopper.patience} "
                                   f"epochs (best {best:.4f})")
            say(history.stop_reason)
            break
    if stopper is not None and stopper.restore_best and best_state is not None:
        _put_back(model, best_state)
    return history


def _rank_parts(batches: list[tuple[int, int]], world: distributed.World) -> list[tuple[int, int]]:
    """This rank's ``[lo, hi)`` of each global batch ``[lo, hi)`` (contiguous, as torch.tensor_split)."""
    parts = []
    for lo, hi in batches:
        start, stop = distributed.rank_slice(hi - lo, world)
        parts.append((lo + start, lo + stop))
    return parts


def _data_parallel(model: Network, device: torch.device, world: distributed.World) -> torch.nn.Module:
    """``model`` wrapped in DistributedDataParallel when several processes train it (DDP
    broadcasts rank 0's weights first and averages the gradients in backward), else ``model``."""
    if not world.active:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


class _GraphedStep:
    """The whole training step captured once in a CUDA graph and replayed per batch.

    On a GPU a small network's step is ~30 kernel launches whose CPU-side cost is the
    whole step time; a replay is one launch. The first three calls run eagerly on a side
    stream (the warm-up capture needs), the fourth captures and replays; a change of the
    learning rate (a per-epoch schedule) captures again. Same kernels, same results.
    """

    WARMUP = 3

    def __init__(self, step: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
                 opt: torch.optim.Optimizer) -> None:
        self.step, self.opt, self.calls = step, opt, 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.lrs: tuple[float, ...] = ()

    @classmethod
    def maybe(cls, step, opt, device, augment, sched_spec, clip_value, clip_norm, precision) -> _GraphedStep | None:
        """A graphed step where capture is safe: CUDA, fp32 or bf16 (fp16's loss scaler reads
        back an overflow flag each step), no augmentation, no per-step schedule, no clipping,
        and an optimizer whose step can be captured (SGD, or capturable groups)."""
        if device.type != "cuda" or augment is not None or clip_value is not None or clip_norm is not None:
            return None
        if precision == "fp16":
            return None
        if sched_spec is not None and sched_spec.per_step:
            return None
        capturable = isinstance(opt, torch.optim.SGD) or all(g.get("capturable") for g in opt.param_groups)
        return cls(step, opt) if capturable else None

    def __call__(self, xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.calls += 1
        if self.calls <= self.WARMUP:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                result = self.step(xb, yb)
            torch.cuda.current_stream().wait_stream(side)
            return result
        lrs = tuple(g["lr"] for g in self.opt.param_groups)
        if self.graph is None or lrs != self.lrs:
            self._capture(xb, yb, lrs)
        self.x.copy_(xb)
        self.y.copy_(yb)
        self.graph.replay()
        return self.loss, self.out

    def _capture(self, xb: torch.Tensor, yb: torch.Tensor, lrs: tuple[float, ...]) -> None:
        self.x, self.y = xb.clone(), yb.clone()  # static inputs the graph reads
        self.opt.zero_grad(set_to_none=True)  # gradients are then allocated in the graph's pool
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.loss, self.out = self.step(self.x, self.y)
        self.lrs = lrs


def _format_row(row: dict[str, Any], total: int) -> str:
    parts = [f"epoch {row['epoch']}/{total}"]
    for k, v in row.items():
        if k in ("epoch", "stage") or k.startswith("cache_"):
            continue
        parts.append(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}")
    return "  ".join(parts)


def _cpu_state(model: Network) -> dict[str, torch.Tensor]:
    """A CPU copy of what training can change: every layer but the frozen ones (a frozen
    BatchNorm whose scale/shift train is included). Frozen weights, often most of a grafted
    model, are not copied every epoch."""
    fixed = set(model.frozen) - set(model.bn_affine)
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()
            if k.split(".", 1)[0] not in fixed}


@torch.no_grad()
def _put_back(model: Network, saved: dict[str, torch.Tensor]) -> None:
    """Restore a ``_cpu_state`` copy in place (the frozen layers it leaves out did not change)."""
    state = model.state_dict()
    for key, value in saved.items():
        state[key].copy_(value)


class _NoAutocast:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        return None


def _autocast(precision: str, device: torch.device) -> Any:
    if precision == "fp32":
        return _NoAutocast()
    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16}
    if precision not in dtypes:
        raise ConfigError(f"precision must be fp32, bf16 or fp16, got {precision!r}")
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("fp16 autocast needs a CUDA device; use bf16 on the CPU")
    # no weight-cast cache: it cannot live inside a CUDA graph, and each weight is cast once
    # per step anyway
    return torch.autocast(device.type, dtype=dtypes[precision], cache_enabled=False)


# ---------------------------------------------------------------- checkpoints
def _resume_folder(checkpoint: str | Path | None) -> Path:
    """The checkpoint ``fit(resume=True)`` continues from: ``checkpoint``, or ``checkpoint.prev``
    where a save was killed between its two renames (as ``load_model`` finds it). Resuming
    from nothing is an error, not a silent start at epoch 1."""
    from graftnet.errors import CheckpointError
    from graftnet.io.checkpoint import STATE, find_checkpoint

    if checkpoint is None:
        raise ConfigError("resume=True needs checkpoint=DIR: the folder a previous fit wrote its checkpoint to")
    found = find_checkpoint(checkpoint)
    if found is None:
        path = Path(checkpoint)
        what = ("the folder does not exist" if not path.exists() else
                f"it holds no {STATE} (found: {', '.join(sorted(p.name for p in path.iterdir())) or 'nothing'})"
                if path.is_dir() else "it is a file")
        raise CheckpointError(f"resume=True but there is no training checkpoint at {path}: {what}; "
                              f"check the path, or pass resume=False to train from the first epoch")
    return found


def _seed_new_layers(model: Network, seed: int | None) -> None:
    """Layers ``graft`` added that nothing has trained yet get fresh weights drawn from ``seed``,
    so one seed makes a grafted run reproducible whatever the RNG did before the graft."""
    fresh = model.lineage.pop("untrained", None) if isinstance(model.lineage, dict) else None
    if seed is None or not fresh:
        return
    for name in [n for f in fresh for n in (model.block(f) if f in model.blocks else [f])]:  # a block: its layers
        spec = model.spec_of(name)
        in_shapes = [model.shape_of(source) for source in model.inputs_of(name)]  # graph: the layers it reads
        built = spec.build(in_shapes if spec.merges else in_shapes[0])
        model.layer(name).load_state_dict(built.state_dict())  # copies into the layer's own tensors and device


def _say_data(data: Dataset, say: Callable[[str], None]) -> None:
    """One line naming the files the data came from and whether their checksums were verified."""
    files = data.source.get("files") if isinstance(data.source, dict) else None
    if files:
        statuses = sorted({f["checksum"] for f in files})
        say(f"data: {data.name} from {', '.join(Path(f['path']).name for f in files)} in "
            f"{data.source.get('root', '?')} ({'; '.join(statuses)})")


def _save(path: Path, model: Network, opt, scheduler, generator: torch.Generator, history: History, epoch: int,
          best, best_state, wait: int, data: Dataset) -> None:
    from graftnet.io.checkpoint import save_checkpoint

    state = {"epoch": epoch, "history": history.to_dict(), "best": best, "wait": wait,
             "optimizer": opt.state_dict(), "scheduler": scheduler.state_dict() if scheduler else None,
             "torch_rng": torch.get_rng_state(), "generator": generator.get_state()}
    tensors = {"best_state": best_state} if best_state is not None else {}
    save_checkpoint(path, model, state=state, tensors=tensors, metadata={"data": data.source, "classes": data.classes})


def _restore(path: Path, model: Network, opt, scheduler, generator: torch.Generator, history: History,
             device: torch.device) -> tuple[int, Any, Any, int]:
    from graftnet.errors import CheckpointError
    from graftnet.io.checkpoint import read_checkpoint

    saved, restored = read_checkpoint(path)
    if saved.to_spec()["layers"] != model.to_spec()["layers"]:
        raise CheckpointError(f"checkpoint {path} holds a different network ({', '.join(saved.layer_names)}) "
                              f"than the one being trained ({', '.join(model.layer_names)})")
    state = restored["state"]
    model.load_state_dict(saved.state_dict())
    try:
        opt.load_state_dict(state["optimizer"])
    except (ValueError, KeyError) as err:
        raise CheckpointError(f"checkpoint {path}: optimizer state does not fit this run ({err}); "
                              f"was it written with other frozen layers or another optimizer?") from None
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    generator.set_state(state["generator"])
    history.epochs[:] = History.from_dict(state["history"]).epochs
    return int(state["epoch"]), state.get("best"), restored.get("best_state"), int(state.get("wait", 0))
