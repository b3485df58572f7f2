"""jaxconv: convolution for JAX, computed several ways behind one API.

Every way is checked against :func:`jax.lax.conv_general_dilated`.
"""

from jaxconv._src.api import conv, conv_general_dilated
from jaxconv._src.autotune import autotune
from jaxconv._src.data_parallel import (
    data_parallel_loss,
    data_parallel_step,
    device_mesh,
    replicate,
    request_cpu_devices,
    shard_batch,
)
from jaxconv._src.dispatch import auto_order, implementations
from jaxconv._src.pooling import avg_pool, global_avg_pool, global_max_pool, lp_pool, max_pool
from jaxconv._src.receptive_field import (
    Layer,
    conv_layer,
    cost_table,
    pool_layer,
    receptive_field,
)
from jaxconv._src.receptive_field_map import (
    effective_receptive_field,
    erf_support,
    plot_effective_receptive_field,
    theoretical_receptive_field_box,
)
from jaxconv._src.separable import depthwise_conv, depthwise_cost, separable_conv, separable_cost
from jaxconv._src.sharded import sharded_conv
from jaxconv._src.signal import convolve, convolve2d, correlate, correlate2d
from jaxconv._src.spec import (
    BOUNDARY_ALIASES,
    BOUNDARY_MODES,
    PADDING_WORDS,
    ConvSpec,
    conv_cost,
    output_shape,
)
from jaxconv._src.transpose import conv_transpose, conv_transpose_torch

__version__ = "0.1.0"

__all__ = [
    "autotune",
    "data_parallel_loss",
    "data_parallel_step",
    "device_mesh",
    "replicate",
    "request_cpu_devices",
    "shard_batch",
    "sharded_conv",
    "Layer",
    "avg_pool",
    "conv_layer",
    "conv_transpose",
    "conv_transpose_torch",
    "convolve",
    "convolve2d",
    "correlate",
    "correlate2d",
    "cost_table",
    "depthwise_conv",
    "depthwise_cost",
    "effective_receptive_field",
    "erf_support",
    "plot_effective_receptive_field",
    "theoretical_receptive_field_box",
    "global_avg_pool",
    "global_max_pool",
    "lp_pool",
    "max_pool",
    "pool_layer",
    "receptive_field",
    "separable_conv",
    "separable_cost",
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
