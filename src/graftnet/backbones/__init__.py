"""Backbone builders: the networks people transfer from, as graftnet graphs with the names
their home frameworks give their layers, loading those frameworks' weights files.

    >>> base = gn.backbones.vgg16(include_top=False, input_shape=(150, 150, 3), weights=PATH)
"""

from __future__ import annotations

from graftnet.backbones.torchvision_family import torchvision_resnet18, torchvision_resnet34, torchvision_resnet50

__all__: list[str] = []
