"""Hyperparameter search with Optuna: the search space is written in the recipe.

A tune recipe is a training recipe (see :mod:`graftnet.recipe`) in which any setting may be
a distribution instead of a value, plus a ``[tune]`` section::

    [model]
    hidden = { choice = [[300, 100], [100, 100, 100]] }
    activation = { choice = ["relu", "elu", "selu"] }
    dropout = { uniform = [0.0, 0.5] }

    [train]
    epochs = 20
    batch_size = { choice = [32, 64, 128] }
    optimizer = { type = { choice = ["sgd", "adam"] }, lr = { log_uniform = [1e-4, 1e-1] } }
    early_stopping = { patience = 3 }

    [tune]
    trials = 30
    metric = "val_accuracy"       # any per-epoch History field; its best epoch is the trial's value

Distributions: ``uniform = [lo, hi]``, ``log_uniform = [lo, hi]``, ``int = [lo, hi]``
(``step`` optional), ``log_int = [lo, hi]`` and ``choice = [...]`` (any TOML values,
lists included). ``[tune] enqueue = [{ "model.hidden" = [300, 100] }]`` runs those points first
(the book's network as a baseline trial), sampling the parameters they leave out. Each trial fills them in, checks the result as a training recipe would be
checked, trains, reports the metric after every epoch (so the pruner can stop bad trials
early) and records the test metrics beside it (never used to choose).

Transfer questions are tunable too, in a ``[transfer]`` section: ``base`` (a saved model),
``reuse`` (how many of its layers with weights to keep, from the bottom), ``unfreeze`` (how
many of the reused ones train in the second stage), ``head_epochs`` and ``finetune_lr``; each
trial grafts a new head onto the base, trains it with the reused layers frozen (on cached
features), then fine-tunes.

Storage is a SQLite file in the output folder by default, so a killed tune resumes where it
stopped; any Optuna storage URL (``postgresql://...``) shares one search across machines.
``jobs`` worker processes (or a Ray cluster) run trials at once, each with its share of the
cores. The output folder gets ``best_recipe.toml`` (ready for ``graftnet train``),
``trials.csv``, ``report.md`` and pictures of the optimisation history and of the parameters'
importances.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import math
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from graftnet.errors import ConfigError, did_you_mean

__all__ = ["DISTRIBUTIONS", "SearchSpace", "TuneResult", "tune", "load_tune_recipe"]

DISTRIBUTIONS = ("uniform", "log_uniform", "int", "log_int", "choice")
_DIST_OPTIONS = {"uniform": ("step",), "log_uniform": (), "int": ("step",), "log_int": (), "choice": ()}
TUNE_KEYS: dict[str, Any] = {
    "trials": 20, "metric": "val_accuracy", "direction": "auto", "sampler": "tpe", "pruner": "median",
    "seed": 0, "storage": "", "study": "", "jobs": 1, "backend": "local", "address": "", "dir": "tunes",
    "timeout": 0, "startup_trials": 5, "enqueue": [],
}
TRANSFER_KEYS: dict[str, Any] = {"base": "", "reuse": 0, "unfreeze": 0, "head_epochs": 4, "finetune_lr": 0.0,
                                 "head": [], "bn_affine": False}
BACKENDS = ("local", "ray")


# ===================================================================== the search space
@dataclass
class SearchSpace:
    """Where the distributions sit in a recipe (``"train.optimizer.lr"``) and what they are."""

    params: dict[str, tuple[str, Any, dict[str, Any]]] = field(default_factory=dict)  # path -> (kind, args, opts)

    @classmethod
    def find(cls, recipe: dict[str, Any], source: str = "recipe") -> SearchSpace:
        space = cls()
        _walk(recipe, (), space, source)
        return space

    def suggest(self, trial: Any) -> dict[str, Any]:
        """One value per parameter, asked of an Optuna trial."""
        values = {}
        for path, (kind, args, opts) in self.params.items():
            if kind == "uniform":
                values[path] = trial.suggest_float(path, args[0], args[1], step=opts.get("step"))
            elif kind == "log_uniform":
                values[path] = trial.suggest_float(path, args[0], args[1], log=True)
            elif kind == "int":
                values[path] = trial.suggest_int(path, args[0], args[1], step=opts.get("step", 1))
            elif kind == "log_int":
                values[path] = trial.suggest_int(path, args[0], args[1], log=True)
            else:  # choice: Optuna stores str/int/float/bool/None; lists go in as their JSON text
                labels = [_label(v) for v in args]
                values[path] = args[labels.index(trial.suggest_categorical(path, labels))]
        return values

    def fill(self, recipe: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
        """``recipe`` with each distribution replaced by its value (a new dict)."""
        out = copy.deepcopy(recipe)
        for path, value in values.items():
            node = out
            *parents, last = path.split(".")
            for key in parents:
                node = node[key]
            node[last] = copy.deepcopy(value)
        return out


def _label(value: Any) -> Any:
    return value if isinstance(value, (str, int, float, bool)) or value is None else json.dumps(value)


def _walk(node: Any, path: tuple[str, ...], space: SearchSpace, source: str) -> None:
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        here = (*path, str(key))
        if isinstance(value, dict) and any(k in DISTRIBUTIONS for k in value):
            space.params[".".join(here)] = _distribution(value, ".".join(here), source)
        else:
            _walk(value, here, space, source)


def _distribution(table: dict[str, Any], where: str, source: str) -> tuple[str, Any, dict[str, Any]]:
    kinds = [k for k in table if k in DISTRIBUTIONS]
    if len(kinds) != 1:
        raise ConfigError(f"{source}: {where} names {len(kinds)} distributions ({', '.join(kinds)}); give one of "
                          f"{', '.join(DISTRIBUTIONS)}")
    kind = kinds[0]
    extra = [k for k in table if k != kind and k not in _DIST_OPTIONS[kind]]
    if extra:
        raise ConfigError(f"{source}: {where} = {{ {kind} = ... }} does not take {', '.join(map(repr, extra))}; "
                          f"it takes {', '.join((kind, *_DIST_OPTIONS[kind]))}.{did_you_mean(extra[0], DISTRIBUTIONS)}")
    args = table[kind]
    if kind == "choice":
        if not isinstance(args, list) or not args:
            raise ConfigError(f"{source}: {where} = {{ choice = ... }} needs a non-empty list of values, got {args!r}")
        return kind, args, {}
    if (not isinstance(args, list) or len(args) != 2
            or not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args)):
        raise ConfigError(f"{source}: {where} = {{ {kind} = ... }} needs [low, high], two numbers, got {args!r}")
    low, high = args
    if not low < high:
        raise ConfigError(f"{source}: {where} = {{ {kind} = [{low}, {high}] }}: low must be below high")
    if kind.startswith("log") and low <= 0:
        raise ConfigError(f"{source}: {where} = {{ {kind} = [{low}, {high}] }}: a log scale needs low > 0")
    if kind in ("int", "log_int") and not all(isinstance(a, int) for a in args):
        raise ConfigError(f"{source}: {where} = {{ {kind} = {args} }}: bounds must be whole numbers")
    return kind, [low, high], {k: table[k] for k in _DIST_OPTIONS[kind] if k in table}


# ===================================================================== recipes
def load_tune_recipe(path: str | os.PathLike) -> dict[str, Any]:
    """Read a tune recipe: ``[tune]`` and ``[transfer]`` checked here, the rest is a training
    recipe whose distributions are checked now and whose values are checked per trial."""
    import tomllib

    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"no tune recipe at {path}: the file does not exist") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"cannot read the tune recipe {path}: {err}") from None
    return check_tune_recipe(raw, str(path))


def check_tune_recipe(raw: dict[str, Any], source: str = "recipe") -> dict[str, Any]:
    from graftnet import recipe as recipes

    raw = copy.deepcopy(raw)
    for section, keys in (("tune", TUNE_KEYS), ("transfer", TRANSFER_KEYS)):
        body = raw.get(section, {})
        if not isinstance(body, dict):
            raise ConfigError(f"{source}: [{section}] must be a table")
        unknown = [k for k in body if k not in keys]
        if unknown:
            raise ConfigError(f"{source}: unknown key {unknown[0]!r} in [{section}]; valid keys are "
                              f"{', '.join(keys)}.{did_you_mean(unknown[0], keys)}")
    settings = {**TUNE_KEYS, **raw.get("tune", {})}
    if not isinstance(settings["trials"], int) or settings["trials"] < 1:
        raise ConfigError(f"{source}: [tune] trials must be a whole number >= 1, got {settings['trials']!r}")
    if not isinstance(settings["jobs"], int) or settings["jobs"] < 1:
        raise ConfigError(f"{source}: [tune] jobs must be a whole number >= 1, got {settings['jobs']!r}")
    if settings["backend"] not in BACKENDS:
        raise ConfigError(f"{source}: [tune] backend must be one of {', '.join(BACKENDS)}, got {settings['backend']!r}")
    if settings["sampler"] not in ("tpe", "random"):
        raise ConfigError(f"{source}: [tune] sampler must be 'tpe' or 'random', got {settings['sampler']!r}")
    if settings["pruner"] not in ("median", "none"):
        raise ConfigError(f"{source}: [tune] pruner must be 'median' or 'none', got {settings['pruner']!r}")
    space = SearchSpace.find({k: v for k, v in raw.items() if k != "tune"}, source)
    for i, point in enumerate(settings["enqueue"]):
        unknown = [k for k in point] if not isinstance(point, dict) else [k for k in point if k not in space.params]
        if not isinstance(point, dict) or unknown:
            raise ConfigError(f"{source}: [tune] enqueue[{i}] must map search-space parameters to values; "
                              f"{', '.join(map(repr, unknown))} is not one; the parameters are "
                              f"{', '.join(space.params)}")
    # the training part must be a valid recipe once its distributions hold values
    example = space.fill(raw, {p: _first(spec) for p, spec in space.params.items()})
    training = {k: v for k, v in example.items() if k not in ("tune", "transfer")}
    recipes.validate(training, source)
    if "transfer" in raw and not raw["transfer"].get("base"):
        raise ConfigError(f"{source}: [transfer] needs base = the folder of a saved model to graft onto")
    return raw


def _first(spec: tuple[str, Any, dict[str, Any]]) -> Any:
    kind, args, _ = spec
    return args[0]


# ===================================================================== one trial
def _direction(metric: str, given: str) -> str:
    if given != "auto":
        if given not in ("maximize", "minimize"):
            raise ConfigError(f"[tune] direction must be 'maximize', 'minimize' or 'auto', got {given!r}")
        return given
    return "minimize" if metric.endswith("loss") or metric.endswith("mae") else "maximize"


def _run_trial(raw: dict[str, Any], space: SearchSpace, trial: Any, data_cache: dict[str, Any],
               metric: str, direction: str) -> float:
    import optuna

    from graftnet import recipe as recipes
    from graftnet.train import evaluate, fit

    values = space.suggest(trial)
    filled = space.fill(raw, values)
    training = {k: v for k, v in filled.items() if k not in ("tune", "transfer")}
    recipe = recipes.resolve(training, name="trial")
    key = json.dumps(recipe["data"], sort_keys=True)
    if key not in data_cache:
        data_cache[key] = recipes.build_data(recipe)
    data = data_cache[key]
    sign = 1.0 if direction == "maximize" else -1.0
    best = {"value": None}

    def report(row: dict[str, Any], _model: Any) -> None:
        if metric not in row:
            raise ConfigError(f"[tune] metric {metric!r} is not recorded per epoch; recorded: {', '.join(row)}")
        value = float(row[metric])
        if math.isfinite(value) and (best["value"] is None or sign * value > sign * best["value"]):
            best["value"] = value
        step = int(row.get("epoch", 0))
        trial.report(value, step)
        if trial.should_prune():
            raise optuna.TrialPruned(f"{metric} = {value:.4g} at epoch {step}")

    kwargs = recipes.fit_kwargs(recipe)
    if "transfer" in filled:
        model, history = _transfer_trial(filled["transfer"], recipe, data, kwargs, report)
    else:
        model = recipes.build_model(recipe, data)
        history = fit(model, data, **kwargs, callbacks=[report], verbose=False)
    if best["value"] is None:
        raise optuna.TrialPruned(f"{metric} was never finite")
    trial.set_user_attr("epochs", len(history))
    trial.set_user_attr("recipe", recipe)
    if data.test is not None and len(data.test):
        scores = evaluate(model, data.test, task=data.task, metrics=tuple(recipe["train"]["metrics"]))
        trial.set_user_attr("test", {k: round(v, 6) for k, v in scores.items()})
    return best["value"]


def _transfer_trial(transfer: dict[str, Any], recipe: dict[str, Any], data: Any, kwargs: dict[str, Any],
                    report: Callable[[dict[str, Any], Any], None]) -> tuple[Any, Any]:
    from graftnet.io.checkpoint import load_model
    from graftnet.layers import Dense, layer_from_dict
    from graftnet.train import seed_everything
    from graftnet.transfer import FineTune, Stage, graft

    settings = {**TRANSFER_KEYS, **transfer}
    base = load_model(settings["base"])
    weighted = [n for n in base.layer_names if base.count_params(n)]
    reuse = int(settings["reuse"]) or len(weighted) - 1
    if not 1 <= reuse <= len(weighted):
        raise ConfigError(f"[transfer] reuse must be 1..{len(weighted)} (the base's layers with weights: "
                          f"{', '.join(weighted)}), got {reuse}")
    head = [layer_from_dict(d) for d in settings["head"]] or [Dense(data.n_outputs)]
    seed_everything(kwargs["seed"])
    model = graft(base, reuse=weighted[:reuse], head=head, freeze=True, bn_affine=settings["bn_affine"])
    new = list(model.lineage["new"])
    unfreeze = int(settings["unfreeze"])
    stages = [Stage(int(settings["head_epochs"]), train=new, name="head")]
    if unfreeze:
        top = weighted[:reuse][-unfreeze:]
        stages.append(Stage(kwargs["epochs"], train=[*top, *new], lr=settings["finetune_lr"] or None, name="finetune"))
    fit_args = {k: v for k, v in kwargs.items() if k not in ("epochs",)}
    history = FineTune(stages).fit(model, data, **fit_args, callbacks=[report], verbose=False)
    return model, history


# ===================================================================== the search
@dataclass
class TuneResult:
    """What ``tune`` returns: the Optuna study, the best trial's values and where files went."""

    study: Any
    best_value: float
    best_params: dict[str, Any]
    best_recipe: dict[str, Any]
    folder: Path
    seconds: float
    trials_done: int


def _storage(settings: dict[str, Any], folder: Path) -> Any:
    import optuna

    url = settings["storage"] or f"sqlite:///{(folder / 'tune.db').resolve()}"
    try:
        with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna's words; they are what
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # fails a killed worker's trial
            return optuna.storages.RDBStorage(url, heartbeat_interval=30, grace_period=90,
                                              engine_kwargs={"connect_args": {"timeout": 60}}
                                              if url.startswith("sqlite") else {})
    except Exception as err:  # noqa: BLE001 - SQLAlchemy raises many kinds for a bad URL
        raise ConfigError(f"[tune] storage {url!r} cannot be opened: {type(err).__name__}: {err}; give a SQLAlchemy "
                          f"URL such as sqlite:///tune.db or postgresql://user@host/db") from None


def _sampler(settings: dict[str, Any]) -> Any:
    import optuna

    if settings["sampler"] == "random":
        return optuna.samplers.RandomSampler(seed=settings["seed"])
    return optuna.samplers.TPESampler(seed=settings["seed"], n_startup_trials=settings["startup_trials"])


def _pruner(settings: dict[str, Any]) -> Any:
    import optuna

    if settings["pruner"] == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=settings["startup_trials"], n_warmup_steps=1)


def _open_study(settings: dict[str, Any], folder: Path, name: str, direction: str) -> Any:
    import optuna

    return optuna.create_study(storage=_storage(settings, folder), study_name=name, direction=direction,
                               sampler=_sampler(settings), pruner=_pruner(settings), load_if_exists=True)


def _finished(study: Any) -> int:
    import optuna

    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return len(study.get_trials(deepcopy=False, states=states))


def _work(raw: dict[str, Any], folder: str, name: str, trials: int, threads: int) -> None:
    """One worker: run trials against the shared storage until ``trials`` are finished
    (complete or pruned) there; several workers may overshoot by one trial each."""
    import optuna
    import torch

    if threads:
        torch.set_num_threads(threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    settings = {**TUNE_KEYS, **raw.get("tune", {})}
    direction = _direction(settings["metric"], settings["direction"])
    study = _open_study(settings, Path(folder), name, direction)
    if _finished(study) >= trials:
        return
    space = SearchSpace.find({k: v for k, v in raw.items() if k != "tune"})
    data_cache: dict[str, Any] = {}
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    study.optimize(lambda trial: _run_trial(raw, space, trial, data_cache, settings["metric"], direction),
                   callbacks=[optuna.study.MaxTrialsCallback(trials, states=states)],
                   timeout=settings["timeout"] or None, gc_after_trial=False, show_progress_bar=False)


def tune(recipe: dict[str, Any] | str | os.PathLike, *, trials: int | None = None, jobs: int | None = None,
         backend: str | None = None, address: str | None = None, storage: str | None = None,
         folder: str | os.PathLike | None = None, name: str | None = None,
         log: Callable[[str], None] = print) -> TuneResult:
    """Search the recipe's space with Optuna; returns the best trial and writes the report.

    ``trials`` counts finished trials (complete or pruned) in the storage, so calling again
    with the same folder (or storage URL and study name) continues a search that was stopped.
    ``jobs`` worker processes share the cores; ``backend="ray"`` runs the workers as Ray tasks
    (``address`` of a cluster, else a local Ray instance).

    >>> result = tune("examples/recipes/tune_fashion_mlp.toml", trials=30)   # doctest: +SKIP
    >>> result.best_params                                                    # doctest: +SKIP
    """
    source = "recipe"
    if not isinstance(recipe, dict):
        source = str(recipe)
        name = name or Path(recipe).stem
        recipe = load_tune_recipe(recipe)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    raw = check_tune_recipe(recipe, source)
    settings = raw.setdefault("tune", {})
    for key, value in (("trials", trials), ("jobs", jobs), ("backend", backend), ("address", address),
                       ("storage", storage)):
        if value is not None:
            settings[key] = value
    raw = check_tune_recipe(raw, source)
    settings = {**TUNE_KEYS, **raw["tune"]}
    name = settings["study"] or name or "tune"
    out = Path(folder) if folder is not None else Path(settings["dir"]) / name
    out.mkdir(parents=True, exist_ok=True)
    direction = _direction(settings["metric"], settings["direction"])
    study = _open_study(settings, out, name, direction)  # fails early on a bad storage URL
    before = _finished(study)
    if not study.trials:  # points to try first (e.g. the book's network as a baseline), once per search
        for point in settings["enqueue"]:
            study.enqueue_trial({k: _label(v) for k, v in point.items()})
    if before:
        log(f"tune {name}: {before} trials already finished in {settings['storage'] or out / 'tune.db'}; "
            f"continuing to {settings['trials']}")
    t0 = time.perf_counter()
    jobs_n = settings["jobs"]
    threads = max(1, (os.cpu_count() or 1) // jobs_n)
    if settings["backend"] == "ray":
        _run_ray(raw, out, name, settings, threads)
    elif jobs_n == 1:
        _work(raw, str(out), name, settings["trials"], 0)
    else:
        _run_processes(raw, out, name, settings, threads)
    seconds = time.perf_counter() - t0
    study = _open_study(settings, out, name, direction)
    return _report(study, raw, out, name, settings, seconds, before, log)


def _run_processes(raw: dict[str, Any], out: Path, name: str, settings: dict[str, Any], threads: int) -> None:
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    with ctx.Pool(settings["jobs"]) as pool:
        results = [pool.apply_async(_work, (raw, str(out), name, settings["trials"], threads))
                   for _ in range(settings["jobs"])]
        for r in results:
            r.get()


def check_ray_address(address: str | None, timeout: float = 5.0) -> None:
    """Fail at once, with the address in the message, when nothing answers at a Ray cluster's
    ``host:port`` (Ray itself retries for minutes); ``None`` and ``"auto"`` are not checked."""
    import socket

    if not address or address == "auto":
        return
    where = address.split("://", 1)[-1]
    host, _, port = where.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"Ray address {address!r} is not HOST:PORT (or ray://HOST:PORT, or 'auto')")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as err:
        raise ConfigError(f"cannot reach the Ray cluster at {address!r}: nothing answers at {host}:{port} "
                          f"({err.strerror or err}); start it with `ray start --head` or give its address") from None


def _run_ray(raw: dict[str, Any], out: Path, name: str, settings: dict[str, Any], threads: int) -> None:
    try:
        import ray
    except ImportError:
        raise ConfigError("[tune] backend = 'ray' needs Ray: pip install 'graftnet[ray]'") from None
    address = settings["address"] or None
    started = False
    if not ray.is_initialized():
        check_ray_address(address)
        try:
            ray.init(address=address, num_cpus=None if address else os.cpu_count(), include_dashboard=False,
                     log_to_driver=False, ignore_reinit_error=True)
        except (ConnectionError, RuntimeError, ValueError) as err:
            raise ConfigError(f"[tune] cannot reach the Ray cluster at {address!r}: {err}") from None
        started = True
    try:
        work = ray.remote(num_cpus=threads)(_work)
        ray.get([work.remote(raw, str(out.resolve()), name, settings["trials"], threads)
                 for _ in range(settings["jobs"])])
    finally:
        if started:
            ray.shutdown()


# ===================================================================== the report
def _report(study: Any, raw: dict[str, Any], out: Path, name: str, settings: dict[str, Any], seconds: float,
            before: int, log: Callable[[str], None]) -> TuneResult:
    import optuna
    import tomli_w

    from graftnet.io.checkpoint import atomic_write_text
    from graftnet.runs import _drop_none

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        raise ConfigError(f"tune {name}: no trial finished (all pruned or failed); see {out / 'tune.db'}")
    best = study.best_trial
    best_recipe = copy.deepcopy(best.user_attrs.get("recipe") or {})
    best_recipe.setdefault("output", {})["name"] = f"{name}-best"
    atomic_write_text(out / "best_recipe.toml", "# the best trial of graftnet tune " + name
                      + f" (trial {best.number}, {settings['metric']} = {best.value:.6g})\n"
                      + tomli_w.dumps(_drop_none(best_recipe)))
    rows = _rows(study)
    buf = io.StringIO()
    fields = ["number", "state", "value", "epochs", "seconds", "test", *sorted({k for r in rows for k in r["params"]})]
    writer = csv.writer(buf)
    writer.writerow(fields)
    for r in rows:
        writer.writerow([r["number"], r["state"], r["value"], r["epochs"], r["seconds"], json.dumps(r["test"]),
                         *[json.dumps(r["params"].get(k)) for k in fields[6:]]])
    atomic_write_text(out / "trials.csv", buf.getvalue())
    importances = _importances(study)
    _plot_history(study, out / "history.png", settings["metric"])
    if importances:
        _plot_importances(importances, out / "importances.png")
    atomic_write_text(out / "report.md", _markdown(study, rows, importances, name, settings, seconds, before))
    log(f"tune {name}: {len(rows)} trials ({len(complete)} complete), best {settings['metric']} = {best.value:.4f} "
        f"(trial {best.number}); wrote {out / 'best_recipe.toml'} and {out / 'report.md'}")
    return TuneResult(study, float(best.value), dict(best.params), best_recipe, out, seconds, _finished(study) - before)


def _rows(study: Any) -> list[dict[str, Any]]:
    rows = []
    for t in study.get_trials(deepcopy=False):
        seconds = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete else None
        rows.append({"number": t.number, "state": t.state.name, "value": t.value, "params": dict(t.params),
                     "epochs": t.user_attrs.get("epochs"), "test": t.user_attrs.get("test"),
                     "seconds": round(seconds, 2) if seconds is not None else None})
    return rows


def _importances(study: Any) -> dict[str, float]:
    import optuna

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(complete) < 3 or not complete[0].params:
        return {}
    try:
        return dict(optuna.importance.get_param_importances(study))
    except (RuntimeError, ValueError):  # e.g. every trial had the same parameters
        return {}


def _plot_history(study: Any, path: Path, metric: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    import optuna

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    pruned = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.PRUNED,))
    fig = Figure(figsize=(7, 4), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    xs, ys = [t.number for t in complete], [t.value for t in complete]
    ax.scatter(xs, ys, s=18, color="tab:blue", label=f"complete trial ({metric})")
    if pruned:
        last = [t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else float("nan")
                for t in pruned]
        ax.scatter([t.number for t in pruned], last, s=18, marker="x", color="tab:gray",
                   label="pruned trial (its last reported value)")
    sign = 1 if study.direction.name == "MAXIMIZE" else -1
    order = sorted(zip(xs, ys))
    best, run = [], None
    for _, y in order:
        run = y if run is None or sign * y > sign * run else run
        best.append(run)
    ax.step([x for x, _ in order], best, where="post", color="tab:red", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(metric)
    ax.set_title("optimisation history")
    ax.legend(loc="best", fontsize=8)
    fig.savefig(path)


def _plot_importances(importances: dict[str, float], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 0.5 + 0.4 * len(importances)), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    names = list(importances)[::-1]
    ax.barh(names, [importances[n] for n in names], color="tab:blue", label="fANOVA importance (sums to 1)")
    ax.set_xlabel("importance")
    ax.set_title("which parameters mattered")
    ax.legend(loc="lower right", fontsize=8)
    fig.savefig(path)


def _markdown(study: Any, rows: list[dict[str, Any]], importances: dict[str, float], name: str,
              settings: dict[str, Any], seconds: float, before: int) -> str:
    metric = settings["metric"]
    finished = [r for r in rows if r["state"] == "COMPLETE"]
    sign = -1 if study.direction.name == "MAXIMIZE" else 1
    finished.sort(key=lambda r: sign * r["value"])
    lines = [f"# graftnet tune: {name}", "",
             f"{len(rows)} trials ({len(finished)} complete, {sum(r['state'] == 'PRUNED' for r in rows)} pruned, "
             f"{sum(r['state'] == 'FAIL' for r in rows)} failed); {len(rows) - before} ran in this call, in "
             f"{seconds:.1f} s with {settings['jobs']} job(s) on the {settings['backend']} backend. "
             f"Sampler {settings['sampler']} (seed {settings['seed']}), pruner {settings['pruner']}. "
             f"The value of a trial is its best epoch's `{metric}`; test metrics are recorded, never used to choose.",
             "", "## Best trials", "", f"| trial | {metric} | test | epochs | parameters |", "|---|---|---|---|---|"]
    for r in finished[:10]:
        params = ", ".join(f"{k} = {json.dumps(v)}" for k, v in r["params"].items())
        test = ", ".join(f"{k} {v:.4f}" for k, v in (r["test"] or {}).items())
        lines.append(f"| {r['number']} | {r['value']:.4f} | {test} | {r['epochs']} | {params} |")
    if importances:
        lines += ["", "## Parameter importances (fANOVA)", "", "| parameter | importance |", "|---|---|"]
        lines += [f"| {k} | {v:.3f} |" for k, v in importances.items()]
        lines += ["", "![importances](importances.png)"]
    lines += ["", "![optimisation history](history.png)", "",
              "`best_recipe.toml` holds the best trial's whole recipe: `graftnet train best_recipe.toml`.", ""]
    return "\n".join(lines)

