"""Helpers shared by the ``graftnet`` subcommands: data and training flags, models, tables.

A command module uses them like this::

    def register(subparsers):
        parser = subparsers.add_parser("finetune", help="...")
        parser.add_argument("model")
        add_data_args(parser)
        add_train_args(parser)
        parser.set_defaults(func=run)

    def run(args) -> int:
        model = load_model_arg(args.model)
        data = load_data_arg(args)
        history = fit(model, data, **train_kwargs(args))
        return 0
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from graftnet.errors import ConfigError, ShapeError

__all__ = [
    "add_data_args",
    "add_train_args",
    "load_data_arg",
    "train_kwargs",
    "parse_schedule",
    "load_model_arg",
    "model_folder",
    "check_model_fits",
    "make_run_dir",
    "print_table",
    "print_summary",
    "print_json",
    "EXAMPLES_FORMATTER",
]

EXAMPLES_FORMATTER = argparse.RawDescriptionHelpFormatter  # keeps the examples in epilogs as written


# ---------------------------------------------------------------- data
def add_data_args(parser: argparse.ArgumentParser, *, required: bool = False) -> None:
    """``--data NAME|PATH``, ``--data-root DIR`` and first-n limits ``--train-size`` etc."""
    group = parser.add_argument_group("data")
    group.add_argument("--data", metavar="NAME|PATH", required=required,
                       help="fashion, fashion:A (8 classes), fashion:B (sandal vs shirt, 200 images), mnist, "
                            "mnist:0-4, digits, FILE.npz, or an image folder (one sub-folder per class)")
    group.add_argument("--data-root", metavar="DIR",
                       help="data root holding fashion-mnist/ and mnist/ (as $GRAFTNET_DATA and Python's root=; "
                            "the dataset's own folder works too); only read, never written")
    for split in ("train", "valid", "test"):
        group.add_argument(f"--{split}-size", type=int, metavar="N", help=f"use the first N {split} examples")


def data_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The [data] recipe settings given on the command line (unset flags left out)."""
    out: dict[str, Any] = {}
    if getattr(args, "data", None):
        out["source"] = args.data
    if getattr(args, "data_root", None):
        out["root"] = args.data_root
    for split in ("train", "valid", "test"):
        if getattr(args, f"{split}_size", None) is not None:
            out[f"{split}_size"] = getattr(args, f"{split}_size")
    return out


def load_data_arg(args: argparse.Namespace, model: Any = None):  # -> graftnet.data.Dataset
    """The dataset ``--data`` (and the size flags) name. An image folder read for ``model`` is
    resized to its input and preprocessed as its base expects (``preprocess_input``), when
    the model says how (a ``graftnet.backbones`` base, or a model trained on such images)."""
    from graftnet.recipe import build_data, resolve

    if not getattr(args, "data", None):
        raise ConfigError("no data given: pass --data NAME|PATH (fashion, mnist, digits, FILE.npz, FOLDER)")
    images = {}
    if model is not None and Path(args.data).expanduser().is_dir() and len(model.input_shape) == 3:
        from graftnet.backbones import preprocess_mode

        try:
            mode = preprocess_mode(model)
        except ConfigError:
            mode = None  # a model that does not say: pixels in [0, 1], as before
        channels, height, width = model.input_shape
        images = {"size": (height, width), "preprocess": mode, "grayscale": channels == 1 and mode is None}
    return build_data(resolve({"data": data_overrides(args)}), images=images)


# ---------------------------------------------------------------- training
def add_train_args(parser: argparse.ArgumentParser) -> None:
    """The flags of ``train.fit``; every one defaults to None ("not given")."""
    group = parser.add_argument_group("training")
    group.add_argument("--epochs", type=int, metavar="N")
    group.add_argument("--batch-size", type=int, metavar="N")
    group.add_argument("--optimizer", metavar="NAME",
                       help="sgd, momentum, nesterov, adam, adamw, nadam, rmsprop, adagrad")
    group.add_argument("--lr", type=float, metavar="RATE", help="learning rate")
    group.add_argument("--momentum", type=float, metavar="M", help="momentum (sgd, rmsprop)")
    group.add_argument("--schedule", metavar="NAME[:SETTINGS]",
                       help="piecewise, exponential, power, plateau, one_cycle, cosine; settings as TOML, "
                            "e.g. 'exponential:s=10' or 'piecewise:boundaries=[5,15],values=[0.01,0.005,0.001]'")
    group.add_argument("--clip-norm", type=float, metavar="NORM", help="clip the gradient norm to NORM")
    group.add_argument("--early-stopping", type=int, metavar="PATIENCE",
                       help="stop when val_loss has not improved for PATIENCE epochs; keep the best weights")
    group.add_argument("--seed", type=int, metavar="N")
    group.add_argument("--device", metavar="DEV", help="cpu, cuda, cuda:1 (default: cuda if available)")
    group.add_argument("--no-cache", dest="cache", action="store_const", const=False, default=None,
                       help="do not cache the output of frozen bottom layers")
    group.add_argument("--precision", choices=("fp32", "bf16", "fp16"))


def parse_schedule(text: str) -> dict[str, Any] | str:
    """``"cosine"`` -> ``"cosine"``; ``"exponential:s=10"`` -> ``{"type": "exponential", "s": 10}``.

        >>> parse_schedule("piecewise:boundaries=[5],values=[0.01,0.001]")
        {'type': 'piecewise', 'boundaries': [5], 'values': [0.01, 0.001]}
    """
    name, _, settings = text.partition(":")
    if not settings.strip():
        return name.strip()
    try:
        table = tomllib.loads(f"s = {{{settings}}}")["s"]
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"--schedule {text!r}: settings must be TOML key=value pairs separated by commas, "
                          f"e.g. 'exponential:s=10' ({err})") from None
    return {"type": name.strip(), **table}


def train_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments for ``train.fit`` from the flags of ``add_train_args`` that were given."""
    out: dict[str, Any] = {}
    for flag in ("epochs", "batch_size", "clip_norm", "early_stopping", "seed", "device", "cache", "precision", "lr"):
        value = getattr(args, flag, None)
        if value is not None:
            out[flag] = value
    optimizer = getattr(args, "optimizer", None)
    momentum = getattr(args, "momentum", None)
    if momentum is not None:
        out["optimizer"] = {"type": optimizer or "sgd", "momentum": momentum}
    elif optimizer:
        out["optimizer"] = optimizer
    if getattr(args, "schedule", None):
        out["schedule"] = parse_schedule(args.schedule)
    return out


# ---------------------------------------------------------------- models
def model_folder(path: str | os.PathLike) -> Path:
    """``path`` if it is a model folder; the ``model/`` inside it if it is a run folder.

        >>> model_folder("runs/fashion_mlp-20250101-120000")   # doctest: +SKIP
        PosixPath('runs/fashion_mlp-20250101-120000/model')
    """
    path = Path(path)
    if not (path / "spec.json").exists() and (path / "model" / "spec.json").exists():
        return path / "model"
    return path


def load_model_arg(path: str | os.PathLike):  # -> graftnet.network.Network
    """A saved model: a model folder, or a run folder (its ``model/`` is used)."""
    from graftnet.io.checkpoint import load_model

    return load_model(model_folder(path))


def check_model_fits(model: Any, data: Any) -> None:
    """ShapeError/ConfigError when ``data`` cannot go through ``model`` (shapes, classes)."""
    if tuple(data.input_shape) != tuple(model.input_shape):
        raise ShapeError(f"data {data.name!r} has examples of shape {tuple(data.input_shape)} but the model "
                         f"expects {tuple(model.input_shape)}")
    if tuple(model.output_shape) != (data.n_outputs,):
        raise ShapeError(f"the model has {model.output_shape[0]} output(s) but data {data.name!r} needs "
                         f"{data.n_outputs} ({data.task})")
    classes = model.info.get("classes")
    by_index = classes == [str(i) for i in range(len(classes or []))]  # an imported model's: no names to compare
    if classes and data.classes and not by_index and list(classes) != list(data.classes):
        raise ConfigError(f"the model was trained on classes {list(classes)} but data {data.name!r} has "
                          f"{list(data.classes)}")


def make_run_dir(root: str | os.PathLike, name: str) -> Path:
    """A new, empty ``root/<name>-<YYYYmmdd-HHMMSS>`` folder."""
    from graftnet.runs import RunDir

    return RunDir.create(root, name).path


# ---------------------------------------------------------------- printing
def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None, *,
                title: str | None = None, right: Sequence[str] = ()) -> None:
    """Print ``rows`` (dicts) as a table: rich on a terminal, aligned plain text otherwise.

    ``right`` names the columns to right-align (numbers).
    """
    columns = list(columns or (rows[0].keys() if rows else []))
    cells = [[_cell(row.get(c, "")) for c in columns] for row in rows]
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title, show_lines=False)
        for c in columns:
            table.add_column(c, justify="right" if c in right else "left")
        for line in cells:
            table.add_row(*line)
        Console().print(table)
        return
    widths = [max([len(c)] + [len(line[i]) for line in cells]) for i, c in enumerate(columns)]

    def fmt(line: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if c in right else v.ljust(w)
                         for c, v, w in zip(columns, line, widths)).rstrip()

    if title:
        print(title)
    print(fmt(columns))
    print("  ".join("-" * w for w in widths))
    for line in cells:
        print(fmt(line))


def print_summary(model: Any) -> None:
    """Print a network's layer table (name, type, output shape, params, trainable, origin) and totals.

    The origin column (reused/new, from grafting) is shown only when some layer has one.

        >>> print_summary(Network.mlp(4, [3], 2))   # doctest: +SKIP
        mlp: input (None, 4)
        layer    type         output shape  params  trainable
        -------  -----------  ------------  ------  ---------
        hidden1  dense(relu)  (None, 3)         15  yes
        outputs  dense        (None, 2)          8  yes
        params: 23 total, 23 trainable, 0 frozen
    """
    rows = model.summary_rows()
    columns = ["layer", "type", "output shape", "params", "trainable"] + (
        ["origin"] if any(r["origin"] for r in rows) else [])
    table = [{"layer": r["name"], "type": r["type"], "output shape": _batch_shape(r["output_shape"]),
              "params": r["params"], "trainable": r["trainable"], "origin": r["origin"]} for r in rows]
    print_table(table, columns, title=f"{model.name}: input {_batch_shape(model.input_shape)}", right=("params",))
    total, trainable = model.count_params(), model.count_params(trainable_only=True)
    print(f"params: {total:,} total, {trainable:,} trainable, {total - trainable:,} frozen", flush=True)


def _batch_shape(shape: Sequence[int]) -> str:
    """(28, 28) -> '(None, 28, 28)', Keras' way of showing a batch of that shape."""
    return "(None, " + ", ".join(map(str, shape)) + ")"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if isinstance(value, (tuple, list)):
        return "(" + ", ".join(map(str, value)) + ")"
    return str(value)


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))
