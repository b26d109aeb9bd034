"""11.2.6, model zoos: find a trained model for a similar task instead of starting from scratch.

The notes (prose) point to one's own catalogue of trained models and to public model zoos
(TensorFlow's models, Caffe's zoo converted to TF), and advise reusing a model trained on a
similar task. They print no figure. graftnet: ``gn.catalog.Catalog`` (a SQLite catalogue with
lineage: which model was grafted or fine-tuned from which), searched by input shape, classes
and task; ``gn.rank`` scores which model and which layer should transfer (LogME/LEEP/H-score)
on a few labelled target images; ``gn.zoo.load("keras:vgg16" | "torchvision:resnet18" |
"timm:..." | "hf:user/repo")`` names public zoos' files where each tool caches them.
"""

import graftnet as gn
from _base_model import my_model_final
from _book import Book
from graftnet.catalog import Catalog

book = Book(__doc__)
data = book.data("mnist")
catalog = Catalog(book.workdir / "catalog.sqlite")
base = my_model_final(book, data)  # the 11.1.4 model: our own zoo's first entry
base_dir = gn.save_model(base, book.workdir / "my_model_final")
entry = catalog.add(base_dir, name="my_model_final", tags=["mnist", "book"], data=data,
                    description="11.1.4: 784-300-50-50-50-50-10 ReLU, gradients clipped")
new = gn.graft(base, reuse="hidden[123]", head=[gn.Dense(20, "relu", name="hidden4"), gn.Dense(10, name="outputs")],
               freeze="hidden[12]")  # the 11.2.1 reuse, registered as a child of the base
gn.fit(new, data, epochs=book.epochs(2), batch_size=200, optimizer=gn.SGD(lr=0.01), seed=42, verbose=False)
child = catalog.add(gn.save_model(new, book.workdir / "my_new_model"), name="my_new_model", data=data,
                    parent=entry.ref)
found = catalog.search(input_shape=data.input_shape, task="multiclass")
print("models for 28x28 digit images:", [e.ref for e in found])
print(catalog.lineage_text(child.ref))
target = book.data("fashion")  # a new task with the same input: which catalogued model, cut where, transfers?
ranking = gn.rank(target, catalog=catalog, train_size=256 if book.smoke else 1000)
print(ranking.table())
catalog.close()
best = ranking.best()
print(f"ranked first for Fashion-MNIST: {best['model']} cut after {best['layer']}")
book.done()
