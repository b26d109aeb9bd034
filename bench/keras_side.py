"""The parent's handle on the Keras worker process (``keras_worker.py``).

The interpreter is ``$GRAFTNET_BENCH_KERAS_PYTHON``, else ``/tmp/benchvenv/bin/python``,
else this interpreter, whichever first imports tensorflow and keras. ``make bench``
creates ``.venv-bench`` (``BENCH_VENV``) with ``tensorflow-cpu==2.21.0`` and ``keras`` when
it can and sets ``GRAFTNET_BENCH_KERAS_PYTHON`` to its interpreter.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from common import BENCH_DIR, Contender

__all__ = ["KerasWorker", "KerasEpoch", "KerasPredict", "find_keras_python"]

CANDIDATES = [os.environ.get("GRAFTNET_BENCH_KERAS_PYTHON", ""), "/tmp/benchvenv/bin/python", sys.executable]


def find_keras_python() -> tuple[str | None, str]:
    """An interpreter that has tensorflow + keras, and a note on what was tried."""
    tried = []
    for exe in CANDIDATES:
        if not exe or not Path(exe).exists():
            continue
        probe = subprocess.run([exe, "-c", "import tensorflow, keras"], capture_output=True, text=True,
                               env={**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3"})
        if probe.returncode == 0:
            return exe, exe
        tried.append(exe)
    return None, "no interpreter with tensorflow + keras (tried " + ", ".join(tried) + \
        "); run `make bench`, or `python -m venv .venv-bench && .venv-bench/bin/pip install " \
        "tensorflow-cpu==2.21.0 keras` and set GRAFTNET_BENCH_KERAS_PYTHON=.venv-bench/bin/python"


class KerasWorker:
    """A running ``keras_worker.py``: ``call(op, **fields) -> reply``."""

    def __init__(self, python: str, threads: int) -> None:
        self.tmp = tempfile.TemporaryDirectory(prefix="graftnet-bench-keras-")
        self.log = open(Path(self.tmp.name) / "worker.log", "w")
        env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2",
               "OMP_NUM_THREADS": str(threads), "CUDA_VISIBLE_DEVICES": ""}
        self.proc = subprocess.Popen([python, str(BENCH_DIR / "keras_worker.py")], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.log, text=True, env=env)
        self.info = self.call("hello", threads=threads)
        self.loaded: set[str] = set()

    def call(self, op: str, **fields: Any) -> dict[str, Any]:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps({"op": op, **fields}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            self.log.flush()
            tail = (Path(self.tmp.name) / "worker.log").read_text()[-2000:]
            raise RuntimeError(f"keras worker exited during {op!r}; its log ends with:\n{tail}")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"keras worker, {op}: {reply['error']}")
        return reply

    def load(self, name: str, x: np.ndarray, y: np.ndarray | None = None) -> None:
        """Hand arrays over through .npy files in the worker's temporary folder."""
        if name in self.loaded:
            return
        xp = Path(self.tmp.name) / f"{name}_x.npy"
        np.save(xp, np.ascontiguousarray(x))
        yp = None
        if y is not None:
            yp = Path(self.tmp.name) / f"{name}_y.npy"
            np.save(yp, np.ascontiguousarray(y))
        self.call("load", name=name, x=str(xp), y=str(yp) if yp else None)
        xp.unlink()
        if yp:
            yp.unlink()
        self.loaded.add(name)

    def close(self) -> None:
        try:
            if self.proc.poll() is None and self.proc.stdin:
                self.proc.stdin.write('{"op": "quit"}\n')
                self.proc.stdin.flush()
                self.proc.wait(timeout=30)
        except Exception:
            self.proc.kill()
        self.log.close()
        self.tmp.cleanup()


class _KerasContender(Contender):
    """A model built in the Keras worker once (``setup``), then timed by ``run``."""

    def __init__(self, name: str, worker: KerasWorker | None, build: dict[str, Any], data: str, batch: int,
                 note: str = "", why: str = "") -> None:
        self.name, self.worker, self.build, self.data, self.batch, self.note = name, worker, build, data, batch, note
        self.available = worker is not None
        self.why_unavailable = why
        self.id = f"{name}-{id(self)}"

    def setup(self) -> None:
        assert self.worker is not None
        self.built = self.worker.call(self.build["op"], id=self.id, **{k: v for k, v in self.build.items() if k != "op"})


class KerasEpoch(_KerasContender):
    """One Keras ``fit`` epoch (timed by a callback from epoch begin to end)."""

    def run(self) -> float:
        assert self.worker is not None
        reply = self.worker.call("epoch", id=self.id, data=self.data, batch=self.batch)
        self.extra = {"fit_call_wall_s": round(reply["wall"], 4), "loss": round(reply["loss"], 4)}
        return float(reply["seconds"])


class KerasPredict(_KerasContender):
    """Keras ``predict`` over a loaded array; ``run()`` returns seconds."""

    def run(self) -> float:
        assert self.worker is not None
        return float(self.worker.call("predict", id=self.id, data=self.data, batch=self.batch)["seconds"])
