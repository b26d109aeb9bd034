"""graftnet.data: real Fashion-MNIST/MNIST files, class-subset tasks, loaders, downloads."""

from __future__ import annotations

import doctest
import gzip
import os
import shutil
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

import graftnet.data as gd
from graftnet.data import (
    FASHION_MNIST_CLASSES,
    IDX_FILES,
    Dataset,
    Split,
    download_idx,
    find_idx_dir,
    from_arrays,
    from_npz,
    image_folder,
    read_idx,
    save_npz,
)
from graftnet.errors import DataError

# ------------------------------------------------------------------ real files


def test_fashion_mnist_real_files(fashion: Dataset) -> None:
    assert (len(fashion.train), len(fashion.valid), len(fashion.test)) == (55_000, 5_000, 10_000)
    assert fashion.train.x.shape == (55_000, 1, 28, 28) and fashion.train.x.dtype == torch.float32
    assert fashion.train.y.dtype == torch.int64
    assert fashion.classes == FASHION_MNIST_CLASSES and fashion.task == "multiclass"
    assert float(fashion.train.x.min()) == 0.0 and float(fashion.train.x.max()) == 1.0
    # The first image of the training file is an ankle boot; it opens the validation split.
    assert int(fashion.valid.y[0]) == 9 and fashion.classes[9] == "Ankle boot"
    # 6,000 training and 1,000 test images per class.
    train_and_valid = torch.bincount(torch.cat([fashion.train.y, fashion.valid.y]), minlength=10)
    assert train_and_valid.tolist() == [6000] * 10
    assert torch.bincount(fashion.test.y).tolist() == [1000] * 10
    assert (fashion.input_shape, fashion.n_classes, fashion.n_outputs) == ((1, 28, 28), 10, 10)


def test_fashion_pixels_are_the_file_bytes_over_255(fashion: Dataset) -> None:
    raw = read_idx(find_idx_dir("fashion_mnist") / "train-images-idx3-ubyte.gz")  # (60000, 28, 28) uint8
    assert raw.shape == (60_000, 28, 28) and raw.dtype == np.uint8
    np.testing.assert_array_equal(fashion.valid.x[:3, 0].numpy(), raw[:3] / np.float32(255))
    np.testing.assert_array_equal(fashion.train.x[-1, 0].numpy(), raw[-1] / np.float32(255))


def test_mnist_real_files() -> None:
    digits = gd.mnist(download=False)
    assert (len(digits.train), len(digits.valid), len(digits.test)) == (55_000, 5_000, 10_000)
    assert digits.classes == [str(d) for d in range(10)]
    assert int(digits.valid.y[0]) == 5 and int(digits.test.y[0]) == 7  # the famous first labels
    expected_test = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert torch.bincount(digits.test.y).tolist() == expected_test
    assert digits.source["loader"] == "mnist" and digits.source["valid_size"] == 5000


def test_valid_size_and_standard_scaling(fashion: Dataset) -> None:
    data = gd.fashion_mnist(valid_size=1000, scale="standard", download=False)
    assert (len(data.train), len(data.valid)) == (59_000, 1_000)
    assert abs(float(data.train.x.mean())) < 1e-4 and abs(float(data.train.x.std()) - 1) < 1e-3
    scaling = data.source["scaling"]
    assert scaling["kind"] == "standard" and len(scaling["mean"]) == 1
    # Same pixels as the unit-scaled data, up to the affine map recorded in source.
    mean, std = scaling["mean"][0], scaling["std"][0]
    unit = fashion.test.x[:5] * 255
    torch.testing.assert_close(data.test.x[:5], (unit - mean) / std, atol=1e-4, rtol=1e-4)
    with pytest.raises(DataError, match="scale must be one of unit, standard, none"):
        gd.fashion_mnist(scale="unity", download=False)


# ----------------------------------------------------------------- the A/B tasks


def test_fashion_task_a_has_eight_classes_relabelled_in_order(fashion: Dataset) -> None:
    task_a = gd.load("fashion:A")
    expected = [name for name in FASHION_MNIST_CLASSES if name not in ("Sandal", "Shirt")]
    assert task_a.classes == expected and task_a.n_outputs == 8 and task_a.task == "multiclass"
    assert len(task_a.train) == 55_000 - int(((fashion.train.y == 5) | (fashion.train.y == 6)).sum())
    # The book's relabelling: 7, 8, 9 (Sneaker, Bag, Ankle boot) become 5, 6, 7.
    assert int(task_a.valid.y[0]) == 7 and task_a.classes[7] == "Ankle boot"
    assert torch.bincount(task_a.test.y).tolist() == [1000] * 8
    assert task_a.source["transforms"] == [{"op": "without_classes", "classes": ["Sandal", "Shirt"]}]


def test_fashion_task_b_is_the_first_200_sandals_and_shirts(fashion: Dataset) -> None:
    task_b = gd.load("fashion:B")
    assert task_b.task == "binary" and task_b.classes == ["Sandal", "Shirt"] and task_b.n_outputs == 1
    assert len(task_b.train) == 200 and task_b.train.y.dtype == torch.float32
    assert len(task_b.test) == 2000
    # Reference computed directly from the training split.
    is_b = (fashion.train.y == 5) | (fashion.train.y == 6)
    expected_x = fashion.train.x[is_b][:200]
    expected_y = (fashion.train.y[is_b][:200] == 6).float()
    assert torch.equal(task_b.train.x, expected_x) and torch.equal(task_b.train.y, expected_y)
    ops = [op["op"] for op in task_b.source["transforms"]]
    assert ops == ["only_classes", "as_binary", "head"] and task_b.source["spec"] == "fashion:B"


def test_only_classes_relabels_in_the_given_order(fashion: Dataset) -> None:
    sub = fashion.head(test=300).only_classes(["Shirt", "Sandal", 0])
    assert sub.classes == ["Shirt", "Sandal", "T-shirt/top"] and sub.name == "fashion_mnist[Shirt,Sandal,T-shirt/top]"
    old = fashion.test.y[:300]
    keep = (old == 6) | (old == 5) | (old == 0)
    expected = torch.where(old[keep] == 6, 0, torch.where(old[keep] == 5, 1, 2))
    assert torch.equal(sub.test.y, expected)
    assert torch.equal(sub.test.x, fashion.test.x[:300][keep])


def test_class_errors_name_the_classes(fashion: Dataset) -> None:
    with pytest.raises(DataError, match=r"no class 'Sandle'.*T-shirt/top.*Did you mean 'Sandal'\?"):
        fashion.only_classes(["Sandle", "Shirt"])
    with pytest.raises(DataError, match=r"at least 2 classes, got \['Shirt'\]"):
        fashion.only_classes(["Shirt"])
    with pytest.raises(DataError, match="leaves .*Bag.*at least 2 classes"):
        fashion.without_classes([name for name in FASHION_MNIST_CLASSES if name != "Bag"])
    with pytest.raises(DataError, match=r"takes a list of class names or indices, got 'Shirt'; write \['Shirt'\]"):
        fashion.without_classes("Shirt")
    with pytest.raises(DataError, match="index 10 is out of range: there are 10 classes"):
        fashion.only_classes([1, 10])
    with pytest.raises(DataError, match="as_binary needs exactly 2 classes.*has 3.*only_classes"):
        fashion.only_classes(["Bag", "Coat", "Dress"]).as_binary("Bag")


def test_as_binary_needs_both_classes_in_training_data(fashion: Dataset) -> None:
    pair = fashion.only_classes(["Trouser", "Bag"])
    # The opening run of examples that are all of the first example's class.
    n_same = int((pair.train.y != pair.train.y[0]).nonzero()[0])
    with pytest.raises(DataError, match="holds only class"):
        pair.head(train=n_same).as_binary("Bag")
    binary = pair.as_binary("Trouser")
    assert binary.classes == ["Bag", "Trouser"]
    assert torch.equal(binary.train.y, (pair.train.y == 0).float())


def test_head_and_sample(fashion: Dataset) -> None:
    small = fashion.head(train=100, valid=10)
    assert (len(small.train), len(small.valid), len(small.test)) == (100, 10, 10_000)
    assert torch.equal(small.train.x, fashion.train.x[:100])
    with pytest.raises(DataError, match="asked for 60000 examples but only 55000 are available"):
        fashion.head(train=60_000)

    first = fashion.sample(1000, seed=1)
    again = fashion.sample(1000, seed=1)
    other = fashion.sample(1000, seed=2)
    assert first.train.fingerprint() == again.train.fingerprint() != other.train.fingerprint()
    quota = torch.bincount(fashion.train.y) * 1000 / len(fashion.train)  # each class's share of 1000
    assert ((torch.bincount(first.train.y) - quota).abs() < 1).all()
    assert first.source["transforms"][-1] == {"op": "sample", "train": 1000, "seed": 1, "stratify": True}
    with pytest.raises(DataError, match="asked for 55001 examples"):
        fashion.sample(55_001, seed=0)


def test_stratified_sample_keeps_class_shares() -> None:
    y = torch.tensor([0] * 80 + [1] * 15 + [2] * 5)
    data = from_arrays(torch.arange(100.0)[:, None], y)
    picked = data.sample(20, seed=0)
    assert torch.bincount(picked.train.y).tolist() == [16, 3, 1]
    assert torch.equal(picked.train.y, y[picked.train.x[:, 0].long()])  # x and y stay paired
    unstratified = {
        tuple(torch.bincount(data.sample(20, seed=s, stratify=False).train.y, minlength=3).tolist()) for s in range(20)
    }
    assert len(unstratified) > 1


def test_fingerprint_tracks_content() -> None:
    split = Split(torch.arange(12.0).reshape(6, 2), torch.tensor([0, 1, 0, 1, 0, 1]))
    same = Split(torch.arange(12.0).reshape(6, 2), torch.tensor([0, 1, 0, 1, 0, 1]))
    other_y = Split(split.x, torch.tensor([0, 1, 0, 1, 0, 0]))
    other_shape = Split(split.x.reshape(6, 2, 1), split.y)
    fingerprints = {split.fingerprint(), other_y.fingerprint(), other_shape.fingerprint()}
    assert split.fingerprint() == same.fingerprint() and len(fingerprints) == 3
    assert len(split.fingerprint()) == 64 and split.to("cpu").fingerprint() == split.fingerprint()
    assert split.take(torch.tensor([1, 3])).y.tolist() == [1, 1]


def test_describe_says_what_the_data_is() -> None:
    text = gd.load("fashion:B").describe()
    assert "fashion:B: binary, input (1, 28, 28), 1 output(s)" in text
    assert "train 200 | valid 986 | test 2,000" in text
    assert '"op": "as_binary", "positive": "Shirt"' in text


def test_mnist_digit_ranges() -> None:
    low, high = gd.load("mnist:0-4"), gd.load("mnist:5-9")
    assert low.classes == ["0", "1", "2", "3", "4"] and high.classes == ["5", "6", "7", "8", "9"]
    assert len(low.test) + len(high.test) == 10_000
    assert int(high.valid.y[0]) == 0  # the first training digit, a 5, is class 0 of mnist:5-9


def test_load_rejects_unknown_names() -> None:
    with pytest.raises(DataError, match=r"unknown dataset 'fashon'.*Did you mean 'fashion'\?(.|\n)*fashion:B"):
        gd.load("fashon")


# ----------------------------------------------------------------- IDX errors


def _copy_idx_folder(tmp_path: Path, name: str) -> Path:
    source, target = find_idx_dir(name), tmp_path / name
    target.mkdir()
    for stem in IDX_FILES:
        (target / f"{stem}.gz").symlink_to(source / f"{stem}.gz")
    return target


def test_truncated_idx_file_is_named(tmp_path: Path) -> None:
    root = _copy_idx_folder(tmp_path, "mnist")
    labels = root / "train-labels-idx1-ubyte.gz"
    raw = gzip.decompress(labels.read_bytes())
    labels.unlink()
    labels.write_bytes(gzip.compress(raw[:-100]))
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte\.gz: IDX file truncated.*\(60000,\)"):
        gd.mnist(root=root, download=False)
    labels.write_bytes(labels.read_bytes()[:1000])  # a cut-off gzip stream
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte\.gz: corrupt gzip file"):
        gd.mnist(root=root, download=False)


def test_corrupt_idx_headers(tmp_path: Path) -> None:
    bad_magic = tmp_path / "bad-magic"
    bad_magic.write_bytes(b"\x12\x34\x08\x01" + b"\x00" * 8)
    with pytest.raises(DataError, match="bad-magic: not an IDX file"):
        read_idx(bad_magic)
    good = tmp_path / "good"
    good.write_bytes(b"\x00\x00\x08\x02" + (2).to_bytes(4, "big") + (3).to_bytes(4, "big") + bytes(range(6)))
    assert read_idx(good).tolist() == [[0, 1, 2], [3, 4, 5]]
    good.write_bytes(good.read_bytes() + b"\x00")
    with pytest.raises(DataError, match="good: IDX file has trailing bytes"):
        read_idx(good)


def test_valid_idx_with_wrong_content_fails_the_checksum(tmp_path: Path) -> None:
    root = _copy_idx_folder(tmp_path, "mnist")
    labels = root / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(labels.read_bytes()))
    raw[8] = (raw[8] + 1) % 10  # the first test label, changed
    labels.unlink()
    labels.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\.gz: content has sha256 .*expected ff7bcfd4"):
        gd.mnist(root=root, download=False)


@pytest.fixture
def nowhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No data anywhere: empty GRAFTNET_DATA, empty cache, no system datasets, no network."""
    monkeypatch.setenv("GRAFTNET_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(gd, "SYSTEM_DATASETS_DIR", tmp_path / "system")

    def offline(url: str, timeout: float = 0) -> None:
        raise urllib.error.URLError("network is unreachable (test)")

    monkeypatch.setattr(gd.urllib.request, "urlopen", offline)
    return tmp_path


def test_missing_data_says_where_it_looked_and_what_to_do(nowhere: Path) -> None:
    with pytest.raises(DataError) as raised:
        gd.fashion_mnist(download=False)
    message = str(raised.value)
    assert "$GRAFTNET_DATA/fashion-mnist" in message and str(nowhere / "data" / "fashion-mnist") in message
    assert str(nowhere / "system" / "fashion-mnist") in message
    assert str(nowhere / "cache" / "graftnet" / "fashion-mnist") in message
    assert "sudo apt-get install dataset-fashion-mnist" in message and "set GRAFTNET_DATA" in message
    assert "download=False" in message


def test_failed_download_explains_itself(nowhere: Path) -> None:
    with pytest.raises(DataError, match=r"(?s)Downloading failed.*network is unreachable.*apt-get install"):
        gd.fashion_mnist()
    assert not list((nowhere / "cache").rglob("*.part"))
    assert not [p.name for p in (nowhere / "cache").rglob("*") if p.is_file()]  # no temporary file left


# ------------------------------------------------------------------ downloads


def test_download_verifies_and_writes_atomically(tmp_path: Path) -> None:
    mirror = find_idx_dir("mnist")
    bad_mirror = tmp_path / "bad-mirror"
    bad_mirror.mkdir()
    for stem in IDX_FILES:
        (bad_mirror / f"{stem}.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x00"))
    dest = tmp_path / "cache" / "mnist"
    with pytest.raises(DataError, match=r"(?s)checksum mismatch.*expected ba891046"):
        download_idx("mnist", dest=dest, mirrors=[bad_mirror.as_uri()])
    assert not (tmp_path / "cache").exists()  # nothing half-written, not even an empty folder, is left behind

    # The bad mirror is tried first, then the good one.
    folder = download_idx("mnist", dest=dest, mirrors=[bad_mirror.as_uri(), mirror.as_uri()])
    assert sorted(path.name for path in folder.iterdir()) == sorted(f"{stem}.gz" for stem in IDX_FILES)
    reference = gd.mnist(download=False)
    downloaded = gd.mnist(root=folder, download=False)
    assert downloaded.test.fingerprint() == reference.test.fingerprint()


# ------------------------------------------------------------- arrays, npz, images


def test_from_arrays_infers_the_task() -> None:
    multi = from_arrays(np.zeros((6, 3)), np.array([0, 2, 1, 2, 0, 1]), valid_size=2)
    assert (multi.task, multi.classes, len(multi.train), len(multi.valid)) == ("multiclass", ["0", "1", "2"], 4, 2)
    regression = from_arrays(np.zeros((5, 3)), np.zeros((5, 2)))
    assert regression.task == "regression" and regression.classes is None and regression.n_outputs == 2
    binary = from_arrays(np.zeros((4, 3)), np.array([True, False, True, True]))
    assert binary.task == "binary" and binary.train.y.tolist() == [1.0, 0.0, 1.0, 1.0]
    with pytest.raises(DataError, match=r"x of shape \(N, \.\.\.\).*got x \(5, 3\) and y \(4,\)"):
        from_arrays(np.zeros((5, 3)), np.zeros(4, dtype=int))
    with pytest.raises(DataError, match="labels 0..3 but there are 2 classes"):
        from_arrays(np.zeros((2, 3)), np.array([0, 3]), classes=["a", "b"])
    with pytest.raises(DataError, match="binary labels must be 0 or 1"):
        from_arrays(np.zeros((2, 3)), np.array([0.0, 2.0]), task="binary")


def test_npz_round_trip(tmp_path: Path, fashion: Dataset) -> None:
    task_b = fashion.only_classes(["Sandal", "Shirt"]).as_binary("Shirt").head(train=50, valid=20, test=30)
    path = save_npz(task_b, tmp_path / "task_b.npz")
    loaded = from_npz(path)
    assert (loaded.task, loaded.classes, loaded.name) == ("binary", ["Sandal", "Shirt"], "task_b")
    for name in ("train", "valid", "test"):
        assert getattr(loaded, name).fingerprint() == getattr(task_b, name).fingerprint()
    regression = from_arrays(np.random.default_rng(0).random((8, 4)), np.linspace(0, 1, 8))
    assert from_npz(save_npz(regression, tmp_path / "r.npz")).train.fingerprint() == regression.train.fingerprint()


def test_npz_with_wrong_keys_lists_them(tmp_path: Path) -> None:
    path = tmp_path / "wrong.npz"
    np.savez(path, X_train=np.zeros((2, 3)), y_train=np.zeros(2, dtype=int))
    with pytest.raises(DataError, match=r"keys found \['X_train', 'y_train'\].*missing: \['x_train'\].*Did you mean"):
        from_npz(path)


def _write_images(root: Path, sizes: dict[str, list[tuple[int, int]]]) -> dict[str, list[np.ndarray]]:
    from PIL import Image

    rng = np.random.default_rng(0)
    written: dict[str, list[np.ndarray]] = {}
    for label, shapes in sizes.items():
        (root / label).mkdir(parents=True)
        written[label] = []
        for index, (height, width) in enumerate(shapes):
            pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / label / f"{index}.png")
            written[label].append(pixels)
    return written


def test_image_folder(tmp_path: Path) -> None:
    written = _write_images(tmp_path / "pets", {"cat": [(6, 5)] * 5, "dog": [(6, 5)] * 5})
    (tmp_path / "pets" / "notes.txt").write_text("not an image")
    pets = image_folder(tmp_path / "pets", valid_fraction=0.2, seed=0)
    assert pets.classes == ["cat", "dog"] and pets.input_shape == (3, 6, 5)
    assert (len(pets.train), len(pets.valid), pets.test) == (8, 2, None)
    assert torch.bincount(pets.valid.y).tolist() == [1, 1]  # one of each class
    every = torch.cat([pets.train.x, pets.valid.x]) * 255  # (10, 3, 6, 5)
    expected = [torch.from_numpy(p).permute(2, 0, 1).float() for ps in written.values() for p in ps]
    for image in expected:  # each written image is in the dataset, exactly
        assert any(torch.allclose(image, candidate, atol=1e-3) for candidate in every)
    small = image_folder(tmp_path / "pets", size=(4, 4), grayscale=True, valid_fraction=0.0)
    assert small.input_shape == (1, 4, 4) and small.valid is None
    assert gd.load(str(tmp_path / "pets")).classes == ["cat", "dog"]  # a folder given to load()


def test_image_folder_with_mixed_sizes_needs_size(tmp_path: Path) -> None:
    _write_images(tmp_path / "mixed", {"a": [(6, 5), (6, 5)], "b": [(7, 7)]})
    with pytest.raises(DataError, match=r"b/0\.png is 7x7 but .*a/0\.png is 6x5; pass size=\(H, W\)"):
        image_folder(tmp_path / "mixed")
    assert image_folder(tmp_path / "mixed", size=(6, 6), valid_fraction=0).input_shape == (3, 6, 6)


def test_digits() -> None:
    data = gd.digits(seed=0)
    assert data.train.x.shape == (1197, 1, 8, 8) and (len(data.valid), len(data.test)) == (300, 300)
    assert float(data.train.x.max()) == 1.0 and data.classes == [str(d) for d in range(10)]
    assert gd.digits(seed=0).train.fingerprint() == data.train.fingerprint()
    assert gd.digits(seed=1).train.fingerprint() != data.train.fingerprint()
    assert gd.digits(valid_size=0, test_size=0).valid is None


def test_unit_and_none_scaling_agree() -> None:
    unit, raw = gd.digits(scale="unit"), gd.digits(scale="none")
    torch.testing.assert_close(unit.train.x * 16, raw.train.x)
    assert raw.source["scaling"] == {"kind": "none"}


def test_copying_the_idx_folder_is_found_via_graftnet_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copytree(find_idx_dir("mnist"), tmp_path / "mnist")
    monkeypatch.setenv("GRAFTNET_DATA", str(tmp_path))
    assert find_idx_dir("mnist") == tmp_path / "mnist"


def test_docstring_examples_run() -> None:
    results = doctest.testmod(gd, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert results.failed == 0 and results.attempted >= 8


# ------------------------------------------------------------- one convention for data folders
def test_root_names_a_data_root_or_the_dataset_folder_and_is_the_only_place_read(tmp_path, nowhere):
    with pytest.raises(DataError, match=r"(?s)MNIST not found.*root .*: .*empty/mnist \(no such folder\).*"
                                        r"writes nothing there"):
        gd.mnist(root=tmp_path / "empty")  # download=True, yet nothing is fetched into a folder given to read
    assert not (tmp_path / "empty").exists() and not (nowhere / "cache").exists()


def test_data_root_forms_agree(tmp_path):
    source = find_idx_dir("mnist")
    root = tmp_path / "data"
    (root / "mnist").mkdir(parents=True)
    for stem in IDX_FILES:
        (root / "mnist" / f"{stem}.gz").symlink_to(source / f"{stem}.gz")
    assert gd.dataset_dir(root, "mnist") == root / "mnist" == gd.dataset_dir(root / "mnist", "mnist")
    by_root, by_folder = gd.mnist(root=root, download=False), gd.mnist(root=root / "mnist", download=False)
    assert by_root.source["root"] == by_folder.source["root"] == str(root / "mnist")
    assert [Path(f["path"]).name for f in by_root.source["files"]] == [f"{stem}.gz" for stem in IDX_FILES]
    assert {f["checksum"] for f in by_root.source["files"]} == {"sha256 verified"}
    assert gd.load("mnist:0-1", root=root).source["root"] == str(root / "mnist")
    from graftnet.recipe import build_data, resolve

    before = os.environ.get("GRAFTNET_DATA")
    built = build_data(resolve({"data": {"source": "mnist", "root": str(root), "train_size": 10}}))
    assert built.source["root"] == str(root / "mnist") and os.environ.get("GRAFTNET_DATA") == before


def test_an_empty_graftnet_data_is_an_error_not_a_silent_fallback(monkeypatch):
    monkeypatch.setenv("GRAFTNET_DATA", "")
    with pytest.raises(DataError, match="GRAFTNET_DATA is set but empty; set it to a data folder"):
        gd.mnist(download=False)


def test_a_failed_download_leaves_no_empty_cache_folder(nowhere: Path) -> None:
    with pytest.raises(DataError, match="Downloading failed"):
        gd.fashion_mnist()
    assert not (nowhere / "cache").exists()
