"""Chapter 10, the low-level MNIST DNN: neuron_layer 300-100, SGD 0.01, batch 50, 30 epochs.

The listing writes its own neuron_layer (truncated normal, stddev 2/sqrt(n_inputs)), stacks
hidden1 (300, ReLU), hidden2 (100, ReLU) and logits (10) under name scopes, trains with
gradient descent at 0.01 for 30 epochs of batches of 50, prints batch and validation accuracy
per epoch, saves with a Saver, restores to score the test set and predicts the first 20 test
images. The notes report the restored model's test accuracy without the figure itself; the
book's run reached about 0.98 validation accuracy.
"""

import torch

import graftnet as gn
from _book import Book, final_valid_accuracy

book = Book(__doc__)
data = book.data("mnist")
valid, test = [], []
for seed in book.seeds:
    gn.seed_everything(seed)
    model = gn.Network([gn.Flatten(name="flatten"),
                        gn.Dense(300, "relu", init="truncated_normal", name="hidden1"),
                        gn.Dense(100, "relu", init="truncated_normal", name="hidden2"),
                        gn.Dense(10, name="outputs")], input_shape=data.input_shape, name="dnn")
    history = gn.fit(model, data, epochs=book.epochs(30), batch_size=50, optimizer=gn.SGD(lr=0.01), seed=seed,
                     verbose=False)
    valid.append(final_valid_accuracy(history))
    path = gn.save_model(model, book.workdir / "dnn")            # saver.save(sess, "dnn.ckpt")
    restored = gn.load_model(path)                                 # saver.restore(sess, ...)
    test.append(gn.evaluate(restored, data)["accuracy"])
book.compare("validation accuracy after the last epoch", 0.98, valid, "the book's approximate figure")
book.compare("test accuracy of the restored model", None, test)
predicted = gn.predict(restored, data.test.x[:20]).argmax(dim=1)
print("predicted:", predicted.tolist())
print("actual:   ", data.test.y[:20].tolist())
assert torch.equal(gn.predict(restored, data.test.x[:20]), gn.predict(model, data.test.x[:20]))
book.done(first_20_predicted=predicted.tolist())
