"""11.1.3, batch normalisation: 300-100 with BN (momentum 0.9) before ELU, 20 epochs of 200.

The listing alternates tf.layers.dense and tf.layers.batch_normalization(training=...,
momentum=0.9), with ELU after each BN, runs the UPDATE_OPS that move the statistics with each
step, and trains with SGD at 0.01, batches of 200, for 20 epochs; it printed validation
accuracy 0.9612 after the last epoch (and says BN and ELU help deep nets more than this
shallow one). TF's momentum 0.9 keeps 90% of the old mean; torch's momentum is the share of
the new batch, so the same averaging is BatchNorm(momentum=0.1).
"""

import graftnet as gn
from _book import Book, final_valid_accuracy

book = Book(__doc__, seeds=3)
data = book.data("mnist")
scores = []
for seed in book.seeds:
    gn.seed_everything(seed)
    model = gn.Network([gn.Flatten(), gn.Dense(300, name="hidden1"), gn.BatchNorm(momentum=0.1, name="bn1"),
                        gn.Activation("elu", name="act1"), gn.Dense(100, name="hidden2"),
                        gn.BatchNorm(momentum=0.1, name="bn2"), gn.Activation("elu", name="act2"),
                        gn.Dense(10, name="outputs"), gn.BatchNorm(momentum=0.1, name="bn_out")],
                       input_shape=data.input_shape, name="bn_mlp")
    history = gn.fit(model, data, epochs=book.epochs(20), batch_size=200, optimizer=gn.SGD(lr=0.01), seed=seed,
                     verbose=False)
    scores.append(final_valid_accuracy(history))
book.compare("validation accuracy after 20 epochs", 0.9612, scores)
book.done()
