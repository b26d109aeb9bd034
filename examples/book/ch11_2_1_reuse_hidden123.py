"""11.2.1, reusing only the lower layers: hidden1-3 restored by regex, a new hidden4 and outputs.

The listing builds a new 300-50-50-20-10 graph, collects the variables whose scope matches
"hidden[123]" into a restore Saver, restores them from my_model_final, initialises the rest
and trains everything for 20 epochs (batches of 200, SGD 0.01); it printed validation
accuracies of 0.9706 and 0.9676 for its two variants. graftnet: graft(reuse="hidden[123]",
head=[Dense(20), Dense(10)]); every layer trains, as in the listing.
"""

import graftnet as gn
from _base_model import my_model_final
from _book import Book, final_valid_accuracy

book = Book(__doc__, seeds=3)
data = book.data("mnist")
base = my_model_final(book, data)
scores = []
for seed in book.seeds:
    gn.seed_everything(seed)
    model = gn.graft(base, reuse="hidden[123]", head=[gn.Dense(20, "relu", init="he_normal"), gn.Dense(10)])
    history = gn.fit(model, data, epochs=book.epochs(20), batch_size=200, optimizer=gn.SGD(lr=0.01), seed=seed,
                     verbose=False)
    scores.append(final_valid_accuracy(history))
print(model.summary())
book.compare("validation accuracy after 20 epochs", 0.9676, scores, "the listing's restore-Saver variant")
book.done()
