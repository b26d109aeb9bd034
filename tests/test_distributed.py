"""Data-parallel training under real torchrun (2 CPU processes, gloo) against one process.

The DDP runs are subprocesses under a timeout; each launch costs a few seconds of start-up,
so one test drives the whole CLI story (train, resume after a completed epoch, compare) and
one the frozen-prefix cache through ``tests/ddp_fit_script.py``.
"""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from graftnet import distributed
from graftnet.cli import main
from graftnet.errors import ConfigError
from graftnet.io.checkpoint import load_model

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 300  # seconds per torchrun launch; the machine is shared, start-up alone is seconds
RECIPE = """\
[model]
hidden = [32, 16]
[data]
source = "digits"
[train]
epochs = 3
batch_size = 50
optimizer = { type = "sgd", lr = 0.05, momentum = 0.9 }
seed = 3
device = "cpu"
"""
# float32 sums of 25 + 25 examples averaged over 2 ranks vs one mean over 50: rounding only
TOLERANCE = {"rtol": 1e-5, "atol": 1e-6}
TIMING = ("seconds",)


def torchrun(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *args]
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, f"torchrun failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done


def comparable(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMING and not k.startswith("cache_")} for row in rows]


def assert_same_history(got: list[dict], want: list[dict]) -> None:
    got, want = comparable(got), comparable(want)
    assert [sorted(r) for r in got] == [sorted(r) for r in want]
    for g, w in zip(got, want):
        for key in w:
            assert g[key] == pytest.approx(w[key], rel=1e-5, abs=1e-6), (key, g, w)


def assert_same_weights(got: torch.nn.Module, want: torch.nn.Module) -> None:
    got_state, want_state = got.state_dict(), want.state_dict()
    assert sorted(got_state) == sorted(want_state)
    for key in want_state:
        torch.testing.assert_close(got_state[key], want_state[key], **TOLERANCE, msg=lambda m, k=key: f"{k}: {m}")


def history_rows(run: Path) -> list[dict]:
    import csv

    with open(run / "history.csv") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def test_torchrun_train_equals_one_process_and_resumes_exactly(tmp_path):
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(RECIPE)
    # two processes: two epochs, then a resume from the epoch-2 checkpoint to epoch 3
    torchrun("-m", "graftnet", "train", str(recipe), "--epochs", "2", "--output-dir", "ddp", "-q", cwd=tmp_path)
    runs = list((tmp_path / "ddp").iterdir())
    assert len(runs) == 1, runs  # one run folder, written by rank 0
    run = runs[0]
    assert [p.name for p in run.iterdir() if "checkpoint" in p.name] == ["checkpoint"]
    assert (run / "checkpoint" / "state.json").is_file()
    done = torchrun("-m", "graftnet", "train", "--resume", str(run), "--epochs", "3", "-q", cwd=tmp_path)
    assert "trained 3 epoch(s)" in done.stdout and "2 processes" in done.stderr
    assert len(list((tmp_path / "ddp").iterdir())) == 1
    assert [p.name for p in run.iterdir() if p.name.startswith("checkpoint")] == ["checkpoint"]
    assert json.loads((run / "metrics.json").read_text())["processes"] == 2

    # one process, same global batch, three epochs without a break
    assert main(["train", str(recipe), "--output-dir", str(tmp_path / "single"), "-q"]) == 0
    (single,) = (tmp_path / "single").iterdir()
    assert_same_weights(load_model(run / "model"), load_model(single / "model"))
    assert_same_history(history_rows(run), history_rows(single))
    assert [row["epoch"] for row in history_rows(run)] == [1, 2, 3]


def test_torchrun_fit_builds_the_frozen_prefix_cache_per_shard(tmp_path):
    script = str(ROOT / "tests" / "ddp_fit_script.py")
    (tmp_path / "ddp").mkdir()
    (tmp_path / "one").mkdir()
    torchrun(script, str(tmp_path / "ddp"), cwd=tmp_path)
    reference = runpy.run_path(script)  # the same script in this process: a world of one
    reference["main"](tmp_path / "one")
    one = json.loads((tmp_path / "one" / "rank0.json").read_text())
    ranks = [json.loads((tmp_path / "ddp" / f"rank{r}.json").read_text()) for r in (0, 1)]
    for report in ranks:
        assert report["size"] == 2
        assert_same_history(report["history"], one["history"])  # every rank's History is the one-process one
    assert one["history"][0]["cache_cut"] == "hidden1" == ranks[0]["history"][0]["cache_cut"]
    # each rank built the features (hidden1: 32 float32 values per example) of its half only
    feature_bytes = 32 * 4
    whole = one["cache"]["ram_bytes"] // feature_bytes
    halves = [r["cache"]["ram_bytes"] // feature_bytes for r in ranks]
    assert sum(halves) == whole and abs(halves[0] - halves[1]) <= 2 and all(r["cache"]["misses"] == 2 for r in ranks)
    assert_same_weights(load_model(tmp_path / "ddp" / "model"), load_model(tmp_path / "one" / "model"))
    # worlds the data cannot be split across: one clear error naming both numbers, on every rank
    assert one["errors"] == [None, None]
    for report in ranks:
        few, small = report["errors"]
        assert "1 training example(s) cannot be split across 2 processes" in few
        assert "batch_size 1 cannot be split across 2 processes" in small


def test_rank_slices_cover_a_batch_like_tensor_split():
    for count in (0, 1, 5, 50, 51):
        for size in (1, 2, 3):
            parts = [distributed.rank_slice(count, distributed.World(rank, size)) for rank in range(size)]
            want = [len(t) for t in torch.tensor_split(torch.arange(count), size)]
            assert [stop - start for start, stop in parts] == want
            assert [start for start, _ in parts] == [sum(want[:r]) for r in range(size)]


def test_unsplittable_world_is_refused_naming_both_numbers():
    world = distributed.World(0, 4)
    with pytest.raises(ConfigError, match=r"batch_size 3 cannot be split across 4 processes"):
        distributed.check_splittable(100, 3, world)
    with pytest.raises(ConfigError, match=r"2 training example\(s\) cannot be split across 4 processes"):
        distributed.check_splittable(2, 32, world)
    distributed.check_splittable(4, 4, world)
    distributed.check_splittable(1, 1, distributed.World())  # one process: anything goes


def test_outside_torchrun_the_world_is_one_process(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    world = distributed.init_from_env()
    assert (world.rank, world.size, world.is_main, world.active) == (0, 1, True, False)
