"""keras.applications' image families as graftnet graphs, with Keras' layer names and weights.

Each builder takes the arguments of its ``keras.applications`` namesake and returns a
:class:`~graftnet.network.Network` whose layers have the same names, the same order (the
order of Keras' ``model.layers``, so ``net.select("layers[15:]")`` picks what
``base.layers[15:]`` picks) and compute the same function, preprocessing layers included
where Keras puts them inside the model (EfficientNet's Rescaling and Normalization)::

    >>> base = vgg16(include_top=False, input_shape=(150, 150, 3), weights="imagenet")
    >>> base.freeze().unfreeze("layers[15:]")   # Keras: for layer in base.layers[15:]: ...
    >>> x = preprocess_input(images, "vgg16")    # images: (N, 3, 150, 150) RGB in [0, 255]

Like Keras, ``input_shape`` is given channels-last, ``(height, width, channels)``; the
network itself is channels-first, as everything in graftnet: feed it ``(N, C, H, W)``
(``x.permute(0, 3, 1, 2)`` of what Keras is fed); a feature map comes out ``(N, C, H, W)``.

``weights`` is ``None`` (random), a path to a weights file that ``keras.applications``
downloads (the legacy HDF5 files holding one group per layer, e.g.
``vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5``; any Keras weights or model file
works), or ``"imagenet"``: the file is looked up in Keras' cache folder
(``$KERAS_HOME/models`` or ``~/.keras/models``, where ``keras.applications`` keeps it) and
downloaded there with its checksum when missing and online. TensorFlow is never needed.

What each family expects as input (``preprocess_input(x, family_or_mode)``):

=================  ==========  ===========================================================
family             mode        what the model expects
=================  ==========  ===========================================================
vgg16, vgg19,      ``caffe``   RGB -> BGR, minus the ImageNet mean pixel
resnet50                       (103.939, 116.779, 123.68), no scaling
mobilenetv2        ``tf``      ``x / 127.5 - 1``: pixels in [-1, 1]
densenet121        ``torch``   ``x / 255``, minus mean (0.485, 0.456, 0.406), divided by
                               std (0.229, 0.224, 0.225), RGB
efficientnetb0     ``none``    raw RGB pixels in [0, 255]: the model rescales and
                               normalises inside (its ``rescaling`` and ``normalization``
                               layers)
=================  ==========  ===========================================================
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from graftnet.errors import CheckpointError, ConfigError, ImportFormatError, format_names
from graftnet.io.download import fetch_verified
from graftnet.io.mapping import MappingReport, load_tensors
from graftnet.layers import (
    Activation,
    AvgPool,
    BatchNorm,
    Conv2d,
    Dense,
    DepthwiseConv2d,
    Dropout,
    Flatten,
    GlobalAvgPool,
    GlobalMaxPool,
    LayerSpec,
    MaxPool,
    Normalization,
    ReLU,
    Rescaling,
    Reshape,
    ZeroPadding2D,
)
from graftnet.merge import Add, Concatenate, Multiply
from graftnet.network import Network

__all__ = [
    "KERAS_WEIGHTS",
    "PREPROCESSING",
    "KerasWeights",
    "densenet121",
    "efficientnetb0",
    "keras_cache_dir",
    "keras_weights_file",
    "load_keras_application_weights",
    "mobilenetv2",
    "preprocess_input",
    "preprocess_mode",
    "resnet50",
    "vgg16",
    "vgg19",
]

Shape = tuple[int, ...]
INPUT_NAME = "input_layer"  # what Keras 3 names a model's Input in a fresh session


# ============================================================ the weights Keras downloads
@dataclass(frozen=True)
class KerasWeights:
    """One weights file of ``keras.applications``: its name in Keras' cache, URL and hash.

    ``file_hash`` is what ``keras.utils.get_file`` checks (md5 for 32 hex digits, sha256
    for 64); ``None`` where Keras publishes none (MobileNetV2).
    """

    file_name: str
    url: str
    file_hash: str | None


_GCS = "https://storage.googleapis.com/tensorflow/keras-applications/"


def _w(subdir: str, file_name: str, file_hash: str | None, base: str = _GCS) -> KerasWeights:
    return KerasWeights(file_name, f"{base}{subdir}{file_name}", file_hash)


# (family, include_top) -> file; hashes and URLs as in keras/src/applications/*.py (Keras 3)
KERAS_WEIGHTS: dict[tuple[str, bool], KerasWeights] = {
    ("vgg16", True): _w("vgg16/", "vgg16_weights_tf_dim_ordering_tf_kernels.h5", "64373286793e3c8b2b4e3219cbf3544b"),
    ("vgg16", False): _w("vgg16/", "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
                         "6d6bbae143d832006294945121d1f1fc"),
    ("vgg19", True): _w("vgg19/", "vgg19_weights_tf_dim_ordering_tf_kernels.h5", "cbe5617147190e668d6c5d5026f83318"),
    ("vgg19", False): _w("vgg19/", "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
                         "253f8cb515780f3b799900260a226db6"),
    ("resnet50", True): _w("resnet/", "resnet50_weights_tf_dim_ordering_tf_kernels.h5",
                           "2cb95161c43110f7111970584f804107"),
    ("resnet50", False): _w("resnet/", "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
                            "4d473c1dd8becc155b73f8504c6f6626"),
    ("efficientnetb0", True): _w("", "efficientnetb0.h5", "902e53a9f72be733fc0bcb005b3ebbac",
                                 base="https://storage.googleapis.com/keras-applications/"),
    ("efficientnetb0", False): _w("", "efficientnetb0_notop.h5", "50bc09e76180e00e4465e1a485ddc09d",
                                  base="https://storage.googleapis.com/keras-applications/"),
    ("densenet121", True): _w("densenet/", "densenet121_weights_tf_dim_ordering_tf_kernels.h5",
                              "9d60b8095a5708f2dcce2bca79d332c7"),
    ("densenet121", False): _w("densenet/", "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5",
                               "30ee3e1110167f948a6b9946edeeb738"),
}
_MOBILENET_V2_ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
_MOBILENET_V2_SIZES = (96, 128, 160, 192, 224)


def _mobilenet_v2_weights(alpha: float, rows: int, include_top: bool) -> KerasWeights:
    """MobileNetV2's files are named by width and input size; Keras publishes no hash for them."""
    file_name = (f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha)}_{rows}.h5" if include_top
                 else f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha)}_{rows}_no_top.h5")
    return _w("mobilenet_v2/", file_name, None)


def keras_cache_dir() -> Path:
    """Where ``keras.utils.get_file`` keeps applications' weights: ``$KERAS_HOME/models``,
    else ``~/.keras/models`` (``/tmp/.keras/models`` when the home folder is not writable)."""
    home = os.environ.get("KERAS_HOME")
    base = Path(home).expanduser() if home else Path("~").expanduser() / ".keras"
    if not home and not os.access(base.parent if not base.exists() else base, os.W_OK):
        base = Path("/tmp/.keras")
    return base / "models"


def keras_weights_file(weights: KerasWeights, *, download: bool = True) -> Path:
    """The local path of ``weights`` in Keras' cache folder, downloaded there if missing.

    Offline, the ``CheckpointError`` names the file, the folder, the URL and the hash.
    """
    return fetch_verified(weights.url, keras_cache_dir() / weights.file_name, file_hash=weights.file_hash,
                          download=download, what="keras.applications weights file")


def load_keras_application_weights(network: Network, path: str | Path) -> MappingReport:
    """Load a ``keras.applications`` weights file into a network built here.

    Legacy HDF5 weights (one group per layer, ``layer_names`` / ``weight_names``, as the
    files Keras downloads are) are matched by layer name; a file whose layer names differ
    (older releases named some layers differently) is matched as Keras itself loads it,
    by the order of the layers that have weights, and the report says so. Within a layer
    the arrays are taken in Keras' order (kernel, bias; gamma, beta, moving mean,
    moving variance). Kernels are converted by the Keras importer's rules. Keras 3 files
    (``.weights.h5``, ``.keras``) go through :func:`~graftnet.io.keras.load_keras_weights`.
    All or nothing: any missing, extra or misshapen array raises and loads nothing.
    """
    # imported here: `import graftnet` must not pay for h5py and the Keras converter
    from graftnet.io.keras import _graftnet_plans, _named_arrays, _read_keras_file, load_keras_weights

    kfile = _read_keras_file(path)
    if kfile.legacy is None:
        return load_keras_weights(network, path)
    source = kfile.source
    stored = [(layer, arrays) for layer, arrays in kfile.legacy.items() if arrays]
    plans = _graftnet_plans(network)
    notes: list[str] = []
    if {layer for layer, _ in stored} == {p.keras_name for p in plans}:
        by_name = dict(stored)
        pairs = [(plan, by_name[plan.keras_name]) for plan in plans]
    elif len(stored) == len(plans):
        pairs = list(zip(plans, (arrays for _, arrays in stored)))
        renamed = [(layer, plan.keras_name) for plan, (layer, _) in zip(plans, stored) if layer != plan.keras_name]
        notes.append(f"the file names {len(renamed)} layer(s) differently (e.g. {renamed[0][0]!r} for "
                     f"{renamed[0][1]!r}); matched by the order of the layers with weights, as Keras loads it")
    else:
        mine = [p.keras_name for p in plans]
        theirs = [layer for layer, _ in stored]
        raise CheckpointError(
            f"{source} holds weights for {len(theirs)} layers ({format_names(theirs, limit=6)}); network "
            f"{network.name!r} has {len(mine)} layers with weights ({format_names(mine, limit=6)}). Missing from "
            f"the file: {format_names([n for n in mine if n not in theirs], limit=6) or 'none'}; not in the "
            f"network: {format_names([n for n in theirs if n not in mine], limit=6) or 'none'}. Is it the file for "
            f"this family, with{'out' if 'predictions' not in mine else ''} the top?")
    tensors: dict[str, Any] = {}
    rename: dict[str, str] = {}
    transforms: dict[str, Any] = {}
    for plan, arrays in pairs:
        if len(arrays) != len(plan.weights):
            raise CheckpointError(f"{source}: layer {plan.keras_name!r} ({plan.keras_class}) holds "
                                  f"{len(arrays)} arrays ({', '.join(n for n, _ in arrays)}); it needs "
                                  f"{len(plan.weights)} ({', '.join(plan.weights)})")
        named = _named_arrays(plan, [(str(i), a) for i, (_, a) in enumerate(arrays)], source)  # Keras' order
        for weight, array in named.items():
            if weight in plan.dropped:
                continue
            key = f"{plan.keras_name}/{weight}"
            tensors[key], rename[key] = array, f"{plan.keras_name}.{plan.targets[weight]}"
            if weight in plan.transforms:
                transforms[key] = plan.transforms[weight]
    report = load_tensors(network, tensors, strict=True, transforms=transforms, source=source, rename=rename)
    report.notes += notes
    return report


# ============================================================ preprocessing conventions
PREPROCESSING = {"vgg16": "caffe", "vgg19": "caffe", "resnet50": "caffe", "mobilenetv2": "tf",
                 "densenet121": "torch", "efficientnetb0": "none"}
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
_TORCH_MEAN, _TORCH_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def preprocess_input(x: torch.Tensor | np.ndarray, mode: str) -> torch.Tensor | np.ndarray:
    """What ``keras.applications.<family>.preprocess_input`` does, on channels-first images.

    ``x``: RGB pixels in [0, 255], ``(N, 3, H, W)`` or ``(3, H, W)`` (a tensor or an array;
    the result is of the same kind, float32). ``mode`` is a family (``"vgg16"``, ...) or a
    convention: ``"caffe"`` (BGR, mean pixel subtracted), ``"tf"`` ([-1, 1]), ``"torch"``
    ([0, 1], then ImageNet mean/std), ``"none"``.

        >>> preprocess_input(torch.full((1, 3, 2, 2), 255.0), "tf")[0, :, 0, 0]
        tensor([1., 1., 1.])
    """
    mode = PREPROCESSING.get(mode, mode)
    if mode not in ("caffe", "tf", "torch", "none"):
        raise ConfigError(f"preprocess_input: unknown mode {mode!r}; expected a family "
                          f"({', '.join(PREPROCESSING)}) or one of 'caffe', 'tf', 'torch', 'none'")
    is_numpy = isinstance(x, np.ndarray)
    t = torch.as_tensor(np.asarray(x) if is_numpy else x).float()
    if t.dim() not in (3, 4) or t.shape[-3] != 3:
        raise ConfigError(f"preprocess_input expects channels-first RGB images, (N, 3, H, W) or (3, H, W); "
                          f"got shape {tuple(t.shape)}")
    view = (3, 1, 1)
    if mode == "tf":
        out = t / 127.5 - 1.0
    elif mode == "torch":
        out = (t / 255.0 - torch.tensor(_TORCH_MEAN).view(view)) / torch.tensor(_TORCH_STD).view(view)
    elif mode == "caffe":
        out = t.flip(-3) - torch.tensor(_CAFFE_MEAN_BGR).view(view)  # RGB -> BGR, then zero-centre
    else:
        out = t.clone()
    return out.numpy() if is_numpy else out


def preprocess_mode(network: Any) -> str:
    """The ``preprocess_input`` mode of a network built by ``graftnet.backbones`` (or holding one
    as a block, as ``Network([Block(vgg16(...)), Flatten(), ...])`` does): ``"caffe"`` for VGG16.

    Read from ``network.info["backbone"]`` (or ``info["preprocess_input"]``, which a model
    saved after training on preprocessed images keeps), then from the blocks' networks.

        >>> preprocess_mode(vgg16(include_top=False, input_shape=(32, 32, 3), weights=None))
        'caffe'
    """
    from graftnet.network import Block

    found = _own_mode(network)
    if found is not None:
        return found
    for spec in getattr(network, "specs", []):
        if isinstance(spec, Block) and isinstance(spec.network, Network):
            found = _own_mode(spec.network)
            if found is not None:
                return found
    name = getattr(network, "name", type(network).__name__)
    raise ConfigError(f"network {name!r} does not say how its inputs are preprocessed (no "
                      f"info['backbone']['preprocess_input'] on it or its blocks); pass the mode: one of "
                      f"'caffe', 'torch', 'tf', 'none' (families: {', '.join(f'{k}={v}' for k, v in PREPROCESSING.items())})")


def _own_mode(network: Any) -> str | None:
    info = getattr(network, "info", None) or {}
    mode = info.get("preprocess_input") or (info.get("backbone") or {}).get("preprocess_input")
    return str(mode) if mode else None


# ============================================================ building graphs as Keras does
class _Graph:
    """Layers added as Keras' functional API adds them: ``x = g(Conv2d(...), x)``.

    Keeps each tensor's shape (the builders need it, as Keras' code reads ``x.shape``) and
    orders the layers as Keras' ``model.layers`` lists them at the end.
    """

    def __init__(self, input_shape: Shape) -> None:
        self.input = INPUT_NAME
        self.shape: dict[str, Shape] = {INPUT_NAME: input_shape}
        self.specs: dict[str, LayerSpec] = {}

    def __call__(self, spec: LayerSpec, *inputs: str) -> str:
        assert spec.name and spec.name not in self.specs, spec.name
        spec.inputs = list(inputs)
        in_shapes = [self.shape[i] for i in inputs]
        self.shape[spec.name] = spec.output_shape(in_shapes) if spec.merges else spec.output_shape(in_shapes[0])
        self.specs[spec.name] = spec
        return spec.name

    def network(self, output: str, name: str) -> Network:
        ordered = _keras_order(self.specs, output)
        previous = INPUT_NAME
        for spec in ordered:  # a chain's spec does not spell out "the layer before"
            if spec.inputs == [previous]:
                spec.inputs = None
            previous = spec.name  # type: ignore[assignment]
        return Network(ordered, self.shape[INPUT_NAME], name=name, input_name=INPUT_NAME,
                       block_inputs={"": INPUT_NAME})


def _keras_order(specs: dict[str, LayerSpec], output: str) -> list[LayerSpec]:
    """The order of Keras' ``Functional.layers`` (``keras.src.ops.function.map_graph``).

    A depth-first walk from the output numbers the layers in the order it first meets
    them; each layer's depth is its longest distance to the output; layers are listed by
    decreasing depth, ties in walk order.
    """
    first_seen: dict[str, int] = {}
    finished: list[str] = []
    done: set[str] = set()
    stack: list[tuple[str, int]] = [(output, 0)]
    while stack:  # iterative depth-first walk (DenseNet is 400 layers deep)
        name, k = stack.pop()
        if k == 0:
            if name in done:
                continue
            first_seen.setdefault(name, len(first_seen))
        parents = specs[name].inputs or [] if name in specs else []
        if k < len(parents):
            stack.append((name, k + 1))
            if parents[k] not in done:
                stack.append((parents[k], 0))
        elif name not in done:
            done.add(name)
            finished.append(name)
    depth: dict[str, int] = {}
    for name in reversed(finished):
        d = depth.setdefault(name, 0)
        for parent in (specs[name].inputs or [] if name in specs else []):
            depth[parent] = max(d + 1, depth.get(parent, 0))
    names = sorted((n for n in finished if n in specs), key=lambda n: (-depth[n], first_seen[n]))
    return [specs[n] for n in names]


def _input_shape(input_shape: Sequence[int] | None, *, default_size: int, include_top: bool, weights: Any,
                 family: str) -> Shape:
    """Keras' ``obtain_input_shape`` for channels-last: (H, W, C) given, (C, H, W) returned."""
    default = (default_size, default_size, 3)
    if input_shape is None:
        shape = default
    else:
        shape = tuple(int(v) for v in input_shape)
        if len(shape) != 3:
            raise ConfigError(f"{family}: input_shape must be (height, width, channels) as in Keras, "
                              f"got {input_shape!r}")
        if weights is not None and shape[2] != 3:
            raise ConfigError(f"{family}: input_shape={input_shape!r} has {shape[2]} channels; pretrained weights "
                              f"need 3 (RGB), given as Keras does, channels last: (height, width, 3)")
        if shape[0] < 32 or shape[1] < 32:
            hint = " (channels first? Keras' order is (height, width, channels))" if shape[0] in (1, 3) else ""
            raise ConfigError(f"{family}: input size must be at least 32x32, got input_shape={input_shape!r}{hint}")
        if include_top and weights == "imagenet" and shape != default:
            raise ConfigError(f"{family}: with include_top=True and weights='imagenet', input_shape must be "
                              f"{default}, got {input_shape!r}")
    return (shape[2], shape[0], shape[1])


def _check_weights(weights: Any, include_top: bool, classes: int, family: str) -> None:
    if weights is not None and weights != "imagenet" and not Path(weights).expanduser().is_file():
        raise ConfigError(f"{family}: weights={str(weights)!r} is not a file; expected None (random), 'imagenet' "
                          f"(looked up in {keras_cache_dir()}) or the path to a Keras weights file")
    if weights == "imagenet" and include_top and classes != 1000:
        raise ConfigError(f"{family}: with weights='imagenet' and include_top=True, classes must be 1000, "
                          f"got {classes}")


def _finish(g: _Graph, x: str, name: str, family: str, weights: Any, files: KerasWeights | None,
            download: bool) -> Network:
    net = g.network(x, name)
    path = None
    if weights == "imagenet":
        assert files is not None
        path = keras_weights_file(files, download=download)
    elif weights is not None:
        path = Path(weights).expanduser()
    if path is not None:
        load_keras_application_weights(net, path)
    net.info["backbone"] = {"family": family, "from": "keras.applications", "preprocess_input": PREPROCESSING[family],
                            "weights": None if path is None else str(path)}
    return net


def _pooling(g: _Graph, x: str, pooling: str | None, avg: str, max_: str) -> str:
    if pooling == "avg":
        return g(GlobalAvgPool(name=avg), x)
    if pooling == "max":
        return g(GlobalMaxPool(name=max_), x)
    if pooling is not None:
        raise ConfigError(f"pooling must be None, 'avg' or 'max', got {pooling!r}")
    return x


def _classifier(activation: str | None) -> str | None:
    return None if activation in (None, "linear") else activation


def _bn(name: str, eps: float = 1e-3, momentum: float = 0.99) -> BatchNorm:
    """Keras' BatchNormalization (its momentum 0.99 is PyTorch's 0.01)."""
    return BatchNorm(momentum=round(1.0 - momentum, 12), eps=eps, name=name)


# ============================================================ VGG
def _vgg(family: str, convs: Sequence[int], include_top: bool, weights: Any, input_shape: Sequence[int] | None,
         pooling: str | None, classes: int, classifier_activation: str | None, name: str, download: bool) -> Network:
    _check_weights(weights, include_top, classes, family)
    g = _Graph(_input_shape(input_shape, default_size=224, include_top=include_top, weights=weights, family=family))
    x = g.input
    for block, (n, filters) in enumerate(zip(convs, (64, 128, 256, 512, 512)), start=1):
        for i in range(1, n + 1):
            x = g(Conv2d(filters, 3, padding="same", activation="relu", name=f"block{block}_conv{i}"), x)
        x = g(MaxPool(2, 2, name=f"block{block}_pool"), x)
    if include_top:
        x = g(Flatten(channels_last=True, name="flatten"), x)  # Keras flattens (H, W, C)
        x = g(Dense(4096, "relu", name="fc1"), x)
        x = g(Dense(4096, "relu", name="fc2"), x)
        x = g(Dense(classes, _classifier(classifier_activation), name="predictions"), x)
    else:
        x = _pooling(g, x, pooling, "global_average_pooling2d", "global_max_pooling2d")
    return _finish(g, x, name, family, weights, KERAS_WEIGHTS[(family, include_top)], download)


def vgg16(include_top: bool = True, weights: str | Path | None = "imagenet", input_shape: Sequence[int] | None = None,
          pooling: str | None = None, classes: int = 1000, classifier_activation: str | None = "softmax",
          name: str = "vgg16", *, download: bool = True) -> Network:
    """``keras.applications.VGG16``: 13 convolutions in 5 blocks (``block1_conv1`` ...
    ``block5_pool``), then ``flatten``, ``fc1``, ``fc2``, ``predictions`` with the top.
    Input: ``preprocess_input(x, "vgg16")`` (caffe).

        >>> base = vgg16(include_top=False, input_shape=(150, 150, 3), weights=None)
        >>> base.output_shape
        (512, 4, 4)
    """
    return _vgg("vgg16", (2, 2, 3, 3, 3), include_top, weights, input_shape, pooling, classes,
                classifier_activation, name, download)


def vgg19(include_top: bool = True, weights: str | Path | None = "imagenet", input_shape: Sequence[int] | None = None,
          pooling: str | None = None, classes: int = 1000, classifier_activation: str | None = "softmax",
          name: str = "vgg19", *, download: bool = True) -> Network:
    """``keras.applications.VGG19``: as VGG16 with 4 convolutions in blocks 3-5.
    Input: ``preprocess_input(x, "vgg19")`` (caffe)."""
    return _vgg("vgg19", (2, 2, 4, 4, 4), include_top, weights, input_shape, pooling, classes,
                classifier_activation, name, download)


# ============================================================ ResNet50
def _residual_block(g: _Graph, x: str, filters: int, stride: int, conv_shortcut: bool, name: str) -> str:
    """Keras' ``residual_block_v1``: 1x1 -> 3x3 -> 1x1 (x4) bottleneck plus a shortcut."""
    if conv_shortcut:
        shortcut = g(Conv2d(4 * filters, 1, stride, name=f"{name}_0_conv"), x)
        shortcut = g(_bn(f"{name}_0_bn", 1.001e-5), shortcut)
    else:
        shortcut = x
    x = g(Conv2d(filters, 1, stride, name=f"{name}_1_conv"), x)
    x = g(_bn(f"{name}_1_bn", 1.001e-5), x)
    x = g(Activation("relu", name=f"{name}_1_relu"), x)
    x = g(Conv2d(filters, 3, padding="same", name=f"{name}_2_conv"), x)
    x = g(_bn(f"{name}_2_bn", 1.001e-5), x)
    x = g(Activation("relu", name=f"{name}_2_relu"), x)
    x = g(Conv2d(4 * filters, 1, name=f"{name}_3_conv"), x)
    x = g(_bn(f"{name}_3_bn", 1.001e-5), x)
    x = g(Add(name=f"{name}_add"), shortcut, x)
    return g(Activation("relu", name=f"{name}_out"), x)


def resnet50(include_top: bool = True, weights: str | Path | None = "imagenet",
             input_shape: Sequence[int] | None = None, pooling: str | None = None, classes: int = 1000,
             classifier_activation: str | None = "softmax", name: str = "resnet50", *,
             download: bool = True) -> Network:
    """``keras.applications.ResNet50``: ``conv1_*``, ``pool1_*``, then stages ``conv2`` ...
    ``conv5`` of bottleneck blocks (``conv4_block6_out`` ends stage 4), ``avg_pool`` and
    ``predictions`` with the top. Input: ``preprocess_input(x, "resnet50")`` (caffe).

        >>> resnet50(include_top=False, input_shape=(64, 64, 3), weights=None).output_shape
        (2048, 2, 2)
    """
    family = "resnet50"
    _check_weights(weights, include_top, classes, family)
    g = _Graph(_input_shape(input_shape, default_size=224, include_top=include_top, weights=weights, family=family))
    x = g(ZeroPadding2D(((3, 3), (3, 3)), name="conv1_pad"), g.input)
    x = g(Conv2d(64, 7, 2, name="conv1_conv"), x)
    x = g(_bn("conv1_bn", 1.001e-5), x)
    x = g(Activation("relu", name="conv1_relu"), x)
    x = g(ZeroPadding2D(((1, 1), (1, 1)), name="pool1_pad"), x)
    x = g(MaxPool(3, 2, name="pool1_pool"), x)
    for stage, (filters, blocks, stride) in enumerate(((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)), start=2):
        x = _residual_block(g, x, filters, stride, True, f"conv{stage}_block1")
        for i in range(2, blocks + 1):
            x = _residual_block(g, x, filters, 1, False, f"conv{stage}_block{i}")
    if include_top:
        x = g(GlobalAvgPool(name="avg_pool"), x)
        x = g(Dense(classes, _classifier(classifier_activation), name="predictions"), x)
    else:
        x = _pooling(g, x, pooling, "avg_pool", "max_pool")
    return _finish(g, x, name, family, weights, KERAS_WEIGHTS[(family, include_top)], download)


# ============================================================ MobileNetV2
def _make_divisible(v: float, divisor: int = 8) -> int:
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v  # never round down by more than 10%


def _correct_pad(hw: Shape, kernel: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """Keras' ``imagenet_utils.correct_pad``: the zero padding before a stride-2 convolution."""
    adjust = (1 - hw[0] % 2, 1 - hw[1] % 2)
    correct = kernel // 2
    return ((correct - adjust[0], correct), (correct - adjust[1], correct))


def _relu6(name: str) -> ReLU:
    return ReLU(max_value=6.0, name=name)


def _inverted_res_block(g: _Graph, inputs: str, expansion: int, stride: int, alpha: float, filters: int,
                        block_id: int) -> str:
    """Keras' MobileNetV2 ``_inverted_res_block``: expand (1x1), depthwise 3x3, project (1x1)."""
    in_channels = g.shape[inputs][0]
    pointwise_filters = _make_divisible(int(filters * alpha), 8)
    x = inputs
    prefix = f"block_{block_id}_"
    if block_id:
        x = g(Conv2d(expansion * in_channels, 1, padding="same", bias=False, name=f"{prefix}expand"), x)
        x = g(_bn(f"{prefix}expand_BN", 1e-3, 0.999), x)
        x = g(_relu6(f"{prefix}expand_relu"), x)
    else:
        prefix = "expanded_conv_"
    if stride == 2:
        x = g(ZeroPadding2D(_correct_pad(g.shape[x][1:], 3), name=f"{prefix}pad"), x)
    x = g(DepthwiseConv2d(3, stride, padding="same" if stride == 1 else "valid", bias=False,
                          name=f"{prefix}depthwise"), x)
    x = g(_bn(f"{prefix}depthwise_BN", 1e-3, 0.999), x)
    x = g(_relu6(f"{prefix}depthwise_relu"), x)
    x = g(Conv2d(pointwise_filters, 1, padding="same", bias=False, name=f"{prefix}project"), x)
    x = g(_bn(f"{prefix}project_BN", 1e-3, 0.999), x)
    if in_channels == pointwise_filters and stride == 1:
        return g(Add(name=f"{prefix}add"), inputs, x)
    return x


_MOBILENET_V2_BLOCKS = (  # (filters, stride, expansion) of blocks 0..16
    (16, 1, 1), (24, 2, 6), (24, 1, 6), (32, 2, 6), (32, 1, 6), (32, 1, 6), (64, 2, 6), (64, 1, 6), (64, 1, 6),
    (64, 1, 6), (96, 1, 6), (96, 1, 6), (96, 1, 6), (160, 2, 6), (160, 1, 6), (160, 1, 6), (320, 1, 6))


def mobilenetv2(input_shape: Sequence[int] | None = None, alpha: float = 1.0, include_top: bool = True,
                weights: str | Path | None = "imagenet", pooling: str | None = None, classes: int = 1000,
                classifier_activation: str | None = "softmax", name: str | None = None, *,
                download: bool = True) -> Network:
    """``keras.applications.MobileNetV2``: ``Conv1``, 17 inverted residual blocks
    (``expanded_conv_*``, ``block_1_*`` ... ``block_16_*``), ``Conv_1``, ``out_relu``, then
    ``global_average_pooling2d`` and ``predictions`` with the top. Named, as in Keras,
    ``mobilenetv2_<alpha>_<rows>``. Input: ``preprocess_input(x, "mobilenetv2")`` (tf).
    """
    family = "mobilenetv2"
    _check_weights(weights, include_top, classes, family)
    default_size = 224
    if input_shape is not None and len(input_shape) == 3 and input_shape[0] == input_shape[1] \
            and input_shape[0] in _MOBILENET_V2_SIZES:
        default_size = int(input_shape[0])
    shape = _input_shape(input_shape, default_size=default_size, include_top=include_top, weights=weights,
                         family=family)
    rows = shape[1]
    if weights == "imagenet":
        if alpha not in _MOBILENET_V2_ALPHAS:
            raise ConfigError(f"mobilenetv2: ImageNet weights exist for alpha in {_MOBILENET_V2_ALPHAS}, got {alpha}")
        if shape[1] != shape[2] or rows not in _MOBILENET_V2_SIZES:
            rows = 224  # as Keras: the 224 weights are loaded (with a warning there)
    g = _Graph(shape)
    x = g(Conv2d(_make_divisible(32 * alpha, 8), 3, 2, padding="same", bias=False, name="Conv1"), g.input)
    x = g(_bn("bn_Conv1", 1e-3, 0.999), x)
    x = g(_relu6("Conv1_relu"), x)
    for block_id, (filters, stride, expansion) in enumerate(_MOBILENET_V2_BLOCKS):
        x = _inverted_res_block(g, x, expansion, stride, alpha, filters, block_id)
    last = _make_divisible(1280 * alpha, 8) if alpha > 1.0 else 1280
    x = g(Conv2d(last, 1, bias=False, name="Conv_1"), x)
    x = g(_bn("Conv_1_bn", 1e-3, 0.999), x)
    x = g(_relu6("out_relu"), x)
    if include_top:
        x = g(GlobalAvgPool(name="global_average_pooling2d"), x)
        x = g(Dense(classes, _classifier(classifier_activation), name="predictions"), x)
    else:
        x = _pooling(g, x, pooling, "global_average_pooling2d", "global_max_pooling2d")
    name = name or f"mobilenetv2_{alpha:0.2f}_{rows}"
    return _finish(g, x, name, family, weights, _mobilenet_v2_weights(alpha, rows, include_top), download)


# ============================================================ EfficientNetB0
_EFFICIENTNET_BLOCKS = (  # kernel, repeats, filters in, filters out, expand ratio, stride (se_ratio 0.25)
    (3, 1, 32, 16, 1, 1), (3, 2, 16, 24, 6, 2), (5, 2, 24, 40, 6, 2), (3, 3, 40, 80, 6, 2),
    (5, 3, 80, 112, 6, 1), (5, 4, 112, 192, 6, 2), (3, 1, 192, 320, 6, 1))
_IMAGENET_STDDEV_RGB = (0.229, 0.224, 0.225)


def _efficientnet_block(g: _Graph, inputs: str, drop_rate: float, name: str, filters_in: int, filters_out: int,
                        kernel_size: int, strides: int, expand_ratio: int, se_ratio: float = 0.25) -> str:
    """Keras' EfficientNet ``block``: expand, depthwise, squeeze-excite, project (+ skip)."""
    filters = filters_in * expand_ratio
    x = inputs
    if expand_ratio != 1:
        x = g(Conv2d(filters, 1, padding="same", bias=False, name=f"{name}expand_conv"), x)
        x = g(_bn(f"{name}expand_bn"), x)
        x = g(Activation("silu", name=f"{name}expand_activation"), x)
    if strides == 2:
        x = g(ZeroPadding2D(_correct_pad(g.shape[x][1:], kernel_size), name=f"{name}dwconv_pad"), x)
    x = g(DepthwiseConv2d(kernel_size, strides, padding="valid" if strides == 2 else "same", bias=False,
                          name=f"{name}dwconv"), x)
    x = g(_bn(f"{name}bn"), x)
    x = g(Activation("silu", name=f"{name}activation"), x)
    filters_se = max(1, int(filters_in * se_ratio))
    se = g(GlobalAvgPool(name=f"{name}se_squeeze"), x)
    se = g(Reshape((filters, 1, 1), channels_last=True, name=f"{name}se_reshape"), se)  # Keras: (1, 1, filters)
    se = g(Conv2d(filters_se, 1, padding="same", activation="silu", name=f"{name}se_reduce"), se)
    se = g(Conv2d(filters, 1, padding="same", activation="sigmoid", name=f"{name}se_expand"), se)
    x = g(Multiply(name=f"{name}se_excite"), x, se)
    x = g(Conv2d(filters_out, 1, padding="same", bias=False, name=f"{name}project_conv"), x)
    x = g(_bn(f"{name}project_bn"), x)
    if strides == 1 and filters_in == filters_out:
        if drop_rate > 0:
            # Keras drops whole examples here (noise_shape=(None, 1, 1, 1)); graftnet's Dropout drops
            # values independently. Identical at inference; training differs in the noise only.
            x = g(Dropout(drop_rate, name=f"{name}drop"), x)
        x = g(Add(name=f"{name}add"), x, inputs)
    return x


def efficientnetb0(include_top: bool = True, weights: str | Path | None = "imagenet",
                   input_shape: Sequence[int] | None = None, pooling: str | None = None, classes: int = 1000,
                   classifier_activation: str | None = "softmax", name: str = "efficientnetb0", *,
                   download: bool = True) -> Network:
    """``keras.applications.EfficientNetB0``: ``rescaling`` (1/255) and ``normalization``
    (ImageNet mean and variance, loaded with the weights) inside the model, ``stem_*``,
    blocks ``block1a_*`` ... ``block7a_*``, ``top_*``, then ``avg_pool``, ``top_dropout``,
    ``predictions`` with the top. Feed raw RGB pixels in [0, 255] (``preprocess_input`` is
    the identity). With ``weights="imagenet"`` Keras adds a third preprocessing layer,
    ``rescaling_1`` (1/sqrt(ImageNet std) per channel, its fix for the normalisation the
    original weights expect); so does this builder. With a path, as in Keras, it does not.
    """
    family = "efficientnetb0"
    _check_weights(weights, include_top, classes, family)
    g = _Graph(_input_shape(input_shape, default_size=224, include_top=include_top, weights=weights, family=family))
    x = g(Rescaling(1.0 / 255.0, name="rescaling"), g.input)
    x = g(Normalization(axis=1, name="normalization"), x)
    if weights == "imagenet":
        x = g(Rescaling(tuple(1.0 / math.sqrt(s) for s in _IMAGENET_STDDEV_RGB), name="rescaling_1"), x)
    x = g(ZeroPadding2D(_correct_pad(g.shape[x][1:], 3), name="stem_conv_pad"), x)
    x = g(Conv2d(32, 3, 2, padding="valid", bias=False, name="stem_conv"), x)
    x = g(_bn("stem_bn"), x)
    x = g(Activation("silu", name="stem_activation"), x)
    total = float(sum(repeats for _, repeats, *_ in _EFFICIENTNET_BLOCKS))
    b = 0
    for i, (kernel, repeats, filters_in, filters_out, expand, stride) in enumerate(_EFFICIENTNET_BLOCKS):
        for j in range(repeats):
            x = _efficientnet_block(g, x, 0.2 * b / total, f"block{i + 1}{chr(j + 97)}_",
                                    filters_in if j == 0 else filters_out, filters_out, kernel,
                                    stride if j == 0 else 1, expand)
            b += 1
    x = g(Conv2d(1280, 1, padding="same", bias=False, name="top_conv"), x)
    x = g(_bn("top_bn"), x)
    x = g(Activation("silu", name="top_activation"), x)
    if include_top:
        x = g(GlobalAvgPool(name="avg_pool"), x)
        x = g(Dropout(0.2, name="top_dropout"), x)
        x = g(Dense(classes, _classifier(classifier_activation), name="predictions"), x)
    else:
        x = _pooling(g, x, pooling, "avg_pool", "max_pool")
    return _finish(g, x, name, family, weights, KERAS_WEIGHTS[(family, include_top)], download)


# ============================================================ DenseNet121
def _dense_conv_block(g: _Graph, x: str, growth_rate: int, name: str) -> str:
    x1 = g(_bn(f"{name}_0_bn", 1.001e-5), x)
    x1 = g(Activation("relu", name=f"{name}_0_relu"), x1)
    x1 = g(Conv2d(4 * growth_rate, 1, bias=False, name=f"{name}_1_conv"), x1)
    x1 = g(_bn(f"{name}_1_bn", 1.001e-5), x1)
    x1 = g(Activation("relu", name=f"{name}_1_relu"), x1)
    x1 = g(Conv2d(growth_rate, 3, padding="same", bias=False, name=f"{name}_2_conv"), x1)
    return g(Concatenate(axis=1, name=f"{name}_concat"), x, x1)  # Keras' channel axis 3 is torch's 1


def _transition_block(g: _Graph, x: str, reduction: float, name: str) -> str:
    x = g(_bn(f"{name}_bn", 1.001e-5), x)
    x = g(Activation("relu", name=f"{name}_relu"), x)
    x = g(Conv2d(int(g.shape[x][0] * reduction), 1, bias=False, name=f"{name}_conv"), x)
    return g(AvgPool(2, 2, name=f"{name}_pool"), x)


def densenet121(include_top: bool = True, weights: str | Path | None = "imagenet",
                input_shape: Sequence[int] | None = None, pooling: str | None = None, classes: int = 1000,
                classifier_activation: str | None = "softmax", name: str = "densenet121", *,
                download: bool = True) -> Network:
    """``keras.applications.DenseNet121``: ``conv1_*``, ``pool1``, dense blocks ``conv2``
    ... ``conv5`` (6, 12, 24, 16 blocks) with transitions ``pool2`` ... ``pool4``, ``bn``,
    ``relu``, then ``avg_pool`` and ``predictions`` with the top. The two unnamed paddings
    are ``zero_padding2d`` and ``zero_padding2d_1``, as Keras names them in a fresh session.
    Input: ``preprocess_input(x, "densenet121")`` (torch).
    """
    family = "densenet121"
    _check_weights(weights, include_top, classes, family)
    g = _Graph(_input_shape(input_shape, default_size=224, include_top=include_top, weights=weights, family=family))
    x = g(ZeroPadding2D(((3, 3), (3, 3)), name="zero_padding2d"), g.input)
    x = g(Conv2d(64, 7, 2, bias=False, name="conv1_conv"), x)
    x = g(_bn("conv1_bn", 1.001e-5), x)
    x = g(Activation("relu", name="conv1_relu"), x)
    x = g(ZeroPadding2D(((1, 1), (1, 1)), name="zero_padding2d_1"), x)
    x = g(MaxPool(3, 2, name="pool1"), x)
    for stage, blocks in enumerate((6, 12, 24, 16), start=2):
        for i in range(1, blocks + 1):
            x = _dense_conv_block(g, x, 32, f"conv{stage}_block{i}")
        if stage < 5:
            x = _transition_block(g, x, 0.5, f"pool{stage}")
    x = g(_bn("bn", 1.001e-5), x)
    x = g(Activation("relu", name="relu"), x)
    if include_top:
        x = g(GlobalAvgPool(name="avg_pool"), x)
        x = g(Dense(classes, _classifier(classifier_activation), name="predictions"), x)
    else:
        x = _pooling(g, x, pooling, "avg_pool", "max_pool")
    return _finish(g, x, name, family, weights, KERAS_WEIGHTS[(family, include_top)], download)
