"""Shared pieces of the benchmark suite: contenders, interleaved timing, results, tables.

Every scenario builds a list of :class:`Contender` s that each train (or infer) the same
thing on the same data; :func:`measure` runs one warm-up epoch of each, then ``passes``
rounds in which every contender runs one epoch in turn (interleaved, so the machine's
speed drift hits all of them alike), and keeps the seconds of each. Only ratios taken
inside one run are meant to be compared.

    >>> rows = measure([PlainLoop(...), GraftnetFit(...)], passes=3)
    >>> print(format_table("mlp b200", rows, reference="torch tensor loop"))
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

__all__ = ["Contender", "FunctionContender", "Row", "measure", "format_table", "machine_info",
           "set_threads", "sync", "Stopwatch", "fashion_arrays", "BENCH_DIR", "Scenario"]

BENCH_DIR = Path(__file__).resolve().parent


def set_threads(n: int) -> None:
    """Use ``n`` intra-op threads (and one inter-op thread) in torch; also the env for children."""
    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set once in this process
        pass
    os.environ["OMP_NUM_THREADS"] = str(n)
    os.environ["MKL_NUM_THREADS"] = str(n)


def sync(device: torch.device | str) -> None:
    """Wait for queued GPU work (a no-op on the CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


class Stopwatch:
    """Wall-clock seconds of a block, synchronising the device first and last."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.seconds = 0.0

    def __enter__(self) -> Stopwatch:
        sync(self.device)
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        sync(self.device)
        self.seconds = time.perf_counter() - self._t0


class Contender:
    """One way of doing a scenario's work. ``run()`` does one unit (an epoch, a cache
    build) and returns its seconds; it may set ``self.extra`` (e.g. the wall of a whole
    ``fit`` call) which is kept per pass."""

    name: str = "contender"
    kind: str = "time"  # "time": lower is better
    available: bool = True
    why_unavailable: str = ""

    def setup(self) -> None:
        """Build models and state (not timed)."""

    def run(self) -> float:
        raise NotImplementedError

    def close(self) -> None:
        """Free what setup built."""

    def extras(self) -> dict[str, Any]:
        return getattr(self, "extra", {}) or {}


class FunctionContender(Contender):
    """A contender from a ``setup() -> run()`` function pair."""

    def __init__(self, name: str, make: Callable[[], Callable[[], float]], note: str = "") -> None:
        self.name, self._make, self.note = name, make, note
        self._run: Callable[[], float] | None = None

    def setup(self) -> None:
        self._run = self._make()

    def run(self) -> float:
        assert self._run is not None, "setup() first"
        return self._run()

    def close(self) -> None:
        self._run = None


@dataclass
class Row:
    """Measured seconds of one contender (or a computed bound) in one scenario."""

    name: str
    runs: list[float] = field(default_factory=list)
    note: str = ""
    extras: list[dict[str, Any]] = field(default_factory=list)
    bound: bool = False  # a computed lower bound, not a contender
    error: str = ""

    @property
    def median(self) -> float | None:
        return statistics.median(self.runs) if self.runs else None

    @property
    def best(self) -> float | None:
        return min(self.runs) if self.runs else None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "median_s": self.median, "min_s": self.best, "runs_s": self.runs,
                "note": self.note, "bound": self.bound, "error": self.error, "extras": self.extras}


def measure(contenders: Sequence[Contender], passes: int, warmup: int = 1,
            log: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True)) -> list[Row]:
    """Warm each contender up, then ``passes`` interleaved rounds of one ``run()`` each."""
    rows: dict[str, Row] = {}
    live: list[Contender] = []
    for c in contenders:
        row = rows[c.name] = Row(c.name, note=getattr(c, "note", ""))
        if not c.available:
            row.error = c.why_unavailable
            log(f"  {c.name}: skipped ({c.why_unavailable})")
            continue
        try:
            c.setup()
            for _ in range(warmup):
                c.run()
            live.append(c)
        except Exception as err:  # a contender that cannot run is reported, not fatal
            row.error = f"{type(err).__name__}: {err}"
            log(f"  {c.name}: failed in setup/warm-up: {row.error}")
    for p in range(passes):
        for c in list(live):
            try:
                seconds = c.run()
            except Exception as err:
                rows[c.name].error = f"{type(err).__name__}: {err}"
                log(f"  {c.name}: failed in pass {p + 1}: {rows[c.name].error}")
                live.remove(c)
                continue
            rows[c.name].runs.append(seconds)
            rows[c.name].extras.append(dict(c.extras()))
            log(f"  pass {p + 1}/{passes}  {c.name:<38s} {seconds:8.4f} s")
    for c in contenders:
        try:
            c.close()
        except Exception:
            pass
    return list(rows.values())


@dataclass
class Scenario:
    """What one scenario measured: rows, the reference row, derived figures and targets."""

    name: str
    title: str
    unit: str = "s/epoch"
    reference: str = ""
    rows: list[Row] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    targets: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def row(self, name: str) -> Row | None:
        return next((r for r in self.rows if r.name == name), None)

    def median(self, name: str) -> float | None:
        r = self.row(name)
        return r.median if r else None

    def target(self, what: str, value: float | None, limit: float, better: str = "lower") -> None:
        """Record a target check: ``value`` (a ratio) against ``limit``."""
        if value is None:
            self.targets.append({"target": what, "value": None, "limit": limit, "met": None})
            return
        met = value <= limit if better == "lower" else value >= limit
        self.targets.append({"target": what, "value": round(value, 3), "limit": limit, "met": met})

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "title": self.title, "unit": self.unit, "reference": self.reference,
                "rows": [r.to_dict() for r in self.rows], "figures": self.figures, "targets": self.targets,
                "notes": self.notes}


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def format_table(s: Scenario) -> str:
    """The scenario's rows: median, min, ratio to the reference, runs; then targets."""
    ref = s.median(s.reference) if s.reference else None
    lines = [f"== {s.title}  [{s.unit}; ratio = median / {s.reference or '-'}]"]
    width = max([len(r.name) for r in s.rows] + [10])
    lines.append(f"  {'contender':<{width}s}  {'median':>9s}  {'min':>9s}  {'ratio':>7s}  runs")
    for r in s.rows:
        if r.error and not r.runs:
            lines.append(f"  {r.name:<{width}s}  {'n/a':>9s}  {'':>9s}  {'':>7s}  {r.error}")
            continue
        rr = ratio(r.median, ref)
        runs = " ".join(f"{t:.4g}" for t in r.runs)
        tag = " (bound)" if r.bound else ""
        lines.append(f"  {r.name:<{width}s}  {r.median:9.4f}  {r.best:9.4f}  "
                     f"{(f'{rr:.3f}' if rr is not None else '-'):>7s}  {runs}{tag}")
    for key, value in s.figures.items():
        lines.append(f"  {key}: {value}")
    for t in s.targets:
        mark = {True: "MET", False: "MISSED", None: "n/a"}[t["met"]]
        lines.append(f"  target {t['target']}: {t['value']} (limit {t['limit']}) {mark}")
    for n in s.notes:
        lines.append(f"  note: {n}")
    return "\n".join(lines)


def machine_info(threads: int, device: str) -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu, flags = "", []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and not cpu:
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:  # the ones that decide which kernels run
                have = set(line.split(":", 1)[1].split())
                flags = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx512_vnni")
                         if f in have]
    except OSError:
        pass
    info = {"python": platform.python_version(), "torch": torch.__version__, "cpu": cpu, "cpu_flags": flags,
            "cpu_count": os.cpu_count(), "threads": threads, "device": device,
            "mkldnn": torch.backends.mkldnn.is_available(),
            "loadavg_start": os.getloadavg(), "time": time.strftime("%Y-%m-%d %H:%M:%S")}
    if torch.device(device).type == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
    return info


def fashion_arrays(limit: int | None = None):
    """Fashion-MNIST through graftnet's loader: the Dataset with no validation split,
    and the full Dataset (for validation variants). ``limit`` keeps the first n training images."""
    from graftnet.data import Dataset, Split, fashion_mnist

    full = fashion_mnist()
    train = full.train if limit is None else Split(full.train.x[:limit], full.train.y[:limit])
    no_valid = Dataset(full.name, train, None, None, full.classes, full.task, full.source)
    with_valid = Dataset(full.name, train, full.valid, None, full.classes, full.task, full.source)
    return no_valid, with_valid


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1, default=str))
    tmp.replace(path)
