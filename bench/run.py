#!/usr/bin/env python
"""graftnet benchmarks: graftnet beside plain PyTorch, a DataLoader loop and Keras 3
(TensorFlow backend, in a subprocess), with FLOP bounds measured in the same run.

    python bench/run.py                          # every scenario, 3 passes, 2 threads
    python bench/run.py --quick                  # smaller and faster, for a smoke test
    python bench/run.py --scenarios mlp,frozen --passes 5 --json bench/results/mine.json
    python bench/run.py --device cuda --scenarios mlp,frozen   # on a GPU machine

Scenarios: mlp (a), frozen (b), vgg (c), study (d), memmap (e), loop (per-step overhead
of fit against the plain loop and inline replicas of fit's ops; not in the default set);
see bench/README.md.
The machine's speed drifts between runs: compare ratios inside one run only. Each pass
runs one epoch of every contender in turn; the table shows medians over passes.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))  # graftnet from this checkout when not installed

import torch  # noqa: E402

from common import format_table, machine_info, set_threads, write_json  # noqa: E402

SCENARIOS = ["mlp", "frozen", "vgg", "study", "memmap", "loop"]
DEFAULT = ["mlp", "frozen", "vgg", "study", "memmap"]


class Context:
    """What scenarios share: settings, the data, the Keras worker, the matmul peak."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.quick = args.quick
        self.passes = args.passes
        self.threads = args.threads
        self.device = torch.device(args.device)
        self.batches = [200, 50]
        self.keras = None
        self.keras_why = "keras not asked for (--no-keras)" if args.no_keras else ""
        self._keras_started = args.no_keras or self.device.type != "cpu"
        if self.device.type != "cpu":
            self.keras_why = "Keras runs on the CPU only in this bench"

    def log(self, msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    @functools.lru_cache(maxsize=None)
    def fashion(self) -> tuple[Any, Any]:
        from common import fashion_arrays

        return fashion_arrays(limit=self.args.limit)

    @functools.lru_cache(maxsize=None)
    def peak(self) -> dict[str, Any]:
        from flops import peak_gflops

        return peak_gflops(self.device)

    def _start_keras(self) -> None:
        if self._keras_started:
            return
        self._keras_started = True
        from keras_side import KerasWorker, find_keras_python

        python, note = find_keras_python()
        if python is None:
            self.keras_why = note
            self.log(f"keras: {note}")
            return
        try:
            self.keras = KerasWorker(python, self.threads)
            self.log(f"keras: {self.keras.info} via {python}")
        except Exception as err:
            self.keras_why = f"keras worker failed to start: {err}"
            self.log(self.keras_why)

    def keras_load(self, name: str, x: Any, y: Any = None) -> None:
        """Start the worker on first use and hand it an array (once per name)."""
        self._start_keras()
        if self.keras is not None:
            self.keras.load(name, x, y)

    def close(self) -> None:
        if self.keras is not None:
            self.keras.close()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer images and contenders: a smoke test, not figures")
    p.add_argument("--scenarios", default=",".join(DEFAULT),
                   help=f"comma-separated, from {','.join(SCENARIOS)} (default: all but loop)")
    p.add_argument("--passes", type=int, default=None, help="timed passes per contender (default 3; 2 with --quick)")
    p.add_argument("--threads", type=int, default=2, help="torch and TensorFlow intra-op threads (default 2)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (Keras stays on the CPU and is left out on cuda)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N training images")
    p.add_argument("--vgg-images", type=int, default=None, help="images for the VGG scenario (default 256; 64 quick)")
    p.add_argument("--study-seeds", type=int, default=None, help="seeds in the study scenario (default 2; 1 quick)")
    p.add_argument("--compile", action="store_true", help="loop scenario: add a torch.compile row")
    p.add_argument("--no-keras", action="store_true", help="leave Keras out")
    p.add_argument("--json", default=None, help="results file (default bench/results/<time>-<device>.json)")
    args = p.parse_args(argv)
    args.passes = args.passes or (2 if args.quick else 3)
    if args.quick and args.limit is None:
        args.limit = 11000
    unknown = [s for s in args.scenarios.split(",") if s not in SCENARIOS]
    if unknown:
        p.error(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    set_threads(args.threads)
    os.environ.setdefault("GRAFTNET_QUIET", "1")
    ctx = Context(args)
    info = machine_info(args.threads, args.device)
    print(f"graftnet bench: {info['cpu']} ({info['cpu_count']} cores; {', '.join(info['cpu_flags']) or 'no AVX-512'}), torch {info['torch']}, "
          f"{args.threads} threads, device {args.device}, {args.passes} passes"
          + (", QUICK" if args.quick else ""), flush=True)
    results: list[Any] = []
    started = time.perf_counter()
    path = Path(args.json) if args.json else HERE / "results" / f"{time.strftime('%Y%m%d-%H%M%S')}-{args.device}.json"
    try:
        for name in args.scenarios.split(","):
            module = __import__(f"scenario_{name}")
            t0 = time.perf_counter()
            try:
                made = module.scenarios(ctx)
            except Exception as err:  # a broken scenario is reported; the others still run
                import traceback

                traceback.print_exc()
                from common import Scenario

                made = [Scenario(name, f"({name}) failed", notes=[f"{type(err).__name__}: {err}"])]
            for s in made:
                s.figures["scenario_seconds"] = round(time.perf_counter() - t0, 1)
                print(format_table(s), flush=True)
                print(flush=True)
            results.extend(made)
            _save(path, args, info, ctx, results, started)  # after each scenario: a cut-off run keeps the rest
    finally:
        ctx.close()
    info["loadavg_end"] = os.getloadavg()
    _save(path, args, info, ctx, results, started)
    print(f"results: {path}", flush=True)
    return 0


def _save(path: Path, args: argparse.Namespace, info: dict[str, Any], ctx: Context, results: list[Any],
          started: float) -> None:
    info = {**info, "keras": ctx.keras.info if ctx.keras is not None else ctx.keras_why}
    write_json(path, {"args": vars(args), "machine": info, "total_seconds": round(time.perf_counter() - started, 1),
                      "scenarios": [s.to_dict() for s in results]})


if __name__ == "__main__":
    sys.exit(main())
