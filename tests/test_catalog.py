"""The model catalog: entries, versions, search, lineage, checks before use, bad files, concurrency (real SQLite)."""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import sys
import time
from pathlib import Path

import pytest
import torch

from graftnet.cache import weights_fingerprint
from graftnet.catalog import SCHEMA_VERSION, Catalog, CatalogError, data_fingerprint, default_url
from graftnet.data import from_arrays
from graftnet.io.checkpoint import load_model, save_model
from graftnet.layers import Dense
from graftnet.network import Network
from graftnet.transfer import graft

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _save_mlp(path: Path, *, seed: int = 0, name: str = "base-a", classes=("x", "y", "z"), **metadata) -> Path:
    torch.manual_seed(seed)
    net = Network.mlp((1, 6, 6), [12, 8], len(classes), name=name)
    save_model(net, path, metadata={"classes": list(classes), "data_name": "toy", **metadata})
    return path


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture()
def catalog(tmp_path):
    with Catalog(tmp_path / "catalog.sqlite") as cat:
        yield cat


def test_add_records_every_field_and_show_reads_it_back(catalog, tmp_path):
    path = _save_mlp(tmp_path / "a", metrics={"test": {"accuracy": 0.75}}, recipe={"train": {"epochs": 3}},
                     task="multiclass")
    entry = catalog.add(path, tags=["toy", "mlp"], description="a small base")
    assert entry.ref == "base-a:v1"
    assert entry.path == str(path.resolve())
    assert entry.fingerprint == weights_fingerprint(load_model(path))
    assert entry.input_shape == (1, 6, 6) and entry.output_shape == (3,)
    assert entry.task == "multiclass" and entry.classes == ["x", "y", "z"]
    assert entry.data_name == "toy"
    assert entry.metrics == {"test": {"accuracy": 0.75}} and entry.recipe == {"train": {"epochs": 3}}
    assert entry.tags == ["mlp", "toy"] and entry.description == "a small base"
    assert [row["name"] for row in entry.architecture["layers"]] == ["flatten", "hidden1", "hidden2", "outputs"]
    assert entry.architecture["params"] == 36 * 12 + 12 + 12 * 8 + 8 + 8 * 3 + 3
    assert entry.problem() is None and entry.status() == "ok"
    again = Catalog(catalog.url).get("base-a")  # a fresh connection reads the same entry
    assert again.to_dict() == entry.to_dict()


def test_the_default_catalog_is_one_sqlite_file_in_wal_mode_in_the_data_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("GRAFTNET_CATALOG", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert default_url() == f"sqlite:///{tmp_path / 'data' / 'graftnet' / 'catalog.sqlite'}"
    cat = Catalog()
    cat.add(_save_mlp(tmp_path / "a"))
    file = tmp_path / "data" / "graftnet" / "catalog.sqlite"
    with sqlite3.connect(file) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT value FROM graftnet_meta WHERE key = 'schema_version'").fetchone()[0] == str(
            SCHEMA_VERSION)
    monkeypatch.setenv("GRAFTNET_CATALOG", str(tmp_path / "team.sqlite"))
    assert Catalog().url == f"sqlite:///{(tmp_path / 'team.sqlite').resolve()}"


def test_versions_names_and_refs(catalog, tmp_path):
    first = catalog.add(_save_mlp(tmp_path / "a", seed=0))
    assert catalog.add(tmp_path / "a").id == first.id  # same folder, same weights: the same entry
    second = catalog.add(_save_mlp(tmp_path / "a2", seed=1))  # same name, other weights: the next version
    assert second.ref == "base-a:v2"
    assert catalog.get("base-a").ref == "base-a:v2" and catalog.get("base-a:v1").id == first.id
    assert catalog.get("base-a:1").id == first.id
    named = catalog.add(tmp_path / "a", name="my-base")
    assert named.ref == "my-base:v1" and named.fingerprint == first.fingerprint
    with pytest.raises(CatalogError, match=r"no model 'base-b'.*holds base-a, my-base. Did you mean 'base-a'"):
        catalog.get("base-b")
    with pytest.raises(CatalogError, match=r"'base-a' has no version 7 in the catalog; it has v1, v2"):
        catalog.get("base-a:v7")
    with pytest.raises(CatalogError, match="without ':'"):
        catalog.add(tmp_path / "a", name="a:b")
    with pytest.raises(CatalogError, match="no such folder"):
        catalog.add(tmp_path / "nowhere")


def test_search_by_shape_classes_task_tag_and_text(catalog, tmp_path):
    catalog.add(_save_mlp(tmp_path / "a", classes=("Sandal", "Shirt", "Bag")), tags=["fashion"])
    torch.manual_seed(0)
    wide = Network.mlp(10, [4], 1, name="tabular")
    save_model(wide, tmp_path / "t", metadata={"classes": ["no", "yes"]})
    catalog.add(tmp_path / "t", description="credit scoring", tags=["tabular"])
    refs = lambda found: [e.ref for e in found]  # noqa: E731
    assert refs(catalog.search(input_shape=(1, 6, 6))) == ["base-a:v1"]
    assert refs(catalog.search(input_shape=[10])) == ["tabular:v1"]
    assert refs(catalog.search(classes=["sandal", "Shirt"])) == ["base-a:v1"]
    assert refs(catalog.search(classes=["Sandal", "Coat"])) == []
    assert refs(catalog.search(task="binary")) == ["tabular:v1"]
    assert refs(catalog.search(tag="fashion")) == ["base-a:v1"]
    assert refs(catalog.search(text="CREDIT")) == ["tabular:v1"]
    assert refs(catalog.search(text="hidden2")) == ["base-a:v1"]  # layer names are searchable too
    assert refs(catalog.search(text="fash")) == ["base-a:v1"]  # a tag's substring
    assert refs(catalog.search(input_shape=(1, 6, 6), task="binary")) == []


def test_data_fingerprint_from_the_dataset_when_given(catalog, tmp_path):
    x, y = torch.rand(20, 1, 6, 6), torch.arange(20) % 3
    data = from_arrays(x, y, classes=["x", "y", "z"])
    entry = catalog.add(_save_mlp(tmp_path / "a"), data=data)
    assert entry.data_fingerprint == data_fingerprint(data) and entry.data_name == data.name
    other = from_arrays(x, (y + 1) % 3, classes=["x", "y", "z"])
    assert data_fingerprint(other) != data_fingerprint(data)
    described = catalog.add(_save_mlp(tmp_path / "b", seed=3, data={"loader": "toy", "root": "/x", "transforms": []}))
    moved_data = catalog.add(_save_mlp(tmp_path / "c", seed=4, data={"loader": "toy", "root": "/y", "transforms": []}))
    assert described.data_fingerprint.startswith("spec:")
    assert described.data_fingerprint == moved_data.data_fingerprint  # where the files were read from is not the data


def _graft_chain(tmp_path: Path) -> tuple[Path, Path, Path]:
    base = _save_mlp(tmp_path / "base")
    grafted = graft(load_model(base), reuse=":-1", head=Dense(1, "sigmoid"), name="grafted")
    save_model(grafted, tmp_path / "grafted", metadata={"classes": ["n", "p"]})
    tuned = load_model(tmp_path / "grafted")
    with torch.no_grad():
        tuned.layer("outputs").bias.add_(1.0)  # fine-tuning changed its weights
    tuned.name = "tuned"
    save_model(tuned, tmp_path / "tuned", metadata={"finetuned_from": str(tmp_path / "grafted")})
    return base, tmp_path / "grafted", tmp_path / "tuned"


def test_lineage_base_grafted_finetuned_in_any_registration_order(catalog, tmp_path):
    base, grafted, tuned = _graft_chain(tmp_path)
    catalog.add(tuned)  # the child first: links resolve when the parents arrive
    catalog.add(grafted)
    catalog.add(base)
    link = catalog.get("grafted").links[0]
    assert link.relation == "grafted" and link.parent_name == "base-a"
    assert link.parent_fingerprint == catalog.get("base-a").fingerprint
    assert link.details["reused"] == ["flatten", "hidden1", "hidden2"] and link.details["new"] == ["outputs"]
    assert catalog.get("tuned").links[0].relation == "fine-tuned"
    assert [p.ref for _, p in catalog.parents(catalog.get("tuned"))] == ["grafted:v1"]
    assert [c.ref for _, c in catalog.children(catalog.get("base-a"))] == ["grafted:v1"]
    text = catalog.lineage_text("grafted")
    assert text.splitlines()[0].startswith("base-a:v1")
    assert "└── grafted:v1" in text and "reused flatten, hidden1, hidden2; new outputs" in text
    assert "    └── tuned:v1" in text and "[fine-tuned]" in text
    assert [line for line in text.splitlines() if line.endswith("<-")] == [text.splitlines()[1]]
    assert catalog.lineage_text("tuned") == text.replace("  <-", "").replace("[fine-tuned]", "[fine-tuned]  <-")
    png = catalog.plot_lineage("tuned", tmp_path / "lineage.png")
    import matplotlib.image

    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and matplotlib.image.imread(png).shape[0] > 100


def test_ancestors_outside_the_catalog_are_shown_from_the_spec(catalog, tmp_path):
    _, grafted, _ = _graft_chain(tmp_path)
    catalog.add(grafted)
    text = catalog.lineage_text("grafted")
    assert text.splitlines()[0].startswith("base-a (not in the catalog)")
    assert str(tmp_path / "base") in text.splitlines()[0] and "└── grafted:v1" in text


def test_a_moved_folder_is_reported_not_used_and_can_be_relocated(catalog, tmp_path):
    entry = catalog.add(_save_mlp(tmp_path / "a"))
    shutil.move(tmp_path / "a", tmp_path / "moved")
    assert catalog.get("base-a").status() == "missing"
    with pytest.raises(CatalogError, match=r"base-a:v1 cannot be used: its folder .*/a no longer exists .*"
                                           r"graftnet catalog relocate base-a:v1 NEW_FOLDER"):
        catalog.load("base-a")
    moved = catalog.relocate("base-a", tmp_path / "moved")
    assert moved.path == str((tmp_path / "moved").resolve()) and moved.status() == "ok"
    assert weights_fingerprint(catalog.load("base-a")) == entry.fingerprint
    _save_mlp(tmp_path / "other", seed=5)
    with pytest.raises(CatalogError, match="its weights differ"):
        catalog.relocate("base-a", tmp_path / "other")
    assert catalog.get("base-a").path == moved.path  # unchanged


def test_changed_weights_are_reported_not_used(catalog, tmp_path):
    catalog.add(_save_mlp(tmp_path / "a", seed=0))
    same = load_model(tmp_path / "a")
    save_model(same, tmp_path / "a")  # saved again, same weights: a new file, still the registered model
    assert catalog.get("base-a").status() == "ok"
    _save_mlp(tmp_path / "a", seed=1)  # other weights in the same folder
    assert catalog.get("base-a").status() == "changed"
    with pytest.raises(CatalogError, match=r"its weights in .* changed since it was registered"):
        catalog.load("base-a")


def test_remove_one_version_or_all_leaves_the_folder(catalog, tmp_path):
    catalog.add(_save_mlp(tmp_path / "a", seed=0))
    catalog.add(_save_mlp(tmp_path / "b", seed=1))
    grafted = graft(load_model(tmp_path / "a"), reuse=":-1", head=Dense(2), name="child")
    save_model(grafted, tmp_path / "child")
    catalog.add(tmp_path / "child", tags=["t"])
    assert [e.ref for e in catalog.remove("base-a:v1")] == ["base-a:v1"]
    assert [e.ref for e in catalog.list("base-a")] == ["base-a:v2"]
    assert (tmp_path / "a" / "spec.json").is_file()
    assert [e.ref for e in catalog.remove("child", all_versions=True)] == ["child:v1"]
    assert [e.ref for e in catalog.list()] == ["base-a:v2"]
    with pytest.raises(CatalogError, match="no model 'child'"):
        catalog.remove("child")


def test_a_file_that_is_not_sqlite_is_refused_and_left_untouched(tmp_path):
    bad = tmp_path / "catalog.sqlite"
    bad.write_bytes(b"this is not a database at all\n" * 10)
    before = _digest(bad)
    with pytest.raises(CatalogError, match=r"is not an SQLite database .* left untouched"):
        Catalog(bad)
    assert _digest(bad) == before


def test_a_damaged_database_is_refused_and_left_untouched(tmp_path):
    path = tmp_path / "catalog.sqlite"
    with Catalog(path) as cat:
        cat.add(_save_mlp(tmp_path / "a"))
    data = bytearray(path.read_bytes())
    # keep the header, overwrite the schema page and beyond
    data[100:] = os.urandom(len(data) - 100)
    path.write_bytes(bytes(data))
    for side in (Path(str(path) + "-wal"), Path(str(path) + "-shm")):
        side.unlink(missing_ok=True)
    before = _digest(path)
    with pytest.raises(CatalogError, match=r"catalog .* is damaged .*; it was left as it is"):
        Catalog(path).list()
    assert _digest(path) == before


def test_a_catalog_from_a_newer_schema_is_refused_and_left_untouched(tmp_path):
    path = tmp_path / "catalog.sqlite"
    with Catalog(path) as cat:
        cat.add(_save_mlp(tmp_path / "a"))
    conn = sqlite3.connect(path, isolation_level=None)  # as a later graftnet would leave it
    conn.execute("UPDATE graftnet_meta SET value = '99' WHERE key = 'schema_version'")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    before = _digest(path)
    with pytest.raises(CatalogError, match=rf"schema version 99, written by a newer graftnet; .* reads version "
                                           rf"{SCHEMA_VERSION}. Upgrade graftnet"):
        Catalog(path)
    assert _digest(path) == before
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM models").fetchone()[0] == 1


def test_a_database_of_something_else_is_refused(tmp_path):
    path = tmp_path / "other.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
    with pytest.raises(CatalogError, match=r"not a graftnet catalog \(it has tables invoices\)"):
        Catalog(path)
    with sqlite3.connect(path) as conn:
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    assert names == ["invoices"]


def test_a_bad_url_says_what_is_accepted(tmp_path):
    with pytest.raises(CatalogError, match="not a SQLAlchemy URL"):
        Catalog("nosuch+driver://:::")
    with pytest.raises(CatalogError, match="is a folder"):
        Catalog(tmp_path)


# ---------------------------------------------------------------- several processes at once
_WORKER = r"""
import json, sys, time
sys.path.insert(0, {src!r})
from graftnet.catalog import Catalog
url, folder, prefix, count, start = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
catalog = Catalog(url)
while time.time() < start:
    time.sleep(0.001)
refs, errors = [], []
for i in range(count):
    try:
        refs.append(catalog.add(folder, name=prefix if count == 1 else f"{{prefix}}-{{i}}").ref)
    except Exception as err:  # reported to the test, which fails on any
        errors.append(f"{{type(err).__name__}}: {{err}}")
print(json.dumps({{"refs": refs, "errors": errors}}))
"""


def _run_workers(tmp_path: Path, jobs: list[tuple[Path, str, int]], url: str) -> list[dict]:
    import json
    import subprocess

    script = tmp_path / "worker.py"
    script.write_text(_WORKER.format(src=SRC))
    start = time.time() + 4.0  # every process is up (torch imported) before the first write
    procs = [subprocess.Popen([sys.executable, str(script), url, str(folder), prefix, str(count), str(start)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for folder, prefix, count in jobs]
    out = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=600)  # seconds on an idle 2-core machine; much longer when shared
        assert proc.returncode == 0, stderr
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


def test_two_processes_registering_the_same_name_at_once_get_two_versions(tmp_path):
    url = f"sqlite:///{tmp_path / 'catalog.sqlite'}"
    Catalog(url)
    folders = [_save_mlp(tmp_path / f"m{i}", seed=i) for i in range(2)]
    results = _run_workers(tmp_path, [(folders[0], "same", 1), (folders[1], "same", 1)], url)
    assert [r["errors"] for r in results] == [[], []]
    assert sorted(r["refs"][0] for r in results) == ["same:v1", "same:v2"]
    entries = Catalog(url).list("same")
    assert sorted(e.path for e in entries) == sorted(str(f.resolve()) for f in folders)


def test_eight_processes_register_a_hundred_models_each_without_losing_one(tmp_path):
    url = f"sqlite:///{tmp_path / 'catalog.sqlite'}"  # not created beforehand: the processes race to create it
    folder = _save_mlp(tmp_path / "m")
    t0 = time.perf_counter()
    results = _run_workers(tmp_path, [(folder, f"p{k}", 100) for k in range(8)], url)
    assert [r["errors"] for r in results] == [[]] * 8  # no "database is locked" reached anyone
    refs = sorted(ref for r in results for ref in r["refs"])
    assert len(refs) == 800
    stored = Catalog(url).list()
    assert sorted(e.ref for e in stored) == refs == sorted(f"p{k}-{i}:v1" for k in range(8) for i in range(100))
    print(f"8 x 100 registrations in {time.perf_counter() - t0:.1f} s (incl. 4 s start)")


def test_a_lock_held_past_the_timeout_is_a_clear_error_and_writes_nothing(tmp_path):
    path = tmp_path / "catalog.sqlite"
    Catalog(path)
    model = _save_mlp(tmp_path / "a")
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another program holds the write lock
    try:
        with pytest.raises(CatalogError, match=r"stayed busy \(locked by another writer\) for more than 1 s; "
                                               r"nothing was written"):
            Catalog(path, timeout=1.0).add(model)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert Catalog(path).list() == []
    assert Catalog(path).add(model).ref == "base-a:v1"
