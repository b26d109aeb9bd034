"""Pretrained networks from the zoos, behind one call, from where the owning tool keeps them.

    >>> base = gn.zoo.load("keras:vgg16", include_top=False, input_shape=(150, 150, 3))
    >>> r18 = gn.zoo.load("torchvision:resnet18", num_classes=10)
    >>> r18 = gn.zoo.load("timm:resnet18.a1_in1k")
    >>> mine = gn.zoo.load("hf:someone/fashion-a")           # a graftnet model pushed to the Hub

============================  ==============================================================
name                          weights file, looked up in / downloaded into
============================  ==============================================================
``keras:<family>``            Keras' cache, ``$KERAS_HOME/models`` (``~/.keras/models``): the
                              legacy HDF5 file ``keras.applications`` downloads, checked
                              against its md5. Families: see ``KERAS_FAMILIES``.
``torchvision:<arch>``        torch hub's checkpoint folder, ``$TORCH_HOME/hub/checkpoints``
                              (``~/.cache/torch/hub/checkpoints``): torchvision's ``.pth``,
                              checked against the SHA-256 prefix in its name.
``timm:<model>``              the Hugging Face cache (through ``huggingface_hub``):
                              ``timm/<model>``'s ``model.safetensors``, loaded into the
                              torchvision-named builder of its architecture (timm's ResNets
                              use torchvision's names).
``hf:<user>/<repo>``          the Hugging Face cache: a graftnet model folder
                              (``spec.json``, ``weights.safetensors``, ``metadata.json``, as
                              ``save_model`` writes it).
============================  ==============================================================

Online, a missing file is downloaded (with its checksum; huggingface_hub checks its own).
Offline (no network, ``download=False``, or ``HF_HUB_OFFLINE=1``) a missing file is a
``CheckpointError`` that says which file to put where. Keyword arguments go to the builder
(``include_top``, ``input_shape``, ``num_classes``, ...).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from graftnet import backbones
from graftnet.errors import CheckpointError, ConfigError, did_you_mean
from graftnet.network import Network

__all__ = ["KERAS_FAMILIES", "ZOOS", "hf_file", "load"]

ZOOS = ("keras", "torchvision", "timm", "hf")
KERAS_FAMILIES = ("vgg16", "vgg19", "resnet50", "mobilenetv2", "efficientnetb0", "densenet121")
_TIMM_ARCHS = ("resnet18", "resnet34", "resnet50")  # timm architectures with a torchvision-named builder


def load(name: str, *, download: bool = True, cache_dir: str | os.PathLike[str] | None = None,
         **kwargs: Any) -> Network:
    """The pretrained network ``"<zoo>:<model>"``; see the module doc for zoos and folders.

    ``cache_dir`` overrides the Hugging Face cache folder (``timm:`` and ``hf:``).
    """
    zoo, sep, model = str(name).partition(":")
    if not sep or zoo not in ZOOS or not model:
        raise ConfigError(f"zoo name {name!r}: expected '<zoo>:<model>' with zoo one of {', '.join(ZOOS)}, e.g. "
                          f"'keras:vgg16', 'torchvision:resnet18', 'timm:resnet18.a1_in1k', 'hf:user/repo'")
    if zoo == "keras":
        return _keras(model, download, kwargs)
    if zoo == "torchvision":
        return _torchvision(model, "DEFAULT", download, kwargs)
    if zoo == "timm":
        arch = model.split(".", 1)[0]
        if arch not in _TIMM_ARCHS:
            raise ConfigError(f"timm:{model}: graftnet has no builder for timm's {arch!r}; it builds "
                              f"{', '.join(_TIMM_ARCHS)} (timm/<arch>.<tag> repos on the Hugging Face Hub)")
        path = hf_file(f"timm/{model}", "model.safetensors", download=download, cache_dir=cache_dir)
        return _torchvision(arch, path, download, kwargs)
    repo = model
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise ConfigError(f"hf:{repo}: expected 'hf:<user>/<repo>'")
    if kwargs:
        raise ConfigError(f"hf:{repo}: a graftnet model is loaded as saved; unexpected argument(s) "
                          f"{', '.join(sorted(kwargs))}")
    folder = hf_file(repo, "spec.json", download=download, cache_dir=cache_dir).parent
    hf_file(repo, "weights.safetensors", download=download, cache_dir=cache_dir)
    try:
        hf_file(repo, "metadata.json", download=download, cache_dir=cache_dir)
    except CheckpointError:
        pass  # optional, as in a save_model folder
    from graftnet.io.checkpoint import load_model

    return load_model(folder)


def _keras(family: str, download: bool, kwargs: dict[str, Any]) -> Network:
    if family not in KERAS_FAMILIES:
        raise ConfigError(f"keras:{family}: graftnet builds {', '.join(KERAS_FAMILIES)}."
                          f"{did_you_mean(family, KERAS_FAMILIES)}")
    kwargs.setdefault("weights", "imagenet")
    return getattr(backbones, family)(download=download, **kwargs)


def _torchvision(arch: str, weights: Any, download: bool, kwargs: dict[str, Any]) -> Network:
    builder = getattr(backbones, f"torchvision_{arch}", None)
    if builder is None:
        available = [n for n in dir(backbones) if n.startswith("torchvision_")]
        raise ConfigError(f"torchvision:{arch}: this graftnet has no builder gn.backbones.torchvision_{arch} "
                          f"(torchvision-named builders live in src/graftnet/backbones/torchvision_family.py); "
                          f"available: {', '.join(available) or 'none'}")
    kwargs.setdefault("weights", weights)
    return builder(download=download, **kwargs)


def _hf_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def hf_file(repo_id: str, filename: str, *, download: bool = True,
            cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """``filename`` of Hub repo ``repo_id`` in the Hugging Face cache (``huggingface_hub``'s
    ``hf_hub_download``: ``<cache>/models--<user>--<repo>/snapshots/<commit>/<file>``).

    Downloads it when missing unless offline; offline, the error says where it goes.
    """
    try:
        from huggingface_hub import constants, hf_hub_download
    except ImportError:
        raise ConfigError("the Hugging Face zoos need huggingface_hub: pip install 'graftnet[zoo]'") from None
    cache = Path(cache_dir).expanduser() if cache_dir is not None else Path(constants.HF_HUB_CACHE)
    offline = not download or _hf_offline()
    try:
        return Path(hf_hub_download(repo_id, filename, cache_dir=str(cache), local_files_only=offline))
    except Exception as err:  # noqa: BLE001 - huggingface_hub's errors: offline, missing repo or file, HTTP
        kind = type(err).__name__
        folder = cache / f"models--{repo_id.replace('/', '--')}"
        why = ("offline (HF_HUB_OFFLINE=1)" if _hf_offline() else "download=False") if offline else \
            f"could not be downloaded: {kind}: {str(err).splitlines()[0][:200] if str(err) else ''}"
        raise CheckpointError(
            f"{filename} of {repo_id} is not in the Hugging Face cache {cache} ({why}). It goes to "
            f"{folder}/snapshots/<commit>/{filename}, with {folder}/refs/main holding <commit>: on a machine "
            f"with a network run `hf download {repo_id} {filename} --cache-dir {cache}` (or "
            f"huggingface_hub.hf_hub_download) and copy {folder}; the file is "
            f"https://huggingface.co/{repo_id}/resolve/main/{filename}") from None
