"""11.1.1, Xavier and He initialisation: tf.layers.dense(..., kernel_initializer=variance_scaling).

The listing creates hidden1 = dense(X, 300, relu) with He's variance-scaling initializer so
that the variance of each layer's outputs stays close to that of its inputs. No figure is
printed. graftnet picks He for the ReLU family by default; here we say it explicitly, check
the spread of the initial kernel against He's sqrt(2 / fan_in), and compare one short
training run with Glorot and with He.
"""

import math

import graftnet as gn
from _book import Book, final_valid_accuracy

book = Book(__doc__)
data = book.data("mnist")
layer = gn.Network([gn.Flatten(), gn.Dense(300, "relu", init="he_normal", name="hidden1")], data.input_shape)
std = float(layer.layer("hidden1").weight.std())
print(f"hidden1 kernel std {std:.4f}; He's sqrt(2/784) = {math.sqrt(2 / 784):.4f}")
for init in ("glorot_uniform", "he_normal"):
    scores = []
    for seed in book.seeds:
        gn.seed_everything(seed)
        model = gn.Network.mlp(data.input_shape, [300, 100], 10, init=init)
        history = gn.fit(model, data, epochs=book.epochs(5), batch_size=50, optimizer=gn.SGD(lr=0.01),
                         seed=seed, verbose=False)
        scores.append(final_valid_accuracy(history))
    book.compare(f"validation accuracy, {init}, 5 epochs", None, scores, "no figure in the listing")
book.done(kernel_std=std)
