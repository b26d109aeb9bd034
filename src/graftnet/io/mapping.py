"""Load named tensors from a foreign checkpoint into any ``nn.Module``, all or nothing.

Every importer (TensorFlow, Keras, PyTorch, NumPy) ends here: it names each source tensor's
target key, says which ones need a transpose, and ``load_tensors`` checks every key and
every shape before it changes anything. What happened is a ``MappingReport``::

    >>> from collections import OrderedDict
    >>> import torch.nn as nn
    >>> net = nn.Sequential(OrderedDict(hidden1=nn.Linear(3, 2)))
    >>> report = load_tensors(net, {"hidden1/kernel": torch.ones(3, 2), "hidden1/bias": torch.zeros(2)},
    ...                       rename={"hidden1/kernel": "hidden1.weight", "hidden1/bias": "hidden1.bias"},
    ...                       transforms={"hidden1/kernel": torch.t})
    >>> report.ok, report.transposed
    (True, ['hidden1.weight'])

Names only come from ``module.state_dict()``, so this works on any module, not just a
graftnet ``Network``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from graftnet.errors import CheckpointError, ConfigError, ShapeError, did_you_mean, format_names

__all__ = ["MappingReport", "Transform", "apply_rename", "kernel_from_torch", "kernel_to_torch", "load_tensors"]

Transform = Callable[[torch.Tensor], torch.Tensor]  # source tensor -> tensor in the target's layout
_COUNTER = "num_batches_tracked"  # BatchNorm's step counter: no other framework has it


def kernel_to_torch(kernel: torch.Tensor) -> torch.Tensor:
    """A TensorFlow/Keras kernel (spatial axes, then in, then out) in PyTorch's (out, in, *spatial).

    Dense ``(in, out) -> (out, in)``; Conv2D ``(H, W, I, O) -> (O, I, H, W)``; 1-D and 3-D
    convolutions alike. ``kernel_from_torch`` is its inverse.

        >>> kernel_to_torch(torch.zeros(3, 3, 1, 32)).shape
        torch.Size([32, 1, 3, 3])
    """
    _check_kernel_rank(kernel)
    return kernel.permute(kernel.dim() - 1, kernel.dim() - 2, *range(kernel.dim() - 2))


def kernel_from_torch(weight: torch.Tensor) -> torch.Tensor:
    """A PyTorch weight (out, in, *spatial) in TensorFlow/Keras' layout (*spatial, in, out).

        >>> kernel_from_torch(torch.zeros(32, 1, 3, 3)).shape
        torch.Size([3, 3, 1, 32])
    """
    _check_kernel_rank(weight)
    return weight.permute(*range(2, weight.dim()), 1, 0)


def _check_kernel_rank(kernel: torch.Tensor) -> None:
    if not 2 <= kernel.dim() <= 5:
        raise ShapeError(f"a Dense or convolution kernel has 2 to 5 axes, got shape {tuple(kernel.shape)}")


@dataclass
class MappingReport:
    """What a load matched, and what it could not.

    Attributes:
        matched: ``(source key, target key)`` pairs that were (or, on error, would be) loaded.
        missing: target keys nothing was loaded into.
        unexpected: source keys that name nothing in the target.
        mismatched: ``(source key, target key, source shape, target shape)``; the source
            shape is the one stored in the source, before any transpose.
        transposed: target keys whose source was transposed or permuted on the way in.
        ignored: source keys left out on purpose (optimizer state, step counters, ...).
        notes: remarks that are not errors, e.g. a BatchNorm counter kept at its value.
        source: what was loaded (a file name), for messages.
        layout: target layer -> whether what the values cannot show (activation, BatchNorm
            epsilon/momentum, Flatten order) was checked against the source's own record
            ("verified against model.ckpt.meta") or could not be ("not verifiable: ...").
    """

    matched: list[tuple[str, str]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    transposed: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    source: str = "<tensors>"
    layout: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when nothing is missing, unexpected or mismatched."""
        return not (self.missing or self.unexpected or self.mismatched)

    def summary_line(self) -> str:
        status = "ok" if self.ok else "INCOMPLETE"
        return (f"{self.source}: {len(self.matched)} matched, {len(self.missing)} missing, "
                f"{len(self.unexpected)} unexpected, {len(self.mismatched)} mismatched, "
                f"{len(self.transposed)} transposed, {len(self.ignored)} ignored ({status})")

    def __str__(self) -> str:
        lines = [self.summary_line()]
        transposed = set(self.transposed)
        width = max((len(s) for s, _ in self.matched), default=0)
        for source, target in self.matched:
            lines.append(f"  {source.ljust(width)} -> {target}{'  (transposed)' if target in transposed else ''}")
        for source, target, got, want in self.mismatched:
            lines.append(f"  MISMATCHED {source} -> {target}: source {_shape(got)}, target {_shape(want)}")
        if self.missing:
            lines.append(f"  MISSING (nothing loaded into): {', '.join(self.missing)}")
        if self.unexpected:
            lines.append(f"  UNEXPECTED (no target): {', '.join(self.unexpected)}")
        if self.ignored:
            lines.append(f"  ignored: {format_names(self.ignored, limit=8)}")
        lines += [f"  note: {note}" for note in self.notes]
        if self.layout:
            statuses: dict[str, list[str]] = {}
            for layer, status in self.layout.items():
                statuses.setdefault(status, []).append(layer)
            lines += [f"  layout {status}: {format_names(layers, limit=8)}" for status, layers in statuses.items()]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (lists instead of tuples), with ``ok``."""
        return {
            "source": self.source,
            "ok": self.ok,
            "matched": [list(pair) for pair in self.matched],
            "missing": list(self.missing),
            "unexpected": list(self.unexpected),
            "mismatched": [[s, t, list(a), list(b)] for s, t, a, b in self.mismatched],
            "transposed": list(self.transposed),
            "ignored": list(self.ignored),
            "notes": list(self.notes),
            "layout": dict(self.layout),
        }


def apply_rename(keys: Iterable[str], rules: list[tuple[str, str]] | Mapping[str, str]) -> dict[str, str]:
    """Map each key through regex rules: ``{key: new key}``.

    Rules are ``(pattern, replacement)`` pairs (or a dict, in its order). Each rule is
    tried in turn on the name produced so far and applies only when its pattern matches
    the whole name; the replacement may use groups (``\\1``). Keys no rule matches stay as
    they are. Two keys landing on the same name is an error.

        >>> apply_rename(["dnn/hidden1/kernel"], [(r"dnn/(.*)", r"\\1"), (r"(\\w+)/kernel", r"\\1.weight")])
        {'dnn/hidden1/kernel': 'hidden1.weight'}
    """
    compiled = _compile_rules(rules)
    renamed: dict[str, str] = {}
    for key in keys:
        name = key
        for pattern, replacement in compiled:
            match = pattern.fullmatch(name)
            if match:
                name = match.expand(replacement)
        renamed[key] = name
    _check_one_to_one(renamed, "rename")
    return renamed


def _compile_rules(rules: list[tuple[str, str]] | Mapping[str, str]) -> list[tuple[re.Pattern[str], str]]:
    pairs = list(rules.items()) if isinstance(rules, Mapping) else list(rules)
    compiled = []
    for i, pair in enumerate(pairs):
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and all(isinstance(p, str) for p in pair)):
            raise ConfigError(f"rename rule {i} is {pair!r}; expected a (regex, replacement) pair of strings")
        try:
            compiled.append((re.compile(pair[0]), pair[1]))
        except re.error as err:
            raise ConfigError(f"rename rule {i}: {pair[0]!r} is not a valid regex ({err})") from None
    return compiled


def _check_one_to_one(mapping: Mapping[str, str], what: str) -> None:
    seen: dict[str, str] = {}
    for source, target in mapping.items():
        if target in seen:
            raise ConfigError(f"{what}: {seen[target]!r} and {source!r} both map to {target!r}; "
                              f"each target can be loaded from one source only")
        seen[target] = source


def load_tensors(
    module: nn.Module,
    tensors: Mapping[str, torch.Tensor | np.ndarray],
    *,
    strict: bool = True,
    transforms: Mapping[str, Transform] | None = None,
    source: str = "<tensors>",
    rename: Mapping[str, str] | None = None,
) -> MappingReport:
    """Copy ``tensors`` into ``module``'s parameters and buffers, after checking them all.

    Args:
        module: any ``nn.Module``; its ``state_dict()`` keys are the targets.
        tensors: source key -> array (torch or NumPy).
        strict: raise ``CheckpointError`` if anything is missing, unexpected or
            mismatched, leaving ``module`` untouched. With ``strict=False`` what fits is
            loaded and the report says what did not.
        transforms: source key -> function applied to the source tensor before the shape
            check (a transpose, a permute); its target is listed as ``transposed``.
        source: the name of what is loaded (a file), used in messages.
        rename: source key -> target key; keys not in it target the same name.

    Values are converted to each target's dtype and copied in place under ``no_grad``.
    A ``num_batches_tracked`` the source lacks is kept as it is and noted, not missing.

        >>> net = nn.Sequential(nn.Linear(2, 1))
        >>> load_tensors(net, {"0.weight": np.ones((1, 2)), "0.bias": np.zeros(1)}).ok
        True
    """
    rename = dict(rename or {})
    transforms = dict(transforms or {})
    targets = {key: rename.get(key, key) for key in tensors}
    _check_one_to_one(targets, source)
    state = module.state_dict()
    report = MappingReport(source=source)
    ready: dict[str, torch.Tensor] = {}
    for key, value in tensors.items():
        loaded = _prepare(key, targets[key], value, transforms.get(key), state, report)
        if loaded is not None:
            ready[targets[key]] = loaded
    _fill_missing(state, ready, report)
    order = {name: i for i, name in enumerate(state)}
    report.matched.sort(key=lambda pair: order[pair[1]])
    report.transposed.sort(key=order.__getitem__)
    if strict and not report.ok:
        raise CheckpointError(_failure_message(report, module, state, targets, transforms))
    with torch.no_grad():
        for target, value in ready.items():
            state[target].copy_(value)  # state_dict tensors share storage with the module's
    return report


def _prepare(key: str, target: str, value: torch.Tensor | np.ndarray, transform: Transform | None,
             state: Mapping[str, torch.Tensor], report: MappingReport) -> torch.Tensor | None:
    """The tensor to copy into ``target``, or None after noting why it cannot be."""
    if target not in state:
        report.unexpected.append(key)
        return None
    stored = _as_tensor(value)
    tensor: torch.Tensor | None = stored
    if transform is not None:
        try:
            tensor = transform(stored)
        except (ValueError, RuntimeError, IndexError):  # a transpose that does not fit this rank
            tensor = None
    if tensor is None or tuple(tensor.shape) != tuple(state[target].shape):
        report.mismatched.append((key, target, tuple(stored.shape), tuple(state[target].shape)))
        return None
    report.matched.append((key, target))
    if transform is not None:
        report.transposed.append(target)
    return tensor.to(state[target].dtype)


def _as_tensor(value: torch.Tensor | np.ndarray) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.array(value))  # a writable copy: the source may be read-only
    raise ConfigError(f"expected a torch.Tensor or numpy.ndarray, got {type(value).__name__}")


def _fill_missing(state: Mapping[str, torch.Tensor], ready: Mapping[str, torch.Tensor],
                  report: MappingReport) -> None:
    mismatched_targets = {target for _, target, _, _ in report.mismatched}
    for name in state:
        if name in ready or name in mismatched_targets:
            continue
        if name.rsplit(".", 1)[-1] == _COUNTER:
            report.notes.append(f"{name}: not in the source; kept at {int(state[name])}")
        else:
            report.missing.append(name)


def _shape(shape: tuple[int, ...]) -> str:
    return str(tuple(int(s) for s in shape))


def _transformed(shape: tuple[int, ...], transform: Transform | None) -> str:
    """' (transposed: (a, b))' for a source that is transposed on the way in, else ''."""
    if transform is None:
        return ""
    try:
        new_shape = tuple(transform(torch.empty(shape, device="meta")).shape)  # shapes only, no data
    except (ValueError, RuntimeError, IndexError):
        return " (which does not fit its transpose)"
    return f" (transposed: {_shape(new_shape)})"


def _failure_message(report: MappingReport, module: nn.Module, state: Mapping[str, torch.Tensor],
                     targets: Mapping[str, str], transforms: Mapping[str, Transform]) -> str:
    """Every problem, each with the key, shapes, and what exists instead."""
    problems = []
    for source, target, got, want in report.mismatched:
        problems.append(f"  {source!r} -> {target!r}: source shape {_shape(got)}"
                        f"{_transformed(got, transforms.get(source))}, target shape {_shape(want)}")
    if report.missing:
        problems.append(f"  missing (in the model, not in the source): {', '.join(report.missing)}")
    for key in report.unexpected:
        via = f" -> {targets[key]!r}" if targets[key] != key else ""
        problems.append(f"  unexpected {key!r}{via}: no such key in the model."
                        f"{did_you_mean(targets[key], state)}")
    if report.unexpected:
        problems.append(f"  the model has: {format_names(state)}")
    return (f"cannot load {report.source} into {type(module).__name__}: {len(report.missing)} missing, "
            f"{len(report.unexpected)} unexpected, {len(report.mismatched)} mismatched; "
            f"nothing was loaded.\n" + "\n".join(problems) +
            "\nPass rename= rules to map names, or strict=False to load what matches.")
