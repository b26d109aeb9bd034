"""``graftnet train | evaluate | predict | inspect | demo``."""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from graftnet.cli._common import (
    add_data_args,
    add_train_args,
    check_model_fits,
    data_overrides,
    load_data_arg,
    load_model_arg,
    print_json,
    print_summary,
    train_kwargs,
)
from graftnet.cli.catalog import add_register_args, register_saved
from graftnet.errors import ConfigError, DataError, ShapeError

__all__ = ["COMMANDS", "register"]

COMMANDS = ("train", "evaluate", "predict", "inspect", "demo")

TRAIN_EPILOG = """\
examples:
  graftnet train examples/recipes/fashion_mlp.toml
  graftnet train examples/recipes/fashion_mlp.toml --epochs 5 --seed 1      # flags override the recipe
  graftnet train examples/recipes/fashion_mlp.toml --resume                 # continue the latest run
  graftnet train --resume runs/fashion_mlp-20250101-120000                  # continue that run
  torchrun --nproc-per-node 2 -m graftnet train examples/recipes/fashion_mlp.toml   # data-parallel (DDP)
  graftnet train --data digits --hidden 64 32 --epochs 20 --optimizer adam --lr 0.001

A run writes runs/<name>-<time>/: recipe.toml (every default filled in), metrics.json,
history.csv, learning_curves.png, model/, checkpoint/ and, with --tensorboard, tensorboard/.

recipe sections and keys (see examples/recipes/):
  [model]   hidden, activation, init, batch_norm, dropout, l2, max_norm, output_activation,
            normalize, name -- or layers = [{type = "dense", units = 300, activation = "relu"}, ...]
  [data]    source, root, classes, exclude, positive, train_size, valid_size, test_size
  [train]   epochs, batch_size, optimizer, schedule, metrics, clip_norm, clip_value,
            early_stopping, augment, seed, device, cache, precision
  [output]  dir, name, tensorboard, checkpoint, mlflow (true or a tracking URI)"""

EVALUATE_EPILOG = """\
examples:
  graftnet evaluate runs/fashion_mlp-20250101-120000            # the data it was trained on
  graftnet evaluate models/fashion-a --data fashion:A --split valid --json"""

PREDICT_EPILOG = """\
examples:
  graftnet predict models/fashion --data fashion --split test -o preds.csv
  graftnet predict models/fashion images.npz -o probs.npy      # npz key 'x' (or x_test, or its only array)

A .csv has the predicted class and one probability column per class; a .npy holds the
probabilities (N, classes) -- for regression, the predictions. Without -o the CSV goes to stdout."""

INSPECT_EPILOG = """\
examples:
  graftnet inspect runs/fashion_mlp-20250101-120000/model
  graftnet inspect models/fashion-b --json
  graftnet inspect models/fashion-b --operations          # get_operations(): name, type, inputs, shape
  graftnet inspect my_model_final.ckpt.meta               # a TF graph's ops and the layer each became"""

DEMO_EPILOG = """\
examples:
  graftnet demo                # 5 epochs: a few minutes on a CPU
  graftnet demo --epochs 30    # the book's figure: about 0.88-0.89 test accuracy"""


def _units(text: str) -> list[int]:
    """``"300"`` or ``"300,100"`` -> layer sizes (argparse flattens the lists afterwards)."""
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected layer sizes such as 300 100 or 300,100, got {text!r}") from None
    if not sizes or any(n < 1 for n in sizes):
        raise argparse.ArgumentTypeError(f"layer sizes must be positive integers, got {text!r}")
    return sizes


def register(subparsers: Any) -> None:
    """Add train, evaluate, predict, inspect and demo to ``graftnet``'s subparsers."""
    _register_train(subparsers)
    _register_evaluate(subparsers)
    _register_predict(subparsers)
    _register_inspect(subparsers)
    _register_demo(subparsers)


# ---------------------------------------------------------------- train
def _register_train(subparsers: Any) -> None:
    parser = subparsers.add_parser("train", help="train a network from a TOML recipe or flags",
                                   description="Train a network from a TOML recipe (flags override its "
                                               "settings) or from flags alone.", epilog=TRAIN_EPILOG)
    parser.add_argument("recipe", nargs="?", help="a TOML recipe (see examples/recipes/)")
    parser.add_argument("--resume", nargs="?", const=True, metavar="RUN_DIR",
                        help="continue an interrupted run: RUN_DIR, or the latest run of this recipe")
    model = parser.add_argument_group("model (MLP shorthand)")
    model.add_argument("--hidden", type=_units, nargs="+", metavar="UNITS",
                       help="hidden layer sizes, e.g. 300 100 (or 300,100)")
    model.add_argument("--activation", help="relu, leaky_relu(0.2), elu, selu, gelu, tanh, ...")
    model.add_argument("--dropout", type=float, metavar="RATE")
    model.add_argument("--batch-norm", action="store_const", const=True, default=None)
    add_data_args(parser)
    add_train_args(parser)
    out = parser.add_argument_group("output")
    out.add_argument("--output-dir", metavar="DIR", help="where run folders go (default: runs)")
    out.add_argument("--name", help="run name (default: the recipe's file name)")
    out.add_argument("--tensorboard", action="store_const", const=True, default=None,
                     help="also write TensorBoard event files")
    out.add_argument("--mlflow", nargs="?", const=True, default=None, metavar="URI",
                     help="log parameters, metrics, the run folder and the model to MLflow "
                          "(default store: sqlite:///<output dir>/mlflow.db)")
    out.add_argument("-q", "--quiet", action="store_true", help="no per-epoch lines")
    add_register_args(parser)
    parser.set_defaults(func=run_train)


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Recipe settings given as flags (flags not given are left out)."""
    train = {k: v for k, v in train_kwargs(args).items() if k not in ("lr", "optimizer")}
    optimizer = {key: value for key, value in (("type", args.optimizer), ("lr", args.lr), ("momentum", args.momentum))
                 if value is not None}  # no type: the recipe's optimizer, with these settings changed
    if optimizer:
        train["optimizer"] = optimizer
    model = {key: getattr(args, key) for key in ("hidden", "activation", "dropout", "batch_norm")
             if getattr(args, key) is not None}
    if "hidden" in model:  # each --hidden word is a list: "300 100" and "300,100" both give [300, 100]
        model["hidden"] = [units for word in model["hidden"] for units in word]
    output = {"dir": args.output_dir, "name": args.name, "tensorboard": args.tensorboard, "mlflow": args.mlflow}
    sections = {"model": model, "data": data_overrides(args), "train": train,
                "output": {k: v for k, v in output.items() if v is not None}}
    return {k: v for k, v in sections.items() if v}


def _merge_optimizer(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """--lr or --momentum alone keep the recipe's optimizer type and its other settings."""
    given = overrides.get("train", {}).get("optimizer")
    if given is None:
        return overrides
    current = base.get("train", {}).get("optimizer", "sgd")
    current = {"type": current} if isinstance(current, str) else dict(current)
    if given.get("type", current["type"]) != current["type"]:
        return overrides  # another optimizer: its own defaults
    return {**overrides, "train": {**overrides["train"], "optimizer": {**current, **given}}}


def _finished_message(result: Any) -> str:
    metrics = result.metrics
    parts = []
    for split in ("train", "valid", "test"):
        if split in metrics:
            scores = "  ".join(f"{k} {v:.4f}" for k, v in metrics[split].items())
            parts.append(f"  {split:5}  {scores}")
    head = (f"trained {metrics['epochs']} epoch(s) in {metrics['train_seconds']:.1f}s on {metrics['device']}"
            + (f" ({metrics['stop_reason']})" if metrics.get("stop_reason") else ""))
    return "\n".join([head, *parts, f"run folder: {result.run.path}"])


def run_train(args: argparse.Namespace) -> int:
    from graftnet import distributed

    world = distributed.init_from_env(args.device)  # under torchrun: join the other ranks
    try:
        return _train(args, world)
    finally:
        distributed.shutdown()


def _train(args: argparse.Namespace, world: Any) -> int:
    from graftnet import distributed
    from graftnet import recipe as recipes
    from graftnet.runs import RunDir, train_run

    run_dir: RunDir | None = None
    if isinstance(args.resume, str):
        run_dir = RunDir(args.resume)
        if not run_dir.recipe_path.is_file():
            raise ConfigError(f"--resume {args.resume}: not a run folder (no {RunDir.RECIPE} there)")
    if args.recipe:
        base, name = recipes.load_recipe(args.recipe), Path(args.recipe).stem
    elif run_dir is not None:
        base, name = run_dir.read_recipe(), run_dir.path.name
    else:
        base, name = {}, "run"
    overrides = _overrides(args)
    if not args.recipe and run_dir is None and "source" not in overrides.get("data", {}):
        raise ConfigError("nothing to train: give a recipe (graftnet train recipe.toml) or at least --data")
    recipe = recipes.resolve(recipes.merge(base, _merge_optimizer(base, overrides)),
                             name=name, source=args.recipe or "command line")
    if args.resume is True:
        run_dir = RunDir.latest(recipe["output"]["dir"], recipe["output"]["name"])
        if run_dir is None:
            raise ConfigError(f"--resume: no run of {recipe['output']['name']!r} with a checkpoint in "
                              f"{recipe['output']['dir']}/; start one without --resume")
    if run_dir is not None:
        _check_same_run(run_dir, recipe)
        recipe["output"]["name"] = run_dir.read_recipe().get("output", {}).get("name", recipe["output"]["name"])
    data = recipes.build_data(recipe)  # bad data or a bad model: an error before any folder is made
    model = recipes.build_model(recipe, data)
    if world.active:  # a world the data cannot be split across: an error before any folder is made
        distributed.check_splittable(len(data.train), recipe["train"]["batch_size"], world)
    resume = run_dir is not None
    if world.is_main:
        run = run_dir or RunDir.create(recipe["output"]["dir"], recipe["output"]["name"])
        print(f"run folder: {run.path}" + (f" ({world.size} processes)" if world.active else ""), file=sys.stderr)
    run = RunDir(distributed.broadcast_text(str(run.path) if world.is_main else "", world))  # rank 0's folder
    try:
        result = train_run(recipe, run, data=data, model=model, resume=resume,
                           verbose=False if args.quiet else None)
    except KeyboardInterrupt:
        if world.is_main:
            print(f"graftnet: to continue: graftnet train --resume {run.path}", file=sys.stderr)
        raise
    if world.is_main:
        print(_finished_message(result))
        register_saved(args, result.run.model_dir, data=result.data)
    return 0


# What a resumed run may change: how far it trains and where; everything else is fixed by
# the checkpoint (optimizer state and learning rate, schedule, RNG streams, batch order).
RESUMABLE = {"train": ("epochs", "device", "cache"), "output": ("dir", "name", "tensorboard", "mlflow")}


def _check_same_run(run: Any, recipe: dict[str, Any]) -> None:
    """Resuming must continue the run its ``recipe.toml`` describes: another model or other data
    would mix two runs, and a setting the checkpoint fixes (a new learning rate, another
    optimizer or seed) would be written into the recipe without having been applied. Both are
    errors; so is asking for no more epochs than the checkpoint already holds."""
    from graftnet.io.checkpoint import find_checkpoint, read_checkpoint
    from graftnet.recipe import resolve

    saved = resolve(run.read_recipe(), source=str(run.recipe_path))
    changed = [f"[{section}] {key}" for section in ("model", "data")
               for key in recipe[section] if recipe[section].get(key) != saved[section].get(key)]
    if changed:
        raise ConfigError(f"--resume {run.path}: the recipe differs from the run's {run.RECIPE} in "
                          f"{', '.join(changed)}; resume with the same model and data, or start a new run")
    fixed = [f"[{section}] {key} ({_toml_value(saved[section].get(key))} in the run, "
             f"{_toml_value(recipe[section].get(key))} given)"
             for section in ("train", "output") for key in recipe[section]
             if key not in RESUMABLE[section] and recipe[section].get(key) != saved[section].get(key)]
    if fixed:
        raise ConfigError(f"--resume {run.path}: {'; '.join(fixed)}: a resumed run continues with the settings "
                          f"its checkpoint holds, so these cannot apply; resume without them (only "
                          f"{', '.join('--' + k.replace('_', '-') for k in RESUMABLE['train'])} may change), "
                          f"or start a new run")
    found = find_checkpoint(run.checkpoint_dir)
    if found is None:
        raise ConfigError(f"--resume {run.path}: it has no training checkpoint ({run.checkpoint_dir} is missing or "
                          f"incomplete); start a new run")
    done = int(read_checkpoint(found)[1]["state"]["epoch"])
    if recipe["train"]["epochs"] <= done:
        raise ConfigError(f"--resume {run.path}: the run has already trained {done} epoch(s) and epochs = "
                          f"{recipe['train']['epochs']}, so there is nothing left to train; pass --epochs N "
                          f"with N > {done} to train more")


def _toml_value(value: Any) -> str:
    return json.dumps(value, default=str) if not isinstance(value, str) else repr(value)


# ---------------------------------------------------------------- evaluate
def _register_evaluate(subparsers: Any) -> None:
    parser = subparsers.add_parser("evaluate", help="loss and accuracy of a saved model",
                                   description="Loss and metrics of a saved model on a data split. Without "
                                               "--data, the data the model was trained on (from its recipe).",
                                   epilog=EVALUATE_EPILOG)
    parser.add_argument("model", help="a model folder, or a run folder")
    add_data_args(parser)
    parser.add_argument("--split", choices=("test", "valid", "train"), default="test")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(func=run_evaluate)


def _data_for(model: Any, args: argparse.Namespace):  # -> Dataset
    """``--data`` if given, else the [data] of the recipe the model was trained with."""
    from graftnet.recipe import build_data, merge, resolve

    if args.data:
        return load_data_arg(args)
    recipe = model.info.get("recipe")
    if not isinstance(recipe, dict) or "data" not in recipe:
        raise ConfigError(f"{model.info.get('path', 'the model')} does not say which data it was trained on "
                          f"(no recipe in its metadata.json); pass --data NAME|PATH")
    return build_data(resolve(merge({"data": recipe["data"]}, {"data": data_overrides(args)})))


def _split(data: Any, name: str) -> Any:
    split = getattr(data, name)
    if split is None or not len(split):
        present = [s for s in ("train", "valid", "test") if getattr(data, s) is not None]
        raise DataError(f"data {data.name!r} has no {name} split; it has {', '.join(present)}")
    return split


def run_evaluate(args: argparse.Namespace) -> int:
    from graftnet.train import evaluate

    model = load_model_arg(args.model)
    data = _data_for(model, args)
    check_model_fits(model, data)
    split = _split(data, args.split)
    metrics = ("mae",) if data.task == "regression" else ("accuracy",)
    scores = evaluate(model, split, task=data.task, metrics=metrics)
    if args.json:
        print_json({"model": model.info.get("path"), "data": data.name, "split": args.split,
                    "examples": len(split), **scores})
    else:
        text = "  ".join(f"{k} {v:.4f}" for k, v in scores.items())
        print(f"{data.name} {args.split} ({len(split):,} examples): {text}")
    return 0


# ---------------------------------------------------------------- predict
def _register_predict(subparsers: Any) -> None:
    parser = subparsers.add_parser("predict", help="class probabilities (or values) for new inputs",
                                   description="Predictions of a saved model for the inputs in an .npz/.npy "
                                               "file or a data split.", epilog=PREDICT_EPILOG)
    parser.add_argument("model", help="a model folder, or a run folder")
    parser.add_argument("input", nargs="?", help="an .npz (key x, x_test or a single array) or .npy file")
    add_data_args(parser)
    parser.add_argument("--split", choices=("test", "valid", "train"), default="test")
    parser.add_argument("-o", "--output", metavar="FILE", help="FILE.csv or FILE.npy (default: CSV to stdout)")
    parser.set_defaults(func=run_predict)


def _read_inputs(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        if path.suffix == ".npy":
            return np.load(path, allow_pickle=False)
        with np.load(path, allow_pickle=False) as archive:
            keys = list(archive.files)
            for key in ("x", "x_test"):
                if key in keys:
                    return archive[key]
            if len(keys) == 1:
                return archive[keys[0]]
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: cannot read as .npz/.npy without pickle ({err})") from None
    raise DataError(f"{path}: which array are the inputs? found keys {keys}; expected 'x', 'x_test' or a "
                    f"single array")


def _as_model_input(x: np.ndarray, model: Any, source: str) -> torch.Tensor:
    """(N, *input_shape) float32; integer pixels are scaled the way the training data was."""
    shape = tuple(model.input_shape)
    if x.ndim < 2 or int(np.prod(x.shape[1:])) != int(np.prod(shape)):
        raise ShapeError(f"{source}: inputs of shape {x.shape} do not fit the model, which expects "
                         f"(N, {', '.join(map(str, shape))})")
    tensor = torch.from_numpy(np.ascontiguousarray(x)).reshape(len(x), *shape)
    if not tensor.is_floating_point():
        scaling = (model.info.get("data") or {}).get("scaling") or {}
        divisor = scaling.get("divisor") if scaling.get("kind") == "unit" else None
        tensor = tensor.float() / divisor if divisor else tensor.float()
    return tensor.float()


def _outputs_of(model: Any, data: Any = None) -> tuple[str, list[str] | None]:
    """(task, class names) of a model: its metadata or last layer, else the data's, else raw outputs."""
    from graftnet.io.checkpoint import output_description

    described = output_description(model)
    task, classes = described["task"], described["classes"]
    if task is None and data is not None:
        task, classes = data.task, (list(data.classes) if data.classes else None)
    if task is None:
        print(f"graftnet: {model.info.get('path', 'the model')} does not say what its outputs are (no task in "
              f"its metadata.json and a linear last layer); printing raw outputs. Pass --data to read the task "
              f"and classes from the data", file=sys.stderr)
        return "raw", None
    return task, classes


def run_predict(args: argparse.Namespace) -> int:
    from graftnet.train import predict

    model = load_model_arg(args.model)
    if args.input and args.data:
        raise ConfigError("give an input file or --data, not both")
    data = None
    if args.input:
        x = _as_model_input(_read_inputs(Path(args.input)), model, args.input)
    else:
        data = _data_for(model, args)
        check_model_fits(model, data)
        x = _split(data, args.split).x
    task, classes = _outputs_of(model, data)
    classifier = task in ("multiclass", "binary")
    out = predict(model, x, proba=classifier)  # (N, outputs): probabilities for a classifier
    if task == "binary":
        out = torch.cat([1 - out, out], dim=1)  # (N, 2): [negative, positive]
    values = out.cpu().numpy()
    if not classes or len(classes) != values.shape[1]:
        classes = [str(i) for i in range(values.shape[1])]
    output = Path(args.output) if args.output else None
    if output is not None and output.suffix == ".npy":
        output.parent.mkdir(parents=True, exist_ok=True)
        np.save(output, values)
    else:
        if output is not None and output.suffix != ".csv":
            raise ConfigError(f"-o {output}: use a .csv or .npy file name")
        text = _predictions_csv(values, task, classes)
        if output is None:
            sys.stdout.write(text)
            return 0
        from graftnet.io.checkpoint import atomic_write_text

        atomic_write_text(output, text)
    print(f"wrote {len(values):,} predictions to {output}", file=sys.stderr)
    return 0


def _predictions_csv(values: np.ndarray, task: str, classes: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if task not in ("multiclass", "binary"):  # regression values, or raw outputs nothing describes
        stem = "prediction" if task == "regression" else "output"
        names = [stem] if values.shape[1] == 1 else [f"{stem}_{i}" for i in range(values.shape[1])]
        writer.writerow(names)
        writer.writerows([[f"{v:.6g}" for v in row] for row in values])
    else:
        writer.writerow(["predicted", *classes])
        best = values.argmax(1)
        writer.writerows([[classes[b], *(f"{p:.6f}" for p in row)] for b, row in zip(best, values)])
    return buffer.getvalue()


# ---------------------------------------------------------------- inspect
def _register_inspect(subparsers: Any) -> None:
    parser = subparsers.add_parser("inspect", help="layers, shapes, parameters and metadata of a saved model",
                                   description="The layer table of a saved model (name, type, output shape, "
                                               "parameters, trainable, origin) and its metadata.",
                                   epilog=INSPECT_EPILOG)
    parser.add_argument("model", help="a model folder, a run folder, or a TensorFlow .meta graph / checkpoint prefix")
    parser.add_argument("--operations", action="store_true",
                        help="list the operations, as TensorFlow's graph.get_operations() does: a graftnet model's "
                             "layers with their inputs and shapes; a TF graph's ops with the layer each became "
                             "(the default for a TF graph)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(func=run_inspect)


def _metadata_lines(model: Any) -> list[str]:
    info = model.info
    data = info.get("data")
    lines = []
    if data:
        name = info.get("data_name") or (data.get("spec") or data.get("loader") if isinstance(data, dict) else data)
        transforms = data.get("transforms", []) if isinstance(data, dict) else []
        steps = ", ".join(" ".join(f"{k}={v}" for k, v in op.items()) for op in transforms)
        lines.append(f"data:      {name}" + (f" ({steps})" if steps else ""))
    classes = info.get("classes")
    if classes:
        lines.append(f"classes:   {', '.join(map(str, classes))} ({len(classes)})")
    for split, scores in (info.get("metrics") or {}).items():
        if isinstance(scores, dict):
            lines.append(f"metrics:   {split} " + "  ".join(f"{k} {v:.4f}" for k, v in scores.items()
                                                            if isinstance(v, (int, float))))
    if info.get("created"):
        lines.append(f"created:   {info['created']} with graftnet {info.get('graftnet_version', '?')}, "
                     f"torch {info.get('torch_version', '?')}")
    if model.lineage:
        lines.append(f"lineage:   {_lineage_text(model.lineage)}")
    return lines


def _lineage_text(lineage: dict[str, Any]) -> str:
    """The lineage in one line: 'base fashion-a (models/fashion-a, fingerprint 43d485511a59), 5 reused and 1 new
    layer(s)'. The per-layer map and the base's own lineage are left to ``inspect --json``."""
    base = lineage.get("base") or lineage.get("source") or "?"
    details = [str(lineage["base_path"])] if lineage.get("base_path") else []
    if lineage.get("base_fingerprint"):
        details.append(f"fingerprint {str(lineage['base_fingerprint'])[:12]}")
    origins = list((lineage.get("layers") or {}).values())
    reused = len(lineage["reused"]) if "reused" in lineage else sum(o != "new" for o in origins)
    new = len(lineage["new"]) if "new" in lineage else sum(o == "new" for o in origins)
    return (f"base {base}" + (f" ({', '.join(details)})" if details else "") +
            f", {reused} reused and {new} new layer(s)")


def _tf_graph_arg(path: str) -> Path | None:
    """The .meta graph ``path`` names (the file, or the one beside a checkpoint prefix), if it is one."""
    from graftnet.cli.convert import _meta_file

    candidate = Path(path)
    if (candidate / "spec.json").exists() or (candidate / "model" / "spec.json").exists():
        return None
    return _meta_file(candidate)


def _inspect_tf(meta: Path, args: argparse.Namespace) -> int:
    from graftnet.io.tf_graph import import_meta_graph

    beside = Path(str(meta)[: -len(".meta")])
    has_values = Path(f"{beside}.index").is_file()
    imported = import_meta_graph(meta, load_values=has_values)
    rows = imported.operation_rows()
    training = imported.training
    if args.json:
        print_json({"meta_graph": str(meta), "checkpoint": str(imported.checkpoint) if imported.checkpoint else None,
                    "operations": rows, "layers": [{**r, "output_shape": list(r["output_shape"])}
                                                   for r in imported.network.summary_rows()],
                    "tensors": imported.mapping.tensors, "training": training})
        return 0
    mapped = sum(1 for r in rows if r["layer"])
    print(f"{meta}: {len(rows)} operations, {mapped} mapped to {len(imported.network.layer_names)} graftnet layers, "
          f"{len(rows) - mapped} ignored" + ("" if has_values else " (no checkpoint beside it: shapes only)"))
    for line in imported.operations():
        print(line)
    print()
    print_summary(imported.network)
    if training:
        print(f"training:  {training.get('training_op')}: {training.get('optimizer')}"
              + (f", clip_value {training['clip_value']}" if training.get("clip_value") is not None else "")
              + (f", clip_norm {training['clip_norm']}" if training.get("clip_norm") is not None else "")
              + "".join(f", max-norm {r['threshold']:g} on {layer} (TF axes {r['tf_axes']})"
                        for layer, r in (training.get("max_norm") or {}).items())
              + (f", global step {training['global_step']['variable']} = {training['global_step']['value']}"
                 if training.get("global_step") else "")
              + (f", {len(training['update_ops'])} UPDATE_OPS" if training.get("update_ops") else ""))
        if training.get("loss"):
            loss = training["loss"]
            print(f"loss:      {loss['type']} of {loss['logits']} ({loss['tensor']})")
    return 0


def run_inspect(args: argparse.Namespace) -> int:
    meta = _tf_graph_arg(args.model)
    if meta is not None:
        return _inspect_tf(meta, args)
    model = load_model_arg(args.model)
    if args.operations:
        if args.json:
            print_json({"name": model.name, "operations": [{**r, "output_shape": list(r["output_shape"])}
                                                           for r in model.summary_rows()]})
        else:
            print("\n".join(model.operations()))
        return 0
    if args.json:
        print_json({"name": model.name, "input_shape": list(model.input_shape),
                    "layers": [{**r, "output_shape": list(r["output_shape"])} for r in model.summary_rows()],
                    "params": model.count_params(), "trainable_params": model.count_params(trainable_only=True),
                    "metadata": model.info, "lineage": model.lineage})
        return 0
    print_summary(model)
    for line in _metadata_lines(model):
        print(line)
    return 0


# ---------------------------------------------------------------- demo (interim)
def _register_demo(subparsers: Any) -> None:
    parser = subparsers.add_parser("demo", help="train, save, reload and test the chapter-10 Fashion-MNIST MLP",
                                   description="Train the 784-300-100-10 ReLU network (SGD, lr 0.01, batch 50) "
                                               "on Fashion-MNIST, save it, reload it and print the reloaded "
                                               "model's test accuracy.", epilog=DEMO_EPILOG)
    parser.add_argument("--epochs", type=int, default=5, help="training epochs (default: 5)")
    parser.add_argument("--output-dir", default="runs", metavar="DIR", help="where the run folder goes")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--device", help="cpu or cuda (default: cuda if available)")
    parser.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    from graftnet.io.checkpoint import load_model
    from graftnet.recipe import build_data, build_model, resolve
    from graftnet.runs import RunDir, train_run
    from graftnet.train import evaluate

    recipe = resolve({
        "model": {"name": "fashion_mlp", "hidden": [300, 100], "activation": "relu", "normalize": True},
        "data": {"source": "fashion"},
        "train": {"epochs": args.epochs, "batch_size": 50, "optimizer": {"type": "sgd", "lr": 0.01},
                  "seed": args.seed, "device": args.device or "auto"},
        "output": {"dir": args.output_dir, "name": "demo"},
    }, source="demo")
    data = build_data(recipe)
    model = build_model(recipe, data)
    run = RunDir.create(args.output_dir, "demo")
    print(f"training the chapter-10 network 784-300-100-10 (ReLU, SGD lr 0.01, batch 50) on Fashion-MNIST "
          f"for {args.epochs} epoch(s); run folder {run.path}", file=sys.stderr)
    result = train_run(recipe, run, data=data, model=model)
    reloaded = load_model(run.model_dir)
    after = evaluate(reloaded, result.data)
    before = result.metrics["test"]["accuracy"]
    print(f"saved to {run.model_dir}, reloaded from disk")
    print(f"test accuracy of the reloaded model: {after['accuracy']:.4f} "
          f"({len(result.data.test):,} test images; before saving: {before:.4f})")
    if abs(after["accuracy"] - before) > 1e-6:
        raise ConfigError(f"the reloaded model scores {after['accuracy']:.6f}, not {before:.6f} as before saving")
    return 0
