"""TOML recipes: a whole training run (model, data, training, outputs) in one file.

    # fashion_mlp.toml -- the chapter-10 network of Hands-On Machine Learning
    [model]
    hidden = [300, 100]
    activation = "relu"

    [data]
    source = "fashion"

    [train]
    epochs = 30
    batch_size = 50
    optimizer = { type = "sgd", lr = 0.01 }

    [output]
    dir = "runs"

``load_recipe`` reads and checks a file (an unknown section or key is an error that
names the file and the key and lists the valid ones; every value's type is checked),
``resolve`` fills in every default so the run directory records exactly what ran, and
``build_data`` / ``build_model`` / ``fit_kwargs`` turn a resolved recipe into the
arguments of ``train.fit``::

    >>> recipe = resolve({"data": {"source": "digits"}, "model": {"hidden": [32]}})
    >>> recipe["train"]["optimizer"]
    {'type': 'sgd', 'lr': 0.01, 'momentum': 0.0, 'nesterov': False, 'weight_decay': 0.0}

TOML has no null, so a setting that can be switched off uses ``false``
(``clip_norm = false``, ``early_stopping = false``, ``max_norm = false``), sizes use
``"all"``, and ``schedule = "none"`` keeps the learning rate constant.

[model] takes either the MLP shorthand (``hidden``, ``activation``, ``init``,
``batch_norm``, ``dropout``, ``l2``, ``max_norm``, ``output_activation``) or a full
``layers = [{type = "dense", units = 300, activation = "relu"}, ...]`` list of layer
specs (as in ``spec.json``), not both. ``normalize = true`` puts a ``normalize`` layer
(``Rescaling``) first that standardizes inputs with the mean and standard deviation of
the training split, so the saved model takes the same inputs as the data and carries
its own preprocessing.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from graftnet.errors import ConfigError, did_you_mean

__all__ = ["SCHEMA", "load_recipe", "validate", "resolve", "merge", "build_data", "build_model", "fit_kwargs"]

_MLP_KEYS = ("hidden", "activation", "init", "batch_norm", "dropout", "l2", "max_norm", "output_activation")

# section -> key -> (type name, default). Type names are checked by _CHECKS below.
SCHEMA: dict[str, dict[str, tuple[str, Any]]] = {
    "model": {
        "name": ("str", "mlp"),
        "hidden": ("list[int]", [300, 100]),
        "activation": ("str", "relu"),
        "init": ("str", "auto"),  # resolved to what suits the activation (he_normal for relu)
        "batch_norm": ("bool", False),
        "dropout": ("float", 0.0),
        "l2": ("float", 0.0),
        "max_norm": ("float|false", False),
        "output_activation": ("str", "linear"),
        "normalize": ("bool", False),  # first layer: standardize inputs with the training mean/std
        "layers": ("list[table]", None),
    },
    "data": {
        "source": ("str", None),  # required: fashion, fashion:A, mnist, digits, PATH.npz, DIR
        "root": ("str", ""),  # folder holding fashion-mnist/ and mnist/ (like $GRAFTNET_DATA)
        "classes": ("list[str]", []),  # keep only these classes (relabelled in this order)
        "exclude": ("list[str]", []),  # drop these classes
        "positive": ("str", ""),  # make a 2-class task binary with this positive class
        "train_size": ("int|all", "all"),  # the first N examples of each split
        "valid_size": ("int|all", "all"),
        "test_size": ("int|all", "all"),
    },
    "train": {
        "epochs": ("int", 10),
        "batch_size": ("int", 32),
        "optimizer": ("str|table", "sgd"),
        "schedule": ("str|table", "none"),
        "metrics": ("list[str]", ["accuracy"]),
        "clip_norm": ("float|false", False),
        "clip_value": ("float|false", False),
        "early_stopping": ("int|table|false", False),
        "augment": ("table", {}),
        "seed": ("int", 42),
        "device": ("str", "auto"),
        "cache": ("bool", True),
        "precision": ("str", "fp32"),
    },
    "output": {
        "dir": ("str", "runs"),
        "name": ("str", None),  # default: the recipe file's name without .toml
        "tensorboard": ("bool", False),
        "checkpoint": ("bool", True),
        "mlflow": ("bool|str", False),  # true: sqlite:///<dir>/mlflow.db; or any MLflow tracking URI
    },
}


# ---------------------------------------------------------------- type checks
def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_float(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "str": (lambda v: isinstance(v, str), "a string"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "int": (_is_int, "an integer"),
    "float": (_is_float, "a number"),
    "table": (lambda v: isinstance(v, dict), "a table"),
    "list[int]": (lambda v: isinstance(v, list) and all(_is_int(x) for x in v), "a list of integers"),
    "list[str]": (lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v), "a list of strings"),
    "list[table]": (lambda v: isinstance(v, list) and all(isinstance(x, dict) for x in v), "a list of tables"),
    "float|false": (lambda v: v is False or _is_float(v), "a number, or false for none"),
    "int|all": (lambda v: v == "all" or (_is_int(v) and v >= 0), 'a count >= 0, or "all"'),
    "bool|str": (lambda v: isinstance(v, (bool, str)), "true, false or a URI string"),
    "str|table": (lambda v: isinstance(v, (str, dict)), "a name or a table with 'type'"),
    "int|table|false": (lambda v: v is False or _is_int(v) or isinstance(v, dict),
                        "a patience (integer), a table, or false"),
}


def _describe(value: Any) -> str:
    kind = {bool: "boolean", int: "integer", float: "float", str: "string", list: "list", dict: "table"}
    return f"{value!r} ({kind.get(type(value), type(value).__name__)})"


def validate(recipe: Any, source: str = "recipe") -> dict[str, Any]:
    """Check sections, keys and value types of a recipe (a dict as read from TOML).

    Returns the recipe; raises ConfigError naming ``source`` and the offending key.

        >>> validate({"train": {"epoch": 3}})
        Traceback (most recent call last):
        ...
        graftnet.errors.ConfigError: recipe: unknown key 'epoch' in [train]; valid keys are ... Did you mean 'epochs'?
    """
    if not isinstance(recipe, dict):
        raise ConfigError(f"{source}: a recipe is a table of sections, got {type(recipe).__name__}")
    for section, body in recipe.items():
        if section not in SCHEMA:
            raise ConfigError(f"{source}: unknown section [{section}]; valid sections are "
                              f"{', '.join(f'[{s}]' for s in SCHEMA)}.{did_you_mean(section, SCHEMA)}")
        if not isinstance(body, dict):
            raise ConfigError(f"{source}: [{section}] must be a table of settings, got {_describe(body)}")
        for key, value in body.items():
            if key not in SCHEMA[section]:
                raise ConfigError(f"{source}: unknown key {key!r} in [{section}]; valid keys are "
                                  f"{', '.join(SCHEMA[section])}.{did_you_mean(key, SCHEMA[section])}")
            kind = SCHEMA[section][key][0]
            check, expected = _CHECKS[kind]
            if not check(value):
                raise ConfigError(f"{source}: [{section}] {key} must be {expected}, got {_describe(value)}")
    model = recipe.get("model", {})
    if "layers" in model:
        both = [k for k in _MLP_KEYS if k in model]
        if both:
            raise ConfigError(f"{source}: [model] has both 'layers' and MLP settings ({', '.join(both)}); "
                              f"give a full layers list or the MLP shorthand, not both")
    return recipe


def load_recipe(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate a TOML recipe (defaults are not filled in: see ``resolve``).

        >>> recipe = load_recipe("examples/recipes/fashion_mlp.toml")   # doctest: +SKIP
        >>> recipe["train"]["epochs"]                                   # doctest: +SKIP
        30
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"no recipe at {path}: the file does not exist") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read the recipe {path}: {err}") from None
    try:
        recipe = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path} is not valid TOML: {err}") from None
    return validate(recipe, str(path))


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``base`` with the keys of ``overrides`` set, section by section (a new dict).

        >>> merge({"train": {"epochs": 30, "seed": 1}}, {"train": {"epochs": 2}})
        {'train': {'epochs': 2, 'seed': 1}}
    """
    out = copy.deepcopy(base)
    for section, body in overrides.items():
        out.setdefault(section, {}).update(copy.deepcopy(body))
    return out


# ---------------------------------------------------------------- resolving
def resolve(recipe: dict[str, Any], *, name: str = "run", source: str = "recipe") -> dict[str, Any]:
    """A copy of ``recipe`` with every default filled in and every table normalised.

    ``name`` is the default run name (``[output] name``). Optimizer, schedule, early
    stopping and augmentation tables are checked and written out in full, so the
    resolved recipe says exactly what ran and reads back to the same run.
    """
    recipe = copy.deepcopy(validate(recipe, source))
    out: dict[str, dict[str, Any]] = {}
    for section, keys in SCHEMA.items():
        given = recipe.get(section, {})
        out[section] = {key: copy.deepcopy(given.get(key, default)) for key, (_, default) in keys.items()}
    if not out["data"]["source"]:
        raise ConfigError(f"{source}: [data] source is required: a dataset name (fashion, fashion:A, "
                          f"fashion:B, mnist, mnist:0-4, digits), an .npz file or an image folder")
    out["output"]["name"] = out["output"]["name"] or name
    _resolve_model(out["model"], given_layers="layers" in recipe.get("model", {}), source=source)
    _resolve_train(out["train"], source)
    _check_numbers(out, source)
    return out


def _resolve_model(model: dict[str, Any], given_layers: bool, source: str) -> None:
    from graftnet.layers import layer_from_dict, parse_activation
    from graftnet.network import default_init

    if given_layers:
        for key in _MLP_KEYS:
            model.pop(key)
        if not model["layers"]:
            raise ConfigError(f"{source}: [model] layers is empty; list at least the output layer")
        model["layers"] = [layer_from_dict(d, where=f"{source}: [model] layers[{i}]").to_dict()
                           for i, d in enumerate(model["layers"])]
        return
    model.pop("layers")
    for key in ("activation", "output_activation"):
        try:
            parse_activation(model[key])
        except ConfigError as err:
            raise ConfigError(f"{source}: [model] {key}: {err}") from None
    if model["init"] == "auto":
        model["init"] = default_init(model["activation"])


def _wrap(source: str, where: str, build: Callable[[], Any]) -> Any:
    try:
        return build()
    except ConfigError as err:
        raise ConfigError(f"{source}: [train] {where}: {err}") from None


def _resolve_train(train: dict[str, Any], source: str) -> None:
    from graftnet.augment import Augment
    from graftnet.optim import optimizer_from, schedule_from
    from graftnet.train import EarlyStopping

    train["optimizer"] = _wrap(source, "optimizer", lambda: optimizer_from(train["optimizer"]).to_dict())
    schedule = _wrap(source, "schedule", lambda: schedule_from(train["schedule"]))
    train["schedule"] = schedule.to_dict() if schedule is not None else "none"
    if isinstance(train["schedule"], dict):  # TOML cannot hold None: drop unset optional fields
        train["schedule"] = {k: v for k, v in train["schedule"].items() if v is not None}
    stopping = train["early_stopping"]
    if stopping is not False:
        fields = [f.name for f in dataclasses.fields(EarlyStopping)]
        table = {"patience": stopping} if _is_int(stopping) else dict(stopping)
        unknown = [k for k in table if k not in fields]
        if unknown:
            raise ConfigError(f"{source}: [train] early_stopping: unknown key {unknown[0]!r}; valid keys are "
                              f"{', '.join(fields)}.{did_you_mean(unknown[0], fields)}")
        train["early_stopping"] = dataclasses.asdict(EarlyStopping(**table))
    train["augment"] = _wrap(source, "augment", lambda: Augment.from_dict(train["augment"]).to_dict())
    if train["precision"] not in ("fp32", "bf16", "fp16"):
        raise ConfigError(f"{source}: [train] precision must be fp32, bf16 or fp16, got {train['precision']!r}")


def _check_numbers(recipe: dict[str, Any], source: str) -> None:
    train, model = recipe["train"], recipe["model"]
    problems = []
    if train["epochs"] < 0:
        problems.append(f"[train] epochs must be >= 0, got {train['epochs']}")
    if train["batch_size"] < 1:
        problems.append(f"[train] batch_size must be >= 1, got {train['batch_size']}")
    for key in ("clip_norm", "clip_value"):
        if train[key] is not False and train[key] <= 0:
            problems.append(f"[train] {key} must be > 0 (or false for none), got {train[key]}")
    if "dropout" in model and not 0 <= model["dropout"] < 1:
        problems.append(f"[model] dropout must be in [0, 1), got {model['dropout']}")
    if "hidden" in model and any(units < 1 for units in model["hidden"]):
        problems.append(f"[model] hidden sizes must be >= 1, got {model['hidden']}")
    if problems:
        raise ConfigError(f"{source}: " + "; ".join(problems))


# ---------------------------------------------------------------- building
def build_data(recipe: dict[str, Any], images: dict[str, Any] | None = None):  # -> graftnet.data.Dataset
    """The dataset a resolved recipe's [data] section describes.

    Class selection runs first (``classes``, then ``exclude``, then ``positive``), then
    the first-n limits (``train_size``, ``valid_size``, ``test_size``). ``images`` holds
    ``image_folder`` settings (``size``, ``preprocess``, ...) used when the source is a folder.
    """
    from graftnet import data as gd

    section = recipe["data"]
    if images and Path(section["source"]).expanduser().is_dir():
        data = gd.image_folder(Path(section["source"]).expanduser(), **images)
    else:
        data = gd.load(section["source"], root=section["root"] or None)  # root: as Python's root= (gd.dataset_dir)
    if section["classes"]:
        data = data.only_classes(section["classes"])
    if section["exclude"]:
        data = data.without_classes(section["exclude"])
    if section["positive"]:
        data = data.as_binary(section["positive"])
    sizes = {split: section[f"{split}_size"] for split in ("train", "valid", "test")}
    limits = {split: n for split, n in sizes.items() if n != "all" and getattr(data, split) is not None
              and n < len(getattr(data, split))}
    return data.head(**limits) if limits else data


def build_model(recipe: dict[str, Any], data: Any):  # -> graftnet.network.Network
    """The network a resolved recipe's [model] section describes, sized for ``data``.

    Seeds torch with ``[train] seed`` first, so the initial weights are reproducible.
    """
    from graftnet.layers import layer_from_dict
    from graftnet.network import Network
    from graftnet.train import seed_everything

    seed_everything(recipe["train"]["seed"])
    model = recipe["model"]
    if "layers" in model:
        layers = [layer_from_dict(d, where=f"[model] layers[{i}]") for i, d in enumerate(model["layers"])]
    else:
        output = None if model["output_activation"] == "linear" else model["output_activation"]
        layers = Network.mlp(data.input_shape, model["hidden"], data.n_outputs, activation=model["activation"],
                             init=model["init"], output_activation=output, batch_norm=model["batch_norm"],
                             dropout=model["dropout"], l2=model["l2"], max_norm=model["max_norm"] or None).specs
    if model["normalize"]:
        layers = [_normalize_layer(data), *layers]
    seed_everything(recipe["train"]["seed"])  # the initial weights depend on the seed alone
    return Network(layers, data.input_shape, name=model["name"])


def _normalize_layer(data: Any):  # -> graftnet.layers.Rescaling
    """``(x - mean) / std`` of the training inputs, as a Rescaling layer named ``normalize``."""
    from graftnet.layers import Rescaling

    x = data.train.x.double()
    mean, std = float(x.mean()), float(x.std())
    if not std > 0:
        raise ConfigError(f"[model] normalize: the training inputs of {data.name!r} are constant "
                          f"(std {std}); nothing to standardize")
    return Rescaling(scale=1.0 / std, offset=-mean / std, name="normalize")


def fit_kwargs(recipe: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of ``train.fit`` a resolved recipe's [train] section gives."""
    from graftnet.augment import Augment
    from graftnet.train import EarlyStopping

    train = recipe["train"]
    augment = Augment.from_dict(train["augment"])
    stopping = train["early_stopping"]
    return {
        "epochs": train["epochs"],
        "batch_size": train["batch_size"],
        "optimizer": dict(train["optimizer"]),
        "schedule": None if train["schedule"] == "none" else dict(train["schedule"]),
        "metrics": list(train["metrics"]),
        "clip_norm": train["clip_norm"] if train["clip_norm"] is not False else None,
        "clip_value": train["clip_value"] if train["clip_value"] is not False else None,
        "early_stopping": EarlyStopping(**stopping) if stopping is not False else None,
        "augment": None if augment.is_identity else augment,
        "seed": train["seed"],
        "device": None if train["device"] == "auto" else train["device"],
        "cache": train["cache"],
        "precision": train["precision"],
    }
