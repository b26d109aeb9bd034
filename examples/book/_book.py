"""What every book companion shares: the --smoke flag, the data, the book-vs-ours table.

Each ``chNN_*.py`` script here runs one listing of our source notes (Hands-On ML chapters 10
and 11) the graftnet way. ``--smoke`` runs the same code on a few hundred examples for one
epoch (the test suite does this for every script); without it the script runs at full size
and writes ``examples/results/book/<script>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import graftnet as gn

RESULTS = Path(__file__).resolve().parents[1] / "results" / "book"


class Book:
    """One run of a companion script: its arguments, data, and the figures it prints."""

    def __init__(self, doc: str, seeds: int = 1) -> None:
        parser = argparse.ArgumentParser(description=(doc or "").strip().splitlines()[0])
        parser.add_argument("--smoke", action="store_true", help="a few steps on a small subset (the tests)")
        parser.add_argument("--seeds", type=int, default=seeds, help=f"seeds to average over (default {seeds})")
        parser.add_argument("--out", type=Path, default=None, help="where to write the figures (JSON)")
        self.args = parser.parse_args()
        self.smoke: bool = self.args.smoke
        self.seeds = list(range(42, 42 + (1 if self.smoke else self.args.seeds)))
        self.name = Path(sys.argv[0]).stem
        self.rows: list[dict] = []
        self.started = time.perf_counter()

    @property
    def workdir(self) -> Path:
        """A folder for the models a script saves (results/book/<script>/, a temp one in smoke)."""
        if self.smoke:
            import tempfile

            path = Path(tempfile.gettempdir()) / f"graftnet-book-smoke-{os.getpid()}" / self.name
        else:
            path = RESULTS / self.name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def epochs(self, n: int) -> int:
        return 1 if self.smoke else n

    def data(self, name: str = "mnist", **kw) -> gn.datasets.Dataset:
        """MNIST (or "fashion"), 55,000 / 5,000 / 10,000; 384 / 128 / 128 in smoke mode."""
        data = gn.datasets.fashion_mnist(**kw) if name == "fashion" else gn.datasets.mnist(**kw)
        return data.head(train=384, valid=128, test=128) if self.smoke else data

    def compare(self, label: str, book: float | None, ours: list[float], note: str = "") -> None:
        """Print the book's figure beside ours (mean ± sd over the seeds) and keep the row."""
        mean = statistics.fmean(ours)
        spread = f" ± {statistics.stdev(ours):.4f}" if len(ours) > 1 else ""
        book_text = "—" if book is None else f"{book:.4f}"
        verdict = ""
        if book is not None and not self.smoke:
            verdict = "  (same within 0.5 points)" if abs(mean - book) <= 0.005 else (
                f"  ({'higher' if mean > book else 'lower'} by {abs(mean - book) * 100:.1f} points)")
        print(f"{label}: book {book_text} | graftnet {mean:.4f}{spread} over {len(ours)} seed(s){verdict}"
              + (f"  [{note}]" if note else ""))
        self.rows.append({"label": label, "book": book, "ours": ours, "mean": mean, "seeds": len(ours), "note": note})

    def done(self, **extra) -> None:
        """Write the figures (full size only, unless --out is given)."""
        out = self.args.out or (None if self.smoke else RESULTS / f"{self.name}.json")
        seconds = round(time.perf_counter() - self.started, 1)
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            record = {"script": self.name, "smoke": self.smoke, "seconds": seconds, "rows": self.rows, **extra}
            out.write_text(json.dumps(record, indent=2, default=str) + "\n")
        print(f"{self.name}: done in {seconds} s" + (" (smoke)" if self.smoke else ""))


def final_valid_accuracy(history: gn.History) -> float:
    """The last epoch's validation accuracy, the figure the book's listings print."""
    return float(history.epochs[-1]["val_accuracy"])
