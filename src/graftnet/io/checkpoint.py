"""Saving and loading models and training checkpoints: safetensors + JSON, never pickle.

A model directory holds::

    spec.json             the network spec (layers, frozen state, lineage)
    weights.safetensors   every parameter and buffer, keyed "hidden1.weight", ...
    metadata.json         data, classes, metrics, created, graftnet and torch versions

A training checkpoint is a model directory plus ``optimizer.safetensors`` (the optimizer's
tensors) and ``state.json`` (epoch, history, schedule, optimizer settings, RNG state,
anything the trainer needs to continue exactly).

Every save is atomic: the directory is written under a temporary name, then swapped in
with ``os.replace``. A crash or a kill at any moment leaves either the old or the new
directory loadable; in the one instant between the two renames the old one is at
``NAME.prev``, and ``load_model`` falls back to it.

    >>> save_model(net, "models/fashion-a", metadata={"data": "fashion:A"})
    >>> net = load_model("models/fashion-a")
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

import graftnet
from graftnet.errors import CheckpointError, GraftnetError, brief_error
from graftnet.network import Network

__all__ = [
    "load_model",
    "read_checkpoint",
    "save_checkpoint",
    "save_model",
    "output_description",
    "resolve_model_dir",
    "find_checkpoint",
    "atomic_output",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_directory",
    "json_default",
    "tensors_to_json_and_flat",
    "flat_to_tensors",
]

log = logging.getLogger("graftnet")

SPEC, WEIGHTS, METADATA, OPTIMIZER, STATE = (
    "spec.json", "weights.safetensors", "metadata.json", "optimizer.safetensors", "state.json")


# ------------------------------------------------------------------ atomic writes
def _fsync_tree(root: Path) -> None:
    """Flush every file under ``root`` to disk and give it the mode a plain ``open(path, "w")``
    would (``0o666`` less the umask): some writers (safetensors') create their files 0600."""
    mode = 0o666 & ~_umask()
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            os.chmod(path, mode)
            with open(path, "rb") as f:
                os.fsync(f.fileno())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_directory(path: str | Path, write: Callable[[Path], None], *, kind: str = "model") -> Path:
    """Write a directory atomically: ``write(tmp)`` fills a fresh folder that replaces ``path``.

    Refuses to replace an existing folder that is not a graftnet directory (no spec.json),
    so a typo cannot wipe a user's data. On any error the previous content is untouched.
    """
    path = Path(path)
    if path.exists() and not (path / SPEC).exists() and any(path.iterdir()):
        raise CheckpointError(f"refusing to replace {path}: it exists and is not a graftnet {kind} "
                              f"directory (no {SPEC}); choose another path or remove it")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; a model folder is as readable as any
    except OSError as err:
        raise CheckpointError(f"cannot write {kind} to {path}: {err.strerror or err} "
                              f"(is {path.parent} writable?)") from err
    try:
        write(tmp)
        _fsync_tree(tmp)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, OSError):
            raise CheckpointError(f"cannot write {kind} to {path}: {err.strerror or err}; "
                                  f"the previous {kind} there (if any) is untouched") from err
        raise
    prev = path.with_name(path.name + ".prev")
    if path.exists():
        if prev.exists():  # a stale copy: path is the newer save
            shutil.rmtree(prev)
        os.replace(path, prev)  # a kill here leaves the old content at NAME.prev
    # else NAME.prev, if there, is the only complete save until the new one is in place: keep it
    os.replace(tmp, path)
    shutil.rmtree(prev, ignore_errors=True)
    for stale in path.parent.glob(f".{path.name}.tmp-*"):  # left by killed saves
        shutil.rmtree(stale, ignore_errors=True)
    return path


@contextlib.contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """A temporary file beside ``path`` that replaces ``path`` when the block succeeds.

    The block writes the file by name (any writer that takes a path or opens one). After
    the block the file is flushed to disk and renamed over ``path`` with ``os.replace``; if
    the block fails, the temporary file is removed and ``path`` is untouched. The new file
    gets the permissions a plain ``open(path, "w")`` would (``0o666`` less the umask).

        >>> with atomic_output("w.safetensors") as tmp:
        ...     save_file(tensors, str(tmp))
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # keep the suffix: some writers pick the format from it
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600
        yield tmp
        # again: a writer may have replaced the file with one of its own mode (safetensors: 0600)
        os.chmod(tmp, 0o666 & ~_umask())
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write a file atomically (temp file in the same folder + ``os.replace``).

        >>> atomic_write_bytes("plot.png", buffer.getvalue())
    """
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write a UTF-8 text file atomically (temp file in the same folder + ``os.replace``).

        >>> atomic_write_text("metrics.json", json.dumps(metrics))
    """
    atomic_write_bytes(path, text.encode("utf-8"))


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=False, default=json_default) + "\n", encoding="utf-8")


def json_default(obj: Any) -> Any:
    """``json.dumps(..., default=json_default)``: what graftnet's JSON files may hold beyond JSON.

    One-element tensors and NumPy scalars become numbers, paths and devices strings, tuples
    and sets lists, dataclasses dicts; anything else is a ``TypeError`` naming its type.

        >>> json.dumps({"loss": torch.tensor(0.5), "dir": Path("runs")}, default=json_default)
        '{"loss": 0.5, "dir": "runs"}'
    """
    if isinstance(obj, (Path, torch.device)):
        return str(obj)
    if isinstance(obj, (tuple, set)):
        return list(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if hasattr(obj, "item"):  # one-element tensors, numpy scalars
        return obj.item()
    raise TypeError(f"cannot store {type(obj).__name__} in JSON")


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    # clone: tensors shared between layers (graft(share=True)) cannot be saved twice otherwise
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}


def _write_model(tmp: Path, model: Network, metadata: dict[str, Any] | None) -> None:
    if not isinstance(model, Network):
        raise TypeError(f"save_model needs a graftnet Network, got {type(model).__name__}; "
                        f"import a torch module first (graftnet.io.torch_state)")
    _write_json(tmp / SPEC, model.to_spec())
    save_file(_weights(model), str(tmp / WEIGHTS), metadata={"format": "graftnet"})
    # "path" says where a loaded model came from, not what it is: load_model sets it afresh
    meta = {**{k: v for k, v in model.info.items() if k != "path"}, **(metadata or {})}
    meta.update(output_description(model, meta))
    if "sparsity" in meta:  # a pruned model (graftnet.sparse): say how sparse it is now
        from graftnet.sparse import sparsity_report

        meta["sparsity"] = sparsity_report(model)
    meta.update(created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                graftnet_version=graftnet.__version__, torch_version=torch.__version__)
    _write_json(tmp / METADATA, meta)


def output_description(model: Network, info: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a model's outputs are: ``{"task", "output_activation", "classes"}``.

    Taken from ``info`` (a model's metadata: ``fit`` records the task and classes of the
    data it trained on) where it says, else from the last layer: softmax outputs are a
    multiclass classifier and one sigmoid output a binary one, with classes named by index
    (``"0"``, ``"1"``, ...). A linear output that nothing describes has task None: logits
    and regression values cannot be told apart. Every saved model carries these keys.

        >>> output_description(Network.mlp(4, [8], 3, output_activation="softmax"))
        {'task': 'multiclass', 'output_activation': 'softmax', 'classes': ['0', '1', '2']}
    """
    info = model.info if info is None else info
    activation = getattr(model.specs[-1], "activation_name", "linear") if model.specs else "linear"
    n_outputs = int(model.output_shape[0]) if len(model.output_shape) == 1 else None
    task, classes = info.get("task"), info.get("classes")
    if not task:
        if classes:
            task = "binary" if n_outputs == 1 and len(classes) == 2 else "multiclass"
        elif activation == "softmax":
            task = "multiclass"
        elif activation == "sigmoid" and n_outputs == 1:
            task = "binary"
    if not classes and task in ("multiclass", "binary") and n_outputs:
        classes = [str(i) for i in range(2 if task == "binary" else n_outputs)]
    return {"task": task or None, "output_activation": activation, "classes": list(classes) if classes else None}


def save_model(model: Network, path: str | Path, *, metadata: dict[str, Any] | None = None) -> Path:
    """Save ``model`` as ``spec.json`` + ``weights.safetensors`` + ``metadata.json`` in ``path``."""
    return atomic_directory(path, lambda tmp: _write_model(tmp, model, metadata))


# ------------------------------------------------------------------ loading
def resolve_model_dir(path: str | Path) -> Path:
    """The directory to read: ``path``, or ``path.prev`` left by a save that was killed."""
    path = Path(path)
    if (path / SPEC).is_file():
        return path
    prev = path.with_name(path.name + ".prev")
    if not path.exists() and (prev / SPEC).is_file():
        warnings.warn(f"{path} is missing but {prev} holds the previous save (a save was "
                      f"interrupted); loading that", stacklevel=3)
        return prev
    if not path.exists():
        raise CheckpointError(f"no model at {path}: the directory does not exist")
    if path.is_file():
        raise CheckpointError(f"{path} is a file; a graftnet model is a directory holding {SPEC} and {WEIGHTS}")
    present = sorted(p.name for p in path.iterdir())
    raise CheckpointError(f"{path} is not a graftnet model: it has no {SPEC} "
                          f"(found: {', '.join(present) or 'nothing'})")


def find_checkpoint(path: str | Path) -> Path | None:
    """The folder holding the training checkpoint saved at ``path``: ``path`` itself, or
    ``path.prev`` when a save was killed between its two renames; None when there is none.

        >>> find_checkpoint("runs/x/checkpoint")   # doctest: +SKIP
        PosixPath('runs/x/checkpoint')
    """
    path = Path(path)
    if (path / STATE).is_file() and (path / SPEC).is_file():
        return path
    prev = path.with_name(path.name + ".prev")
    if (prev / STATE).is_file() and (prev / SPEC).is_file():
        log.warning("%s is missing or incomplete but %s holds the previous checkpoint (a save was "
                    "interrupted); resuming from that", path, prev)
        return prev
    return None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path} is not valid JSON ({err}); the file is truncated or corrupt") from None


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"{path} is missing")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{path} cannot be read as safetensors ({err}); the file is "
                              f"truncated, corrupt or not a weights file") from None


def _load_weights_strict(model: Network, tensors: dict[str, torch.Tensor], source: Path) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = [f"{k}: file {tuple(tensors[k].shape)}, spec {tuple(expected[k].shape)}"
             for k in expected if k in tensors and tensors[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing)}")
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected)}")
        if wrong:
            parts.append(f"shape mismatch {'; '.join(wrong)}")
        raise CheckpointError(f"{source} does not match its {SPEC}: " + " | ".join(parts))
    model.load_state_dict(tensors, strict=True)


def load_model(path: str | Path, *, device: str | torch.device | None = None) -> Network:
    """Rebuild a saved model from its spec, then load its weights strictly.

    ``model.info`` holds ``metadata.json``; ``model.lineage`` the transfer lineage.
    """
    folder = resolve_model_dir(path)
    spec = _read_json(folder / SPEC)
    try:
        model = Network.from_spec(spec, source=str(folder / SPEC))
    except CheckpointError:
        raise
    except (GraftnetError, TypeError, ValueError, KeyError, AttributeError, IndexError) as err:
        # a damaged spec: say which file, whatever layer or value the network builder tripped on
        raise CheckpointError(f"{folder / SPEC} does not describe a network graftnet can build ("
                              f"{brief_error(err, with_type=not isinstance(err, GraftnetError))}); the file "
                              f"is corrupt or was edited by hand") from None
    _load_weights_strict(model, _read_tensors(folder / WEIGHTS), folder / WEIGHTS)
    meta_path = folder / METADATA
    info = _read_json(meta_path) if meta_path.exists() else {}
    if not isinstance(info, dict):
        raise CheckpointError(f"{meta_path} holds {type(info).__name__}, not a table of metadata; the file is corrupt")
    model.info = info
    model.info["path"] = str(folder)
    return model.to(device) if device is not None else model


# ------------------------------------------------------------------ training checkpoints
def tensors_to_json_and_flat(obj: Any, prefix: str = "") -> tuple[Any, dict[str, torch.Tensor]]:
    """Split a nested structure (an optimizer state_dict) into JSON and named tensors.

    Tensors are replaced by ``{"__tensor__": key}`` and returned in a flat dict, so the
    structure goes to JSON and the tensors to safetensors; ``flat_to_tensors`` reverses it.
    """
    flat: dict[str, torch.Tensor] = {}

    def walk(x: Any, key: str) -> Any:
        if isinstance(x, torch.Tensor):
            flat[key] = x.detach().to("cpu").contiguous().clone()
            return {"__tensor__": key}
        if isinstance(x, dict):
            return {"__dict__": [[walk(k, f"{key}.k{i}") if not isinstance(k, (str, int)) else k,
                                  walk(v, f"{key}.{k}")] for i, (k, v) in enumerate(x.items())]}
        if isinstance(x, (list, tuple)):
            return [walk(v, f"{key}.{i}") for i, v in enumerate(x)]
        return x

    return walk(obj, prefix or "root"), flat


def flat_to_tensors(obj: Any, flat: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict) and "__tensor__" in obj:
        return flat[obj["__tensor__"]]
    if isinstance(obj, dict) and "__dict__" in obj:
        return {k: flat_to_tensors(v, flat) for k, v in obj["__dict__"]}
    if isinstance(obj, list):
        return [flat_to_tensors(v, flat) for v in obj]
    return obj


def save_checkpoint(path: str | Path, model: Network, *, state: dict[str, Any],
                    tensors: dict[str, Any] | None = None, metadata: dict[str, Any] | None = None) -> Path:
    """Atomically save a model plus trainer state.

    ``state`` is JSON-able apart from tensors anywhere inside it (an optimizer or
    scheduler state_dict, RNG states): those go to ``optimizer.safetensors``.
    """
    def write(tmp: Path) -> None:
        _write_model(tmp, model, metadata)
        structure, flat = tensors_to_json_and_flat({"state": state, **(tensors or {})})
        save_file(flat, str(tmp / OPTIMIZER), metadata={"format": "graftnet-trainer"})
        _write_json(tmp / STATE, structure)

    return atomic_directory(path, write, kind="checkpoint")


def read_checkpoint(path: str | Path, *, device: str | torch.device | None = None) -> tuple[Network, dict[str, Any]]:
    """Load a training checkpoint: ``(model, state)`` with tensors restored inside ``state``."""
    model = load_model(path, device=device)
    folder = Path(model.info["path"])
    if not (folder / STATE).exists():
        raise CheckpointError(f"{folder} is a saved model, not a training checkpoint (no {STATE}); "
                              f"to continue training from it, use it as the starting model instead of --resume")
    structure = _read_json(folder / STATE)
    flat = _read_tensors(folder / OPTIMIZER)
    try:
        restored = flat_to_tensors(structure, flat)
    except KeyError as err:
        raise CheckpointError(f"{folder / OPTIMIZER} lacks tensor {err} named in {STATE}; the checkpoint is corrupt") from None
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{folder / STATE} is not a trainer state graftnet wrote ({brief_error(err)}); "
                              f"the checkpoint is corrupt") from None
    if not isinstance(restored, dict) or not isinstance(restored.get("state"), dict):
        raise CheckpointError(f"{folder / STATE} holds no trainer state table; the checkpoint is corrupt")
    return model, restored
