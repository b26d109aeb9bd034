#!/usr/bin/env python
"""Markdown tables from a results file written by bench/run.py (for bench/README.md).

    python bench/to_markdown.py bench/results/cpu-1thread-run1.json [--scenarios mlp_b200,frozen_b200]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def scenario_table(s: dict) -> str:
    ref = next((r["median_s"] for r in s["rows"] if r["name"] == s["reference"]), None)
    lines = [f"**{s['title']}** ({s['unit']}, median of passes; ratio to *{s['reference'] or '-'}*)", "",
             "| contender | median | min | ratio | runs |", "|---|---:|---:|---:|---|"]
    for r in s["rows"]:
        if r["median_s"] is None:
            lines.append(f"| {r['name']} | n/a | | | {r['error']} |")
            continue
        ratio = r["median_s"] / ref if ref else None
        runs = " ".join(f"{t:.4g}" for t in r["runs_s"]) + (" (bound)" if r["bound"] else "")
        lines.append(f"| {r['name']} | {_fmt(r['median_s'])} | {_fmt(r['min_s'])} | {_fmt(ratio, 3)} | {runs} |")
    extra = []
    for k, v in s["figures"].items():
        if k in ("step_gemms", "cached step GEMMs", "scenario_seconds"):
            continue
        extra.append(f"- {k}: {v}")
    for t in s["targets"]:
        mark = {True: "**met**", False: "**missed**", None: "n/a"}[t["met"]]
        extra.append(f"- target {t['target']}: {t['value']} (limit {t['limit']}): {mark}")
    extra += [f"- note: {n}" for n in s["notes"]]
    return "\n".join(lines + [""] + extra)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("results")
    p.add_argument("--scenarios", default=None, help="comma-separated scenario names (default all)")
    args = p.parse_args()
    data = json.loads(Path(args.results).read_text())
    m = data["machine"]
    print(f"Run: `{' '.join(sys.argv[1:])}` — {m['cpu']} ({m['cpu_count']} cores), torch {m['torch']}, "
          f"{m['threads']} threads, device {m['device']}{', ' + m['gpu'] if 'gpu' in m else ''}; "
          f"load average at start {tuple(round(x, 1) for x in m['loadavg_start'])}, end "
          f"{tuple(round(x, 1) for x in m.get('loadavg_end', ()))}; keras: {m.get('keras')}; "
          f"{data['args']['passes']} passes, {data['total_seconds']} s in all.\n")
    wanted = set(args.scenarios.split(",")) if args.scenarios else None
    for s in data["scenarios"]:
        if wanted is None or s["name"] in wanted:
            print(scenario_table(s))
            print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
