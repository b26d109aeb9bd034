"""How the feature build computes: float32 convolutions with the ReLU fused in (the same features as
the plain forward), and the opt-in bfloat16 build (close to float32, keyed apart, refused where the
CPU lacks it)."""

from __future__ import annotations

import pytest
import torch

from graftnet import cache as cache_mod
from graftnet.cache import FeatureCache, bf16_unsupported, cache_cut
from graftnet.data import digits
from graftnet.errors import ConfigError
from graftnet.layers import Conv2d, Dense, Flatten, MaxPool, Rescaling
from graftnet.network import Network
from graftnet.train import evaluate, fit

CPU = torch.device("cpu")
needs_bf16 = pytest.mark.skipif(bf16_unsupported("cpu") is not None,
                                reason=f"this CPU cannot run bfloat16 natively: {bf16_unsupported('cpu')}")


@pytest.fixture(scope="module")
def small():
    return digits()  # scikit-learn's 8x8 handwritten digits, (1, 8, 8)


def _convnet(seed: int = 0) -> Network:
    """(1, 8, 8) -> conv1 (16, 8, 8) -> conv2 (16, 8, 8) -> pool (16, 4, 4) -> flatten (256) -> out, frozen
    up to conv2 (the cache holds the flattened vector)."""
    torch.manual_seed(seed)
    layers = [Rescaling(2.0, -1.0, name="rescale"), Conv2d(16, 3, padding="same", activation="relu", name="conv1"),
              Conv2d(16, 3, padding="same", activation="relu", name="conv2"), MaxPool(2, name="pool"),
              Flatten(name="flatten"), Dense(10, name="outputs")]
    return Network(layers, input_shape=(1, 8, 8), name="cnn").freeze("conv.*")


def _prefix(model: Network) -> Network:
    return model.split(cache_cut(model) - 1)[0]


# ----------------------------------------------------------------- float32: convolution + ReLU fused
def test_float32_build_fuses_conv_and_relu_and_gives_the_plain_forwards_features(small, monkeypatch):
    model = _convnet()
    prefix = _prefix(model)
    relus = []
    for name in ("conv1", "conv2"):
        model.layer(name).activation.register_forward_pre_hook(lambda m, args: relus.append(m))
    fused = FeatureCache().features(prefix, small.train, device=CPU)  # (N, 256), channels-last on the CPU
    assert relus == []  # the ReLUs ran inside the convolutions
    assert not any("forward" in m.__dict__ for m in prefix.modules())  # the modules are as they were
    monkeypatch.setattr(cache_mod, "_FUSE_CONV_RELU", False)
    apart = FeatureCache().features(prefix, small.train, device=CPU)
    assert len(relus) == 2 * -(-len(small.train) // prefix.inference_batch_size())  # each conv's, each batch
    assert torch.equal(fused, apart)  # max(0, x) applied in the kernel or after it: the same floats
    prefix.eval()
    torch.testing.assert_close(fused, prefix(small.train.x), rtol=1e-5, atol=1e-5)  # NCHW, unfused


def test_fused_strided_and_dilated_convolutions_give_the_unfused_features(small, monkeypatch):
    torch.manual_seed(0)
    layers = [Conv2d(8, 3, stride=2, padding=1, activation="relu", name="conv1"),  # (8, 4, 4)
              Conv2d(8, 3, dilation=2, padding=2, activation="relu", bias=False, name="conv2"),  # (8, 4, 4)
              Flatten(name="flatten"), Dense(10, name="outputs")]
    model = Network(layers, input_shape=(1, 8, 8), name="strided").freeze("conv.*")
    prefix = _prefix(model)
    relus = []
    for name in ("conv1", "conv2"):
        model.layer(name).activation.register_forward_pre_hook(lambda m, args: relus.append(m))
    fused = FeatureCache().features(prefix, small.valid, device=CPU)
    assert relus == []
    monkeypatch.setattr(cache_mod, "_FUSE_CONV_RELU", False)
    assert torch.equal(fused, FeatureCache().features(prefix, small.valid, device=CPU))
    assert len(relus) == 2


def test_a_failed_build_puts_the_convolutions_back(small):
    model = _convnet()
    prefix = _prefix(model)
    model.layer("pool").register_forward_pre_hook(lambda m, args: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError, match="boom"):
        FeatureCache().features(prefix, small.train, device=CPU)
    assert not any("forward" in m.__dict__ for m in prefix.modules())


# ----------------------------------------------------------------- bfloat16 (opt-in)
@needs_bf16
def test_bf16_features_are_float32_within_bfloat16_rounding_of_the_float32_build(small):
    prefix = _prefix(_convnet())
    exact = FeatureCache().features(prefix, small.train, device=CPU)  # (N, 256)
    rounded = FeatureCache(precision="bf16").features(prefix, small.train, device=CPU)
    assert rounded.dtype == torch.float32 and rounded.shape == exact.shape
    error = (rounded - exact).abs()
    assert error.max() > 0  # it did run in bfloat16: the float32 build gives these features bit for bit
    # bfloat16 keeps 8 bits of mantissa (relative rounding 2**-9); two convolutions of 9 and 144 taps
    assert error.max() / exact.abs().max() < 2e-2
    assert error.sum() / exact.abs().sum() < 1e-2


@needs_bf16
def test_bf16_and_fp32_builds_are_keyed_apart_on_disk_and_in_ram(small, tmp_path):
    prefix = _prefix(_convnet())
    fp32, bf16 = FeatureCache(memory_budget=0, directory=tmp_path), FeatureCache(memory_budget=0, directory=tmp_path,
                                                                                   precision="bf16")
    assert fp32.key_for(prefix, small.train, device=CPU) != bf16.key_for(prefix, small.train, device=CPU)
    exact = fp32.features(prefix, small.train, device=CPU).clone()
    rounded = bf16.features(prefix, small.train, device=CPU).clone()
    assert bf16.stats()["misses"] == 1 and len(list(tmp_path.glob("*.npy"))) == 2  # no hit on the float32 file
    # a later process reading the same folder gets each precision's own file back
    again_bf16 = FeatureCache(memory_budget=0, directory=tmp_path, precision="bf16")
    assert torch.equal(again_bf16.features(prefix, small.train, device=CPU), rounded)
    assert again_bf16.stats()["hits"] == 1
    again_fp32 = FeatureCache(memory_budget=0, directory=tmp_path)
    assert torch.equal(again_fp32.features(prefix, small.train, device=CPU), exact)
    assert not torch.equal(exact, rounded)


@needs_bf16
def test_fit_trains_the_head_on_bf16_features_to_the_float32_accuracy(small):
    results = {}
    for precision in ("fp32", "bf16"):
        model = _convnet()
        cache = FeatureCache(precision=precision)
        history = fit(model, small, epochs=3, batch_size=32, optimizer="adam", lr=0.01, seed=0, verbose=False,
                      cache=cache)
        assert history.epochs[0]["cache_cut"] == "flatten" and cache.stats()["misses"] == 2  # train, valid
        results[precision] = evaluate(model, small)["accuracy"]  # the whole model, in float32
    assert results["fp32"] > 0.5  # the head learned (10 classes: chance is 0.1)
    assert abs(results["bf16"] - results["fp32"]) <= 0.03  # 300 test digits: at most 9 change


def test_bf16_is_refused_on_a_cpu_without_amx_or_avx512_bf16(small, monkeypatch):
    capabilities = {**torch.cpu.get_capabilities(), "amx_bf16": False, "avx512_bf16": False,
                    "avx512_f": True, "avx2": True}
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: capabilities)  # a CPU like Ice Lake's
    assert "amx_bf16 or avx512_bf16" in bf16_unsupported("cpu")
    with pytest.raises(ConfigError, match=r"precision='bf16'.*needs a CPU with AMX-BF16 or AVX-512-BF16 "
                                          r"\(flag amx_bf16 or avx512_bf16\).*has neither: its vector flags are "
                                          r"avx2, avx512_f.*Use precision='fp32'"):
        FeatureCache(precision="bf16").features(_prefix(_convnet()), small.train, device=CPU)


def test_precision_must_be_fp32_or_bf16():
    with pytest.raises(ConfigError, match="precision must be one of fp32, bf16, got 'fp16'"):
        FeatureCache(precision="fp16")
    assert bf16_unsupported("meta") == "a bfloat16 feature build runs on cpu or cuda, not on meta. Use precision='fp32'"
