"""Reusing trained layers: graft, assign weights, freeze, staged fine-tuning plans.

The book's transfer-learning recipe (Hands-On ML, 11.2.2) in three lines::

    >>> model_b = graft(model_a, reuse=":-1", head=Dense(1, "sigmoid"))
    >>> plan = FineTune([Stage(4, train="outputs"), Stage(16, train="all", lr=1e-4)])
    >>> history = plan.fit(model_b, task_b, optimizer=SGD(lr=1e-3))

``graft`` copies the reused layers (training ``model_b`` leaves ``model_a`` intact; pass
``share=True`` to reuse the very same modules) and records where each layer came from
in ``model_b.lineage``, which ``summary()`` shows and ``save_model`` keeps. Each stage of a
plan freezes every layer but the ones it trains and calls ``train.fit``, which builds the
optimizer from the parameters that are trainable now (no "recompile" step to forget) and
trains on cached features when the frozen layers form a prefix.

A plan with a ``checkpoint`` folder resumes exactly where it stopped::

    <checkpoint>/plan.json      plan, seed, data fingerprint, completed stages, history,
                                freeze state and cache fingerprint of each stage
    <checkpoint>/stage-<i>/     train.fit's checkpoint of stage i (every epoch)
    <checkpoint>/model/         the model at the end of the last completed stage
"""

from __future__ import annotations

import copy
import json
import math
import re
import shutil
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from graftnet.cache import cache_cut, prefix_fingerprint, weights_fingerprint
from graftnet.data import Dataset
from graftnet.errors import CheckpointError, ConfigError, ShapeError, did_you_mean, format_names
from graftnet.io.mapping import kernel_from_torch, kernel_to_torch
from graftnet.layers import BatchNormModule, LayerSpec, layer_from_dict
from graftnet.network import Network, Selector
from graftnet.optim import OptimizerSpec, Schedule, optimizer_from, schedule_from

__all__ = [
    "FineTune",
    "Stage",
    "freeze_below",
    "get_weights",
    "graft",
    "set_weights",
    "unfreeze_top",
]

PLAN_FORMAT = "graftnet.finetune/1"
PLAN_STATE = "plan.json"
LAYOUTS = ("keras", "torch")


def _has_weights(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())


# ===================================================================== graft
def graft(
    base: Network | str | Path,
    reuse: Selector = ":-1",
    head: LayerSpec | Sequence[LayerSpec] | Network = (),
    *,
    freeze: bool | Selector = None,
    share: bool = False,
    bn_affine: bool = False,
    name: str | None = None,
    at: str | None = None,
    stop_gradient: str | None = None,
) -> Network:
    """A new network: the lower layers of ``base`` picked by ``reuse``, then ``head`` on top.

    Args:
        base: a trained Network, or the folder of a saved one.
        reuse: the layers to keep (a selector). They must be a bottom part of ``base``:
            every layer with weights that a selected layer depends on is selected too;
            parameter-free layers it depends on (``flatten``, pooling, merges) come along.
            In a graph the kept layers must end in one layer, which the head reads.
        at: attach the head to this layer's output, keeping everything it depends on
            (``graft(resnet, at="conv4_block6_out", head=...)``); with ``reuse`` as well,
            ``at`` must be among the reused layers.
        head: new layer specs (or a Network whose input fits); an unnamed last Dense is
            called ``outputs`` and other unnamed Dense layers continue ``hiddenN``.
        freeze: ``True`` freezes every reused layer, a selector freezes those layers.
        share: reuse the same modules (training the graft trains ``base``) instead of copies.
        bn_affine: frozen BatchNorm layers keep their scale/shift trainable.
        name: the new network's name (default ``"<base>-graft"``).
        stop_gradient: a reused layer that gradients stop at, as ``tf.stop_gradient(hidden2)``
            does: it and every layer it depends on are frozen (never trained, so ``fit``
            computes them once and caches their output); the reused layers above it train.

    >>> b = graft(Network.mlp(4, [8, 8], 3, name="a"), reuse="hidden[12]", head=Dense(1, "sigmoid"))
    >>> b.layer_names, b.lineage["layers"]["hidden1"], b.lineage["layers"]["outputs"]
    (['hidden1', 'hidden2', 'outputs'], 'reused from a:hidden1', 'new')
    """
    base = _as_network(base)
    if at is not None and reuse == ":-1":
        reuse = [*base.ancestors(at), at]
    reused = _bottom_run(base, reuse)
    top = _top_of(base, reused, at, reuse)
    specs = [_copy_spec(base, n) for n in reused]
    head_net = head if isinstance(head, Network) else None
    head_specs = _head_specs(head, reused, base)
    if head_specs and head_specs[0].inputs is None and top != reused[-1]:
        head_specs[0].inputs = [top]
    in_shape = base.shape_of(top)
    if head_net is not None and tuple(head_net.input_shape) != tuple(in_shape):
        raise ShapeError(f"graft: the head network {head_net.name!r} takes input of shape "
                         f"{tuple(head_net.input_shape)} but the reused layers end with {top!r}, whose "
                         f"output has shape {tuple(in_shape)}")
    _check_head_shapes(head_specs, top, in_shape)
    blocks = {b: v for b, v in base.block_inputs.items() if not b or any(n.startswith(b + "/") for n in reused)}
    net = Network(specs + head_specs, base.input_shape, name=name or f"{base.name}-graft",
                  output=None if head_specs else top, input_name=base.input_name, block_inputs=blocks)
    _bring_weights(net, base, reused, share)
    if head_net is not None:
        for layer in head_net.layer_names:
            net.layer(layer).load_state_dict(head_net.layer(layer).state_dict())
    device = next(base.parameters(), torch.empty(0)).device
    net.to(device)
    net.lineage = _lineage(base, reused, [s.name for s in head_specs], share)  # type: ignore[misc]
    if head_net is None:  # fit(seed=) draws these afresh, so one seed fixes the whole run
        net.lineage["untrained"] = [s.name for s in head_specs]
    if freeze is True:
        net.freeze(reused, bn_affine=bn_affine)
    elif freeze not in (None, False):
        net.freeze(freeze, bn_affine=bn_affine)
    if stop_gradient is not None:
        if stop_gradient not in reused:
            raise ConfigError(f"graft: stop_gradient={stop_gradient!r} is not among the reused layers "
                              f"({format_names(reused)}); gradients stop at a reused layer")
        net.freeze([*net.ancestors(stop_gradient), stop_gradient], bn_affine=bn_affine)
        net.lineage["stop_gradient"] = stop_gradient  # type: ignore[index]
    return net


def _as_network(base: Any) -> Network:
    if isinstance(base, (str, Path)):
        from graftnet.io.checkpoint import load_model

        return load_model(base)
    if not isinstance(base, Network):
        raise TypeError(f"graft needs a graftnet Network or the folder of a saved one, got {type(base).__name__}; "
                        f"bring a torch module into graftnet first (graftnet.io)")
    return base


def _bottom_run(base: Network, reuse: Selector) -> list[str]:
    """The selected layers plus the parameter-free layers they depend on, in network order.

    In a chain that is every layer up to the top selected one."""
    picked = set(base.select(reuse, what="reuse"))
    names = base.layer_names
    needed: set[str] = set()
    for name in picked:
        needed.update(base.ancestors(name))
    skipped = [n for n in names if n in needed and n not in picked and _has_weights(base.layer(n))]
    if skipped:
        top = max(names.index(n) for n in picked)
        raise ConfigError(
            f"reuse={reuse!r} leaves out {format_names(skipped)}, which {names[top]!r} depends on: a graft reuses a "
            f"bottom part of the network (each layer reads the ones below it), so every layer with weights that a "
            f"reused layer reads, directly or not, must be reused too. To keep everything up to {names[top]!r} use "
            f"at={names[top]!r} (or reuse=':{top + 1}' in a chain); layers are {format_names(names)}")
    return [n for n in names if n in picked or n in needed]


def _top_of(base: Network, reused: list[str], at: str | None, reuse: Selector) -> str:
    """The reused layer the head reads: ``at``, or the one reused layer nothing reused reads."""
    if at is not None:
        if at not in reused:
            raise ConfigError(f"graft: at={at!r} is not among the reused layers ({format_names(reused)})")
        return at
    kept = set(reused)
    ends = [n for n in reused if not any(r in kept for r in base.readers_of(n))]
    if len(ends) > 1:
        raise ConfigError(f"graft: reuse={reuse!r} keeps layers that end in {len(ends)} places ({format_names(ends)}); "
                          f"a head reads one: say which with at=..., or reuse fewer layers")
    return ends[0]


def _copy_spec(base: Network, name: str) -> LayerSpec:
    spec = base.spec_of(name)
    try:
        return layer_from_dict(spec.to_dict(), where=f"layer {name!r} of {base.name!r}")
    except (ConfigError, TypeError) as err:
        raise ConfigError(f"graft: layer {name!r} of {base.name!r} cannot be rebuilt from its spec ({err})") from None


def _head_specs(head: Any, reused: list[str], base: Network) -> list[LayerSpec]:
    if isinstance(head, Network):
        specs = [layer_from_dict(s.to_dict()) for s in head.specs]
    elif isinstance(head, LayerSpec):
        specs = [copy.deepcopy(head)]
    else:
        specs = [copy.deepcopy(s) for s in head]
        bad = [i for i, s in enumerate(specs) if not isinstance(s, LayerSpec)]
        if bad:
            raise ConfigError(f"graft: head[{bad[0]}] is a {type(specs[bad[0]]).__name__}; the head is a layer spec "
                              f"such as Dense(10), a list of them, or a Network")
    taken = set(reused)
    clashes = [s.name for s in specs if s.name in taken]
    if clashes:
        raise ConfigError(f"graft: head layer name {clashes[0]!r} is already used by a reused layer of "
                          f"{base.name!r}; rename it or leave it unnamed (reused: {format_names(reused)})")
    taken |= {s.name for s in specs if s.name}
    numbers = [int(m.group(1)) for n in taken if (m := re.fullmatch(r"hidden(\d+)", n or ""))]
    next_hidden = max(numbers, default=0) + 1
    for i, spec in enumerate(specs):
        if spec.name is not None or spec.type != "dense":
            continue
        if i == len(specs) - 1 and "outputs" not in taken:
            spec.name = "outputs"
        else:
            while f"hidden{next_hidden}" in taken:
                next_hidden += 1
            spec.name = f"hidden{next_hidden}"
        taken.add(spec.name)
    return specs


def _check_head_shapes(specs: list[LayerSpec], below: str, shape: tuple[int, ...]) -> None:
    for spec in specs:
        try:
            out = spec.output_shape(shape)
        except ShapeError as err:
            raise ShapeError(f"graft: head layer {spec.name or spec.type!r} cannot take the output of {below!r}, "
                             f"of shape {tuple(shape)}: {err}") from None
        below, shape = spec.name or spec.type, out


def _bring_weights(net: Network, base: Network, reused: list[str], share: bool) -> None:
    for layer in reused:
        if share:
            net._put(layer, base.layer(layer))
        else:
            net.layer(layer).load_state_dict(base.layer(layer).state_dict())  # copies


def _lineage(base: Network, reused: list[str], new: list[str], share: bool) -> dict[str, Any]:
    layers = {n: f"reused from {base.name}:{n}" for n in reused}
    layers.update({n: "new" for n in new})
    return {"base": base.name, "base_path": base.info.get("path"), "base_fingerprint": weights_fingerprint(base),
            "shared": share, "reused": {n: n for n in reused}, "new": list(new), "layers": layers,
            "base_lineage": base.lineage}


# ===================================================================== weights by hand
# Keras' names for a layer's arrays (in state-dict order); kernels are transposed between layouts.
_KERAS_NAMES = {"weight": "kernel", "bias": "bias"}
_KERAS_BN_NAMES = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean", "running_var": "moving_variance"}


def _same(t: torch.Tensor) -> torch.Tensor:
    return t


def _slots(model: Network, layer: str, layout: str) -> list[tuple[str, str, torch.Tensor, Any, Any]]:
    """(label, state key, target tensor, to_torch, from_torch) per array of ``layer`` in ``layout``."""
    if layout not in LAYOUTS:
        raise ConfigError(f"layout must be 'keras' (Dense kernel (inputs, units)) or 'torch' (weight (units, "
                          f"inputs)), got {layout!r}")
    module = model.layer(layer)
    kind = model.spec_of(layer).type
    state = [(k, v) for k, v in module.state_dict(keep_vars=True).items() if k != "num_batches_tracked"]
    if not state:
        raise ConfigError(f"layer {layer!r} ({kind}) has no weights")
    if layout == "torch":
        return [(key, key, tensor, _same, _same) for key, tensor in state]
    names = _KERAS_BN_NAMES if isinstance(module, BatchNormModule) else _KERAS_NAMES
    slots = []
    for key, tensor in state:
        if key == "weight" and kind in ("dense", "conv2d"):  # kernel (in, out) / HWIO <-> weight (out, in) / OIHW
            slots.append((names[key], key, tensor, kernel_to_torch, kernel_from_torch))
        else:
            slots.append((names.get(key, key), key, tensor, _same, _same))
    return slots


def set_weights(
    model: Network,
    weights: Mapping[str, Any] | str,
    values: Sequence[Any] | Mapping[str, Any] | None = None,
    *,
    layout: str = "keras",
) -> Network:
    """Assign weights by hand, from arrays: ``{"hidden1": [kernel, bias]}`` or ``("hidden1", [kernel, bias])``.

    ``layout="keras"``: a Dense kernel is (inputs, units), a Conv2d kernel (kh, kw, in, out),
    BatchNorm takes [gamma, beta, moving_mean, moving_variance]; ``layout="torch"``: the
    arrays of the layer's state dict in order (weight (units, inputs), bias, ...). A layer's
    arrays may also be given by name (``{"kernel": ..., "bias": ...}``). Every shape is
    checked before anything is written: all or nothing.

    >>> net = Network([Dense(3, name="hidden1")], input_shape=(2,))
    >>> _ = set_weights(net, "hidden1", [[[1, 2, 3], [4, 5, 6]], [7, 8, 9]])
    >>> net(torch.tensor([[10.0, 11.0]])).tolist()
    [[61.0, 83.0, 105.0]]
    """
    if isinstance(weights, str):
        if values is None:
            raise ConfigError(f"set_weights(model, {weights!r}, values): the arrays of layer {weights!r} are missing")
        weights = {weights: values}
    elif values is not None:
        raise ConfigError("set_weights: give either a mapping {layer: arrays} or a layer name and its arrays")
    if not isinstance(weights, Mapping):
        raise ConfigError(f"set_weights: expected a mapping of layer names to arrays, got {type(weights).__name__}")
    staged: list[tuple[torch.Tensor, torch.Tensor]] = []
    for layer, arrays in weights.items():
        staged += _stage_layer(model, str(layer), arrays, layout)
    with torch.no_grad():
        for target, value in staged:
            target.copy_(value)
    _mark_set(model, [str(layer) for layer in weights])
    return model


def _mark_set(model: Network, layers: Sequence[str] | None = None) -> None:
    """These layers (None: all) now hold chosen weights: ``fit(seed=)`` must not draw them afresh."""
    fresh = model.lineage.get("untrained") if isinstance(model.lineage, dict) else None
    if fresh:
        left = [name for name in fresh if layers is not None and name not in layers]
        if left:
            model.lineage["untrained"] = left
        else:
            del model.lineage["untrained"]


def _stage_layer(model: Network, layer: str, arrays: Any, layout: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    slots = _slots(model, layer, layout)
    labels = [s[0] for s in slots]
    if isinstance(arrays, Mapping):
        unknown = [k for k in arrays if k not in labels and k not in [s[1] for s in slots]]
        if unknown:
            raise ConfigError(f"set_weights: layer {layer!r} has no array {unknown[0]!r} in {layout} layout; it has "
                              f"{', '.join(labels)}.{did_you_mean(str(unknown[0]), labels)}")
        by_name = {**{s[1]: arrays[s[1]] for s in slots if s[1] in arrays},
                   **{s[1]: arrays[s[0]] for s in slots if s[0] in arrays}}
        missing = [s[0] for s in slots if s[1] not in by_name]
        if missing:
            raise ConfigError(f"set_weights: layer {layer!r} needs {', '.join(labels)}; missing {', '.join(missing)}")
        arrays = [by_name[s[1]] for s in slots]
    arrays = list(arrays)
    if len(arrays) != len(slots):
        raise ShapeError(f"set_weights: layer {layer!r} takes {len(slots)} arrays in {layout} layout "
                         f"({', '.join(labels)}), got {len(arrays)}")
    staged = []
    for (label, key, target, to_torch, _), array in zip(slots, arrays, strict=True):
        value = torch.as_tensor(np.asarray(array), dtype=target.dtype)
        converted = to_torch(value) if value.ndim == target.ndim else value
        if tuple(converted.shape) != tuple(target.shape):
            raise ShapeError(_shape_message(model, layer, label, key, tuple(value.shape), layout))
        staged.append((target, converted.to(target.device).contiguous()))
    return staged


def _shape_message(model: Network, layer: str, label: str, key: str, given: tuple[int, ...], layout: str) -> str:
    shapes = {lay: next(tuple(from_torch(t).shape) for _, k, t, _, from_torch in _slots(model, layer, lay) if k == key)
              for lay in LAYOUTS}
    other = "torch" if layout == "keras" else "keras"
    hint = f"; that is its shape in the {other} layout: pass layout={other!r}" if given == shapes[other] else ""
    return (f"set_weights: layer {layer!r} {label} has shape {given} but {layer!r} expects {shapes[layout]} "
            f"in {layout} layout{hint}")


def get_weights(model: Network, layer: str, *, layout: str = "keras") -> list[np.ndarray]:
    """The arrays of ``layer`` (copies) in ``layout``, in the order ``set_weights`` takes them.

    >>> [w.shape for w in get_weights(Network.mlp(2, [3], 1), "hidden1")]
    [(2, 3), (3,)]
    """
    return [from_torch(t.detach()).to("cpu").numpy().copy() for _, _, t, _, from_torch in _slots(model, layer, layout)]


# ===================================================================== freezing
def freeze_below(model: Network, name: str, *, bn_affine: bool = False) -> Network:
    """A stop-gradient boundary: freeze every layer up to and including ``name``.

    Layers above keep their state. Returns ``model``.

    >>> freeze_below(Network.mlp(4, [3, 3, 3], 2), "hidden2").frozen
    ['hidden1', 'hidden2']
    """
    index = model.index(name)
    return model.freeze(model.layer_names[:index + 1], bn_affine=bn_affine)


def unfreeze_top(model: Network, k: int, within: Selector = None) -> list[str]:
    """Unfreeze the top ``k`` layers with weights among ``within`` (default: the frozen ones).

    Parameter-free layers of ``within`` above the lowest one unfrozen are unfrozen too.
    Returns the names unfrozen, bottom to top.

    >>> net = Network.mlp(4, [3, 3, 3], 2).freeze(":-1")
    >>> unfreeze_top(net, 1), net.frozen
    (['hidden3'], ['hidden1', 'hidden2'])
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"unfreeze_top: k must be a whole number >= 1, got {k!r}")
    if within is None:
        pool = model.frozen
        if not pool:
            raise ConfigError(f"unfreeze_top: no layer of {model.name!r} is frozen; layers are "
                              f"{format_names(model.layer_names)}")
    else:
        pool = model.select(within, what="within")
    weighted = [n for n in pool if _has_weights(model.layer(n))]
    if not weighted:
        raise ConfigError(f"unfreeze_top: no layer with weights among {format_names(pool)}")
    lowest = model.index(weighted[-min(k, len(weighted))])
    chosen = [n for n in pool if model.index(n) >= lowest]
    model.unfreeze(chosen)
    return chosen


# ===================================================================== stages and plans
_FIT_KEYS = ("optimizer", "lr", "schedule", "batch_size", "lr_mult", "layer_decay")
_STAGE_KEYS = ("epochs", "train", *_FIT_KEYS, "bn_affine", "name")
_PLAN_KEYS = ("stages", "stage", "gradual", *_FIT_KEYS, "seed", "data", "name")
_GRADUAL_KEYS = ("reused", "head", "epochs_per_stage", "k", "lr", "lr_decay", "stages")
_NOT_FIT_KWARGS = ("epochs", "history", "stage", "resume", "checkpoint")


def _check_keys(d: Mapping[str, Any], valid: Sequence[str], where: str) -> None:
    if not isinstance(d, Mapping):
        raise ConfigError(f"{where}: expected a table, got {d!r}")
    unknown = [k for k in d if k not in valid]
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; valid keys are {', '.join(valid)}."
                          f"{did_you_mean(str(unknown[0]), valid)}")


def _plain(value: Any) -> Any:
    """JSON-able form of a stage setting (specs become dicts)."""
    if isinstance(value, (OptimizerSpec, Schedule)):
        return value.to_dict()
    if isinstance(value, tuple):
        return list(value)
    return value


@dataclass
class Stage:
    """One stage of a fine-tuning plan: which layers train, for how long, and how.

    ``train``: ``"all"``, a selector, or a list of selectors (their union). Every other
    layer with weights is frozen, and so is every parameter-free layer below the lowest
    one that trains (so frozen dropout is off and the frozen prefix can be cached).
    Settings left ``None`` come from the plan or from ``plan.fit(...)``'s arguments.

    >>> Stage(4, train="outputs").to_dict()["train"]
    'outputs'
    """

    epochs: int
    train: Selector | list[Any] = "all"
    optimizer: OptimizerSpec | str | dict[str, Any] | None = None
    lr: float | None = None
    schedule: Schedule | str | dict[str, Any] | None = None
    batch_size: int | None = None
    lr_mult: dict[str, float] | None = None
    layer_decay: float | None = None
    bn_affine: bool = False
    name: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 0:
            raise ConfigError(f"Stage: epochs must be a whole number >= 0, got {self.epochs!r}")
        if self.batch_size is not None and (isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int)
                                            or self.batch_size < 1):
            raise ConfigError(f"Stage: batch_size must be a whole number >= 1, got {self.batch_size!r}")
        if self.lr is not None and (isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or self.lr <= 0):
            raise ConfigError(f"Stage: lr must be a number > 0, got {self.lr!r}")
        if self.optimizer is not None:
            optimizer_from(self.optimizer)  # an unknown optimizer fails now, not at stage 3
        if self.schedule is not None:
            schedule_from(self.schedule)

    def layers(self, model: Network) -> list[str]:
        """The names of the layers this stage trains, in network order."""
        if isinstance(self.train, (list, tuple)):
            picked: set[str] = set()
            for item in self.train:
                picked |= set(model.select(item, what="train"))
            return [n for n in model.layer_names if n in picked]
        return model.select(self.train, what="train")

    def apply(self, model: Network) -> list[str]:
        """Freeze ``model`` for this stage; returns the layers that train."""
        trained = self.layers(model)
        if not any(_has_weights(model.layer(n)) for n in trained):
            raise ConfigError(f"stage {self.name or ''!r}: train={self.train!r} selects {format_names(trained)}, "
                              f"none of which has weights; layers are {format_names(model.layer_names)}")
        lowest = min(model.index(n) for n in trained)
        model.unfreeze("all")
        frozen = [n for i, n in enumerate(model.layer_names)
                  if n not in trained and (_has_weights(model.layer(n)) or i < lowest)]
        if frozen:
            model.freeze(frozen, bn_affine=self.bn_affine)
        return trained

    def overrides(self) -> dict[str, Any]:
        """The ``train.fit`` arguments this stage sets."""
        return {k: getattr(self, k) for k in _FIT_KEYS if getattr(self, k) is not None}

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"epochs": self.epochs, "train": _plain(self.train)}
        out.update({k: _plain(v) for k, v in self.overrides().items()})
        if self.bn_affine:
            out["bn_affine"] = True
        if self.name:
            out["name"] = self.name
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "stage") -> Stage:
        _check_keys(d, _STAGE_KEYS, where)
        if "epochs" not in d:
            raise ConfigError(f"{where}: 'epochs' is missing; a stage needs epochs (and usually train = \"...\")")
        try:
            return cls(**dict(d))
        except ConfigError as err:
            raise ConfigError(f"{where}: {err}") from None


class FineTune:
    """A staged fine-tuning plan: a list of :class:`Stage` run one after the other.

    Args:
        stages: the stages.
        optimizer, lr, schedule, batch_size, lr_mult, layer_decay: defaults for every stage
            (``plan.fit``'s keyword arguments override them, a stage's own settings
            override both).
        seed: the plan's seed (stage i trains with ``seed + i``).
        data: the dataset a recipe names (used by the command line).

    >>> plan = FineTune([Stage(4, train="outputs"), Stage(16, train="all", lr=1e-4)])
    >>> history = plan.fit(model_b, task_b, optimizer=SGD(lr=1e-3))      # doctest: +SKIP
    >>> history["stage"][:5]                                              # doctest: +SKIP
    ['stage-1', 'stage-1', 'stage-1', 'stage-1', 'stage-2']
    """

    def __init__(self, stages: Sequence[Stage] = (), *, gradual: Mapping[str, Any] | None = None,
                 seed: int | None = None, data: str | None = None, name: str | None = None,
                 **defaults: Any) -> None:
        _check_keys(defaults, _FIT_KEYS, "FineTune")
        stages = list(stages)
        if bool(stages) == bool(gradual):
            raise ConfigError("FineTune needs either a list of stages or a gradual-unfreezing setting "
                              "(FineTune.gradual(...)), not both and not neither")
        bad = [i for i, s in enumerate(stages) if not isinstance(s, Stage)]
        if bad:
            raise ConfigError(f"FineTune: stages[{bad[0]}] is a {type(stages[bad[0]]).__name__}, expected Stage(...)")
        if defaults.get("optimizer") is not None:
            optimizer_from(defaults["optimizer"])
        self.stages = stages
        self.gradual_settings = dict(gradual) if gradual else None
        self.seed, self.data, self.name = seed, data, name
        self.defaults = {k: v for k, v in defaults.items() if v is not None}

    # ------------------------------------------------------------ building
    @classmethod
    def gradual(cls, reused: Selector = ":-1", head: Selector = "outputs", epochs_per_stage: int = 2, *, k: int = 1,
                lr: float | None = None, lr_decay: float = 1.0, stages: int | None = None,
                **defaults: Any) -> FineTune:
        """Gradual unfreezing: train ``head`` alone, then each stage unfreezes the top ``k``
        more reused layers (with weights), until all of ``reused`` trains (or ``stages``
        stages in all). Stage j trains at ``lr * lr_decay**j``.

        >>> plan = FineTune.gradual(reused=":-1", head="outputs", epochs_per_stage=2, lr=1e-3, lr_decay=0.5)
        >>> [s.name for s in plan.expand(Network.mlp(4, [3, 3], 2)).stages]
        ['head', 'top1', 'top2']
        """
        settings = {"reused": reused, "head": head, "epochs_per_stage": epochs_per_stage, "k": k, "lr": lr,
                    "lr_decay": lr_decay, "stages": stages}
        _check_gradual(settings)
        return cls(gradual={k_: v for k_, v in settings.items() if v is not None}, **defaults)

    def expand(self, model: Network) -> FineTune:
        """The concrete plan for ``model`` (a gradual plan becomes its list of stages)."""
        if self.gradual_settings is None:
            return self
        g = {"k": 1, "lr_decay": 1.0, **self.gradual_settings}
        head = model.select(g["head"], what="head")
        reused = [n for n in model.select(g["reused"], what="reused") if n not in head]
        weighted = [n for n in reused if _has_weights(model.layer(n))]
        n_stages = 1 + math.ceil(len(weighted) / g["k"])
        if g.get("stages"):
            n_stages = min(n_stages, g["stages"])
        stages = []
        for j in range(n_stages):
            top = weighted[len(weighted) - min(j * g["k"], len(weighted)):] if j else []
            lowest = model.index(top[0]) if top else None
            train = [n for n in reused if lowest is not None and model.index(n) >= lowest] + head
            lr = g["lr"] * g["lr_decay"] ** j if g.get("lr") is not None else None
            stages.append(Stage(g["epochs_per_stage"], train=[n for n in model.layer_names if n in train], lr=lr,
                                name="head" if j == 0 else f"top{len(top)}"))
        return FineTune(stages, seed=self.seed, data=self.data, name=self.name, **self.defaults)

    def to_dict(self) -> dict[str, Any]:
        """The recipe as a dict (``from_dict`` reads it back; TOML files hold the same keys)."""
        out: dict[str, Any] = {k: _plain(v) for k, v in self.defaults.items()}
        if self.gradual_settings is not None:
            out["gradual"] = dict(self.gradual_settings)
        else:
            out["stage"] = [s.to_dict() for s in self.stages]
        out.update({k: v for k, v in (("seed", self.seed), ("data", self.data), ("name", self.name)) if v is not None})
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "plan") -> FineTune:
        """A plan from a dict: ``{"stage": [{"epochs": 4, "train": "outputs"}, ...], "optimizer": ...}``.

        Unknown keys are errors that list the valid ones.
        """
        _check_keys(d, _PLAN_KEYS, source)
        d = dict(d)
        if "stage" in d and "stages" in d:
            raise ConfigError(f"{source}: give the stages as 'stage' ([[stage]] tables) or 'stages', not both")
        raw_stages = d.pop("stage", None) or d.pop("stages", None) or []
        if not isinstance(raw_stages, list):
            raise ConfigError(f"{source}: 'stage' must be a list of tables ([[stage]] in TOML), got {raw_stages!r}")
        stages = [Stage.from_dict(s, where=f"{source}: stage[{i}]") for i, s in enumerate(raw_stages)]
        gradual = d.pop("gradual", None)
        if gradual is not None:
            _check_keys(gradual, _GRADUAL_KEYS, f"{source}: gradual")
            _check_gradual(gradual, where=f"{source}: gradual")
        if not stages and gradual is None:
            raise ConfigError(f"{source}: no stages; add [[stage]] tables (epochs, train, ...) or a [gradual] table")
        try:
            return cls(stages, gradual=gradual, **d)
        except ConfigError as err:
            raise ConfigError(f"{source}: {err}") from None

    @classmethod
    def from_toml(cls, path: str | Path) -> FineTune:
        """A plan from a TOML recipe (see ``examples/recipes/book_ab_finetune.toml``)."""
        path = Path(path)
        try:
            with path.open("rb") as f:
                d = tomllib.load(f)
        except FileNotFoundError:
            raise ConfigError(f"no plan file at {path}") from None
        except IsADirectoryError:
            raise ConfigError(f"plan {path} is a folder; expected a TOML file") from None
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"{path} is not valid TOML: {err}") from None
        return cls.from_dict(d, source=str(path))

    def __repr__(self) -> str:
        if self.gradual_settings is not None:
            return f"FineTune.gradual({self.gradual_settings})"
        return f"FineTune([{', '.join(f'Stage({s.epochs}, train={s.train!r})' for s in self.stages)}])"

    # ------------------------------------------------------------ running
    def fit(self, model: Network, data: Dataset, *, checkpoint: str | Path | None = None, resume: bool = False,
            seed: int | None = None, verbose: bool | None = None, **fit_kwargs: Any) -> Any:
        """Run the stages on ``model``; returns one History with a ``stage`` column.

        Other keyword arguments go to ``train.fit`` for every stage (``optimizer``,
        ``batch_size``, ``cache``, ``callbacks``, ``device``, ...). With ``checkpoint`` the
        plan's state is written after every epoch, and ``resume=True`` continues an
        interrupted plan exactly (same stage, epoch, freeze state, optimizer, RNG).
        """
        from graftnet.train import History, _reporter

        if resume and checkpoint is None:
            raise ConfigError("FineTune.fit: resume=True needs checkpoint=DIR, the folder the plan saved its state in")
        clash = [k for k in fit_kwargs if k in _NOT_FIT_KWARGS]
        if clash:
            raise ConfigError(f"FineTune.fit: {clash[0]!r} is set by the plan (per stage), not by fit's arguments")
        plan = self.expand(model)
        say = _reporter(verbose)
        folder = Path(checkpoint) if checkpoint is not None else None
        state = _read_state(folder) if resume and folder is not None and (folder / PLAN_STATE).exists() else None
        if state is not None:
            _check_resumable(state, plan, data, folder)  # type: ignore[arg-type]
            history, first, seed = History.from_dict(state["history"]), int(state["completed"]), state["seed"]
            _load_resume_weights(model, folder, first, _started(state, folder, first))  # type: ignore[arg-type]
            say(f"plan: resuming from {folder} at stage {first + 1}/{len(plan.stages)}")
        else:
            history, first = History(), 0
            seed = seed if seed is not None else self.seed
            seed = seed if seed is not None else int(torch.randint(0, 2**31 - 1, (1,)))
            state = {"format": PLAN_FORMAT, "plan": _jsonable(plan.to_dict()), "seed": seed,
                     "data": data.train.fingerprint(), "completed": 0, "stages": [], "history": history.to_dict()}
        for i in range(first, len(plan.stages)):
            plan._run_stage(i, model, data, folder, resume, state, history, say, verbose, fit_kwargs)
            if history.stop_reason and history.stop_reason.startswith("loss became non-finite"):
                say(f"plan stopped in stage {i + 1}: {history.stop_reason}")
                break
        return history

    def _run_stage(self, i: int, model: Network, data: Dataset, folder: Path | None, resume: bool,
                   state: dict[str, Any], history: Any, say: Any, verbose: bool | None,
                   fit_kwargs: dict[str, Any]) -> None:
        from graftnet.train import fit

        stage = self.stages[i]
        name = stage.name or f"stage-{i + 1}"
        trained = stage.apply(model)
        kwargs = {**self.defaults, **fit_kwargs}
        if stage.optimizer is not None:
            kwargs.pop("lr", None)  # the stage's optimizer brings its own learning rate
        kwargs.update(stage.overrides())
        stage_dir = folder / f"stage-{i + 1}" if folder is not None else None
        partial = resume and _started(state, folder, i)
        if stage_dir is not None and not partial and (stage_dir / "spec.json").exists():
            shutil.rmtree(stage_dir)  # left by an earlier run of a plan in this folder: not this run's
        record = {"index": i, "name": name, "frozen": model.frozen, "trained": trained,
                  **_cache_record(model, kwargs)}
        if partial and len(state["stages"]) > i and _comparable(state["stages"][i]) != _comparable(record):
            raise CheckpointError(f"{folder}: stage {i + 1} was running with {state['stages'][i]} but resuming it "
                                  f"gives {record}; the model or the plan changed since the checkpoint")
        state["stages"] = state["stages"][:i] + [record]
        if folder is not None:
            _write_state(folder, state)
        frozen = format_names(model.frozen) if model.frozen else "none"
        say(f"stage {i + 1}/{len(self.stages)} {name!r}: {stage.epochs} epochs, training "
            f"{format_names(trained)}; frozen: {frozen}")
        fit(model, data, epochs=stage.epochs, seed=state["seed"] + i, checkpoint=stage_dir, resume=partial,
            history=history, stage=name, verbose=verbose, **kwargs)
        if folder is not None:
            from graftnet.io.checkpoint import save_model

            save_model(model, folder / "model", metadata={"plan_completed": i + 1})
            state.update(completed=i + 1, history=history.to_dict())
            _write_state(folder, state)


def _check_gradual(g: Mapping[str, Any], where: str = "FineTune.gradual") -> None:
    eps, k = g.get("epochs_per_stage", 2), g.get("k", 1)
    if isinstance(eps, bool) or not isinstance(eps, int) or eps < 0:
        raise ConfigError(f"{where}: epochs_per_stage must be a whole number >= 0, got {eps!r}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"{where}: k must be a whole number >= 1, got {k!r}")
    if g.get("lr_decay", 1.0) != 1.0 and g.get("lr") is None:
        raise ConfigError(f"{where}: lr_decay needs lr (the learning rate of the first stage)")
    n = g.get("stages")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ConfigError(f"{where}: stages must be a whole number >= 1, got {n!r}")


# ------------------------------------------------------------------ plan state on disk
def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


def _comparable(record: Mapping[str, Any]) -> dict[str, Any]:
    return _jsonable({k: record.get(k) for k in ("index", "frozen", "trained", "cache_cut", "cache_prefix")})


def _cache_record(model: Network, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Which prefix the cache will hold in this stage, and its fingerprint (spec + weights)."""
    if kwargs.get("cache", True) is False:
        return {"cache_cut": None, "cache_prefix": None}
    cut = cache_cut(model, None if kwargs.get("cache_views") else kwargs.get("augment"))
    if not cut:
        return {"cache_cut": None, "cache_prefix": None}
    prefix, _ = model.split(cut - 1)
    return {"cache_cut": model.layer_names[cut - 1], "cache_prefix": prefix_fingerprint(prefix)}


def _write_state(folder: Path, state: dict[str, Any]) -> None:
    from graftnet.io.checkpoint import atomic_write_text

    atomic_write_text(folder / PLAN_STATE, json.dumps(_jsonable(state), indent=1) + "\n")


def _read_state(folder: Path) -> dict[str, Any]:
    path = folder / PLAN_STATE
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path} is not valid JSON ({err}); the plan state is corrupt") from None
    if not isinstance(state, dict) or state.get("format") != PLAN_FORMAT:
        raise CheckpointError(f"{path} is not a graftnet fine-tuning plan state (format {PLAN_FORMAT!r})")
    return state


def _check_resumable(state: dict[str, Any], plan: FineTune, data: Dataset, folder: Path) -> None:
    saved, now = state["plan"], _jsonable(plan.to_dict())
    if saved != now:
        diff = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
        raise CheckpointError(f"{folder} holds another plan (differs in {', '.join(diff)}): saved {saved}, "
                              f"given {now}; resume with the same plan or use another checkpoint folder")
    if state["data"] != data.train.fingerprint():
        raise CheckpointError(f"{folder}: the plan was running on other training data than {data.name!r} "
                              f"(fingerprints differ); resume with the same data")


def _started(state: Mapping[str, Any], folder: Path | None, i: int) -> bool:
    """Whether this run of the plan began stage ``i`` and left a checkpoint of it."""
    from graftnet.io.checkpoint import find_checkpoint

    # find_checkpoint: also the stage-N.prev a save killed between its two renames leaves
    return (folder is not None and len(state["stages"]) > i
            and find_checkpoint(folder / f"stage-{i + 1}") is not None)


def _load_resume_weights(model: Network, folder: Path, first: int, partial: bool) -> None:
    """Put back the weights the plan had: mid-stage ones (train.fit restores them too, but the
    frozen-prefix cache is built before that), else those at the end of the last stage done."""
    from graftnet.io.checkpoint import load_model

    source = folder / f"stage-{first + 1}" if partial else folder / "model" if first > 0 else None
    if source is None:
        return
    saved = load_model(source)
    if saved.to_spec()["layers"] != model.to_spec()["layers"]:
        raise CheckpointError(f"{source} holds a network with layers {format_names(saved.layer_names)}, "
                              f"not {model.name!r} ({format_names(model.layer_names)}); resume with the same model")
    device = next(model.parameters()).device
    model.load_state_dict({k: v.to(device) for k, v in saved.state_dict().items()})
    _mark_set(model)  # trained weights: a stage's fit(seed=) must keep them
