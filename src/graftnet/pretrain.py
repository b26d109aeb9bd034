"""Pretraining when labels are few and no similar model exists (Hands-On ML, 11.2.7-11.2.8).

Every function here trains the hidden layers of a *tower* (a list of layer specs or a
:class:`~graftnet.network.Network`) without the target task's labels and returns a new
Network: the tower's layers with their pretrained weights, then one layer named
``outputs`` on top, so that it grafts and plugs into ``graftnet study`` like any trained
base (``graft``'s default ``reuse=":-1"`` and a study both reuse everything below the head)::

    >>> import graftnet as gn
    >>> mnist = gn.datasets.mnist()
    >>> tower = [gn.Flatten(), gn.Dense(300, "sigmoid"), gn.Dense(100, "sigmoid")]
    >>> base = gn.pretrain.greedy(tower, mnist, method="rbm", epochs=5)
    >>> model = gn.graft(base, head=gn.Dense(10))          # hidden1, hidden2 pretrained

Methods:

- :func:`greedy` -- greedy layer-wise unsupervised pretraining: each Dense layer in turn is
  trained as an ``"autoencoder"`` (tied or untied decoder; Conv2d layers as convolutional
  autoencoders whose decoder is the adjoint transposed convolution), a ``"denoising"``
  autoencoder (masking or Gaussian noise) or an ``"rbm"`` (contrastive divergence CD-k, Bernoulli units)
  on the output of the layers below it, which are frozen and computed once
  (:class:`~graftnet.cache.FeatureCache`). Its ``outputs`` is a placeholder (no label
  trained it); a report shows reconstructions as pictures.
- :func:`siamese` -- the book's auxiliary task: pairs of images, "same class?". One tower
  sees both images (shared weights); the two outputs are concatenated under a small head
  ending in one sigmoid unit. ``outputs`` is a placeholder (the pair head reads two towers).
- :func:`discriminate` -- real vs corrupted samples (a built-in corruption or the caller's),
  binary cross-entropy or a max-margin ranking cost; ``outputs`` is the trained real/corrupt
  unit.
- :func:`contrastive` -- SimCLR's NT-Xent over two augmented views (``graftnet.augment``),
  a current self-supervised method to measure the book's against; ``outputs`` is a placeholder.

**Why the siamese towers are one tower applied twice, in a loop of its own.** A graftnet
Network has one input and one module per named layer; sharing weights inside one graph
would need two names bound to one module, which a spec and a ``weights.safetensors`` file
cannot say (saved twice, loaded as two copies that drift apart). Running one tower on both
halves of a pair shares the weights by construction, keeps the tower a plain chain that
saves, loads, grafts and caches like any other, and is two lines of code
(:class:`Siamese`). ``share=False`` gives the notebook's two separate towers (DNN A and B).

Every function records its training in ``net.info["pretrain"]`` (method, settings, the
History as a dict), which ``save_model`` writes to ``metadata.json``; pass ``history=`` to
get the live :class:`~graftnet.train.History` (one row per epoch, ``stage`` naming the layer
or the task). ``seed`` makes a run reproducible on the CPU.
"""

from __future__ import annotations

import copy
import io
import json
import math
import os
import time
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from graftnet.data import Dataset, Split
from graftnet.errors import ConfigError, DataError, ShapeError, did_you_mean, format_names
from graftnet.layers import Dense, LayerSpec, make_activation
from graftnet.network import Network
from graftnet.optim import SGD, Adam, OptimizerSpec, optimizer_from
from graftnet.train import History

__all__ = [
    "CORRUPTIONS",
    "GREEDY_METHODS",
    "METHODS",
    "Siamese",
    "cd_gradient",
    "contrastive",
    "corrupt",
    "decoder_for",
    "discriminate",
    "greedy",
    "make_pairs",
    "nt_xent",
    "run_recipe",
    "siamese",
]

GREEDY_METHODS = ("autoencoder", "denoising", "rbm")
METHODS = (*GREEDY_METHODS, "siamese", "discriminate", "contrastive")
CORRUPTIONS = ("swap", "mask", "noise", "patch")
NOISES = ("mask", "gaussian")
# examples of the parameter-free layers greedy pretraining passes through (nothing to pretrain)
_PASS_THROUGH = ("flatten", "activation", "dropout", "alpha_dropout", "rescaling")

Data = torch.Tensor | np.ndarray | Split | Dataset
Say = Callable[[str], None]


# ===================================================================== inputs
def _as_x(value: Any, what: str) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(value)
    if not isinstance(value, torch.Tensor):
        raise DataError(f"{what}: expected a tensor or array of examples (N, ...), a Split or a Dataset; "
                        f"got {type(value).__name__}")
    if value.ndim < 2 or len(value) == 0:
        raise DataError(f"{what}: expected examples of shape (N, ...) with N >= 1, got shape {tuple(value.shape)}")
    if not value.is_floating_point():
        raise DataError(f"{what}: expected float inputs, got {value.dtype}; scale the data to floats first")
    return value.float()


def _unlabeled(data: Data, what: str = "unlabeled") -> tuple[torch.Tensor, torch.Tensor | None]:
    """(training inputs, validation inputs or None) of whatever the caller gave; labels are ignored."""
    if isinstance(data, Dataset):
        valid = data.valid.x if data.valid is not None and len(data.valid) else None
        return _as_x(data.train.x, f"{what} (dataset {data.name!r}, train)"), (
            None if valid is None else _as_x(valid, f"{what} (dataset {data.name!r}, valid)"))
    if isinstance(data, Split):
        return _as_x(data.x, what), None
    return _as_x(data, what), None


def _labeled(data: Data, labels: Any, what: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None,
                                                         torch.Tensor | None]:
    """(x, y, valid x, valid y) with class labels, for the pair task."""
    if isinstance(data, Dataset):
        if data.task == "regression":
            raise DataError(f"{what}: dataset {data.name!r} is a regression task; pairs need class labels")
        valid = data.valid if data.valid is not None and len(data.valid) else None
        return (_as_x(data.train.x, what), data.train.y.long(), None if valid is None else _as_x(valid.x, what),
                None if valid is None else valid.y.long())
    if isinstance(data, Split):
        return _as_x(data.x, what), data.y.long(), None, None
    if labels is None:
        raise DataError(f"{what}: pairs need class labels; pass a Dataset, a Split or labels=...")
    x, y = _as_x(data, what), torch.as_tensor(labels)
    if y.ndim != 1 or len(y) != len(x):
        raise DataError(f"{what}: labels must be (N,) with N = {len(x)} examples, got shape {tuple(y.shape)}")
    return x, y.long(), None, None


def _tower(layers: Sequence[LayerSpec] | Network, x: torch.Tensor, name: str,
           what: str = "the unlabeled data") -> Network:
    """A fresh Network for ``layers`` (specs are built for ``x``'s shape; a Network is copied)."""
    shape = tuple(x.shape[1:])
    if isinstance(layers, Network):
        if tuple(layers.input_shape) != shape:
            raise ShapeError(f"{what} has examples of shape {shape} but network {layers.name!r} "
                             f"expects {tuple(layers.input_shape)}")
        return copy.deepcopy(layers)
    specs = list(layers)
    bad = [i for i, s in enumerate(specs) if not isinstance(s, LayerSpec)]
    if bad or not specs:
        given = type(specs[bad[0]]).__name__ if bad else "an empty list"
        raise ConfigError(f"the tower is a Network or a list of layer specs such as Dense(100, 'elu'); got {given}")
    specs = [copy.deepcopy(s) for s in specs]
    taken = {s.name for s in specs if s.name}
    count = 0
    for spec in specs:  # unnamed Dense layers are hidden1, hidden2, ... as in Network.mlp
        if spec.name is None and spec.type == "dense":
            count += 1
            while f"hidden{count}" in taken:
                count += 1
            spec.name = f"hidden{count}"
    try:
        return Network(specs, shape, name=name)
    except ShapeError as err:
        raise ShapeError(f"{what} has examples of shape {shape}, which the tower cannot take: "
                         f"{err}") from None


def _with_head(tower: Network, head: Network | None, info: dict[str, Any], placeholder: bool) -> Network:
    """The tower's layers, then ``outputs`` (the trained head's weights, or a placeholder)."""
    from graftnet.transfer import graft

    if "outputs" in tower.layer_names:
        raise ConfigError(f"the tower already has a layer named 'outputs' (layers: {format_names(tower.layer_names)}); "
                          f"pretraining adds the head 'outputs' itself: leave the tower's top layer unnamed or "
                          f"rename it")
    units = head.layer("outputs").out_features if head is not None else 1
    net = graft(tower, reuse="all", head=Dense(units, name="outputs"), name=tower.name)
    if head is not None:
        net.layer("outputs").load_state_dict(head.layer("outputs").state_dict())
    net.lineage = None  # a pretrained base: nothing of it was grafted from another model
    net.info["pretrain"] = {**info, "head": "placeholder: no label trained it; graft and study replace it"
                            if placeholder else "trained by the pretraining task"}
    return net


def _optimizer(spec: OptimizerSpec | str | dict[str, Any] | None, lr: float | None, default: OptimizerSpec,
               params: Sequence[nn.Parameter]) -> torch.optim.Optimizer:
    opt = optimizer_from(spec if spec is not None else default, lr)
    return opt.build([{"params": list(params)}], torch.device("cpu") if not params else params[0].device)


def _batches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    perm = torch.randperm(n, generator=generator)
    for lo in range(0, n, batch_size):
        yield perm[lo:lo + batch_size]


def _check_loop(epochs: int, batch_size: int) -> None:
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ConfigError(f"epochs must be a whole number >= 1, got {epochs!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a whole number >= 1, got {batch_size!r}")


def _reporter(verbose: bool | None) -> Say:
    from graftnet.train import _reporter as reporter

    return reporter(verbose)


def _generator(seed: int | None) -> torch.Generator:
    if seed is not None:
        torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed if seed is not None else int(torch.randint(0, 2**31, (1,))))


def _row(history: History, stage: str, epoch: int, values: dict[str, float], seconds: float) -> dict[str, Any]:
    row = {"epoch": len(history) + 1, "stage": stage, "stage_epoch": epoch, **values, "seconds": round(seconds, 4)}
    history.epochs.append(row)
    return row


def _format(row: dict[str, Any]) -> str:
    parts = [f"{row['stage']} epoch {row['stage_epoch']}"]
    parts += [f"{k} {v:.4g}" for k, v in row.items() if isinstance(v, float) and k != "seconds"]
    return "  ".join(parts)


# ===================================================================== greedy layer-wise
class TiedDecoder(nn.Module):
    """The decoder of a tied autoencoder: ``x' = act(h W + b')`` with the encoder's own ``W``.

    ``weight`` is the transpose of the encoder's weight, a view of the same storage, so
    training the autoencoder trains one matrix; only the visible bias ``b'`` is its own.
    """

    def __init__(self, encoder: nn.Linear, activation: str | None) -> None:
        super().__init__()
        self.encoder = encoder  # registered: its weight is trained through this decoder too
        self.bias = nn.Parameter(torch.zeros(encoder.in_features))
        self.activation = make_activation(activation)

    @property
    def weight(self) -> torch.Tensor:
        return self.encoder.weight.t()  # (in, units), the encoder's (units, in) storage

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        x = F.linear(h, self.weight, self.bias)  # (B, units) -> (B, in)
        return x if self.activation is None else self.activation(x)


class _UntiedDecoder(nn.Module):
    def __init__(self, encoder: nn.Linear, activation: str | None) -> None:
        super().__init__()
        self.linear = nn.Linear(encoder.out_features, encoder.in_features)
        nn.init.xavier_uniform_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)
        self.activation = make_activation(activation)

    @property
    def weight(self) -> torch.Tensor:
        return self.linear.weight

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        x = self.linear(h)  # (B, units) -> (B, in)
        return x if self.activation is None else self.activation(x)


class ConvDecoder(nn.Module):
    """The decoder of a convolutional autoencoder layer: the transposed convolution that is
    the exact adjoint of the encoder's (same stride, padding, dilation), cropped to the
    encoder's input size (C, H, W), plus a bias per input channel.

    ``tied=True`` uses the encoder's own kernel (same storage); else a kernel of its own.
    """

    def __init__(self, encoder: nn.Conv2d, in_shape: Sequence[int], tied: bool, activation: str | None) -> None:
        super().__init__()
        self.encoder = encoder
        self.in_shape = tuple(int(s) for s in in_shape)  # (C, H, W) of the encoder's input
        self.own = None if tied else nn.Parameter(nn.init.xavier_uniform_(torch.empty_like(encoder.weight)))
        self.bias = nn.Parameter(torch.zeros(self.in_shape[0]))
        self.activation = make_activation(activation)
        left, _right, top, _bottom = getattr(encoder, "extra_pad", None) or (0, 0, 0, 0)
        self.offset = (encoder.padding[0] + top, encoder.padding[1] + left)  # where the input starts

    @property
    def weight(self) -> torch.Tensor:
        return self.encoder.weight if self.own is None else self.own

    def linear(self, h: torch.Tensor) -> torch.Tensor:
        """The adjoint of the encoder's convolution (no bias, no activation)."""
        enc = self.encoder
        full = F.conv_transpose2d(h, self.weight, None, stride=enc.stride, dilation=enc.dilation,
                                  groups=enc.groups)  # (B, C, padded H (or less), padded W)
        _, height, width = self.in_shape
        top, left = self.offset
        x = full[:, :, top:top + height, left:left + width]
        if x.shape[2] < height or x.shape[3] < width:  # input pixels no window reached: nothing flows back
            x = F.pad(x, (0, width - x.shape[3], 0, height - x.shape[2]))
        return x

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        x = self.linear(h) + self.bias[None, :, None, None]  # (B, filters, H', W') -> (B, C, H, W)
        return x if self.activation is None else self.activation(x)


def decoder_for(encoder: nn.Module, *, tied: bool = True, activation: str | None = None,
                in_shape: Sequence[int] | None = None) -> nn.Module:
    """A decoder that maps the Dense or Conv2d layer ``encoder``'s output back to its input.

    ``tied=True``: it uses the encoder's own weight (``encoder.weight.t()`` for Dense, the
    same kernel transposed for Conv2d: same storage, one matrix trained); ``tied=False``: a
    weight of its own. ``activation`` is the reconstruction's ("sigmoid" for inputs in
    [0, 1], None for unbounded ones). A Conv2d encoder needs ``in_shape``, its input (C, H, W).

    >>> enc = Network([Dense(3, "elu")], (4,)).layer("dense1")
    >>> decoder_for(enc).weight.data_ptr() == enc.weight.data_ptr()
    True
    """
    if isinstance(encoder, nn.Conv2d):
        if encoder.groups != 1 or in_shape is None:
            raise ConfigError("decoder_for: a Conv2d encoder needs groups=1 and in_shape=(C, H, W) of its input")
        return ConvDecoder(encoder, in_shape, tied, activation)
    if not isinstance(encoder, nn.Linear):
        raise ConfigError(f"decoder_for needs a Dense or Conv2d layer's module, got {type(encoder).__name__}")
    return TiedDecoder(encoder, activation) if tied else _UntiedDecoder(encoder, activation)


def cd_gradient(weight: torch.Tensor, visible_bias: torch.Tensor, hidden_bias: torch.Tensor, v0: torch.Tensor, *,
                k: int = 1, generator: torch.Generator | None = None, sample: bool = True,
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Contrastive divergence CD-k for a Bernoulli-Bernoulli RBM: the log-likelihood's
    approximate gradient ``(dW, db, dc)`` (to *ascend*) and the reconstruction ``v_k``.

    ``weight`` is (hidden, visible) as a Dense layer stores it; ``p(h=1|v) = sigmoid(v W^T + c)``,
    ``p(v=1|h) = sigmoid(h W + b)``. Each Gibbs step samples the hidden units (one uniform
    per hidden unit and example from ``generator``, in order; ``sample=False`` uses their
    probabilities, mean-field) and uses the visible probabilities, as Hinton's guide advises.
    With ``ph_k = p(h|v_k)``::

        dW = (ph_0^T v_0 - ph_k^T v_k) / N     db = mean(v_0 - v_k)     dc = mean(ph_0 - ph_k)
    """
    if k < 1:
        raise ConfigError(f"CD-k needs k >= 1 Gibbs steps, got k={k}")
    ph0 = torch.sigmoid(F.linear(v0, weight, hidden_bias))  # (N, H)
    ph, v = ph0, v0
    for _ in range(k):
        h = (torch.rand(ph.shape, generator=generator, dtype=ph.dtype) < ph).to(ph.dtype) if sample else ph
        v = torch.sigmoid(F.linear(h, weight.t(), visible_bias))  # (N, V): probabilities
        ph = torch.sigmoid(F.linear(v, weight, hidden_bias))
    n = len(v0)
    d_weight = (ph0.t() @ v0 - ph.t() @ v) / n  # (H, V)
    return d_weight, (v0 - v).mean(0), (ph0 - ph).mean(0), v


def _greedy_layers(net: Network, method: str) -> list[str]:
    """The Dense layers to pretrain, in order; anything else with weights is refused by name."""
    if not net.is_chain:
        raise ConfigError(f"greedy pretraining trains a chain of layers one at a time; network {net.name!r} is a "
                          f"graph (merges or branches); pretrain it with contrastive, discriminate or siamese")
    dense = []
    for name in net.layer_names:
        spec = net.spec_of(name)
        has_weights = any(True for _ in net.layer(name).parameters())
        if spec.type == "dense":
            if method == "rbm" and spec.activation_name != "sigmoid":
                raise ConfigError(f"method='rbm' needs Bernoulli hidden units: layer {name!r} is Dense with "
                                  f"activation {spec.activation_name!r}, but an RBM layer computes "
                                  f"p(h=1|v) = sigmoid(v W^T + c); use Dense(units, 'sigmoid'), or method="
                                  f"'autoencoder' for other activations")
            dense.append(name)
        elif spec.type == "conv2d" and method != "rbm":
            dense.append(name)  # a convolutional autoencoder layer
        elif has_weights:
            what = (f"a {spec.type} layer; method='rbm' trains Dense layers (Bernoulli RBMs) and the "
                    f"autoencoder methods Dense and Conv2d layers" if "conv" in spec.type else
                    f"a {spec.type} layer with weights, which greedy pretraining cannot train")
            raise ConfigError(f"greedy pretraining (method={method!r}) cannot pretrain layer {name!r}: it is {what}. "
                              f"Supported: dense (and, for autoencoders, conv2d) layers, with layers without "
                              f"weights ({', '.join(_PASS_THROUGH)}, pooling, ...) between them. Other towers can be "
                              f"pretrained with pretrain.contrastive, pretrain.discriminate or pretrain.siamese, "
                              f"which train any tower")
    if not dense:
        raise ConfigError(f"greedy pretraining found no Dense or Conv2d layer to pretrain in "
                          f"{format_names(net.layer_names)}")
    return dense


def _check_unit_range(x: torch.Tensor, what: str) -> None:
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        raise DataError(f"method='rbm' has Bernoulli visible units, which need inputs in [0, 1]; {what} range over "
                        f"[{lo:.4g}, {hi:.4g}]. Scale them to [0, 1] (e.g. pixels / 255, or min-max), or use "
                        f"method='autoencoder'")


def _in_unit_range(x: torch.Tensor) -> bool:
    return bool(x.min() >= 0.0) and bool(x.max() <= 1.0)


def _noisy(x: torch.Tensor, noise: str, level: float, generator: torch.Generator) -> torch.Tensor:
    if noise == "mask":
        keep = torch.rand(x.shape, generator=generator) >= level
        return x * keep
    return x + level * torch.randn(x.shape, generator=generator)


def greedy(
    layers: Sequence[LayerSpec] | Network,
    unlabeled: Data,
    method: str = "autoencoder",
    *,
    epochs: int = 5,
    batch_size: int = 128,
    optimizer: OptimizerSpec | str | dict[str, Any] | None = None,
    lr: float | None = None,
    tied: bool = True,
    noise: str = "mask",
    noise_level: float | None = None,
    k: int = 1,
    seed: int | None = None,
    history: History | None = None,
    report: str | os.PathLike | None = None,
    cache: Any = None,
    name: str = "pretrained",
    verbose: bool | None = None,
) -> Network:
    """Greedy layer-wise unsupervised pretraining of a tower's Dense (and Conv2d) layers.

    Each Dense layer in turn is trained to reconstruct its own input, which is the output
    of the layers below it; those are frozen and their output on the data is computed once
    (``cache``: a :class:`~graftnet.cache.FeatureCache`, default the process-wide one).

    Args:
        layers: the tower: layer specs (built for the data's shape) or a Network (copied).
            Dense layers are pretrained, and Conv2d layers too by the autoencoder methods;
            layers without weights (flatten, pooling, activation, dropout, ...) pass
            through; any other layer with weights is an error naming it.
        unlabeled: inputs (N, ...) as a tensor/array, a Split, or a Dataset (its labels are
            ignored; its validation split gives ``val_loss``).
        method: ``"autoencoder"``, ``"denoising"`` or ``"rbm"``.
        tied: autoencoders decode with the encoder's transposed weight (one matrix).
        noise / noise_level: for ``"denoising"``: ``"mask"`` zeroes each input with
            probability ``noise_level`` (default 0.3), ``"gaussian"`` adds N(0, level^2)
            noise (default 0.1); the target is the clean input.
        k: Gibbs steps of CD-k for ``"rbm"`` (Dense layers with sigmoid units; the data
            in [0, 1]).
        optimizer / lr: default Adam(1e-3) for autoencoders, SGD(0.1, momentum 0.5) for RBMs.
        report: a folder for report.md, reconstructions.png, history.csv and pretrain.json.

    Returns the tower's layers with the pretrained weights, then a placeholder ``outputs``.
    The History has one row per layer and epoch: ``stage`` is the layer, ``loss`` the mean
    squared reconstruction error per input (``val_loss`` on the validation data).

    >>> base = greedy([Flatten(), Dense(100, "elu"), Dense(30, "elu")], mnist, method="denoising")
    >>> graft(base, head=Dense(10)).layer_names
    ['flatten', 'hidden1', 'hidden2', 'outputs']
    """
    if method not in GREEDY_METHODS:
        raise ConfigError(f"unknown greedy method {method!r}; expected one of {', '.join(GREEDY_METHODS)}"
                          f"{did_you_mean(method, GREEDY_METHODS)}")
    if noise not in NOISES:
        raise ConfigError(f"unknown noise {noise!r}; denoising autoencoders take {' or '.join(NOISES)}")
    _check_loop(epochs, batch_size)
    level = noise_level if noise_level is not None else (0.3 if noise == "mask" else 0.1)
    if method == "denoising" and not (level > 0 and (noise == "gaussian" or level < 1)):
        raise ConfigError(f"noise_level must be in (0, 1) for masking and > 0 for Gaussian noise, got {level!r}")
    x, vx = _unlabeled(unlabeled)
    generator = _generator(seed)  # before the tower is built: the seed fixes its initial weights too
    net = _tower(layers, x, name)
    dense = _greedy_layers(net, method)
    if method == "rbm":
        _check_unit_range(x, "the unlabeled inputs")
    from graftnet import cache as cache_mod

    store = cache if isinstance(cache, cache_mod.FeatureCache) else cache_mod.default_cache()
    say = _reporter(verbose)
    history = history if history is not None else History()
    device = torch.device("cpu")
    train_split, valid_split = Split(x, torch.zeros(len(x))), (None if vx is None else Split(vx, torch.zeros(len(vx))))
    decoders: dict[str, nn.Module] = {}
    final: dict[str, dict[str, float]] = {}
    for name_ in dense:
        i = net.index(name_)
        net.unfreeze()
        if i:
            net.freeze(net.layer_names[:i])
            lower, _ = net.split(i - 1)
            hx = store.features(lower, train_split, device=device)  # (N, in): the frozen layers, once
            hv = None if valid_split is None else store.features(lower, valid_split, device=device)
        else:
            hx, hv = x, vx
        encoder = net.layer(name_)
        if method == "rbm":
            _check_unit_range(hx, f"the inputs of layer {name_!r}")
            decoders[name_], final[name_] = _train_rbm(encoder, hx, hv, name_, epochs, batch_size, optimizer, lr, k,
                                                       generator, history, say)
        else:
            decoder = decoder_for(encoder, tied=tied, activation="sigmoid" if _in_unit_range(hx) else None,
                                  in_shape=tuple(hx.shape[1:]))
            decoders[name_] = decoder
            final[name_] = _train_autoencoder(encoder, decoder, hx, hv, name_, epochs, batch_size, optimizer, lr,
                                              method == "denoising", noise, level, generator, history, say)
    net.unfreeze()
    info = {"method": method, "layers": dense, "epochs": epochs, "batch_size": batch_size, "seed": seed,
            "final": final, "history": history.to_dict(),
            **({"tied": tied} if method != "rbm" else {"k": k}),
            **({"noise": noise, "noise_level": level} if method == "denoising" else {})}
    out = _with_head(net, None, info, placeholder=True)
    if report is not None:
        _greedy_report(Path(report), out, decoders, dense, (vx if vx is not None else x)[:10], history, info)
    return out


def _train_autoencoder(encoder: nn.Module, decoder: nn.Module, hx: torch.Tensor, hv: torch.Tensor | None, name: str,
                       epochs: int, batch_size: int, optimizer: Any, lr: float | None, denoise: bool, noise: str,
                       level: float, generator: torch.Generator, history: History, say: Say) -> dict[str, float]:
    params = list(dict.fromkeys([*encoder.parameters(), *decoder.parameters()]))
    opt = _optimizer(optimizer, lr, Adam(lr=1e-3), params)
    encoder.train()
    row: dict[str, Any] = {}
    for epoch in range(1, epochs + 1):
        t0, total = time.perf_counter(), torch.zeros(())
        for idx in _batches(len(hx), batch_size, generator):
            target = hx[idx]  # (B, in)
            given = _noisy(target, noise, level, generator) if denoise else target
            loss = F.mse_loss(decoder(encoder(given)), target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach() * len(idx)
        values = {"loss": (total / len(hx)).item()}
        if hv is not None:
            with torch.no_grad():
                values["val_loss"] = F.mse_loss(decoder(encoder(hv)), hv).item()
        row = _row(history, name, epoch, values, time.perf_counter() - t0)
        say(_format(row))
    return {k: v for k, v in row.items() if k in ("loss", "val_loss")}


class _RbmDecoder(nn.Module):
    """p(v=1|h) of a trained RBM layer, for reconstructions."""

    def __init__(self, encoder: nn.Linear, visible_bias: torch.Tensor) -> None:
        super().__init__()
        self.encoder = encoder
        self.bias = nn.Parameter(visible_bias.detach().clone(), requires_grad=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(F.linear(h, self.encoder.weight.t(), self.bias))


def _train_rbm(encoder: nn.Linear, hx: torch.Tensor, hv: torch.Tensor | None, name: str, epochs: int, batch_size: int,
               optimizer: Any, lr: float | None, k: int, generator: torch.Generator, history: History,
               say: Say) -> tuple[nn.Module, dict[str, float]]:
    # visible biases start at log(p / (1 - p)) of each input's mean activation (Hinton's guide, 8.1)
    p = hx.mean(0).clamp(1e-3, 1 - 1e-3)
    visible_bias = nn.Parameter(torch.log(p / (1 - p)))
    params = [encoder.weight, visible_bias, encoder.bias]
    opt = _optimizer(optimizer, lr, SGD(lr=0.1, momentum=0.5), params)
    row: dict[str, Any] = {}
    for epoch in range(1, epochs + 1):
        t0, total = time.perf_counter(), torch.zeros(())
        for idx in _batches(len(hx), batch_size, generator):
            v0 = hx[idx]  # (B, V)
            with torch.no_grad():
                d_weight, d_visible, d_hidden, _ = cd_gradient(encoder.weight, visible_bias, encoder.bias, v0, k=k,
                                                               generator=generator)
                # the monitor: how well one up-down pass reconstructs the batch
                ph0 = torch.sigmoid(F.linear(v0, encoder.weight, encoder.bias))
                recon = torch.sigmoid(F.linear(ph0, encoder.weight.t(), visible_bias))
                total += F.mse_loss(recon, v0) * len(idx)
            for param, grad in zip(params, (d_weight, d_visible, d_hidden)):
                param.grad = -grad  # the optimizer descends; CD gives the ascent direction
            opt.step()
        values = {"loss": (total / len(hx)).item()}
        if hv is not None:
            with torch.no_grad():
                ph = torch.sigmoid(F.linear(hv, encoder.weight, encoder.bias))
                recon = torch.sigmoid(F.linear(ph, encoder.weight.t(), visible_bias))
                values["val_loss"] = F.mse_loss(recon, hv).item()
        row = _row(history, name, epoch, values, time.perf_counter() - t0)
        say(_format(row))
    return _RbmDecoder(encoder, visible_bias), {k_: v for k_, v in row.items() if k_ in ("loss", "val_loss")}


@torch.no_grad()
def _stacked_reconstructions(net: Network, decoders: Mapping[str, nn.Module], dense: list[str],
                             x: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """For each depth: encode ``x`` up to that Dense layer, then decode back down through
    every decoder; (label, reconstruction shaped like ``x``)."""
    net.eval()
    rows = []
    for depth, top in enumerate(dense, start=1):
        h = net.intermediate(x, [top])[top]
        below = list(reversed(dense[:depth]))
        for k, name in enumerate(below):
            h = decoders[name](h)  # back to the input of layer `name`
            if k + 1 < len(below):  # undo the layers without weights in between (flatten, pooling, ...)
                for j in range(net.index(name) - 1, net.index(below[k + 1]), -1):
                    h = _fit_shape(h, net.shapes[j - 1])  # layer j's input shape
        rows.append((f"through {top}", h.reshape(x.shape)))
    return rows


def _fit_shape(h: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """``h`` as a batch of ``shape``: reshaped across a flatten, upsampled (nearest) across pooling."""
    shape = tuple(shape)
    if tuple(h.shape[1:]) == shape:
        return h
    if math.prod(h.shape[1:]) == math.prod(shape):
        return h.reshape(len(h), *shape)
    if h.ndim == 4 and len(shape) == 3 and h.shape[1] == shape[0]:
        return F.interpolate(h, size=shape[1:], mode="nearest")
    raise ShapeError(f"cannot map a reconstruction of shape {tuple(h.shape[1:])} to {shape}")


def _greedy_report(folder: Path, net: Network, decoders: Mapping[str, nn.Module], dense: list[str], x: torch.Tensor,
                   history: History, info: dict[str, Any]) -> None:
    from graftnet.io.checkpoint import atomic_write_text
    from graftnet.runs import plot_learning_curves

    folder.mkdir(parents=True, exist_ok=True)
    pictures = _is_picture(x)
    lines = [f"# Greedy layer-wise pretraining: {info['method']}", "",
             f"{len(dense)} layer(s) trained one at a time ({', '.join(dense)}), {info['epochs']} epoch(s) "
             f"each, batch {info['batch_size']}, seed {info['seed']}; the layers below each one frozen and their "
             f"output computed once.", "",
             "| layer | final loss (MSE per input) | final val_loss |", "|---|---|---|"]
    for name in dense:
        last = info["final"][name]
        val = f"{last['val_loss']:.5f}" if "val_loss" in last else "-"
        lines.append(f"| {name} | {last['loss']:.5f} | {val} |")
    try:
        rows = _stacked_reconstructions(net, decoders, dense, x) if pictures else []
    except ShapeError as err:  # a tower whose shapes cannot be walked back down
        rows, pictures = [], False
        lines += ["", f"(no pictures: {err})"]
    if pictures:
        _picture_grid(folder / "reconstructions.png", [("input", x), *rows])
        lines += ["", "Reconstructions (first row: inputs; row k: encoded through the first k layers, then decoded "
                  "back down through each layer's decoder):", "", "![reconstructions](reconstructions.png)"]
    elif not rows:
        lines += ["", f"(no pictures: examples of shape {tuple(x.shape[1:])} are not images)"]
    plot_learning_curves(history, folder / "loss.png", title=f"{info['method']}: reconstruction loss per layer")
    lines += ["", "![loss per layer](loss.png)", ""]
    atomic_write_text(folder / "report.md", "\n".join(lines))
    atomic_write_text(folder / "history.csv", history.to_csv())
    atomic_write_text(folder / "pretrain.json", json.dumps(info, indent=2))


def _is_picture(x: torch.Tensor) -> bool:
    return x.ndim == 4 and x.shape[1] in (1, 3) or (x.ndim == 2 and math.isqrt(x.shape[1]) ** 2 == x.shape[1])


def _picture_grid(path: Path, rows: list[tuple[str, torch.Tensor]]) -> Path:
    """A PNG with one row of images per (label, batch)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from graftnet.io.checkpoint import atomic_write_bytes

    n = len(rows[0][1])
    fig = Figure(figsize=(1.1 * n + 1.6, 1.15 * len(rows)), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(rows), n, squeeze=False)
    for r, (label, images) in enumerate(rows):
        for c in range(n):
            ax = axes[r][c]
            ax.imshow(_as_image(images[c]), cmap="gray" if _as_image(images[c]).ndim == 2 else None,
                      vmin=0.0, vmax=1.0)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r][0].set_ylabel(label, fontsize=7, rotation=0, ha="right", va="center")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    atomic_write_bytes(path, buffer.getvalue())
    return path


def _as_image(t: torch.Tensor) -> np.ndarray:
    t = t.detach().float().clamp(0, 1)
    if t.ndim == 1:
        side = math.isqrt(t.numel())
        return t.reshape(side, side).numpy()
    if t.shape[0] == 1:
        return t[0].numpy()
    return t.permute(1, 2, 0).numpy()


# ===================================================================== siamese
def make_pairs(labels: torch.Tensor, n: int, generator: torch.Generator, *,
               what: str = "the pair data") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` pairs of example indices, half of the same class and half of different classes
    (the odd one out is a "different" pair), in random order: ``(first, second, same)``
    with ``same`` 1.0 for same-class pairs. A same-class pair never pairs an example with
    itself; its class is drawn in proportion to the class sizes.

    Raises DataError when the labels hold a single class (no "different" pair exists) or no
    class has two examples (no "same" pair exists).

    >>> first, second, same = make_pairs(torch.tensor([0, 0, 1, 1]), 4, torch.Generator().manual_seed(0))
    >>> same.sum().item()
    2.0
    """
    return _PairSampler(labels, what).draw(n, generator)


class _PairSampler:
    """The per-class index tables of ``make_pairs``, built once per label tensor."""

    def __init__(self, labels: torch.Tensor, what: str) -> None:
        self.labels = labels.long().cpu()
        classes, counts = torch.unique(self.labels, return_counts=True)
        if len(classes) < 2:
            raise DataError(f"{what}: every example has class {int(classes[0]) if len(classes) else '-'} "
                            f"({len(self.labels)} examples); 'same class?' pairs need at least 2 classes, else no "
                            f"'different' pair can be drawn")
        if not bool((counts >= 2).any()):
            raise DataError(f"{what}: no class has 2 examples ({len(self.labels)} examples, {len(classes)} classes); "
                            f"'same class?' pairs need a class with at least 2 examples")
        self.order = torch.argsort(self.labels, stable=True)  # example indices grouped by class
        self.counts = counts
        self.starts = torch.cumsum(counts, 0) - counts
        self.eligible = (counts >= 2).nonzero().flatten()
        self.weights = counts[self.eligible].double()

    def draw(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n_same = n // 2
        # same: a class, then two distinct members of it
        cls = self.eligible[torch.multinomial(self.weights, n_same, replacement=True, generator=generator)]
        size = self.counts[cls]
        a = (torch.rand(n_same, generator=generator) * size).long().clamp_max(size - 1)
        b = (torch.rand(n_same, generator=generator) * (size - 1)).long().clamp_max(size - 2)
        b = b + (b >= a).long()  # skip a itself
        same_first, same_second = self.order[self.starts[cls] + a], self.order[self.starts[cls] + b]
        # different: uniform pairs, keeping those whose classes differ, until there are enough
        n_diff, firsts, seconds, have = n - n_same, [], [], 0
        while have < n_diff:
            i = torch.randint(0, len(self.labels), (2 * n_diff + 16,), generator=generator)
            j = torch.randint(0, len(self.labels), (2 * n_diff + 16,), generator=generator)
            keep = self.labels[i] != self.labels[j]
            firsts.append(i[keep])
            seconds.append(j[keep])
            have += int(keep.sum())
        first = torch.cat([same_first, torch.cat(firsts)[:n_diff]])
        second = torch.cat([same_second, torch.cat(seconds)[:n_diff]])
        same = torch.cat([torch.ones(n_same), torch.zeros(n_diff)])
        perm = torch.randperm(n, generator=generator)
        return first[perm], second[perm], same[perm]


class Siamese(nn.Module):
    """Two images in, one logit out ("same class?"): the tower runs on both images, the two
    outputs are concatenated (B, 2 * d) and a small head ends in one unit (sigmoid in the loss).

    With ``second`` None (the default) both images go through the very same tower: one set
    of weights. ``second`` (a tower of the same shape) gives two towers, as the book's
    notebook builds DNN A and DNN B.
    """

    def __init__(self, tower: Network, head: Network, second: Network | None = None) -> None:
        super().__init__()
        self.tower, self.head = tower, head
        self.second = second

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        other = self.tower if self.second is None else self.second
        joined = torch.cat([self.tower(a), other(b)], dim=1)  # (B, d) + (B, d) -> (B, 2d)
        return self.head(joined).squeeze(1)  # (B,) logits


def _pair_head(width: int, hidden: int) -> Network:
    layers: list[LayerSpec] = [Dense(hidden, "elu", init="he_normal", name="pair_hidden")] if hidden else []
    return Network([*layers, Dense(1, init="he_normal", name="outputs")], (2 * width,), name="pair-head")


def _flat_width(tower: Network, what: str) -> int:
    shape = tower.output_shape
    if len(shape) != 1:
        raise ShapeError(f"{what}: the tower's output has shape {tuple(shape)}; it must be flat (features,) to be "
                         f"concatenated: end the tower with Flatten or a Dense layer")
    return int(shape[0])


def siamese(
    tower: Sequence[LayerSpec] | Network,
    data: Data,
    *,
    labels: Any = None,
    epochs: int = 10,
    steps_per_epoch: int | None = None,
    batch_size: int = 500,
    head_units: int = 10,
    share: bool = True,
    optimizer: OptimizerSpec | str | dict[str, Any] | None = None,
    lr: float | None = None,
    valid_pairs: int = 2000,
    seed: int | None = None,
    history: History | None = None,
    name: str = "siamese",
    verbose: bool | None = None,
    on_epoch: Callable[[int, Network], Any] | None = None,
) -> Network:
    """Pretrain ``tower`` on "are these two examples of the same class?" (the book's exercise 10).

    Each step draws ``batch_size`` fresh pairs (half same class, half different) from the
    training data; an epoch is ``steps_per_epoch`` steps (default ``len(train) // batch_size``,
    the notebook's 110 for 55,000 images and batches of 500). The two tower outputs are
    concatenated under ``head_units`` ELU units (the notebook's 10; 0 for none) and one
    sigmoid unit, trained with binary cross-entropy. Default optimizer: the notebook's
    Nesterov momentum SGD(lr=0.01, momentum=0.95). A Dataset's validation split gives
    ``val_loss`` / ``val_accuracy`` on ``valid_pairs`` fixed pairs.

    ``on_epoch(epoch, base)``, if given, is called after every epoch with a copy of the base
    as it stands (what this function would return had it stopped there), e.g. to measure
    how the downstream accuracy grows with pair training; it does not change the training.

    Returns the tower's layers (pretrained), then a placeholder ``outputs``.

    >>> base = siamese(Network.mlp((1, 28, 28), [100] * 5, 1, activation="elu").specs[:-1], mnist, epochs=10)
    """
    _check_loop(epochs, batch_size)
    x, y, vx, vy = _labeled(data, labels, "siamese pairs")
    generator = _generator(seed)
    net = _tower(tower, x, name, "the pair data")
    width = _flat_width(net, "siamese")
    sampler = _PairSampler(y, "the training data")  # one class, or no class with 2 examples: an error now
    head = _pair_head(width, head_units)
    second = None if share else Network.from_spec(net.to_spec())  # the notebook's DNN B: a tower of its own
    model = Siamese(net, head, second)
    opt = _optimizer(optimizer, lr, SGD(lr=0.01, momentum=0.95, nesterov=True), list(model.parameters()))
    steps = steps_per_epoch or max(1, len(x) // batch_size)
    fixed = None
    if vx is not None and valid_pairs:
        fixed = make_pairs(vy, valid_pairs, torch.Generator().manual_seed(12345), what="the validation data")
    say, history = _reporter(verbose), history if history is not None else History()
    row: dict[str, Any] = {}

    def info(done: int, last: dict[str, Any]) -> dict[str, Any]:
        return {"method": "siamese", "epochs": done, "steps_per_epoch": steps, "batch_size": batch_size,
                "head_units": head_units, "shared_towers": share, "seed": seed,
                "final": {k: v for k, v in last.items() if k in ("loss", "accuracy", "val_loss", "val_accuracy")},
                "history": history.to_dict()}

    for epoch in range(1, epochs + 1):
        t0, total, correct = time.perf_counter(), torch.zeros(()), torch.zeros(())
        model.train()
        for _ in range(steps):
            i, j, same = sampler.draw(batch_size, generator)
            logits = model(x[i], x[j])  # (B,)
            loss = F.binary_cross_entropy_with_logits(logits, same)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach()
            correct += ((logits.detach() > 0) == (same > 0.5)).float().mean()
        values = {"loss": (total / steps).item(), "accuracy": (correct / steps).item()}
        if fixed is not None:
            values.update(_pair_scores(model, vx, *fixed))
        row = _row(history, "siamese", epoch, values, time.perf_counter() - t0)
        say(_format(row))
        if on_epoch is not None:
            with torch.random.fork_rng(devices=[]):  # whatever the callback draws, training goes on the same
                on_epoch(epoch, _with_head(copy.deepcopy(net), None, info(epoch, row), placeholder=True))

    return _with_head(net, None, info(epochs, row), placeholder=True)


@torch.no_grad()
def _pair_scores(model: Siamese, x: torch.Tensor, i: torch.Tensor, j: torch.Tensor,
                 same: torch.Tensor) -> dict[str, float]:
    model.eval()
    try:
        logits = torch.cat([model(x[i[s:s + 2048]], x[j[s:s + 2048]]) for s in range(0, len(i), 2048)])
    finally:
        model.train()
    return {"val_loss": F.binary_cross_entropy_with_logits(logits, same).item(),
            "val_accuracy": ((logits > 0) == (same > 0.5)).float().mean().item()}


# ===================================================================== real vs corrupted
def corrupt(x: torch.Tensor, kind: str, rate: float, generator: torch.Generator) -> torch.Tensor:
    """A corrupted copy of the batch ``x`` (B, ...):

    - ``"swap"``: each feature, with probability ``rate``, takes the value the same feature
      has in another example of the batch (the corrupted sample keeps realistic marginals);
    - ``"mask"``: each feature is zeroed with probability ``rate``;
    - ``"noise"``: Gaussian noise of standard deviation ``rate`` is added;
    - ``"patch"``: images (B, C, H, W) get a square of side ``rate * min(H, W)`` pasted
      from another image of the batch at a random place.
    """
    if kind not in CORRUPTIONS:
        raise ConfigError(f"unknown corruption {kind!r}; built in: {', '.join(CORRUPTIONS)}, or pass a callable "
                          f"(x, generator) -> corrupted x{did_you_mean(kind, CORRUPTIONS)}")
    batch = len(x)
    if kind == "mask":
        return x * (torch.rand(x.shape, generator=generator) >= rate)
    if kind == "noise":
        return x + rate * torch.randn(x.shape, generator=generator)
    other = (torch.arange(batch) + torch.randint(1, max(batch, 2), (batch,), generator=generator)) % batch
    if kind == "swap":
        chosen = torch.rand(x.shape, generator=generator) < rate
        return torch.where(chosen, x[other], x)
    if x.ndim != 4:
        raise ShapeError(f"corruption 'patch' pastes squares between images (B, C, H, W); got a batch of shape "
                         f"{tuple(x.shape)}; use 'swap', 'mask' or 'noise' for flat features")
    height, width = x.shape[2:]
    side = max(1, int(round(rate * min(height, width))))
    top = torch.randint(0, height - side + 1, (batch,), generator=generator)
    left = torch.randint(0, width - side + 1, (batch,), generator=generator)
    rows = torch.arange(height)[None, :, None]
    cols = torch.arange(width)[None, None, :]
    inside = ((rows >= top[:, None, None]) & (rows < (top + side)[:, None, None]) &
              (cols >= left[:, None, None]) & (cols < (left + side)[:, None, None]))  # (B, H, W)
    return torch.where(inside[:, None], x[other], x)


def discriminate(
    tower: Sequence[LayerSpec] | Network,
    unlabeled: Data,
    *,
    corruption: str | Callable[[torch.Tensor, torch.Generator], torch.Tensor] = "swap",
    rate: float = 0.3,
    loss: str = "bce",
    margin: float = 1.0,
    epochs: int = 10,
    batch_size: int = 128,
    optimizer: OptimizerSpec | str | dict[str, Any] | None = None,
    lr: float | None = None,
    seed: int | None = None,
    history: History | None = None,
    name: str = "discriminator",
    verbose: bool | None = None,
) -> Network:
    """Pretrain ``tower`` to tell real samples from corrupted ones.

    Each batch of real examples is corrupted (``corruption``: a name from ``CORRUPTIONS``
    with its ``rate``, see :func:`corrupt`, or a callable ``(x, generator) -> x'``) and a
    Dense(1) score on the tower tells them apart. ``loss="bce"``: binary cross-entropy on
    the score as a logit (real 1, corrupted 0); ``loss="margin"``: the max-margin ranking
    cost ``max(0, margin - s(real) + s(corrupted))`` of each real example against its own
    corrupted copy (as the book describes for real vs. corrupted sentences). ``accuracy``
    is the fraction classified right (bce) or ranked right (margin).

    Returns the tower's layers, then ``outputs``: the trained real-vs-corrupted score.
    """
    if loss not in ("bce", "margin"):
        raise ConfigError(f"unknown loss {loss!r}; discriminate takes 'bce' (binary cross-entropy) or 'margin' "
                          f"(max-margin ranking)")
    _check_loop(epochs, batch_size)
    if isinstance(corruption, str):
        corrupt(torch.zeros(2, 1, 4, 4), corruption, rate, torch.Generator())  # an unknown name fails now
        make_corrupt = lambda xb, g: corrupt(xb, corruption, rate, g)  # noqa: E731
    elif callable(corruption):
        make_corrupt = corruption
    else:
        raise ConfigError(f"corruption must be one of {', '.join(CORRUPTIONS)} or a callable (x, generator) -> x; "
                          f"got {type(corruption).__name__}")
    x, vx = _unlabeled(unlabeled)
    generator = _generator(seed)
    net = _tower(tower, x, name)
    width = _flat_width(net, "discriminate")
    head = Network([Dense(1, name="outputs")], (width,), name="score")
    params = [*net.parameters(), *head.parameters()]
    opt = _optimizer(optimizer, lr, Adam(lr=1e-3), params)
    say, history = _reporter(verbose), history if history is not None else History()

    def scores(xb: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        fake = make_corrupt(xb, g)
        if not isinstance(fake, torch.Tensor) or fake.shape != xb.shape:
            got = tuple(fake.shape) if isinstance(fake, torch.Tensor) else type(fake).__name__
            raise ShapeError(f"the corruption returned {got} for a batch of shape {tuple(xb.shape)}; it must return "
                             f"a tensor of the same shape")
        both = head(net(torch.cat([xb, fake]))).squeeze(1)  # (2B,) scores: real first
        return both[:len(xb)], both[len(xb):]

    def objective(real: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if loss == "bce":
            value = 0.5 * (F.binary_cross_entropy_with_logits(real, torch.ones_like(real)) +
                           F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)))
            right = 0.5 * ((real > 0).float().mean() + (fake <= 0).float().mean())
        else:
            value = F.relu(margin - real + fake).mean()
            right = (real > fake).float().mean()
        return value, right

    fixed_g = torch.Generator().manual_seed(54321)
    row: dict[str, Any] = {}
    for epoch in range(1, epochs + 1):
        t0, total, correct, n = time.perf_counter(), torch.zeros(()), torch.zeros(()), 0
        net.train()
        for idx in _batches(len(x), batch_size, generator):
            value, right = objective(*scores(x[idx], generator))
            opt.zero_grad(set_to_none=True)
            value.backward()
            opt.step()
            total += value.detach() * len(idx)
            correct += right.detach() * len(idx)
            n += len(idx)
        values = {"loss": (total / n).item(), "accuracy": (correct / n).item()}
        if vx is not None:
            net.eval()
            with torch.no_grad():
                v_value, v_right = objective(*scores(vx[:4096], fixed_g.manual_seed(54321)))
            values.update(val_loss=v_value.item(), val_accuracy=v_right.item())
        row = _row(history, "discriminate", epoch, values, time.perf_counter() - t0)
        say(_format(row))
    info = {"method": "discriminate", "corruption": corruption if isinstance(corruption, str) else "custom",
            "rate": rate, "loss": loss, **({"margin": margin} if loss == "margin" else {}), "epochs": epochs,
            "batch_size": batch_size, "seed": seed,
            "final": {k: v for k, v in row.items() if k in ("loss", "accuracy", "val_loss", "val_accuracy")},
            "history": history.to_dict()}
    return _with_head(net, head, info, placeholder=False)


# ===================================================================== contrastive (SimCLR)
def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """SimCLR's normalized-temperature cross-entropy of two views (B, d) of one batch:
    (the loss, the fraction of examples whose other view is their most similar candidate).

    The 2B embeddings are L2-normalised; for each one the positive is the other view of the
    same example and the 2B - 2 others are negatives; the loss is the cross-entropy of the
    cosine similarities / ``temperature`` over the 2B - 1 candidates, averaged over all 2B.
    """
    batch = len(z1)
    z = F.normalize(torch.cat([z1, z2]), dim=1)  # (2B, d)
    sim = z @ z.t() / temperature  # (2B, 2B)
    sim = sim.masked_fill(torch.eye(2 * batch, dtype=torch.bool, device=z.device), float("-inf"))
    target = torch.cat([torch.arange(batch, 2 * batch), torch.arange(batch)]).to(z.device)
    return F.cross_entropy(sim, target), (sim.argmax(1) == target).float().mean()


def contrastive(
    tower: Sequence[LayerSpec] | Network,
    unlabeled: Data,
    *,
    augment: Any = None,
    projection: Sequence[int] = (100, 32),
    temperature: float = 0.5,
    epochs: int = 10,
    batch_size: int = 256,
    optimizer: OptimizerSpec | str | dict[str, Any] | None = None,
    lr: float | None = None,
    seed: int | None = None,
    history: History | None = None,
    name: str = "contrastive",
    verbose: bool | None = None,
) -> Network:
    """SimCLR-style contrastive pretraining (Chen et al., 2020) of ``tower``.

    Each batch is augmented twice (``augment``: an :class:`~graftnet.augment.Augment` or a
    callable ``(x, generator) -> x``; default ``Augment(shift=3, rotate=15, crop=4)`` for
    images); the tower and a projection MLP (``projection`` units, ReLU between, discarded
    afterwards as SimCLR does) map each view to an embedding, and :func:`nt_xent` pulls the
    two views of an example together and pushes the others apart. ``accuracy`` is how often
    an example's other view is its nearest candidate.

    Returns the tower's layers (pretrained), then a placeholder ``outputs``.
    """
    from graftnet.augment import Augment

    _check_loop(epochs, batch_size)
    if batch_size < 2:
        raise ConfigError(f"contrastive pretraining needs batch_size >= 2 (the other examples are the negatives), "
                          f"got {batch_size}")
    if not temperature > 0:
        raise ConfigError(f"temperature must be > 0, got {temperature!r}")
    x, vx = _unlabeled(unlabeled)
    if augment is None:
        if x.ndim != 4:
            raise ShapeError(f"the default augmentation (shifts, rotations, crops) needs images (N, C, H, W); the "
                             f"unlabeled data has shape {tuple(x.shape)}: pass augment=callable(x, generator) -> x")
        augment = Augment(shift=3, rotate=15.0, crop=4)
    if not callable(augment):
        raise ConfigError(f"augment must be an Augment or a callable (x, generator) -> x, got {type(augment).__name__}")
    generator = _generator(seed)
    net = _tower(tower, x, name)
    width = _flat_width(net, "contrastive")
    units = [int(u) for u in projection]
    if not units:
        raise ConfigError("projection needs at least one layer size, e.g. (100, 32)")
    proj_layers = [Dense(u, "relu", name=f"proj{i + 1}") for i, u in enumerate(units[:-1])]
    proj = Network([*proj_layers, Dense(units[-1], name="embedding")], (width,), name="projection")
    opt = _optimizer(optimizer, lr, Adam(lr=1e-3), [*net.parameters(), *proj.parameters()])
    say, history = _reporter(verbose), history if history is not None else History()
    row: dict[str, Any] = {}
    for epoch in range(1, epochs + 1):
        t0, total, correct, steps = time.perf_counter(), torch.zeros(()), torch.zeros(()), 0
        net.train()
        for idx in _batches(len(x), batch_size, generator):
            if len(idx) < 2:
                continue  # a last batch of one has no negatives
            xb = x[idx]
            z = proj(net(torch.cat([augment(xb, generator), augment(xb, generator)])))  # (2B, d)
            loss, right = nt_xent(z[:len(idx)], z[len(idx):], temperature)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total, correct, steps = total + loss.detach(), correct + right, steps + 1
        values = {"loss": (total / steps).item(), "accuracy": (correct / steps).item()}
        if vx is not None:
            net.eval()
            with torch.no_grad():
                g = torch.Generator().manual_seed(2468)
                vb = vx[:512]
                z = proj(net(torch.cat([augment(vb, g), augment(vb, g)])))
                v_loss, v_right = nt_xent(z[:len(vb)], z[len(vb):], temperature)
            values.update(val_loss=v_loss.item(), val_accuracy=v_right.item())
        row = _row(history, "contrastive", epoch, values, time.perf_counter() - t0)
        say(_format(row))
    info = {"method": "contrastive", "objective": "nt-xent", "temperature": temperature, "projection": units,
            "augment": augment.to_dict() if hasattr(augment, "to_dict") else "custom", "epochs": epochs,
            "batch_size": batch_size, "seed": seed,
            "final": {k: v for k, v in row.items() if k in ("loss", "accuracy", "val_loss", "val_accuracy")},
            "history": history.to_dict()}
    return _with_head(net, None, info, placeholder=True)


# ===================================================================== recipes
RECIPE_KEYS = {
    "pretrain": {"method", "epochs", "batch_size", "seed", "lr", "optimizer", "out", "name", "options"},
    "tower": {"hidden", "activation", "init", "layers"},
    "data": {"source", "root", "train_size", "valid_size", "test_size", "classes", "exclude"},
}


def _check_recipe(recipe: Mapping[str, Any], source: str) -> None:
    for section, table in recipe.items():
        if section not in RECIPE_KEYS:
            raise ConfigError(f"{source}: unknown section [{section}]{did_you_mean(section, RECIPE_KEYS)}; a pretrain "
                              f"recipe has [pretrain], [tower] and [data]")
        if not isinstance(table, Mapping):
            raise ConfigError(f"{source}: [{section}] must be a table")
        unknown = sorted(set(table) - RECIPE_KEYS[section])
        if unknown:
            raise ConfigError(f"{source}: unknown key {unknown[0]!r} in [{section}]"
                              f"{did_you_mean(unknown[0], RECIPE_KEYS[section])}; keys: "
                              f"{', '.join(sorted(RECIPE_KEYS[section]))}")
    for section in ("pretrain", "data"):
        if section not in recipe:
            raise ConfigError(f"{source}: missing [{section}] section")
    if "method" not in recipe["pretrain"]:
        raise ConfigError(f"{source}: [pretrain] needs method = one of {', '.join(METHODS)}")
    if recipe["pretrain"]["method"] not in METHODS:
        method = recipe["pretrain"]["method"]
        raise ConfigError(f"{source}: unknown method {method!r}; expected one of {', '.join(METHODS)}"
                          f"{did_you_mean(str(method), METHODS)}")
    if "source" not in recipe["data"]:
        raise ConfigError(f"{source}: [data] needs source = 'mnist', 'fashion', 'digits', FILE.npz, ...")


def _recipe_data(table: Mapping[str, Any]) -> Dataset:
    from graftnet.recipe import SCHEMA, build_data

    resolved = {key: default for key, (_type, default) in SCHEMA["data"].items()}
    resolved.update(table)
    return build_data({"data": resolved})


def _recipe_tower(table: Mapping[str, Any], method: str) -> list[LayerSpec]:
    from graftnet.layers import Flatten, layer_from_dict

    if "layers" in table:
        if set(table) - {"layers"}:
            raise ConfigError("[tower] takes either layers = [...] or the MLP shorthand (hidden, activation, init), "
                              "not both")
        return [layer_from_dict(d, where=f"[tower] layers[{i}]") for i, d in enumerate(table["layers"])]
    hidden = table.get("hidden", [100] * 5)
    activation = table.get("activation", "sigmoid" if method == "rbm" else "elu")
    from graftnet.network import default_init

    init = table.get("init", default_init(activation))
    return [Flatten(name="flatten"), *[Dense(int(u), activation, init=init, name=f"hidden{i + 1}")
                                       for i, u in enumerate(hidden)]]


def run_recipe(recipe: str | os.PathLike | Mapping[str, Any], *, out: str | os.PathLike | None = None,
               verbose: bool | None = None) -> tuple[Network, Path]:
    """Run a pretraining recipe and save the base (``save_model``) with its report beside it.

    The recipe (TOML or a dict) has ``[pretrain]`` (method, epochs, batch_size, seed, lr,
    optimizer, out, name, and ``[pretrain.options]`` passed to the method: tied, noise,
    noise_level, k, corruption, rate, loss, margin, temperature, projection, head_units,
    share, steps_per_epoch), ``[tower]`` (``hidden``/``activation``/``init`` or ``layers``)
    and ``[data]`` (source, sizes, classes). Returns (the network, OUT); ``graftnet study
    OUT --data ...`` (or ``study.run(OUT + "/model", ...)``) takes it as a base.
    """
    from graftnet.io.checkpoint import atomic_write_text, save_model

    source = "recipe"
    if not isinstance(recipe, Mapping):
        source = str(recipe)
        try:
            recipe = tomllib.loads(Path(recipe).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"recipe {source} not found") from None
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"recipe {source} is not valid TOML: {err}") from None
    _check_recipe(recipe, source)
    settings = dict(recipe["pretrain"])
    method = settings["method"]
    data = _recipe_data(recipe["data"])
    tower = _recipe_tower(recipe.get("tower", {}), method)
    options = dict(settings.get("options", {}))
    common = {k: settings[k] for k in ("epochs", "batch_size", "seed", "lr", "optimizer") if k in settings}
    folder = Path(out or settings.get("out") or f"models/pretrained-{method}")
    name = settings.get("name", f"{method}-base")
    history = History()
    try:
        if method in GREEDY_METHODS:
            net = greedy(tower, data, method, history=history, report=folder / "report", name=name, verbose=verbose,
                         **common, **options)
        else:
            fn = {"siamese": siamese, "discriminate": discriminate, "contrastive": contrastive}[method]
            net = fn(tower, data, history=history, name=name, verbose=verbose, **common, **options)
    except TypeError as err:
        raise ConfigError(f"{source}: a setting does not fit method {method!r}: {err}") from None
    net.info.update(data=data.source, pretrain_recipe=json.loads(json.dumps(recipe, default=str)))
    save_model(net, folder / "model")
    if method not in GREEDY_METHODS:
        from graftnet.runs import plot_learning_curves

        (folder / "report").mkdir(parents=True, exist_ok=True)
        plot_learning_curves(history, folder / "report" / "loss.png", title=f"{method} pretraining")
        atomic_write_text(folder / "report" / "history.csv", history.to_csv())
        atomic_write_text(folder / "report" / "pretrain.json", json.dumps(net.info["pretrain"], indent=2))
    return net, folder
