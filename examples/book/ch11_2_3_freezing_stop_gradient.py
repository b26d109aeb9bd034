"""11.2.3, freezing with tf.stop_gradient: gradients stop at hidden2.

The same graft as the var_list listing, but the graph gets hidden2_stop =
tf.stop_gradient(hidden2) and hidden3 reads it, so nothing below hidden2 receives a gradient;
it printed validation accuracy 0.9582. graftnet: graft(..., stop_gradient="hidden2"): hidden2
and everything below it are frozen, which also lets fit cache their output (next listing).
"""

import torch

import graftnet as gn
from _base_model import my_model_final
from _book import Book, final_valid_accuracy

book = Book(__doc__, seeds=3)
data = book.data("mnist")
base = my_model_final(book, data)
scores = []
for seed in book.seeds:
    gn.seed_everything(seed)
    model = gn.graft(base, reuse="hidden[123]", head=[gn.Dense(20, "relu", init="he_normal"), gn.Dense(10)],
                     stop_gradient="hidden2")
    history = gn.fit(model, data, epochs=book.epochs(20), batch_size=200, optimizer=gn.SGD(lr=0.01), seed=seed,
                     verbose=False)
    assert torch.equal(model.layer("hidden2").weight, base.layer("hidden2").weight)
    assert not torch.equal(model.layer("hidden3").weight, base.layer("hidden3").weight)
    scores.append(final_valid_accuracy(history))
print("frozen:", model.frozen, "| cached up to:", history.epochs[-1].get("cache_cut"))
book.compare("validation accuracy after 20 epochs", 0.9582, scores)
book.done()
