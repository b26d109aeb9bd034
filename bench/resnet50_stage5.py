"""Issue 9's first figure: ResNet50 frozen except its last stage, with a new head.

``gn.backbones.resnet50(include_top=False, input_shape=(S, S, 3))`` nested as a block,
frozen up to ``conv4_block6_out`` (stages conv1-conv4), trained from ``conv5_block1``
on, with a new head (global average pooling, Dense(10)). Contenders, one epoch each, in
one run, passes interleaved after one warm-up epoch each:

- graftnet ``fit`` with the frozen-prefix cache (the default): stage 4's output is
  computed once, each step runs stage 5 and the head;
- graftnet ``fit(cache=False)``: every step runs the frozen stages forward too;
- Keras 3 (``KERAS_BACKEND=torch``, the same process), ``layer.trainable = False`` on
  the same layers of ``keras.applications.ResNet50``;
- a plain torch loop over precomputed stage-4 features (**reference**): stage 5 and the
  head written in plain ``torch.nn`` (torchvision's Bottleneck layout, Keras' biases),
  ``perm``, ``F.cross_entropy``, ``backward``, ``step``.

FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode`` over one training
step (forward + backward) of each variant, so they are what each one actually runs.
Epoch times: graftnet's History ``seconds``; Keras: a callback from epoch begin to end;
the torch loop: its own clock. The cache build (once per fit of a new model) is reported
apart. Random images and labels, random (He/Glorot) weights: timing only.

    nice -n 10 python bench/resnet50_stage5.py --size 64 --n 512 --passes 3 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

import graftnet as gn  # noqa: E402

CLASSES = 10
FROZEN = r"resnet50/(conv1|pool1|conv2|conv3|conv4)_.*"  # everything up to conv4_block6_out
LR = 0.01


# ----------------------------------------------------------------- models
def graftnet_model(size: int) -> gn.Network:
    base = gn.backbones.resnet50(include_top=False, weights=None, input_shape=(size, size, 3))
    model = gn.Network([gn.Block(base, name="resnet50"), gn.GlobalAvgPool(name="avg_pool"),
                        gn.Dense(CLASSES, name="head")], input_shape=(3, size, size), name="resnet50_stage5")
    return model.freeze(FROZEN)


class Bottleneck(nn.Module):
    """Keras' residual_block_v1 in plain torch: 1x1 -> 3x3 -> 1x1 (x4), BN eps 1.001e-5."""

    def __init__(self, cin: int, filters: int, stride: int, shortcut: bool) -> None:
        super().__init__()
        bn = lambda c: nn.BatchNorm2d(c, eps=1.001e-5, momentum=0.01)  # noqa: E731
        self.conv1, self.bn1 = nn.Conv2d(cin, filters, 1, stride), bn(filters)
        self.conv2, self.bn2 = nn.Conv2d(filters, filters, 3, padding=1), bn(filters)
        self.conv3, self.bn3 = nn.Conv2d(filters, 4 * filters, 1), bn(4 * filters)
        self.down = nn.Sequential(nn.Conv2d(cin, 4 * filters, 1, stride), bn(4 * filters)) if shortcut else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.down is None else self.down(x)
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        return F.relu(self.bn3(self.conv3(y)) + skip)


def torch_stage5_head() -> nn.Module:
    """conv5 (3 bottlenecks, 512 filters, stride 2) + global average pool + Linear(2048, 10)."""
    return nn.Sequential(Bottleneck(1024, 512, 2, True), Bottleneck(2048, 512, 1, False),
                         Bottleneck(2048, 512, 1, False), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(2048, CLASSES))


def keras_model(size: int):  # noqa: ANN201
    import keras

    base = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(size, size, 3))
    cut = [layer.name for layer in base.layers].index("conv4_block6_out")
    for layer in base.layers[: cut + 1]:
        layer.trainable = False
    x = keras.layers.GlobalAveragePooling2D()(base.output)
    model = keras.Model(base.input, keras.layers.Dense(CLASSES)(x))
    model.compile(optimizer=keras.optimizers.SGD(LR),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


# ----------------------------------------------------------------- contenders
class GraftnetEpoch:
    def __init__(self, name: str, size: int, data: gn.datasets.Dataset, batch: int, cache: bool) -> None:
        self.name, self.data, self.batch, self.cache = name, data, batch, cache
        self.model = graftnet_model(size)
        self.extras: dict[str, float] = {}
        self.seed = 0

    def epoch(self) -> float:
        self.seed += 1
        hist = gn.fit(self.model, self.data, epochs=1, batch_size=self.batch, optimizer="sgd", lr=LR,
                      seed=self.seed, cache=self.cache, verbose=False, metrics=())
        row = hist.last()
        if "cache_build_seconds" in row and row["cache_build_seconds"]:
            self.extras["cache_build_seconds"] = row["cache_build_seconds"]
        return float(row["seconds"])

    def step_flops(self, x: torch.Tensor, y: torch.Tensor) -> int:
        model = self.model.train()
        if self.cache:  # what the cached loop runs: the layers after the cut, on stage 4's output
            from graftnet.cache import cache_cut

            cut = cache_cut(model)
            prefix, rest = model.split(cut - 1)
            with torch.no_grad():
                feats = prefix.eval()(x)
            return _count(lambda: F.cross_entropy(rest.train()(feats), y))
        return _count(lambda: F.cross_entropy(model(x), y))


class KerasEpoch:
    def __init__(self, size: int, x: torch.Tensor, y: torch.Tensor, batch: int) -> None:
        import keras

        self.model = keras_model(size)
        self.x, self.y, self.batch = x.permute(0, 2, 3, 1).contiguous().numpy(), y.numpy(), batch
        self.times: list[float] = []

        class Timer(keras.callbacks.Callback):
            def on_epoch_begin(cb, epoch, logs=None):  # noqa: N805, ANN001
                cb.t0 = time.perf_counter()

            def on_epoch_end(cb, epoch, logs=None):  # noqa: N805, ANN001
                self.times.append(time.perf_counter() - cb.t0)

        self.timer = Timer()
        self.name, self.extras = "keras trainable=False", {}

    def epoch(self) -> float:
        self.model.fit(self.x, self.y, batch_size=self.batch, epochs=1, shuffle=True, verbose=0,
                       callbacks=[self.timer])
        return self.times[-1]

    def step_flops(self, x: torch.Tensor, y: torch.Tensor) -> int:
        xb, yb = x.permute(0, 2, 3, 1).contiguous().numpy(), y.numpy()
        self.model.train_on_batch(xb, yb)  # the first call also builds the train function: not counted
        with FlopCounterMode(display=False) as counter:
            self.model.train_on_batch(xb, yb)
        return counter.get_total_flops()


class TorchFeatureLoop:
    """The reference: a plain loop over precomputed stage-4 features (computed once, not timed)."""

    def __init__(self, feats: torch.Tensor, y: torch.Tensor, batch: int) -> None:
        self.name, self.extras = "torch loop on stage-4 features", {}
        self.model = torch_stage5_head()
        self.opt = torch.optim.SGD(self.model.parameters(), lr=LR)
        self.feats, self.y, self.batch = feats, y, batch

    def epoch(self) -> float:
        t0 = time.perf_counter()
        self.model.train()
        perm = torch.randperm(len(self.y))
        for i in range(0, len(perm), self.batch):
            idx = perm[i:i + self.batch]
            loss = F.cross_entropy(self.model(self.feats[idx]), self.y[idx])
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
        return time.perf_counter() - t0

    def step_flops(self, x: torch.Tensor, y: torch.Tensor) -> int:
        return _count(lambda: F.cross_entropy(self.model.train()(self.feats[: len(y)]), y))


def _count(loss_fn) -> int:  # noqa: ANN001
    with FlopCounterMode(display=False) as counter:
        loss_fn().backward()
    return counter.get_total_flops()


# ----------------------------------------------------------------- run
def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--n", type=int, default=512, help="training images")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-keras", action="store_true")
    parser.add_argument("--json", default="bench/results/resnet50_stage5.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.rand(args.n, 3, args.size, args.size) * 2 - 1  # (N, 3, S, S)
    y = torch.randint(0, CLASSES, (args.n,))
    data = gn.datasets.from_arrays(x, y, classes=[str(i) for i in range(CLASSES)])

    cached = GraftnetEpoch("graftnet cached", args.size, data, args.batch, cache=True)
    uncached = GraftnetEpoch("graftnet cache=False", args.size, data, args.batch, cache=False)
    from graftnet.cache import cache_cut

    prefix, _ = cached.model.split(cache_cut(cached.model) - 1)
    t0 = time.perf_counter()
    with torch.no_grad():
        feats = torch.cat([prefix.eval()(x[i:i + 64]) for i in range(0, args.n, 64)])  # (N, 1024, S/16, S/16)
    feats_seconds = time.perf_counter() - t0
    reference = TorchFeatureLoop(feats, y, args.batch)
    contenders = [reference, cached, uncached] + ([] if args.no_keras else [KerasEpoch(args.size, x, y, args.batch)])

    flops = {c.name: c.step_flops(x[: args.batch], y[: args.batch]) for c in contenders}
    times: dict[str, list[float]] = {c.name: [] for c in contenders}
    for c in contenders:  # warm-up epoch (the cached contender builds its cache here)
        c.epoch()
    for _ in range(args.passes):
        for c in contenders:
            times[c.name].append(c.epoch())

    ref = statistics.median(times[reference.name])
    print(f"ResNet50 at {args.size}x{args.size}, {args.n} images, batch {args.batch}, {args.threads} threads, "
          f"{args.passes} passes; CPU: {cpu_model()}; Keras backend: {os.environ['KERAS_BACKEND']}")
    print(f"stage-4 features for the torch loop: {tuple(feats.shape[1:])}, computed once in {feats_seconds:.2f}s")
    print(f"{'contender':34} {'median s/epoch':>15} {'min':>8} {'x ref':>7} {'GFLOP/step':>11} {'x ref':>7}")
    for c in contenders:
        med = statistics.median(times[c.name])
        print(f"{c.name:34} {med:15.3f} {min(times[c.name]):8.3f} {med / ref:7.2f} {flops[c.name] / 1e9:11.2f} "
              f"{flops[c.name] / flops[reference.name]:7.2f}")
    if cached.extras:
        print(f"graftnet's cache build (once, in the warm-up fit): {cached.extras['cache_build_seconds']:.2f}s")
    result = {"size": args.size, "n": args.n, "batch": args.batch, "threads": args.threads, "passes": args.passes,
              "cpu": cpu_model(), "keras_backend": os.environ["KERAS_BACKEND"], "torch": torch.__version__,
              "feature_seconds": feats_seconds, "times": times, "flops_per_step": flops,
              "cache_build_seconds": cached.extras.get("cache_build_seconds")}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
