"""Optimizers, learning-rate schedules and per-layer learning rates.

Optimizers and schedules are small JSON-able specs (so a recipe or a checkpoint can name
them) that build the real ``torch.optim`` objects::

    >>> opt = SGD(lr=0.01, momentum=0.9, nesterov=True)
    >>> opt.to_dict()
    {'type': 'sgd', 'lr': 0.01, 'momentum': 0.9, 'nesterov': True, 'weight_decay': 0.0}

The optimizer is always built from the parameters that are trainable *now*, one group
per layer, so freezing or unfreezing between stages can never leave a frozen weight in
the optimizer (Keras' "remember to recompile" trap). Per-layer learning rates are a
multiplier on each group: ``lr_mult={"hidden[12]": 0.1}`` or ``layer_decay=0.5`` (each
layer below the top trains at half the rate of the one above).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch.optim import lr_scheduler

from graftnet.errors import ConfigError, did_you_mean
from graftnet.network import Network

__all__ = [
    "SGD", "Adam", "AdamW", "Nadam", "RMSprop", "Adagrad", "Ftrl", "FtrlProximal", "OptimizerSpec",
    "optimizer_from",
    "Schedule", "PiecewiseConstant", "Exponential", "Power", "Plateau", "OneCycle", "Cosine",
    "schedule_from", "param_groups",
]


def _fields_dict(spec: Any) -> dict[str, Any]:
    out = {"type": spec.type}
    for f in dataclasses.fields(spec):
        value = getattr(spec, f.name)
        out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


@dataclass
class OptimizerSpec:
    type: ClassVar[str] = ""
    lr: float = 0.01

    def build(self, groups: list[dict[str, Any]], device: torch.device) -> torch.optim.Optimizer:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        return _fields_dict(self)

    def _fast(self, device: torch.device) -> dict[str, Any]:
        # foreach: one kernel over all tensors (CPU and CUDA); fused where torch has it on CUDA
        return {"fused": True} if device.type == "cuda" else {"foreach": True}


@dataclass
class SGD(OptimizerSpec):
    """Plain SGD; ``momentum=0.9`` gives momentum, ``nesterov=True`` Nesterov's variant."""

    type: ClassVar[str] = "sgd"
    lr: float = 0.01
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0

    def build(self, groups, device):
        return torch.optim.SGD(groups, lr=self.lr, momentum=self.momentum, nesterov=self.nesterov,
                               weight_decay=self.weight_decay, **self._fast(device))


@dataclass
class Adam(OptimizerSpec):
    type: ClassVar[str] = "adam"
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-7  # Keras' default, a little safer than torch's 1e-8
    weight_decay: float = 0.0

    def build(self, groups, device):
        return torch.optim.Adam(groups, lr=self.lr, betas=tuple(self.betas), eps=self.eps,
                                weight_decay=self.weight_decay, **self._fast(device))


@dataclass
class AdamW(Adam):
    type: ClassVar[str] = "adamw"
    weight_decay: float = 0.01

    def build(self, groups, device):
        return torch.optim.AdamW(groups, lr=self.lr, betas=tuple(self.betas), eps=self.eps,
                                 weight_decay=self.weight_decay, **self._fast(device))


@dataclass
class Nadam(Adam):
    type: ClassVar[str] = "nadam"

    def build(self, groups, device):
        return torch.optim.NAdam(groups, lr=self.lr, betas=tuple(self.betas), eps=self.eps,
                                 weight_decay=self.weight_decay, foreach=True)


@dataclass
class RMSprop(OptimizerSpec):
    type: ClassVar[str] = "rmsprop"
    lr: float = 1e-3
    rho: float = 0.9  # Keras' name for the decay of the moving average (torch: alpha)
    momentum: float = 0.0
    eps: float = 1e-7
    weight_decay: float = 0.0

    def build(self, groups, device):
        return torch.optim.RMSprop(groups, lr=self.lr, alpha=self.rho, momentum=self.momentum,
                                   eps=self.eps, weight_decay=self.weight_decay, foreach=True)


@dataclass
class Adagrad(OptimizerSpec):
    type: ClassVar[str] = "adagrad"
    lr: float = 0.01
    eps: float = 1e-7
    weight_decay: float = 0.0

    def build(self, groups, device):
        return torch.optim.Adagrad(groups, lr=self.lr, eps=self.eps, weight_decay=self.weight_decay,
                                   foreach=True)


class FtrlProximal(torch.optim.Optimizer):
    """FTRL-Proximal (McMahan et al., 2013) with TensorFlow's ``Ftrl`` update, as a torch optimizer.

    Per weight ``w`` with gradient ``g`` it keeps an accumulator ``n`` (starts at
    ``initial_accumulator_value``) and a linear term ``z`` (starts at 0); with
    ``p = -learning_rate_power`` (0.5 by default) and ``l2' = l2 + beta / (2 * lr)``::

        g_s  = g + 2 * l2_shrinkage * w          # shrinkage enters the linear term only
        n'   = n + g ** 2
        z   += g_s - (n' ** p - n ** p) / lr * w
        w    = (clip(z, -l1, l1) - z) / (n' ** p / lr + 2 * l2')   # 0 wherever |z| <= l1

    so a strong ``l1`` sets weights to exactly zero (sparse models). These are the equations
    of TensorFlow's ``ApplyFtrlV2`` kernel and of Keras' ``Ftrl`` (``beta`` is Keras'
    addition); the tests compare a few steps with what TensorFlow 2.21 computed.

    >>> w = torch.nn.Parameter(torch.tensor([1.0, 0.0]))
    >>> opt = FtrlProximal([w], lr=0.1, l1=0.5)
    >>> (w * torch.tensor([3.0, 0.2])).sum().backward(); opt.step()
    >>> w.detach()  # the small gradient left |z| = 0.2 <= l1: exactly zero
    tensor([0.7791, 0.0000])
    """

    def __init__(self, params: Any, lr: float = 1e-3, *, learning_rate_power: float = -0.5,
                 initial_accumulator_value: float = 0.1, l1: float = 0.0, l2: float = 0.0,
                 l2_shrinkage: float = 0.0, beta: float = 0.0) -> None:
        checks = {"lr": lr > 0, "learning_rate_power": learning_rate_power <= 0,
                  "initial_accumulator_value": initial_accumulator_value >= 0,
                  "l1": l1 >= 0, "l2": l2 >= 0, "l2_shrinkage": l2_shrinkage >= 0, "beta": beta >= 0}
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            given = dict(lr=lr, learning_rate_power=learning_rate_power,
                         initial_accumulator_value=initial_accumulator_value, l1=l1, l2=l2,
                         l2_shrinkage=l2_shrinkage, beta=beta)
            raise ConfigError(f"FTRL: {', '.join(f'{k}={given[k]!r}' for k in bad)} out of range; lr must be "
                              f"> 0, learning_rate_power <= 0 and the others >= 0 (TensorFlow's rules)")
        defaults = dict(lr=lr, learning_rate_power=learning_rate_power,
                        initial_accumulator_value=initial_accumulator_value, l1=l1, l2=l2,
                        l2_shrinkage=l2_shrinkage, beta=beta)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, power = group["lr"], -group["learning_rate_power"]
            l1, shrink = group["l1"], group["l2_shrinkage"]
            l2 = group["l2"] + group["beta"] / (2.0 * lr)
            for w in group["params"]:
                if w.grad is None:
                    continue
                if w.grad.is_sparse:
                    raise ConfigError("FTRL: sparse gradients are not supported; use a dense embedding")
                g = w.grad
                state = self.state[w]
                if not state:
                    state["accumulator"] = torch.full_like(w, group["initial_accumulator_value"],
                                                           memory_format=torch.preserve_format)
                    state["linear"] = torch.zeros_like(w, memory_format=torch.preserve_format)
                n, z = state["accumulator"], state["linear"]
                new_n = n + g * g
                sigma = (new_n.pow(power) - n.pow(power)) / lr  # the change of 1/step size
                g_s = g + (2.0 * shrink) * w if shrink else g
                z.add_(g_s - sigma * w)
                quadratic = new_n.pow(power) / lr + 2.0 * l2
                w.copy_((z.clamp(-l1, l1) - z) / quadratic)
                n.copy_(new_n)
        return loss


@dataclass
class Ftrl(OptimizerSpec):
    """FTRL-Proximal with TensorFlow's ``Ftrl`` settings (see ``FtrlProximal``).

    ``Ftrl(lr=0.1, l1_regularization_strength=1.0)`` drives many weights to exactly zero.
    """

    type: ClassVar[str] = "ftrl"
    lr: float = 1e-3
    learning_rate_power: float = -0.5
    initial_accumulator_value: float = 0.1
    l1_regularization_strength: float = 0.0
    l2_regularization_strength: float = 0.0
    l2_shrinkage_regularization_strength: float = 0.0
    beta: float = 0.0

    def build(self, groups, device):
        return FtrlProximal(groups, lr=self.lr, learning_rate_power=self.learning_rate_power,
                            initial_accumulator_value=self.initial_accumulator_value,
                            l1=self.l1_regularization_strength, l2=self.l2_regularization_strength,
                            l2_shrinkage=self.l2_shrinkage_regularization_strength, beta=self.beta)


OPTIMIZERS: dict[str, type[OptimizerSpec]] = {
    c.type: c for c in (SGD, Adam, AdamW, Nadam, RMSprop, Adagrad, Ftrl)}
_OPT_ALIASES = {"momentum": ("sgd", {"momentum": 0.9}),
                "nesterov": ("sgd", {"momentum": 0.9, "nesterov": True})}


def _from(registry: dict[str, type], aliases: dict[str, tuple[str, dict]], value: Any, what: str, **overrides):
    if isinstance(value, str):
        value = {"type": value}
    if not isinstance(value, dict) or "type" not in value:
        raise ConfigError(f"{what}: expected a name such as {next(iter(registry))!r} or a table with 'type', got {value!r}")
    value = dict(value)
    kind = str(value.pop("type")).lower()
    if kind in aliases:
        kind, extra = aliases[kind]
        value = {**extra, **value}
    if kind not in registry:
        raise ConfigError(f"unknown {what} {kind!r}; expected one of "
                          f"{', '.join([*registry, *aliases])}.{did_you_mean(kind, [*registry, *aliases])}")
    cls = registry[kind]
    names = {f.name for f in dataclasses.fields(cls)}
    value.update({k: v for k, v in overrides.items() if v is not None})
    unknown = sorted(set(value) - names)
    if unknown:
        raise ConfigError(f"{what} {kind!r}: unknown setting(s) {', '.join(map(repr, unknown))}; "
                          f"it takes {', '.join(sorted(names))}")
    try:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in value.items()})
    except TypeError as err:
        raise ConfigError(f"{what} {kind!r}: {err}") from None


def optimizer_from(value: OptimizerSpec | str | dict[str, Any], lr: float | None = None) -> OptimizerSpec:
    """An optimizer spec from a spec, a name (``"nesterov"``) or a dict (``{"type": "adam", "lr": 1e-3}``)."""
    if isinstance(value, OptimizerSpec):
        return dataclasses.replace(value, lr=lr) if lr is not None else value
    return _from(OPTIMIZERS, _OPT_ALIASES, value, "optimizer", lr=lr)


# ---------------------------------------------------------------- schedules
@dataclass
class Schedule:
    """A learning-rate schedule, stepped once per epoch (``per_step`` ones once per batch)."""

    type: ClassVar[str] = ""
    per_step: ClassVar[bool] = False

    def build(self, optimizer: torch.optim.Optimizer, epochs: int, steps_per_epoch: int) -> Any:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        return _fields_dict(self)


class _Factor:
    """A picklable-free multiplier for LambdaLR whose state is plain numbers."""

    def __init__(self, kind: str, **kw: Any) -> None:
        self.kind, self.kw = kind, kw

    def __call__(self, epoch: int) -> float:
        if self.kind == "piecewise":
            factor = 1.0
            for boundary, value in zip(self.kw["boundaries"], self.kw["factors"]):
                if epoch >= boundary:
                    factor = value
            return factor
        # power: lr0 / (1 + epoch / steps) ** c
        return (1 + epoch / self.kw["steps"]) ** -self.kw["c"]


@dataclass
class PiecewiseConstant(Schedule):
    """``values[i]`` from epoch ``boundaries[i-1]`` on: ``PiecewiseConstant([5, 15], [0.01, 0.005, 0.001])``."""

    type: ClassVar[str] = "piecewise"
    boundaries: tuple[int, ...] = ()
    values: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if len(self.values) != len(self.boundaries) + 1:
            raise ConfigError(f"piecewise schedule: need one more value than boundaries, got "
                              f"{len(self.boundaries)} boundaries and {len(self.values)} values")

    def build(self, optimizer, epochs, steps_per_epoch):
        base = self.values[0]
        factors = [v / base for v in self.values[1:]]
        for g in optimizer.param_groups:  # values are absolute; lr multipliers still apply
            g["lr"] = base * g.get("lr_mult", 1.0)
        return lr_scheduler.LambdaLR(optimizer, _Factor("piecewise", boundaries=list(self.boundaries), factors=factors))


@dataclass
class Exponential(Schedule):
    """``lr0 * 0.1 ** (epoch / s)``: ten times smaller every ``s`` epochs (the book's form)."""

    type: ClassVar[str] = "exponential"
    s: float = 20.0

    def build(self, optimizer, epochs, steps_per_epoch):
        return lr_scheduler.ExponentialLR(optimizer, gamma=0.1 ** (1 / self.s))


@dataclass
class Power(Schedule):
    """``lr0 / (1 + epoch / s) ** c`` (power scheduling)."""

    type: ClassVar[str] = "power"
    s: float = 20.0
    c: float = 1.0

    def build(self, optimizer, epochs, steps_per_epoch):
        return lr_scheduler.LambdaLR(optimizer, _Factor("power", steps=self.s, c=self.c))


@dataclass
class Plateau(Schedule):
    """Performance scheduling: multiply the rate by ``factor`` when ``monitor`` stalls."""

    type: ClassVar[str] = "plateau"
    monitor: str = "val_loss"
    factor: float = 0.5
    patience: int = 5
    min_lr: float = 0.0

    def build(self, optimizer, epochs, steps_per_epoch):
        mode = "max" if "acc" in self.monitor else "min"
        return lr_scheduler.ReduceLROnPlateau(optimizer, mode=mode, factor=self.factor,
                                              patience=self.patience, min_lr=self.min_lr)


@dataclass
class OneCycle(Schedule):
    """1cycle: up to ``max_lr`` over the first ``pct_start`` of training, then down (per batch)."""

    type: ClassVar[str] = "one_cycle"
    per_step: ClassVar[bool] = True
    max_lr: float | None = None  # default: the optimizer's lr
    pct_start: float = 0.3

    def build(self, optimizer, epochs, steps_per_epoch):
        max_lrs = [(self.max_lr or g["lr"] / g.get("lr_mult", 1.0)) * g.get("lr_mult", 1.0)
                   for g in optimizer.param_groups]
        return lr_scheduler.OneCycleLR(optimizer, max_lr=max_lrs, epochs=epochs,
                                       steps_per_epoch=steps_per_epoch, pct_start=self.pct_start)


@dataclass
class Cosine(Schedule):
    """Cosine annealing from the optimizer's rate down to ``min_lr`` over the run."""

    type: ClassVar[str] = "cosine"
    min_lr: float = 0.0

    def build(self, optimizer, epochs, steps_per_epoch):
        return lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(epochs, 1), eta_min=self.min_lr)


SCHEDULES: dict[str, type[Schedule]] = {
    c.type: c for c in (PiecewiseConstant, Exponential, Power, Plateau, OneCycle, Cosine)}


def schedule_from(value: Schedule | str | dict[str, Any] | None) -> Schedule | None:
    """A schedule from a spec, a name (``"cosine"``) or a dict; ``None`` keeps the rate constant."""
    if value is None or isinstance(value, Schedule):
        return value
    if value in ("none", "constant"):
        return None
    return _from(SCHEDULES, {"1cycle": ("one_cycle", {})}, value, "schedule")


# ---------------------------------------------------------------- parameter groups
def param_groups(
    model: Network,
    *,
    lr: float,
    lr_mult: dict[str, float] | None = None,
    layer_decay: float | None = None,
) -> list[dict[str, Any]]:
    """One optimizer group per layer that has trainable parameters, bottom to top.

    ``lr_mult`` maps selectors to multipliers (later entries win); ``layer_decay=d`` gives
    the top trainable layer ``lr`` and each one below it ``d`` times its upper neighbour's.
    Frozen parameters are never included.

    >>> [g["layer"] for g in param_groups(Network.mlp(4, [3], 2).freeze("hidden1"), lr=0.1)]
    ['outputs']
    """
    layers = [(name, [p for p in module.parameters() if p.requires_grad])
              for name, module in model.named_layers()]
    layers = [(name, params) for name, params in layers if params]
    mult = {name: 1.0 for name, _ in layers}
    if layer_decay is not None:
        if not 0 < layer_decay <= 1:
            raise ConfigError(f"layer_decay must be in (0, 1], got {layer_decay}")
        for depth, (name, _) in enumerate(reversed(layers)):
            mult[name] = layer_decay ** depth
    chosen: dict[str, float] = {}
    for selector, factor in (lr_mult or {}).items():  # a later entry overrides an earlier one
        for name in model.select(selector, what="lr_mult"):
            chosen[name] = float(factor)
    for name, factor in chosen.items():
        if name in mult:
            mult[name] *= factor
    return [{"params": params, "lr": lr * mult[name], "lr_mult": mult[name], "layer": name}
            for name, params in layers]

