"""Write the seed corpus of ``make fuzz`` into fuzz/corpus/ (committed; rerun only to refresh it).

Keras and TensorFlow seeds are copies of test fixtures written by real Keras 2 / TensorFlow 2.21
(tests/fixtures, with the scripts that made them); the graftnet, torch, safetensors and npz
seeds are written here from one small seeded MLP, so rerunning gives the same network.

    python fuzz/make_corpus.py
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from graftnet.io.checkpoint import save_checkpoint, save_model
from graftnet.io.npz import save_npz
from graftnet.io.torch_state import save_state
from graftnet.network import Network

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
FIXTURES = HERE.parent / "tests" / "fixtures"

COPIED = {
    "keras2_mlp.h5": FIXTURES / "keras" / "keras2_mlp.h5",
    "keras2_cnn.keras": FIXTURES / "keras" / "keras2_cnn.keras",
    "keras2_cnn_weights.h5": FIXTURES / "keras" / "keras2_cnn_weights.h5",
    "tf2_mlp": FIXTURES / "tf" / "tf2_mlp",
    "tf1_scoped": FIXTURES / "tf" / "tf1_scoped",
    "tf1_meta": FIXTURES / "tf" / "meta_cnn",
}
SAVED_MODELS = {  # SavedModel directories, whole (variables/ included), less the tests' reference.npz
    "savedmodel_keras2": FIXTURES / "tf" / "savedmodel" / "keras2_cnn",
    "savedmodel_keras3": FIXTURES / "tf" / "savedmodel" / "keras3_export",
}
TF_FILES = ("checkpoint", ".index", ".data-", ".meta")  # reference.npz / variables.npz stay with the tests


def seed_network() -> Network:
    """The network the torch, npz and graftnet seeds hold: 20 inputs, BatchNorm, 3 outputs."""
    torch.manual_seed(0)
    return Network.mlp(20, [16, 8], 3, batch_norm=True, name="fuzz")


def main() -> None:
    if CORPUS.exists():
        shutil.rmtree(CORPUS)
    CORPUS.mkdir()
    for name, source in COPIED.items():
        if source.is_dir():
            (CORPUS / name).mkdir()
            for path in source.iterdir():
                if any(marker in path.name for marker in TF_FILES):
                    shutil.copy(path, CORPUS / name / path.name)
        else:
            shutil.copy(source, CORPUS / name)
    for name, source in SAVED_MODELS.items():
        shutil.copytree(source, CORPUS / name, ignore=shutil.ignore_patterns("reference.npz"))
    net = seed_network()
    net.train()(torch.randn(32, 20))  # BatchNorm statistics away from their defaults
    net.eval()
    torch.save(net.state_dict(), CORPUS / "mlp.pt")
    torch.save(net.state_dict(), CORPUS / "mlp_legacy.pt", _use_new_zipfile_serialization=False)
    save_state(net, CORPUS / "mlp.safetensors")
    save_npz(net, CORPUS / "mlp.npz")
    save_model(net, CORPUS / "model", metadata={"classes": ["a", "b", "c"], "task": "multiclass"})
    opt = torch.optim.Adam(net.parameters())
    net(torch.randn(4, 20)).sum().backward()
    opt.step()
    save_checkpoint(CORPUS / "checkpoint", net, state={"epoch": 1, "optimizer": opt.state_dict(),
                                                       "torch_rng": torch.get_rng_state()})
    for path in sorted(CORPUS.rglob("*")):
        if path.is_file():
            print(f"{path.relative_to(HERE)}  {path.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
