"""11.1.4, gradient clipping: the book's 784-300-50-50-50-50-10 ReLU net, gradients clipped to [-1, 1].

The listing computes the gradients with optimizer.compute_gradients, clips each with
tf.clip_by_value(grad, -1.0, 1.0) and applies them; SGD at 0.01, batches of 200, 20 epochs.
It saves the result as my_model_final.ckpt, the model the 11.2 listings reuse, and prints no
accuracy for this run. graftnet: fit(clip_value=1.0). The model is saved under
examples/results/book/ch11_1_4_gradient_clipping/my_model_final for the 11.2 companions.
"""

import graftnet as gn
from _book import Book, final_valid_accuracy

book = Book(__doc__)
data = book.data("mnist")
scores = []
for seed in book.seeds:
    gn.seed_everything(seed)
    model = gn.Network.mlp(data.input_shape, [300, 50, 50, 50, 50], 10, name="my_model")
    history = gn.fit(model, data, epochs=book.epochs(20), batch_size=200, optimizer=gn.SGD(lr=0.01),
                     clip_value=1.0, seed=seed, verbose=False)
    scores.append(final_valid_accuracy(history))
model.add_to_collection("my_important_ops", "input").add_to_collection("my_important_ops", "outputs")
gn.save_model(model, book.workdir / "my_model_final")
book.compare("validation accuracy after 20 epochs", None, scores, "the notes print none for this run")
book.done()
