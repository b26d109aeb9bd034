"""11.4.4, max-norm regularisation: clip each unit's incoming weights to norm 1 after each step.

The listing builds 300-50 ReLU, makes clip_weights = tf.assign(weights, tf.clip_by_norm(
weights, 1.0, axes=1)) for both hidden kernels (then wraps it as a max_norm_regularizer that
puts the ops in a "max_norm" collection), runs them after every training step; momentum 0.9,
lr 0.01, batches of 50, 20 epochs. It printed validation accuracy 0.9846, 0.9824 and 0.9844
for its three versions. graftnet: Dense(max_norm=1.0), applied after every optimizer step.
"""

import graftnet as gn
from _book import Book, final_valid_accuracy

book = Book(__doc__, seeds=3)
data = book.data("mnist")
scores = []
for seed in book.seeds:
    gn.seed_everything(seed)
    model = gn.Network([gn.Flatten(), gn.Dense(300, "relu", max_norm=1.0, name="hidden1"),
                        gn.Dense(50, "relu", max_norm=1.0, name="hidden2"), gn.Dense(10, name="outputs")],
                       input_shape=data.input_shape, name="max_norm_mlp")
    history = gn.fit(model, data, epochs=book.epochs(20), batch_size=50, optimizer=gn.SGD(lr=0.01, momentum=0.9),
                     seed=seed, verbose=False)
    scores.append(final_valid_accuracy(history))
norms = model.layer("hidden1").weight.norm(dim=1)
print(f"largest incoming-weight norm of hidden1: {float(norms.max()):.4f} (limit 1.0)")
assert float(norms.max()) <= 1.0 + 1e-5
book.compare("validation accuracy after 20 epochs", 0.9844, scores, "the regularizer-function version")
book.done()
