"""graftnet.report: the files a study writes, and that they read back and stand alone."""

from __future__ import annotations

import json
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from graftnet import report, study

sys.path.insert(0, str(Path(__file__).parent))
from test_study import FAST, tiny_base, tiny_task  # noqa: E402

REFERENCE = {"source": "a book", "values": {"scratch": 97.05, "frozen": 99.25},
             "labels": {"scratch": "model B", "frozen": "model B on A"}, "note": "single runs"}


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    result = study.run(tiny_base(), tiny_task(), seeds=2, variants=["scratch", "frozen", "unfreeze-top1"],
                       train_size=60, budgets=[30], reference=REFERENCE, out=out, **FAST)
    return result, out


def test_every_file_is_written(written):
    _, out = written
    names = {p.name for p in out.iterdir()}
    assert {"results.json", "report.md", "report.html", "variants.png", "differences.png",
            "learning_curves.png", "budget.png"} <= names
    assert not [n for n in names if n.startswith(".")]  # no temporary files left behind


def test_results_json_round_trips(written):
    result, out = written
    saved = json.loads((out / "results.json").read_text())
    assert saved["format"] == "graftnet.study/1"
    assert saved["runs"] == json.loads(json.dumps(result.runs))
    keys = {(r["variant"], r["seed"], r["budget"]) for r in saved["runs"]}
    assert ("frozen", 1, 60) in keys and ("scratch", 0, 30) in keys
    summary = saved["summary"]["variants"]
    assert [v["name"] for v in summary] == ["scratch", "frozen", "unfreeze-top1"]
    assert summary[1]["test"]["mean"] == pytest.approx(result.summary("frozen").test.mean)


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str, str]] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.links += [(tag, k, v or "") for k, v in attrs if k in ("src", "href")]


def test_html_is_self_contained(written):
    _, out = written
    parser = _Links()
    parser.feed((out / "report.html").read_text())
    assert parser.links, "the plots should be embedded as images"
    assert all(tag == "img" and key == "src" and value.startswith("data:image/png;base64,")
               for tag, key, value in parser.links), parser.links
    assert "link" not in parser.tags and "script" not in parser.tags
    assert parser.tags.count("img") == 4


def test_pngs_are_valid_images(written):
    _, out = written
    for name in ("variants", "differences", "learning_curves", "budget"):
        with Image.open(out / f"{name}.png") as image:
            image.verify()
            assert image.format == "PNG" and image.size[0] > 300 and image.size[1] > 200


def test_markdown_gives_seeds_spread_and_the_book_beside_ours(written):
    result, out = written
    text = (out / "report.md").read_text()
    frozen = result.summary("frozen").test
    assert text.startswith("# Transfer study: tiny-base → tiny")
    assert f"{frozen.mean:.2f} ± {frozen.std:.2f}" in text
    assert f"[{frozen.low:.2f}, {frozen.high:.2f}]" in text
    assert "over 2 seeds" in text
    assert "## Beside the published figures" in text and "| frozen | model B on A | 99.25 |" in text
    assert "![Label-budget curve](budget.png)" in text


def test_markdown_tables_escape_pipes():
    blocks = [report.Block("table", header=["a|b"], rows=[["x|y"]])]
    assert report.render_markdown(blocks) == "| a\\|b |\n|---|\n| x\\|y |\n"


def test_html_escapes_text():
    html = report.render_html([report.Block("p", "<script>alert(1)</script>")], images={})
    assert "<script>" not in html and "&lt;script&gt;" in html


def _fake_result(curves: dict[str, list[float]]) -> study.StudyResult:
    """A result whose runs have the given validation curves (the same for seeds 0 and 1)."""
    runs = [{"variant": name, "seed": seed, "budget": 100, "description": name, "test": {"accuracy": curve[-1]},
             "epochs": len(curve), "seconds": 1.0, "cache": {"hits": 0, "build_seconds": 0.0},
             "history": [{"epoch": i + 1, "val_accuracy": acc} for i, acc in enumerate(curve)]}
            for name, curve in curves.items() for seed in (0, 1)]
    variants = [study.parse_variant(name) for name in curves]
    return study.StudyResult(base={}, task={}, settings={}, seeds=[0, 1], budget=100,
                             variants=study._summarize_variants(runs, variants, [0, 1], 100), runs=runs)


def test_still_improving_flags_curves_that_have_not_flattened():
    flat = [0.5, 0.9, 0.95, 0.96, 0.96, 0.96, 0.96, 0.96, 0.96, 0.96]
    rising = [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95]
    result = _fake_result({"scratch": flat, "frozen": rising})
    assert report.still_improving(result) == {"frozen": pytest.approx(10.0)}
    text = report.render_markdown(report._caveat_blocks(result))
    assert "still rising over the last 2 epochs for: frozen (+10.0 points)" in text


def _legend_texts(fig) -> list[str]:
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    return [t.get_text() for legend in legends for t in legend.get_texts()]


@pytest.mark.parametrize("name", ["variants", "differences", "learning_curves", "budget"])
def test_every_plot_has_a_legend_naming_its_colours(written, name):
    result, _ = written
    texts = _legend_texts(getattr(report, f"{name}_figure")(result))
    assert texts and all(texts)
    joined = " ".join(texts)
    if name == "differences":
        assert "adjusted p < 0.05" in joined and "no evidence" in joined and "primary" in joined
    elif name == "budget":
        assert "scratch: mean over seeds" in joined and "95% bootstrap CI" in joined
    else:
        assert "scratch" in joined


def test_report_gives_the_primary_verdict_and_holm_adjusted_p(written):
    result, out = written
    text = (out / "report.md").read_text()
    assert text.split("\n")[2].startswith("> **Primary comparison, frozen vs scratch (epochs budget): ")
    assert "The primary comparison was declared before the first run" in text
    header = next(line for line in text.splitlines() if line.startswith("| variant | what it does"))
    assert "| Holm-adjusted p |" in header and "| Hedges' g_z |" in header and "95% CI (bootstrap)" in header
    frozen = result.summary("frozen")
    row = next(line for line in text.splitlines() if line.startswith("| frozen (primary) | reusing"))
    assert f"| {frozen.p_adjusted:.3f} |" in row or "| < 0.001 |" in row


def test_budget_comparison_ranks_the_variants_under_each_budget():
    runs = {"epochs": {"scratch": [0.97, 0.98], "frozen": [0.90, 0.91]},
            "compute": {"scratch": [0.97, 0.98], "frozen": [0.985, 0.99]}}
    results = {}
    for budget, accuracy in runs.items():
        fake = _fake_result({name: [a] for name, a in zip(accuracy, [0.5, 0.5])})
        for r in fake.runs:
            r["test"]["accuracy"] = accuracy[r["variant"]][r["seed"]]
        variants = [study.parse_variant(n) for n in accuracy]
        fake.variants = study._summarize_variants(fake.runs, variants, [0, 1], 100, primary="frozen")
        fake.primary, fake.settings, fake.reference = "frozen", {"budget": budget}, REFERENCE
        results[budget] = fake
    text = report.render_markdown(report.budget_comparison_blocks(results))
    assert "| frozen (primary) | 90.50 ± 0.71 (#2)" in text and "98.75 ± 0.35 (#1)" in text
    assert "epochs: primary (frozen vs scratch)" in text
    assert "Published ranking (frozen > scratch): no: the means reverse it" in text
    assert "Published ranking (frozen > scratch): yes in the means" in text


def test_convergence_runs_stopped_by_the_cap_are_called_unconverged():
    result = _fake_result({"scratch": [0.5, 0.9, 0.95], "frozen": [0.5, 0.6, 0.7]})
    result.settings = {"budget": "convergence", "max_epochs": 3}
    for run in result.runs:
        run["stop_reason"] = "early stopping: val_loss did not improve for 1 epochs" if run["variant"] == "scratch" \
            else None
    assert report.capped_runs(result) == {"frozen": 2}
    text = report.render_markdown(report._caveat_blocks(result))
    assert "2 of 4 runs reached the cap of 3 epochs while val_loss was still improving (frozen: 2)" in text
