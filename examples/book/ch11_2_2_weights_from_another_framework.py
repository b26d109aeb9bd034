"""11.2.2, weights from another framework: assign a kernel and bias by hand, check the output.

The listing builds hidden1 (2 inputs, 3 units), finds the assign ops of its kernel and bias
(or makes placeholders feeding tf.assign), feeds them original_w = [[1, 2, 3], [4, 5, 6]] and
original_b = [7, 8, 9], and evaluates hidden1 on [[10, 11]]: [[61, 83, 105]]. graftnet:
set_weights with the Keras layout (kernel as (inputs, units)), checked shape by shape.
"""

import numpy as np

import graftnet as gn
from _book import Book

book = Book(__doc__)
model = gn.Network([gn.Dense(3, "relu", name="hidden1")], input_shape=(2,))
gn.set_weights(model, {"hidden1": [np.array([[1., 2., 3.], [4., 5., 6.]]), np.array([7., 8., 9.])]},
               layout="keras")
out = gn.predict(model, np.array([[10., 11.]], dtype=np.float32))
print("hidden1 on [[10, 11]]:", out.tolist())
assert out.tolist() == [[61.0, 83.0, 105.0]]
book.done(output=out.tolist())
