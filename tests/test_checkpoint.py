"""Saving and loading: round trips, damaged files, refusing to clobber, and a kill mid-save."""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from graftnet.errors import CheckpointError
from graftnet.io.checkpoint import load_model, read_checkpoint, save_checkpoint, save_model
from graftnet.network import Network


def net(seed: int, hidden: int = 8) -> Network:
    torch.manual_seed(seed)
    return Network.mlp(4, [hidden], 3, batch_norm=True)


def same_weights(a: Network, b: Network) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ---------------------------------------------------------------- round trips
def test_round_trip_gives_the_same_outputs(tmp_path):
    model = net(0)
    model.train()(torch.randn(16, 4))  # move the BatchNorm statistics away from their defaults
    model.freeze("hidden1")
    model.lineage = {"base": "models/a", "layers": {"hidden1": "a/hidden1"}}
    save_model(model, tmp_path / "m", metadata={"data": "digits", "classes": ["a", "b", "c"]})
    loaded = load_model(tmp_path / "m")
    x = torch.randn(5, 4)
    torch.testing.assert_close(loaded.eval()(x), model.eval()(x), rtol=0, atol=0)
    assert loaded.frozen == ["hidden1"] and loaded.lineage == model.lineage
    assert loaded.info["classes"] == ["a", "b", "c"] and loaded.info["graftnet_version"]
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["metadata.json", "spec.json",
                                                                   "weights.safetensors"]


def test_training_checkpoint_round_trip(tmp_path):
    model = net(0)
    state = {"epoch": 3, "optimizer": {"state": {0: {"momentum_buffer": torch.arange(4.0)}}, "lr": 0.1},
             "rng": torch.get_rng_state()}
    save_checkpoint(tmp_path / "ckpt", model, state=state)
    loaded, restored = read_checkpoint(tmp_path / "ckpt")
    assert same_weights(loaded, model)
    assert restored["state"]["epoch"] == 3 and restored["state"]["optimizer"]["lr"] == 0.1
    assert torch.equal(restored["state"]["optimizer"]["state"][0]["momentum_buffer"], torch.arange(4.0))
    assert torch.equal(restored["state"]["rng"], state["rng"])
    save_model(model, tmp_path / "plain")
    with pytest.raises(CheckpointError, match="is a saved model, not a training checkpoint"):
        read_checkpoint(tmp_path / "plain")


# ---------------------------------------------------------------- damaged or foreign files
def test_truncated_weights_name_the_file(tmp_path):
    save_model(net(0), tmp_path / "m")
    weights = tmp_path / "m" / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"m/weights\.safetensors cannot be read as safetensors .* truncated"):
        load_model(tmp_path / "m")


def test_spec_and_weights_that_do_not_match(tmp_path):
    save_model(net(0, hidden=8), tmp_path / "a")
    save_model(net(0, hidden=9), tmp_path / "b")
    shutil.copy(tmp_path / "b" / "spec.json", tmp_path / "a" / "spec.json")
    with pytest.raises(CheckpointError, match=r"a/weights\.safetensors does not match its spec\.json: .*shape mismatch "
                                              r"hidden1\.weight: file \(8, 4\), spec \(9, 4\)"):
        load_model(tmp_path / "a")
    tensors = load_file(str(tmp_path / "b" / "weights.safetensors"))
    del tensors["outputs.bias"]
    save_file(tensors, str(tmp_path / "b" / "weights.safetensors"))
    with pytest.raises(CheckpointError, match=r"does not match its spec\.json: missing outputs\.bias"):
        load_model(tmp_path / "b")


def test_corrupt_spec_and_not_a_model(tmp_path):
    save_model(net(0), tmp_path / "m")
    (tmp_path / "m" / "spec.json").write_text('{"layers": [')
    with pytest.raises(CheckpointError, match=r"m/spec\.json is not valid JSON"):
        load_model(tmp_path / "m")
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.png").write_bytes(b"x")
    with pytest.raises(CheckpointError, match=r"photos is not a graftnet model: it has no spec\.json "
                                              r"\(found: cat\.png\)"):
        load_model(tmp_path / "photos")


def test_refuses_to_overwrite_a_folder_that_is_not_a_model(tmp_path):
    folder = tmp_path / "thesis"
    folder.mkdir()
    (folder / "chapter1.tex").write_text("precious")
    with pytest.raises(CheckpointError, match=r"refusing to replace .*thesis: it exists and is not a graftnet model"):
        save_model(net(0), folder)
    assert (folder / "chapter1.tex").read_text() == "precious"
    save_model(net(0), tmp_path / "model")
    save_model(net(1), tmp_path / "model")  # replacing a model is fine
    assert same_weights(load_model(tmp_path / "model"), net(1))


def test_a_save_interrupted_between_renames_falls_back_to_prev(tmp_path):
    save_model(net(0), tmp_path / "m")
    (tmp_path / "m").rename(tmp_path / "m.prev")  # the instant between the two renames
    with pytest.warns(UserWarning, match="a save was interrupted"):
        loaded = load_model(tmp_path / "m")
    assert same_weights(loaded, net(0))


# ---------------------------------------------------------------- killing a process mid-save
CHILD = r"""
import os, sys, time, torch
from graftnet.network import Network
from graftnet.io import checkpoint as ck

def net(seed):
    torch.manual_seed(seed)
    return Network.mlp(4, [8], 3, batch_norm=True)

path, mode = sys.argv[1], sys.argv[2]
old, new = net(0), net(1)
ck.save_model(old, path)
if mode == "after-temp":  # block once the new version is fully written under its temporary name
    fsync = ck._fsync_tree
    def block(tmp):
        fsync(tmp)
        print("temp written", flush=True)
        time.sleep(600)
    ck._fsync_tree = block
elif mode == "between-renames":  # block after the old folder moved to NAME.prev
    replace, calls = os.replace, []
    def slow_replace(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            print("old moved aside", flush=True)
            time.sleep(600)
        return replace(src, dst)
    os.replace = slow_replace
elif mode == "loop":  # save the two versions in turn, as fast as possible
    print("looping", flush=True)
    i = 0
    while True:
        ck.save_model(new if i % 2 == 0 else old, path)
        i += 1
ck.save_model(new, path)
"""


def kill_while_saving(path: Path, mode: str, marker: str, delay: float = 0.0) -> None:
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path), mode], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == marker
        time.sleep(delay)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL


@pytest.mark.parametrize("mode, marker", [("after-temp", "temp written"), ("between-renames", "old moved aside")])
def test_killed_mid_save_the_previous_model_still_loads(tmp_path, mode, marker):
    kill_while_saving(tmp_path / "m", mode, marker)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = load_model(tmp_path / "m")
    assert same_weights(loaded, net(0))
    # killed between the renames, the old model is read from m.prev (and says so)
    assert any("a save was interrupted" in str(w.message) for w in caught) == (mode == "between-renames")
    save_model(net(2), tmp_path / "m")  # the next save cleans up what the killed one left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
    assert same_weights(load_model(tmp_path / "m"), net(2))


def test_killed_at_random_moments_a_whole_model_always_loads(tmp_path):
    rng = random.Random(0)
    versions = (net(0), net(1))
    for _ in range(3):
        kill_while_saving(tmp_path / "m", "loop", "looping", delay=rng.uniform(0.05, 0.4))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # NAME.prev, if killed between the renames
            loaded = load_model(tmp_path / "m")
        assert any(same_weights(loaded, v) for v in versions)
        assert json.loads((Path(loaded.info["path"]) / "metadata.json").read_text())["graftnet_version"]



# ---------------------------------------------------------------- atomic files
def test_atomic_write_bytes_and_text_replace_the_file_with_umask_permissions(tmp_path):
    import os

    from graftnet.io.checkpoint import atomic_write_bytes, atomic_write_text

    old = os.umask(0o027)
    try:
        atomic_write_bytes(tmp_path / "sub" / "plot.png", b"\x89PNG data")
        atomic_write_text(tmp_path / "sub" / "notes.txt", "caf\u00e9\n")
    finally:
        os.umask(old)
    assert (tmp_path / "sub" / "plot.png").read_bytes() == b"\x89PNG data"
    assert (tmp_path / "sub" / "notes.txt").read_text(encoding="utf-8") == "caf\u00e9\n"
    assert (tmp_path / "sub" / "plot.png").stat().st_mode & 0o777 == 0o640  # 0o666 less the umask
    atomic_write_bytes(tmp_path / "sub" / "plot.png", b"new")
    assert (tmp_path / "sub" / "plot.png").read_bytes() == b"new"
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["notes.txt", "plot.png"]


def test_atomic_output_keeps_the_old_file_when_the_writer_fails(tmp_path):
    from graftnet.io.checkpoint import atomic_output

    target = tmp_path / "w.safetensors"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="writer broke"):
        with atomic_output(target) as tmp:
            assert tmp.parent == tmp_path and tmp.suffix == ".safetensors" and tmp != target
            tmp.write_bytes(b"half")
            raise RuntimeError("writer broke")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]


def test_a_reloaded_model_saved_elsewhere_does_not_keep_its_old_path(tmp_path):
    save_model(net(0), tmp_path / "a", metadata={"data": "digits"})
    loaded = load_model(tmp_path / "a")
    assert loaded.info["path"] == str(tmp_path / "a")
    save_model(loaded, tmp_path / "b")
    written = json.loads((tmp_path / "b" / "metadata.json").read_text())
    assert "path" not in written and written["data"] == "digits"
    assert loaded.info["path"] == str(tmp_path / "a")  # the model in memory still says where it came from
    assert load_model(tmp_path / "b").info["path"] == str(tmp_path / "b")


# ---------------------------------------------------------------- permissions, NAME.prev, what a model is
@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_every_file_a_save_writes_follows_the_umask(tmp_path, umask):
    """safetensors' writer makes 0600 files; a model, a checkpoint and an exported state dict must
    be as shareable as the user's umask allows, like every other file graftnet writes."""
    import os

    from graftnet.io.torch_state import save_state

    old = os.umask(umask)
    try:
        save_model(net(0), tmp_path / "m")
        save_checkpoint(tmp_path / "ck", net(0), state={"epoch": 1, "rng": torch.get_rng_state()})
        save_state(net(0), tmp_path / "w.safetensors")
    finally:
        os.umask(old)
    files = [*(tmp_path / "m").iterdir(), *(tmp_path / "ck").iterdir(), tmp_path / "w.safetensors"]
    assert {p.name for p in files} >= {"weights.safetensors", "optimizer.safetensors", "spec.json", "w.safetensors"}
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in files} == {p.name: oct(0o666 & ~umask) for p in files}
    assert (tmp_path / "m").stat().st_mode & 0o777 == 0o777 & ~umask


def test_a_save_over_a_lone_prev_keeps_it_until_the_new_save_is_in_place(tmp_path, monkeypatch):
    """After a kill between the two renames only NAME.prev is whole; the next save must not
    delete it before its own folder has replaced it."""
    import graftnet.io.checkpoint as ck

    save_model(net(0), tmp_path / "m")
    (tmp_path / "m").rename(tmp_path / "m.prev")
    real_replace = ck.os.replace

    def killed(src, dst):  # the process dies as the new folder is about to be renamed in
        raise KeyboardInterrupt

    monkeypatch.setattr(ck.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        save_model(net(1), tmp_path / "m")
    monkeypatch.setattr(ck.os, "replace", real_replace)
    with pytest.warns(UserWarning, match="a save was interrupted"):
        assert same_weights(load_model(tmp_path / "m"), net(0))


def test_a_saved_model_says_what_its_outputs_are(tmp_path):
    from graftnet.io.checkpoint import output_description

    softmax = Network.mlp(4, [8], 3, output_activation="softmax")
    save_model(softmax, tmp_path / "softmax")
    meta = json.loads((tmp_path / "softmax" / "metadata.json").read_text())
    assert (meta["task"], meta["output_activation"], meta["classes"]) == ("multiclass", "softmax", ["0", "1", "2"])
    sigmoid = Network.mlp(4, [8], 1, output_activation="sigmoid")
    assert output_description(sigmoid) == {"task": "binary", "output_activation": "sigmoid", "classes": ["0", "1"]}
    logits = Network.mlp(4, [8], 3)  # logits or regression: nothing says which
    assert output_description(logits)["task"] is None
    logits.info.update(task="multiclass", classes=["cat", "dog", "eel"])
    save_model(logits, tmp_path / "named")
    meta = json.loads((tmp_path / "named" / "metadata.json").read_text())
    assert (meta["task"], meta["output_activation"], meta["classes"]) == ("multiclass", "linear", ["cat", "dog", "eel"])
