"""11.3, faster optimizers: momentum, Nesterov, AdaGrad, RMSProp, Adam and FTRL.

The listings swap one line, the optimizer: MomentumOptimizer(lr, momentum=0.9) (with
use_nesterov=True for Nesterov), AdagradOptimizer, RMSPropOptimizer(lr, momentum=0.9,
decay=0.9, epsilon=1e-10), AdamOptimizer, and mention FTRLOptimizer for sparse models; they
print no accuracies. Here each one trains the same 300-100 ReLU network for a few epochs;
FTRL is graftnet's own FtrlProximal (torch has none), checked against TensorFlow's Ftrl.
"""

import graftnet as gn
from _book import Book, final_valid_accuracy

book = Book(__doc__)
data = book.data("mnist")
optimizers = {
    "momentum 0.9": gn.SGD(lr=0.01, momentum=0.9),
    "Nesterov": gn.SGD(lr=0.01, momentum=0.9, nesterov=True),
    "AdaGrad": gn.Adagrad(lr=0.01),
    "RMSProp (momentum 0.9, decay 0.9)": gn.RMSprop(lr=0.001, rho=0.9, momentum=0.9, eps=1e-10),
    "Adam": gn.Adam(lr=0.001),
    "FTRL": gn.Ftrl(lr=0.1),
}
for label, optimizer in optimizers.items():
    scores = []
    for seed in book.seeds:
        gn.seed_everything(seed)
        model = gn.Network.mlp(data.input_shape, [300, 100], 10)
        history = gn.fit(model, data, epochs=book.epochs(5), batch_size=50, optimizer=optimizer, seed=seed,
                         verbose=False)
        scores.append(final_valid_accuracy(history))
    book.compare(f"validation accuracy, {label}, 5 epochs", None, scores, "no figure in the listing")
book.done()
