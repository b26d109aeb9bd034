"""Which model, and how many of its layers, should a new task start from? Transferability scores.

Fine-tuning every candidate to find out is what a study does (``graftnet study``); a
transferability score answers from the candidate's features on the target's labelled
training examples alone, computed once, in seconds. Three are here:

- **LogME** (You, Liu, Wang, Long, ICML 2021): the log marginal likelihood (evidence) of a
  Bayesian linear regression from the features to each one-hot label column, with the
  prior and noise precisions (alpha, beta) set to the values that maximise it, divided by
  the number of examples and averaged over the columns. Works on any depth's features;
  also for regression targets.
- **LEEP** (Nguyen, Hassner, Seeger, Archambeau, ICML 2020): how well the *source* model's
  class probabilities, through the empirical conditional P(target | source class),
  predict the target labels (the mean log-likelihood, <= 0). It needs the whole source
  model's outputs, so it scores a model, not a depth: every depth of a model gets the
  same LEEP.
- **H-score** (Bao, Li, Huang, Zheng, ICIP 2019): tr(cov(f)^-1 cov(E[f | y])), how much of
  the features' variance lies between the class means. With fewer examples than feature
  dimensions cov(f) is singular; by default the features are first projected onto their
  principal subspace and cov(f) shrunk towards a multiple of the identity with the
  Ledoit-Wolf coefficient (the regularised H-score of Ibrahim, Ponomareva, Mazumder,
  ICLR 2023). ``shrinkage=False`` gives Bao et al.'s pseudo-inverse form.

Higher is better for all three. :func:`rank` scores every catalogued model whose input
fits the task at every reuse depth (after each hidden block, as ``graftnet study`` counts
them: depth k reuses the first k blocks), from features computed once through the
frozen-prefix cache, and writes a ranked table beside a plot::

    >>> import graftnet as gn
    >>> result = gn.rank("fashion:B", out="runs/rank-fashion-b")       # doctest: +SKIP
    >>> print(result.table())                                          # doctest: +SKIP
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from graftnet.data import Dataset, Split
from graftnet.errors import ConfigError, DataError, ShapeError, did_you_mean
from graftnet.network import Network

__all__ = ["SCORES", "Candidate", "RankResult", "hscore", "ledoit_wolf_covariance", "leep", "logme", "rank",
           "reuse_depths"]

SCORES = ("logme", "leep", "hscore")


# ===================================================================== the scores
def _as_float64(features: Any) -> np.ndarray:
    f = features.detach().to("cpu").double().numpy() if isinstance(features, torch.Tensor) else np.asarray(
        features, dtype=np.float64)
    if f.ndim < 2:
        raise ShapeError(f"features must be (N, D) (or (N, ...), flattened), got shape {f.shape}")
    f = f.reshape(len(f), -1)
    if not np.isfinite(f).all():
        raise DataError("features hold NaN or infinite values; the model's outputs on this data are not finite")
    return f


def _as_labels(labels: Any, n: int) -> np.ndarray:
    y = labels.detach().to("cpu").numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if y.shape != (n,):
        raise ShapeError(f"labels must be (N,) class indices with N = {n} (the number of feature rows), "
                         f"got shape {y.shape}")
    if y.dtype.kind == "f":
        if not np.all(y == np.round(y)):
            raise DataError("labels must be whole class indices (0, 1, ...); got fractional values")
        y = y.astype(np.int64)
    if y.dtype.kind not in "iu" or (len(y) and y.min() < 0):
        raise DataError(f"labels must be class indices >= 0, got dtype {y.dtype}"
                        + (f" and minimum {y.min()}" if len(y) and y.dtype.kind in 'iu' else ""))
    return y.astype(np.int64)


def _one_hot(y: np.ndarray) -> np.ndarray:
    classes = np.unique(y)
    if len(classes) < 2:
        raise DataError(f"a transferability score needs labels of at least 2 classes; got only {classes.tolist()}")
    return (y[:, None] == classes[None, :]).astype(np.float64)  # (N, K), K = classes present


def _evidence(alpha: float, beta: float, sigma: np.ndarray, z2: np.ndarray, rest: float, n: int, d: int
              ) -> tuple[float, float, float, float]:
    """(log evidence, gamma, |m|^2, |Fm - y|^2) of Bayesian linear regression, in the SVD basis.

    sigma: (r,) squared singular values of F; z2: (r,) squared coordinates of y on F's left
    singular vectors; rest: |y|^2 outside their span.
    """
    denom = alpha + beta * sigma  # (r,)
    m2 = float(np.sum(beta ** 2 * sigma * z2 / denom ** 2))  # |m|^2, m = beta A^-1 F^T y
    res2 = float(np.sum(alpha ** 2 * z2 / denom ** 2)) + rest  # |F m - y|^2
    gamma = float(np.sum(beta * sigma / denom))  # effective number of well-determined weights
    log_det = float(np.sum(np.log(denom))) + (d - len(sigma)) * math.log(alpha)  # log |alpha I + beta F^T F|
    value = (n / 2 * math.log(beta) + d / 2 * math.log(alpha) - n / 2 * math.log(2 * math.pi)
             - beta / 2 * res2 - alpha / 2 * m2 - log_det / 2)
    return value, gamma, m2, res2


def _left_singular(f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(U, s^2) of f = U diag(s) V^T, non-zero singular values only, from the smaller Gram matrix.

    An eigendecomposition of the (min(N, D))^2 Gram matrix is 10-200x faster than an SVD of a
    wide f (200 x 3136: 0.07 s against 0.6 s on one core); the squared singular values it
    loses to rounding are far below the cut-off anyway."""
    n, d = f.shape
    gram = f @ f.T if n <= d else f.T @ f  # (N, N) or (D, D)
    sigma, vectors = np.linalg.eigh(gram)
    keep = sigma > max(sigma.max(initial=0.0), 0.0) * max(n, d) * np.finfo(np.float64).eps * 10
    sigma, vectors = sigma[keep], vectors[:, keep]
    u = vectors if n <= d else (f @ vectors) / np.sqrt(sigma)  # (N, r)
    return u, sigma


def _logme_column(sigma: np.ndarray, z: np.ndarray, y2: float, n: int, d: int, *, iterations: int = 100,
                  tol: float = 1e-6) -> tuple[float, float, float]:
    """(evidence / n, alpha, beta) for one target column, by MacKay's fixed-point updates."""
    z2 = z ** 2
    rest = max(y2 - float(np.sum(z2)), 0.0)
    alpha, beta = 1.0, 1.0
    for _ in range(iterations):
        _, gamma, m2, res2 = _evidence(alpha, beta, sigma, z2, rest, n, d)
        new_alpha = gamma / max(m2, 1e-300)
        new_beta = max(n - gamma, 1e-12) / max(res2, 1e-300)
        done = abs(new_alpha - alpha) <= tol * alpha and abs(new_beta - beta) <= tol * beta
        alpha, beta = min(max(new_alpha, 1e-12), 1e12), min(max(new_beta, 1e-12), 1e12)
        if done:
            break
    value = _evidence(alpha, beta, sigma, z2, rest, n, d)[0]
    return value / n, alpha, beta


def logme(features: Any, labels: Any, *, regression: bool = False, return_parameters: bool = False
          ) -> float | tuple[float, list[tuple[float, float]]]:
    """LogME of ``features`` (N, D) for ``labels``: the maximised log evidence per example.

    For classification ``labels`` are (N,) class indices and each one-hot column is a
    target; for ``regression=True`` they are (N,) or (N, k) values. ``return_parameters``
    also returns the (alpha, beta) that maximise each target's evidence.

        >>> x = np.random.default_rng(0).normal(size=(100, 5)); y = (x[:, 0] > 0).astype(int)
        >>> logme(x, y) > logme(np.random.default_rng(1).normal(size=(100, 5)), y)
        True
    """
    f = _as_float64(features)
    n, d = f.shape
    if regression:
        targets = np.asarray(labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else labels,
                             dtype=np.float64).reshape(n, -1)
    else:
        targets = _one_hot(_as_labels(labels, n))
    u, sigma = _left_singular(f)  # u: (N, r), sigma: (r,) squared singular values
    projections = u.T @ targets  # (r, K)
    values, params = [], []
    for k in range(targets.shape[1]):
        value, alpha, beta = _logme_column(sigma, projections[:, k], float(targets[:, k] @ targets[:, k]), n, d)
        values.append(value)
        params.append((alpha, beta))
    score = float(np.mean(values))
    return (score, params) if return_parameters else score


def leep(source_probabilities: Any, labels: Any) -> float:
    """LEEP of a source model's class probabilities (N, Z) for target ``labels`` (N,).

    The mean over examples of log sum_z P(y_i | z) theta_z(x_i), where P(y | z) is the
    empirical conditional of target label given source class. Always <= 0; 0 when the
    source classes determine the target labels.

        >>> leep(np.eye(3)[[0, 1, 2, 0]], [1, 0, 2, 1])   # a relabelling of the source classes
        0.0
    """
    theta = _as_float64(source_probabilities)
    n = len(theta)
    y = _as_labels(labels, n)
    if (theta < -1e-6).any() or not np.allclose(theta.sum(1), 1.0, atol=1e-3):
        raise DataError("LEEP needs class probabilities (rows >= 0 that sum to 1), e.g. a softmax output; "
                        f"got rows summing to {theta.sum(1).min():.3g}..{theta.sum(1).max():.3g}")
    onehot = _one_hot(y)  # (N, K)
    joint = theta.T @ onehot / n  # (Z, K): P(z, y)
    marginal = joint.sum(1, keepdims=True)  # (Z, 1): P(z)
    conditional = np.divide(joint, marginal, out=np.zeros_like(joint), where=marginal > 0)  # P(y | z)
    expected = theta @ conditional  # (N, K): sum_z theta_z(x) P(y | z)
    picked = expected[np.arange(n), np.searchsorted(np.unique(y), y)]
    return float(np.mean(np.log(np.maximum(picked, 1e-300))))


def _principal(f: np.ndarray) -> np.ndarray:
    """Centered features in the basis of their principal axes with non-zero variance: (N, r)."""
    centered = f - f.mean(0, keepdims=True)
    if centered.shape[1] < centered.shape[0]:
        return centered  # already in a space of fewer dimensions than examples
    u, sigma = _left_singular(centered)
    return u * np.sqrt(sigma)  # (N, r): coordinates on the principal axes


def ledoit_wolf_covariance(centered: np.ndarray) -> np.ndarray:
    """(1 - s) S + s (tr S / D) I for centered rows (N, D), with S their covariance and s the
    Ledoit-Wolf (2004) coefficient that minimises the expected squared error of the estimate."""
    n, d = centered.shape
    cov = centered.T @ centered / n  # (D, D)
    mu = float(np.trace(cov)) / d
    squares = centered ** 2  # (N, D)
    # sum_i |x_i x_i^T - S|_F^2 / n^2 and |S - mu I|_F^2, both per dimension
    beta = (float(np.sum(squares.T @ squares)) / n - float(np.sum(cov ** 2))) / (n * d)
    delta = float(np.sum(cov ** 2)) - 2 * mu * float(np.trace(cov)) + d * mu ** 2
    delta /= d
    s = 0.0 if delta <= 0 else min(max(beta, 0.0), delta) / delta
    return (1 - s) * cov + s * mu * np.eye(d)


def hscore(features: Any, labels: Any, *, shrinkage: bool = True) -> float:
    """H-score of ``features`` (N, D) for class ``labels`` (N,): tr(cov(f)^-1 cov(E[f | y])).

    ``shrinkage=True`` (default) works in the features' principal subspace and shrinks
    cov(f) with the Ledoit-Wolf coefficient; ``False`` is Bao et al.'s form with a
    pseudo-inverse. At most (classes - 1) without shrinkage, reached when the features
    determine the class.

        >>> y = np.array([0, 1] * 50); f = np.c_[y, np.random.default_rng(0).normal(size=100)]
        >>> round(hscore(f, y, shrinkage=False), 6)
        1.0
    """
    f = _as_float64(features)
    y = _as_labels(labels, len(f))
    onehot = _one_hot(y)
    if shrinkage:
        f = _principal(f)
        cov_f = ledoit_wolf_covariance(f)
    else:
        f = f - f.mean(0, keepdims=True)
        cov_f = f.T @ f / len(f)
    means = (onehot.T @ f) / onehot.sum(0)[:, None]  # (K, D): class means of the centered features
    g = onehot @ means  # (N, D): E[f | y_i]
    cov_g = g.T @ g / len(f)
    inverse = np.linalg.pinv(cov_f, rcond=1e-10, hermitian=True)
    return float(np.trace(inverse @ cov_g))


# ===================================================================== candidates
def reuse_depths(model: Network) -> list[tuple[int, str]]:
    """(depth, last layer) of every reuse depth: depth k reuses the first k hidden blocks,
    as ``graftnet study`` counts them (``drop-topJ`` reuses depth n - J).

        >>> reuse_depths(Network.mlp((1, 28, 28), [300, 100], 10))
        [(1, 'hidden1'), (2, 'hidden2')]
    """
    from graftnet.study import hidden_blocks

    return [(k, block[-1]) for k, block in enumerate(hidden_blocks(model), start=1)]


@dataclass
class Candidate:
    """A model to score: a saved network (or a catalog entry) and where it came from."""

    name: str
    model: Network
    version: int | None = None
    path: str | None = None

    @property
    def label(self) -> str:
        return f"{self.name} v{self.version}" if self.version is not None else self.name


def _candidate(item: Any) -> Candidate:
    if isinstance(item, Candidate):
        return item
    if isinstance(item, Network):
        return Candidate(item.name, item, path=item.info.get("path"))
    if isinstance(item, (str, os.PathLike)):
        from graftnet.io.checkpoint import load_model

        model = load_model(item)
        return Candidate(model.name, model, path=str(item))
    raise TypeError(f"rank: a model is a Network, the folder of a saved one or a Candidate; got {type(item).__name__}")


def _from_catalog(catalog: Any, task: Dataset, warnings: list[str]) -> list[Candidate]:
    from graftnet.catalog import Catalog

    catalog = catalog if isinstance(catalog, Catalog) else Catalog(catalog)
    entries = catalog.list()
    fitting = [e for e in entries if tuple(e.input_shape) == tuple(task.input_shape)]
    if not fitting:
        shapes = sorted({f"{e.name} {tuple(e.input_shape)}" for e in entries})
        raise ShapeError(f"no catalogued model takes inputs of shape {tuple(task.input_shape)} (task "
                         f"{task.name!r}); the catalog at {catalog.url} holds "
                         f"{', '.join(shapes) if shapes else 'no models'}")
    out = []
    for entry in fitting:
        problem = entry.problem()
        if problem:
            warnings.append(f"skipped {entry.ref}: {problem}")
            continue
        out.append(Candidate(entry.name, catalog.load(entry.ref), version=entry.version, path=entry.path))
    return out


# ===================================================================== ranking
@dataclass
class RankResult:
    """Scores of every (model, reuse depth) on a task, best first by ``by``."""

    task: dict[str, Any]
    by: str
    rows: list[dict[str, Any]]
    seconds: float
    feature_seconds: float
    score_seconds: float
    examples: int
    warnings: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    def table(self) -> str:
        """The ranked table as aligned text."""
        columns = ["rank", "model", "depth", "layer", "dim", *SCORES]
        lines = [[str(row.get(c, "")) if c not in SCORES else _fmt(row.get(c)) for c in columns]
                 for row in self.rows]
        widths = [max([len(c)] + [len(line[i]) for line in lines]) for i, c in enumerate(columns)]
        text = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip(),
                "  ".join("-" * w for w in widths)]
        text += ["  ".join(v.ljust(w) for v, w in zip(line, widths)).rstrip() for line in lines]
        text.append(f"(task {self.task['name']}, {self.examples} labelled examples, ranked by {self.by}; "
                    f"{self.seconds:.2f} s: features {self.feature_seconds:.2f} s, scores {self.score_seconds:.2f} s)")
        return "\n".join(text)

    def to_dict(self) -> dict[str, Any]:
        return {"format": "graftnet.rank/1", "task": self.task, "by": self.by, "examples": self.examples,
                "seconds": self.seconds, "feature_seconds": self.feature_seconds,
                "score_seconds": self.score_seconds, "warnings": self.warnings, "rows": self.rows}

    def best(self) -> dict[str, Any]:
        return self.rows[0]


def _fmt(value: Any) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


def _source_probabilities(model: Network, outputs: torch.Tensor) -> np.ndarray | None:
    """The source model's class probabilities (N, Z) from its raw outputs, or None (regression)."""
    if not (model.info.get("classes") or model.info.get("task") in ("binary", "multiclass")):
        activation = getattr(model.specs[-1], "activation_name", "linear")
        if activation not in ("softmax", "sigmoid"):
            return None  # no classes and no probability output: a regression model has no LEEP
    out = outputs.double()
    activation = getattr(model.specs[-1], "activation_name", "linear")
    if out.shape[1] == 1:
        p = out if activation == "sigmoid" else torch.sigmoid(out)
        out = torch.cat([1 - p, p], dim=1)  # (N, 2): [negative, positive]
    elif activation != "softmax":
        out = torch.softmax(out, dim=1)
    return out.numpy()


def _resolve_task(task: Dataset | str, train_size: int | None, sampling: str, seed: int) -> tuple[Dataset, Split]:
    if not isinstance(task, Dataset):
        from graftnet.data import load

        task = load(str(task))
    if task.task == "regression":
        raise ConfigError(f"rank: task {task.name!r} is a regression task; LEEP and H-score need classes "
                          f"(logme(features, y, regression=True) scores regression features directly)")
    if train_size is not None:
        from graftnet.study import draw

        task = draw(task, train_size, seed, sampling=sampling)
    return task, task.train


def rank(
    task: Dataset | str,
    models: Sequence[Any] | None = None,
    *,
    catalog: Any = None,
    scores: Sequence[str] = SCORES,
    by: str = "logme",
    train_size: int | None = None,
    sampling: str = "stratified",
    seed: int = 0,
    cache: Any = None,
    device: str | torch.device | None = None,
    out: str | os.PathLike | None = None,
) -> RankResult:
    """Score every model at every reuse depth on ``task``'s labelled training examples.

    Args:
        task: the target task (a Dataset or a ``data.load`` name such as ``"fashion:B"``).
        models: Networks, saved model folders or :class:`Candidate` s; ``None`` takes every
            model in ``catalog`` whose input shape is the task's (models whose folder was
            moved or whose weights changed are skipped and named in ``warnings``).
        catalog: a :class:`graftnet.catalog.Catalog`, its URL, or None for the default one.
        scores: which of ``SCORES`` to compute; ``by`` orders the table.
        train_size: score on this many training examples drawn with ``seed`` and
            ``sampling`` (``study.draw``: the examples seed ``seed`` of a study trains on).
        cache: the :class:`graftnet.cache.FeatureCache` the features go through (default:
            a fresh one), so every prefix is computed once per data split.
        out: a folder for ``rank.md``, ``rank.csv``, ``rank.json`` and ``rank.png``.

    Raises ShapeError when no model's input fits the task.
    """
    t0 = time.perf_counter()
    unknown = [s for s in scores if s not in SCORES]
    if unknown or not scores:
        raise ConfigError(f"unknown score {unknown[0] if unknown else '(none)'!r}; use some of {', '.join(SCORES)}."
                          + (did_you_mean(unknown[0], SCORES) if unknown else ""))
    if by not in scores:
        raise ConfigError(f"by={by!r} is not among the scores computed ({', '.join(scores)})")
    task, split = _resolve_task(task, train_size, sampling, seed)
    warnings: list[str] = []
    if models is None:
        candidates = _from_catalog(catalog, task, warnings)
    else:
        candidates = [_candidate(m) for m in models]
        wrong = [c for c in candidates if tuple(c.model.input_shape) != tuple(task.input_shape)]
        if len(wrong) == len(candidates):
            raise ShapeError(f"no model takes inputs of shape {tuple(task.input_shape)} (task {task.name!r}): "
                             + ", ".join(f"{c.label} takes {tuple(c.model.input_shape)}" for c in wrong))
        warnings += [f"skipped {c.label}: takes inputs of shape {tuple(c.model.input_shape)}, the task "
                     f"{tuple(task.input_shape)}" for c in wrong]
        candidates = [c for c in candidates if c not in wrong]
    if not candidates:
        raise ConfigError(f"no model left to rank on {task.name!r}: " + "; ".join(warnings))
    if cache is None:
        from graftnet.cache import FeatureCache

        cache = FeatureCache()
    device = torch.device(device or "cpu")
    labels = split.y.long().numpy()  # (N,) class indices (binary 0/1 floats too)
    rows: list[dict[str, Any]] = []
    feature_seconds = score_seconds = 0.0
    for candidate in candidates:
        model = candidate.model.to(device)
        depths = _depths_or_warn(candidate, warnings)
        if not depths:
            continue
        leep_value = None
        if "leep" in scores:
            t1 = time.perf_counter()
            outputs = cache.features(model.split(len(model) - 1)[0], split, device=device).cpu()  # (N, Z)
            feature_seconds += time.perf_counter() - t1
            t1 = time.perf_counter()
            theta = _source_probabilities(model, outputs)
            leep_value = leep(theta, labels) if theta is not None else None
            score_seconds += time.perf_counter() - t1
        for depth, layer in depths:
            t1 = time.perf_counter()
            features = cache.features(model.split(layer)[0], split, device=device)  # (N, *block output)
            features = features.reshape(len(features), -1).cpu()  # (N, D)
            feature_seconds += time.perf_counter() - t1
            t1 = time.perf_counter()
            row = _scored(candidate, depth, len(depths), layer, features, labels, scores, leep_value)
            score_seconds += time.perf_counter() - t1
            rows.append(row)
    _order(rows, scores, by)
    result = RankResult(task={"name": task.name, "task": task.task, "classes": task.classes,
                              "input_shape": list(task.input_shape), "train_fingerprint": split.fingerprint()},
                        by=by, rows=rows, seconds=round(time.perf_counter() - t0, 4),
                        feature_seconds=round(feature_seconds, 4), score_seconds=round(score_seconds, 4),
                        examples=len(split), warnings=warnings)
    if out is not None:
        result.files = [str(p) for p in write_rank(result, out, scores=scores)]
    return result


def _scored(candidate: Candidate, depth: int, depths: int, layer: str, features: torch.Tensor, labels: np.ndarray,
            scores: Sequence[str], leep_value: float | None) -> dict[str, Any]:
    """One row of the table: the candidate at one depth and its scores."""
    from threadpoolctl import threadpool_limits

    row: dict[str, Any] = {"model": candidate.label, "name": candidate.name, "version": candidate.version,
                           "path": candidate.path, "depth": depth, "depths": depths, "layer": layer,
                           "dim": int(features.shape[1])}
    # these are small problems (N x N with N the labelled examples): BLAS threads only contend, and on a
    # shared 2-core machine a multi-threaded LAPACK call ran 10-30x slower than a single-threaded one
    with threadpool_limits(limits=1, user_api="blas"):
        if "logme" in scores:
            row["logme"] = logme(features, labels)
        if "leep" in scores:
            row["leep"] = leep_value
        if "hscore" in scores:
            row["hscore"] = hscore(features, labels)
    return row


def _order(rows: list[dict[str, Any]], scores: Sequence[str], by: str) -> None:
    """Sort ``rows`` best first by ``by``; give each its place by every score (``rank_<score>``) and ``rank``."""
    def key(row: dict[str, Any], score: str) -> float:
        return -math.inf if row.get(score) is None else row[score]

    rows.sort(key=lambda r: key(r, by), reverse=True)
    for score in scores:
        for position, row in enumerate(sorted(rows, key=lambda r: key(r, score), reverse=True), start=1):
            row[f"rank_{score}"] = position
    for i, row in enumerate(rows, start=1):
        row["rank"] = i


def _depths_or_warn(candidate: Candidate, warnings: list[str]) -> list[tuple[int, str]]:
    try:
        return reuse_depths(candidate.model)
    except ShapeError as err:
        warnings.append(f"skipped {candidate.label}: {err}")
        return []


# ===================================================================== files
def write_rank(result: RankResult, out: str | os.PathLike, *, scores: Sequence[str] = SCORES) -> list[Path]:
    """``rank.md`` (the table), ``rank.csv``, ``rank.json`` and ``rank.png`` in ``out``."""
    from graftnet.io.checkpoint import atomic_write_bytes, atomic_write_text

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    md = folder / "rank.md"
    lines = [f"# Transferability ranking: {result.task['name']}", "",
             f"{result.examples} labelled training examples; higher is better; ranked by {result.by}.", "",
             "| rank | model | depth | layer | dim | " + " | ".join(scores) + " |",
             "|---|---|---|---|---|" + "---|" * len(scores)]
    for row in result.rows:
        lines.append(f"| {row['rank']} | {row['model']} | {row['depth']}/{row['depths']} | {row['layer']} | "
                     f"{row['dim']} | " + " | ".join(_fmt(row.get(s)) for s in scores) + " |")
    lines += ["", f"Time: {result.seconds:.2f} s (features {result.feature_seconds:.2f} s, scores "
                  f"{result.score_seconds:.2f} s). LEEP scores the whole source model, so it is the same at "
                  f"every depth of a model.", "", "![scores by depth](rank.png)"]
    lines += [f"- warning: {w}" for w in result.warnings]
    atomic_write_text(md, "\n".join(lines) + "\n")
    buffer = io.StringIO()
    columns = ["rank", "model", "name", "version", "path", "depth", "depths", "layer", "dim", *scores,
               *[f"rank_{s}" for s in scores]]
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(result.rows)
    atomic_write_text(folder / "rank.csv", buffer.getvalue())
    atomic_write_text(folder / "rank.json", json.dumps(result.to_dict(), indent=1) + "\n")
    atomic_write_bytes(folder / "rank.png", _plot(result, scores))
    return [md, folder / "rank.csv", folder / "rank.json", folder / "rank.png"]


def _plot(result: RankResult, scores: Sequence[str]) -> bytes:
    """One panel per score: the score against reuse depth, one line per model."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(4.6 * len(scores), 4.0), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(scores), squeeze=False)[0]
    models = list(dict.fromkeys(r["model"] for r in result.rows))
    for ax, score in zip(axes, scores):
        for model in models:
            points = sorted((r["depth"], r[score]) for r in result.rows if r["model"] == model
                            and r.get(score) is not None)
            if points:
                ax.plot(*zip(*points), marker="o", label=model)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("reuse depth (hidden blocks)")
        ax.set_ylabel(score)
        ax.set_title(score)
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"transferability to {result.task['name']} ({result.examples} examples)")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()
