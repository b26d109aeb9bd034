"""Keras' three save formats (notes 004): .h5, SavedModel, checkpoint — and reloading to retrain.

The notes save a trained Keras model with ``model.save("my_h5_model.h5")`` (HDF5),
``model.save("my_model")`` (a TensorFlow SavedModel folder) or as a checkpoint, reload it
with ``keras.models.load_model`` and train it again when more data arrives. They print no
figure. graftnet: ``save_model`` (its own checkpoint: safetensors + JSON), ``save_keras``
to ``.keras`` and ``.h5`` (both open in ``keras.models.load_model``), and
``load_saved_model`` reads SavedModel folders without TensorFlow (here the tf_keras CNN
SavedModel that scripts/make_tf_savedmodel_fixtures.py wrote with TensorFlow 2.21). Each
reloaded model predicts what the saved one did, and training goes on from where it stopped.
"""

from pathlib import Path

import numpy as np
import torch

import graftnet as gn
from _book import Book, final_valid_accuracy
from graftnet.io import load_keras, load_saved_model, save_keras

SAVED_MODEL = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "tf" / "savedmodel" / "keras2_cnn"

book = Book(__doc__)
data = book.data("mnist")
first, more = data.head(train=len(data.train) // 2), data  # half the images now, the rest "when more data arrives"
gn.seed_everything(42)
model = gn.Network.mlp(data.input_shape, [300, 100], 10, name="my_model")
history = gn.fit(model, first, epochs=book.epochs(10), batch_size=50, optimizer=gn.SGD(lr=0.01), seed=42,
                 verbose=False)
x = data.valid.x[:256]
expected = gn.predict(model, x)
paths = {"checkpoint": gn.save_model(model, book.workdir / "my_model"),
         ".keras": save_keras(model, book.workdir / "my_model.keras"),
         ".h5": save_keras(model, book.workdir / "my_h5_model.h5")}
reloaded = {"checkpoint": gn.load_model(paths["checkpoint"]),
            ".keras": load_keras(paths[".keras"])[0], ".h5": load_keras(paths[".h5"])[0]}
for form, net in reloaded.items():
    difference = float((gn.predict(net, x) - expected).abs().max())
    print(f"{form}: {paths[form]} reloaded, max |prediction difference| {difference:.2g}")
    assert difference < 1e-5, (form, difference)
book.compare("validation accuracy, first half of the training set", None, [final_valid_accuracy(history)])
again = reloaded[".h5"]  # reconstructed_model = keras.models.load_model("my_h5_model.h5"); fit on more data
history = gn.fit(again, more, epochs=book.epochs(10), batch_size=50, optimizer=gn.SGD(lr=0.01), seed=43,
                 verbose=False)
book.compare("validation accuracy after retraining the reloaded .h5 on all of it", None,
             [final_valid_accuracy(history)])

cnn, report = load_saved_model(SAVED_MODEL)  # keras.models.load_model("my_model"), no TensorFlow here
reference = np.load(SAVED_MODEL / "reference.npz")
ours = gn.predict(cnn, torch.from_numpy(reference["inputs_nhwc"]).permute(0, 3, 1, 2)).numpy()  # NHWC -> NCHW
print(f"SavedModel {SAVED_MODEL.name}: {len(cnn.layer_names)} layers, frozen {sorted(cnn.frozen)}, "
      f"max |output - TensorFlow's| {np.abs(ours - reference['outputs']).max():.2g}")
assert np.abs(ours - reference["outputs"]).max() < 1e-5
book.done()
