"""11.4.5, data augmentation (prose, no listing): shifted, rotated, flipped copies of the images.

The notes describe making new training images by shifting, rotating, resizing, flipping and
changing brightness, and name TensorFlow's image operations; there is no code or figure.
graftnet's Augment does shifts, rotations, flips and crops as batched tensor operations on
each training batch (the frozen-layer cache is then off, as it must be).
"""

import graftnet as gn
from _book import Book, final_valid_accuracy

book = Book(__doc__)
data = book.data("mnist").head(train=256 if book.smoke else 5000)
for label, augment in (("no augmentation", None), ("shift 2 px, rotate 10°", gn.Augment(shift=2, rotate=10))):
    scores = []
    for seed in book.seeds:
        gn.seed_everything(seed)
        model = gn.Network.mlp(data.input_shape, [300, 100], 10)
        history = gn.fit(model, data, epochs=book.epochs(20), batch_size=50, optimizer=gn.SGD(lr=0.01, momentum=0.9),
                         augment=augment, seed=seed, verbose=False)
        scores.append(final_valid_accuracy(history))
    book.compare(f"validation accuracy, 5,000 images, {label}", None, scores, "no figure in the notes")
book.done()
