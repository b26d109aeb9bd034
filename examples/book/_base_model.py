"""The 11.2 companions reuse 11.1.4's my_model_final: load it, or train it (a short run in smoke)."""

from __future__ import annotations

from pathlib import Path

import graftnet as gn

SAVED = Path(__file__).resolve().parents[1] / "results" / "book" / "ch11_1_4_gradient_clipping" / "my_model_final"


def my_model_final(book, data) -> gn.Network:
    """11.1.4's model: the saved one at full size when it exists, else trained here."""
    if not book.smoke and (SAVED / "spec.json").is_file():
        return gn.load_model(SAVED)
    gn.seed_everything(0)
    model = gn.Network.mlp(data.input_shape, [300, 50, 50, 50, 50], 10, name="my_model")
    gn.fit(model, data, epochs=book.epochs(20), batch_size=200, optimizer=gn.SGD(lr=0.01), clip_value=1.0, seed=0,
           verbose=False)
    model.add_to_collection("my_important_ops", "input").add_to_collection("my_important_ops", "outputs")
    path = gn.save_model(model, (SAVED if not book.smoke else book.workdir / "my_model_final"))
    return gn.load_model(path)
