"""Ch. 10, fine-tuning the hyperparameters: layers, neurons per layer, activation, learning rate.

The notes (chapter 10, prose) suggest a randomized search with cross-validation over the number
of hidden layers, the neurons per layer, the activation and the learning rate, and the
"stretch pants" approach: pick more layers and neurons than needed, then stop early. They
print no figure; the chapter-10 network they tune, 300-100 ReLU trained 30 epochs with SGD
0.01, reaches 0.8866 test accuracy on Fashion-MNIST here (README, 5 seeds). graftnet:
``gn.tune`` (Optuna: TPE sampler, median pruning on the per-epoch validation accuracy, early
stopping, SQLite storage so a stopped search resumes) on examples/recipes/tune_fashion_mlp.toml,
30 trials at full size (run again, it resumes the stored search: the committed results come from
``graftnet tune examples/recipes/tune_fashion_mlp.toml --trials 30``, whose SQLite file this
script reopened). Each trial's test accuracy is recorded, never used to choose.
"""

from pathlib import Path

import graftnet as gn
from _book import Book
from graftnet.tune import load_tune_recipe

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "tune_fashion_mlp.toml"

book = Book(__doc__)
recipe = load_tune_recipe(RECIPE)
trials = recipe["tune"]["trials"]
if book.smoke:  # the same search on 384 / 128 / 128 images, 2 trials of 1 epoch
    recipe["data"].update(train_size=384, valid_size=128, test_size=128)
    recipe["train"]["epochs"], trials = 1, 2
result = gn.tune(recipe, trials=trials, folder=book.workdir / "tune", name="tune_fashion_mlp", log=lambda s: None)
best = result.study.best_trial
test = best.user_attrs.get("test", {}).get("accuracy")
finished = [t for t in result.study.trials if t.datetime_complete is not None]
trial_seconds = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in finished)
print(f"{result.trials_done} trials run in this call; the search holds {len(finished)} finished trials "
      f"({trial_seconds:.0f} s of trials in all); best trial {best.number}: {result.best_params}")
book.compare("validation accuracy of the best trial", None, [result.best_value], "the notes print no figure")
if test is not None:
    book.compare("test accuracy of the best trial", 0.8866, [test],
                 "the reference is graftnet's chapter-10 300-100 network (README), not a book figure")
book.done(trial_seconds=round(trial_seconds), best_params=result.best_params, trials=result.trials_done, best_recipe=str(result.folder / "best_recipe.toml"))
