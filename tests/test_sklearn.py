"""DNNClassifier / DNNRegressor: scikit-learn's own estimator checks, pipelines, grid search."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits, make_regression
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from graftnet.io.checkpoint import load_model, save_model
from graftnet.sklearn import DNNClassifier, DNNRegressor

# Checks scikit-learn may expect to fail, per estimator, each with its reason. None is needed:
# inference runs in float64 (so predictions do not depend on the batch size), labels go
# through np.unique (strings work), and a fixed random_state gives identical fits.
EXPECTED_FAILED_CHECKS: dict[str, dict[str, str]] = {"DNNClassifier": {}, "DNNRegressor": {}}

# Small and quick, yet able to pass the accuracy thresholds of the checks (blobs, > 0.83).
CHECKED = [
    DNNClassifier(hidden_units=(16,), epochs=20, learning_rate=0.1, batch_size=32, random_state=0),
    DNNRegressor(hidden_units=(16,), epochs=20, learning_rate=0.05, batch_size=32, random_state=0),
]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These networks are tiny: one thread is faster than two that wait for each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_no_estimator_check_is_skipped_for_a_missing_dependency():
    """check_estimator skips its DataFrame checks without pandas and its array-API checks unless
    SciPy was imported with SCIPY_ARRAY_API=1 (conftest sets it); the README claims them all."""
    from scipy._lib import _array_api

    import pandas  # noqa: F401 - in the dev extra: an ImportError here, not a skip

    assert str(_array_api.SCIPY_ARRAY_API) == "1", "SciPy was imported before SCIPY_ARRAY_API was set"


@parametrize_with_checks(CHECKED, expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS[type(est).__name__])
def test_sklearn_compatible(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(return_X_y=True)  # 8x8 images already flattened to (1797, 64)
    return train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)


def test_pipeline_on_digit_images(digits):
    x_train, x_test, y_train, y_test = digits
    model = make_pipeline(StandardScaler(), DNNClassifier(hidden_units=(64,), epochs=15, learning_rate=0.1,
                                                             random_state=0))
    model.fit(x_train, y_train)
    assert model.score(x_test, y_test) > 0.9
    clf = model[-1]
    assert clf.n_features_in_ == 64 and list(clf.classes_) == list(range(10))
    assert len(clf.history_) == 15 and clf.model_.layer_names == ["hidden1", "outputs"]
    proba = model.predict_proba(x_test)
    assert proba.shape == (len(x_test), 10) and np.allclose(proba.sum(1), 1.0)
    assert (clf.classes_[proba.argmax(1)] == model.predict(x_test)).all()


def test_grid_search(digits):
    x_train, _, y_train, _ = digits
    grid = GridSearchCV(make_pipeline(StandardScaler(), DNNClassifier(epochs=3, random_state=0)),
                        {"dnnclassifier__hidden_units": [(8,), (32,)], "dnnclassifier__learning_rate": [0.001, 0.1]},
                        cv=2)
    grid.fit(x_train[:600], y_train[:600])
    assert grid.best_params_ == {"dnnclassifier__hidden_units": (32,), "dnnclassifier__learning_rate": 0.1}
    assert grid.cv_results_["mean_test_score"].min() < 0.5 < grid.best_score_  # lr 0.001 barely learns in 3 epochs
    assert grid.best_estimator_[-1].model_.spec_of("hidden1").units == 32


def test_string_labels_and_reproducibility(digits):
    x_train, x_test, y_train, _ = digits
    names = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])
    first = DNNClassifier(hidden_units=(16,), epochs=2, random_state=3).fit(x_train / 16, names[y_train])
    again = DNNClassifier(hidden_units=(16,), epochs=2, random_state=3).fit(x_train / 16, names[y_train])
    other = DNNClassifier(hidden_units=(16,), epochs=2, random_state=4).fit(x_train / 16, names[y_train])
    assert list(first.classes_) == sorted(names)
    assert set(first.predict(x_test / 16)) <= set(names)
    assert np.array_equal(first.predict_proba(x_test / 16), again.predict_proba(x_test / 16))
    assert not np.allclose(first.predict_proba(x_test / 16), other.predict_proba(x_test / 16))


def test_binary_decision_function_is_a_margin():
    x, y = load_digits(n_class=2, return_X_y=True)
    clf = DNNClassifier(hidden_units=(8,), epochs=5, random_state=0).fit(x / 16, y)
    margin = clf.decision_function(x / 16)
    assert margin.shape == (len(x),)
    assert ((margin > 0) == (clf.predict(x / 16) == 1)).all()
    assert clf.score(x / 16, y) > 0.95


def test_n_classes_keeps_every_output(digits):
    x_train, x_test, y_train, _ = digits
    keep = y_train < 5
    clf = DNNClassifier(hidden_units=(8,), n_classes=10, epochs=1, random_state=0).fit(x_train[keep], y_train[keep])
    assert clf.predict_proba(x_test).shape == (len(x_test), 10) and list(clf.classes_) == list(range(10))
    with pytest.raises(ValueError, match=r"n_classes=3 but y has 10 classes"):
        DNNClassifier(n_classes=3).fit(x_train, y_train)


def test_early_stopping_holds_out_data_and_stops():
    x, y = load_digits(return_X_y=True)
    clf = DNNClassifier(hidden_units=(32,), epochs=200, learning_rate=0.5, early_stopping=2, random_state=0)
    clf.fit(x / 16, y)
    assert len(clf.history_) < 200 and "early stopping" in clf.history_.stop_reason
    assert "val_loss" in clf.history_.epochs[0]


def test_regressor_scale_free_and_multi_output():
    x, y = make_regression(n_samples=400, n_features=6, noise=1.0, random_state=0)
    y = y * 1e4 + 5e5  # unscaled targets: standardized inside, so SGD still converges
    reg = make_pipeline(StandardScaler(), DNNRegressor(hidden_units=(32,), epochs=30, random_state=0))
    reg.fit(x[:300], y[:300])
    assert reg.score(x[300:], y[300:]) > 0.9
    assert reg.predict(x[300:]).shape == (100,) and reg.predict(x[300:]).dtype == np.float64
    targets = np.stack([y, -2 * y], axis=1)
    multi = DNNRegressor(hidden_units=(32,), epochs=30, random_state=0).fit(x, targets)
    assert multi.predict(x).shape == (400, 2) and multi.score(x, targets) > 0.9


@pytest.mark.parametrize("params, message", [
    ({"hidden_units": 300}, r"hidden_units must be a sequence of positive integers such as \(300, 100\), got 300"),
    ({"hidden_units": (10, 0)}, r"hidden_units must be a sequence of positive integers"),
    ({"epochs": -1}, r"epochs must be an integer >= 0, got -1"),
    ({"learning_rate": 0}, r"learning_rate must be a number > 0"),
    ({"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
    ({"early_stopping": 0}, r"early_stopping must be None, a patience >= 1"),
])
def test_bad_parameters_are_reported_at_fit(params, message):
    clf = DNNClassifier(**params)  # no error here: scikit-learn checks parameters in fit
    with pytest.raises(ValueError, match=message):
        clf.fit(np.zeros((10, 2)), np.arange(10) % 2)


def test_unfitted_and_wrong_width():
    with pytest.raises(NotFittedError):
        DNNRegressor().predict(np.zeros((2, 3)))
    clf = DNNClassifier(hidden_units=(4,), epochs=1).fit(np.random.rand(20, 3), np.arange(20) % 2)
    with pytest.raises(ValueError, match="X has 5 features, but DNNClassifier is expecting 3 features"):
        clf.predict(np.zeros((2, 5)))


def test_fitted_network_saves_like_any_graftnet_model(digits, tmp_path):
    x_train, x_test, y_train, _ = digits
    clf = DNNClassifier(hidden_units=(16,), epochs=2, random_state=0).fit(x_train, y_train)
    save_model(clf.model_, tmp_path / "clf")
    loaded = load_model(tmp_path / "clf")
    x = torch.tensor(x_test, dtype=torch.float32)
    torch.testing.assert_close(loaded(x), clf.model_.eval()(x))
