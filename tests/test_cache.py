"""The frozen-prefix feature cache: where it cuts, keys, hits, eviction, disk, failures, exactness."""

from __future__ import annotations

import copy
import errno

import numpy as np
import pytest
import torch

from graftnet import cache as cache_mod
from graftnet.augment import Augment
from graftnet.cache import (CacheUnavailable, CacheWarning, FeatureCache, cache_cut, default_cache,
                            prefix_fingerprint)
from graftnet.data import digits
from graftnet.errors import ConfigError
from graftnet.layers import (Activation, AvgPool, BatchNorm, Conv2d, Dense, Dropout, Flatten, GlobalAvgPool,
                             MaxPool, Rescaling)
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


def _convnet(seed: int = 0, head=None) -> Network:
    """(1, 8, 8) digits -> conv1 (4, 6, 6) -> act -> pool1 (4, 3, 3) -> flatten (36) -> head."""
    torch.manual_seed(seed)
    head = head if head is not None else [Dense(10, name="outputs")]
    return Network([Rescaling(2.0, -1.0, name="rescale"), Conv2d(4, 3, name="conv1"), Activation("gelu", name="act"),
                    MaxPool(2, name="pool1"), Flatten(name="flatten"), *head], input_shape=(1, 8, 8), name="cnn")


def test_cache_cut_runs_on_through_pooling_and_flatten():
    assert cache_cut(Network.mlp((1, 28, 28), [30, 10], 10).freeze("hidden1")) == 2  # a Dense follows: no change
    net = _convnet().freeze("conv1")
    assert net.layer_names[cache_cut(net) - 1] == "flatten"  # the (36,) vector is cached, not conv1's (4, 6, 6)
    # the docstring's example
    doc = Network([Conv2d(8, 3, name="conv1"), MaxPool(2, name="pool1"), Flatten(name="flatten"),
                   Dense(10, name="out")], (1, 28, 28)).freeze("conv1")
    assert cache_cut(doc) == 3
    gap = Network([Conv2d(4, 3, name="conv1"), AvgPool(2, name="pool1"), Activation("rrelu", name="act"),
                   GlobalAvgPool(name="gap"), Dense(2, name="out")], (1, 8, 8)).freeze("conv1")
    assert cache_cut(gap) == 2  # through the pool; rrelu is random while training: it stays above the cut
    assert cache_cut(gap.freeze("act")) == 4  # a frozen rrelu runs in inference mode (fixed slope); then gap
    dropped = _convnet(head=[Dropout(0.5, name="drop"), Dense(10, name="outputs")]).freeze("conv1")
    assert dropped.layer_names[cache_cut(dropped) - 1] == "flatten"  # stops at the (random) dropout
    assert cache_cut(_convnet().freeze("conv1|outputs")) == 0  # nothing with weights would train above the cut
    headless = _convnet(head=[]).freeze("conv1")
    assert cache_cut(headless) == 0


def test_fit_on_a_conv_graft_caches_the_flattened_vector(small):
    data = small.head(train=200, valid=50)
    cache = FeatureCache()
    model = _convnet().freeze("conv1")
    start = copy.deepcopy(model)
    row = _fit(model, data, cache).epochs[0]
    assert row["cache_cut"] == "flatten" and row["cache_hits"] == 0
    assert cache.stats()["ram_bytes"] == (200 + 50) * 36 * 4  # (N, 36), not (N, 4, 6, 6)
    plain = copy.deepcopy(start)
    _fit(plain, data, False)
    torch.testing.assert_close(model.layer("outputs").weight, plain.layer("outputs").weight, rtol=0, atol=1e-5)
    assert torch.equal(model.layer("conv1").weight, start.layer("conv1").weight)


# ----------------------------------------------------------------- fit uses it
def test_second_fit_hits_and_unfreezing_moves_the_cut_below_the_entry(small):
    cache = FeatureCache()
    model = _model(small).freeze("hidden[12]")
    first = _fit(model, small, cache).epochs[0]
    assert first["cache_cut"] == "hidden2" and first["cache_hits"] == 0 and first["cache_build_seconds"] > 0
    assert cache.stats()["misses"] == 2 and cache.stats()["entries"] == 2  # train and valid
    assert cache.stats()["ram_bytes"] == (1197 + 300) * 16 * 4

    second = _fit(model, small, cache).epochs[0]
    assert second["cache_hits"] == 2 and second["cache_build_seconds"] == 0
    assert cache.stats()["hits"] == 2

    model.unfreeze("hidden2")  # the hidden2 features are not used again: the cut moves below hidden2
    third = _fit(model, small, cache).epochs[0]
    assert third["cache_cut"] == "hidden1" and third["cache_hits"] == 0 and cache.stats()["misses"] == 4
    assert cache.stats()["entries"] == 4 and cache.stats()["evictions"] == 0  # kept: eviction is about room only

    model.freeze("hidden2")  # hidden2 trained in the third fit: its old features must not come back
    lower, _ = model.split("hidden2")
    fourth = _fit(model, small, cache).epochs[0]
    assert fourth["cache_cut"] == "hidden2" and fourth["cache_hits"] == 0 and cache.stats()["misses"] == 6
    lower.eval()
    torch.testing.assert_close(cache.features(lower, small.train, device=CPU), lower(small.train.x))


def test_a_twin_with_the_same_base_weights_hits_after_the_first_is_unfrozen(small):
    """A study's variants of one seed graft the same base: unfreezing one must not cost the next its hit."""
    cache = FeatureCache()
    base = _model(small).freeze("hidden[12]")
    first, second = copy.deepcopy(base), copy.deepcopy(base)
    _fit(first, small, cache)
    first.unfreeze("hidden[12]")
    _fit(first, small, cache)  # fine-tunes everything: no cut
    row = _fit(second, small, cache).epochs[0]
    assert row["cache_cut"] == "hidden2" and row["cache_hits"] == 2
    assert cache.stats()["invalidations"] == 0


def test_ram_entries_are_evicted_least_recently_used_first(small):
    lowers = []
    for seed in range(3):
        lower, _ = _model(small, seed=seed).freeze("hidden1").split("hidden1")
        lowers.append(lower)
    one = 300 * 16 * 4  # (300, 16) float32
    cache = FeatureCache(memory_budget=2 * one)
    cache.features(lowers[0], small.valid, device=CPU)
    cache.features(lowers[1], small.valid, device=CPU)
    cache.features(lowers[0], small.valid, device=CPU)  # a hit: lowers[1] is now the least recently used
    cache.features(lowers[2], small.valid, device=CPU)
    stats = cache.stats()
    assert (stats["entries"], stats["ram_bytes"], stats["evictions"], stats["hits"]) == (2, 2 * one, 1, 1)
    cache.features(lowers[0], small.valid, device=CPU)
    assert cache.stats()["hits"] == 2  # kept
    cache.features(lowers[1], small.valid, device=CPU)
    assert cache.stats()["misses"] == 4  # evicted, so built again (and lowers[2] makes room for it)
    assert cache.stats()["ram_bytes"] == 2 * one


# ----------------------------------------------------------------- keys
def _fresh_fingerprint(prefix: Network) -> str:
    cache_mod._DIGESTS.clear()
    return prefix_fingerprint(prefix)


def test_remembered_key_changes_with_every_kind_of_weight_update(small):
    model = _model(small).freeze("hidden1")
    lower, _ = model.split("hidden1")
    layer = model.layer("hidden1")
    seen = [prefix_fingerprint(lower)]

    def check_changed():
        key = prefix_fingerprint(lower)
        assert key not in seen and key == _fresh_fingerprint(lower)
        seen.append(key)

    assert prefix_fingerprint(lower) == seen[0]
    with torch.no_grad():
        layer.bias.add_(1e-3)  # in place
    check_changed()
    other = _model(small, seed=5)
    lower.load_state_dict({k: v for k, v in other.state_dict().items() if k.startswith("hidden1.")})
    check_changed()
    optimizer = torch.optim.SGD([layer.weight], lr=0.1)
    layer.weight.grad = torch.ones_like(layer.weight)
    optimizer.step()
    check_changed()
    layer.weight.data = layer.weight.detach() * 2  # new storage
    check_changed()
    layer.weight.data = layer.weight.detach() / 2  # new storage, the values of one key back
    assert prefix_fingerprint(lower) == seen[-2] == _fresh_fingerprint(lower)


def test_a_reused_address_with_other_values_is_not_taken_for_the_old_tensor(small):
    """Storage freed, new storage at the same address, version counter unchanged: still a new digest."""
    model = _model(small).freeze("hidden1")
    lower, _ = model.split("hidden1")
    bias = model.layer("hidden1").bias
    buffer = np.zeros(tuple(bias.shape), dtype=np.float32)
    bias.data = torch.from_numpy(buffer)  # storage A over buffer's memory
    before = prefix_fingerprint(lower)
    version, address = bias._version, bias.data_ptr()
    bias.data = torch.zeros_like(bias)  # A is freed
    buffer += 1.0
    bias.data = torch.from_numpy(buffer)  # storage C at A's address
    assert (bias._version, bias.data_ptr()) == (version, address)
    assert prefix_fingerprint(lower) != before and prefix_fingerprint(lower) == _fresh_fingerprint(lower)


def test_an_unchanged_prefix_is_not_hashed_again(small, monkeypatch):
    calls = []
    real = cache_mod._tensor_digest
    monkeypatch.setattr(cache_mod, "_tensor_digest", lambda t: calls.append(tuple(t.shape)) or real(t))
    model = _model(small).freeze("hidden[12]")
    lower, _ = model.split("hidden2")
    cache = FeatureCache()
    cache.features(lower, small.train, device=CPU)
    assert len(calls) == 4  # hidden1 and hidden2, weight and bias
    cache.features(lower, small.train, device=CPU)
    cache.features(lower, small.valid, device=CPU)
    assert len(calls) == 4 and cache.stats()["hits"] == 1
    with torch.no_grad():
        model.layer("hidden2").bias.add_(1.0)
    cache.features(lower, small.train, device=CPU)
    assert calls[4:] == [(16,)] and cache.stats()["misses"] == 3  # only the changed tensor is read again


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


# ----------------------------------------------------------------- building
def test_build_batches_follow_the_prefix_inference_batch_size(small, monkeypatch):
    model = _model(small).freeze("hidden[12]")
    lower, _ = model.split("hidden2")
    sizes = []
    lower.layer("hidden1").register_forward_pre_hook(lambda m, args: sizes.append(len(args[0])))
    monkeypatch.setattr(Network, "inference_batch_size", lambda self, start=0: 128)
    features = FeatureCache().features(lower, small.valid, device=CPU)
    assert sizes == [128, 128, 44]  # 300 examples
    lower.eval()
    torch.testing.assert_close(features, lower(small.valid.x))


def test_conv_prefix_runs_channels_last_on_the_cpu_and_matches_the_plain_forward(small):
    data = small.head(train=200, valid=50)
    model = _convnet().freeze("conv1")
    lower, _ = model.split("flatten")
    conv = model.layer("conv1")
    layouts = []
    model.layer("pool1").register_forward_pre_hook(  # its input has 4 channels: the layouts differ
        lambda m, args: layouts.append(args[0].is_contiguous(memory_format=torch.channels_last)))
    stamp = (conv.weight.data_ptr(), conv.weight._version)
    fast = FeatureCache().features(lower, data.train, device=CPU)
    assert layouts == [True] and (conv.weight.data_ptr(), conv.weight._version) == stamp  # modules untouched
    plain = FeatureCache(channels_last=False)
    exact = plain.features(lower, data.train, device=CPU)
    assert layouts == [True, False]
    lower.eval()
    reference = lower(data.train.x)  # (200, 36)
    assert torch.equal(exact, reference)
    torch.testing.assert_close(fast, reference, rtol=1e-5, atol=1e-5)
    assert plain.key_for(lower, data.train, device=CPU) != FeatureCache().key_for(lower, data.train, device=CPU)
    with pytest.raises(ConfigError, match="channels_last must be True, False or None"):
        FeatureCache(channels_last="yes")


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
