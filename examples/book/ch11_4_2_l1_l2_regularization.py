"""11.4.2, l1 and l2 regularisation: base loss + 0.001 × the sum of |W| of every kernel.

The listing builds 784-300-10 (ReLU), adds scale = 0.001 times the l1 norms of both kernels
to the cross-entropy, and trains with SGD 0.01, batches of 200, 20 epochs; it printed
validation accuracy 0.9052. The second listing passes kernel_regularizer=l1_regularizer(0.001)
to every dense layer of 300-50 through partial(); graftnet's Dense(l1=...) is that. The weight
is strong for this small net, which is why the book's figure is low.
"""

import graftnet as gn
from _book import Book, final_valid_accuracy

book = Book(__doc__, seeds=3)
data = book.data("mnist")
scores = []
for seed in book.seeds:
    gn.seed_everything(seed)
    model = gn.Network([gn.Flatten(), gn.Dense(300, "relu", init="he_normal", l1=0.001, name="hidden1"),
                        gn.Dense(10, l1=0.001, name="outputs")], input_shape=data.input_shape)
    history = gn.fit(model, data, epochs=book.epochs(20), batch_size=200, optimizer=gn.SGD(lr=0.01), seed=seed,
                     verbose=False)
    scores.append(final_valid_accuracy(history))
book.compare("validation accuracy after 20 epochs, l1 0.001", 0.9052, scores)
book.done()
