"""Transferability scores against independent references, and ranking through the catalog and the cache."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from graftnet.cache import FeatureCache
from graftnet.catalog import Catalog
from graftnet.data import digits, from_arrays
from graftnet.errors import ConfigError, DataError, ShapeError
from graftnet.io.checkpoint import save_model
from graftnet.network import Network
from graftnet.rank import SCORES, hscore, ledoit_wolf_covariance, leep, logme, rank, reuse_depths
from graftnet.train import fit


# ---------------------------------------------------------------- LogME
def _direct_evidence(features: np.ndarray, y: np.ndarray, alpha: float, beta: float) -> float:
    """log p(y | F, alpha, beta) / n from the marginal y ~ N(0, F F^T / alpha + I / beta), no SVD."""
    n = len(y)
    covariance = features @ features.T / alpha + np.eye(n) / beta
    return float(multivariate_normal(np.zeros(n), covariance).logpdf(y)) / n


@pytest.mark.parametrize(("n", "d"), [(40, 6), (15, 30)])  # more examples than dimensions, and fewer
def test_logme_is_the_maximised_evidence_of_bayesian_linear_regression(n, d):
    rng = np.random.default_rng(n)
    labels = rng.integers(0, 3, n)
    features = rng.normal(size=(n, d)) + 0.8 * labels[:, None]  # some signal: the optimum is inside, not at alpha=inf
    score, parameters = logme(features, labels, return_parameters=True)
    onehot = (labels[:, None] == np.arange(3)).astype(float)
    direct = [_direct_evidence(features, onehot[:, k], a, b) for k, (a, b) in enumerate(parameters)]
    assert score == pytest.approx(np.mean(direct), rel=1e-7)
    interior = [k for k, (alpha, _) in enumerate(parameters) if alpha < 1e11]
    assert interior  # the others have their maximum at alpha -> infinity (no weights), where the search stops
    for k, (alpha, beta) in enumerate(parameters):  # a maximum: moving either precision lowers the evidence
        for a, b in ((alpha * 1.3, beta), (alpha / 1.3, beta), (alpha, beta * 1.3), (alpha, beta / 1.3)):
            moved = _direct_evidence(features, onehot[:, k], a, b)
            assert moved < direct[k] if k in interior else moved < direct[k] + 1e-9


def test_logme_prefers_features_that_predict_the_labels():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    informative = np.c_[labels + 0.3 * rng.normal(size=200), rng.normal(size=(200, 4))]
    noise = rng.normal(size=(200, 5))
    assert logme(informative, labels) > logme(noise, labels)
    regression = logme(informative, labels.astype(float), regression=True)
    assert regression == pytest.approx(logme(informative, labels.astype(float)[:, None], regression=True))


# ---------------------------------------------------------------- LEEP
def _leep_by_loops(theta: np.ndarray, y: np.ndarray) -> float:
    n, z_count = theta.shape
    labels = sorted(set(y.tolist()))
    joint = {(z, c): sum(theta[i, z] for i in range(n) if y[i] == c) / n for z in range(z_count) for c in labels}
    marginal = {z: sum(joint[(z, c)] for c in labels) for z in range(z_count)}
    total = 0.0
    for i in range(n):
        total += math.log(sum(joint[(z, y[i])] / marginal[z] * theta[i, z] for z in range(z_count)))
    return total / n


def test_leep_matches_its_definition_and_its_bounds():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(30, 4))
    theta = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    y = rng.integers(0, 3, 30)
    assert leep(theta, y) == pytest.approx(_leep_by_loops(theta, y), rel=1e-12)
    assert leep(theta, y) <= 0
    # source classes that determine the target labels: log-likelihood 0
    assert leep(np.eye(4)[[0, 1, 2, 3, 0, 1]], [2, 0, 1, 1, 2, 0]) == pytest.approx(0.0, abs=1e-12)
    # a source model that says the same for every input: minus the entropy of the labels
    y = np.array([0, 0, 0, 1, 1, 2])
    counts = np.bincount(y) / len(y)
    assert leep(np.full((6, 3), 1 / 3), y) == pytest.approx(float(np.sum(counts * np.log(counts))), rel=1e-12)
    with pytest.raises(DataError, match="class probabilities"):
        leep(logits, rng.integers(0, 3, 30))


# ---------------------------------------------------------------- H-score
def _hscore_by_definition(features: np.ndarray, y: np.ndarray) -> float:
    f = features - features.mean(0)
    cov_f = np.cov(f, rowvar=False, bias=True)
    g = np.zeros_like(f)
    for c in np.unique(y):
        g[y == c] = f[y == c].mean(0)
    cov_g = np.cov(g, rowvar=False, bias=True)
    return float(np.trace(np.linalg.pinv(cov_f) @ cov_g))


def test_hscore_matches_its_definition_and_known_values():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 4, 300)
    features = rng.normal(size=(300, 5)) + y[:, None] * np.array([1.0, 0.5, 0, 0, 0])
    plain = hscore(features, y, shrinkage=False)
    assert plain == pytest.approx(_hscore_by_definition(features, y), rel=1e-8)
    mixing = rng.normal(size=(5, 5))  # invertible: the H-score does not depend on the basis
    assert hscore(features @ mixing, y, shrinkage=False) == pytest.approx(plain, rel=1e-6)
    # features that are a function of the class: H = classes - 1, the largest value
    assert hscore(np.eye(4)[y] * 3.0 + 1.0, y, shrinkage=False) == pytest.approx(3.0, rel=1e-9)
    # with many more examples than dimensions the shrinkage is tiny and both forms agree
    y = rng.integers(0, 3, 20000)
    many = rng.normal(size=(20000, 3)) + y[:, None]
    assert hscore(many, y) == pytest.approx(hscore(many, y, shrinkage=False), rel=2e-3)


def test_ledoit_wolf_covariance_matches_scikit_learn():
    from sklearn.covariance import ledoit_wolf

    rng = np.random.default_rng(4)
    for n, d in ((50, 8), (20, 40)):
        x = rng.normal(size=(n, d)) @ rng.normal(size=(d, d))
        x -= x.mean(0)
        np.testing.assert_allclose(ledoit_wolf_covariance(x), ledoit_wolf(x, assume_centered=True)[0], rtol=1e-10)


def test_hscore_with_fewer_examples_than_dimensions_stays_finite_and_ordered():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 40)
    informative = rng.normal(size=(40, 300)) + 2.0 * y[:, None]
    noise = rng.normal(size=(40, 300))
    assert np.isfinite(hscore(informative, y)) and hscore(informative, y) > hscore(noise, y)


def test_scores_refuse_labels_of_one_class_or_the_wrong_length():
    with pytest.raises(DataError, match="at least 2 classes"):
        logme(np.ones((5, 2)), [1, 1, 1, 1, 1])
    with pytest.raises(ShapeError, match=r"labels must be \(N,\) class indices with N = 5"):
        hscore(np.ones((5, 2)), [0, 1])


# ---------------------------------------------------------------- ranking
@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    """Two trained digit bases (8x8 inputs) and one for other inputs."""
    data = digits()
    folder = tmp_path_factory.mktemp("bases")
    paths = []
    for name, hidden, classes in (("digits-mlp", [32, 16], None), ("digits-0-4", [24, 24, 12], list("01234"))):
        part = data.only_classes(classes) if classes else data
        torch.manual_seed(0)
        net = Network.mlp(part.input_shape, hidden, part.n_outputs, output_activation="softmax", name=name)
        fit(net, part, epochs=3, batch_size=64, optimizer="adam", verbose=False, seed=0, cache=False)
        save_model(net, folder / name, metadata={"classes": part.classes, "data_name": name, "task": part.task})
        paths.append(folder / name)
    torch.manual_seed(0)
    save_model(Network.mlp(10, [4], 2, name="tabular"), folder / "tabular", metadata={"classes": ["a", "b"]})
    return paths, folder / "tabular"


@pytest.fixture()
def task():
    data = digits().only_classes(list("56789"))
    return data


def test_rank_scores_every_model_at_every_depth_from_cached_features(bases, task, tmp_path):
    paths, tabular = bases
    catalog = Catalog(tmp_path / "catalog.sqlite")
    for path in [*paths, tabular]:
        catalog.add(path)
    cache = FeatureCache()
    result = rank(task, catalog=catalog, cache=cache, out=tmp_path / "rank")
    assert {(r["name"], r["depth"]) for r in result.rows} == {
        ("digits-mlp", 1), ("digits-mlp", 2), ("digits-0-4", 1), ("digits-0-4", 2), ("digits-0-4", 3)}
    assert [r["rank"] for r in result.rows] == [1, 2, 3, 4, 5]
    assert [r["logme"] for r in result.rows] == sorted((r["logme"] for r in result.rows), reverse=True)
    # each row's scores are the scores of that prefix's features on the task's training split
    model = catalog.load("digits-0-4")
    labels = task.train.y.numpy()
    for row in (r for r in result.rows if r["name"] == "digits-0-4"):
        prefix = model.split(row["layer"])[0].eval()
        with torch.no_grad():
            features = prefix(task.train.x).numpy()
        assert row["dim"] == features.shape[1]
        assert row["logme"] == pytest.approx(logme(features, labels), rel=1e-5)
        assert row["hscore"] == pytest.approx(hscore(features, labels), rel=1e-4)
    with torch.no_grad():
        theta = model.eval()(task.train.x).numpy()
    assert [r["leep"] for r in result.rows if r["name"] == "digits-0-4"] == [pytest.approx(leep(theta, labels))] * 3
    # computed once: one build per prefix (each depth and each whole model), none on a second ranking
    assert cache.stats()["misses"] == 5 + 2 and cache.stats()["hits"] == 0
    again = rank(task, catalog=catalog, cache=cache)
    assert cache.stats()["misses"] == 7 and cache.stats()["hits"] == 7
    assert [r["logme"] for r in again.rows] == [r["logme"] for r in result.rows]
    # the table and the plot, side by side
    names = sorted(p.name for p in (tmp_path / "rank").iterdir())
    assert names == ["rank.csv", "rank.json", "rank.md", "rank.png"]
    assert (tmp_path / "rank" / "rank.png").read_bytes()[:4] == b"\x89PNG"
    table = (tmp_path / "rank" / "rank.md").read_text()
    assert f"| 1 | {result.rows[0]['model']} | {result.rows[0]['depth']}/" in table
    assert "digits-mlp v1" in result.table() and "ranked by logme" in result.table()


def test_rank_skips_a_moved_model_and_says_so(bases, task, tmp_path):
    paths, _ = bases
    catalog = Catalog(tmp_path / "catalog.sqlite")
    copy = tmp_path / "copy"
    shutil.copytree(paths[0], copy)
    catalog.add(copy, name="copied")
    catalog.add(paths[1])
    shutil.rmtree(copy)
    result = rank(task, catalog=catalog, scores=("logme",))
    assert {r["name"] for r in result.rows} == {"digits-0-4"}
    assert len(result.warnings) == 1 and result.warnings[0].startswith("skipped copied:v1: its folder")


def test_rank_with_no_model_for_the_task_names_what_there_is(bases, tmp_path):
    _, tabular = bases
    catalog = Catalog(tmp_path / "catalog.sqlite")
    catalog.add(tabular)
    images = from_arrays(torch.rand(30, 1, 8, 8), torch.arange(30) % 2, classes=["a", "b"])
    with pytest.raises(ShapeError, match=r"no catalogued model takes inputs of shape \(1, 8, 8\).* holds tabular \(10,\)"):
        rank(images, catalog=catalog)
    with pytest.raises(ShapeError, match=r"tabular takes \(10,\)"):
        rank(images, [tabular])
    with pytest.raises(ConfigError, match="unknown score 'logmee'; use some of logme, leep, hscore. Did you mean"):
        rank(images, [tabular], scores=("logmee",))
    regression = from_arrays(torch.rand(30, 10), torch.rand(30))
    with pytest.raises(ConfigError, match="regression task"):
        rank(regression, [tabular])


def test_rank_on_drawn_examples_uses_the_studys_draw(bases, task):
    from graftnet.study import draw

    paths, _ = bases
    result = rank(task, paths, train_size=100, sampling="balanced", seed=3, scores=SCORES)
    assert result.examples == 100
    assert result.task["train_fingerprint"] == draw(task, 100, 3, sampling="balanced").train.fingerprint()


def test_reuse_depths_are_the_studys_hidden_blocks():
    net = Network.mlp((1, 8, 8), [5, 4, 3], 2)
    assert reuse_depths(net) == [(1, "hidden1"), (2, "hidden2"), (3, "hidden3")]
