"""11.2.1, reusing a whole TensorFlow model: restore it, fetch its important ops, keep training.

The listing restores my_model_final with import_meta_graph, lists the graph's operations
(get_operations), fetches X, y, accuracy and training_op by name (get_tensor_by_name) or from
the "my_important_ops" collection, and continues training for 20 epochs (batches of 200,
SGD 0.01); it printed validation accuracy 0.9712 after the last epoch. graftnet: load_model
rebuilds the network from its spec, operations() lists it, and the saved collection gives
its outputs back by name (fetch). The meta-graph file itself is issue 10's (TF formats).
"""

import torch

import graftnet as gn
from _base_model import my_model_final
from _book import Book, final_valid_accuracy

book = Book(__doc__)
data = book.data("mnist")
model = my_model_final(book, data)
print("\n".join(model.operations()))
x_in, logits = model.fetch(data.valid.x[:5], "my_important_ops")  # X, logits = tf.get_collection(...)
assert torch.equal(logits, model(data.valid.x[:5]))
before = gn.evaluate(model, data.valid)["accuracy"]
history = gn.fit(model, data, epochs=book.epochs(20), batch_size=200, optimizer=gn.SGD(lr=0.01), seed=42,
                 verbose=False)
book.compare("validation accuracy, restored", None, [before])
book.compare("validation accuracy after 20 more epochs", 0.9712, [final_valid_accuracy(history)],
             "one run, continuing one saved model")
book.done()
