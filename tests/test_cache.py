"""The frozen-prefix feature cache: where it cuts, hits, invalidation, disk, failures, exactness."""

from __future__ import annotations

import copy
import errno

import pytest
import torch

from graftnet import cache as cache_mod
from graftnet.augment import Augment
from graftnet.cache import CacheUnavailable, CacheWarning, FeatureCache, cache_cut, default_cache
from graftnet.data import digits
from graftnet.errors import ConfigError
from graftnet.layers import Activation, BatchNorm, Dense, Dropout
from graftnet.network import Network
from graftnet.optim import SGD
from graftnet.train import fit
from graftnet.transfer import graft

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def small():
    return digits()


def _model(data, seed: int = 0) -> Network:
    torch.manual_seed(seed)
    return Network.mlp(data.input_shape, [16, 16, 16], data.n_outputs, name="m")


def _fit(model, data, cache, **kwargs):
    return fit(model, data, epochs=1, batch_size=64, verbose=False, seed=0, cache=cache, **kwargs)


# ----------------------------------------------------------------- where to cut
def test_cache_cut_follows_the_frozen_prefix(small):
    model = _model(small)
    assert cache_cut(model) == 0  # nothing frozen
    assert cache_cut(model.freeze("hidden1")) == 2  # flatten (parameter-free) + hidden1
    assert cache_cut(model.freeze("hidden2")) == 3
    assert cache_cut(model, Augment(shift=1)) == 0  # random inputs: nothing to cache
    model.unfreeze("hidden1")
    assert cache_cut(model) == 0  # a trainable layer below the frozen one
    model.freeze(":")
    assert cache_cut(model) == 0  # everything frozen: nothing would train


def test_cache_cut_stops_at_random_or_affine_layers():
    torch.manual_seed(0)
    net = Network([Dense(8, name="d1"), Dropout(0.5, name="drop"), Dense(8, name="d2"), Dense(2, name="out")],
                  input_shape=(4,))
    assert cache_cut(net.freeze("d[12]")) == 1  # the dropout is trainable, so random: cut before it
    assert cache_cut(net.freeze("drop")) == 3  # frozen dropout is off
    bn = Network([Dense(8, name="d1"), BatchNorm(name="bn1"), Activation("rrelu", name="act"), Dense(2, name="out")],
                 input_shape=(4,))
    assert cache_cut(bn.freeze("d1|bn1", bn_affine=True)) == 1  # bn1's scale/shift train
    assert cache_cut(bn.freeze("d1|bn1")) == 2  # rrelu (random slope when training) ends the run


# ----------------------------------------------------------------- fit uses it
def test_second_fit_hits_and_unfreezing_invalidates(small):
    cache = FeatureCache()
    model = _model(small).freeze("hidden[12]")
    first = _fit(model, small, cache).epochs[0]
    assert first["cache_cut"] == "hidden2" and first["cache_hits"] == 0 and first["cache_build_seconds"] > 0
    assert cache.stats()["misses"] == 2 and cache.stats()["entries"] == 2  # train and valid
    assert cache.stats()["ram_bytes"] == (1197 + 300) * 16 * 4

    second = _fit(model, small, cache).epochs[0]
    assert second["cache_hits"] == 2 and second["cache_build_seconds"] == 0
    assert cache.stats()["hits"] == 2

    model.unfreeze("hidden2")
    assert cache.stats()["invalidations"] == 2 and cache.stats()["entries"] == 0
    third = _fit(model, small, cache).epochs[0]
    assert third["cache_cut"] == "hidden1" and third["cache_hits"] == 0


def test_changed_weights_never_hit_a_stale_entry(small):
    cache = FeatureCache()
    model = _model(small).freeze("hidden1")
    lower, _ = model.split("hidden1")
    before = cache.features(lower, small.train, device=CPU).clone()
    with torch.no_grad():
        model.layer("hidden1").bias.add_(1.0)
    after = cache.features(lower, small.train, device=CPU)
    assert cache.stats()["hits"] == 0 and cache.stats()["misses"] == 2
    assert not torch.equal(before, after)
    torch.testing.assert_close(after, lower(small.train.x))


def test_cached_features_equal_a_plain_forward(small):
    model = _model(small).freeze("hidden[12]")
    lower, _ = model.split("hidden2")
    lower.eval()
    features = FeatureCache().features(lower, small.valid, device=CPU)
    torch.testing.assert_close(features, lower(small.valid.x))


def test_memory_mapped_when_over_budget_gives_the_same_features(small, tmp_path):
    model = _model(small).freeze("hidden[12]")
    lower, _ = model.split("hidden2")
    in_ram = FeatureCache().features(lower, small.train, device=CPU)
    disk = FeatureCache(memory_budget=0, directory=tmp_path)
    mapped = disk.features(lower, small.train, device=CPU)
    assert torch.equal(in_ram, mapped)
    assert disk.stats()["disk_bytes"] == 1197 * 16 * 4 and disk.stats()["ram_bytes"] == 0
    files = list(tmp_path.iterdir())
    assert [f.suffix for f in files] == [".npy"]
    # another process with the same folder, prefix and data reuses the file
    again = FeatureCache(memory_budget=0, directory=tmp_path)
    assert torch.equal(again.features(lower, small.train, device=CPU), in_ram)
    assert again.stats()["hits"] == 1 and again.stats()["misses"] == 0


def test_fit_on_memory_mapped_features_matches_ram(small, tmp_path):
    start = _model(small).freeze("hidden[12]")
    ram, disk = copy.deepcopy(start), copy.deepcopy(start)
    _fit(ram, small, FeatureCache())
    _fit(disk, small, FeatureCache(memory_budget=0, directory=tmp_path))
    for key, value in ram.state_dict().items():
        assert torch.equal(value, disk.state_dict()[key]), key


# ----------------------------------------------------------------- failures
def test_unwritable_cache_folder_warns_and_trains_without_cache(small, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    cache = FeatureCache(memory_budget=0, directory=blocker / "features")
    model = _model(small).freeze("hidden[12]")
    lower, _ = model.split("hidden2")
    with pytest.raises(CacheUnavailable, match=r"cannot write .* of cached features to .*a-file/features"):
        cache.features(lower, small.train, device=CPU)
    with pytest.warns(CacheWarning, match="feature cache not used: cannot write"):
        history = _fit(model, small, cache)
    assert "cache_cut" not in history.epochs[0] and len(history) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]
    with pytest.raises(ConfigError, match="exists and is not a folder"):
        FeatureCache(directory=blocker)


def test_full_disk_leaves_no_partial_file(small, tmp_path, monkeypatch):
    model = _model(small).freeze("hidden[12]")
    lower, _ = model.split("hidden2")
    real_chunks = cache_mod._compute_chunks

    def chunks_then_disk_full(*args, **kwargs):
        for chunk in real_chunks(*args, **kwargs):
            yield chunk
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache_mod, "_compute_chunks", chunks_then_disk_full)
    cache = FeatureCache(memory_budget=0, directory=tmp_path)
    with pytest.raises(CacheUnavailable, match="No space left on device"):
        cache.features(lower, small.train, device=CPU)
    assert list(tmp_path.iterdir()) == [] and cache.stats()["entries"] == 0


def test_negative_budget_is_refused():
    with pytest.raises(ConfigError, match="memory_budget must be a number of bytes >= 0"):
        FeatureCache(memory_budget=-1)
    assert default_cache() is default_cache()


# ----------------------------------------------------------------- exactness (Hands-On ML 11.2.4)
def test_one_epoch_with_and_without_cache_gives_the_same_weights(fashion):
    """Base 784-300-50-50-50-50-10 ReLU; reuse hidden1-3, add hidden4(20) and outputs; freeze hidden1-2."""
    data = fashion.head(train=5000, valid=500, test=500)
    torch.manual_seed(0)
    base = Network.mlp(data.input_shape, [300, 50, 50, 50, 50], 10, name="base")
    torch.manual_seed(1)
    start = graft(base, reuse="hidden[123]", head=[Dense(20, "relu", name="hidden4"), Dense(10, name="outputs")],
                  freeze="hidden[12]")
    cached, plain = copy.deepcopy(start), copy.deepcopy(start)
    kwargs = {"epochs": 1, "batch_size": 200, "optimizer": SGD(lr=0.05), "verbose": False, "seed": 7}
    history = fit(cached, data, cache=FeatureCache(), **kwargs)
    fit(plain, data, cache=False, **kwargs)
    assert history.epochs[0]["cache_cut"] == "hidden2"
    diffs = {k: float((v - plain.state_dict()[k]).abs().max()) for k, v in cached.state_dict().items()}
    assert max(diffs.values()) < 1e-5, diffs
    moved = float((cached.layer("hidden3").weight - start.layer("hidden3").weight).detach().abs().max())
    assert moved > 1e-3  # it did train
    assert torch.equal(cached.layer("hidden1").weight, start.layer("hidden1").weight)


def test_resumed_fit_caches_the_checkpoints_prefix_not_the_fresh_one(small, tmp_path):
    """``fit(resume=True)`` on a freshly built model: the features come from the checkpoint's weights."""
    start = _model(small, seed=0).freeze("hidden1")
    straight = copy.deepcopy(start)
    fit(straight, small, epochs=2, batch_size=64, verbose=False, seed=0, cache=FeatureCache())

    def stop_after_first(row, model):
        if row["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(copy.deepcopy(start), small, epochs=2, batch_size=64, verbose=False, seed=0, cache=FeatureCache(),
            checkpoint=tmp_path / "ck", callbacks=[stop_after_first])
    fresh = _model(small, seed=1).freeze("hidden1")  # another initialisation, as a new process would build
    fit(fresh, small, epochs=2, batch_size=64, verbose=False, seed=0, cache=FeatureCache(),
        checkpoint=tmp_path / "ck", resume=True)
    for key, value in straight.state_dict().items():
        torch.testing.assert_close(fresh.state_dict()[key], value, rtol=0, atol=1e-6)
