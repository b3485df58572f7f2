"""Flax NNX layers computed by jaxconv: drop-ins for Flax's own, plus depthwise,
separable and pooling layers. Every layer takes ``implementation=``.

``jaxconv.nnx.Conv`` / ``ConvTranspose`` take the arguments of ``flax.nnx.Conv`` /
``ConvTranspose`` and create the same parameters, so the state of Flax's module loads
unchanged into ours (``nnx.update(ours, nnx.state(theirs))``), and the other way round::

    from flax import nnx
    import jaxconv.nnx as jnnx
    layer = jnnx.Conv(3, 16, (3, 3), implementation="taps", rngs=nnx.Rngs(0))
"""

from jaxconv._src.flax_nnx import (
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
