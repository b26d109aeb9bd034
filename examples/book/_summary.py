"""The Measured table of examples/README.md, from the JSON files ``make examples`` writes.

    python examples/book/_summary.py        # prints Markdown: one row per figure a companion printed
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "results" / "book"


def rows() -> list[str]:
    lines = ["| script | figure | book | graftnet: mean ± sd (seeds) | difference | note | run time |",
             "|---|---|---|---|---|---|---|"]
    for path in sorted(RESULTS.glob("ch*.json")):
        record = json.loads(path.read_text())
        if record.get("smoke"):
            continue
        for row in record["rows"]:
            ours = row["ours"]
            spread = f" ± {statistics.stdev(ours):.4f}" if len(ours) > 1 else ""
            book = row["book"]
            diff = "—" if book is None else f"{(row['mean'] - book) * 100:+.2f} points"
            lines.append(f"| {record['script']} | {row['label']} | {'—' if book is None else f'{book:.4f}'} | "
                         f"{row['mean']:.4f}{spread} ({row['seeds']}) | {diff} | {row['note'] or ''} | "
                         f"{record['seconds']:.0f} s |")
    return lines


if __name__ == "__main__":
    print("\n".join(rows()))
