"""Flax NNX modules whose convolutions and pooling run through jaxconv.

``Conv`` *is* :class:`flax.nnx.Conv`: it subclasses it and passes Flax's own
``conv_general_dilated=`` argument a lax-signature callable bound to an
``implementation``, so parameters, initialisers, padding words and dtype handling are
Flax's code. The state of a Flax module loads unchanged into ours and the other way round.

``ConvTranspose`` subclasses :class:`flax.nnx.ConvTranspose` (same arguments, the same
parameters drawn in the same order) and computes with :func:`jaxconv.conv_transpose`.
``DepthwiseConv`` / ``SeparableConv`` and the pooling layers share their bodies with the
linen modules (:mod:`jaxconv._src.flax_linen`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import jax.numpy as jnp
from flax import nnx
from flax.nnx.nn.dtypes import promote_dtype
from flax.nnx.nn.linear import default_bias_init, default_kernel_init

from jaxconv._src.flax_linen import (
    as_kernel_size,
    check_mask,
    conv_hook,
    conv_transpose_layer,
    depthwise_kernel_shape,
    depthwise_layer,
    hashable_implementation,
    run_pooling,
    separable_layer,
    transpose_kernel_shape,
)
from jaxconv._src.pooling import (
    avg_pool,
    global_avg_pool,
    global_max_pool,
    lp_pool,
    max_pool,
)

Implementation = str | Sequence[str] | None
Array = Any
_EMPTY: Mapping[str, Any] = MappingProxyType({})


def _param(init: Callable, rngs: nnx.Rngs, shape, dtype, metadata: Mapping[str, Any]):
    return nnx.Param(init(rngs.params(), shape, dtype), **metadata)


class Conv(nnx.Conv):
    """Drop-in for :class:`flax.nnx.Conv` with a choice of implementation.

    Takes every argument of :class:`flax.nnx.Conv` (same names, same defaults) and
    creates the same parameters: ``kernel`` of shape
    ``(*kernel_size, in_features // feature_group_count, out_features)`` and ``bias`` of
    shape ``(out_features,)``.

    Args:
      in_features, out_features, kernel_size, strides: as in :class:`flax.nnx.Conv`.
      implementation: ``None`` (automatic), a name from :func:`jaxconv.implementations`,
        or a sequence of names tried in order.
      conv_general_dilated: your own lax-signature function instead (then leave
        ``implementation`` as ``None``).
      **kwargs: the remaining keyword arguments of :class:`flax.nnx.Conv` (``padding``,
        ``input_dilation``, ``kernel_dilation``, ``feature_group_count``, ``use_bias``,
        ``mask``, ``dtype``, ``param_dtype``, ``precision``, ``kernel_init``,
        ``bias_init``, ``promote_dtype``, ``preferred_element_type``, ``rngs``, ...).

    Input ``(*batch_dims, *spatial, in_features)`` (no batch dimension is allowed);
    output ``(*batch_dims, *out_spatial, out_features)``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size: int | Sequence[int],
        strides: None | int | Sequence[int] = 1,
        *,
        implementation: Implementation = None,
        conv_general_dilated: Any = None,
        **kwargs: Any,
    ):
        hook = conv_hook(implementation, conv_general_dilated, "Conv")
        groups = kwargs.get("feature_group_count", 1)
        if in_features % groups:
            raise ValueError(
                f"`feature_group_count` (={groups}) must divide `in_features` (={in_features})"
            )
        super().__init__(
            in_features, out_features, kernel_size, strides, conv_general_dilated=hook, **kwargs
        )
        self.implementation = getattr(hook, "implementation", None)


class ConvTranspose(nnx.ConvTranspose):
    """Drop-in for :class:`flax.nnx.ConvTranspose`, computed by
    :func:`jaxconv.conv_transpose`.

    Same arguments, defaults and parameters as Flax's module (``kernel`` of shape
    ``(*kernel_size, in_features, out_features)``, or ``(*kernel_size, out_features,
    in_features)`` with ``transpose_kernel=True``; ``bias`` ``(out_features,)``), plus
    ``feature_group_count``, ``output_padding``, ``padding_convention`` (``"lax"`` or
    ``"torch"``) and ``implementation``, as :class:`jaxconv.nn.ConvTranspose`.

    Input ``(*batch_dims, *spatial, in_features)``; output
    ``(*batch_dims, *out_spatial, out_features)``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size: int | Sequence[int],
        strides: int | Sequence[int] | None = None,
        *,
        padding: Any = "SAME",
        kernel_dilation: int | Sequence[int] | None = None,
        use_bias: bool = True,
        mask: Array | None = None,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        precision: Any = None,
        kernel_init: Callable = default_kernel_init,
        bias_init: Callable = default_bias_init,
        transpose_kernel: bool = False,
        promote_dtype: Callable = promote_dtype,
        preferred_element_type: Any = None,
        feature_group_count: int = 1,
        output_padding: None | int | Sequence[int] = None,
        padding_convention: str = "lax",
        implementation: Implementation = None,
        rngs: nnx.Rngs,
        kernel_metadata: Mapping[str, Any] = _EMPTY,
        bias_metadata: Mapping[str, Any] = _EMPTY,
    ):
        kernel_size = as_kernel_size(kernel_size)
        self.kernel_size = kernel_size
        self.in_features = in_features
        self.out_features = out_features
        self.strides = strides
        self.padding = padding
        self.kernel_dilation = kernel_dilation
        self.use_bias = use_bias
        self.mask = mask
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.precision = precision
        self.transpose_kernel = transpose_kernel
        self.promote_dtype = promote_dtype
        self.preferred_element_type = preferred_element_type
        self.feature_group_count = feature_group_count
        self.output_padding = output_padding
        self.padding_convention = padding_convention
        self.implementation = hashable_implementation(implementation)
        self.kernel_shape = transpose_kernel_shape(
            kernel_size, in_features, out_features, transpose_kernel, feature_group_count
        )
        self.kernel = _param(kernel_init, rngs, self.kernel_shape, param_dtype, kernel_metadata)
        self.bias: nnx.Param | None
        if use_bias:
            self.bias = _param(bias_init, rngs, (out_features,), param_dtype, bias_metadata)
        else:
            self.bias = nnx.data(None)

    def __call__(self, inputs: Array) -> Array:
        check_mask(self.mask, self.kernel_shape)
        kernel = self.kernel[...]
        if self.mask is not None:
            kernel *= self.mask
        bias = self.bias[...] if self.bias is not None else None
        inputs, kernel, bias = self.promote_dtype((inputs, kernel, bias), dtype=self.dtype)
        return conv_transpose_layer(
            inputs,
            kernel,
            bias,
            kernel_size=self.kernel_size,
            strides=self.strides,
            padding=self.padding,
            kernel_dilation=self.kernel_dilation,
            transpose_kernel=self.transpose_kernel,
            precision=self.precision,
            preferred_element_type=self.preferred_element_type,
            feature_group_count=self.feature_group_count,
            output_padding=self.output_padding,
            padding_convention=self.padding_convention,
            implementation=self.implementation,
        )


class DepthwiseConv(nnx.Module):
    """Depthwise convolution computed by :func:`jaxconv.depthwise_conv`.

    Parameters and results are those of ``flax.nnx.Conv(in_features,
    in_features * depth_multiplier, kernel_size, feature_group_count=in_features)``
    (``kernel`` ``(*kernel_size, 1, in_features * depth_multiplier)``, then ``bias``,
    drawn in the same order from ``rngs``): such a Flax module's state loads unchanged.

    Input ``(*batch_dims, *spatial, in_features)``; output
    ``(*batch_dims, *out_spatial, in_features * depth_multiplier)``.
    """

    def __init__(
        self,
        in_features: int,
        kernel_size: int | Sequence[int],
        depth_multiplier: int = 1,
        strides: None | int | Sequence[int] = 1,
        *,
        padding: Any = "SAME",
        kernel_dilation: None | int | Sequence[int] = 1,
        use_bias: bool = True,
        mask: Array | None = None,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        precision: Any = None,
        kernel_init: Callable = default_kernel_init,
        bias_init: Callable = default_bias_init,
        promote_dtype: Callable = promote_dtype,
        implementation: Implementation = None,
        rngs: nnx.Rngs,
        kernel_metadata: Mapping[str, Any] = _EMPTY,
        bias_metadata: Mapping[str, Any] = _EMPTY,
    ):
        self.kernel_size = as_kernel_size(kernel_size)
        self.in_features = in_features
        self.depth_multiplier = depth_multiplier
        self.out_features = in_features * depth_multiplier
        self.strides = strides
        self.padding = padding
        self.kernel_dilation = kernel_dilation
        self.use_bias = use_bias
        self.mask = mask
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.precision = precision
        self.promote_dtype = promote_dtype
        self.implementation = hashable_implementation(implementation)
        self.kernel_shape = depthwise_kernel_shape(self.kernel_size, in_features, depth_multiplier)
        check_mask(mask, self.kernel_shape)
        self.kernel = _param(kernel_init, rngs, self.kernel_shape, param_dtype, kernel_metadata)
        self.bias: nnx.Param | None
        if use_bias:
            self.bias = _param(bias_init, rngs, (self.out_features,), param_dtype, bias_metadata)
        else:
            self.bias = nnx.data(None)

    def __call__(self, inputs: Array) -> Array:
        kernel = self.kernel[...]
        if self.mask is not None:
            kernel *= self.mask
        bias = self.bias[...] if self.bias is not None else None
        inputs, kernel, bias = self.promote_dtype((inputs, kernel, bias), dtype=self.dtype)
        return depthwise_layer(
            inputs,
            kernel,
            bias,
            kernel_size=self.kernel_size,
            strides=self.strides,
            padding=self.padding,
            kernel_dilation=self.kernel_dilation,
            precision=self.precision,
            implementation=self.implementation,
        )


class SeparableConv(nnx.Module):
    """Depthwise-separable convolution computed by :func:`jaxconv.separable_conv`.

    Parameters, drawn in this order: ``depthwise_kernel``
    ``(*kernel_size, 1, in_features * depth_multiplier)``, ``pointwise_kernel``
    ``(1, .., 1, in_features * depth_multiplier, out_features)``, ``bias``
    ``(out_features,)``; the same as :class:`jaxconv.nn.SeparableConv`.

    Input ``(*batch_dims, *spatial, in_features)``; output
    ``(*batch_dims, *out_spatial, out_features)``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size: int | Sequence[int],
        depth_multiplier: int = 1,
        strides: None | int | Sequence[int] = 1,
        *,
        padding: Any = "SAME",
        kernel_dilation: None | int | Sequence[int] = 1,
        use_bias: bool = True,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        precision: Any = None,
        depthwise_init: Callable = default_kernel_init,
        pointwise_init: Callable = default_kernel_init,
        bias_init: Callable = default_bias_init,
        promote_dtype: Callable = promote_dtype,
        implementation: Implementation = None,
        rngs: nnx.Rngs,
    ):
        self.kernel_size = as_kernel_size(kernel_size)
        self.in_features = in_features
        self.out_features = out_features
        self.depth_multiplier = depth_multiplier
        self.strides = strides
        self.padding = padding
        self.kernel_dilation = kernel_dilation
        self.use_bias = use_bias
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.precision = precision
        self.promote_dtype = promote_dtype
        self.implementation = hashable_implementation(implementation)
        dshape = depthwise_kernel_shape(self.kernel_size, in_features, depth_multiplier)
        pshape = (1,) * len(self.kernel_size) + (dshape[-1], out_features)
        self.depthwise_kernel = _param(depthwise_init, rngs, dshape, param_dtype, _EMPTY)
        self.pointwise_kernel = _param(pointwise_init, rngs, pshape, param_dtype, _EMPTY)
        self.bias: nnx.Param | None
        if use_bias:
            self.bias = _param(bias_init, rngs, (out_features,), param_dtype, _EMPTY)
        else:
            self.bias = nnx.data(None)

    def __call__(self, inputs: Array) -> Array:
        bias = self.bias[...] if self.bias is not None else None
        inputs, dk, pk, bias = self.promote_dtype(
            (inputs, self.depthwise_kernel[...], self.pointwise_kernel[...], bias),
            dtype=self.dtype,
        )
        return separable_layer(
            inputs,
            dk,
            pk,
            bias,
            kernel_size=self.kernel_size,
            strides=self.strides,
            padding=self.padding,
            kernel_dilation=self.kernel_dilation,
            precision=self.precision,
            implementation=self.implementation,
        )


class MaxPool(nnx.Module):
    """Max pooling layer, :func:`jaxconv.max_pool` (as :class:`jaxconv.nn.MaxPool`).

    Input ``(*batch_dims, *spatial, C)``; output ``(*batch_dims, *out_spatial, C)``.
    """

    def __init__(
        self,
        window_shape: Sequence[int],
        strides: Sequence[int] | None = None,
        padding: Any = "VALID",
        *,
        dilation: None | int | Sequence[int] = None,
        ceil_mode: bool = False,
        implementation: Implementation = None,
    ):
        self.window_shape = tuple(window_shape)
        self.strides = strides
        self.padding = padding
        self.dilation = dilation
        self.ceil_mode = ceil_mode
        self.implementation = hashable_implementation(implementation)

    def __call__(self, inputs: Array) -> Array:
        return run_pooling(
            max_pool,
            inputs,
            self.window_shape,
            self.window_shape,
            self.strides,
            self.padding,
            dilation=self.dilation,
            ceil_mode=self.ceil_mode,
            implementation=self.implementation,
        )


class AvgPool(nnx.Module):
    """Average pooling layer, :func:`jaxconv.avg_pool` (as :class:`jaxconv.nn.AvgPool`).

    Input ``(*batch_dims, *spatial, C)``; output ``(*batch_dims, *out_spatial, C)``.
    """

    def __init__(
        self,
        window_shape: Sequence[int],
        strides: Sequence[int] | None = None,
        padding: Any = "VALID",
        count_include_pad: bool = True,
        *,
        dilation: None | int | Sequence[int] = None,
        ceil_mode: bool = False,
        divisor_override: int | None = None,
        implementation: Implementation = None,
    ):
        self.window_shape = tuple(window_shape)
        self.strides = strides
        self.padding = padding
        self.count_include_pad = count_include_pad
        self.dilation = dilation
        self.ceil_mode = ceil_mode
        self.divisor_override = divisor_override
        self.implementation = hashable_implementation(implementation)

    def __call__(self, inputs: Array) -> Array:
        return run_pooling(
            avg_pool,
            inputs,
            self.window_shape,
            self.window_shape,
            self.strides,
            self.padding,
            self.count_include_pad,
            dilation=self.dilation,
            ceil_mode=self.ceil_mode,
            divisor_override=self.divisor_override,
            implementation=self.implementation,
        )


class LpPool(nnx.Module):
    """Power-average pooling layer, :func:`jaxconv.lp_pool`.

    Input ``(*batch_dims, *spatial, C)``; output ``(*batch_dims, *out_spatial, C)``.
    """

    def __init__(
        self,
        norm_type: float,
        window_shape: Sequence[int],
        strides: Sequence[int] | None = None,
        padding: Any = "VALID",
        *,
        dilation: None | int | Sequence[int] = None,
        ceil_mode: bool = False,
        implementation: Implementation = None,
    ):
        self.norm_type = norm_type
        self.window_shape = tuple(window_shape)
        self.strides = strides
        self.padding = padding
        self.dilation = dilation
        self.ceil_mode = ceil_mode
        self.implementation = hashable_implementation(implementation)

    def __call__(self, inputs: Array) -> Array:
        return run_pooling(
            lp_pool,
            inputs,
            self.window_shape,
            self.norm_type,
            self.window_shape,
            self.strides,
            self.padding,
            dilation=self.dilation,
            ceil_mode=self.ceil_mode,
            implementation=self.implementation,
        )


class GlobalMaxPool(nnx.Module):
    """Max over all spatial axes: ``(N, *spatial, C) -> (N, C)``."""

    def __init__(self, keepdims: bool = False, *, implementation: Implementation = None):
        self.keepdims = keepdims
        self.implementation = hashable_implementation(implementation)

    def __call__(self, inputs: Array) -> Array:
        return global_max_pool(inputs, self.keepdims, implementation=self.implementation)


class GlobalAvgPool(nnx.Module):
    """Mean over all spatial axes: ``(N, *spatial, C) -> (N, C)``."""

    def __init__(self, keepdims: bool = False, *, implementation: Implementation = None):
        self.keepdims = keepdims
        self.implementation = hashable_implementation(implementation)

    def __call__(self, inputs: Array) -> Array:
        return global_avg_pool(inputs, self.keepdims, implementation=self.implementation)
