"""Datasets as tensors plus class names, their loaders, and class-subset tasks.

A :class:`Dataset` holds up to three :class:`Split` s (train, valid, test) of
tensors, the class names and the task kind, and a JSON-able ``source`` that records
where the data came from and every transform applied since, so a saved model can say
exactly what it was trained on.

    >>> import graftnet.data as gd
    >>> fashion = gd.fashion_mnist()                     # 55,000 / 5,000 / 10,000
    >>> task_a = fashion.without_classes(["Sandal", "Shirt"])
    >>> task_b = fashion.only_classes(["Sandal", "Shirt"]).as_binary("Shirt").head(train=200)
    >>> task_b.train.x.shape, task_b.task
    (torch.Size([200, 1, 28, 28]), 'binary')
    >>> gd.load("fashion:B").source["transforms"][-1]
    {'op': 'head', 'train': 200}

Images are float32 ``(N, C, H, W)`` scaled to [0, 1]; tabular data is ``(N, F)``.
Labels are int64 class indices (multiclass), float32 0/1 (binary) or float32 targets
(regression).
"""

from __future__ import annotations

import copy
import gzip
import hashlib
import json
import logging
import os
import re
import shutil
import urllib.error
import urllib.request
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from graftnet.errors import DataError, did_you_mean, format_names

log = logging.getLogger("graftnet")

__all__ = [
    "Split",
    "Dataset",
    "fashion_mnist",
    "mnist",
    "mnist_split2",
    "digits",
    "from_arrays",
    "from_npz",
    "save_npz",
    "image_folder",
    "load",
    "read_idx",
    "find_idx_dir",
    "download_idx",
    "locate_idx",
    "dataset_dir",
    "env_data_root",
    "IDX_FILES",
    "FASHION_MNIST_CLASSES",
    "MNIST_CLASSES",
    "LOAD_FORMS",
    "TASKS",
]

TASKS = ("multiclass", "binary", "regression")
SCALINGS = ("unit", "standard", "none")

FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
MNIST_CLASSES = [str(digit) for digit in range(10)]

LOAD_FORMS = {
    "fashion, fashion_mnist": "Fashion-MNIST, 10 classes",
    "fashion:A": "Fashion-MNIST without Sandal and Shirt (8 classes)",
    "fashion:B": "Fashion-MNIST Sandal vs Shirt, binary (positive: Shirt), first 200 training images",
    "mnist": "MNIST, 10 digits",
    "mnist:0-4, mnist:5-9": "MNIST, a range of digits relabelled from 0",
    "mnist:split2": "MNIST's 5,000 validation images as a task (4,000 train / 1,000 valid; test: the 10,000): "
                    "Hands-On ML ch. 11 exercise 10's split #2 (split #1 = mnist's 55,000 training images)",
    "digits": "scikit-learn's 8x8 digits",
    "PATH.npz": "arrays saved with save_npz (x_train, y_train, ...)",
    "DIRECTORY": "an image folder, one sub-folder per class",
}


# ----------------------------------------------------------------------------- Split


def _tensor_bytes(tensor: torch.Tensor) -> memoryview:
    """The raw bytes of a tensor, whatever its dtype or device (for hashing)."""
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    return memoryview(flat.view(torch.uint8).numpy())


@dataclass(eq=False)
class Split:
    """One split of a dataset: inputs ``x`` and targets ``y`` with the same first dimension.

    Tensors are treated as immutable: transforms return new splits, and the
    fingerprint is computed once.

        >>> split = Split(torch.zeros(4, 1, 28, 28), torch.tensor([0, 1, 2, 1]))
        >>> len(split), split.head(2).y.tolist()
        (4, [0, 1])
    """

    x: torch.Tensor  # (N, C, H, W) images or (N, F) features, float32
    y: torch.Tensor  # (N,) int64 / float32, or (N, k) float32 for multi-output regression
    _fingerprint: str | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.x, torch.Tensor) or not isinstance(self.y, torch.Tensor):
            raise DataError(f"Split needs torch tensors, got x: {type(self.x).__name__}, y: {type(self.y).__name__}")
        if self.x.ndim < 2 or self.y.ndim not in (1, 2) or len(self.x) != len(self.y):
            raise DataError(
                f"Split needs x of shape (N, ...) and y of shape (N,) or (N, k); "
                f"got x {tuple(self.x.shape)} and y {tuple(self.y.shape)}"
            )

    def __len__(self) -> int:
        return len(self.y)

    def fingerprint(self) -> str:
        """SHA-256 (hex) of x and y: their shapes, dtypes and bytes. Computed once."""
        if self._fingerprint is None:
            digest = hashlib.sha256()
            for name, tensor in (("x", self.x), ("y", self.y)):
                digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
                digest.update(_tensor_bytes(tensor))
            self._fingerprint = digest.hexdigest()
        return self._fingerprint

    def to(self, device: torch.device | str) -> Split:
        """The same split on ``device`` (the fingerprint carries over)."""
        moved = Split(self.x.to(device), self.y.to(device))
        moved._fingerprint = self._fingerprint
        return moved

    def head(self, n: int) -> Split:
        """The first ``n`` examples."""
        _check_count(n, len(self), "head")
        return Split(self.x[:n], self.y[:n])

    def take(self, index: torch.Tensor) -> Split:
        """The examples at ``index``: int64 positions or a boolean mask of length N."""
        return Split(self.x[index], self.y[index])


def _check_count(n: Any, available: int, what: str) -> None:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise DataError(f"{what}: expected a count >= 0, got {n!r}")
    if n > available:
        raise DataError(f"{what}: asked for {n} examples but only {available} are available")


# --------------------------------------------------------------------------- Dataset


def _class_labels(split: Split, task: str) -> torch.Tensor:
    """Class indices (N,) int64 of a classification split (binary 0/1 floats included)."""
    return split.y.long() if task == "binary" else split.y


@dataclass(eq=False)
class Dataset:
    """Train/valid/test splits with class names, the task kind and the data's provenance.

    ``source["transforms"]`` lists, in order, every transform applied since loading.

        >>> data = from_arrays(torch.rand(6, 3), torch.tensor([0, 1, 2, 0, 1, 2]),
        ...                    classes=["a", "b", "c"])
        >>> sub = data.only_classes(["c", "a"])
        >>> sub.classes, sub.train.y.tolist()
        (['c', 'a'], [1, 0, 1, 0])
    """

    name: str
    train: Split
    valid: Split | None
    test: Split | None
    classes: list[str] | None
    task: str
    source: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise DataError(f"task must be one of {', '.join(TASKS)}; got {self.task!r}")
        self.source = copy.deepcopy(dict(self.source))
        self.source.setdefault("transforms", [])
        self._check_classes()
        if len(self.train) == 0:
            raise DataError(f"dataset {self.name!r} has no training examples")
        for split_name, split in self._splits().items():
            self._check_split(split_name, split)

    def _check_classes(self) -> None:
        if self.task == "regression":
            if self.classes is not None:
                raise DataError("a regression dataset has no classes; pass classes=None")
            return
        if not self.classes:
            raise DataError(f"a {self.task} dataset needs class names; got {self.classes!r}")
        self.classes = [str(name) for name in self.classes]
        if len(set(self.classes)) != len(self.classes):
            raise DataError(f"class names must be unique; got {self.classes}")
        if self.task == "binary" and len(self.classes) != 2:
            raise DataError(f"a binary dataset has 2 classes [negative, positive]; got {self.classes}")

    def _check_split(self, split_name: str, split: Split) -> None:
        if split.x.shape[1:] != self.train.x.shape[1:]:
            raise DataError(
                f"{split_name}.x has examples of shape {tuple(split.x.shape[1:])}, "
                f"train.x has {tuple(self.train.x.shape[1:])}"
            )
        expected = {"multiclass": torch.int64, "binary": torch.float32, "regression": torch.float32}
        if split.y.dtype != expected[self.task]:
            raise DataError(
                f"{split_name}.y of a {self.task} dataset must be {expected[self.task]}, got {split.y.dtype}"
            )
        if self.task != "regression" and split.y.ndim != 1:
            raise DataError(f"{split_name}.y must be (N,) class labels, got shape {tuple(split.y.shape)}")
        if self.task == "binary" and not bool(((split.y == 0) | (split.y == 1)).all()):
            raise DataError(f"{split_name}.y of a binary dataset must hold only 0.0 and 1.0")
        if self.task != "regression" and len(split):
            labels = _class_labels(split, self.task)
            low, high = int(labels.min()), int(labels.max())
            if low < 0 or high >= len(self.classes or []):
                raise DataError(
                    f"{split_name}.y has labels {low}..{high} but there are {len(self.classes or [])} classes"
                )

    # -- shape of the problem

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one example, e.g. ``(1, 28, 28)``."""
        return tuple(self.train.x.shape[1:])

    @property
    def n_classes(self) -> int | None:
        """Number of classes (2 for binary), or None for regression."""
        return None if self.classes is None else len(self.classes)

    @property
    def n_outputs(self) -> int:
        """Outputs a model needs: n_classes (multiclass), 1 (binary), k (regression)."""
        if self.task == "multiclass":
            return len(self.classes or [])
        if self.task == "binary":
            return 1
        return 1 if self.train.y.ndim == 1 else int(self.train.y.shape[1])

    # -- helpers

    def _splits(self) -> dict[str, Split]:
        candidates = {"train": self.train, "valid": self.valid, "test": self.test}
        return {name: split for name, split in candidates.items() if split is not None}

    def _derive(self, op: dict, name: str | None = None, **changes: Any) -> Dataset:
        """A new dataset with ``changes`` applied and ``op`` appended to the transforms."""
        source = copy.deepcopy(self.source)
        source["transforms"].append(op)
        fields = dict(
            name=self.name if name is None else name,
            train=self.train,
            valid=self.valid,
            test=self.test,
            classes=self.classes,
            task=self.task,
            source=source,
        )
        fields.update(changes)
        return Dataset(**fields)

    def _require_classes(self, what: str) -> list[str]:
        if self.classes is None:
            raise DataError(f"{what} needs a classification dataset; {self.name!r} is a regression dataset")
        return self.classes

    def _class_indices(self, classes: Sequence[str | int], what: str) -> list[int]:
        if isinstance(classes, (str, int)):
            raise DataError(f"{what} takes a list of class names or indices, got {classes!r}; write [{classes!r}]")
        return [self._class_index(name) for name in classes]

    def _class_index(self, name_or_index: str | int) -> int:
        classes = self._require_classes("choosing classes")
        if isinstance(name_or_index, (int, np.integer)) and not isinstance(name_or_index, bool):
            if 0 <= name_or_index < len(classes):
                return int(name_or_index)
            raise DataError(f"class index {name_or_index} is out of range: there are {len(classes)} classes")
        name = str(name_or_index)
        if name in classes:
            return classes.index(name)
        raise DataError(
            f"no class {name!r} in {self.name!r}; classes are {format_names(classes)}." + did_you_mean(name, classes)
        )

    def _relabel(self, keep: list[int], task: str, op: dict, name: str) -> Dataset:
        """Keep classes ``keep`` (old indices), relabelled 0..k-1 in that order."""
        classes = self._require_classes(op["op"])
        mapping = torch.full((len(classes),), -1, dtype=torch.int64)
        mapping[torch.tensor(keep)] = torch.arange(len(keep))

        def relabel(split: Split) -> Split:
            new_labels = mapping[_class_labels(split, self.task)]  # (N,), -1 where dropped
            kept = split.take(new_labels >= 0)
            return Split(kept.x, new_labels[new_labels >= 0])

        splits = {split_name: relabel(split) for split_name, split in self._splits().items()}
        if len(splits["train"]) == 0:
            kept_names = [classes[index] for index in keep]
            raise DataError(f"{op['op']}: the training split of {self.name!r} has no examples of {kept_names}")
        return self._derive(op, name=name, classes=[classes[index] for index in keep], task=task, **splits)

    # -- class-subset tasks

    def only_classes(self, classes: Sequence[str | int]) -> Dataset:
        """Keep these classes, relabelled 0..k-1 in the order given.

        >>> fashion.only_classes(["Shirt", "Sandal"]).classes   # doctest: +SKIP
        ['Shirt', 'Sandal']
        """
        keep = self._class_indices(classes, "only_classes")
        names = [self._require_classes("only_classes")[index] for index in keep]
        if len(set(keep)) != len(keep):
            raise DataError(f"only_classes: a class is named twice in {list(classes)}")
        if len(keep) < 2:
            raise DataError(f"only_classes: a task needs at least 2 classes, got {names}")
        return self._relabel(
            keep, "multiclass", {"op": "only_classes", "classes": names}, f"{self.name}[{','.join(names)}]"
        )

    def without_classes(self, classes: Sequence[str | int]) -> Dataset:
        """Drop these classes and relabel the rest 0..k-1 in their original order."""
        drop = set(self._class_indices(classes, "without_classes"))
        all_classes = self._require_classes("without_classes")
        keep = [index for index in range(len(all_classes)) if index not in drop]
        dropped = [all_classes[index] for index in sorted(drop)]
        if len(keep) < 2:
            raise DataError(
                f"without_classes: dropping {dropped} leaves {[all_classes[i] for i in keep]}; "
                "a task needs at least 2 classes"
            )
        return self._relabel(
            keep, "multiclass", {"op": "without_classes", "classes": dropped}, f"{self.name}[-{',-'.join(dropped)}]"
        )

    def as_binary(self, positive: str | int) -> Dataset:
        """A binary task (y float32: 1.0 for ``positive``, else 0.0) from a 2-class dataset.

        ``classes`` becomes ``[negative, positive]``, so ``classes[int(y)]`` names a label.
        """
        classes = self._require_classes("as_binary")
        if len(classes) != 2:
            raise DataError(
                f"as_binary needs exactly 2 classes, {self.name!r} has {len(classes)}: "
                f"{format_names(classes)}. Use only_classes([...]) first."
            )
        positive_index = self._class_index(positive)
        negative_index = 1 - positive_index
        present = torch.unique(_class_labels(self.train, self.task)).tolist()
        if len(present) != 2:
            raise DataError(
                f"as_binary: the training split holds only class {[classes[i] for i in present]}; "
                "a task needs examples of both classes"
            )
        op = {"op": "as_binary", "positive": classes[positive_index]}
        relabelled = self._relabel([negative_index, positive_index], "multiclass", op, self.name)

        def to_float(split: Split | None) -> Split | None:
            return None if split is None else Split(split.x, split.y.float())

        return Dataset(
            name=self.name,
            train=to_float(relabelled.train),
            valid=to_float(relabelled.valid),
            test=to_float(relabelled.test),
            classes=relabelled.classes,
            task="binary",
            source=relabelled.source,
        )

    # -- subsets of examples

    def head(self, train: int | None = None, valid: int | None = None, test: int | None = None) -> Dataset:
        """The first n examples of each split given (the others are kept whole)."""
        counts = {"train": train, "valid": valid, "test": test}
        changes: dict[str, Split] = {}
        for split_name, n in counts.items():
            if n is None:
                continue
            split = getattr(self, split_name)
            if split is None:
                raise DataError(f"head({split_name}={n}): {self.name!r} has no {split_name} split")
            _check_count(n, len(split), f"head({split_name}={n})")
            changes[split_name] = split.head(n)
        op = {"op": "head", **{key: n for key, n in counts.items() if n is not None}}
        return self._derive(op, **changes)

    def sample(self, train: int, seed: int, stratify: bool = True) -> Dataset:
        """``train`` random training examples (without replacement), kept in their original order.

        With ``stratify`` (classification only) each class keeps its share of the
        training split, up to rounding. The same seed gives the same examples.

            >>> data.sample(100, seed=3).source["transforms"][-1]   # doctest: +SKIP
            {'op': 'sample', 'train': 100, 'seed': 3, 'stratify': True}
        """
        _check_count(train, len(self.train), f"sample(train={train})")
        rng = np.random.default_rng(seed)
        stratify = stratify and self.task != "regression"
        if stratify:
            labels = _class_labels(self.train, self.task).numpy()
            chosen = _stratified_choice(labels, train, rng)
        else:
            chosen = rng.choice(len(self.train), size=train, replace=False)
        index = torch.from_numpy(np.sort(chosen)).long()
        op = {"op": "sample", "train": int(train), "seed": int(seed), "stratify": bool(stratify)}
        return self._derive(op, train=self.train.take(index))

    def to(self, device: torch.device | str) -> Dataset:
        """The same dataset with every split on ``device``."""
        moved = {name: split.to(device) for name, split in self._splits().items()}
        return Dataset(
            self.name, moved["train"], moved.get("valid"), moved.get("test"), self.classes, self.task, self.source
        )

    def describe(self) -> str:
        """A few human-readable lines: task, shapes, split sizes, class counts, provenance."""
        sizes = " | ".join(f"{name} {len(split):,}" for name, split in self._splits().items())
        lines = [
            f"{self.name}: {self.task}, input {self.input_shape}, {self.n_outputs} output(s)",
            f"  splits: {sizes}",
        ]
        if self.classes is not None:
            counts = torch.bincount(_class_labels(self.train, self.task), minlength=len(self.classes))
            pairs = ", ".join(f"{name} {int(count)}" for name, count in zip(self.classes, counts, strict=True))
            lines.append(f"  train classes: {pairs}")
        details = {key: value for key, value in self.source.items() if key != "transforms"}
        lines.append(f"  source: {json.dumps(details, default=str)}")
        transforms = " -> ".join(json.dumps(op) for op in self.source["transforms"]) or "(none)"
        lines.append(f"  transforms: {transforms}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        sizes = ", ".join(f"{name}={len(split)}" for name, split in self._splits().items())
        return f"Dataset({self.name!r}, {self.task}, input={self.input_shape}, {sizes})"


def _stratified_choice(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n indices drawn without replacement so that each class keeps its share (largest remainder)."""
    classes, counts = np.unique(labels, return_counts=True)
    quotas = counts * n / len(labels)
    take = np.floor(quotas).astype(np.int64)
    leftover = n - int(take.sum())
    take[np.argsort(-(quotas - take), kind="stable")[:leftover]] += 1
    chosen = [
        rng.permutation(np.flatnonzero(labels == label))[:count] for label, count in zip(classes, take, strict=True)
    ]
    return np.concatenate(chosen)


# ----------------------------------------------------------------------------- IDX files

_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _read_bytes(path: Path) -> bytes:
    raw = path.read_bytes()
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: corrupt gzip file ({exc}); delete it and load again") from exc


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (gzip-compressed or not) into a numpy array, checking its header.

        >>> read_idx("/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz").shape  # doctest: +SKIP
        (10000,)

    Raises DataError naming the file when the magic number or the size is wrong.
    """
    path = Path(path)
    return _decode_idx(_read_bytes(path), path)


def _decode_idx(data: bytes, path: Path) -> np.ndarray:
    """The array in the (uncompressed) IDX bytes ``data`` read from ``path``."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES or data[3] == 0:
        raise DataError(
            f"{path}: not an IDX file (magic number {data[:4].hex() or 'missing'}, "
            "expected 0000 then a type code and the number of dimensions)"
        )
    dtype, ndim = np.dtype(_IDX_DTYPES[data[2]]), data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX header ({len(data)} bytes, expected {header})")
    shape = tuple(int(n) for n in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(data) != expected:
        problem = "truncated" if len(data) < expected else "has trailing bytes"
        raise DataError(
            f"{path}: IDX file {problem}: its header says shape {shape} ({expected:,} bytes in all), "
            f"the file holds {len(data):,} bytes"
        )
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


# ---------------------------------------------------------------- finding and downloading


@dataclass(frozen=True)
class _IdxArchive:
    """Where an IDX dataset lives on disk and on the web, and what its files must hash to."""

    name: str  # loader name, e.g. "fashion_mnist"
    title: str  # for messages
    folder: str  # sub-folder under $GRAFTNET_DATA, /usr/share/datasets and the user cache
    home: str
    mirrors: tuple[str, ...]
    sha256: Mapping[str, str]  # uncompressed IDX file -> sha256 of its uncompressed bytes
    classes: tuple[str, ...]
    apt_package: str | None = None


FASHION_MNIST = _IdxArchive(
    name="fashion_mnist",
    title="Fashion-MNIST",
    folder="fashion-mnist",
    home="https://github.com/zalandoresearch/fashion-mnist",
    mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    # The .gz files published by Zalando have MD5s 8d4fb7e6..., 25c81989..., bef4ecab..., bb300cfd...;
    # mirrors (Debian's package among them) recompress them, so the uncompressed bytes are checked.
    sha256={
        "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    },
    classes=tuple(FASHION_MNIST_CLASSES),
    apt_package="dataset-fashion-mnist",
)

MNIST = _IdxArchive(
    name="mnist",
    title="MNIST",
    folder="mnist",
    home="http://yann.lecun.com/exdb/mnist/",
    mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
    sha256={
        "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
    classes=tuple(MNIST_CLASSES),
)

_ARCHIVES = {archive.name: archive for archive in (FASHION_MNIST, MNIST)}
SYSTEM_DATASETS_DIR = Path("/usr/share/datasets")  # where Debian's dataset-* packages put files


def _archive(name: str) -> _IdxArchive:
    key = name.replace("-", "_").lower()
    if key not in _ARCHIVES:
        raise DataError(f"no IDX dataset {name!r}; known: {', '.join(_ARCHIVES)}." + did_you_mean(key, _ARCHIVES))
    return _ARCHIVES[key]


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "graftnet"


def env_data_root() -> Path | None:
    """``$GRAFTNET_DATA`` as a path, None when unset; set but empty is an error (a variable
    expanded from nothing would otherwise fall back to other folders without a word)."""
    value = os.environ.get("GRAFTNET_DATA")
    if value is None:
        return None
    if not value.strip():
        raise DataError("GRAFTNET_DATA is set but empty; set it to a data folder holding fashion-mnist/ and "
                        "mnist/ (e.g. export GRAFTNET_DATA=~/data) or unset it to use the default folders")
    return Path(value).expanduser()


def dataset_dir(root: str | os.PathLike, folder: str) -> Path:
    """The folder of one dataset under a data root: ``root/<folder>``, or ``root`` itself when it
    is that dataset's folder (named ``fashion-mnist`` or ``mnist``).

    One convention everywhere: Python's ``root=``, the command line's ``--data-root``, a
    recipe's ``[data] root`` and ``$GRAFTNET_DATA`` all name a data root (a folder holding
    ``fashion-mnist/`` and ``mnist/``); the dataset's own folder is accepted too.

        >>> dataset_dir("/data", "mnist"), dataset_dir("/data/mnist", "mnist")
        (PosixPath('/data/mnist'), PosixPath('/data/mnist'))
    """
    root = Path(root).expanduser()
    return root if root.name == folder and not (root / folder).is_dir() else root / folder


def _candidate_dirs(archive: _IdxArchive, root: str | os.PathLike | None) -> list[tuple[str, Path]]:
    """(label, folder) pairs in search order. A ``root`` given is the only place looked."""
    if root is not None:
        return [(f"root {root}", dataset_dir(root, archive.folder))]
    candidates = []
    env = env_data_root()
    if env is not None:
        candidates.append((f"$GRAFTNET_DATA/{archive.folder}", dataset_dir(env, archive.folder)))
    candidates.append(("system datasets", SYSTEM_DATASETS_DIR / archive.folder))
    candidates.append(("user cache", _cache_dir() / archive.folder))
    return candidates


def _idx_path(directory: Path, stem: str) -> Path | None:
    for candidate in (directory / f"{stem}.gz", directory / stem):
        if candidate.is_file():
            return candidate
    return None


def _missing_files(directory: Path) -> list[str]:
    return [f"{stem}.gz" for stem in IDX_FILES if _idx_path(directory, stem) is None]


def find_idx_dir(name: str, root: str | os.PathLike | None = None) -> Path | None:
    """The first folder, in search order, that holds all four IDX files of ``name``, or None.

    ``root`` given: only ``root/<folder>`` (or ``root`` itself, see :func:`dataset_dir`). Else,
    in order, ``$GRAFTNET_DATA/<folder>``, ``/usr/share/datasets/<folder>``,
    ``~/.cache/graftnet/<folder>`` (``$XDG_CACHE_HOME`` respected), where ``<folder>``
    is ``fashion-mnist`` or ``mnist``.

        >>> find_idx_dir("fashion_mnist")  # doctest: +SKIP
        PosixPath('/usr/share/datasets/fashion-mnist')
    """
    archive = _archive(name)
    for _, directory in _candidate_dirs(archive, root):
        if directory.is_dir() and not _missing_files(directory):
            return directory
    return None


def _sha256_of_content(path: Path) -> str:
    return hashlib.sha256(_read_bytes(path)).hexdigest()


def _download_verified(url: str, target: Path, sha256: str) -> None:
    """Fetch ``url`` into ``target`` atomically; the uncompressed bytes must hash to ``sha256``."""
    from graftnet.io.checkpoint import atomic_output

    with atomic_output(target) as tmp:
        with open(tmp, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            shutil.copyfileobj(response, out)
        actual = _sha256_of_content(tmp)
        if actual != sha256:
            raise DataError(f"{url}: checksum mismatch: sha256 of the content is {actual}, expected {sha256}")


def download_idx(name: str, dest: str | os.PathLike | None = None, mirrors: Sequence[str] | None = None) -> Path:
    """Download the four IDX files of ``name`` into ``dest`` (default: the user cache); verify them.

    Files already there with the right checksum are kept. Each file is written to a
    temporary name and renamed only once its sha256 matches.

        >>> download_idx("fashion_mnist")  # doctest: +SKIP
        PosixPath('/home/me/.cache/graftnet/fashion-mnist')
    """
    archive = _archive(name)
    directory = Path(dest) if dest is not None else _cache_dir() / archive.folder
    created = [p for p in (directory, *directory.parents) if not p.exists()]  # removed again on failure
    try:
        _download_files(archive, directory, mirrors)
    except BaseException:
        for folder in created:  # deepest first: leave no empty cache folders behind
            try:
                folder.rmdir()
            except OSError:  # not empty (a file arrived) or already gone
                break
        raise
    return directory


def _download_files(archive: _IdxArchive, directory: Path, mirrors: Sequence[str] | None) -> None:
    for stem in IDX_FILES:
        target = directory / f"{stem}.gz"
        if target.is_file() and _sha256_of_content(target) == archive.sha256[stem]:
            continue
        failures = []
        for mirror in mirrors or archive.mirrors:
            url = mirror.rstrip("/") + f"/{stem}.gz"
            try:
                _download_verified(url, target, archive.sha256[stem])
                break
            except (urllib.error.URLError, OSError, DataError) as exc:
                failures.append(f"{url}: {getattr(exc, 'reason', exc)}")
        else:
            raise DataError(f"could not download {archive.title} {stem}.gz:\n  " + "\n  ".join(failures))


def _not_found_message(archive: _IdxArchive, root: Any, reason: str) -> str:
    places = []
    for label, directory in _candidate_dirs(archive, root):
        missing = "no such folder" if not directory.is_dir() else "missing " + ", ".join(_missing_files(directory))
        places.append(f"  - {label}: {directory} ({missing})")
    fixes = []
    if archive.apt_package:
        fixes.append(
            f"  - install the Debian/Ubuntu package: sudo apt-get install {archive.apt_package} "
            f"(puts the files in {SYSTEM_DATASETS_DIR / archive.folder})"
        )
    if root is not None:
        fixes.append(f"  - put the four IDX .gz files in {dataset_dir(root, archive.folder)}, or leave out the "
                     f"root to search the default folders (and download into the user cache)")
    else:
        fixes.append(f"  - set GRAFTNET_DATA to a folder holding {archive.folder}/ with the four IDX .gz files")
        fixes.append(f"  - connect to the internet and load again with download=True (from {archive.mirrors[0]})")
    return (
        f"{archive.title} not found. Looked in:\n"
        + "\n".join(places)
        + f"\n{reason}\nTo fix it, do one of:\n"
        + "\n".join(fixes)
    )


def locate_idx(name: str, root: str | os.PathLike | None = None, download: bool = True) -> Path:
    """The folder holding ``name``'s IDX files: found (see :func:`find_idx_dir`) or downloaded.

    Raises DataError listing every place looked and how to get the files.

        >>> locate_idx("mnist", download=False)  # doctest: +SKIP
        PosixPath('/work/shared/data/mnist')
    """
    archive = _archive(name)
    directory = find_idx_dir(archive.name, root)
    if directory is not None:
        return directory
    if root is not None:  # a folder given to read from is never written into
        raise DataError(_not_found_message(archive, root, "A root was given: graftnet reads it and writes "
                                                          "nothing there."))
    if not download:
        raise DataError(_not_found_message(archive, root, "Downloading was turned off (download=False)."))
    try:
        return download_idx(archive.name)
    except DataError as exc:
        raise DataError(_not_found_message(archive, root, f"Downloading failed: {exc}")) from exc


@lru_cache(maxsize=8)  # the four files of two datasets
def _read_verified(path: str, mtime_ns: int, size: int, sha256: str) -> np.ndarray:
    """Decode and verify one IDX file; memoised per process by path, mtime and size."""
    raw = _read_bytes(Path(path))
    data = _decode_idx(raw, Path(path))  # structure first: its errors say more than a hash
    actual = hashlib.sha256(raw).hexdigest()
    if actual != sha256:
        raise DataError(
            f"{path}: content has sha256 {actual}, expected {sha256} (the published file); "
            "delete it and load again to download a fresh copy"
        )
    data.flags.writeable = False
    return data


def _idx_arrays(archive: _IdxArchive, root: Any, download: bool) -> tuple[Path, list[np.ndarray], list[dict]]:
    directory = locate_idx(archive.name, root, download)
    arrays, files = [], []
    for stem in IDX_FILES:
        path = _idx_path(directory, stem)
        if path is None:  # removed since locate_idx looked
            raise DataError(f"{directory / stem}.gz: no such file")
        stat = path.stat()
        arrays.append(_read_verified(str(path), stat.st_mtime_ns, stat.st_size, archive.sha256[stem]))
        files.append({"path": str(path), "sha256": archive.sha256[stem], "checksum": "sha256 verified"})
    log.info("%s: read %s from %s (sha256 of each verified)", archive.title,
             ", ".join(Path(f["path"]).name for f in files), directory)
    return directory, arrays, files


# ------------------------------------------------------------------------ scaling, loaders


def _scale(x_train: torch.Tensor, others: list[torch.Tensor | None], scale: str, maximum: float) -> tuple:
    """Scale raw pixel values; 'standard' uses per-channel mean/std of the training split."""
    if scale not in SCALINGS:
        raise DataError(f"scale must be one of {', '.join(SCALINGS)}; got {scale!r}." + did_you_mean(scale, SCALINGS))
    if scale == "none":
        return x_train, others, {"kind": "none"}
    if scale == "unit":  # in place: the tensors are fresh copies of the raw data
        scaled = [None if x is None else x.div_(maximum) for x in others]
        return x_train.div_(maximum), scaled, {"kind": "unit", "divisor": maximum}
    dims = [0, *range(2, x_train.ndim)]  # all but the channel / feature dimension
    mean = x_train.mean(dim=dims, keepdim=True)  # (1, C, 1, 1) or (1, F)
    std = x_train.std(dim=dims, keepdim=True).clamp_min(1e-8)
    scaled = [None if x is None else (x - mean) / std for x in others]
    info = {"kind": "standard", "mean": mean.flatten().tolist(), "std": std.flatten().tolist()}
    return (x_train - mean) / std, scaled, info


def _image_dataset(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    x_test: np.ndarray | None,
    y_test: np.ndarray | None,
    classes: list[str],
    valid_size: int,
    scale: str,
    maximum: float,
    source: dict,
) -> Dataset:
    """A multiclass image dataset from uint8-like arrays (N, H, W) or (N, C, H, W)."""
    _check_count(valid_size, len(x) - 1, f"valid_size={valid_size}")

    def images(array: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
        return tensor.unsqueeze(1) if tensor.ndim == 3 else tensor  # (N, 1, H, W)

    def labels(array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(array.astype(np.int64))

    x_train, x_valid = images(x[valid_size:]), images(x[:valid_size]) if valid_size else None
    x_test_t = images(x_test) if x_test is not None else None
    x_train, (x_valid, x_test_t), scaling = _scale(x_train, [x_valid, x_test_t], scale, maximum)
    valid = Split(x_valid, labels(y[:valid_size])) if x_valid is not None else None
    test = Split(x_test_t, labels(y_test)) if x_test_t is not None and y_test is not None else None
    source = {**source, "valid_size": valid_size, "scaling": scaling, "transforms": []}
    return Dataset(name, Split(x_train, labels(y[valid_size:])), valid, test, classes, "multiclass", source)


def _idx_dataset(archive: _IdxArchive, root: Any, valid_size: int, scale: str, download: bool) -> Dataset:
    directory, (x_train, y_train, x_test, y_test), files = _idx_arrays(archive, root, download)
    return _image_dataset(
        archive.name,
        x_train,
        y_train,
        x_test,
        y_test,
        list(archive.classes),
        valid_size,
        scale,
        255.0,
        {"loader": archive.name, "root": str(directory), "files": files},
    )


def fashion_mnist(
    root: str | os.PathLike | None = None, valid_size: int = 5000, scale: str = "unit", download: bool = True
) -> Dataset:
    """Fashion-MNIST: 60,000 training and 10,000 test 28x28 grey images of 10 kinds of clothes.

    The first ``valid_size`` training images form the validation set (the convention of
    Hands-On Machine Learning), so the default splits are 55,000 / 5,000 / 10,000.
    ``root`` is a data root holding ``fashion-mnist/`` (as ``$GRAFTNET_DATA``; the
    ``fashion-mnist`` folder itself works too) and is then the only place read, never
    written. Without it the files are looked for in ``$GRAFTNET_DATA/fashion-mnist``,
    ``/usr/share/datasets/fashion-mnist`` and ``~/.cache/graftnet/fashion-mnist``, then
    downloaded into the user cache (checksums verified) unless ``download=False``. Every
    file's sha256 is checked on reading; ``source["files"]`` names them.

        >>> fashion = fashion_mnist()                    # doctest: +SKIP
        >>> fashion.train.x.shape, fashion.classes[9]    # doctest: +SKIP
        (torch.Size([55000, 1, 28, 28]), 'Ankle boot')
    """
    return _idx_dataset(FASHION_MNIST, root, valid_size, scale, download)


def mnist(
    root: str | os.PathLike | None = None, valid_size: int = 5000, scale: str = "unit", download: bool = True
) -> Dataset:
    """MNIST handwritten digits, as :func:`fashion_mnist` (classes "0".."9", folder ``mnist``)."""
    return _idx_dataset(MNIST, root, valid_size, scale, download)


def mnist_split2(root: str | os.PathLike | None = None, valid_size: int = 1000) -> Dataset:
    """Hands-On ML ch. 11 exercise 10's split #2 as a task: MNIST's 5,000 validation images
    (the first ``5000 - valid_size`` to train on, the rest to validate), tested on the
    10,000 test images. Split #1, for pretraining without these labels, is ``mnist().train``.

        >>> len(mnist_split2().train), len(mnist_split2().valid)  # doctest: +SKIP
        (4000, 1000)
    """
    full = mnist(root)
    pool = full.valid
    _check_count(valid_size, len(pool) - 1, f"valid_size={valid_size}")
    cut = len(pool) - valid_size
    return Dataset(name="mnist:split2", train=pool.head(cut), valid=pool.take(torch.arange(cut, len(pool))),
                   test=full.test, classes=full.classes, task="multiclass",
                   source={**full.source, "split": f"train/valid = MNIST's {len(pool):,} validation images "
                           f"({cut:,} / {valid_size:,}); test = the {len(full.test):,} test images"})


def digits(valid_size: int = 300, test_size: int = 300, seed: int = 0, scale: str = "unit") -> Dataset:
    """scikit-learn's 1,797 8x8 digit images as (N, 1, 8, 8), pixel values divided by 16.

    Splits are drawn at random (stratified by class) with ``seed``.

        >>> digits().train.x.shape
        torch.Size([1197, 1, 8, 8])
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images, targets = bunch.images.astype(np.float32), bunch.target  # (1797, 8, 8), (1797,)
    _check_count(test_size, len(targets), f"test_size={test_size}")
    _check_count(valid_size + test_size, len(targets) - 1, f"valid_size + test_size = {valid_size + test_size}")
    index = np.arange(len(targets))

    def carve(pool: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(rest, n stratified random picks) of ``pool``."""
        if n == 0:
            return pool, pool[:0]
        rest, picked = train_test_split(pool, test_size=n, random_state=seed, stratify=targets[pool])
        return np.sort(rest), np.sort(picked)

    rest, test_index = carve(index, test_size)
    train_index, valid_index = carve(rest, valid_size)
    ordered = np.concatenate([valid_index, train_index])  # _image_dataset takes valid from the front
    test_images = images[test_index] if test_size else None
    return _image_dataset(
        "digits",
        images[ordered],
        targets[ordered],
        test_images,
        targets[test_index],
        [str(d) for d in range(10)],
        valid_size,
        scale,
        16.0,
        {"loader": "digits", "seed": seed, "test_size": test_size},
    )


# ------------------------------------------------------------------------- arrays and npz


def _as_tensor(array: Any, what: str) -> torch.Tensor:
    if isinstance(array, torch.Tensor):
        return array.detach()
    try:
        return torch.as_tensor(np.asarray(array))
    except (TypeError, ValueError) as exc:
        raise DataError(f"{what}: cannot make a tensor from {type(array).__name__} ({exc})") from exc


def _infer_task(y: torch.Tensor) -> str:
    if y.dtype == torch.bool:
        return "binary"
    if not y.is_floating_point() and not y.is_complex():
        return "multiclass"
    return "regression"


def _targets(y: torch.Tensor, task: str, what: str) -> torch.Tensor:
    if task == "multiclass":
        if y.is_floating_point() and not torch.equal(y, y.round()):
            raise DataError(f"{what}: multiclass labels must be whole numbers, got {y.dtype} with fractions")
        return y.long()
    if task == "binary":
        y = y.float()
        if not bool(((y == 0) | (y == 1)).all()):
            raise DataError(f"{what}: binary labels must be 0 or 1, got values {torch.unique(y)[:5].tolist()}")
        return y
    return y.float()


def from_arrays(
    x_train: Any,
    y_train: Any,
    x_valid: Any = None,
    y_valid: Any = None,
    x_test: Any = None,
    y_test: Any = None,
    classes: Sequence[str] | None = None,
    task: str | None = None,
    valid_size: int = 0,
    name: str = "arrays",
) -> Dataset:
    """A dataset from numpy arrays or tensors (x is converted to float32, not rescaled).

    The task is inferred when not given: integer y -> multiclass, bool y -> binary,
    float y -> regression. With ``valid_size`` the first examples of the training
    arrays become the validation split.

        >>> data = from_arrays(np.zeros((10, 4)), np.arange(10) % 3)
        >>> data.task, data.classes, data.n_outputs
        ('multiclass', ['0', '1', '2'], 3)
    """
    given = {"train": (x_train, y_train), "valid": (x_valid, y_valid), "test": (x_test, y_test)}
    tensors: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for split_name, (x, y) in given.items():
        if (x is None) != (y is None):
            raise DataError(f"from_arrays: give both x_{split_name} and y_{split_name}, or neither")
        if x is not None:
            tensors[split_name] = (_as_tensor(x, f"x_{split_name}").float(), _as_tensor(y, f"y_{split_name}"))
    if valid_size:
        if "valid" in tensors:
            raise DataError("from_arrays: give x_valid/y_valid or valid_size, not both")
        x, y = tensors["train"]
        _check_count(valid_size, len(x) - 1, f"valid_size={valid_size}")
        tensors["valid"], tensors["train"] = (x[:valid_size], y[:valid_size]), (x[valid_size:], y[valid_size:])
    task = task or _infer_task(tensors["train"][1])
    if task not in TASKS:
        raise DataError(f"task must be one of {', '.join(TASKS)}; got {task!r}." + did_you_mean(task, TASKS))
    splits = {key: Split(x, _targets(y, task, f"y_{key}")) for key, (x, y) in tensors.items()}
    if classes is None and task == "multiclass":
        classes = [str(i) for i in range(int(max(int(s.y.max()) for s in splits.values() if len(s)) + 1))]
    if classes is None and task == "binary":
        classes = ["0", "1"]
    source = {"loader": "from_arrays", "valid_size": valid_size, "scaling": {"kind": "none"}, "transforms": []}
    return Dataset(
        name,
        splits["train"],
        splits.get("valid"),
        splits.get("test"),
        None if classes is None else list(classes),
        task,
        source,
    )


_NPZ_REQUIRED = ("x_train", "y_train")
_NPZ_OPTIONAL = ("x_valid", "y_valid", "x_test", "y_test", "classes", "task")


def from_npz(path: str | os.PathLike) -> Dataset:
    """A dataset from an ``.npz`` file with keys x_train, y_train and optionally
    x_valid, y_valid, x_test, y_test, classes, task (as written by :func:`save_npz`).

        >>> data = from_npz("letters.npz")  # doctest: +SKIP
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, zlib.error) as exc:
        raise DataError(f"{path}: cannot read as .npz without pickle ({exc})") from exc
    found = sorted(arrays)
    missing = [key for key in _NPZ_REQUIRED if key not in arrays]
    unknown = [key for key in found if key not in _NPZ_REQUIRED + _NPZ_OPTIONAL]
    if missing or unknown:
        hint = did_you_mean(unknown[0], _NPZ_REQUIRED + _NPZ_OPTIONAL) if unknown else ""
        raise DataError(
            f"{path}: keys found {found}; expected {list(_NPZ_REQUIRED)} and optionally "
            f"{list(_NPZ_OPTIONAL)} (missing: {missing or 'none'}, unknown: {unknown or 'none'}).{hint}"
        )
    classes = [str(name) for name in arrays.pop("classes")] if "classes" in arrays else None
    task = str(arrays.pop("task")) if "task" in arrays else None
    data = from_arrays(**arrays, classes=classes, task=task, name=path.stem)
    data.source.update(loader="from_npz", path=str(path))
    return data


def save_npz(dataset: Dataset, path: str | os.PathLike) -> Path:
    """Write ``dataset``'s splits, classes and task to ``path`` (compressed .npz, atomic).

    >>> save_npz(task_b, "task_b.npz")  # doctest: +SKIP
    PosixPath('task_b.npz')
    """
    path = Path(path)
    arrays: dict[str, np.ndarray] = {"task": np.array(dataset.task)}
    for split_name, split in dataset._splits().items():
        arrays[f"x_{split_name}"] = split.x.cpu().numpy()
        arrays[f"y_{split_name}"] = split.y.cpu().numpy()
    if dataset.classes is not None:
        arrays["classes"] = np.array(dataset.classes, dtype=str)
    from graftnet.io.checkpoint import atomic_output

    with atomic_output(path) as tmp, open(tmp, "wb") as out:
        np.savez_compressed(out, **arrays)
    return path


# --------------------------------------------------------------------------- image folders

_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def _class_files(root: Path) -> dict[str, list[Path]]:
    if not root.is_dir():
        raise DataError(f"{root}: no such folder")
    suffixes = ", ".join(sorted(_IMAGE_SUFFIXES))
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    files = {
        folder.name: sorted(f for f in folder.iterdir() if f.suffix.lower() in _IMAGE_SUFFIXES and f.is_file())
        for folder in folders
    }
    if not files:
        loose = sorted(f.name for f in root.iterdir() if f.suffix.lower() in _IMAGE_SUFFIXES)
        found = f"; it holds {len(loose)} image(s) directly ({format_names(loose)}): move them" if loose else ""
        raise DataError(f"{root}: an image folder needs one sub-folder per class holding images ({suffixes}); "
                        f"found no sub-folder{found}")
    empty = [name for name, paths in files.items() if not paths]
    if empty:
        raise DataError(f"{root}: class folder(s) {empty} hold no images ({suffixes}); classes found: {list(files)}")
    if len(files) < 2:
        only = next(iter(files))
        raise DataError(f"{root}: only one class, {only!r} ({len(files[only])} images); a classifier needs at least "
                        f"2 sub-folders (one per class)")
    return files


def _read_image(path: Path, grayscale: bool, size: tuple[int, int] | None) -> np.ndarray:
    """(C, H, W) uint8 array of one image."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image = image.convert("L" if grayscale else "RGB")
            if size is not None and image.size != (size[1], size[0]):
                image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            pixels = np.asarray(image, dtype=np.uint8)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: cannot read image ({type(exc).__name__}: {exc})") from exc
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


def image_folder(
    path: str | os.PathLike,
    size: tuple[int, int] | None = None,
    grayscale: bool = False,
    valid_fraction: float = 0.1,
    test_fraction: float = 0.0,
    seed: int = 0,
    preprocess: Any = None,
) -> Dataset:
    """A dataset from ``path/<class name>/<image files>`` (JPEG, PNG, ... read by Pillow).

    Images are resized to ``size = (H, W)``; with ``size=None`` they must all have the
    same size. Valid and test examples are drawn per class at random with ``seed``.

    ``preprocess`` says what the pixels become: ``None`` scales them to [0, 1]; a network
    built by ``graftnet.backbones`` (or holding one as a block) uses that base's own
    ``preprocess_input`` convention, and so does a family name (``"vgg16"``) or a mode
    (``"caffe"``: BGR minus the ImageNet mean pixel; ``"torch"``: /255 then ImageNet
    mean/std; ``"tf"``: [-1, 1]; ``"none"``: [0, 255]). The mode is recorded in
    ``source["preprocess"]``; ``graftnet.augment.ImageAugment.for_data`` reads it.

        >>> base = gn.backbones.vgg16(include_top=False, input_shape=(150, 150, 3), weights=None)  # doctest: +SKIP
        >>> pets = image_folder("photos/", size=(150, 150), preprocess=base)  # doctest: +SKIP
        >>> pets.classes, pets.input_shape, pets.source["preprocess"]          # doctest: +SKIP
        (['cat', 'dog'], (3, 150, 150), 'caffe')
    """
    try:
        import PIL  # noqa: F401
    except ImportError as exc:
        raise DataError("image_folder needs Pillow: pip install pillow") from exc
    if not (0 <= valid_fraction < 1 and 0 <= test_fraction < 1 and valid_fraction + test_fraction < 1):
        raise DataError(
            f"valid_fraction and test_fraction must be in [0, 1) with a sum below 1; "
            f"got {valid_fraction} and {test_fraction}"
        )
    root = Path(path)
    files = _class_files(root)
    images, labels, first = [], [], None
    for label, paths in enumerate(files.values()):
        for image_path in paths:
            pixels = _read_image(image_path, grayscale, size)
            if first is None:
                first = (image_path, pixels.shape)
            elif pixels.shape != first[1]:
                raise DataError(
                    f"{image_path} is {pixels.shape[1]}x{pixels.shape[2]} but {first[0]} is "
                    f"{first[1][1]}x{first[1][2]}; pass size=(H, W) to resize every image"
                )
            images.append(pixels)
            labels.append(label)
    x, y = np.stack(images), np.asarray(labels)  # (N, C, H, W), (N,)
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {"valid": [], "test": [], "train": []}
    for label in range(len(files)):
        members = rng.permutation(np.flatnonzero(y == label))
        n_valid, n_test = round(len(members) * valid_fraction), round(len(members) * test_fraction)
        parts["valid"].append(members[:n_valid])
        parts["test"].append(members[n_valid : n_valid + n_test])
        parts["train"].append(members[n_valid + n_test :])
    index = {key: np.sort(np.concatenate(value)) for key, value in parts.items()}

    mode = _preprocess_mode(preprocess, grayscale)

    def split(key: str) -> Split | None:
        if not len(index[key]):
            return None
        pixels = torch.from_numpy(x[index[key]]).float()  # (n, C, H, W) in [0, 255]
        x_part = pixels / 255.0 if mode is None else _preprocess_pixels(pixels, mode)
        return Split(x_part, torch.from_numpy(y[index[key]]).long())

    source = {
        "loader": "image_folder",
        "path": str(root),
        "size": list(size) if size else None,
        "grayscale": grayscale,
        "valid_fraction": valid_fraction,
        "test_fraction": test_fraction,
        "seed": seed,
        "scaling": {"kind": "unit", "divisor": 255.0} if mode is None else {"kind": "preprocess_input", "mode": mode},
        "preprocess": mode or "unit",
        "transforms": [],
    }
    train = split("train")
    if train is None:
        raise DataError(f"{root}: no training images left after taking the valid and test fractions")
    return Dataset(root.name or str(root), train, split("valid"), split("test"), list(files), "multiclass", source)


def _preprocess_mode(preprocess: Any, grayscale: bool) -> str | None:
    """``None`` (pixels in [0, 1]) or a Keras ``preprocess_input`` mode, from a mode, a family or a network."""
    if preprocess is None:
        return None
    from graftnet.backbones.keras_family import PREPROCESSING, preprocess_mode

    if isinstance(preprocess, str):
        mode = PREPROCESSING.get(preprocess, preprocess)
        if mode not in _PREPROCESS_MODES:
            raise DataError(f"preprocess={preprocess!r}: expected a family ({', '.join(PREPROCESSING)}), a mode "
                            f"({', '.join(_PREPROCESS_MODES)}), a network built by graftnet.backbones, or None "
                            f"for pixels in [0, 1]")
    else:
        mode = preprocess_mode(preprocess)
    if grayscale and mode != "none":
        raise DataError(f"preprocess mode {mode!r} is defined on RGB images; grayscale=True reads one channel")
    return mode


_PREPROCESS_MODES = ("caffe", "torch", "tf", "none")


def _preprocess_pixels(pixels: torch.Tensor, mode: str) -> torch.Tensor:
    from graftnet.backbones.keras_family import preprocess_input

    if mode == "none":
        return pixels
    return preprocess_input(pixels, mode)  # type: ignore[return-value]


# -------------------------------------------------------------------------------- load()

_MNIST_RANGE = re.compile(r"^mnist:(\d)-(\d)$")


def _fashion_task(which: str, root: str | os.PathLike | None = None) -> Dataset:
    fashion = fashion_mnist(root)
    if which == "A":
        return fashion.without_classes(["Sandal", "Shirt"])
    return fashion.only_classes(["Sandal", "Shirt"]).as_binary("Shirt").head(train=200)


def _named(data: Dataset, spec: str) -> Dataset:
    data.name = spec
    data.source["spec"] = spec
    return data


def load(name_or_path: str, root: str | os.PathLike | None = None) -> Dataset:
    """A dataset from the short names the command line uses, an .npz file or an image folder.

    Accepted forms are listed in ``LOAD_FORMS``: ``fashion``, ``fashion_mnist``,
    ``fashion:A`` (8 classes: all but Sandal and Shirt), ``fashion:B`` (Sandal vs Shirt,
    binary, positive Shirt, first 200 training images), ``mnist``, ``mnist:0-4``,
    ``mnist:5-9``, ``digits``, ``PATH.npz``, ``DIRECTORY``. ``root`` is the data root of
    the IDX datasets (see :func:`dataset_dir`).

        >>> load("fashion:A").n_classes  # doctest: +SKIP
        8
    """
    spec = str(name_or_path).strip()
    key = spec.lower().replace("-", "_")
    if key in ("fashion", "fashion_mnist"):
        return _named(fashion_mnist(root), "fashion_mnist")
    if key in ("fashion:a", "fashion:b", "fashion_mnist:a", "fashion_mnist:b"):
        which = key[-1].upper()
        return _named(_fashion_task(which, root), f"fashion:{which}")
    if key == "mnist":
        return _named(mnist(root), "mnist")
    if key == "digits":
        return _named(digits(), "digits")
    if key == "mnist:split2":
        return _named(mnist_split2(root), "mnist:split2")
    match = _MNIST_RANGE.match(spec.lower())
    if match:
        low, high = int(match.group(1)), int(match.group(2))
        if high - low < 1:
            raise DataError(f"{spec!r}: a digit range needs at least 2 digits, low-high with low < high")
        return _named(mnist(root).only_classes([str(d) for d in range(low, high + 1)]), f"mnist:{low}-{high}")
    path = Path(spec).expanduser()
    if spec.lower().endswith(".npz"):
        return from_npz(path)
    if path.is_dir():
        return image_folder(path)
    forms = "\n".join(f"  {form:24} {meaning}" for form, meaning in LOAD_FORMS.items())
    short_names = ["fashion", "fashion_mnist", "fashion:A", "fashion:B", "mnist", "mnist:0-4", "mnist:5-9", "digits"]
    raise DataError(
        f"unknown dataset {spec!r} (not a known name, an .npz file or an existing folder)."
        f"{did_you_mean(spec, short_names)}\nAccepted forms:\n{forms}"
    )
