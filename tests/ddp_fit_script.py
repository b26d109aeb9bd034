"""Run by tests/test_distributed.py under torchrun (and once without it, as the reference):
fit an MLP on digits whose first hidden layer is frozen, so the frozen-prefix cache is built
per rank on its shard; then the two worlds the data cannot be split across.

    python -m torch.distributed.run --standalone --nproc-per-node 2 tests/ddp_fit_script.py OUT
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from graftnet import distributed
from graftnet.cache import FeatureCache
from graftnet.errors import ConfigError
from graftnet.io.checkpoint import save_model
from graftnet.network import Network
from graftnet.recipe import build_data, resolve
from graftnet.train import fit, seed_everything


def main(out: Path) -> None:
    world = distributed.init_from_env("cpu")
    data = build_data(resolve({"data": {"source": "digits"}}))
    seed_everything(0)
    model = Network.mlp(data.input_shape, [32, 16], data.n_outputs).freeze("hidden1")
    store = FeatureCache()
    history = fit(model, data, epochs=2, batch_size=64, optimizer={"type": "sgd", "lr": 0.05, "momentum": 0.9},
                  seed=1, device="cpu", cache=store, verbose=False)
    if world.is_main:
        save_model(model, out / "model")
    errors = []
    for kwargs in ({"data": data.head(train=1), "batch_size": 64}, {"data": data, "batch_size": 1}):
        try:
            fit(model, kwargs["data"], epochs=1, batch_size=kwargs["batch_size"], device="cpu", cache=False,
                verbose=False)
            errors.append(None)
        except ConfigError as err:
            errors.append(str(err))
    report = {"rank": world.rank, "size": world.size, "history": history.epochs, "cache": store.stats(),
              "errors": errors}
    (out / f"rank{world.rank}.json").write_text(json.dumps(report))
    distributed.shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
