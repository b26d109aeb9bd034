"""scikit-learn estimators: a graftnet multilayer perceptron behind fit / predict / score.

``DNNClassifier`` and ``DNNRegressor`` follow scikit-learn's conventions (parameters
stored as given and checked in ``fit``, fitted attributes ending in ``_``, input checked
with ``sklearn.utils.validation``), so they work in ``Pipeline``, ``GridSearchCV`` and
``cross_val_score``::

    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> clf = make_pipeline(StandardScaler(), DNNClassifier(hidden_units=(64,), epochs=20,
    ...                                                     random_state=0))
    >>> clf.fit(X_train, y_train).score(X_test, y_test)        # doctest: +SKIP
    0.97

Inputs are 2-D ``(n_samples, n_features)`` arrays; reshape images first
(``x.reshape(len(x), -1)``). Labels may be any values (strings too): ``classes_`` holds
them in sorted order. The network is ``model_`` (a ``graftnet.Network``, so
``graftnet.save_model(clf.model_, ...)`` saves it) and its training record ``history_``.
"""

from __future__ import annotations

import copy
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from graftnet.data import from_arrays
from graftnet.network import Network
from graftnet.train import EarlyStopping, History, fit, seed_everything

__all__ = ["DNNClassifier", "DNNRegressor"]

_CHUNK = 8192  # samples per inference batch


def _check_params(est: Any) -> None:
    """Parameter checks, run in ``fit`` (scikit-learn does no work in ``__init__``)."""
    name = type(est).__name__
    units = est.hidden_units
    if isinstance(units, (str, bytes)) or not isinstance(units, Sequence) or not all(
            isinstance(u, numbers.Integral) and not isinstance(u, bool) and u >= 1 for u in units):
        raise ValueError(f"{name}: hidden_units must be a sequence of positive integers such as (300, 100), "
                         f"got {units!r}")
    for param, low in (("epochs", 0), ("batch_size", 1)):
        value = getattr(est, param)
        if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < low:
            raise ValueError(f"{name}: {param} must be an integer >= {low}, got {value!r}")
    if not isinstance(est.learning_rate, numbers.Real) or est.learning_rate <= 0:
        raise ValueError(f"{name}: learning_rate must be a number > 0, got {est.learning_rate!r}")
    if not isinstance(est.dropout, numbers.Real) or not 0 <= est.dropout < 1:
        raise ValueError(f"{name}: dropout must be in [0, 1), got {est.dropout!r}")
    stopping = est.early_stopping
    if stopping is not None and not isinstance(stopping, EarlyStopping) and (
            not isinstance(stopping, numbers.Integral) or isinstance(stopping, bool) or stopping < 1):
        raise ValueError(f"{name}: early_stopping must be None, a patience >= 1 or an EarlyStopping, "
                         f"got {stopping!r}")
    if not 0 < est.validation_fraction < 1:
        raise ValueError(f"{name}: validation_fraction must be in (0, 1), got {est.validation_fraction!r}")


def _as_float32(x: np.ndarray) -> torch.Tensor:
    # A private copy: inputs may be read-only (memmaps) and torch must not alias them.
    return torch.from_numpy(np.array(x, dtype=np.float32, order="C", copy=True))


class _DNNBase(BaseEstimator):
    """Training shared by the classifier and the regressor."""

    _task = ""

    def _fit_network(self, x: np.ndarray, y: torch.Tensor, n_outputs: int, classes: list[str] | None) -> None:
        _check_params(self)
        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        x_train, y_train, valid = _as_float32(x), y, {}
        if self.early_stopping is not None:
            n_valid = int(np.ceil(len(x) * self.validation_fraction))
            if n_valid < 1 or n_valid >= len(x):
                raise ValueError(f"{type(self).__name__}: early stopping needs a validation split: "
                                 f"validation_fraction={self.validation_fraction} of {len(x)} samples is too few")
            index = np.arange(len(x))
            train_index, valid_index = train_test_split(index, test_size=n_valid, random_state=seed)
            valid = {"x_valid": x_train[valid_index], "y_valid": y[valid_index]}
            x_train, y_train = x_train[train_index], y[train_index]
        data = from_arrays(x_train, y_train, **valid, classes=classes, task=self._task, name="sklearn")
        seed_everything(seed)
        self.model_ = Network.mlp(x.shape[1], list(self.hidden_units), n_outputs, activation=self.activation,
                                  batch_norm=self.batch_norm, dropout=float(self.dropout),
                                  name=type(self).__name__)
        self.history_: History = fit(
            self.model_, data, epochs=int(self.epochs), batch_size=int(self.batch_size),
            optimizer=self.optimizer, lr=float(self.learning_rate),
            early_stopping=self.early_stopping, seed=seed, device=self.device, cache=False,
            verbose=bool(self.verbose), metrics=("accuracy",) if self._task != "regression" else ())

    def _outputs(self, X: Any) -> np.ndarray:
        """Raw network outputs (n_samples, n_outputs) as float64.

        Inference runs in float64 on a copy of the network: float32 results change in the
        last bits with the batch size, and scikit-learn expects ``predict(X[:k])`` to
        equal ``predict(X)[:k]``.
        """
        check_is_fitted(self)
        x = validate_data(self, X, reset=False, dtype=np.float64)
        model = copy.deepcopy(self.model_).to(dtype=torch.float64).eval()
        device = next(model.parameters()).device
        with torch.inference_mode():
            parts = [model(torch.tensor(x[i:i + _CHUNK], device=device)) for i in range(0, len(x), _CHUNK)]
        return torch.cat(parts).cpu().numpy()  # (N, outputs)

    def __sklearn_tags__(self):  # noqa: ANN204 - sklearn.utils.Tags
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False  # same random_state, same result (on the CPU)
        return tags


class DNNClassifier(ClassifierMixin, _DNNBase):
    """A multilayer perceptron classifier: ``hidden_units`` ReLU layers, softmax outputs.

    Args:
        hidden_units: units of each hidden layer (``hidden1``, ``hidden2``, ...).
        n_classes: outputs of the network; None: the number of distinct labels in ``y``.
            Given, integer labels must lie in ``0..n_classes-1`` (``classes_`` is then
            ``0..n_classes-1`` even if some are missing from ``y``).
        activation: hidden activation ("relu", "elu", "selu", "leaky_relu(0.2)", ...).
        optimizer: "sgd", "momentum", "nesterov", "adam", "adamw", "nadam", "rmsprop", "adagrad".
        learning_rate, batch_size, epochs: as in ``graftnet.fit``.
        dropout: dropout rate after each hidden layer; batch_norm: BatchNorm after each.
        early_stopping: None, or a patience in epochs (monitors the loss on a held-out
            ``validation_fraction`` of the training data and keeps the best weights).
        random_state: int for reproducible results, None for a fresh draw each fit.
        device: "cpu", "cuda" or None (CUDA when available).
        verbose: print one line per epoch.

    Fitted attributes: ``classes_``, ``n_features_in_``, ``model_``, ``history_``.

        >>> clf = DNNClassifier(hidden_units=(300, 100), epochs=10, random_state=42)
        >>> clf.fit(x_train.reshape(len(x_train), -1), y_train)      # doctest: +SKIP
        >>> clf.predict_proba(x_test.reshape(len(x_test), -1))[:2]    # doctest: +SKIP
    """

    _task = "multiclass"

    def __init__(self, hidden_units: Sequence[int] = (300, 100), n_classes: int | None = None,
                 activation: str = "relu", optimizer: str = "sgd", learning_rate: float = 0.01,
                 batch_size: int = 50, epochs: int = 10, dropout: float = 0.0, batch_norm: bool = False,
                 early_stopping: int | EarlyStopping | None = None, validation_fraction: float = 0.1,
                 random_state: int | np.random.RandomState | None = None, device: str | None = None,
                 verbose: bool = False) -> None:
        self.hidden_units = hidden_units
        self.n_classes = n_classes
        self.activation = activation
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.epochs = epochs
        self.dropout = dropout
        self.batch_norm = batch_norm
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.random_state = random_state
        self.device = device
        self.verbose = verbose

    def fit(self, X: Any, y: Any) -> DNNClassifier:
        """Train a new network on ``X`` (n_samples, n_features) and labels ``y``."""
        X, y = validate_data(self, X, y, dtype=np.float64)
        check_classification_targets(y)
        classes, encoded = np.unique(y, return_inverse=True)
        classes, encoded = self._apply_n_classes(classes, encoded, y)
        if len(classes) < 2:
            raise ValueError(f"DNNClassifier needs at least 2 classes in y to learn from; got 1 class: "
                             f"{classes.tolist()}")
        self.classes_ = classes
        names = [str(c) for c in classes]
        names = names if len(set(names)) == len(names) else [str(i) for i in range(len(classes))]
        self._fit_network(X, torch.from_numpy(encoded.astype(np.int64)), len(classes), names)
        return self

    def _apply_n_classes(self, classes: np.ndarray, encoded: np.ndarray, y: np.ndarray):
        if self.n_classes is None:
            return classes, encoded
        n = self.n_classes
        if not isinstance(n, numbers.Integral) or isinstance(n, bool) or n < 2:
            raise ValueError(f"DNNClassifier: n_classes must be None or an integer >= 2, got {n!r}")
        if len(classes) > n:
            raise ValueError(f"DNNClassifier: n_classes={n} but y has {len(classes)} classes: {classes.tolist()}")
        if np.issubdtype(classes.dtype, np.integer) and classes.min() >= 0 and classes.max() < n:
            return np.arange(n, dtype=classes.dtype), y.astype(np.int64)
        if len(classes) != n:
            raise ValueError(f"DNNClassifier: n_classes={n} but y has {len(classes)} classes "
                             f"({classes.tolist()}); with n_classes, labels must be integers 0..{n - 1}")
        return classes, encoded

    def decision_function(self, X: Any) -> np.ndarray:
        """Logits (n_samples, n_classes); for two classes, the positive class's margin (n_samples,)."""
        logits = self._outputs(X)  # (N, C)
        return logits[:, 1] - logits[:, 0] if logits.shape[1] == 2 else logits

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities (n_samples, n_classes), columns in the order of ``classes_``."""
        logits = torch.from_numpy(self._outputs(X))
        return torch.softmax(logits, dim=1).numpy()

    def predict_log_proba(self, X: Any) -> np.ndarray:
        logits = torch.from_numpy(self._outputs(X))
        return torch.log_softmax(logits, dim=1).numpy()

    def predict(self, X: Any) -> np.ndarray:
        """The most probable class of each sample, as a label from ``classes_``."""
        best = self._outputs(X).argmax(axis=1)
        return self.classes_[best]


class DNNRegressor(RegressorMixin, _DNNBase):
    """A multilayer perceptron regressor with a linear output per target.

    Targets are standardized for training (mean 0, variance 1 per target; undone in
    ``predict``), so plain SGD works whatever their scale; scale ``X`` yourself, e.g.
    ``make_pipeline(StandardScaler(), DNNRegressor())``. ``y`` may be (n_samples,) or
    (n_samples, n_targets). Parameters as ``DNNClassifier`` (without ``n_classes``).

        >>> reg = DNNRegressor(hidden_units=(64, 32), epochs=50, random_state=0)
        >>> reg.fit(X_train, y_train).score(X_test, y_test)           # doctest: +SKIP
    """

    _task = "regression"

    def __init__(self, hidden_units: Sequence[int] = (300, 100), activation: str = "relu",
                 optimizer: str = "sgd", learning_rate: float = 0.01, batch_size: int = 50, epochs: int = 10,
                 dropout: float = 0.0, batch_norm: bool = False, early_stopping: int | EarlyStopping | None = None,
                 validation_fraction: float = 0.1, random_state: int | np.random.RandomState | None = None,
                 device: str | None = None, verbose: bool = False) -> None:
        self.hidden_units = hidden_units
        self.activation = activation
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.epochs = epochs
        self.dropout = dropout
        self.batch_norm = batch_norm
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.random_state = random_state
        self.device = device
        self.verbose = verbose

    def fit(self, X: Any, y: Any) -> DNNRegressor:
        """Train a new network on ``X`` (n_samples, n_features) and targets ``y``."""
        X, y = validate_data(self, X, y, dtype=np.float64, multi_output=True, y_numeric=True)
        y = np.asarray(y, dtype=np.float64)
        self._y_ndim = y.ndim
        targets = y.reshape(len(y), -1)  # (N, k)
        self.y_mean_ = targets.mean(axis=0)
        scale = targets.std(axis=0)
        self.y_scale_ = np.where(scale > 0, scale, 1.0)
        standardized = (targets - self.y_mean_) / self.y_scale_
        y_tensor = torch.from_numpy(standardized.astype(np.float32))
        self._fit_network(X, y_tensor[:, 0] if targets.shape[1] == 1 else y_tensor, targets.shape[1], None)
        return self

    def predict(self, X: Any) -> np.ndarray:
        """Predicted targets: (n_samples,) if ``y`` was 1-D, else (n_samples, n_targets)."""
        out = self._outputs(X) * self.y_scale_ + self.y_mean_  # (N, k)
        return out[:, 0] if self._y_ndim == 1 else out

    def __sklearn_tags__(self):  # noqa: ANN204
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags
