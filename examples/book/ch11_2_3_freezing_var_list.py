"""11.2.3, freezing the lower layers through the optimizer's var_list.

The listing reuses hidden1-3 of my_model_final, adds a new hidden4 (20) and outputs, and
passes only the variables of "hidden[34]|outputs" to optimizer.minimize(var_list=...), so
hidden1 and hidden2 never change; 20 epochs of 200, SGD 0.01; it printed validation accuracy
0.9604. graftnet: graft(..., freeze="hidden[12]"): frozen layers are left out of the optimizer
and kept in inference mode.
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
                     freeze="hidden[12]")
    history = gn.fit(model, data, epochs=book.epochs(20), batch_size=200, optimizer=gn.SGD(lr=0.01), seed=seed,
                     verbose=False)
    assert torch.equal(model.layer("hidden1").weight, base.layer("hidden1").weight)
    scores.append(final_valid_accuracy(history))
book.compare("validation accuracy after 20 epochs", 0.9604, scores)
book.done()
