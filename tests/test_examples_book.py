"""Every book companion (examples/book/chNN_*.py) runs in smoke mode: the same code, a few steps."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BOOK = Path(__file__).resolve().parents[1] / "examples" / "book"
SCRIPTS = sorted(BOOK.glob("ch*.py"))
INDEX = (BOOK.parent / "README.md").read_text(encoding="utf-8")


def test_every_companion_is_in_the_index():
    assert SCRIPTS, f"no companion scripts in {BOOK}"
    missing = [s.name for s in SCRIPTS if f"book/{s.name}" not in INDEX]
    assert not missing, f"examples/README.md does not list {missing}"


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.stem for s in SCRIPTS])
def test_companion_runs_in_smoke_mode(script, tmp_path):
    src = Path(__file__).resolve().parents[1] / "src"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg", "TMPDIR": str(tmp_path)}
    out = tmp_path / "figures.json"
    done = subprocess.run([sys.executable, str(script), "--smoke", "--out", str(out)], cwd=BOOK, env=env,
                          capture_output=True, text=True, timeout=300)  # seconds idle; minutes on a loaded box
    assert done.returncode == 0, f"{script.name} --smoke failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    assert "done in" in done.stdout and out.is_file()
