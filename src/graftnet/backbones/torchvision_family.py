"""torchvision's ResNets as graftnet graphs, with torchvision's layer names and weights files.

The builders make the graph that ``gn.from_torch(torchvision.models.resnet18())`` gives,
without torchvision: the same layer names (``conv1``, ``layer4.1.conv2``, ``fc``), hence the
same state-dict keys, so a torchvision ``state_dict`` (a ``.pth`` read with
``torch.load(weights_only=True)``, or safetensors) loads by name::

    >>> import graftnet as gn
    >>> net = gn.backbones.torchvision_resnet18(weights="resnet18-f37072fd.pth")
    >>> base = gn.backbones.torchvision_resnet50(include_top=False, input_shape=(3, 64, 64),
    ...                                          weights="IMAGENET1K_V2")   # from torch hub's cache
    >>> base.freeze().unfreeze("layer4.*")

Layer names follow torch.fx's naming of torchvision's forward: a block's one ``relu``
module, called two or three times, is ``relu``, ``relu_1`` (, ``relu_2``); ``out +=
identity`` is ``add``; ``torch.flatten`` before ``fc`` is ``flatten``. The ResNet-50 is
torchvision's v1.5 (the stride on ``conv2`` of each Bottleneck).

Weights given by name (``"IMAGENET1K_V1"``, ``"DEFAULT"``) are looked for in torch hub's
checkpoint folder (``$TORCH_HOME/hub/checkpoints``, by default
``~/.cache/torch/hub/checkpoints``) under torchvision's file name, downloaded there from
torchvision's URL when missing (``download=True``), and checked against the SHA-256 prefix
that the file name carries, as torch hub checks it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from graftnet.errors import CheckpointError, ConfigError, did_you_mean
from graftnet.io.mapping import MappingReport, load_tensors
from graftnet.layers import Activation, BatchNorm, Conv2d, Dense, Flatten, GlobalAvgPool, LayerSpec, MaxPool
from graftnet.merge import Add
from graftnet.network import Network

__all__ = ["TORCHVISION_WEIGHTS", "WeightsFile", "hub_checkpoint_dir", "load_torchvision_weights",
           "torchvision_resnet18", "torchvision_resnet34", "torchvision_resnet50"]


@dataclass(frozen=True)
class WeightsFile:
    """One of torchvision's published weights files: where it is and the start of its SHA-256."""

    url: str
    sha256_prefix: str  # the hex digits in the file name, as torch hub checks them

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


# torchvision's canonical files (torchvision.models.ResNet*_Weights); "DEFAULT" is torchvision's default
TORCHVISION_WEIGHTS: dict[str, dict[str, WeightsFile]] = {
    "resnet18": {"IMAGENET1K_V1": WeightsFile("https://download.pytorch.org/models/resnet18-f37072fd.pth", "f37072fd")},
    "resnet34": {"IMAGENET1K_V1": WeightsFile("https://download.pytorch.org/models/resnet34-b627a593.pth", "b627a593")},
    "resnet50": {"IMAGENET1K_V1": WeightsFile("https://download.pytorch.org/models/resnet50-0676ba61.pth", "0676ba61"),
                 "IMAGENET1K_V2": WeightsFile("https://download.pytorch.org/models/resnet50-11ad3fa6.pth", "11ad3fa6")},
}
_DEFAULT = {"resnet18": "IMAGENET1K_V1", "resnet34": "IMAGENET1K_V1", "resnet50": "IMAGENET1K_V2"}
_DEPTHS = {"resnet18": ("basic", [2, 2, 2, 2]), "resnet34": ("basic", [3, 4, 6, 3]),
           "resnet50": ("bottleneck", [3, 4, 6, 3])}
_HEAD = ("fc.weight", "fc.bias")

Weights = str | os.PathLike[str] | Mapping[str, torch.Tensor] | None


# ============================================================================ builders
def torchvision_resnet18(num_classes: int = 1000, include_top: bool = True, weights: Weights = None, *,
                         input_shape: tuple[int, int, int] = (3, 224, 224), pooling: str | None = None,
                         download: bool = True) -> Network:
    """torchvision's ResNet-18 as a graftnet graph (see the module doc for ``weights``).

    Args:
        num_classes: outputs of ``fc``; a weights file made for another number loads all
            but ``fc``, which keeps its fresh initialization (the report says so).
        include_top: keep ``avgpool``, ``flatten`` and ``fc``. Without it the output is
            ``layer4``'s feature map (512, H/32, W/32), or its average with ``pooling="avg"``.
        weights: None (random), a file path, a state dict, or a torchvision weights name.
        input_shape: (3, H, W) of one image; 32x32 is the smallest that keeps layer4 1x1.
        download: fetch a named weights file that is not in torch hub's cache.

    ``net.info["weights"]`` holds the ``MappingReport`` of the load.

        >>> net = torchvision_resnet18(num_classes=10, input_shape=(3, 32, 32))
        >>> net.layer_names[-3:]
        ['avgpool', 'flatten', 'fc']
    """
    return _resnet("resnet18", num_classes, include_top, weights, input_shape, pooling, download)


def torchvision_resnet34(num_classes: int = 1000, include_top: bool = True, weights: Weights = None, *,
                         input_shape: tuple[int, int, int] = (3, 224, 224), pooling: str | None = None,
                         download: bool = True) -> Network:
    """torchvision's ResNet-34 as a graftnet graph; arguments as ``torchvision_resnet18``."""
    return _resnet("resnet34", num_classes, include_top, weights, input_shape, pooling, download)


def torchvision_resnet50(num_classes: int = 1000, include_top: bool = True, weights: Weights = None, *,
                         input_shape: tuple[int, int, int] = (3, 224, 224), pooling: str | None = None,
                         download: bool = True) -> Network:
    """torchvision's ResNet-50 (v1.5) as a graftnet graph; arguments as ``torchvision_resnet18``
    (``layer4`` gives 2048 channels)."""
    return _resnet("resnet50", num_classes, include_top, weights, input_shape, pooling, download)


def _resnet(arch: str, num_classes: int, include_top: bool, weights: Weights, input_shape: tuple[int, ...],
            pooling: str | None, download: bool) -> Network:
    if pooling not in (None, "avg"):
        raise ConfigError(f"pooling={pooling!r}: expected None or 'avg'")
    source = None if weights is None else _weights_source(arch, weights, download)  # before the work of building
    kind, depths = _DEPTHS[arch]
    layers: list[LayerSpec] = [
        Conv2d(64, 7, 2, 3, bias=False, init="he_normal", name="conv1"), BatchNorm(name="bn1"),
        Activation("relu", name="relu"), MaxPool(3, 2, padding=1, name="maxpool")]
    x, channels = "maxpool", 64
    for stage, (width, depth) in enumerate(zip((64, 128, 256, 512), depths), start=1):
        for i in range(depth):
            stride = 2 if stage > 1 and i == 0 else 1
            block = _basic_block if kind == "basic" else _bottleneck
            specs, channels = block(f"layer{stage}.{i}", x, channels, width, stride)
            layers += specs
            x = specs[-1].name  # type: ignore[assignment]
    if include_top or pooling == "avg":
        layers += [GlobalAvgPool(name="avgpool"), Flatten(name="flatten")]
    if include_top:
        layers.append(Dense(num_classes, name="fc"))
    net = Network(layers, input_shape, name=arch)
    if source is not None:
        report = load_torchvision_weights(net, source)
        net.info["weights"] = report.to_dict()
    return net


def _basic_block(path: str, x: str, in_channels: int, width: int, stride: int) -> tuple[list[LayerSpec], int]:
    """conv1 bn1 relu conv2 bn2 [downsample.0 downsample.1] add relu_1."""
    specs: list[LayerSpec] = [
        Conv2d(width, 3, stride, 1, bias=False, init="he_normal", name=f"{path}.conv1", inputs=[x]),
        BatchNorm(name=f"{path}.bn1"), Activation("relu", name=f"{path}.relu"),
        Conv2d(width, 3, 1, 1, bias=False, init="he_normal", name=f"{path}.conv2"), BatchNorm(name=f"{path}.bn2")]
    specs += _residual(path, x, f"{path}.bn2", in_channels, width, stride, "relu_1")
    return specs, width


def _bottleneck(path: str, x: str, in_channels: int, width: int, stride: int) -> tuple[list[LayerSpec], int]:
    """conv1 bn1 relu conv2 (the stride) bn2 relu_1 conv3 bn3 [downsample.0 downsample.1] add relu_2."""
    out_channels = width * 4
    specs: list[LayerSpec] = [
        Conv2d(width, 1, 1, bias=False, init="he_normal", name=f"{path}.conv1", inputs=[x]),
        BatchNorm(name=f"{path}.bn1"), Activation("relu", name=f"{path}.relu"),
        Conv2d(width, 3, stride, 1, bias=False, init="he_normal", name=f"{path}.conv2"),
        BatchNorm(name=f"{path}.bn2"), Activation("relu", name=f"{path}.relu_1"),
        Conv2d(out_channels, 1, 1, bias=False, init="he_normal", name=f"{path}.conv3"),
        BatchNorm(name=f"{path}.bn3")]
    specs += _residual(path, x, f"{path}.bn3", in_channels, out_channels, stride, "relu_2")
    return specs, out_channels


def _residual(path: str, x: str, branch: str, in_channels: int, out_channels: int, stride: int,
              relu: str) -> list[LayerSpec]:
    """The shortcut (a 1x1 conv + BatchNorm where the shape changes), the add and the last relu."""
    specs: list[LayerSpec] = []
    identity = x
    if stride != 1 or in_channels != out_channels:
        specs += [Conv2d(out_channels, 1, stride, bias=False, init="he_normal", name=f"{path}.downsample.0",
                         inputs=[x]), BatchNorm(name=f"{path}.downsample.1")]
        identity = f"{path}.downsample.1"
    return specs + [Add(name=f"{path}.add", inputs=[branch, identity]), Activation("relu", name=f"{path}.{relu}")]


# ============================================================================ weights
def hub_checkpoint_dir() -> Path:
    """torch hub's checkpoint folder: ``$TORCH_HOME/hub/checkpoints`` (TORCH_HOME defaults to
    ``$XDG_CACHE_HOME/torch``, i.e. ``~/.cache/torch``), where torchvision keeps its downloads."""
    home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "torch")
    return Path(home) / "hub" / "checkpoints"


def _weights_source(arch: str, weights: Weights, download: bool) -> Any:
    """A state dict or the path of a file to read it from."""
    if isinstance(weights, Mapping):
        return weights
    text = os.fspath(weights)  # type: ignore[arg-type]
    known = TORCHVISION_WEIGHTS[arch]
    name = _DEFAULT[arch] if text.upper() in ("DEFAULT", "IMAGENET") else text.upper()
    if name in known:
        return _cached_file(known[name], download)
    path = Path(text).expanduser()
    if not path.exists():
        raise CheckpointError(f"weights={text!r}: no such file, and not a torchvision weights name; {arch} has "
                              f"{', '.join(known)} (or 'DEFAULT' = {_DEFAULT[arch]}).{did_you_mean(text.upper(), known)}")
    for file in known.values():  # torchvision's own file under its own name: check its hash
        if path.name == file.filename:
            _check_hash(path, file)
    return path


def _cached_file(file: WeightsFile, download: bool) -> Path:
    folder = hub_checkpoint_dir()
    path = folder / file.filename
    if not path.is_file():
        if not download:
            raise CheckpointError(_offline_message(file, path, "download=False"))
        try:
            folder.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(file.url, str(path), hash_prefix=file.sha256_prefix, progress=False)
        except Exception as err:  # noqa: BLE001 - offline, refused, a proxy: every failure reads the same
            raise CheckpointError(_offline_message(file, path, f"the download failed: {err}")) from None
    _check_hash(path, file)
    return path


def _offline_message(file: WeightsFile, path: Path, why: str) -> str:
    return (f"torchvision weights {file.filename} are not in torch hub's cache ({why}). Download {file.url} "
            f"and put it at {path} (the folder is $TORCH_HOME/hub/checkpoints; TORCH_HOME defaults to "
            f"~/.cache/torch), or pass weights=PATH to the file")


def _check_hash(path: Path, file: WeightsFile) -> None:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    if not digest.hexdigest().startswith(file.sha256_prefix):
        raise CheckpointError(f"{path}: SHA-256 {digest.hexdigest()[:16]}... does not start with "
                              f"{file.sha256_prefix}, the hash in torchvision's name for this file: it is "
                              f"truncated or another file; download {file.url} again")


def load_torchvision_weights(net: Network, source: str | os.PathLike[str] | Mapping[str, torch.Tensor]
                             ) -> MappingReport:
    """Load a torchvision-layout ResNet state dict into ``net`` (a ``torchvision_resnet*``), by name.

    The key map is the identity, except that: a ``num_batches_tracked`` the file lacks (the
    older files) keeps its value; ``fc.weight`` / ``fc.bias`` are left out when ``net`` has no
    ``fc`` (``include_top=False``) or one of another size (``num_classes``), and the report
    says so (``ignored``, ``notes``). Any other missing, unexpected or misshapen key is an
    error and nothing is loaded.

        >>> report = load_torchvision_weights(net, "resnet18-f37072fd.pth")
        >>> report.ok
        True
    """
    from graftnet.io.torch_state import read_state

    if isinstance(source, Mapping):
        tensors, notes, label = dict(source), [], "<state dict>"
    else:
        tensors, notes = read_state(source)
        label = str(source)
    state = net.state_dict()
    dropped, why = [], ""
    head = {k: tensors[k] for k in _HEAD if k in tensors}
    if head and not all(k in state for k in head):
        dropped, why = list(head), "the model has no fc (include_top=False)"
    elif head and any(tuple(v.shape) != tuple(state[k].shape) for k, v in head.items()):
        dropped = list(head)
        why = (f"the file's fc has shape {tuple(head['fc.weight'].shape) if 'fc.weight' in head else '?'}, the "
               f"model's {tuple(state['fc.weight'].shape)} (num_classes); fc keeps its fresh initialization")
    target: nn.Module = net
    if dropped and "fc.weight" in state:
        target = _without(net, "fc")  # the rest must match exactly; fc is not loaded
    report = load_tensors(target, {k: v for k, v in tensors.items() if k not in dropped}, strict=True, source=label)
    report.notes += notes
    if dropped:
        report.ignored += dropped
        report.notes.append(f"left out {', '.join(dropped)}: {why}")
    return report


def _without(net: Network, name: str) -> nn.Module:
    """A module holding all of ``net``'s top-level children but ``name`` (sharing their tensors)."""
    holder = nn.Module()
    for child_name, child in net.named_children():
        if child_name != name:
            holder.add_module(child_name, child)
    return holder

