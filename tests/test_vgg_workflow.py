"""The VGG16 workflow of the notes: image folders, the base's preprocessing, ImageAugment, the
cache moving with the unfrozen block, cache_views, saving and reloading (issue 11, item 1).

Images are patches of scikit-learn's two sample photographs (china, flower); the VGG16 has
weights from a fixed seed and 32x32 inputs, so that every test takes seconds.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import graftnet as gn
from graftnet.augment import ImageAugment, from_unit_rgb, to_unit_rgb
from graftnet.cache import FeatureCache
from graftnet.errors import ConfigError, DataError

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "vgg16_transfer.py"
SIZE = 32


def _example():
    spec = importlib.util.spec_from_file_location("vgg16_transfer", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("vgg16_transfer", module)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _example().sample_photos(tmp_path_factory.mktemp("photos") / "photos", patch=64, per_class=8)


def _base() -> gn.Network:
    torch.manual_seed(0)
    return gn.backbones.vgg16(include_top=False, input_shape=(SIZE, SIZE, 3), weights=None)


def _model(base: gn.Network) -> gn.Network:
    return gn.Network([gn.Block(base), gn.Flatten(name="flatten"), gn.Dense(16, "relu", name="dense"),
                       gn.Dense(1, "sigmoid", name="dense_1")], base.input_shape, name="vgg16_transfer")


@pytest.fixture(scope="module")
def data(photos: Path) -> gn.datasets.Dataset:
    return gn.datasets.image_folder(photos, size=(SIZE, SIZE), preprocess=_base(), valid_fraction=0.25,
                                    seed=0).as_binary("flower")


# ------------------------------------------------------------------ image folders
def test_image_folder_uses_the_bases_own_preprocessing(photos: Path) -> None:
    import keras

    raw = gn.datasets.image_folder(photos, size=(SIZE, SIZE), preprocess="none", valid_fraction=0)  # [0, 255]
    vgg = gn.datasets.image_folder(photos, size=(SIZE, SIZE), preprocess=_base(), valid_fraction=0)
    assert vgg.source["preprocess"] == "caffe" and raw.classes == vgg.classes == ["china", "flower"]
    pixels = raw.train.x.permute(0, 2, 3, 1).numpy()  # (N, H, W, 3) as Keras takes them
    expected = keras.applications.vgg16.preprocess_input(pixels.copy())
    np.testing.assert_allclose(vgg.train.x.permute(0, 2, 3, 1).numpy(), expected, atol=1e-4)
    tf_mode = gn.datasets.image_folder(photos, size=(SIZE, SIZE), preprocess="mobilenetv2", valid_fraction=0)
    expected = keras.applications.mobilenet_v2.preprocess_input(pixels.copy())
    np.testing.assert_allclose(tf_mode.train.x.permute(0, 2, 3, 1).numpy(), expected, atol=1e-5)
    with pytest.raises(DataError, match=r"preprocess='bgr'.*caffe, torch, tf, none"):
        gn.datasets.image_folder(photos, size=(SIZE, SIZE), preprocess="bgr")
    with pytest.raises(ConfigError, match=r"network 'mlp' does not say how its inputs are preprocessed"):
        gn.datasets.image_folder(photos, size=(SIZE, SIZE), preprocess=gn.Network.mlp(4, [3], 2))


def test_image_folder_errors_name_what_is_wrong(photos: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=r"empty: an image folder needs one sub-folder per class.*found no sub-folder"):
        gn.datasets.image_folder(empty)
    one = tmp_path / "one"
    (one / "cat").mkdir(parents=True)
    (one / "cat" / "a.png").write_bytes((photos / "china" / "000.png").read_bytes())
    with pytest.raises(DataError, match=r"only one class, 'cat' \(1 images\); a classifier needs at least 2"):
        gn.datasets.image_folder(one)
    (one / "dog").mkdir()
    with pytest.raises(DataError, match=r"class folder\(s\) \['dog'\] hold no images"):
        gn.datasets.image_folder(one)
    (one / "dog" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    with pytest.raises(DataError, match=r"dog/broken\.jpg: cannot read image"):
        gn.datasets.image_folder(one, size=(8, 8))


# ------------------------------------------------------------------ augmentation
def test_image_augment_is_reproducible_and_acts_on_colours(data: gn.datasets.Dataset) -> None:
    x = data.train.x[:6]  # caffe pixels
    augment = ImageAugment.for_data(data, flip=True, zoom=0.2, rotate=15, crop=0.2, brightness=0.2,
                                    contrast=0.2, saturation=0.3, hue=0.1)
    assert augment.pixels == "caffe"
    first = augment(x, torch.Generator().manual_seed(3))
    torch.testing.assert_close(first, augment(x, torch.Generator().manual_seed(3)), rtol=0, atol=0)
    assert not torch.allclose(first, augment(x, torch.Generator().manual_seed(4)))
    unit = to_unit_rgb(first, "caffe")  # colours stay colours: back in [0, 1] after the caffe round trip
    assert float(unit.min()) > -1e-4 and float(unit.max()) < 1 + 1e-4
    flipped = ImageAugment(flip=True, pixels="caffe")(x, torch.Generator().manual_seed(0))
    assert all(torch.allclose(f, i) or torch.allclose(f, i.flip(-1)) for f, i in zip(flipped, x))
    assert ImageAugment.from_dict(augment.to_dict()) == augment
    with pytest.raises(ConfigError, match=r"unknown image augmentation setting\(s\) \['hue_shift'\]"):
        ImageAugment.from_dict({"hue_shift": 0.1})


def test_hue_and_saturation_leave_grey_images_grey(data: gn.datasets.Dataset) -> None:
    grey = to_unit_rgb(data.train.x[:4], "caffe").mean(dim=1, keepdim=True).expand(-1, 3, -1, -1)  # (4, 3, H, W)
    out = ImageAugment(saturation=0.5, hue=0.5)(grey.contiguous(), torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, grey, atol=2e-5, rtol=0)
    for form in ("caffe", "torch", "tf", "none"):
        torch.testing.assert_close(to_unit_rgb(from_unit_rgb(grey, form), form), grey, atol=1e-5, rtol=0)


# ------------------------------------------------------------------ the cache in the two stages
def test_the_cache_moves_to_block4_pool_when_block5_is_unfrozen(data: gn.datasets.Dataset) -> None:
    model = _model(_base()).freeze("vgg16")
    history = gn.fit(model, data, epochs=1, batch_size=4, optimizer=gn.RMSprop(lr=2e-5), seed=0, verbose=False)
    assert history.epochs[0]["cache_cut"] == "flatten"  # frozen base: the head trains on (512,) features
    model.unfreeze("vgg16.layers[15:]")
    assert [n for n in model.layer_names if n not in model.frozen][:3] == [
        "vgg16/block5_conv1", "vgg16/block5_conv2", "vgg16/block5_conv3"]
    twin = _model(_base())
    twin.load_state_dict(model.state_dict())
    twin.freeze("vgg16").unfreeze("vgg16.layers[15:]")
    cached = gn.fit(model, data, epochs=1, batch_size=4, optimizer=gn.RMSprop(lr=2e-5), seed=1, verbose=False)
    gn.fit(twin, data, epochs=1, batch_size=4, optimizer=gn.RMSprop(lr=2e-5), seed=1, cache=False, verbose=False)
    assert cached.epochs[0]["cache_cut"] == "vgg16/block4_pool"
    for key, value in model.state_dict().items():  # the cache changes nothing but the time
        torch.testing.assert_close(value, twin.state_dict()[key], atol=1e-5, rtol=1e-4)


def test_augmentation_below_the_cut_turns_the_cache_off_and_says_why(data: gn.datasets.Dataset,
                                                                     capsys: pytest.CaptureFixture) -> None:
    model = _model(_base()).freeze("vgg16").unfreeze("vgg16.layers[15:]")
    augment = ImageAugment.for_data(data, flip=True, brightness=0.1)
    history = gn.fit(model, data, epochs=1, batch_size=4, augment=augment, seed=0)
    reason = history.epochs[0]["cache_off"]
    assert "cache_cut" not in history.epochs[0]
    assert "vgg16/block1_conv1..vgg16/block4_pool (14 frozen layers) read them" in reason
    assert "cache_views=K" in reason and f"cache: off: {reason}" in capsys.readouterr().err


def test_cache_views_computes_k_views_once_and_records_them(data: gn.datasets.Dataset) -> None:
    augment = ImageAugment.for_data(data, flip=True, zoom=0.1, brightness=0.1, hue=0.05)
    runs = []
    for _ in range(2):
        model = _model(_base()).freeze("vgg16").unfreeze("vgg16.layers[15:]")
        cache = FeatureCache()
        history = gn.fit(model, data, epochs=2, batch_size=4, augment=augment, cache_views=3, cache=cache, seed=0,
                         verbose=False)
        runs.append(model.state_dict())
        assert cache.stats()["misses"] == 4  # three views of the training images, the validation images
    assert [row["cache_views"] for row in history.epochs] == [3, 3]
    assert history.epochs[0]["cache_cut"] == "vgg16/block4_pool" and "cache_off" not in history.epochs[0]
    for key, value in runs[0].items():  # the views come from the fit's seed
        torch.testing.assert_close(value, runs[1][key], rtol=0, atol=0)
    with pytest.raises(ConfigError, match=r"cache_views=3 caches augmented views of the inputs: it needs augment="):
        gn.fit(model, data, epochs=1, cache_views=3)


# ------------------------------------------------------------------ the whole script
def test_the_example_runs_end_to_end_and_every_saved_form_reloads(photos: Path, tmp_path: Path) -> None:
    import keras

    result = _example().main([str(photos), "--size", str(SIZE), "--epochs", "1", "1", "--batch-size", "4",
                              "--out", str(tmp_path / "out")])
    assert 0.0 <= result["test_accuracy"] <= 1.0
    assert result["max |prediction difference|, checkpoint"] == 0.0
    assert result["max |prediction difference|, .keras"] < 1e-5
    assert result["max |prediction difference|, .h5"] < 1e-5
    saved = gn.load_model(tmp_path / "out" / "checkpoint")
    assert saved.info["preprocess_input"] == "caffe" and "vgg16/block5_conv1" not in saved.frozen
    by_keras = keras.models.load_model(tmp_path / "out" / "vgg16_transfer.keras")  # Keras itself reads it
    assert [layer.name for layer in by_keras.layers][-4:] == ["vgg16", "flatten", "dense", "dense_1"]
    images = gn.datasets.image_folder(photos, size=(SIZE, SIZE), preprocess=saved, valid_fraction=0).train.x[:4]
    expected = gn.predict(saved, images).numpy()
    np.testing.assert_allclose(by_keras.predict(images.permute(0, 2, 3, 1).numpy(), verbose=0), expected, atol=1e-5)
    from_h5 = keras.models.load_model(tmp_path / "out" / "vgg16_transfer.h5", compile=False)  # and the .h5
    np.testing.assert_allclose(from_h5.predict(images.permute(0, 2, 3, 1).numpy(), verbose=0), expected, atol=1e-5)
    vgg = from_h5.get_layer("vgg16")  # block 5 fine-tuned, the rest of the base still frozen
    assert [layer.name for layer in vgg.layers if layer.trainable] == [
        "block5_conv1", "block5_conv2", "block5_conv3", "block5_pool"]


def test_the_cli_recipe_grafts_keras_vgg16_and_runs_the_plan(photos: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture) -> None:
    from graftnet.cli import main
    from graftnet.io.keras import save_keras

    save_keras(_base(), tmp_path / "weights.keras")  # any Keras file with VGG16's layer names
    recipe = (EXAMPLE.parent / "recipes" / "vgg16_transfer.toml").read_text()
    (tmp_path / "plan.toml").write_text(recipe.replace("epochs = 30", "epochs = 1"))
    grafted, tuned = tmp_path / "models" / "v", tmp_path / "models" / "v-ft"
    assert main(["graft", "keras:vgg16", "--base-weights", str(tmp_path / "weights.keras"), "--input-shape",
                 str(SIZE), str(SIZE), "3", "--freeze", "reused", "--add", "flatten", "--add", "16:relu:dense",
                 "--add", "2:softmax:dense_1", "--out", str(grafted)]) == 0
    assert main(["finetune", str(grafted), "--plan", str(tmp_path / "plan.toml"), "--data", str(photos),
                 "--batch-size", "8", "--out", str(tuned)]) == 0
    err = capsys.readouterr().err
    assert "cache: layers vgg16/block1_conv1..flatten (19 layers) are frozen" in err
    assert "cache: layers vgg16/block1_conv1..vgg16/block4_pool (14 layers) are frozen" in err
    model = gn.load_model(tuned)
    assert model.info["preprocess_input"] == "caffe" and model.input_shape == (3, SIZE, SIZE)
    assert "vgg16/block5_conv1" not in model.frozen and "vgg16/block4_conv3" in model.frozen
    first = gn.load_model(grafted)  # the base's weights came from the file, the block keeps Keras' names
    torch.testing.assert_close(first.layer("vgg16/block1_conv1").weight, _base().layer("block1_conv1").weight)
