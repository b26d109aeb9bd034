"""11.3.6 / 11.4.2, sparse models: strong l1, FTRL, and setting the small weights to zero.

The notes: every optimizer yields dense models; for a fast, small model at run time, prune
tiny weights to zero, apply strong l1, or train with FTRL (FTRLOptimizer) and its l1. No
listing or figure. graftnet: gn.sparse.prune(model, 0.9) after training, or PruneDuring in
fit; a per-layer report; the saved model keeps its zeros and its metadata says how sparse it is.
"""

import json

import graftnet as gn
from _book import Book, final_valid_accuracy
from graftnet.sparse import PruneDuring, format_sparsity, prune, sparsity_report

book = Book(__doc__)
data = book.data("mnist")
gn.seed_everything(42)
model = gn.Network.mlp(data.input_shape, [300, 100], 10)
history = gn.fit(model, data, epochs=book.epochs(5), batch_size=50, optimizer=gn.SGD(lr=0.01, momentum=0.9),
                 seed=42, verbose=False)
dense_acc = gn.evaluate(model, data.valid)["accuracy"]
prune(model, 0.9)  # after training: 90% of every kernel set to zero
pruned_acc = gn.evaluate(model, data.valid)["accuracy"]
gn.fit(model, data, epochs=book.epochs(2), batch_size=50, optimizer=gn.SGD(lr=0.01, momentum=0.9), seed=42,
       verbose=False)  # fine-tune with the mask held
print(format_sparsity(sparsity_report(model)))
book.compare("validation accuracy, dense", None, [dense_acc])
book.compare("validation accuracy, 90% pruned, no retraining", None, [pruned_acc])
book.compare("validation accuracy, 90% pruned, 2 epochs fine-tuned", None, [gn.evaluate(model, data.valid)["accuracy"]])
path = gn.save_model(model, book.workdir / "sparse_mlp")
print("saved metadata sparsity:", round(json.loads((path / "metadata.json").read_text())["sparsity"]["overall"], 4))

gn.seed_everything(42)  # pruning during training, along the cubic schedule
gradual = gn.Network.mlp(data.input_shape, [300, 100], 10)
history = gn.fit(gradual, data, epochs=book.epochs(6), batch_size=50, optimizer=gn.SGD(lr=0.01, momentum=0.9),
                 seed=42, verbose=False, callbacks=[PruneDuring(0.9, start_epoch=1, end_epoch=book.epochs(5))])
book.compare("validation accuracy, pruned to 90% during training", None, [final_valid_accuracy(history)])

gn.seed_everything(42)  # FTRL with l1: exact zeros without a mask
ftrl = gn.Network.mlp(data.input_shape, [300, 100], 10)
history = gn.fit(ftrl, data, epochs=book.epochs(5), batch_size=50,
                 optimizer=gn.Ftrl(lr=0.1, l1_regularization_strength=0.001), seed=42, verbose=False)
book.compare("validation accuracy, FTRL with l1 0.001", None, [final_valid_accuracy(history)],
             f"{sparsity_report(ftrl)['overall']:.1%} of the weights are zero")
book.done(sparsity=sparsity_report(model))
