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

An entry is keyed by a SHA-256 of the prefix spec, the prefix weights (every parameter
and buffer, with its dtype and shape), the data's fingerprint, the input dtype and the
device type, so a stale entry can never be returned: changed weights or data give
another key. Entries whose prefix holds a layer that has since been unfrozen are dropped
the next time the cache is asked (``stats()["invalidations"]``).

Features larger than the memory budget go to ``directory`` (a private temporary folder
by default) as ``<key>.npy``, written under a temporary name and renamed when complete,
then memory-mapped. A folder that cannot be written (read-only, full, not a folder) never
leaves a partial file: :class:`CacheUnavailable` is raised and ``train.fit`` warns and
trains without the cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from graftnet.data import Split
from graftnet.errors import ConfigError, GraftnetError
from graftnet.network import Network

__all__ = [
    "CacheUnavailable",
    "CacheWarning",
    "FeatureCache",
    "cache_cut",
    "default_cache",
    "prefix_fingerprint",
    "weights_fingerprint",
]

log = logging.getLogger("graftnet")

# Parameter-free layers whose output depends on their input only (in train and eval mode).
_DETERMINISTIC = {"flatten", "maxpool", "avgpool", "global_avg_pool", "rescaling"}
_BUILD_BYTES = 32 * 2**20  # input bytes per build batch
_BUILD_BATCH = (32, 8192)  # bounds on the build batch size
_DEFAULT_BUDGET = 8 * 2**30  # RAM for features when no budget is given (at most half the memory available)


class CacheUnavailable(GraftnetError, OSError):
    """The features could not be stored (cache folder read-only or full, out of memory)."""


class CacheWarning(UserWarning):
    """The cache could not be used as asked and something else was done instead."""


# ------------------------------------------------------------------ fingerprints
def weights_fingerprint(module: nn.Module | dict[str, torch.Tensor]) -> str:
    """SHA-256 (hex) of a module's state dict: every key, dtype, shape and byte.

    >>> len(weights_fingerprint(Network.mlp(4, [3], 2)))
    64
    """
    state = module.state_dict() if isinstance(module, nn.Module) else module
    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach()
        digest.update(f"{key}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
        flat = tensor.to("cpu").contiguous().reshape(-1)
        digest.update(memoryview(flat.view(torch.uint8).numpy()))
    return digest.hexdigest()


def prefix_fingerprint(prefix: Network) -> str:
    """SHA-256 (hex) of what a prefix computes: its input shape, layer specs and weights."""
    spec = {"input_shape": list(prefix.input_shape), "layers": [s.to_dict() for s in prefix.specs]}
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode())
    digest.update(weights_fingerprint(prefix).encode())
    return digest.hexdigest()


# ------------------------------------------------------------------ where to cut
def _cacheable_frozen(model: Network, name: str) -> bool:
    """A frozen layer none of whose parameters train (a frozen BatchNorm with bn_affine does)."""
    return name in model.frozen and not any(p.requires_grad for p in model.layer(name).parameters())


def _deterministic(model: Network, name: str) -> bool:
    module = model.layer(name)
    if any(True for _ in module.parameters()) or any(True for _ in module.buffers()):
        return False
    spec = model.spec_of(name)
    if spec.type == "activation":
        return spec.activation_name != "rrelu"  # rrelu draws a random slope in training mode
    return spec.type in _DETERMINISTIC


def cache_cut(model: Network, augment: Any = None) -> int:
    """How many leading layers of ``model`` may be computed once and cached.

    The cut ends at the last frozen layer with weights in the leading run of layers that
    are frozen or parameter-free and deterministic (flatten, pooling, activations but
    rrelu, rescaling). It is 0 when ``augment`` is given (the loop augments raw inputs),
    when no frozen layer with weights starts the network, or when every layer is frozen
    (then nothing would train).

    >>> cache_cut(Network.mlp((1, 28, 28), [300, 100], 10).freeze("hidden1"))
    2
    """
    if augment is not None:
        return 0
    cut = 0
    names = model.layer_names
    for i, name in enumerate(names):
        module = model.layer(name)
        if _cacheable_frozen(model, name):
            if any(True for _ in module.parameters()) or any(True for _ in module.buffers()):
                cut = i + 1
            continue
        if name not in model.frozen and _deterministic(model, name):
            continue
        break
    return 0 if cut >= len(names) else cut


# ------------------------------------------------------------------ the cache
@dataclass
class _Entry:
    key: str
    features: torch.Tensor  # (N, *out_shape) float32 on the CPU, in RAM or memory-mapped
    path: Path | None  # the .npy file of a memory-mapped entry
    nbytes: int
    owners: list[tuple[weakref.ref, ...]] = field(default_factory=list)
    last_used: float = 0.0


def _available_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _owner(prefix: Network) -> tuple[weakref.ref, ...]:
    """Weak references to the prefix's layers with weights (views share their modules)."""
    return tuple(weakref.ref(m) for m in prefix.children() if any(True for _ in m.parameters()))


def _same_owner(a: tuple[weakref.ref, ...], b: tuple[weakref.ref, ...]) -> bool:
    return len(a) == len(b) and all(x() is y() for x, y in zip(a, b, strict=True))


def _owner_unfrozen(owner: tuple[weakref.ref, ...]) -> bool:
    modules = [ref() for ref in owner]
    return any(m is not None and any(p.requires_grad for p in m.parameters()) for m in modules)


def _owner_alive(owner: tuple[weakref.ref, ...]) -> bool:
    return all(ref() is not None for ref in owner)


class FeatureCache:
    """Outputs of frozen prefixes on data splits, computed once and reused.

    Args:
        memory_budget: bytes of features kept in RAM; a larger entry (or one that would
            push the total over, once entries no live network uses are evicted) goes to
            a memory-mapped file. ``None``: half the memory available now, at most 8 GiB.
        directory: where memory-mapped files go; ``None``: a private temporary folder,
            removed when the cache is. A given folder keeps its files, and a later
            process with the same prefix, weights and data reuses them.

    >>> cache = FeatureCache(memory_budget=0, directory=tmp_path)   # always on disk
    >>> history = fit(model, data, cache=cache)
    >>> cache.stats()["disk_bytes"] > 0
    True
    """

    def __init__(self, memory_budget: int | None = None, directory: str | Path | None = None) -> None:
        if memory_budget is not None and (isinstance(memory_budget, bool) or memory_budget < 0):
            raise ConfigError(f"memory_budget must be a number of bytes >= 0 or None, got {memory_budget!r}")
        if memory_budget is None:
            available = _available_memory()
            memory_budget = min(available // 2, _DEFAULT_BUDGET) if available else _DEFAULT_BUDGET
        self.memory_budget = int(memory_budget)
        self.directory = Path(directory).expanduser() if directory is not None else None
        if self.directory is not None and self.directory.exists() and not self.directory.is_dir():
            raise ConfigError(f"cache directory {self.directory} exists and is not a folder")
        self._temp_dir: Path | None = None
        self._entries: dict[str, _Entry] = {}
        self._stats = {"hits": 0, "misses": 0, "build_seconds": 0.0, "invalidations": 0, "evictions": 0}

    # -------------------------------------------------------------- public
    def features(self, prefix: Network, split: Split, *, device: torch.device) -> torch.Tensor:
        """``prefix``'s output on ``split.x``: (N, *prefix.output_shape), float32, on ``device``.

        Computed once per (prefix spec, prefix weights, data, dtype, device type); later
        calls return the stored tensor. Raises :class:`CacheUnavailable` when the
        features exceed the memory budget and cannot be written to the cache folder.
        """
        device = torch.device(device)
        self._sweep()
        key = self.key_for(prefix, split, device=device)
        entry = self._entries.get(key) or self._from_disk(key, split, prefix)
        if entry is not None:
            self._stats["hits"] += 1
        else:
            self._stats["misses"] += 1
            entry = self._build(key, prefix, split, device)
        owner = _owner(prefix)
        if not any(_same_owner(o, owner) for o in entry.owners):
            entry.owners.append(owner)
        entry.last_used = time.monotonic()
        return entry.features if device.type == "cpu" else entry.features.to(device)

    def key_for(self, prefix: Network, split: Split, *, device: torch.device | str) -> str:
        """The key an entry for ``prefix`` on ``split`` has (hex SHA-256)."""
        parts = [prefix_fingerprint(prefix), split.fingerprint(), str(split.x.dtype), torch.device(device).type]
        return hashlib.sha256("|".join(parts).encode()).hexdigest()

    def stats(self) -> dict[str, Any]:
        """Counters and sizes: hits, misses, build_seconds (cumulative), entries,
        invalidations, evictions, and bytes held (``bytes`` = ``ram_bytes`` + ``disk_bytes``)."""
        self._sweep()
        ram = sum(e.nbytes for e in self._entries.values() if e.path is None)
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
        return (f"FeatureCache({s['entries']} entries, {s['ram_bytes']:,} B in RAM, {s['disk_bytes']:,} B "
                f"on disk at {where}, budget {self.memory_budget:,} B)")

    # -------------------------------------------------------------- keeping it clean
    def _sweep(self) -> None:
        """Drop entries whose prefix holds a layer that is no longer frozen; forget dead owners."""
        for key, entry in list(self._entries.items()):
            if any(_owner_unfrozen(o) for o in entry.owners):
                self._drop(key)
                self._stats["invalidations"] += 1
                continue
            entry.owners = [o for o in entry.owners if _owner_alive(o)]

    def _drop(self, key: str) -> None:
        entry = self._entries.pop(key)
        if entry.path is not None:
            entry.path.unlink(missing_ok=True)

    def _make_room(self, nbytes: int) -> bool:
        """Evict RAM entries no live network uses (oldest first) until ``nbytes`` fit the budget."""
        def ram() -> int:
            return sum(e.nbytes for e in self._entries.values() if e.path is None)

        if nbytes > self.memory_budget:
            return False
        idle = sorted((e for e in self._entries.values() if e.path is None and not e.owners),
                      key=lambda e: e.last_used)
        for entry in idle:
            if ram() + nbytes <= self.memory_budget:
                break
            self._drop(entry.key)
            self._stats["evictions"] += 1
        return ram() + nbytes <= self.memory_budget

    # -------------------------------------------------------------- building
    def _build(self, key: str, prefix: Network, split: Split, device: torch.device) -> _Entry:
        shape = (len(split), *prefix.output_shape)
        nbytes = int(np.prod(shape)) * 4
        t0 = time.perf_counter()
        if self._make_room(nbytes):
            try:
                features, path = _compute_into(prefix, split.x, torch.empty(shape), device), None  # (N, ...)
            except (MemoryError, RuntimeError) as err:
                if isinstance(err, RuntimeError) and "memory" not in str(err).lower():
                    raise
                raise CacheUnavailable(f"cannot hold {_size(nbytes)} of features in RAM ({err})") from None
        else:
            path = self._write_file(key, prefix, split, device, shape, nbytes)
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

    def _write_file(self, key: str, prefix: Network, split: Split, device: torch.device,
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
                for chunk in _compute_chunks(prefix, split.x, device):  # (b, *out_shape)
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


def _batch_size(x: torch.Tensor) -> int:
    per_example = max(1, x[0].numel() * x.element_size()) if len(x) else 1
    return int(min(max(_BUILD_BYTES // per_example, _BUILD_BATCH[0]), _BUILD_BATCH[1]))


def _compute_chunks(prefix: Network, x: torch.Tensor, device: torch.device) -> Iterable[torch.Tensor]:
    """The prefix's output on ``x`` in large batches, each (b, *out_shape) on the CPU."""
    was_training = prefix.training
    prefix.eval()
    try:
        step = _batch_size(x)
        with torch.inference_mode():
            for i in range(0, len(x), step):
                xb = x[i:i + step].to(device, non_blocking=True)  # (b, *in_shape)
                yield prefix(xb).float().to("cpu")
    finally:
        prefix.train(was_training)


def _compute_into(prefix: Network, x: torch.Tensor, out: torch.Tensor, device: torch.device) -> torch.Tensor:
    # ``out`` is allocated outside inference mode, so autograd may use slices of it later
    i = 0
    for chunk in _compute_chunks(prefix, x, device):
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

