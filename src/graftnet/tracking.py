"""Experiment tracking with MLflow: parameters, per-epoch metrics, the run folder, the model.

``graftnet train RECIPE --mlflow [URI]`` (or ``[output] mlflow = true`` / ``"URI"`` in the
recipe) logs one MLflow run per graftnet run: the resolved recipe as parameters
(``train.optimizer.lr = 0.01``), every number of each History row as a metric at step
``epoch``, and at the end the run folder's files and its ``model/`` folder as artifacts.
Without a URI the store is ``sqlite:///<output dir>/mlflow.db`` with artifacts beside it in
``<output dir>/mlartifacts``; any tracking URI MLflow accepts works (``http://host:5000``).

In Python the logger is a ``fit`` callback::

    >>> logger = MLflowLogger("sqlite:///runs/mlflow.db", params={"lr": 0.01})   # doctest: +SKIP
    >>> with logger:                                                            # doctest: +SKIP
    ...     fit(model, data, callbacks=[logger])
    >>> logger.run_id                                                           # doctest: +SKIP

A resumed graftnet run continues the MLflow run that carries its folder in the
``graftnet.run_dir`` tag. Under torchrun only rank 0 logs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from graftnet.errors import ConfigError

__all__ = ["MLflowLogger", "default_uri", "flatten_params"]

RUN_DIR_TAG = "graftnet.run_dir"
_SKIP_METRICS = ("epoch", "stage")
_SKIP_ARTIFACTS = ("checkpoint", "checkpoint.prev")  # resume state, not results


def default_uri(runs_dir: str | os.PathLike) -> str:
    """The local store graftnet uses when no URI is given: ``sqlite:///<runs_dir>/mlflow.db``."""
    return f"sqlite:///{Path(runs_dir).resolve() / 'mlflow.db'}"


def flatten_params(recipe: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"train": {"optimizer": {"lr": 0.01}}}`` -> ``{"train.optimizer.lr": "0.01"}`` (MLflow
    parameters are strings; lists are written as TOML writes them)."""
    out: dict[str, str] = {}
    for key, value in recipe.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten_params(value, f"{name}."))
        elif value is not None:
            out[name] = str(value).lower() if isinstance(value, bool) else str(value)
    return out


class MLflowLogger:
    """A ``fit`` callback logging each epoch's numbers to an MLflow run.

    Args:
        uri: a tracking URI (``sqlite:///path.db``, ``file:///dir``, ``http://host:5000``);
            ``None``: :func:`default_uri` of ``runs_dir``.
        experiment: the MLflow experiment (created if missing).
        run_name: the MLflow run's name; ``run_dir`` (a graftnet run folder) is recorded as
            the ``graftnet.run_dir`` tag, and a logger given the same folder again (a resume)
            continues that MLflow run.
        params: logged once, flattened (see :func:`flatten_params`).
    """

    def __init__(self, uri: str | None = None, *, experiment: str = "graftnet", run_name: str | None = None,
                 run_dir: str | os.PathLike | None = None, params: dict[str, Any] | None = None,
                 runs_dir: str | os.PathLike = "runs") -> None:
        try:
            from mlflow.tracking import MlflowClient
        except ImportError as err:
            raise ConfigError(f"MLflow tracking needs the mlflow package ({err}); install it with "
                              f"`pip install graftnet[mlflow]` or leave out --mlflow") from None
        self.uri = uri or default_uri(runs_dir)
        self.run_dir = Path(run_dir).resolve() if run_dir is not None else None
        local = self.uri.startswith("sqlite:///")
        try:
            if local:
                Path(self.uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
            self.client = MlflowClient(tracking_uri=self.uri)
            found = self.client.get_experiment_by_name(experiment)
            if found is not None:
                experiment_id = found.experiment_id
            else:
                artifacts = (Path(self.uri[len("sqlite:///"):]).parent / "mlartifacts").as_uri() if local else None
                experiment_id = self.client.create_experiment(experiment, artifact_location=artifacts)
            run = self._existing_run(experiment_id)
            resumed = run is not None
            if resumed:
                self.client.update_run(run.info.run_id, status="RUNNING")
            if run is None:
                tags = {RUN_DIR_TAG: str(self.run_dir)} if self.run_dir is not None else {}
                run = self.client.create_run(experiment_id, run_name=run_name, tags=tags)
        except Exception as err:  # MLflow raises many kinds (SQLAlchemy, requests, its own)
            raise ConfigError(f"cannot open the MLflow tracking store {self.uri!r}: {_first_line(err)}; give a "
                              f"URI such as sqlite:///runs/mlflow.db (a writable folder), file:///path or "
                              f"http://host:5000") from None
        self.experiment_id, self.run_id = experiment_id, run.info.run_id
        if params and not resumed:
            self.client.log_batch(self.run_id, params=_params(flatten_params(params)))
        self._closed = False

    def _existing_run(self, experiment_id: str) -> Any:
        if self.run_dir is None:
            return None
        path = str(self.run_dir).replace("'", "\\'")
        runs = self.client.search_runs([experiment_id], filter_string=f"tags.`{RUN_DIR_TAG}` = '{path}'",
                                       max_results=1)
        return runs[0] if runs else None

    def __call__(self, row: dict[str, Any], model: Any = None) -> None:
        from mlflow.entities import Metric

        step = int(row.get("epoch", 0))
        stamp = _now_ms()
        metrics = [Metric(key, float(value), stamp, step) for key, value in row.items()
                   if key not in _SKIP_METRICS and isinstance(value, (int, float)) and not isinstance(value, bool)]
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)

    def log_run_dir(self, run_dir: str | os.PathLike) -> None:
        """The run folder's files as artifacts, its ``model/`` folder under ``model``
        (the training checkpoint, kept for ``--resume``, is left out)."""
        run_dir = Path(run_dir)
        for path in sorted(run_dir.iterdir()):
            if path.name in _SKIP_ARTIFACTS or path.name.startswith("."):
                continue
            if path.is_dir():
                self.client.log_artifacts(self.run_id, str(path), artifact_path=path.name)
            else:
                self.client.log_artifact(self.run_id, str(path))

    def close(self, status: str = "FINISHED") -> None:
        """End the MLflow run (``FAILED`` or ``KILLED`` when training did not finish)."""
        if not self._closed:
            self.client.set_terminated(self.run_id, status=status)
            self._closed = True

    def __enter__(self) -> MLflowLogger:
        return self

    def __exit__(self, kind: Any, *exc: Any) -> None:
        self.close("FINISHED" if kind is None else "KILLED" if kind is KeyboardInterrupt else "FAILED")


def _params(flat: dict[str, str]) -> list[Any]:
    from mlflow.entities import Param

    return [Param(key, value[:6000]) for key, value in flat.items()]  # MLflow's value length limit


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)


def _first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__
