"""Bad input for every importer: truncated, corrupt and wrong-type files, hostile archives.

Each must end in a clear ``GraftnetError`` (``ImportFormatError`` for a file graftnet cannot
read; ``CheckpointError`` when a readable file does not fit the network) that names the
file, and must write nothing. The property tests feed mutated and truncated bytes of real
files to each importer: no other exception, no crash, no hang.
"""

from __future__ import annotations

import io
import json
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import graftnet.io.keras as keras_io
from graftnet.errors import GraftnetError, ImportFormatError
from graftnet.io.keras import load_keras, load_keras_weights, save_keras
from graftnet.io.npz import load_npz, save_npz
from graftnet.io.torch_state import load_state, save_state
from graftnet.network import Network

FIXTURES = Path(__file__).parent / "fixtures" / "keras"
WORK = Path(tempfile.mkdtemp(prefix="graftnet-fuzz-"))  # one file per importer, rewritten per example


@pytest.fixture(scope="module", autouse=True)
def short_hdf5_timeout():
    """libhdf5 loops forever on some corrupt files; the reader stops it after READ_TIMEOUT_S."""
    saved = keras_io.READ_TIMEOUT_S
    keras_io.READ_TIMEOUT_S = 2.0
    yield
    keras_io.READ_TIMEOUT_S = saved
    shutil.rmtree(WORK, ignore_errors=True)


NET, _ = load_keras(FIXTURES / "keras2_cnn.h5")


def keras_net() -> Network:
    """A fresh network of the fixture's architecture (each import gets its own)."""
    return Network.from_spec(NET.to_spec())


def _real_files() -> dict[str, bytes]:
    """Bytes of real files of every kind graftnet imports."""
    save_keras(NET, WORK / "k3.keras")
    save_state(NET, WORK / "w.safetensors")
    torch.save(NET.state_dict(), WORK / "w.pt")
    save_npz(NET, WORK / "w.npz")
    return {
        "legacy.h5": (FIXTURES / "keras2_cnn.h5").read_bytes(),
        "keras2.keras": (FIXTURES / "keras2_cnn.keras").read_bytes(),
        "k3.keras": (WORK / "k3.keras").read_bytes(),
        "weights.h5": (FIXTURES / "keras2_cnn_weights.h5").read_bytes(),
        "w.safetensors": (WORK / "w.safetensors").read_bytes(),
        "w.pt": (WORK / "w.pt").read_bytes(),
        "w.npz": (WORK / "w.npz").read_bytes(),
    }


REAL = _real_files()
IMPORTERS: dict[str, Callable[[Path], object]] = {
    "legacy.h5": load_keras,
    "keras2.keras": load_keras,
    "k3.keras": load_keras,
    "weights.h5": lambda path: load_keras_weights(keras_net(), path),
    "w.safetensors": lambda path: load_state(keras_net(), path),
    "w.pt": lambda path: load_state(keras_net(), path),
    "w.npz": lambda path: load_npz(keras_net(), path),
}


def assert_clear_error(name: str, data: bytes, tmp: Path) -> None:
    """Import ``data`` as ``name``: it may load; if not, a GraftnetError naming the file."""
    path = tmp / name
    path.write_bytes(data)
    before = sorted(p.name for p in tmp.iterdir())
    try:
        IMPORTERS[name](path)
    except GraftnetError as err:
        message = str(err)
        assert name in message, message  # says which file
        assert 20 < len(message) < 4000, message
    assert sorted(p.name for p in tmp.iterdir()) == before  # wrote nothing


def test_the_real_files_load():
    for name, data in REAL.items():
        path = WORK / name
        path.write_bytes(data)
        IMPORTERS[name](path)  # no error


# --------------------------------------------------------------------- specific bad input
@pytest.mark.parametrize("name", sorted(IMPORTERS))
@pytest.mark.parametrize("content, message", [
    (b"", r"not a Keras file|cannot be read|truncated|corrupt"),
    (b"this is a text file, not a model\n" * 4, r"not a Keras file|cannot be read|truncated|corrupt"),
    (b"\x89PNG\r\n\x1a\n" + bytes(100), r"not a Keras file|cannot be read|truncated|corrupt"),
])
def test_wrong_type_files_are_refused(tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ImportFormatError, match=message):
        IMPORTERS[name](tmp_path / name)


@pytest.mark.parametrize("name", sorted(REAL))
def test_truncated_files_are_refused(tmp_path, name):
    (tmp_path / name).write_bytes(REAL[name][: len(REAL[name]) // 2])
    with pytest.raises(GraftnetError, match=r"truncated|corrupt|cannot be read|holds no|not an? "):
        IMPORTERS[name](tmp_path / name)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ImportFormatError, match=r"no Keras file at .*nope\.h5: it does not exist"):
        load_keras(tmp_path / "nope.h5")
    with pytest.raises(ImportFormatError, match=r"is a directory"):
        load_keras(tmp_path)
    with pytest.raises(ImportFormatError, match=r"no state dict at .*: it is a directory"):
        load_state(NET, tmp_path)


def test_hdf5_file_that_is_not_a_keras_model(tmp_path):
    with h5py.File(tmp_path / "data.h5", "w") as h5:
        h5["images"] = np.zeros((3, 4))
    with pytest.raises(ImportFormatError, match=r"is an HDF5 file but not a Keras model or weights file.*images"):
        load_keras(tmp_path / "data.h5")
    with pytest.raises(ImportFormatError, match=r"not a Keras model or weights file"):
        load_keras_weights(NET, tmp_path / "data.h5")


def test_hdf5_model_config_that_is_not_json(tmp_path):
    with h5py.File(tmp_path / "bad.h5", "w") as h5:
        h5.attrs["model_config"] = "{not json"
        h5.create_group("model_weights")
    with pytest.raises(ImportFormatError, match=r"bad\.h5 \(model_config\) is not valid JSON"):
        load_keras(tmp_path / "bad.h5")


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def _archive_members() -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(REAL["k3.keras"])) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


@pytest.mark.parametrize("extra, message", [
    ({"../evil": b"x"}, r"member path '\.\./evil', which climbs out of the archive; nothing was extracted"),
    ({"assets/../../evil": b"x"}, r"climbs out of the archive"),
    ({"/tmp/evil": b"x"}, r"climbs out of the archive"),
    ({"run_me.py": b"import os"}, r"unexpected member\(s\) 'run_me\.py'; a \.keras file holds metadata\.json"),
    ({"model.weights.npz": b""}, r"model\.weights\.npz or sharded model\.weights\.json are not supported"),
])
def test_hostile_keras_archives_are_refused_and_extract_nothing(tmp_path, monkeypatch, extra, message):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    path = _zip(tmp_path / "hostile.keras", {**_archive_members(), **extra})
    with pytest.raises(ImportFormatError, match=message):
        load_keras(path)
    assert list(work.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["hostile.keras", "work"]


def test_repeated_archive_members_are_refused(tmp_path):
    members = _archive_members()
    path = _zip(tmp_path / "twice.keras", members)
    with zipfile.ZipFile(path, "a") as archive, pytest.warns(UserWarning, match="Duplicate name"):
        archive.writestr("config.json", b"{}")
    with pytest.raises(ImportFormatError, match=r"repeated members: config\.json"):
        load_keras(path)


@pytest.mark.parametrize("change, message", [
    ({"config.json": b"{broken"}, r"config\.json is not valid JSON"),
    ({"config.json": json.dumps({"layers": []}).encode()}, r"not a Keras model description"),
    ({"config.json": json.dumps({"class_name": "MyModel", "config": {}}).encode()}, r"the model is a 'MyModel'"),
    ({"model.weights.h5": b"not hdf5"}, r"model\.weights\.h5 inside the archive is not an HDF5 file"),
])
def test_corrupt_archive_members_are_refused(tmp_path, change, message):
    path = _zip(tmp_path / "bad.keras", {**_archive_members(), **change})
    with pytest.raises(ImportFormatError, match=message):
        load_keras(path)


def test_an_npz_is_not_a_keras_archive(tmp_path):
    (tmp_path / "w.keras").write_bytes(REAL["w.npz"])
    with pytest.raises(ImportFormatError, match=r"zip archive without config\.json, so not a \.keras model"):
        load_keras(tmp_path / "w.keras")


def test_a_config_that_asks_for_far_more_weights_than_the_file_holds(tmp_path):
    members = _archive_members()
    config = json.loads(members["config.json"])
    config["config"]["layers"][-1]["config"]["units"] = 10**9
    path = _zip(tmp_path / "huge.keras", {**members, "config.json": json.dumps(config).encode()})
    with pytest.raises(ImportFormatError, match=r"describes [\d,]+ parameters but the file holds only [\d,]+ weights"):
        load_keras(path)


# --------------------------------------------------------------------- property tests
@st.composite
def mutations(draw: st.DrawFn, name_or_bytes: str | bytes) -> bytes:
    """Truncations, bit flips, overwritten chunks and zeroed runs of a real file's bytes;
    positions favour the first 4 KiB, where headers and directories live."""
    data = REAL[name_or_bytes] if isinstance(name_or_bytes, str) else name_or_bytes
    size = len(data)
    position = st.one_of(st.integers(0, min(size, 4096) - 1), st.integers(0, size - 1))
    kind = draw(st.sampled_from(["truncate", "flip", "overwrite", "zeros"]))
    if kind == "truncate":
        return data[: draw(st.integers(0, size - 1))]
    buffer = bytearray(data)
    if kind == "flip":
        for _ in range(draw(st.integers(1, 8))):
            buffer[draw(position)] ^= 1 << draw(st.integers(0, 7))
    elif kind == "overwrite":
        start = draw(position)
        chunk = draw(st.binary(min_size=1, max_size=64))
        buffer[start:start + len(chunk)] = chunk[: size - start]
    else:
        start, length = draw(position), draw(st.integers(1, 512))
        buffer[start:start + length] = bytes(len(buffer[start:start + length]))
    return bytes(buffer)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2, 10**12) | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8)


def _leaf_paths(value: object, path: tuple = ()) -> list[tuple]:
    if isinstance(value, dict):
        return [path] + [p for k, v in value.items() for p in _leaf_paths(v, (*path, k))]
    if isinstance(value, list):
        return [path] + [p for i, v in enumerate(value) for p in _leaf_paths(v, (*path, i))]
    return [path]


@st.composite
def config_mutations(draw: st.DrawFn) -> bytes:
    """A real .keras archive whose config.json has one value (anywhere) replaced by random JSON."""
    members = _archive_members()
    config = json.loads(members["config.json"])
    path = draw(st.sampled_from(_leaf_paths(config)[1:]))
    parent = config
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = draw(JSON_VALUES)
    return _zip_bytes({**members, "config.json": json.dumps(config).encode()})


@st.composite
def weights_member_mutations(draw: st.DrawFn) -> bytes:
    """A real .keras archive whose model.weights.h5 member (with a valid CRC) is mutated."""
    members = _archive_members()
    return _zip_bytes({**members, "model.weights.h5": draw(mutations(members["model.weights.h5"]))})


def _zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


FUZZ = settings(max_examples=50, deadline=timedelta(seconds=20), derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])


def _fuzz_dir(name: str) -> Path:
    folder = WORK / f"fuzz-{name}"
    folder.mkdir(exist_ok=True)
    return folder


@FUZZ
@given(data=mutations("legacy.h5"))
def test_fuzz_legacy_h5(data):
    assert_clear_error("legacy.h5", data, _fuzz_dir("legacy"))


@FUZZ
@given(data=mutations("k3.keras"))
def test_fuzz_keras_archive(data):
    assert_clear_error("k3.keras", data, _fuzz_dir("k3"))


@FUZZ
@given(data=config_mutations())
def test_fuzz_keras_archive_config(data):
    assert_clear_error("k3.keras", data, _fuzz_dir("k3-config"))


@FUZZ
@given(data=weights_member_mutations())
def test_fuzz_keras_archive_weights_member(data):
    assert_clear_error("k3.keras", data, _fuzz_dir("k3-weights"))


@FUZZ
@given(data=mutations("weights.h5"))
def test_fuzz_weights_h5(data):
    assert_clear_error("weights.h5", data, _fuzz_dir("weights"))


@FUZZ
@given(data=mutations("w.safetensors"))
def test_fuzz_safetensors(data):
    assert_clear_error("w.safetensors", data, _fuzz_dir("safetensors"))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@FUZZ
@given(data=mutations("w.pt"))
def test_fuzz_torch_pickle(data):
    assert_clear_error("w.pt", data, _fuzz_dir("pt"))


@FUZZ
@given(data=mutations("w.npz"))
def test_fuzz_npz(data):
    assert_clear_error("w.npz", data, _fuzz_dir("npz"))


# --------------------------------------------------------------------- make fuzz: its corpus and harness
def _fuzz_module():
    import importlib.util
    import sys

    path = Path(__file__).resolve().parents[1] / "fuzz" / "run.py"
    spec = importlib.util.spec_from_file_location("graftnet_fuzz_run", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_every_fuzz_seed_loads_intact():
    """`make fuzz` damages these seeds: each must load as it is, or every case would be an error."""
    fuzz = _fuzz_module()
    for target in fuzz.TARGETS.values():
        target.load(fuzz.CORPUS / target.seed)


def test_fuzz_cases_are_reproducible_and_sorted():
    fuzz = _fuzz_module()
    first = fuzz.run_case("torch_pt", 3, 0)
    assert first == {**fuzz.run_case("torch_pt", 3, 0), "seconds": first["seconds"]}
    assert first["outcome"] in fuzz.OUTCOMES and first["mutation"]
    assert not fuzz._is_clear("cannot be read", Path("/x/w.pt"), Path("/x/w.pt"))  # does not say which file
    assert fuzz._is_clear("/x/w.pt cannot be read as a PyTorch file (bad)", Path("/x/w.pt"), Path("/x/w.pt"))
    assert not fuzz._is_clear("/x/w.pt: retry with weights_only=False", Path("/x/w.pt"), Path("/x/w.pt"))
