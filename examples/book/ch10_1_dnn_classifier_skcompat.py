"""Chapter 10, DNNClassifier through SKCompat: a 300-100 network behind scikit-learn's API.

The listing builds tf.contrib.learn's DNNClassifier(hidden_units=[300, 100], n_classes=10),
wraps it in SKCompat so that it has fit/predict, trains with batches of 50 for 40,000 steps
and scores the test set with sklearn's accuracy_score. The notes give no figure for it (the
book printed about 0.98). graftnet.sklearn.DNNClassifier is a real scikit-learn estimator:
40,000 steps of 50 are ~36 epochs of 55,000 images.
"""

from sklearn.metrics import accuracy_score

from _book import Book
from graftnet.sklearn import DNNClassifier

book = Book(__doc__)
data = book.data("mnist")
x_train = data.train.x.reshape(len(data.train.x), -1).numpy()
x_test = data.test.x.reshape(len(data.test.x), -1).numpy()
scores = []
for seed in book.seeds:
    clf = DNNClassifier(hidden_units=[300, 100], n_classes=10, batch_size=50, epochs=book.epochs(36),
                        learning_rate=0.01, random_state=seed)
    clf.fit(x_train, data.train.y.numpy())
    scores.append(accuracy_score(data.test.y.numpy(), clf.predict(x_test)))
book.compare("test accuracy (accuracy_score)", None, scores, "the notes print no figure")
book.done()
