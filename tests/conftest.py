"""Shared test set-up: environment for optional backends, thread count, the real datasets."""

from __future__ import annotations

import os
from pathlib import Path

# Keras 3 must use PyTorch as its backend; this has to happen before keras is imported.
os.environ.setdefault("KERAS_BACKEND", "torch")
# scikit-learn's check_estimator runs its array-API input checks only when SciPy was imported
# with this set; without it they are skipped and "passes check_estimator" would claim too much.
os.environ.setdefault("SCIPY_ARRAY_API", "1")

# The project's shared data (MNIST) sits beside the clone; `make test` exports this too.
_SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
if _SHARED_DATA.is_dir():
    os.environ.setdefault("GRAFTNET_DATA", str(_SHARED_DATA))

import pytest  # noqa: E402
import torch  # noqa: E402

# Under pytest-xdist, share the cores between workers instead of oversubscribing them.
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    _workers = int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // _workers))


@pytest.fixture(scope="session")
def fashion():
    """Fashion-MNIST from the real files (55,000 / 5,000 / 10,000), loaded once per process."""
    from graftnet.data import fashion_mnist

    return fashion_mnist(download=False)
