"""Features of a frozen prefix, computed once: kept in RAM or in a memory-mapped file.

When the lowest layers of a network are frozen and nothing random happens below them,
their output on the training data never changes, so ``train.fit`` computes it once (in
large batches, without autograd, in inference mode) and trains only the layers above
on it. This module holds those features::

    >>> cache = FeatureCache(memory_budget=2**30)       # RAM up to 1 GiB, then disk
    >>> cut = cache_cut(model, augment=None)            # e.g. 3: flatten, hidden1, hidden2
    >>> lower, _ = model.split(cut - 1)
    >>> x = cache.features(lower, data.train, device=torch.device("cpu"))  # (N, 300)
    >>> cache.stats()["misses"], cache.stats()["hits"]
    (1, 0)

**Where the cut goes.** After the last frozen layer with weights of the network's leading
run of frozen or parameter-free deterministic layers, then on through the parameter-free
deterministic layers that follow it (flatten, pooling, rescaling, activations but rrelu),
so a frozen VGG base caches the flattened vector, not the last convolution's output. At
least one trainable layer with weights must remain above the cut.

**Correctness.** An entry is keyed by a SHA-256 of the prefix spec, the prefix weights
(every state-dict tensor with its name, dtype, shape and bytes), the data's fingerprint,
the input dtype, the device type and the build's memory layout, so a stale entry can
never be returned: changed weights or data give another key. Each tensor's digest is
remembered against its version counter (bumped by every in-place update: optimizer steps,
``load_state_dict``, ``torch.no_grad()`` edits), its storage and its layout, and only
recomputed when one of them changed. Edits made through ``tensor.data``, which PyTorch
itself does not track, are not seen: change weights in place under ``torch.no_grad()``.

**Unfreezing.** A layer that is unfrozen can never have its cached output used: the cut is
recomputed at every ``fit`` and moves below it. Once training has changed its weights, a
re-freeze gives another key and a fresh build. An entry is therefore never dropped for
being "invalid"; entries whose weights come back (another variant grafted from the same
base, a layer re-frozen before it trained) hit. Entries leave RAM only to make room: the
least recently used go first when a new one would push the total over ``memory_budget``.

**Disk.** Features larger than the memory budget go to ``directory`` (a private temporary
folder by default) as ``<key>.npy``, written under a temporary name and renamed when
complete, then memory-mapped. A folder that cannot be written (read-only, full, not a
folder) never leaves a partial file: :class:`CacheUnavailable` is raised and ``train.fit``
warns and trains without the cache.

**Speed.** The build runs in batches of ``prefix.inference_batch_size()`` (the largest
float32 activation within 64 MiB). A prefix with convolutions is run on channels-last
inputs on the CPU, which oneDNN ran 1.4-1.75x faster on a 2-core CPU (VGG16 at 150x150 and a
small VGG-like base); its features agree with the plain forward to float32 rounding
(``FeatureCache(channels_last=False)`` gives the plain forward bit for bit). There each
``Conv2d(activation="relu")`` runs as one oneDNN convolution with the ReLU fused in, on its
weight reordered to channels-last once per build: the same floats as the convolution and
ReLU run apart, one pass over each activation less (``bench/conv_build.py``).

**bfloat16 builds (opt-in).** ``FeatureCache(precision="bf16")`` runs the prefix under
``torch.autocast(dtype=torch.bfloat16)``: convolutions and matrix products take bfloat16
inputs (8 bits of mantissa) and accumulate in float32. On a CPU with AMX or AVX-512-BF16
oneDNN ran VGG16 at 150x150 2.6-4.6x faster than in float32 (``bench/conv_build.py``). The
features are stored as float32 (the head trains on them unchanged; ``.npy`` files have no
bfloat16), they differ from the float32 build by bfloat16 rounding (at most 0.83% of the
largest feature on VGG16, a head trained on them as accurate), and the precision is part of
the key, so a float32 and a bfloat16 build never share an entry. A CPU without those
instructions is refused (there oneDNN emulates bfloat16, slower than float32); on CUDA the
device must support bfloat16::

    >>> history = fit(model, data, cache=FeatureCache(precision="bf16"))
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import shutil
import tempfile
import time
import weakref
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.cpu
import torch.nn as nn
from torch.utils.weak import WeakIdKeyDictionary

from graftnet.data import Split
from graftnet.errors import ConfigError, GraftnetError
from graftnet.layers import Conv2dModule
from graftnet.merge import MERGE_TYPES
from graftnet.network import Network

__all__ = [
    "CacheUnavailable",
    "CacheWarning",
    "FeatureCache",
    "PRECISIONS",
    "bf16_unsupported",
    "cache_cut",
    "default_cache",
    "prefix_fingerprint",
    "weights_fingerprint",
]

# Parameter-free layers whose output depends on their input only (in train and eval mode).
_DETERMINISTIC = {"flatten", "maxpool", "avgpool", "global_avg_pool", "global_max_pool", "rescaling", "relu",
                  "zero_padding2d", "cropping2d", "reshape", "normalization", *MERGE_TYPES}
_DEFAULT_BUDGET = 8 * 2**30  # RAM for features when no budget is given (at most half the memory available)
PRECISIONS = ("fp32", "bf16")  # of the build; the stored features are float32 either way
# CPU features (torch.cpu.get_capabilities() names) that run bfloat16 natively: either is enough
_BF16_CPU_FEATURES = ("amx_bf16", "avx512_bf16")
# oneDNN's convolution with a fused ReLU (the op torch.compile emits for conv + relu on the CPU);
# False runs each convolution and its ReLU apart (bench/conv_build.py compares the two)
_FUSE_CONV_RELU = True
_CPU_FEATURES_SHOWN = ("avx2", "avx512_f", "avx512_bw", "avx512_vl", "avx512_bf16", "avx512_fp16", "amx_tile",
                       "amx_bf16", "amx_fp16")


class CacheUnavailable(GraftnetError, OSError):
    """The features could not be stored (cache folder read-only or full, out of memory)."""


class CacheWarning(UserWarning):
    """The cache could not be used as asked and something else was done instead."""


# ------------------------------------------------------------------ fingerprints
def _bytes_of(tensor: torch.Tensor) -> memoryview:
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)  # (numel,)
    return memoryview(flat.view(torch.uint8).numpy())


def weights_fingerprint(module: nn.Module | dict[str, torch.Tensor]) -> str:
    """SHA-256 (hex) of a module's state dict: every key, dtype, shape and byte.

    Computed in full at each call (its value is stored in lineages and study records);
    :func:`prefix_fingerprint` is the remembered one the cache uses.

    >>> len(weights_fingerprint(Network.mlp(4, [3], 2)))
    64
    """
    state = module.state_dict() if isinstance(module, nn.Module) else module
    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach()
        digest.update(f"{key}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
        digest.update(_bytes_of(tensor))
    return digest.hexdigest()


def _tensor_digest(tensor: torch.Tensor) -> str:
    """SHA-256 (hex) of one tensor's shape, dtype and bytes, computed now."""
    digest = hashlib.sha256(f"{tuple(tensor.shape)}:{tensor.dtype};".encode())
    digest.update(_bytes_of(tensor))
    return digest.hexdigest()


# tensor -> (stamp, digest). The stamp holds everything that changes when the tensor's values
# can have changed: its version counter (every in-place op bumps it: optimizer steps,
# copy_ in load_state_dict), where its data lives and its layout. The weak reference to the
# storage makes an address reused by another storage (after ``p.data = ...``) a miss.
_DIGESTS: WeakIdKeyDictionary = WeakIdKeyDictionary()


def _stamp(tensor: torch.Tensor) -> tuple[Any, ...] | None:
    if tensor.is_inference() or tensor.layout != torch.strided:
        return None  # inference tensors have no version counter: hash them every time
    storage = tensor.untyped_storage()
    return (tensor._version, tensor.data_ptr(), tuple(tensor.shape), tuple(tensor.stride()), tensor.dtype,
            tensor.device, storage.data_ptr(), weakref.ref(storage))


def _same_stamp(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    return a[:-1] == b[:-1] and a[-1]() is not None and a[-1]() is b[-1]()


def _remembered_digest(tensor: torch.Tensor) -> str:
    """:func:`_tensor_digest`, recomputed only when the tensor may have changed since the last call."""
    stamp = _stamp(tensor)
    if stamp is None:
        return _tensor_digest(tensor)
    known = _DIGESTS.get(tensor)
    if known is not None and _same_stamp(known[0], stamp):
        return known[1]
    digest = _tensor_digest(tensor)
    _DIGESTS[tensor] = (stamp, digest)
    return digest


def prefix_fingerprint(prefix: Network) -> str:
    """SHA-256 (hex) of what a prefix computes: its input shape, layer specs and weights.

    Each weight's digest is remembered until the weight changes (an in-place update,
    ``load_state_dict``, an optimizer step, new storage), so asking again for an
    unchanged prefix does not re-read its weights.

    >>> net = Network.mlp(4, [3], 2)
    >>> prefix_fingerprint(net) == prefix_fingerprint(net)
    True
    """
    spec = {"input_shape": list(prefix.input_shape), "layers": [s.to_dict() for s in prefix.specs],
            "outputs": list(prefix.cut_names(len(prefix)))}  # in a graph, which tensors the part returns
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode())
    state = prefix.state_dict(keep_vars=True)  # the tensors themselves, so their digests can be remembered
    for key in sorted(state):
        digest.update(f"{key}:{_remembered_digest(state[key])};".encode())
    return digest.hexdigest()


# ------------------------------------------------------------------ where to cut
def _has_weights(module: nn.Module) -> bool:
    return any(True for _ in module.parameters()) or any(True for _ in module.buffers())


def _cacheable_frozen(model: Network, name: str) -> bool:
    """A frozen layer none of whose parameters train (a frozen BatchNorm with bn_affine does)."""
    return name in model.frozen and not any(p.requires_grad for p in model.layer(name).parameters())


def _deterministic(model: Network, name: str) -> bool:
    """A parameter-free layer whose output depends on its input only, even in training mode."""
    if _has_weights(model.layer(name)):
        return False
    spec = model.spec_of(name)
    if spec.type == "activation":
        return spec.activation_name != "rrelu"  # rrelu draws a random slope in training mode
    return spec.type in _DETERMINISTIC


def _passes_through(model: Network, name: str) -> bool:
    """Parameter-free and deterministic: trainable and deterministic, or frozen (always inference mode)."""
    return not _has_weights(model.layer(name)) and (name in model.frozen or _deterministic(model, name))


def _trains_after(model: Network, cut: int) -> bool:
    """Some layer at or above position ``cut`` has a parameter that trains."""
    return any(p.requires_grad for name in model.layer_names[cut:] for p in model.layer(name).parameters())


def cache_cut(model: Network, augment: Any = None) -> int:
    """How many leading layers of ``model`` may be computed once and cached.

    The cut goes after the last frozen layer with weights in the leading run of layers
    that are frozen or parameter-free and deterministic (flatten, pooling, activations
    but rrelu, rescaling), then on through the parameter-free deterministic layers that
    directly follow it. It is 0 when ``augment`` is given (the loop augments raw
    inputs), when no frozen layer with weights starts the network, or when no layer with
    a trainable parameter is left above the cut (then nothing would train).

    >>> cache_cut(Network.mlp((1, 28, 28), [300, 100], 10).freeze("hidden1"))  # flatten, hidden1
    2
    >>> convs = [Conv2d(8, 3, name="conv1"), MaxPool(2, name="pool1"), Flatten(name="flatten"), Dense(10, name="out")]
    >>> cache_cut(Network(convs, (1, 28, 28)).freeze("conv1"))                  # conv1, pool1, flatten
    3
    """
    if augment is not None:
        return 0
    names = model.layer_names
    cut = 0
    for i, name in enumerate(names):
        if _cacheable_frozen(model, name):
            if _has_weights(model.layer(name)):
                cut = i + 1
            continue
        if _deterministic(model, name):
            continue
        break
    while 0 < cut < len(names) and _passes_through(model, names[cut]):
        cut += 1  # flatten/pool/... above the last frozen weights: cache their output instead
    return cut if cut and _trains_after(model, cut) else 0


# ------------------------------------------------------------------ bfloat16 support
def bf16_unsupported(device: torch.device | str = "cpu") -> str | None:
    """Why a bfloat16 feature build cannot run fast on ``device``, or None when it can.

    On the CPU it needs AMX-BF16 or AVX-512-BF16 (``amx_bf16`` or ``avx512_bf16`` in
    ``torch.cpu.get_capabilities()``, the ``lscpu`` flags of the same names); without them
    oneDNN emulates bfloat16 and the build is slower than in float32. On CUDA it needs
    ``torch.cuda.is_bf16_supported()``.

    >>> bf16_unsupported("cpu") is None    # on a Xeon with AMX (Sapphire Rapids and later)
    True
    """
    device = torch.device(device)
    if device.type == "cpu":
        capabilities = torch.cpu.get_capabilities()
        if any(capabilities.get(name) for name in _BF16_CPU_FEATURES):
            return None
        found = [name for name in _CPU_FEATURES_SHOWN if capabilities.get(name)]
        cpu = f"{capabilities.get('cpu_name', 'unknown')}, {capabilities.get('architecture', '?')}"
        return (f"a bfloat16 feature build needs a CPU with AMX-BF16 or AVX-512-BF16 (flag "
                f"{' or '.join(_BF16_CPU_FEATURES)}); this CPU ({cpu}) has neither: its vector flags are "
                f"{', '.join(found) or 'none of ' + ', '.join(_CPU_FEATURES_SHOWN)}, so oneDNN would emulate "
                f"bfloat16, more slowly than float32. Use precision='fp32'")
    if device.type == "cuda":
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return None
        return (f"a bfloat16 feature build on {device} needs a GPU that supports bfloat16 "
                f"(torch.cuda.is_bf16_supported() is False). Use precision='fp32'")
    return f"a bfloat16 feature build runs on cpu or cuda, not on {device}. Use precision='fp32'"


# ------------------------------------------------------------------ the cache
@dataclass
class _Entry:
    key: str
    features: torch.Tensor  # (N, *out_shape) float32 on the CPU, in RAM or memory-mapped
    path: Path | None  # the .npy file of a memory-mapped entry
    nbytes: int


def _available_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


class FeatureCache:
    """Outputs of frozen prefixes on data splits, computed once and reused.

    Args:
        memory_budget: bytes of features kept in RAM. A new entry evicts the least
            recently used RAM entries until it fits; one larger than the whole budget goes
            to a memory-mapped file. ``None``: half the memory available now, at most 8 GiB.
        directory: where memory-mapped files go; ``None``: a private temporary folder,
            removed when the cache is. A given folder keeps its files, and a later
            process with the same prefix, weights and data reuses them.
        channels_last: run prefixes that hold convolutions on channels-last inputs.
            ``None`` (default): on the CPU only, where it is faster; the features agree
            with the plain forward to float32 rounding. ``False``: the plain forward,
            bit for bit.
        precision: of the build. ``"fp32"`` (default), or ``"bf16"``: the prefix runs under
            bfloat16 autocast (opt-in; on a CPU with AMX or AVX-512-BF16, else a
            :class:`ConfigError` naming the CPU's flags, see :func:`bf16_unsupported`).
            The features are float32 either way, and the key holds the precision.

    >>> cache = FeatureCache(memory_budget=0, directory=tmp_path)   # always on disk
    >>> history = fit(model, data, cache=cache)
    >>> cache.stats()["disk_bytes"] > 0
    True
    """

    def __init__(self, memory_budget: int | None = None, directory: str | Path | None = None, *,
                 channels_last: bool | None = None, precision: str = "fp32") -> None:
        if memory_budget is not None and (isinstance(memory_budget, bool) or memory_budget < 0):
            raise ConfigError(f"memory_budget must be a number of bytes >= 0 or None, got {memory_budget!r}")
        if channels_last not in (None, True, False):
            raise ConfigError(f"channels_last must be True, False or None (automatic), got {channels_last!r}")
        if precision not in PRECISIONS:
            raise ConfigError(f"FeatureCache precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        if precision == "bf16" and not torch.cuda.is_available() and (why := bf16_unsupported("cpu")):
            raise ConfigError(f"FeatureCache(precision='bf16'): {why}")  # only the CPU can build here: say so now
        if memory_budget is None:
            available = _available_memory()
            memory_budget = min(available // 2, _DEFAULT_BUDGET) if available else _DEFAULT_BUDGET
        self.memory_budget = int(memory_budget)
        self.directory = Path(directory).expanduser() if directory is not None else None
        if self.directory is not None and self.directory.exists() and not self.directory.is_dir():
            raise ConfigError(f"cache directory {self.directory} exists and is not a folder")
        self.channels_last = channels_last
        self.precision = precision
        self._temp_dir: Path | None = None
        self._entries: OrderedDict[str, _Entry] = OrderedDict()  # least recently used first
        self._stats = {"hits": 0, "misses": 0, "build_seconds": 0.0, "invalidations": 0, "evictions": 0}

    # -------------------------------------------------------------- public
    def features(self, prefix: Network, split: Split, *, device: torch.device) -> torch.Tensor:
        """``prefix``'s output on ``split.x``: (N, *prefix.output_shape), float32, on ``device``.

        Computed once per (prefix spec, prefix weights, data, dtype, device type, memory
        layout and precision of the build); later calls return the stored tensor. Raises
        :class:`CacheUnavailable` when the features exceed the memory budget and cannot be
        written to the cache folder, and :class:`ConfigError` for a bfloat16 build on a device
        that cannot run it (:func:`bf16_unsupported`).
        """
        device = torch.device(device)
        key = self.key_for(prefix, split, device=device)
        entry = self._entries.get(key) or self._from_disk(key, split, prefix)
        if entry is not None:
            self._stats["hits"] += 1
            self._entries.move_to_end(key)
        else:
            self._stats["misses"] += 1
            entry = self._build(key, prefix, split, device)
        return entry.features if device.type == "cpu" else entry.features.to(device)

    def key_for(self, prefix: Network, split: Split, *, device: torch.device | str) -> str:
        """The key an entry for ``prefix`` on ``split`` has (hex SHA-256)."""
        device = torch.device(device)
        if self.precision == "bf16" and (why := bf16_unsupported(device)):
            raise ConfigError(f"FeatureCache(precision='bf16'): {why}")
        layout = "channels_last" if self._use_channels_last(prefix, device) else "plain"
        parts = [prefix_fingerprint(prefix), split.fingerprint(), str(split.x.dtype), device.type, layout]
        if self.precision != "fp32":
            parts.append(self.precision)  # float32 keys stay as they were, so existing files still hit
        return hashlib.sha256("|".join(parts).encode()).hexdigest()

    def stats(self) -> dict[str, Any]:
        """Counters and sizes: hits, misses, build_seconds (cumulative), entries, evictions
        (RAM entries dropped to make room), and bytes held (``bytes`` = ``ram_bytes`` +
        ``disk_bytes``). ``invalidations`` stays 0: keys cover the weights, so no entry is
        ever invalid (kept for readers of older records)."""
        ram = self._ram_bytes()
        disk = sum(e.nbytes for e in self._entries.values() if e.path is not None)
        return {**self._stats, "build_seconds": round(self._stats["build_seconds"], 6),
                "entries": len(self._entries), "ram_bytes": ram, "disk_bytes": disk, "bytes": ram + disk}

    def clear(self) -> None:
        """Drop every entry (and its file)."""
        for key in list(self._entries):
            self._drop(key)

    def __repr__(self) -> str:
        s = self.stats()
        where = self.directory or self._temp_dir or "(temporary folder)"
        precision = "" if self.precision == "fp32" else f", precision {self.precision}"
        return (f"FeatureCache({s['entries']} entries, {s['ram_bytes']:,} B in RAM, {s['disk_bytes']:,} B "
                f"on disk at {where}, budget {self.memory_budget:,} B{precision})")

    # -------------------------------------------------------------- room
    def _ram_bytes(self) -> int:
        return sum(e.nbytes for e in self._entries.values() if e.path is None)

    def _drop(self, key: str) -> None:
        entry = self._entries.pop(key)
        if entry.path is not None:
            entry.path.unlink(missing_ok=True)

    def _make_room(self, nbytes: int) -> bool:
        """Evict the least recently used RAM entries until ``nbytes`` more fit the budget;
        False (nothing evicted) when ``nbytes`` alone exceeds it."""
        if nbytes > self.memory_budget:
            return False
        for entry in [e for e in self._entries.values() if e.path is None]:  # oldest first
            if self._ram_bytes() + nbytes <= self.memory_budget:
                break
            self._drop(entry.key)
            self._stats["evictions"] += 1
        return True

    def _use_channels_last(self, prefix: Network, device: torch.device) -> bool:
        if self.channels_last is False or not any("conv" in s.type for s in prefix.specs):
            return False
        return self.channels_last is True or device.type == "cpu"

    # -------------------------------------------------------------- building
    def _build(self, key: str, prefix: Network, split: Split, device: torch.device) -> _Entry:
        shape = (len(split), *prefix.output_shape)
        nbytes = int(np.prod(shape)) * 4
        channels_last = self._use_channels_last(prefix, device)
        t0 = time.perf_counter()
        if self._make_room(nbytes):
            try:
                chunks = _compute_chunks(prefix, split.x, device, channels_last, self.precision)
                features, path = _fill(torch.empty(shape), chunks), None  # (N, *out_shape)
            except (MemoryError, RuntimeError) as err:
                if isinstance(err, RuntimeError) and "memory" not in str(err).lower():
                    raise
                raise CacheUnavailable(f"cannot hold {_size(nbytes)} of features in RAM ({err})") from None
        else:
            path = self._write_file(key, prefix, split, device, channels_last, shape, nbytes)
            features = _open_memmap(path)
        self._stats["build_seconds"] += time.perf_counter() - t0
        entry = _Entry(key, features, path, nbytes)
        self._entries[key] = entry
        return entry

    def _folder(self, nbytes: int) -> Path:
        if self.directory is None and self._temp_dir is None:
            try:
                self._temp_dir = Path(tempfile.mkdtemp(prefix="graftnet-features-"))
            except OSError as err:
                raise CacheUnavailable(self._unwritable(tempfile.gettempdir(), err, nbytes)) from None
            weakref.finalize(self, shutil.rmtree, str(self._temp_dir), ignore_errors=True)
        folder: Path = self.directory or self._temp_dir  # type: ignore[assignment]  # one is set above
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise CacheUnavailable(self._unwritable(folder, err, nbytes)) from None
        return folder

    def _unwritable(self, folder: Path | str, err: OSError, nbytes: int) -> str:
        return (f"cannot write {_size(nbytes)} of cached features to {folder}: {err.strerror or err}; "
                f"they exceed the cache's memory budget of {_size(self.memory_budget)}. Give "
                f"FeatureCache(directory=...) a writable folder with room, or a larger memory_budget")

    def _write_file(self, key: str, prefix: Network, split: Split, device: torch.device, channels_last: bool,
                    shape: tuple[int, ...], nbytes: int) -> Path:
        folder = self._folder(nbytes)
        final = folder / f"{key}.npy"
        tmp: Path | None = None
        try:
            fd, name = tempfile.mkstemp(prefix=f".{key[:16]}.", suffix=".npy.part", dir=folder)
            tmp = Path(name)
            with os.fdopen(fd, "wb") as f:
                header = {"descr": np.lib.format.dtype_to_descr(np.dtype("float32")),
                          "fortran_order": False, "shape": shape}
                np.lib.format.write_array_header_1_0(f, header)
                for chunk in _compute_chunks(prefix, split.x, device, channels_last, self.precision):
                    f.write(chunk.numpy().tobytes())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)
        except OSError as err:
            if tmp is not None:
                tmp.unlink(missing_ok=True)
            raise CacheUnavailable(self._unwritable(folder, err, nbytes)) from None
        except BaseException:
            if tmp is not None:
                tmp.unlink(missing_ok=True)
            raise
        return final

    def _from_disk(self, key: str, split: Split, prefix: Network) -> _Entry | None:
        """An entry a previous process left in ``directory`` (complete files only: they are renamed in)."""
        if self.directory is None:
            return None
        path = self.directory / f"{key}.npy"
        if not path.is_file():
            return None
        shape = (len(split), *prefix.output_shape)
        try:
            features = _open_memmap(path)
        except (OSError, ValueError):
            return None
        if tuple(features.shape) != shape or features.dtype != torch.float32:
            return None
        entry = _Entry(key, features, path, int(np.prod(shape)) * 4)
        self._entries[key] = entry
        return entry


def _open_memmap(path: Path) -> torch.Tensor:
    # mode "c": copy-on-write pages, so torch gets a writable array and the file is never modified
    array = np.load(path, mmap_mode="c")
    return torch.from_numpy(array)


def _compute_chunks(prefix: Network, x: torch.Tensor, device: torch.device, channels_last: bool = False,
                    precision: str = "fp32") -> Iterable[torch.Tensor]:
    """The prefix's output on ``x`` in batches of ``prefix.inference_batch_size()``, each
    (b, *out_shape), float32, contiguous, on the CPU. ``channels_last`` feeds 4-D inputs in
    that memory format (the convolutions then run channels-last; the modules are not
    touched); ``precision="bf16"`` runs the prefix under bfloat16 autocast."""
    was_training = prefix.training
    prefix.eval()
    fuse = channels_last and precision == "fp32" and device.type == "cpu"
    try:
        step = prefix.inference_batch_size()
        with torch.inference_mode(), _conv_relu_fused(prefix, fuse):
            for i in range(0, len(x), step):
                xb = x[i:i + step].to(device, non_blocking=True)  # (b, *in_shape)
                if channels_last and xb.dim() == 4:
                    # (b, C, H, W) stored NHWC; not .contiguous(memory_format=...), which keeps NCHW strides
                    # when C == 1, and a grayscale batch would then run every convolution NCHW
                    xb = torch.empty_like(xb, memory_format=torch.channels_last).copy_(xb)
                # autocast around the forward only: the caller runs between the yields
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                    out = prefix(xb)  # (b, *out_shape), bfloat16 where the last layer ran in it
                yield out.float().to("cpu").contiguous()
    finally:
        prefix.train(was_training)


def _pointwise_convolution() -> Any:
    try:
        return torch.ops.mkldnn._convolution_pointwise if torch.backends.mkldnn.is_available() else None
    except (AttributeError, RuntimeError):  # a torch built without oneDNN
        return None


def _conv_relu(module: Conv2dModule, weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``module.forward(x)`` (convolution, then ReLU) as one oneDNN call; the same float32 result."""
    if x.dtype != torch.float32 or x.device.type != "cpu" or not x.is_contiguous(memory_format=torch.channels_last):
        return type(module).forward(module, x)
    # (B, C, H, W) channels-last -> (B, filters, H', W') channels-last, max(0, .) applied before the store
    return _pointwise_convolution()(x, weight, module.bias, list(module.padding), list(module.stride),
                                    list(module.dilation), module.groups, "relu", [None], "")


@contextlib.contextmanager
def _conv_relu_fused(prefix: Network, enabled: bool):
    """During a CPU float32 channels-last build, each ``Conv2d(activation="relu")`` of the prefix
    runs as one oneDNN convolution with the ReLU fused in, on its weight reordered to
    channels-last once (unfused, PyTorch reorders it at every call, and the ReLU reads and
    writes the whole activation again). The instance's ``forward`` is replaced for the build
    only and put back after it; the features are the unfused ones (the ReLU is exact)."""
    patched = []
    if enabled and _FUSE_CONV_RELU and _pointwise_convolution() is not None:
        for module in prefix.modules():
            if (type(module) is Conv2dModule and module.extra_pad is None and type(module.activation) is nn.ReLU
                    and module.padding_mode == "zeros" and "forward" not in module.__dict__
                    and module.weight.dtype == torch.float32 and module.weight.device.type == "cpu"):
                weight = module.weight.detach().contiguous(memory_format=torch.channels_last)
                module.forward = functools.partial(_conv_relu, module, weight)
                patched.append(module)
    try:
        yield
    finally:
        for module in patched:
            del module.forward


def _fill(out: torch.Tensor, chunks: Iterable[torch.Tensor]) -> torch.Tensor:
    # ``out`` is allocated outside inference mode, so autograd may use slices of it later
    i = 0
    for chunk in chunks:
        with torch.no_grad():
            out[i:i + len(chunk)] = chunk
        i += len(chunk)
    return out


def _size(nbytes: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes} B"


_DEFAULT: FeatureCache | None = None


def default_cache() -> FeatureCache:
    """The process-wide cache ``train.fit`` uses when ``cache=True`` (RAM, then a temp folder)."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = FeatureCache()
    return _DEFAULT
