"""Issue 17 item 3: the convolution feature build in float32 and bfloat16, against Keras ``predict``.

1. **Speed.** VGG16 without its top at 150x150 (``graftnet.backbones.vgg16(weights=None)``,
   fixed seed; ``keras.applications.VGG16(weights=None, include_top=False)`` in the Keras
   worker, TensorFlow backend) over the same real images: patches of scikit-learn's two
   sample photographs, resized to 150x150, caffe-preprocessed. One thread per side, passes
   interleaved after a warm-up: graftnet's ``FeatureCache`` build (a fresh cache each pass)
   in float32 (convolution and ReLU fused, the default) and as before (apart), with
   ``precision="bf16"``, Keras ``predict`` at batch 32 and 16, and plain torch inference
   (NCHW batch 16, channels-last batch 32) for what else was tried.
2. **Error of the bfloat16 features** against the float32 ones, on the same images
   (VGG16, random weights: no ImageNet weights on this machine) and on (3).
3. **Downstream accuracy.** Fashion-MNIST rendered in colour (each grey image times an RGB
   tint drawn per image): a VGG-style CNN (3 blocks of two 3x3 convolutions) trained in
   float32 on classes 0-4 (task A), its convolutions frozen, a new Dense(128)-Dense(5) head
   trained with ``fit(cache=FeatureCache(precision=...))`` on 1,000 images of classes 5-9
   (task B) for each seed, float32 and bfloat16 builds with the same seeds; test accuracy on
   all 5,000 task-B test images, (a) through the head on features built the same way, (b)
   through the whole model in float32.

    nice -n 10 python bench/conv_build.py --threads 1 --json bench/results/cpu-1thread-conv-build.json
    python bench/conv_build.py --quick     # 8 images, 2 passes, 2 seeds: a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent / "src"))
sys.path.insert(0, str(BENCH))

import torch  # noqa: E402

import graftnet as gn  # noqa: E402
from graftnet import cache as cache_mod  # noqa: E402
from graftnet.cache import FeatureCache, bf16_unsupported, cache_cut  # noqa: E402

SIZE = 150
FLAGS = ("avx512f", "avx512_bf16", "amx_tile", "amx_bf16", "avx512_fp16", "avx512_vnni")


def machine(threads: int) -> dict:
    text = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    flags = fields.get("Flags", "").split()
    return {"cpu": fields.get("Model name", "?").strip(), "cores": os.cpu_count(), "threads": threads,
            "flags": [f for f in FLAGS if f in flags], "torch": torch.__version__,
            "onednn_bf16": bf16_unsupported("cpu") or "native (amx_bf16 or avx512_bf16)",
            "time": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "uptime_start": uptime()}


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


# ------------------------------------------------------------------ 1. speed
def photos(folder: Path, n: int) -> torch.Tensor:
    """(n, 3, 150, 150) caffe-preprocessed patches of the two scikit-learn sample photographs."""
    sys.path.insert(0, str(BENCH.parent / "examples"))
    from vgg16_transfer import sample_photos

    sample_photos(folder, patch=128, per_class=(n + 1) // 2)
    data = gn.datasets.image_folder(folder, size=(SIZE, SIZE), preprocess="vgg16", valid_fraction=0.0,
                                    test_fraction=0.0, seed=0)
    return data.train.x[:n]


def vgg_prefix() -> gn.Network:
    torch.manual_seed(0)
    base = gn.backbones.vgg16(include_top=False, input_shape=(SIZE, SIZE, 3), weights=None)
    model = gn.Network([gn.Block(base), gn.Flatten(name="flatten"), gn.Dense(1, "sigmoid", name="out")],
                       base.input_shape, name="vgg16_features").freeze("vgg16")
    return model.split(cache_cut(model) - 1)[0]  # vgg16 base + flatten: (8192,) per image


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x, memory_format=torch.channels_last).copy_(x)


def _torch_inference(prefix: gn.Network, x: torch.Tensor, batch: int, channels_last: bool):
    def run() -> float:
        t0 = time.perf_counter()
        with torch.inference_mode():
            for i in range(0, len(x), batch):
                xb = x[i:i + batch]
                prefix(_channels_last(xb) if channels_last else xb)
        return time.perf_counter() - t0
    return run


def _build(prefix: gn.Network, split: gn.datasets.Split, precision: str, fuse: bool = True):
    def run() -> float:
        cache = FeatureCache(precision=precision)
        cache_mod._FUSE_CONV_RELU = fuse
        try:
            t0 = time.perf_counter()
            cache.features(prefix, split, device=torch.device("cpu"))
            return time.perf_counter() - t0
        finally:
            cache_mod._FUSE_CONV_RELU = True
    return run


def keras_worker(threads: int):
    from keras_side import KerasWorker, find_keras_python

    python, note = find_keras_python()
    if python is None:
        raise SystemExit(f"no Keras with TensorFlow: {note}")
    return KerasWorker(python, threads)


def speed(x: torch.Tensor, passes: int, threads: int, keras: bool) -> dict:
    prefix = vgg_prefix()
    split = gn.datasets.Split(x, torch.zeros(len(x)))
    contenders = {
        "graftnet FeatureCache build, float32": _build(prefix, split, "fp32"),
        "graftnet FeatureCache build, float32, conv and ReLU apart (before)": _build(prefix, split, "fp32", fuse=False),
        "graftnet FeatureCache build, bf16": _build(prefix, split, "bf16"),
        "torch inference, batch 16, NCHW": _torch_inference(prefix, x, 16, False),
        "torch inference, batch 32, channels-last": _torch_inference(prefix, x, 32, True),
    }
    worker = None
    if keras:
        worker = keras_worker(threads)
        worker.load("photos", x.permute(0, 2, 3, 1).numpy())
        worker.call("vgg_base", id="vgg", size=SIZE)
        contenders["keras predict, batch 32"] = lambda: worker.call("predict", id="vgg", data="photos",
                                                                    batch=32)["seconds"]
        contenders["keras predict, batch 16"] = lambda: worker.call("predict", id="vgg", data="photos",
                                                                    batch=16)["seconds"]
    split8 = gn.datasets.Split(x[:8], torch.zeros(8))
    fused = FeatureCache().features(prefix, split8, device=torch.device("cpu"))
    with torch.inference_mode():
        plain = prefix(x[:8])  # NCHW, conv and ReLU apart
    fused_error = float((fused - plain).abs().max() / plain.abs().max())
    for run in contenders.values():
        run()  # warm-up
    seconds: dict[str, list[float]] = {name: [] for name in contenders}
    for p in range(passes):
        for name, run in contenders.items():
            seconds[name].append(run())
        print(f"pass {p + 1}/{passes}: " + ", ".join(f"{k.split(',')[0][:14]}.. {v[-1]:.2f}s"
                                                    for k, v in seconds.items()) + f"; {uptime()}", flush=True)
    if worker is not None:
        info = worker.info
        worker.close()
    medians = {k: statistics.median(v) for k, v in seconds.items()}
    result = {"images": len(x), "seconds": seconds, "median_seconds": medians,
              "images_per_s": {k: round(len(x) / v, 2) for k, v in medians.items()},
              "float32 build: max |diff| / max |feature| vs the plain NCHW forward": fused_error}
    if keras:
        result["keras"] = info
        k32 = medians["keras predict, batch 32"]
        result["ratios (throughput / keras predict batch 32)"] = {k: round(k32 / v, 3) for k, v in medians.items()}
    result["bf16 / float32 build (throughput)"] = round(medians["graftnet FeatureCache build, float32"]
                                                        / medians["graftnet FeatureCache build, bf16"], 2)
    return result


# ------------------------------------------------------------------ 2. error
def feature_error(exact: torch.Tensor, rounded: torch.Tensor) -> dict:
    """How far bfloat16 features are from float32 ones: (N, ...) each."""
    exact, rounded = exact.flatten(1).double(), rounded.flatten(1).double()
    diff = (rounded - exact).abs()
    scale = exact.abs().max()
    nonzero = exact.abs() > 0
    relative = diff[nonzero] / exact.abs()[nonzero]
    per_image = diff.max(1).values / exact.abs().max(1).values.clamp_min(1e-30)
    return {
        "features": int(exact.numel()),
        "max |diff| / max |feature|": float(diff.max() / scale),
        **{f"max relative error, features >= {share:g}% of the largest":
           float((diff[big] / exact.abs()[big]).max())
           for share in (0.1, 1, 10) for big in [exact.abs() >= share / 100 * scale]},
        "max relative error, every nonzero feature": float(relative.max()),
        "median relative error, nonzero features": float(relative.median()),
        "relative L2 error ||diff|| / ||feature||": float(diff.norm() / exact.norm()),
        "max over images of max |diff| / max |feature| of that image": float(per_image.max()),
        "zero in float32, nonzero in bf16 (fraction)": float(((exact == 0) & (rounded != 0)).double().mean()),
        "nonzero in float32, zero in bf16 (fraction)": float(((exact != 0) & (rounded == 0)).double().mean()),
    }


def vgg_error(x: torch.Tensor) -> dict:
    prefix = vgg_prefix()
    split = gn.datasets.Split(x, torch.zeros(len(x)))
    exact = FeatureCache().features(prefix, split, device=torch.device("cpu"))
    rounded = FeatureCache(precision="bf16").features(prefix, split, device=torch.device("cpu"))
    return feature_error(exact, rounded)


# ------------------------------------------------------------------ 3. downstream
def colour_fashion(train_a: int, train_b: int, seed: int = 0) -> tuple[gn.datasets.Dataset, gn.datasets.Dataset]:
    """Fashion-MNIST in colour: (3, 28, 28) = grey image x an RGB tint in [0.25, 1] drawn per image.
    Task A: classes 0-4, ``train_a`` training images; task B: classes 5-9, ``train_b`` (all test images)."""
    fashion = gn.datasets.fashion_mnist(download=False)
    g = torch.Generator().manual_seed(seed)

    def tint(split: gn.datasets.Split) -> gn.datasets.Split:
        colours = 0.25 + 0.75 * torch.rand(len(split), 3, 1, 1, generator=g)  # (N, 3, 1, 1)
        return gn.datasets.Split(split.x * colours, split.y)  # (N, 1, 28, 28) * (N, 3, 1, 1) -> (N, 3, 28, 28)

    coloured = gn.datasets.Dataset(fashion.name + "-colour", tint(fashion.train), tint(fashion.valid),
                                   tint(fashion.test), fashion.classes, fashion.task)
    task_a = coloured.only_classes(list(range(5))).sample(train_a, seed=seed)
    task_b = coloured.only_classes(list(range(5, 10))).sample(train_b, seed=seed)
    return task_a, task_b


def cnn(n_out: int, seed: int) -> gn.Network:
    torch.manual_seed(seed)
    layers = []
    for block, filters in enumerate((32, 64, 128), start=1):
        layers += [gn.Conv2d(filters, 3, padding="same", activation="relu", init="he_normal",
                             name=f"block{block}_conv1"),
                   gn.Conv2d(filters, 3, padding="same", activation="relu", init="he_normal",
                             name=f"block{block}_conv2"),
                   gn.MaxPool(2, name=f"block{block}_pool")]
    layers += [gn.Flatten(name="flatten"), gn.Dense(128, "relu", name="dense"), gn.Dense(n_out, name="outputs")]
    return gn.Network(layers, (3, 28, 28), name="fashion_cnn")


def downstream(seeds: int, train_a: int, train_b: int, epochs_a: int, epochs_b: int) -> dict:
    task_a, task_b = colour_fashion(train_a, train_b)
    t0 = time.perf_counter()
    model_a = cnn(5, seed=0)
    gn.fit(model_a, task_a, epochs=epochs_a, batch_size=64, optimizer="adam", lr=1e-3, seed=0, cache=False,
           verbose=False)
    a_seconds = time.perf_counter() - t0
    a_accuracy = gn.evaluate(model_a, task_a)["accuracy"]
    print(f"model A: test accuracy {a_accuracy:.4f} on classes 0-4 in {a_seconds:.0f} s; {uptime()}", flush=True)
    start = {k: v.clone() for k, v in model_a.state_dict().items() if k.startswith("block")}
    runs: dict[str, list[dict]] = {"fp32": [], "bf16": []}
    errors = {}
    for seed in range(seeds):
        for precision in ("fp32", "bf16"):
            model = cnn(5, seed=100 + seed)  # a fresh head per seed, the same for both precisions
            model.load_state_dict({**model.state_dict(), **start})
            model.freeze("block.*")
            cache = FeatureCache(precision=precision)
            t1 = time.perf_counter()
            history = gn.fit(model, task_b, epochs=epochs_b, batch_size=32, optimizer="adam", lr=1e-3, seed=seed,
                             cache=cache, verbose=False)
            seconds = time.perf_counter() - t1
            prefix, head = model.split(cache_cut(model) - 1)
            test_features = cache.features(prefix, task_b.test, device=torch.device("cpu"))  # (N, 1152)
            with torch.inference_mode():
                same_way = (head.eval()(test_features).argmax(1) == task_b.test.y).float().mean().item()
            runs[precision].append({"seed": seed, "test accuracy, head on features built the same way": same_way,
                                    "test accuracy, whole model in float32": gn.evaluate(model, task_b)["accuracy"],
                                    "final val accuracy": history.epochs[-1]["val_accuracy"],
                                    "fit seconds": round(seconds, 2),
                                    "build seconds": history.epochs[0].get("cache_build_seconds")})
            if seed == 0:
                errors[precision] = test_features.clone()
        print(f"seed {seed}: " + ", ".join(f"{p} {r[-1]['test accuracy, head on features built the same way']:.4f}"
                                           for p, r in runs.items()) + f"; {uptime()}", flush=True)
    summary = {}
    for measure in ("test accuracy, head on features built the same way", "test accuracy, whole model in float32"):
        diffs = [b[measure] - f[measure] for f, b in zip(runs["fp32"], runs["bf16"])]  # paired by seed
        summary[measure] = {
            "fp32 mean": statistics.mean(r[measure] for r in runs["fp32"]),
            "bf16 mean": statistics.mean(r[measure] for r in runs["bf16"]),
            "fp32 sd over seeds": statistics.stdev(r[measure] for r in runs["fp32"]) if seeds > 1 else None,
            "bf16 - fp32 per seed": diffs,
            "bf16 - fp32 mean": statistics.mean(diffs),
            "bf16 - fp32 sd": statistics.stdev(diffs) if seeds > 1 else None,
            "bf16 - fp32 min, max": [min(diffs), max(diffs)],
        }
    return {"task": {"A": "colour Fashion-MNIST classes 0-4", "B": "classes 5-9", "train A": len(task_a.train),
                     "train B": len(task_b.train), "valid B": len(task_b.valid), "test B": len(task_b.test),
                     "epochs A": epochs_a, "epochs B": epochs_b, "seeds": seeds},
            "model A test accuracy": a_accuracy, "model A seconds": round(a_seconds, 1),
            "features error (task-B test set, seed 0)": feature_error(errors["fp32"], errors["bf16"]),
            "summary": summary, "runs": runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=32, help="photos in the speed and error parts")
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-keras", action="store_true")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--train-a", type=int, default=10000)
    parser.add_argument("--train-b", type=int, default=1000)
    parser.add_argument("--epochs", type=int, nargs=2, default=[3, 10], metavar=("A", "B"))
    parser.add_argument("--parts", default="speed,error,downstream")
    parser.add_argument("--quick", action="store_true", help="8 images, 2 passes, 2 seeds, small tasks")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.quick:
        args.images, args.passes, args.seeds, args.train_a, args.train_b, args.epochs = 8, 2, 2, 1000, 200, [1, 2]
    torch.set_num_threads(args.threads)
    if why := bf16_unsupported("cpu"):
        raise SystemExit(why)
    parts = args.parts.split(",")
    result: dict = {"machine": machine(args.threads), "command": " ".join(sys.argv)}
    print(result["machine"], flush=True)
    with tempfile.TemporaryDirectory(prefix="graftnet-conv-build-") as tmp:
        x = photos(Path(tmp) / "photos", args.images) if {"speed", "error"} & set(parts) else None
    if "speed" in parts:
        result["speed"] = speed(x, args.passes, args.threads, keras=not args.no_keras)
        print(json.dumps({k: result["speed"][k] for k in result["speed"] if k not in ("seconds",)}, indent=1),
              flush=True)
    if "error" in parts:
        result["vgg16 features error (bf16 vs float32)"] = vgg_error(x)
        print(json.dumps(result["vgg16 features error (bf16 vs float32)"], indent=1), flush=True)
    if "downstream" in parts:
        result["downstream"] = downstream(args.seeds, args.train_a, args.train_b, *args.epochs)
        print(json.dumps({k: v for k, v in result["downstream"].items() if k != "runs"}, indent=1), flush=True)
    result["machine"]["uptime_end"] = uptime()
    print(result["machine"]["uptime_end"])
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        tmp_path = args.json.with_suffix(".tmp")
        tmp_path.write_text(json.dumps(result, indent=1, default=str))
        tmp_path.replace(args.json)


if __name__ == "__main__":
    main()
