"""The README's headline example, as it is there: Fashion-MNIST A -> B with the settings that work.

Model A learns the 8 classes other than Sandal and Shirt; model B reuses all of A but its output
layer for Sandal vs Shirt from 200 images: 4 epochs with the reused layers frozen (their output is
computed once and cached), then 16 with every layer training, all at SGD lr 1e-3 (the settings of
the book's notebook and of `graftnet demo`). One seed; `graftnet study` gives the spread over many.
tests/test_readme.py checks that the README's code block is this file's.

    python examples/headline.py          # about a minute on 2 CPU cores
"""

import graftnet as gn

fashion = gn.datasets.fashion_mnist()                   # 55,000 / 5,000 / 10,000 images
task_a = fashion.without_classes(["Sandal", "Shirt"])   # 8 classes
task_b = fashion.only_classes(["Sandal", "Shirt"]).as_binary("Shirt").head(train=200)
layers = dict(activation="selu", init="glorot_uniform")  # 300-100-50-50-50 SELU, as in the book

model_a = gn.Network.mlp(task_a.input_shape, [300, 100, 50, 50, 50], 8, output_activation="softmax", **layers)
gn.fit(model_a, task_a, epochs=20, optimizer=gn.SGD(lr=1e-3), seed=42)
gn.save_model(model_a, "models/fashion-a")

model_b = gn.graft(model_a, reuse=":-1", head=gn.Dense(1, "sigmoid"))  # a copy: model_a is untouched
plan = gn.FineTune([gn.Stage(4, train="outputs"), gn.Stage(16, train="all")])
plan.fit(model_b, task_b, optimizer=gn.SGD(lr=1e-3), seed=42)

scratch = gn.Network.mlp(task_b.input_shape, [300, 100, 50, 50, 50], 1, output_activation="sigmoid", **layers)
gn.fit(scratch, task_b, epochs=20, optimizer=gn.SGD(lr=1e-3), seed=42)
print(model_b.summary())
print(f"model B on A:    test accuracy {gn.evaluate(model_b, task_b)['accuracy']:.4f}")
print(f"model B scratch: test accuracy {gn.evaluate(scratch, task_b)['accuracy']:.4f}")
