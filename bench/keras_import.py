"""Keras import: time and peak memory for ResNet50, and output parity per keras.applications family.

Not a timed test. Part 1 builds ResNet50 (weights=None, fixed seed, random BatchNorm
statistics) at 224x224 with its top, saves it as ``.h5`` and ``.keras``, and imports each file
in a fresh subprocess (``--passes`` times): wall time of ``load_keras`` and peak resident memory
of that process (``VmHWM``, its own address space's high-water mark; ``ru_maxrss`` is not used
because Linux carries it over ``exec`` from the parent) before and after the import, and
``ru_maxrss`` of the forked child that parses the HDF5 file (its pages shared with the
importing process at fork time count there too). Part 2 builds each family with and
without its top (``--parity-size``, default 64), saves both formats, imports them and prints the
max abs difference of graftnet's outputs to Keras' ``predict`` (and relative to max |output|).

    KERAS_BACKEND=torch PYTHONPATH=src python bench/keras_import.py                  # both parts
    KERAS_BACKEND=torch PYTHONPATH=src python bench/keras_import.py --skip-parity --passes 3
    KERAS_BACKEND=torch PYTHONPATH=src python bench/keras_import.py --skip-import --parity-size 32

Writes bench/results/keras_import.json (or --json PATH).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")
ROOT = Path(__file__).resolve().parents[1]
FAMILIES = ("VGG16", "VGG19", "ResNet50", "MobileNetV2", "EfficientNetB0", "DenseNet121")


def _hwm_mib() -> float:
    """This process' peak resident memory (Linux /proc/self/status VmHWM), MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def worker(path: str, threads: int) -> None:
    """In a fresh process: import one file and print the figures as JSON."""
    import torch

    torch.set_num_threads(threads)
    from graftnet.io.keras import load_keras

    before = _hwm_mib()
    start = time.perf_counter()
    net, report = load_keras(path)
    seconds = time.perf_counter() - start
    peak = _hwm_mib()
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(json.dumps({"seconds": seconds, "rss_before_mib": before, "rss_peak_mib": peak,
                      "reader_child_peak_mib": child / 1024, "layers": len(net.layer_names),
                      "params": net.count_params(), "ok": report.ok,
                      "file_mib": os.path.getsize(path) / 2**20}))


def randomize_statistics(model, seed: int = 0) -> None:
    import keras
    import numpy as np

    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.uniform(-0.5, 0.5, c).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 1.5, c).astype("float32"))
            layer.gamma.assign(rng.uniform(0.5, 1.5, c).astype("float32"))
            layer.beta.assign(rng.uniform(-0.5, 0.5, c).astype("float32"))
        elif isinstance(layer, keras.layers.Normalization) and getattr(layer, "adapt_mean", None) is not None:
            layer.adapt_mean.assign(rng.uniform(50, 150, layer.adapt_mean.shape).astype("float32"))
            layer.adapt_variance.assign(rng.uniform(1e3, 4e3, layer.adapt_variance.shape).astype("float32"))
            layer.finalize_state()


def build(family: str, top: bool, size: int):
    import keras

    keras.utils.set_random_seed(0)
    options = {"classes": 10} if top and size < 224 else {}
    model = getattr(keras.applications, family)(weights=None, include_top=top, input_shape=(size, size, 3), **options)
    randomize_statistics(model)
    return model


def make(folder: str) -> None:
    """In a child process (so that the parent stays small): ResNet50 at 224x224, saved twice."""
    model = build("ResNet50", True, 224)
    for suffix in ("h5", "keras"):
        model.save(Path(folder) / f"resnet50_224.{suffix}")


def import_figures(folder: Path, passes: int, threads: int) -> dict:
    subprocess.run([sys.executable, __file__, "--make", str(folder)], check=True, capture_output=True)
    out: dict = {}
    for suffix in ("h5", "keras"):
        path = folder / f"resnet50_224.{suffix}"
        runs = []
        for _ in range(passes):
            done = subprocess.run([sys.executable, __file__, "--worker", str(path), "--threads", str(threads)],
                                  capture_output=True, text=True, check=True, env={**os.environ})
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
        out[suffix] = {**runs[-1], "seconds": statistics.median(r["seconds"] for r in runs),
                       "seconds_all": [round(r["seconds"], 3) for r in runs],
                       "rss_peak_mib": max(r["rss_peak_mib"] for r in runs)}
        r = out[suffix]
        print(f"ResNet50 224x224 .{suffix}: {r['file_mib']:.0f} MiB file, {r['layers']} layers, {r['params']:,} "
              f"params; load_keras {r['seconds']:.2f} s (median of {passes}: {r['seconds_all']}); peak RSS "
              f"{r['rss_peak_mib']:.0f} MiB (before the import {r['rss_before_mib']:.0f} MiB), HDF5 reader child "
              f"{r['reader_child_peak_mib']:.0f} MiB", flush=True)
    return out


def parity_figures(folder: Path, size: int) -> dict:
    import numpy as np
    import torch

    from graftnet.io.keras import load_keras

    rng = np.random.default_rng(1)
    out: dict = {}
    for family in FAMILIES:
        for top in (False, True):
            model = build(family, top, size)
            x = (rng.uniform(0, 255, (4, size, size, 3)) if family == "EfficientNetB0"
                 else rng.normal(size=(4, size, size, 3))).astype("float32")
            expected = model.predict(x, verbose=0)
            scale = float(np.abs(expected).max())
            for suffix in ("h5", "keras"):
                path = folder / f"{family}_{top}.{suffix}"
                model.save(path)
                net, report = load_keras(path)
                net.eval()
                with torch.no_grad():
                    y = net(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
                y = y.transpose(0, 2, 3, 1) if y.ndim == 4 else y
                diff = float(np.abs(y - expected).max())
                key = f"{family} {'top' if top else 'notop'} .{suffix}"
                out[key] = {"max_abs_diff": diff, "output_scale": scale, "relative": diff / max(scale, 1e-12),
                            "layers": len(net.layer_names), "ok": report.ok}
                print(f"{key:32s} {len(net.layer_names):4d} layers  max abs diff {diff:.2e}  "
                      f"(max |output| {scale:.2e}, relative {diff / max(scale, 1e-12):.1e})", flush=True)
                path.unlink()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--make", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--parity-size", type=int, default=64)
    parser.add_argument("--skip-import", action="store_true")
    parser.add_argument("--skip-parity", action="store_true")
    parser.add_argument("--json", default=str(ROOT / "bench" / "results" / "keras_import.json"))
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.threads)
        return
    if args.make:
        make(args.make)
        return
    results: dict = {"threads": args.threads}
    with tempfile.TemporaryDirectory(prefix="graftnet-keras-bench-") as tmp:
        if not args.skip_import:  # before torch and Keras are imported here
            results["import"] = import_figures(Path(tmp), args.passes, args.threads)
        if not args.skip_parity:
            import torch

            torch.set_num_threads(args.threads)
            results["parity_size"] = args.parity_size
            results["parity"] = parity_figures(Path(tmp), args.parity_size)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
