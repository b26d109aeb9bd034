"""11.2.1, reusing a whole TensorFlow model: restore it, fetch its important ops, keep training.

The listing restores my_model_final with import_meta_graph, lists the graph's operations
(get_operations), fetches X, y, accuracy and training_op by name (get_tensor_by_name), and
continues training for 20 epochs (batches of 200, SGD 0.01, gradients clipped to [-1, 1]); it
printed validation accuracy 0.9712 after the last epoch. graftnet reads the real TF1 files
without TensorFlow: import_meta_graph rebuilds the network from the .meta and restores the
checkpoint; operations() is get_operations() with what each op became; a tensor name
("dnn/hidden3/Relu:0") selects the layers up to it; training_setup() gives the graph's own
optimizer, learning rate and clipping back. The graph is tests/fixtures/tf/meta_clip, written
by TensorFlow 2.21 from the 11.1.4 listing (scripts/make_tf_meta_fixtures.py) with smaller
layers (20-10-10-10-10 instead of 300-50-50-50-50, to keep the fixture small) and trained 5
steps on random data: it shows the TensorFlow side (operations, tensor names, the training op's
settings). The figure comes from the book's own model at full size: the 784-300-50-50-50-50-10
my_model_final that the 11.1.4 companion trained and saved, restored, its "my_important_ops"
collection fetched, and trained 20 more epochs with the settings read from the TF graph.
"""

from pathlib import Path

import torch

import graftnet as gn
from _base_model import my_model_final
from _book import Book, final_valid_accuracy
from graftnet.io.tf_graph import import_meta_graph, training_setup

META = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "tf" / "meta_clip" / "model.ckpt.meta"

book = Book(__doc__)
data = book.data("mnist")
# saver = tf.train.import_meta_graph("my_model_final.ckpt.meta"); saver.restore(sess, "my_model_final.ckpt")
restored = import_meta_graph(META, image_shape=data.input_shape)  # MNIST images in; the graph took 784 pixels
model = restored.network
operations = restored.operations()  # for op in graph.get_operations(): print(op.name)
print("\n".join(operations[:25] + [f"... {len(operations) - 25} more"]))
print("\n".join(model.operations()))
hidden3 = model.select("dnn/hidden3/Relu:0")  # get_tensor_by_name("dnn/hidden3/Relu:0"): the layers up to it
assert hidden3 == ["flatten", "hidden1", "hidden2", "hidden3"], hidden3
logits = model(data.valid.x[:5])  # the "eval" scope's logits
assert torch.equal(logits, model.forward(data.valid.x[:5]))
settings = training_setup(model)  # training_op: GradientDescent(0.01) on clip_by_value(grad, -1, 1)
print(f"training_op {restored.training['training_op']}: {settings}")
assert settings == {"optimizer": {"type": "sgd", "lr": 0.01, "momentum": 0.0, "nesterov": False}, "clip_value": 1.0}
# the book's figure: its full-size my_model_final (the 11.1.4 companion's), trained on with the graph's settings
full = my_model_final(book, data)
x_in, full_logits = full.fetch(data.valid.x[:5], "my_important_ops")  # X, logits = tf.get_collection(...)
assert torch.equal(full_logits, full(data.valid.x[:5]))
before = gn.evaluate(full, data.valid)["accuracy"]
history = gn.fit(full, data, epochs=book.epochs(20), batch_size=200, seed=42, verbose=False, **settings)
book.compare("validation accuracy, restored", None, [before], "the 11.1.4 companion's my_model_final, 20 epochs")
book.compare("validation accuracy after 20 more epochs", 0.9712, [final_valid_accuracy(history)],
             "one run, continuing one saved model with the TF graph's training settings")
book.done()
