"""11.4.3, dropout: rate 0.5 on the inputs and after each hidden layer of 300-50.

The listing wraps X, hidden1 and hidden2 in tf.layers.dropout(rate=0.5, training=training),
trains with MomentumOptimizer(0.01, momentum=0.9), batches of 50, 20 epochs, feeding
training=True only to the training op; it printed validation accuracy 0.9732. graftnet's
Dropout layers are active in fit and off in evaluate/predict (and when frozen).
"""

import graftnet as gn
from _book import Book, final_valid_accuracy

book = Book(__doc__, seeds=3)
data = book.data("mnist")
scores = []
for seed in book.seeds:
    gn.seed_everything(seed)
    model = gn.Network([gn.Flatten(), gn.Dropout(0.5, name="x_drop"), gn.Dense(300, "relu", name="hidden1"),
                        gn.Dropout(0.5, name="hidden1_drop"), gn.Dense(50, "relu", name="hidden2"),
                        gn.Dropout(0.5, name="hidden2_drop"), gn.Dense(10, name="outputs")],
                       input_shape=data.input_shape, name="dropout_mlp")
    history = gn.fit(model, data, epochs=book.epochs(20), batch_size=50, optimizer=gn.SGD(lr=0.01, momentum=0.9),
                     seed=seed, verbose=False)
    scores.append(final_valid_accuracy(history))
book.compare("validation accuracy after 20 epochs", 0.9732, scores)
book.done()
