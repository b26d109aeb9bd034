"""11.3.6, learning-rate scheduling: piecewise constant, performance, exponential and power.

The listing builds tf.train.exponential_decay(0.1, global_step, decay_steps=10000,
decay_rate=1/10) for a MomentumOptimizer(momentum=0.9): the rate is divided by ten every
10,000 steps; the prose names the other schedules. It prints no accuracy. graftnet's schedules
are stepped per epoch: 10,000 steps of batch 50 are about 9 epochs, so Exponential(s=9).
"""

import graftnet as gn
from _book import Book, final_valid_accuracy

book = Book(__doc__)
data = book.data("mnist")
schedules = {
    "exponential (÷10 every 9 epochs)": gn.Exponential(s=9),
    "piecewise constant": gn.PiecewiseConstant(boundaries=(2, 4), values=(0.1, 0.05, 0.01)),
    "performance (plateau)": gn.Plateau(monitor="val_loss", factor=0.5, patience=1),
    "power": gn.Power(s=5, c=1.0),
}
for label, schedule in schedules.items():
    scores = []
    for seed in book.seeds:
        gn.seed_everything(seed)
        model = gn.Network.mlp(data.input_shape, [300, 50], 10)
        history = gn.fit(model, data, epochs=book.epochs(6), batch_size=50, optimizer=gn.SGD(lr=0.1, momentum=0.9),
                         schedule=schedule, seed=seed, verbose=False)
        scores.append(final_valid_accuracy(history))
    rates = [round(r, 5) for r in history["lr"]]
    book.compare(f"validation accuracy, {label}, 6 epochs", None, scores, f"rates {rates}" if rates else "")
book.done()
