"""The README says what the code does: its headline example is examples/headline.py, verbatim."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_headline_example_is_the_script_whose_output_the_readme_shows():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"## In Python\n\n```python\n(.*?)```\n", readme, re.S)
    assert block is not None, "README.md lost its '## In Python' code block"
    script = (ROOT / "examples" / "headline.py").read_text(encoding="utf-8")
    assert block.group(1) == script[script.index("import graftnet as gn"):]
    # the settings the README's own study shows to work: fine-tuning at the head's rate, not lr 1e-4
    assert 'gn.Stage(16, train="all")' in block.group(1) and "lr=1e-4" not in block.group(1)
    shown = re.search(r"it printed.*?\n\n```\n(.*?)```", readme[block.end():], re.S)
    assert shown is not None and "model B on A:    test accuracy 0." in shown.group(1)
