"""gn.zoo.load: each zoo's name resolves to the folder where its own tool keeps the file.

The Hugging Face cache is written by the tests exactly as huggingface_hub lays it out
(``models--<user>--<repo>/{blobs,refs/main,snapshots/<commit>/<file> -> ../../blobs/<hash>}``)
and read through huggingface_hub itself with ``HF_HUB_OFFLINE=1``; no network is used.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import torch

import graftnet as gn
from graftnet.errors import CheckpointError, ConfigError

pytest.importorskip("huggingface_hub")

COMMIT = "3f1c2b9a" * 5  # a 40-digit commit hash, as refs/main holds


def _hf_cache(cache: Path, repo_id: str, files: dict[str, bytes]) -> Path:
    """Lay ``files`` out in ``cache`` as ``hf_hub_download`` leaves them; returns the snapshot folder."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    snapshot = repo / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir()
    for name, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()  # an LFS file's etag is its sha256
        blob.write_bytes(data)
        (snapshot / name).symlink_to(os.path.relpath(blob, snapshot))
    return snapshot


@pytest.fixture
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "hf-cache"


def test_hf_graftnet_model_loads_from_the_hub_cache(offline, tmp_path):
    model = gn.Network.mlp(4, [3], 2, name="tiny")
    folder = gn.save_model(model, tmp_path / "saved") or tmp_path / "saved"
    files = {p.name: p.read_bytes() for p in Path(folder).iterdir() if p.is_file()}
    assert {"spec.json", "weights.safetensors"} <= set(files)
    _hf_cache(offline, "someone/tiny", files)
    loaded = gn.zoo.load("hf:someone/tiny", cache_dir=offline)
    x = torch.randn(5, 4)
    assert torch.equal(loaded.eval()(x), model.eval()(x))


def test_hf_offline_says_which_file_to_put_where(offline):
    with pytest.raises(CheckpointError) as err:
        gn.zoo.load("hf:someone/absent", cache_dir=offline)
    message = str(err.value)
    assert "spec.json of someone/absent is not in the Hugging Face cache" in message
    assert f"{offline}/models--someone--absent/snapshots/<commit>/spec.json" in message
    assert "https://huggingface.co/someone/absent/resolve/main/spec.json" in message


def test_timm_offline_names_the_timm_repo_and_file(offline):
    with pytest.raises(CheckpointError, match=r"model\.safetensors of timm/resnet18\.a1_in1k .*"
                                              r"models--timm--resnet18\.a1_in1k/snapshots/<commit>/model\.safetensors"):
        gn.zoo.load("timm:resnet18.a1_in1k", cache_dir=offline)


def test_timm_resnet_loads_into_the_torchvision_builder(offline):
    from safetensors.torch import save

    source = gn.backbones.torchvision_resnet18(num_classes=10, input_shape=(3, 32, 32))
    state = {k: v for k, v in source.state_dict().items() if not k.endswith("num_batches_tracked")}
    _hf_cache(offline, "timm/resnet18.a1_in1k", {"model.safetensors": save(state)})
    net = gn.zoo.load("timm:resnet18.a1_in1k", num_classes=10, input_shape=(3, 32, 32), cache_dir=offline)
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(net.eval()(x), source.eval()(x))


def test_torchvision_offline_points_at_torch_hubs_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    expected = tmp_path / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    with pytest.raises(CheckpointError, match=str(expected)):
        gn.zoo.load("torchvision:resnet18", download=False)


def test_torchvision_without_its_builders_says_so(monkeypatch):
    monkeypatch.delattr(gn.backbones, "torchvision_resnet18")  # as in a graftnet without them
    with pytest.raises(ConfigError, match="no builder gn.backbones.torchvision_resnet18"):
        gn.zoo.load("torchvision:resnet18", download=False)


def test_keras_name_resolves_to_keras_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    with pytest.raises(CheckpointError, match=str(tmp_path / "keras" / "models" /
                                                  "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5")):
        gn.zoo.load("keras:vgg16", include_top=False, input_shape=(32, 32, 3), download=False)


def test_bad_names_are_refused_with_what_exists():
    with pytest.raises(ConfigError, match="expected '<zoo>:<model>' with zoo one of keras, torchvision, timm, hf"):
        gn.zoo.load("vgg16")
    with pytest.raises(ConfigError, match="graftnet builds vgg16, vgg19, .* Did you mean 'resnet50'"):
        gn.zoo.load("keras:resnet5")
    with pytest.raises(ConfigError, match="no builder for timm's 'vit_base_patch16_224'"):
        gn.zoo.load("timm:vit_base_patch16_224.augreg_in21k")
