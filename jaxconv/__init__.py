"""jaxconv: convolution for JAX, computed several ways behind one API.

Every way is checked against :func:`jax.lax.conv_general_dilated`.
"""

from jaxconv._src.api import conv, conv_general_dilated
from jaxconv._src.dispatch import auto_order, implementations
from jaxconv._src.spec import (
    BOUNDARY_ALIASES,
    BOUNDARY_MODES,
    PADDING_WORDS,
    ConvSpec,
    conv_cost,
    output_shape,
)

__version__ = "0.1.0"

__all__ = [
    "BOUNDARY_ALIASES",
    "BOUNDARY_MODES",
    "PADDING_WORDS",
    "ConvSpec",
    "auto_order",
    "conv",
    "conv_cost",
    "conv_general_dilated",
    "implementations",
    "output_shape",
]
