"""11.2.1 in Keras (the second notes): model A on 8 Fashion-MNIST classes, model B_on_A for sandal vs shirt.

The listing trains model_A (Flatten, five Dense(100, selu), softmax over 8 classes), then
builds model_B_on_A = model_A's layers[:-1] + Dense(1, sigmoid), after clone_model +
set_weights so that model A stays intact; it freezes the reused layers, compiles, trains 4
epochs, unfreezes, recompiles at a lower learning rate (1e-4) and trains 16 more, on 200
images. It printed 97.05% for B from scratch and 99.25% for B_on_A, and warns that the gain
was cherry-picked and that transfer works poorly on small dense nets. graftnet: graft copies
by itself (no clone_model), the optimizer is rebuilt at each stage (no recompiling), and the
script runs several seeds; `graftnet study` does the full comparison.
"""

import graftnet as gn
from _book import Book

book = Book(__doc__, seeds=3)
fashion = book.data("fashion")
task_a = fashion.without_classes(["Sandal", "Shirt"])
task_b = fashion.only_classes(["Sandal", "Shirt"]).as_binary("Shirt").head(train=64 if book.smoke else 200)
gn.seed_everything(0)
model_a = gn.Network.mlp(task_a.input_shape, [100] * 5, 8, activation="selu", name="model_A")
gn.fit(model_a, task_a, epochs=book.epochs(20), batch_size=32, optimizer=gn.SGD(lr=1e-3), seed=0, verbose=False)
scratch, on_a = [], []
for seed in book.seeds:
    gn.seed_everything(seed)
    model_b = gn.Network.mlp(task_b.input_shape, [100] * 5, 1, activation="selu", output_activation="sigmoid")
    gn.fit(model_b, task_b, epochs=book.epochs(20), batch_size=32, optimizer=gn.SGD(lr=1e-3), seed=seed, verbose=False)
    scratch.append(gn.evaluate(model_b, task_b)["accuracy"])
    gn.seed_everything(seed)
    b_on_a = gn.graft(model_a, reuse=":-1", head=gn.Dense(1, "sigmoid"))  # a copy: model_a is untouched
    plan = gn.FineTune([gn.Stage(book.epochs(4), train="outputs"), gn.Stage(book.epochs(16), train="all", lr=1e-4)])
    plan.fit(b_on_a, task_b, optimizer=gn.SGD(lr=1e-3), seed=seed, verbose=False)
    on_a.append(gn.evaluate(b_on_a, task_b)["accuracy"])
book.compare("test accuracy, model B from scratch", 0.9705, scratch)
book.compare("test accuracy, model B on A", 0.9925, on_a, "the book's run was cherry-picked; see `graftnet demo`")
book.done()
