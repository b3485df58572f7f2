"""Flax linen layers computed by jaxconv: drop-ins for Flax's own, plus depthwise,
separable and pooling layers. Every layer takes ``implementation=``.

``jaxconv.nn.Conv`` / ``ConvTranspose`` take the fields of ``flax.linen.Conv`` /
``ConvTranspose`` and create the same parameters, so a parameter tree made by Flax's
module loads unchanged into ours, and the other way round::

    import jaxconv.nn as jnn
    layer = jnn.Conv(features=16, kernel_size=(3, 3), implementation="taps")
"""

from jaxconv._src.flax_linen import (
    AvgPool,
    Conv,
    ConvTranspose,
    DepthwiseConv,
    GlobalAvgPool,
    GlobalMaxPool,
    LpPool,
    MaxPool,
    SeparableConv,
)

__all__ = [
    "AvgPool",
    "Conv",
    "ConvTranspose",
    "DepthwiseConv",
    "GlobalAvgPool",
    "GlobalMaxPool",
    "LpPool",
    "MaxPool",
    "SeparableConv",
]
