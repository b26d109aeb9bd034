"""Backbone builders: the networks people transfer from, as graftnet graphs with the names
their home frameworks give their layers, loading those frameworks' weights files.

    >>> base = gn.backbones.vgg16(include_top=False, input_shape=(150, 150, 3), weights=PATH)
    >>> x = gn.backbones.preprocess_input(images, "vgg16")   # (N, 3, 150, 150), RGB in [0, 255]

Keras' families (``keras_family``): vgg16, vgg19, resnet50, mobilenetv2, efficientnetb0,
densenet121, each with the arguments of its ``keras.applications`` namesake. torchvision's
ResNets (``torchvision_family``): torchvision_resnet18, torchvision_resnet34, torchvision_resnet50.
"""

from __future__ import annotations

from graftnet.backbones.keras_family import (
    KERAS_WEIGHTS,
    PREPROCESSING,
    KerasWeights,
    densenet121,
    efficientnetb0,
    keras_cache_dir,
    keras_weights_file,
    load_keras_application_weights,
    mobilenetv2,
    preprocess_input,
    preprocess_mode,
    resnet50,
    vgg16,
    vgg19,
)
from graftnet.backbones.torchvision_family import torchvision_resnet18, torchvision_resnet34, torchvision_resnet50

__all__ = [
    "KERAS_WEIGHTS", "PREPROCESSING", "KerasWeights", "densenet121", "efficientnetb0", "keras_cache_dir",
    "keras_weights_file", "load_keras_application_weights", "mobilenetv2", "preprocess_input", "preprocess_mode", "resnet50",
    "vgg16", "vgg19", "torchvision_resnet18", "torchvision_resnet34", "torchvision_resnet50",
]
