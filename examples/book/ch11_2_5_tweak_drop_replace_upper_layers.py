"""11.2.5, tweaking, dropping or replacing the upper layers (prose, no listing).

The notes advise: freeze every copied layer first and see how it does; then unfreeze the top
one or two hidden layers; with little data, drop the top hidden layer(s) instead and freeze
the rest again. graftnet spells each step as a graft or a staged plan; here on 11.1.4's model,
reused for MNIST itself, with 1,000 training images.
"""

import graftnet as gn
from _base_model import my_model_final
from _book import Book, final_valid_accuracy

book = Book(__doc__)
data = book.data("mnist")
base = my_model_final(book, data)
few = data.head(train=200 if book.smoke else 1000)
variants = {
    "all reused layers frozen": dict(reuse=":-1", freeze=True),
    "top hidden layer (hidden5) unfrozen": dict(reuse=":-1", freeze="hidden[1-4]"),
    "hidden4-5 dropped, the rest frozen": dict(reuse="hidden[123]", freeze=True),
}
for label, kw in variants.items():
    scores = []
    for seed in book.seeds:
        gn.seed_everything(seed)
        model = gn.graft(base, head=gn.Dense(10), **kw)
        history = gn.fit(model, few, epochs=book.epochs(20), batch_size=50, optimizer=gn.SGD(lr=0.01), seed=seed,
                         verbose=False)
        scores.append(final_valid_accuracy(history))
    book.compare(f"validation accuracy, {label}", None, scores, "advice only in the notes")
book.done()
