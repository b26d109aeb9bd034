"""graftnet: train deep networks and reuse what they learned.

    >>> import graftnet as gn
    >>> fashion = gn.datasets.fashion_mnist()
    >>> model = gn.Network.mlp(fashion.input_shape, [300, 100], 10)
    >>> history = gn.fit(model, fashion, epochs=30, batch_size=50, optimizer=gn.SGD(lr=0.01))
"""

__version__ = "0.1.0"

from graftnet import backbones, catalog, distributed, sparse, study, tracking, zoo
from graftnet import data as datasets
from graftnet import pretrain
from graftnet.augment import Augment, ImageAugment
from graftnet.cache import FeatureCache
from graftnet.errors import CheckpointError, ConfigError, DataError, GraftnetError, ImportFormatError, ShapeError
from graftnet.io.checkpoint import load_model, save_model
from graftnet.io.torch_fx import from_torch
from graftnet.layers import (
    Activation,
    AlphaDropout,
    AvgPool,
    BatchNorm,
    Conv2d,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool,
    MaxPool,
    Rescaling,
)
from graftnet.merge import Add, Average, Concatenate, Maximum, Minimum, Multiply, Subtract
from graftnet.network import Block, Network
from graftnet.rank import rank
from graftnet.optim import (
    SGD,
    Adagrad,
    Adam,
    AdamW,
    Cosine,
    Exponential,
    Ftrl,
    Nadam,
    OneCycle,
    PiecewiseConstant,
    Plateau,
    Power,
    RMSprop,
)
from graftnet.train import EarlyStopping, History, evaluate, fit, predict, seed_everything
from graftnet.tune import tune
from graftnet.transfer import FineTune, Stage, freeze_below, get_weights, graft, set_weights, unfreeze_top

__all__ = [
    "Activation", "AlphaDropout", "Augment", "ImageAugment", "AvgPool", "BatchNorm", "CheckpointError", "ConfigError",
    "Conv2d", "Cosine", "DataError", "Dense", "Dropout", "EarlyStopping", "Exponential", "Flatten",
    "GlobalAvgPool", "GraftnetError", "History", "ImportFormatError", "MaxPool", "Nadam", "Network",
    "OneCycle", "PiecewiseConstant", "Plateau", "Power", "RMSprop", "Rescaling", "SGD", "ShapeError",
    "Adagrad", "Adam", "AdamW", "datasets", "pretrain", "study", "evaluate", "fit", "load_model", "predict",
    "save_model",
    "seed_everything", "catalog", "rank", "FeatureCache", "FineTune", "Stage", "freeze_below", "get_weights", "graft",
    "set_weights", "unfreeze_top", "Add", "Average", "Block", "Concatenate", "Maximum", "Minimum", "Multiply",
    "Subtract", "tune", "backbones", "from_torch", "distributed", "tracking", "sparse", "Ftrl", "zoo",
]
