"""``make fuzz``: every importer on mutated and truncated files, offline; crashes, hangs and unclear messages.

Each target is an importer and a seed from fuzz/corpus/ (see fuzz/make_corpus.py). A case
copies the seed into a fresh folder, damages one file (truncation, bit flips, overwritten,
deleted, inserted or repeated bytes, boundary integers; inside a zip archive a member; in a
JSON file a value), runs the importer in a worker process and sorts the outcome:

    loaded    the importer accepted the file (a flipped bit in a weight is still a model)
    clear     a GraftnetError naming the file, 20..4000 characters, no traceback or
              weights_only advice
    unclear   a GraftnetError that does not say which file, is empty or huge, or passes on
              torch's advice to bypass its safe loader
    crash     any other exception (a bug), or the worker process died
    hang      no answer within --timeout seconds (the worker is killed)
    wrote     the importer changed the folder it read from

The cases are numbered and seeded (``--seed``): ``--only NAME --case I`` repeats one.

    python fuzz/run.py --cases 1000 --workers 2          # what `make fuzz` runs
    python fuzz/run.py --only torch_pt --case 17 -v      # one case, with its error
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import shutil
import sys
import tempfile
import time
import traceback
import zipfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"


# ======================================================================= targets
@dataclass(frozen=True)
class Target:
    """An importer and its seed: a file, or a folder whose files are mutated one at a time."""

    name: str
    seed: str  # under fuzz/corpus/
    load: Callable[[Path], Any]  # the importer, given the mutated file or folder


def _net():  # the network the torch / npz seeds hold (fuzz/make_corpus.py)
    import torch

    from graftnet.network import Network

    torch.manual_seed(0)
    return Network.mlp(20, [16, 8], 3, batch_norm=True, name="fuzz")


_CNN_SPEC: dict[str, Any] = {}


def _cnn():  # the architecture of keras2_cnn_weights.h5, from the (intact) .keras seed
    from graftnet.io.keras import load_keras
    from graftnet.network import Network

    if not _CNN_SPEC:
        _CNN_SPEC.update(load_keras(CORPUS / "keras2_cnn.keras")[0].to_spec())
    return Network.from_spec(_CNN_SPEC)


def _keras(path: Path) -> Any:
    from graftnet.io.keras import load_keras

    return load_keras(path)


def _keras_weights(path: Path) -> Any:
    from graftnet.io.keras import load_keras_weights

    return load_keras_weights(_cnn(), path)


def _tf(path: Path) -> Any:
    from graftnet.io.tf_checkpoint import read_tf_checkpoint

    return read_tf_checkpoint(path)


def _tf_meta(path: Path) -> Any:
    from graftnet.io.tf_graph import import_meta_graph

    return import_meta_graph(path / "model.ckpt")


def _saved_model(path: Path) -> Any:
    from graftnet.io.saved_model import load_saved_model

    return load_saved_model(path)


def _torch(path: Path) -> Any:
    from graftnet.io.torch_state import load_state

    return load_state(_net(), path)


def _npz(path: Path) -> Any:
    from graftnet.io.npz import load_npz

    return load_npz(_net(), path)


def _model(path: Path) -> Any:
    from graftnet.io.checkpoint import load_model

    return load_model(path)


def _checkpoint(path: Path) -> Any:
    from graftnet.io.checkpoint import read_checkpoint

    return read_checkpoint(path)


TARGETS = {t.name: t for t in (
    Target("keras_h5", "keras2_mlp.h5", _keras),
    Target("keras_archive", "keras2_cnn.keras", _keras),
    Target("keras_weights_h5", "keras2_cnn_weights.h5", _keras_weights),
    Target("tf2_checkpoint", "tf2_mlp", _tf),
    Target("tf1_checkpoint", "tf1_scoped", _tf),
    Target("tf1_meta_graph", "tf1_meta", _tf_meta),
    Target("savedmodel_keras2", "savedmodel_keras2", _saved_model),  # saved_model.pb, keras_metadata.pb, ...
    Target("savedmodel_keras3", "savedmodel_keras3", _saved_model),
    Target("torch_pt", "mlp.pt", _torch),
    Target("torch_legacy_pt", "mlp_legacy.pt", _torch),
    Target("safetensors", "mlp.safetensors", _torch),
    Target("npz", "mlp.npz", _npz),
    Target("graftnet_model", "model", _model),
    Target("graftnet_checkpoint", "checkpoint", _checkpoint),
)}


# ======================================================================= mutations
INTERESTING = (0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, 2**63 - 1, 2**64 - 1)


def mutate_bytes(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """One random damage to ``data`` and its description."""
    n = len(data)
    kind = rng.choice(["truncate", "truncate", "flip", "flip", "overwrite", "zeros", "delete", "insert",
                       "repeat", "integer", "empty"])
    if kind == "empty" or n == 0:
        return b"", "emptied"
    at = rng.randrange(n)
    span = rng.randint(1, min(64, n - at))
    if kind == "truncate":
        return data[:at], f"truncated to {at} of {n} bytes"
    if kind == "flip":
        out = bytearray(data)
        spots = [rng.randrange(n) for _ in range(rng.randint(1, 8))]
        for spot in spots:
            out[spot] ^= 1 << rng.randrange(8)
        return bytes(out), f"bits flipped at {spots}"
    if kind == "overwrite":
        return data[:at] + rng.randbytes(span) + data[at + span:], f"{span} random bytes at {at}"
    if kind == "zeros":
        fill = rng.choice([b"\x00", b"\xff"])
        return data[:at] + fill * span + data[at + span:], f"{span} x {fill!r} at {at}"
    if kind == "delete":
        return data[:at] + data[at + span:], f"{span} bytes deleted at {at}"
    if kind == "insert":
        return data[:at] + rng.randbytes(span) + data[at:], f"{span} bytes inserted at {at}"
    if kind == "repeat":
        return data[:at] + data[at:at + span] * rng.randint(2, 50) + data[at + span:], f"{span} bytes repeated at {at}"
    value = rng.choice(INTERESTING)
    width = rng.choice([2, 4, 8]) if value < 2**16 else (4 if value < 2**32 else 8)
    packed = (value % 2**(8 * width)).to_bytes(width, rng.choice(["little", "big"]))
    return data[:at] + packed + data[at + len(packed):], f"integer {value:#x} written at {at}"


def mutate_json(text: bytes, rng: random.Random) -> tuple[bytes, str]:
    """A well-formed JSON file with one value changed, a key dropped or a type swapped."""
    try:
        doc = json.loads(text)
    except ValueError:
        return mutate_bytes(text, rng)
    spots: list[tuple[Any, Any]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            spots.extend((node, k) for k in node)
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            spots.extend((node, i) for i in range(len(node)))
            for v in node:
                walk(v)

    walk(doc)
    if not spots:
        return mutate_bytes(text, rng)
    parent, key = rng.choice(spots)
    choice = rng.choice(["drop", "null", "huge", "negative", "string", "list", "nested"])
    if choice == "drop":
        del parent[key]
    else:
        parent[key] = {"null": None, "huge": 10**30, "negative": -7, "string": "\u00e9\x00?", "list": [1, "x"],
                       "nested": {"a": [[[]]]}}[choice]
    return json.dumps(doc).encode(), f"JSON {choice} at {key!r}"


def mutate_file(path: Path, rng: random.Random) -> str:
    """Damage ``path`` in place (a zip archive: often one member); the description."""
    data = path.read_bytes()
    if zipfile.is_zipfile(path) and rng.random() < 0.6:
        with zipfile.ZipFile(path) as archive:
            members = [(info, archive.read(info)) for info in archive.infolist()]
        index = rng.randrange(len(members))
        info, body = members[index]
        body, what = (mutate_json if info.filename.endswith(".json") else mutate_bytes)(body, rng)
        with zipfile.ZipFile(path, "w") as archive:
            for i, (other, content) in enumerate(members):
                archive.writestr(other, body if i == index else content)
        return f"member {info.filename}: {what}"
    data, what = (mutate_json if path.suffix == ".json" else mutate_bytes)(data, rng)
    path.write_bytes(data)
    return what


def make_case(target: Target, index: int, seed: int, work: Path) -> tuple[Path, Path, str]:
    """The damaged copy of the target's seed for case ``index``: (what to import, file changed, how)."""
    rng = random.Random(f"{seed}:{target.name}:{index}")
    source = CORPUS / target.seed
    copy = work / target.seed
    if source.is_dir():
        shutil.copytree(source, copy)
        files = sorted(p for p in copy.iterdir() if p.is_file())
        victim = rng.choice(files)
        if rng.random() < 0.05:
            victim.unlink()
            return copy, victim, f"{victim.name} deleted"
        return copy, victim, f"{victim.name}: {mutate_file(victim, rng)}"
    shutil.copy(source, copy)
    return copy, copy, mutate_file(copy, rng)


def _listing(folder: Path) -> list[tuple[str, int, int]]:
    return sorted((str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns)
                  for p in folder.rglob("*") if p.is_file())


def run_case(name: str, index: int, seed: int) -> dict[str, Any]:
    """Make and import one case in this process: its outcome and message."""
    from graftnet.errors import GraftnetError

    target = TARGETS[name]
    with tempfile.TemporaryDirectory(prefix="graftnet-fuzz-") as tmp:
        work = Path(tmp)
        path, victim, how = make_case(target, index, seed, work)
        before = _listing(work)
        t0 = time.perf_counter()
        outcome, message = "loaded", ""
        try:
            target.load(path)
        except GraftnetError as err:
            message = str(err)
            outcome = "clear" if _is_clear(message, path, victim) else "unclear"
        except Exception as err:  # noqa: BLE001 - anything else is what fuzzing looks for
            outcome = "crash"
            message = "".join(traceback.format_exception_only(type(err), err)).strip()
            message += "\n" + "".join(traceback.format_tb(err.__traceback__)[-3:])
        seconds = time.perf_counter() - t0
        if outcome in ("loaded", "clear") and _listing(work) != before:
            outcome = "wrote"
    return {"target": name, "case": index, "mutation": how, "outcome": outcome, "message": message[:2000],
            "seconds": round(seconds, 3)}


def _is_clear(message: str, path: Path, victim: Path) -> bool:
    names_it = any(part in message for part in (path.name, victim.name))
    return (names_it and 20 <= len(message) <= 4000 and "Traceback" not in message
            and "weights_only" not in message)


# ======================================================================= workers
def _serve(conn: Connection) -> None:
    """A worker: runs the cases it is sent until it is sent None."""
    import graftnet.io.keras as keras_io
    from graftnet.io import checkpoint, npz, tf_checkpoint, torch_state  # noqa: F401 - imported before the clock runs

    keras_io.READ_TIMEOUT_S = 5.0  # libhdf5 loops on some corrupt files; its reader stops it after this
    conn.send("ready")  # a case's time limit counts from here: importing is not the importer's time
    while True:
        job = conn.recv()
        if job is None:
            return
        conn.send(run_case(*job))


class _Worker:
    def __init__(self, ctx: Any) -> None:
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child,))  # not a daemon: the HDF5 reader forks
        self.proc.start()
        child.close()
        self.job: tuple[str, int, int] | None = None
        self.started = 0.0
        self.ready = False

    def send(self, job: tuple[str, int, int]) -> None:
        if not self.ready:
            if not self.conn.poll(600) or self.conn.recv() != "ready":
                raise RuntimeError("a fuzz worker did not start within 600 s")
            self.ready = True
        self.job, self.started = job, time.monotonic()
        self.conn.send(job)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.join()


def run_all(jobs: list[tuple[str, int, int]], workers: int, timeout: float,
            report: Callable[[dict[str, Any]], None]) -> None:
    """Run every job on ``workers`` processes; a worker that hangs or dies is replaced."""
    ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    pending = list(reversed(jobs))
    pool = [_Worker(ctx) for _ in range(min(workers, len(jobs)))]
    while pending or any(w.job for w in pool):
        for w in pool:
            if w.job is None and pending:
                w.send(pending.pop())
        ready = wait([w.conn for w in pool if w.job], timeout=0.5)
        for i, w in enumerate(pool):
            if w.job is None:
                continue
            name, index, _ = w.job
            if w.conn in ready:
                try:
                    result = w.conn.recv()
                except (EOFError, OSError):  # the worker died: a crash in native code
                    result = {"target": name, "case": index, "outcome": "crash", "seconds": None,
                              "mutation": "", "message": f"worker process died (exit code {w.proc.exitcode})"}
                    w.kill()
                    pool[i] = _Worker(ctx)
                else:
                    w.job = None
                report(result)
            elif time.monotonic() - w.started > timeout:
                report({"target": name, "case": index, "outcome": "hang", "seconds": timeout, "mutation": "",
                        "message": f"no answer after {timeout:.0f} s"})
                w.kill()
                pool[i] = _Worker(ctx)
    for w in pool:
        w.conn.send(None)
        w.proc.join(5)


# ======================================================================= main
PROBLEMS = ("unclear", "crash", "hang", "wrote")
OUTCOMES = ("loaded", "clear", *PROBLEMS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=1000, help="cases per target (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the mutations (default 0)")
    parser.add_argument("--workers", type=int, default=max(1, min(4, (os.cpu_count() or 2))))
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds before a case counts as a hang")
    parser.add_argument("--only", action="append", choices=sorted(TARGETS), help="these targets only")
    parser.add_argument("--case", type=int, help="run only case I (in this process, with -v)")
    parser.add_argument("--json", metavar="FILE", help="write every problem case and the totals to FILE")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every case")
    args = parser.parse_args(argv)
    names = args.only or list(TARGETS)
    if args.case is not None:
        for name in names:
            print(json.dumps(run_case(name, args.case, args.seed), indent=2))
        return 0
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    counts = {name: Counter() for name in names}
    problems: list[dict[str, Any]] = []
    slowest = {name: 0.0 for name in names}
    t0 = time.perf_counter()

    def report(result: dict[str, Any]) -> None:
        counts[result["target"]][result["outcome"]] += 1
        done = sum(sum(c.values()) for c in counts.values())
        if done % 1000 == 0:
            print(f"... {done:,} of {len(jobs):,} cases, {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
        slowest[result["target"]] = max(slowest[result["target"]], result.get("seconds") or 0.0)
        if result["outcome"] in PROBLEMS:
            problems.append(result)
            print(f"{result['outcome'].upper()}: {result['target']} case {result['case']} "
                  f"({result['mutation']}): {result['message'].splitlines()[0] if result['message'] else ''}",
                  file=sys.stderr, flush=True)
        elif args.verbose:
            print(f"{result['target']} {result['case']}: {result['outcome']} ({result['mutation']})", flush=True)

    jobs = [(name, i, args.seed) for i in range(args.cases) for name in names]
    run_all(jobs, args.workers, args.timeout, report)
    wall = time.perf_counter() - t0
    header = f"{'target':22} {'cases':>6} " + " ".join(f"{o:>7}" for o in OUTCOMES) + "  slowest"
    print(header)
    for name in names:
        c = counts[name]
        print(f"{name:22} {sum(c.values()):>6} " + " ".join(f"{c[o]:>7}" for o in OUTCOMES)
              + f"  {slowest[name]:.2f}s")
    total = sum(sum(c.values()) for c in counts.values())
    bad = {o: sum(c[o] for c in counts.values()) for o in PROBLEMS}
    print(f"{total:,} cases in {wall:.0f} s on {args.workers} worker(s), seed {args.seed}: "
          + ", ".join(f"{n} {o}" for o, n in bad.items()))
    if args.json:
        Path(args.json).write_text(json.dumps({"seed": args.seed, "cases": args.cases, "wall_seconds": round(wall),
                                               "counts": {n: dict(c) for n, c in counts.items()},
                                               "problems": problems}, indent=2) + "\n")
    return 1 if any(bad.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
