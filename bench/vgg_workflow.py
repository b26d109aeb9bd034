"""Issue 11 item 3: the VGG16 workflow of the notes, graftnet against Keras, end to end.

The notes' schedule (seed 004): ``VGG16(include_top=False, input_shape=(150, 150, 3))`` with a
Flatten -> Dense(256, relu) -> Dense(1, sigmoid) head, RMSprop 2e-5, batch 20, validation data
at every epoch; 30 epochs with every base layer ``trainable = False``, then 30 with
``vgg_base.layers[15:]`` (block 5) trainable. Both sides start from the same weights (a fixed
seed; graftnet exports them as ``.keras`` and Keras loads that file) and read the same images:
patches of scikit-learn's two sample photographs (china vs flower), resized to 150x150 and
preprocessed in caffe mode. One run:

1. graftnet ``fit`` per stage (the frozen part's output is computed once per stage: after
   ``flatten``, then after ``block4_pool``), wall time of each ``fit`` call;
2. Keras ``fit`` per stage as the notes write it (in the Keras worker: TensorFlow backend from
   ``.venv-bench`` when it is there, else ``KERAS_BACKEND=torch``);
3. graftnet ``fit(cache=False)`` for ``--nocache-epochs`` epochs of each stage: what an epoch
   costs without the cache, to say what the cache saved;
4. the feature build: graftnet's ``FeatureCache`` on the frozen base (float32, and
   ``precision="bf16"`` where the CPU has AMX or AVX-512-BF16) against Keras ``predict`` of
   ``keras.applications.VGG16(include_top=False)`` over the same images, passes interleaved.

The FLOP bound is what Keras computes divided by what graftnet computes for this schedule
(``graftnet.flops``: conv and dense FLOPs, forward, weight and input gradients, the cache
builds, validation forwards).

    nice -n 10 python bench/vgg_workflow.py --threads 1 --json bench/results/vgg-workflow.json
    python bench/vgg_workflow.py --quick      # 8 epochs per stage, 16 images: a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent / "src"))
sys.path.insert(0, str(BENCH))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import graftnet as gn  # noqa: E402
from graftnet.cache import FeatureCache, bf16_unsupported, cache_cut  # noqa: E402
from graftnet.flops import forward_flops, training_flops  # noqa: E402

SIZE = 150
LR = 2e-5
BATCH = 20


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def photos(folder: Path, n: int) -> gn.datasets.Dataset:
    """n images (half china, half flower): 128x128 patches, resized to 150x150, caffe pixels."""
    sys.path.insert(0, str(BENCH.parent / "examples"))
    from vgg16_transfer import sample_photos

    sample_photos(folder, patch=128, per_class=n // 2)
    return gn.datasets.image_folder(folder, size=(SIZE, SIZE), preprocess="vgg16", valid_fraction=0.25,
                                    test_fraction=0.25, seed=0).as_binary("flower")


def model_for(seed: int) -> gn.Network:
    torch.manual_seed(seed)
    base = gn.backbones.vgg16(include_top=False, input_shape=(SIZE, SIZE, 3), weights=None)
    return gn.Network([gn.Block(base), gn.Flatten(name="flatten"), gn.Dense(256, "relu", name="dense"),
                       gn.Dense(1, "sigmoid", name="dense_1")], base.input_shape, name="vgg16_transfer")


def workflow_flops(model: gn.Network, n_train: int, n_valid: int, epochs: tuple[int, int]) -> dict[str, float]:
    """GFLOP of the whole schedule: what Keras runs (every layer forward at every step and every
    validation) and what graftnet runs (each stage's frozen part once, on train and valid)."""
    forward = forward_flops(model)
    total = {"keras": 0.0, "graftnet": 0.0}
    for stage, stage_epochs in zip(("frozen", "block5"), epochs):
        model.freeze("vgg16") if stage == "frozen" else model.unfreeze("vgg16.layers[15:]")
        cut = cache_cut(model)
        everything, cached = training_flops(model, 0), training_flops(model, cut)
        total["keras"] += stage_epochs * (n_train * everything.per_example + n_valid * sum(forward))
        total["graftnet"] += (n_train + n_valid) * cached.cache_build + stage_epochs * (
            n_train * cached.per_example + n_valid * sum(forward[cut:]))
    model.freeze("vgg16")  # back to stage 1's state
    return {k: v / 1e9 for k, v in total.items()}


def graftnet_workflow(model: gn.Network, data: gn.datasets.Dataset, epochs: tuple[int, int],
                      cache: bool = True) -> dict:
    stages = []
    history = None
    for stage, stage_epochs in zip(("frozen", "block5"), epochs):
        model.freeze("vgg16") if stage == "frozen" else model.unfreeze("vgg16.layers[15:]")
        t0 = time.perf_counter()
        history = gn.fit(model, data, epochs=stage_epochs, batch_size=BATCH, optimizer=gn.RMSprop(lr=LR),
                         seed=0, cache=FeatureCache() if cache else False, verbose=False)
        rows = history.epochs
        stages.append({"stage": stage, "wall": time.perf_counter() - t0,
                       "epoch_seconds": [r["seconds"] for r in rows],
                       "cache_cut": rows[0].get("cache_cut"), "cache_build_seconds": rows[0].get("cache_build_seconds"),
                       "loss": [r["loss"] for r in rows], "val_acc": [r["val_accuracy"] for r in rows]})
    return {"stages": stages, "test_accuracy": gn.evaluate(model, data)["accuracy"]}


def keras_worker(threads: int):
    local = BENCH.parent / ".venv-bench" / "bin" / "python"
    if local.exists():  # before keras_side reads it
        os.environ.setdefault("GRAFTNET_BENCH_KERAS_PYTHON", str(local))
    from keras_side import KerasWorker, find_keras_python

    python, note = find_keras_python()
    if python is None:
        raise SystemExit(f"no Keras with TensorFlow: {note}")
    return KerasWorker(python, threads)


def feature_build(model: gn.Network, data: gn.datasets.Dataset, worker, passes: int) -> dict:
    """Images/s of graftnet's FeatureCache build of the frozen base and of Keras' predict."""
    x = torch.cat([s.x for s in (data.train, data.valid, data.test) if s is not None])  # (N, 3, 150, 150)
    split = gn.datasets.Split(x, torch.zeros(len(x)))
    model.freeze("vgg16")
    prefix, _ = model.split(cache_cut(model) - 1)
    worker.load("vggall", x.permute(0, 2, 3, 1).numpy())
    worker.call("vgg_base", id="vggbase", size=SIZE)
    worker.call("predict", id="vggbase", data="vggall", batch=32)  # warm-up
    FeatureCache().features(prefix, split, device=torch.device("cpu"))
    times: dict[str, list[float]] = {"graftnet FeatureCache build": [], "keras predict, batch 32": []}
    precisions = {"graftnet FeatureCache build": "fp32"}
    if bf16_unsupported("cpu") is None:  # the opt-in bfloat16 build, where the CPU runs it natively
        precisions["graftnet FeatureCache build, bf16"] = "bf16"
        times["graftnet FeatureCache build, bf16"] = []
        FeatureCache(precision="bf16").features(prefix, split, device=torch.device("cpu"))  # warm-up
    for _ in range(passes):
        for name, precision in precisions.items():
            cache = FeatureCache(precision=precision)
            t0 = time.perf_counter()
            cache.features(prefix, split, device=torch.device("cpu"))
            times[name].append(time.perf_counter() - t0)
        keras = worker.call("predict", id="vggbase", data="vggall", batch=32)
        times["keras predict, batch 32"].append(keras["seconds"])
    medians = {k: statistics.median(v) for k, v in times.items()}
    return {"images": len(x), "seconds": times, "median_seconds": medians,
            "images_per_s": {k: round(len(x) / v, 2) for k, v in medians.items()},
            "graftnet / keras throughput": round(medians["keras predict, batch 32"]
                                                 / medians["graftnet FeatureCache build"], 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=64, help="images in all (half train, a quarter valid, test)")
    parser.add_argument("--epochs", type=int, nargs=2, default=[30, 30])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--passes", type=int, default=5, help="passes of the feature-build comparison (0: skip it)")
    parser.add_argument("--nocache-epochs", type=int, default=2,
                        help="epochs per stage of fit(cache=False) (0: skip them)")
    parser.add_argument("--quick", action="store_true", help="16 images, 8 + 8 epochs, 2 passes")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.quick:
        args.images, args.epochs, args.passes, args.nocache_epochs = 16, [8, 8], 2, 1
    torch.set_num_threads(args.threads)
    epochs = tuple(args.epochs)
    info = {"cpu": cpu_model(), "threads": args.threads, "torch": torch.__version__, "load_start": load_average(),
            "time": time.strftime("%Y-%m-%d %H:%M:%S"), "epochs": epochs, "batch": BATCH, "lr": LR}
    with tempfile.TemporaryDirectory(prefix="graftnet-vgg-bench-") as tmp:
        data = photos(Path(tmp) / "photos", args.images)
        info["data"] = {"train": len(data.train), "valid": len(data.valid), "test": len(data.test),
                        "size": SIZE, "preprocess": data.source["preprocess"]}
        print(f"{info['cpu']}, {args.threads} thread(s), load {info['load_start']}; {info['data']}", flush=True)
        model = model_for(0)
        flops = workflow_flops(model, len(data.train), len(data.valid), epochs)
        start = Path(tmp) / "start.keras"
        from graftnet.io.keras import save_keras

        save_keras(model, start)
        initial = {k: v.clone() for k, v in model.state_dict().items()}

        worker = keras_worker(args.threads)
        info["keras"] = worker.info
        for name, split in (("train", data.train), ("valid", data.valid), ("test", data.test)):
            worker.load(name, split.x.permute(0, 2, 3, 1).numpy(), split.y.numpy().astype("float32"))

        t0 = time.perf_counter()
        ours = graftnet_workflow(model, data, epochs)
        ours["wall"] = time.perf_counter() - t0
        print(f"graftnet: {ours['wall']:.1f} s, test accuracy {ours['test_accuracy']:.3f}, load {load_average()}",
              flush=True)
        t0 = time.perf_counter()
        theirs = worker.call("vgg_workflow", model=str(start), train="train", valid="valid", test="test",
                             epochs=list(epochs), batch=BATCH, lr=LR)
        theirs["wall"] = time.perf_counter() - t0
        print(f"keras ({worker.info.get('backend')}): {theirs['wall']:.1f} s, test accuracy "
              f"{theirs['test_accuracy']:.3f}, load {load_average()}", flush=True)

        model.load_state_dict(initial)
        nocache = (graftnet_workflow(model, data, (args.nocache_epochs,) * 2, cache=False) if args.nocache_epochs
                   else {"stages": [{"epoch_seconds": [float("nan")]}] * 2})
        build = (feature_build(model, data, worker, args.passes) if args.passes else
                 {"images_per_s": None, "graftnet / keras throughput": None})
        worker.close()

    per_epoch_nocache = [statistics.median(s["epoch_seconds"]) for s in nocache["stages"]]
    per_epoch_cached = [statistics.median(s["epoch_seconds"]) for s in ours["stages"]]
    builds = sum(s["cache_build_seconds"] or 0 for s in ours["stages"])
    without_cache = sum(e * t for e, t in zip(epochs, per_epoch_nocache))
    result = {
        "machine": {**info, "load_end": load_average()},
        "graftnet": ours, "keras": theirs, "graftnet_nocache_epochs": nocache, "feature_build": build,
        "gflop": {**flops, "bound": round(flops["keras"] / flops["graftnet"], 2)},
        "ratio keras / graftnet (wall)": round(theirs["wall"] / ours["wall"], 2),
        "cache": {"build_seconds": round(builds, 2),
                  "median epoch seconds, cached": per_epoch_cached,
                  "median epoch seconds, cache=False": per_epoch_nocache,
                  "estimated seconds without the cache": round(without_cache, 1),
                  "saved seconds (estimate)": round(without_cache - sum(
                      e * t for e, t in zip(epochs, per_epoch_cached)) - builds, 1)},
    }
    result["ratio / bound"] = round(result["ratio keras / graftnet (wall)"] / result["gflop"]["bound"], 3)
    summary = {k: result[k] for k in ("ratio keras / graftnet (wall)", "ratio / bound")}
    summary.update(bound=result["gflop"]["bound"], cache=result["cache"],
                   feature_build=build["images_per_s"], feature_build_ratio=build["graftnet / keras throughput"],
                   test_accuracy={"graftnet": ours["test_accuracy"], "keras": theirs["test_accuracy"]},
                   final_val_acc={"graftnet": ours["stages"][-1]["val_acc"][-1],
                                  "keras": theirs["stages"][-1]["val_acc"][-1]},
                   load=(info["load_start"], result["machine"]["load_end"]))
    print(json.dumps(summary, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.json.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=1, default=str))
        tmp.replace(args.json)


if __name__ == "__main__":
    main()
