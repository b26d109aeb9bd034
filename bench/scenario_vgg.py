"""(c) A VGG16-style convolutional base (the seed layout: 13 3x3 convolutions in 5 blocks,
max-pooling after each) at 150x150x3 with random weights, frozen, with a
Flatten-Dense(256)-Dense(1) head, on random images (only speed is measured).

Part 1, cache build throughput (images/s): graftnet's ``FeatureCache`` build (fresh
cache each pass; also with ``precision="bf16"`` where the device runs bfloat16 natively)
against plain PyTorch inference (batch 32, NCHW and channels-last) and Keras ``predict``
(``keras.applications.VGG16(weights=None, include_top=False)``).
Part 2, head epochs: graftnet ``fit`` on the whole model (frozen base, cached) against
``fit`` on the head alone over the same features, and a plain PyTorch head loop.
"""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.nn as nn

from common import Contender, FunctionContender, Row, Scenario, measure, ratio, sync
from contenders import GraftnetFit, TensorLoop
from flops import conv_flops
from keras_side import KerasPredict

SIZE = 150
BLOCKS = [(64, 2), (128, 2), (256, 3), (512, 3), (512, 3)]
HEAD_BATCH = 32


def vgg_specs() -> list[Any]:
    from graftnet.layers import Conv2d, Dense, Flatten, MaxPool

    layers: list[Any] = []
    for b, (filters, convs) in enumerate(BLOCKS, start=1):
        for i in range(1, convs + 1):
            layers.append(Conv2d(filters, 3, padding="same", activation="relu", init="he_normal",
                                 name=f"block{b}_conv{i}"))
        layers.append(MaxPool(2, name=f"block{b}_pool"))
    return layers + [Flatten(name="flatten"), Dense(256, "relu", init="he_normal", name="dense"),
                     Dense(1, name="outputs")]


def vgg_model() -> Any:
    from graftnet.network import Network

    torch.manual_seed(0)
    return Network(vgg_specs(), (3, SIZE, SIZE), name="vgg16-150").freeze("block.*")


def vgg_conv_flops() -> float:
    layers, size, c_in = [], SIZE, 3
    for filters, convs in BLOCKS:
        for _ in range(convs):
            layers.append((c_in, filters, 3, size, size))
            c_in = filters
        size //= 2
    return conv_flops(layers)


def _images(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 3, SIZE, SIZE, generator=g), (torch.rand(n, generator=g) > 0.5).float()


class CacheBuild(Contender):
    """A fresh FeatureCache computing the frozen prefix on all images (a miss every pass)."""

    def __init__(self, name: str, model: Any, split: Any, device: torch.device, precision: str = "fp32") -> None:
        self.name, self.model, self.split, self.device, self.precision = name, model, split, device, precision
        self.note = (f"FeatureCache(precision={precision!r}).features(prefix, split): fingerprint + batched "
                     f"inference")

    def setup(self) -> None:
        from graftnet.cache import cache_cut

        self.model.to(self.device)
        cut = cache_cut(self.model)
        self.prefix, _ = self.model.split(cut - 1)

    def run(self) -> float:
        from graftnet.cache import FeatureCache

        cache = FeatureCache(precision=self.precision)
        sync(self.device)
        t0 = time.perf_counter()
        out = cache.features(self.prefix, self.split, device=self.device)
        sync(self.device)
        seconds = time.perf_counter() - t0
        self.extra = {"output_shape": list(out.shape[1:]), "build_seconds": cache.stats()["build_seconds"]}
        return seconds


def _torch_inference(model: Any, x: torch.Tensor, device: torch.device, batch: int, channels_last: bool):
    def make():
        prefix = nn.Sequential(*[model.layer(n) for n in model.layer_names if n.startswith("block")]).to(device).eval()
        if channels_last:
            prefix = prefix.to(memory_format=torch.channels_last)

        def run() -> float:
            sync(device)
            t0 = time.perf_counter()
            with torch.inference_mode():
                for i in range(0, len(x), batch):
                    xb = x[i:i + batch].to(device)
                    if channels_last:
                        xb = xb.contiguous(memory_format=torch.channels_last)
                    prefix(xb)
            sync(device)
            return time.perf_counter() - t0
        return run
    return make


def scenarios(ctx: Any) -> list[Scenario]:
    from graftnet.data import Split

    n = ctx.args.vgg_images or (16 if ctx.quick else 48)
    x, y = _images(n)
    model = vgg_model()
    split = Split(x, y)
    gflop = vgg_conv_flops() / 1e9
    build = Scenario("vgg_cache_build", f"(c1) VGG16 base at {SIZE}x{SIZE}, {n} images: cache build, {ctx.device.type}",
                     unit="s per build", reference="torch inference, batch 32")
    contenders: list[Contender] = [
        FunctionContender("torch inference, batch 32", _torch_inference(model, x, ctx.device, 32, False)),
        FunctionContender("torch inference, batch 32, channels_last",
                          _torch_inference(model, x, ctx.device, 32, True)),
        CacheBuild("graftnet FeatureCache build", model, split, ctx.device),
    ]
    from graftnet.cache import bf16_unsupported

    if bf16_unsupported(ctx.device) is None:  # opt-in bfloat16 build: AMX / AVX-512-BF16 CPUs, bf16 GPUs
        contenders.append(CacheBuild("graftnet FeatureCache build, bf16", model, split, ctx.device, "bf16"))
    if ctx.device.type == "cpu":
        ctx.keras_load(f"vgg{n}", x.permute(0, 2, 3, 1).numpy())
        contenders.append(KerasPredict("keras predict, batch 32", ctx.keras, {"op": "vgg_base", "size": SIZE},
                                       f"vgg{n}", 32, why=ctx.keras_why))
    ctx.log(build.title)
    build.rows = measure(contenders, ctx.passes, log=ctx.log)
    build.figures["conv GFLOP per image"] = round(gflop, 2)
    build.figures["matmul peak GFLOP/s"] = round(ctx.peak()["gflops"], 1)
    for r in build.rows:
        if r.median:
            build.figures[f"{r.name}: images/s"] = round(n / r.median, 2)
            build.figures[f"{r.name}: GFLOP/s"] = round(n * gflop / r.median, 1)
    gn, keras = build.median("graftnet FeatureCache build"), build.median("keras predict, batch 32")
    build.target("graftnet cache build throughput / keras predict", ratio(keras, gn), 1.0, better="higher")
    if build.median("graftnet FeatureCache build, bf16"):
        build.figures["bf16 build throughput / float32 build"] = round(
            ratio(gn, build.median("graftnet FeatureCache build, bf16")) or 0, 2)

    head = _head_scenario(ctx, model, x, y, n)
    return [build, head]


def _head_scenario(ctx: Any, model: Any, x: torch.Tensor, y: torch.Tensor, n: int) -> Scenario:
    from graftnet.cache import FeatureCache, cache_cut
    from graftnet.data import Dataset, Split
    from graftnet.network import Network

    s = Scenario("vgg_head", f"(c2) VGG16 frozen base + Dense(256)-Dense(1) head, {n} images, batch {HEAD_BATCH}: "
                 f"head epochs, {ctx.device.type}", reference="torch loop, head alone")
    data = Dataset("vgg-random", Split(x, y), None, None, ["no", "yes"], "binary")
    cut = cache_cut(model)
    prefix, _ = model.split(cut - 1)
    features = FeatureCache().features(prefix, data.train, device=torch.device("cpu")).clone()  # (N, 512, 9, 9)
    head_specs = [s_ for s_ in vgg_specs()[cut:]]
    head_data = Dataset("vgg-features", Split(features, y), None, None, ["no", "yes"], "binary")
    cache = FeatureCache()
    epochs = 5 if ctx.quick else 20

    def head_torch() -> nn.Module:
        return Network(head_specs, tuple(features.shape[1:]), name="head")

    contenders = [
        TensorLoop("torch loop, head alone", head_torch, features, y, batch=HEAD_BATCH, device=ctx.device,
                   loss="bce", epochs_per_run=epochs),
        GraftnetFit("graftnet fit, head alone", head_torch, head_data, batch=HEAD_BATCH, device=ctx.device,
                    epochs_per_run=epochs, optimizer="sgd", lr=0.01, cache=False),
        GraftnetFit("graftnet fit, whole model, cached", lambda: model, data, batch=HEAD_BATCH, device=ctx.device,
                    epochs_per_run=epochs, optimizer="sgd", lr=0.01, cache=cache,
                    note="cache built in the warm-up; a hit in every timed pass"),
    ]
    ctx.log(s.title)
    s.rows = measure(contenders, ctx.passes, log=ctx.log)
    s.figures["cut after"] = model.layer_names[cut - 1]
    s.figures["cached features per image"] = list(features.shape[1:])
    s.figures["graftnet cached / head alone (graftnet)"] = round(
        ratio(s.median("graftnet fit, whole model, cached"), s.median("graftnet fit, head alone")) or 0, 3)
    walls = [e.get("fit_call_wall_s") for e in (s.row("graftnet fit, whole model, cached") or Row("")).extras]
    if walls:
        s.figures["graftnet cached: wall of a fit call (s), per-call cache look-up included"] = walls
    s.notes.append(f"each pass runs {epochs} epochs; the table shows seconds per epoch")
    return s
