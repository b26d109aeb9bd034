"""11.2.4, caching the frozen layers: compute hidden2 once, train the rest on it.

The listing runs hidden2 on the whole training set once (h2_cache), then for every epoch
shuffles the cached rows and feeds them to hidden2 directly, so the frozen layers never run
again; it prints no accuracy. graftnet does this by itself whenever the bottom layers are
frozen: the History says where it cut (cache_cut). Here the same graft trains with and without
the cache, and both give the same weights.
"""

import time

import torch

import graftnet as gn
from _base_model import my_model_final
from _book import Book, final_valid_accuracy

book = Book(__doc__)
data = book.data("mnist")
base = my_model_final(book, data)
runs = {}
for cache in (False, True):
    gn.seed_everything(42)
    model = gn.graft(base, reuse="hidden[123]", head=[gn.Dense(20, "relu", init="he_normal"), gn.Dense(10)],
                     stop_gradient="hidden2")
    start = time.perf_counter()
    history = gn.fit(model, data, epochs=book.epochs(20), batch_size=200, optimizer=gn.SGD(lr=0.01), seed=42,
                     cache=cache, verbose=False)
    runs[cache] = (model, history, time.perf_counter() - start)
    print(f"cache={cache}: {runs[cache][2]:.1f} s, cut at {history.epochs[-1].get('cache_cut')}")
difference = max(float((runs[True][0].state_dict()[k] - runs[False][0].state_dict()[k]).abs().max())
                 for k in runs[True][0].state_dict())
print(f"largest weight difference with and without the cache: {difference:.2e}")
assert difference < 1e-4
book.compare("validation accuracy, cached", None, [final_valid_accuracy(runs[True][1])], "no figure in the listing")
book.done(seconds_without_cache=runs[False][2], seconds_with_cache=runs[True][2], max_weight_difference=difference)
