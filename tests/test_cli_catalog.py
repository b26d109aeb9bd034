"""``graftnet catalog ...``, ``graftnet rank`` and ``--register`` on train, graft and finetune."""

from __future__ import annotations

import json
import shutil

import pytest

from graftnet.catalog import Catalog
from graftnet.cli import main

PLAN = """\
optimizer = { type = "adam", lr = 0.001 }
batch_size = 64

[[stage]]
epochs = 1
train = "outputs"

[[stage]]
epochs = 1
train = "all"
"""


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """train -> graft -> finetune, each with --register, into one catalog."""
    root = tmp_path_factory.mktemp("chain")
    db = str(root / "catalog.sqlite")
    assert main(["train", "--data", "digits", "--hidden", "24", "16", "--epochs", "1", "--seed", "0", "-q",
                 "--output-dir", str(root / "runs"), "--name", "base", "--register", "--catalog", db]) == 0
    run = next((root / "runs").iterdir())
    assert main(["graft", str(run), "--reuse", ":-1", "--add", "10", "--data", "digits", "--epochs", "1",
                 "--seed", "0", "--name", "grafted", "--out", str(root / "grafted"), "--register", "--catalog", db]) == 0
    (root / "plan.toml").write_text(PLAN)
    assert main(["finetune", str(root / "grafted"), "--plan", str(root / "plan.toml"), "--data", "digits",
                 "--out", str(root / "tuned"), "--register", "--catalog", db]) == 0
    return root, db, run


def test_register_records_train_graft_and_finetune_with_their_lineage(chain, capsys):
    root, db, run = chain
    entries = {e.path: e for e in Catalog(db).list()}
    base = entries[str((run / "model").resolve())]
    grafted = entries[str((root / "grafted").resolve())]
    tuned = entries[str((root / "tuned").resolve())]
    assert base.data_name == "digits" and base.data_fingerprint and not base.data_fingerprint.startswith("spec:")
    assert base.recipe["model"]["hidden"] == [24, 16] and "accuracy" in base.metrics["test"]
    assert [k.relation for k in grafted.links] == ["grafted"] and grafted.links[0].parent_fingerprint == base.fingerprint
    assert [k.relation for k in tuned.links] == ["fine-tuned"]
    assert tuned.links[0].parent_fingerprint == grafted.fingerprint

    assert main(["catalog", "lineage", tuned.ref, "-o", str(root / "tree.png"), "--catalog", db]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(base.ref)
    assert out[1].startswith(f"└── {grafted.ref}") and "[grafted: reused flatten, hidden1, hidden2; new outputs]" in out[1]
    assert out[2].startswith(f"    └── {tuned.ref}") and out[2].endswith("[fine-tuned]  <-")
    assert out[3] == f"picture: {root / 'tree.png'}" and (root / "tree.png").read_bytes()[:4] == b"\x89PNG"


def test_list_show_search_and_json(chain, capsys):
    root, db, _ = chain
    assert main(["catalog", "list", "--catalog", db]) == 0
    out = capsys.readouterr().out
    assert out.count(" ok") == 3 and "status" in out.splitlines()[0]
    assert main(["catalog", "show", "grafted:v1", "--catalog", db]) == 0
    out = capsys.readouterr().out
    assert out.startswith("grafted:v1  (ok)") and "lineage" in out and "grafted from mlp:v1" in out
    assert "  classes       0, 1, 2, 3, 4, 5, 6, 7, 8, 9\n" in out
    assert main(["catalog", "search", "--input-shape", "1,8,8", "--classes", "3,7", "--json", "--catalog", db]) == 0
    found = json.loads(capsys.readouterr().out)
    assert len(found) == 3 and all(e["input_shape"] == [1, 8, 8] for e in found)
    assert main(["catalog", "search", "--input-shape", "784", "--catalog", db]) == 0
    assert capsys.readouterr().out == "no model matches\n"


def test_moved_model_shows_as_missing_and_errors_are_one_line(chain, tmp_path, capsys):
    root, db, _ = chain
    local = str(tmp_path / "catalog.sqlite")
    shutil.copytree(root / "grafted", tmp_path / "g")
    assert main(["catalog", "add", str(tmp_path / "g"), "--name", "g", "--tag", "copy", "--catalog", local]) == 0
    assert capsys.readouterr().out.startswith("registered g:v1 (")
    shutil.move(tmp_path / "g", tmp_path / "g2")
    assert main(["catalog", "list", "--catalog", local]) == 0
    assert "missing" in capsys.readouterr().out
    assert main(["catalog", "show", "g", "--catalog", local]) == 0
    assert "NOT USABLE: its folder" in capsys.readouterr().out
    assert main(["catalog", "relocate", "g", str(tmp_path / "g2"), "--catalog", local]) == 0
    assert "now points at" in capsys.readouterr().out
    assert main(["catalog", "show", "nope", "--catalog", local]) == 2
    err = capsys.readouterr().err
    assert err.startswith("graftnet: error: no model 'nope' in the catalog") and err.count("\n") == 1
    assert main(["catalog", "remove", "g", "--catalog", local]) == 0
    assert "removed g:v1" in capsys.readouterr().out
    bad = tmp_path / "bad.sqlite"
    bad.write_text("not a database")
    assert main(["catalog", "list", "--catalog", str(bad)]) == 2
    assert "is not an SQLite database" in capsys.readouterr().err and bad.read_text() == "not a database"


def test_rank_command_prints_the_table_and_writes_it_beside_the_plot(chain, tmp_path, capsys):
    _, db, _ = chain
    out = tmp_path / "rank"
    assert main(["rank", "digits", "--catalog", db, "--train-size", "300", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert lines[0].split() == ["rank", "model", "depth", "layer", "dim", "logme", "leep", "hscore"]
    assert len([line for line in lines if line[:1].isdigit()]) == 3 * 2  # 3 models x 2 depths
    assert "best by logme:" in text and f"plot: {out / 'rank.png'}" in text
    assert sorted(p.name for p in out.iterdir()) == ["rank.csv", "rank.json", "rank.md", "rank.png"]
    assert main(["rank", "fashion:B", "--catalog", db]) == 2
    assert "no catalogued model takes inputs of shape (1, 28, 28)" in capsys.readouterr().err


def test_study_register_records_the_base_with_what_the_study_measured(chain, tmp_path, capsys):
    _, _, run = chain
    db = str(tmp_path / "catalog.sqlite")
    assert main(["study", str(run / "model"), "--data", "digits", "--seeds", "2", "--variants", "scratch,frozen",
                 "--epochs", "1", "--head-epochs", "0", "--out", str(tmp_path / "study"), "--quiet",
                 "--register", "--catalog", db]) == 0
    assert "registered mlp:v1 in the catalog" in capsys.readouterr().out
    entry = Catalog(db).get("mlp")
    assert entry.path == str((run / "model").resolve())
    assert set(entry.metrics["study digits"]) == {"scratch", "frozen"}
