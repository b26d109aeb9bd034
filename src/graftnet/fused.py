"""A hand-fused training step for chains of Dense layers (the cached head, the book's MLPs).

On a CPU a small network's step is mostly not arithmetic: autograd records and replays
~30 nodes, the optimizer loops over its groups, and PyTorch's softmax kernels are slow on
(batch, few classes) tensors (a log-softmax over 10 classes of 200 examples takes ~40 µs
along dim 1, ~4 µs on the transposed tensor along dim 0). This step computes the same
training step without autograd:

- activations are kept *transposed*, (features, batch), so that the per-class softmax and
  the bias broadcast run along the fast axis, and every GEMM reads its operands in place
  (a transposed view is a BLAS flag, not a copy);
- the backward pass is written out: ``dZ`` of the loss head in closed form (softmax /
  sigmoid cross-entropy, the same clamps as ``F.nll_loss(log(p.clamp_min(1e-12)))`` and
  ``F.binary_cross_entropy``), then per layer ``dX = Wᵀ dZ`` and the activation's backward;
- with plain SGD (momentum or not, no dampening, no weight decay) the update is folded into
  the gradient GEMM: ``W.baddbmm_(dZ, Xᵀ, alpha=-lr/B)`` writes ``W - lr·∂L/∂W`` without
  materialising the gradient; the bias gets ``-lr/B`` times dZ summed over the batch; momentum
  buffers are the optimizer's own ``state[p]["momentum_buffer"]``, so checkpoints and resume
  see them;
- tensors carry a leading member axis S (``fit``: S = 1, views of the module's parameters;
  ``graftnet.ensemble``: S seeds stacked), and per-step tensors live in buffers kept between
  steps.
  Other optimizers (Adam, RMSprop, Nesterov, ...), clipping and l1/l2 penalties get the
  gradients written into ``p.grad`` and then the optimizer's own ``step()``.

The arithmetic is the eager step's up to float rounding (GEMMs in other layouts, the
update fused into the GEMM): two epochs agree with autograd's weights to 2e-5 (tests). What it
does not cover (dropout, BatchNorm, convolutions, graphs with branches, autocast, loss
scaling, DDP) is reported by :func:`plan_fused` as a reason, and ``fit`` logs it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from graftnet.layers import DenseModule, _ActivationModule, _FlattenModule, _Softmax

__all__ = ["FusedDenseStep", "plan_fused"]

_A = torch.ops.aten
_SELU_ALPHA, _SELU_SCALE = 1.6732632423543772, 1.0507009873554805
_LOG_EPS = math.log(1e-12)  # the eager loss's clamp_min(1e-12) before the log


def _activation_kind(module: nn.Module | None) -> tuple[str, float] | None:
    """(kind, parameter) of an activation module the fused step knows, else None."""
    if module is None:
        return "linear", 0.0
    if type(module) is nn.ReLU:
        return "relu", 0.0
    if type(module) is nn.LeakyReLU:
        return "leaky_relu", float(module.negative_slope)
    if type(module) is nn.ELU:
        return "elu", float(module.alpha)
    if type(module) is nn.SELU:
        return "selu", 0.0
    if type(module) is nn.Sigmoid:
        return "sigmoid", 0.0
    if type(module) is nn.Tanh:
        return "tanh", 0.0
    if type(module) is _Softmax:
        return "softmax", 0.0
    return None


def _forward_(kind: str, p: float, z: torch.Tensor) -> None:
    """Apply the activation in place on ``z`` (features, batch)."""
    if kind == "relu":
        torch.relu_(z)
    elif kind == "leaky_relu":
        F.leaky_relu_(z, p)
    elif kind == "elu":
        F.elu_(z, p)
    elif kind == "selu":
        torch.selu_(z)
    elif kind == "sigmoid":
        z.sigmoid_()
    elif kind == "tanh":
        z.tanh_()


def _backward(kind: str, p: float, g: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """∂L/∂z from ∂L/∂a and the activation's output ``a`` (every kind here is invertible from
    it), written over ``g`` (an elementwise op may write onto its own input)."""
    if kind == "relu":
        return _A.threshold_backward.grad_input(g, a, 0, grad_input=g)
    if kind == "leaky_relu":
        return _A.leaky_relu_backward.grad_input(g, a, p, True, grad_input=g)
    if kind == "elu":
        return _A.elu_backward.grad_input(g, p, 1.0, 1.0, True, a, grad_input=g)
    if kind == "selu":
        return _A.elu_backward.grad_input(g, _SELU_ALPHA, _SELU_SCALE, 1.0, True, a, grad_input=g)
    if kind == "sigmoid":
        return _A.sigmoid_backward.grad_input(g, a, grad_input=g)
    if kind == "tanh":
        return _A.tanh_backward.grad_input(g, a, grad_input=g)
    return g


class _Layer:
    """One Dense layer of the chain, its tensors stacked over the S members: ``weight``
    (S, out, in), ``bias`` (S, out, 1) or None. In ``fit`` S = 1 and they are views of the
    module's own parameters (in-place updates move the parameters' version counters, so the
    feature cache sees the change); in an ensemble they are stacked copies."""

    __slots__ = ("name", "weight", "weight_t", "bias", "kind", "param", "train_w", "train_b", "group", "buf_w",
                 "buf_b", "grad_w", "grad_b", "l1", "l2")

    def __init__(self, name: str, weight: torch.Tensor, bias: torch.Tensor | None, kind: str, param: float,
                 train_w: bool, train_b: bool, l1: float = 0.0, l2: float = 0.0) -> None:
        self.name, self.weight, self.bias, self.kind, self.param = name, weight, bias, kind, param
        self.weight_t = weight.transpose(1, 2)  # a view: it follows the in-place updates
        self.train_w, self.train_b = train_w, train_b
        self.group: dict[str, Any] = {}  # "lr" and "momentum", read at every step (schedules move them)
        self.buf_w = self.buf_b = None  # SGD momentum buffers, stacked like the weights
        self.grad_w = self.grad_b = None  # stacked views of p.grad, where the optimizer's own step() applies them
        self.l1, self.l2 = l1, l2


def chain_layers(model: Any, start: int) -> tuple[list[tuple[str, DenseModule, str, float]], bool, str]:
    """The Dense layers (name, module, activation kind, its parameter) of ``model`` from
    ``start`` on, whether a Flatten comes first, and why not where the chain has no fused form."""
    plan = model._make_plan(start, None)
    if not plan.chain:
        return [], False, "the layers that train form a graph, not a chain"
    found: list[list[Any]] = []
    flatten_first = False
    for (name, *_), module in zip(plan.steps, plan.modules):
        if isinstance(module, _FlattenModule):
            if found:
                return [], False, f"layer {name!r} (flatten) comes after a Dense layer"
            shape = model.shape_of(model.inputs_of(name)[0])
            if module.channels_last and len(shape) == 3 and shape[0] > 1:
                return [], False, (f"layer {name!r} flattens {shape} channels-last (Keras' order): the fused step "
                                   f"reads inputs in their own order")
            flatten_first = True
            continue
        if isinstance(module, DenseModule):
            kind = _activation_kind(module.activation)
            if kind is None:
                return [], False, (f"layer {name!r} has activation {type(module.activation).__name__}, which the "
                                   f"fused step does not implement (it does linear, relu, leaky_relu, elu, selu, "
                                   f"sigmoid, tanh, softmax)")
            found.append([name, module, *kind])
            continue
        if isinstance(module, _ActivationModule) and found and found[-1][2] == "linear":
            kind = _activation_kind(module.activation)
            if kind is not None and kind[0] != "linear":
                found[-1][2:] = kind
                continue
        spec_type = getattr(model.spec_of(name), "type", type(module).__name__)
        return [], False, f"layer {name!r} ({spec_type}) has no fused form (only Dense layers and their activations do)"
    if not found:
        return [], False, "no Dense layers to train"
    return [tuple(f) for f in found], flatten_first, ""  # type: ignore[misc]


def check_head(task: str, kinds: Sequence[str], units: int) -> str:
    """Why the output layer has no fused loss, or ''."""
    if any(k == "softmax" for k in kinds[:-1]):
        return "a softmax below the output layer"
    last = kinds[-1]
    if task == "multiclass" and last not in ("linear", "softmax"):
        return f"a multiclass output with activation {last!r} (expected linear or softmax)"
    if task == "binary" and (last not in ("linear", "sigmoid") or units != 1):
        return "a binary output that is not one unit, linear or sigmoid"
    if task == "regression" and last == "softmax":
        return "a regression output with softmax"
    return ""


def foldable(opt_type: type, groups: Sequence[dict[str, Any]], clip_value: Any = None, clip_norm: Any = None,
             penalties: bool = False) -> bool:
    """Plain SGD (momentum or not; no dampening, Nesterov, weight decay, clipping, penalties):
    the update can be folded into the gradient GEMM."""
    return (opt_type is torch.optim.SGD and clip_value is None and clip_norm is None and not penalties
            and all(not g.get("nesterov") and not g.get("dampening") and not g.get("weight_decay")
                    and not g.get("maximize") for g in groups))


def plan_fused(model: Any, start: int, opt: torch.optim.Optimizer, *, task: str, act: str, device: torch.device,
               precision: str = "fp32", distributed: bool = False, clip_value: float | None = None,
               clip_norm: float | None = None) -> tuple[_SerialStep | None, str]:
    """``fit``'s fused step for ``model``'s layers from ``start`` on, or ``(None, why not)``."""
    if device.type != "cpu":
        return None, f"the fused step is for CPUs (device {device})"
    if precision != "fp32":
        return None, f"precision={precision!r} (autocast) runs through autograd"
    if distributed:
        return None, "DistributedDataParallel training runs through autograd"
    found, flatten_first, why = chain_layers(model, start)
    if why:
        return None, why
    why = check_head(task, [f[2] for f in found], found[-1][1].weight.shape[0])
    if why:
        return None, why
    where = {id(p): g for g in opt.param_groups for p in g["params"]}
    layers, trained = [], set()
    for name, module, kind, param in found:
        w, b = module.weight, module.bias
        layer = _Layer(name, w.unsqueeze(0), None if b is None else b.view(1, -1, 1), kind, param,
                       w.requires_grad, b is not None and b.requires_grad, float(module.spec.l1 or 0.0),
                       float(module.spec.l2 or 0.0))
        for p in (w, b):
            if p is not None and p.requires_grad:
                if id(p) not in where:
                    return None, f"a trainable parameter of {name!r} is not in the optimizer"
                layer.group = where[id(p)]
                trained.add(id(p))
        layers.append(layer)
    if set(where) - trained:
        return None, "the optimizer trains parameters outside the chain"
    penalties = any(layer.l1 or layer.l2 for layer in layers)
    fold = foldable(type(opt), opt.param_groups, clip_value, clip_norm, penalties)
    for layer, (_, module, _, _) in zip(layers, found):
        for p, buf_attr, grad_attr in ((module.weight, "buf_w", "grad_w"), (module.bias, "buf_b", "grad_b")):
            if p is None or not p.requires_grad:
                continue
            stacked = (lambda t, p=p: t.unsqueeze(0) if p.dim() == 2 else t.view(1, -1, 1))
            if fold and layer.group.get("momentum"):  # the optimizer's own state, for checkpoints and resume
                state = opt.state[p]
                if state.get("momentum_buffer") is None:  # torch's first step: buf = grad = momentum * 0 + grad
                    state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.contiguous_format)
                setattr(layer, buf_attr, stacked(state["momentum_buffer"]))
            elif not fold:
                if p.grad is None or p.grad.shape != p.shape:
                    p.grad = torch.zeros_like(p)
                setattr(layer, grad_attr, stacked(p.grad))
    step = FusedDenseStep(layers, task, fold, flatten_first)
    mode = "fused SGD update" if fold else f"fused gradients + {type(opt).__name__}.step()"
    return _SerialStep(step, opt, [p for g in opt.param_groups for p in g["params"]], fold, layers,
                       clip_value, clip_norm, mode), ""


class FusedDenseStep:
    """One training step of S copies of a Dense chain at once, on stacked tensors:
    ``step(xb (S, B, ...), yb (S, B, ...)) -> (loss (S,), outputs (S, B, k))``.

    With ``fold`` (plain SGD) the update is applied inside the gradient GEMMs; without, the
    gradients are written into each layer's ``grad_w``/``grad_b`` for an optimizer's step.
    Batched GEMMs (``baddbmm``) compute each member exactly as a one-member step would
    (tested), so an ensemble of S seeds trains each seed as ``fit`` trains it alone.
    """

    def __init__(self, layers: Sequence[_Layer], task: str, fold: bool, flatten_first: bool = False) -> None:
        self.layers, self.task, self.fold, self.flatten_first = list(layers), task, fold, flatten_first
        trains = [i for i, layer in enumerate(self.layers) if layer.train_w or layer.train_b]
        self.lowest = trains[0] if trains else len(self.layers)  # below it no dX is needed
        self.scale_factor = 2.0 if task == "regression" else 1.0  # d/dz of the summed square
        self._constants: dict[tuple[Any, ...], Any] = {}

    def _minus_ones(self, s: int, b: int, like: torch.Tensor) -> torch.Tensor:
        found = self._constants.get((s, b))
        if found is None:
            found = self._constants[(s, b)] = torch.full((s, 1, b), -1.0, dtype=like.dtype, device=like.device)
        return found

    def _buffers(self, s: int, b: int, like: torch.Tensor
                 ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
        """Per-step tensors kept from step to step (fresh ones of a few hundred kB each would be
        fresh pages, page-faulted in at every step): each layer's output and dX."""
        key = (s, b, "buffers")
        found = self._constants.get(key)
        if found is None:
            outs = [torch.empty(s, layer.weight.shape[1], b, dtype=like.dtype, device=like.device)
                    for layer in self.layers]
            grads = [torch.empty(s, layer.weight.shape[2], b, dtype=like.dtype, device=like.device)
                     for layer in self.layers]
            found = self._constants[key] = (outs, grads, [o.transpose(1, 2) for o in outs])  # type: ignore
        return found  # type: ignore[return-value]

    @torch.no_grad()
    def __call__(self, xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s, b = xb.shape[0], xb.shape[1]
        if xb.dim() != 3:
            xb = xb.reshape(s, b, -1)
        minus = self._minus_ones(s, b, xb)
        outs, grads, outs_t = self._buffers(s, b, xb)
        layers, last = self.layers, len(self.layers) - 1
        a = xb.transpose(1, 2)  # (S, in, B): activations are kept transposed
        acts = [a]
        acts_t = [xb, *outs_t]  # the same, (S, B, features): the right operand of the weights' gradient
        for i, layer in enumerate(layers):
            z = (torch.baddbmm(layer.bias, layer.weight, a, out=outs[i]) if layer.bias is not None
                 else torch.bmm(layer.weight, a, out=outs[i]))
            if i < last:
                _forward_(layer.kind, layer.param, z)
            a = z
            acts.append(z)
        loss, g, out = self._head(layers[last], a, yb, minus)
        self.last = (a, out)
        scale = self.scale_factor / b
        for i in range(last, self.lowest - 1, -1):  # backward, top to bottom, updating as it goes
            layer = layers[i]
            below = acts[i]
            # dX with W before its update
            da = torch.bmm(layer.weight_t, g, out=grads[i]) if i > self.lowest else None
            if layer.train_w:
                self._update(layer.weight, layer, layer.buf_w, layer.grad_w, g, acts_t[i], scale)
            if layer.train_b:
                self._update_bias(layer, g, scale)
            if da is not None:
                g = _backward(layers[i - 1].kind, layers[i - 1].param, da, below)
        return loss, out

    def predict_into(self, buffer: torch.Tensor) -> None:
        """The last step's predicted classes (S, B) into ``buffer``: argmax over the classes
        (``max`` along the contiguous class axis: ``argmax`` is 3-8x slower on these shapes),
        or "positive" for a binary output (p > 0.5 for a sigmoid, logit > 0 otherwise)."""
        z, out = self.last
        if self.task == "multiclass":
            values = self._constants.get(("max", buffer.shape))
            if values is None:
                values = self._constants[("max", buffer.shape)] = torch.empty(buffer.shape, dtype=z.dtype)
            torch.max(z, 1, out=(values, buffer))
        else:
            threshold = 0.5 if self.layers[-1].kind == "sigmoid" else 0.0
            torch.gt(out.reshape(buffer.shape), threshold, out=buffer)

    def _update(self, p: torch.Tensor, layer: _Layer, buf: torch.Tensor | None, grad: torch.Tensor | None,
                g: torch.Tensor, right: torch.Tensor, scale: float) -> None:
        """The weights' ∂L/∂W = scale · g @ right (right: the layer's input, transposed):
        written into ``grad``, or applied: ``p - lr ∂L/∂p`` (plain SGD) or through the momentum buffer."""
        if grad is not None:
            grad.baddbmm_(g, right, beta=0, alpha=scale)
            return
        lr = layer.group["lr"]
        if buf is None:
            p.baddbmm_(g, right, alpha=-lr * scale)
            return
        buf.baddbmm_(g, right, beta=layer.group["momentum"], alpha=scale)  # torch's SGD: buf = m·buf + ∂L/∂p
        p.add_(buf, alpha=-lr)

    def _update_bias(self, layer: _Layer, g: torch.Tensor, scale: float) -> None:
        """The bias's ∂L/∂b = scale · Σ_batch g: a sum along the batch axis (on stacked members
        half the time of a batched GEMV with ones), then as in ``_update``."""
        total = torch.sum(g, 2, keepdim=True)  # (S, out, 1)
        if layer.grad_b is not None:
            torch.mul(total, scale, out=layer.grad_b)
            return
        lr = layer.group["lr"]
        if layer.buf_b is None:
            layer.bias.add_(total, alpha=-lr * scale)
            return
        layer.buf_b.mul_(layer.group["momentum"]).add_(total, alpha=scale)
        layer.bias.add_(layer.buf_b, alpha=-lr)

    def _head(self, layer: _Layer, z: torch.Tensor, yb: torch.Tensor, minus: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(each member's mean loss (S,), ∂(summed loss)/∂z (S, k, B), outputs (S, B, k))."""
        kind = layer.kind
        if self.task == "multiclass":
            y = yb.unsqueeze(1)  # (S, 1, B)
            logp = torch.log_softmax(z, 1)  # over the classes: the fast axis of (S, C, B)
            picked = logp.gather(1, y)  # log p of each example's class
            if kind == "softmax":  # eager: nll(log(p.clamp_min(1e-12))): no gradient where p_y was clamped
                p = logp.exp_()
                g = p.clone().scatter_add_(1, y, minus)
                if bool(picked.min() < _LOG_EPS):  # rare (p_y < 1e-12): a CPU read costs less than the mask
                    g.mul_(picked.ge(_LOG_EPS))
                    picked = picked.clamp_min(_LOG_EPS)
                return picked.sum((1, 2)).mul_(-1.0 / picked.shape[2]), g, p.transpose(1, 2)
            loss = picked.sum((1, 2)).mul_(-1.0 / picked.shape[2])  # the batch mean (sum(dims) is the faster op)
            return loss, logp.exp_().scatter_add_(1, y, minus), z.transpose(1, 2)
        if self.task == "binary":
            y = yb.unsqueeze(1)  # (S, 1, B), floats 0/1
            if kind == "sigmoid":  # eager: binary_cross_entropy(sigmoid(z)) with its clamps, ∂ through both
                p = torch.sigmoid(z)
                loss = F.binary_cross_entropy(p, y, reduction="none").mean((1, 2))
                dp = _A.binary_cross_entropy_backward(torch.ones_like(p), p, y, None, 0)  # 0: no reduction
                return loss, _A.sigmoid_backward(dp, p), p.transpose(1, 2)
            loss = F.binary_cross_entropy_with_logits(z, y, reduction="none").mean((1, 2))
            return loss, torch.sigmoid(z).sub_(y), z.transpose(1, 2)
        a = z.clone()  # regression: Σ_k (a - y)² per example, averaged over the batch
        _forward_(kind, layer.param, a)
        diff = a - yb.reshape(yb.shape[0], yb.shape[1], -1).transpose(1, 2)
        loss = diff.square().sum((1, 2)) / yb.shape[1]
        return loss, _backward(kind, layer.param, diff, a), a.transpose(1, 2)


class _SerialStep:
    """``fit``'s step: the fused step with S = 1 on the model's own parameters, plus (without
    fold) penalties, clipping and the optimizer's ``step()``."""

    def __init__(self, step: FusedDenseStep, opt: torch.optim.Optimizer, trainable: list[torch.Tensor], fold: bool,
                 layers: list[_Layer], clip_value: float | None, clip_norm: float | None, mode: str) -> None:
        self.step, self.opt, self.trainable, self.fold, self.layers = step, opt, trainable, fold, layers
        self.clip_value, self.clip_norm, self.mode = clip_value, clip_norm, mode
        self._gather_buffers: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def describe(self) -> str:
        names = [layer.name for layer in self.layers]
        span = names[0] if len(names) == 1 else f"{names[0]}..{names[-1]}"
        return f"fused Dense-chain step over {span} ({len(names)} layers, {self.mode})"

    def gathered(self, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The step on ``x[idx], y[idx]``, gathered into buffers kept between steps (a fresh
        batch of images is fresh memory, page-faulted in at every step: ~10x the gather)."""
        b = len(idx)
        bufs = self._gather_buffers.get(b)
        if bufs is None:
            xb, yb = x.new_empty((b, *x.shape[1:])), y.new_empty((b, *y.shape[1:]))
            bufs = self._gather_buffers[b] = (xb, yb, xb.view(1, b, -1), yb.unsqueeze(0))
        torch.index_select(x, 0, idx, out=bufs[0])
        torch.index_select(y, 0, idx, out=bufs[1])
        loss, out = self.step(bufs[2], bufs[3])
        if not self.fold:
            self._optimizer_step()
        return loss[0], out  # out: (1, B, k); fit reads the predictions through predict_into

    def predict_into(self, buffer: torch.Tensor) -> None:
        self.step.predict_into(buffer.view(1, -1))

    def __call__(self, xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loss, out = self.step(xb.reshape(1, xb.shape[0], -1), yb.unsqueeze(0))
        if not self.fold:
            self._optimizer_step()
        return loss[0], out[0]

    def _optimizer_step(self) -> None:
        """Without fold: the l1/l2 penalties' gradients, clipping, then the optimizer's own step."""
        with torch.no_grad():
            for layer in self.layers:
                if layer.grad_w is not None and (layer.l1 or layer.l2):  # ∂ of l1·Σ|W| + l2·ΣW² (kernel only)
                    if layer.l1:
                        layer.grad_w.add_(torch.sign(layer.weight), alpha=layer.l1)
                    if layer.l2:
                        layer.grad_w.add_(layer.weight, alpha=2.0 * layer.l2)
        if self.clip_value is not None:
            torch.nn.utils.clip_grad_value_(self.trainable, self.clip_value)
        if self.clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.trainable, self.clip_norm, foreach=True)
        self.opt.step()
