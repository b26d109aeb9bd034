"""11.1.2, non-saturating activations: leaky ReLU, RReLU, ELU and SELU.

The listing writes leaky_relu(z, alpha=0.01) = max(alpha * z, z) by hand and passes it (or
tf.nn.elu, tf.nn.selu) as the activation of dense layers; it prints no accuracy. Here each
activation is an entry of graftnet's activations (leaky_relu(α), rrelu, elu, selu) in the same
300-100 network, trained for a few epochs; SELU gets LeCun initialisation, as it needs.
"""

import torch

import graftnet as gn
from _book import Book, final_valid_accuracy

book = Book(__doc__)
data = book.data("mnist")
z = torch.linspace(-4, 4, 9)
leaky = gn.Network([gn.Activation("leaky_relu(0.01)")], (9,))(z[None])[0]
assert torch.allclose(leaky, torch.maximum(0.01 * z, z))  # the listing's own definition
for activation in ("leaky_relu(0.01)", "rrelu", "elu", "selu"):
    scores = []
    for seed in book.seeds:
        gn.seed_everything(seed)
        model = gn.Network.mlp(data.input_shape, [300, 100], 10, activation=activation)
        history = gn.fit(model, data, epochs=book.epochs(5), batch_size=50, optimizer=gn.SGD(lr=0.01),
                         seed=seed, verbose=False)
        scores.append(final_valid_accuracy(history))
    book.compare(f"validation accuracy, {activation}, 5 epochs", None, scores, "no figure in the listing")
book.done()
