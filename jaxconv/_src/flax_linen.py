"""Flax linen modules whose convolutions and pooling run through jaxconv.

``Conv`` *is* :class:`flax.linen.Conv`: it subclasses it and only hands Flax's own
``conv_general_dilated=`` hook a lax-signature callable bound to an ``implementation``.
Parameter names, shapes, initialisers, padding words (``CIRCULAR``, ``REFLECT``,
``CAUSAL``), masks, dtypes and batch-dimension handling are therefore Flax's code, not a
copy of it, and a parameter tree made by one module loads unchanged into the other.

``ConvTranspose`` subclasses :class:`flax.linen.ConvTranspose` (same fields and
parameters) and computes with :func:`jaxconv.conv_transpose`; it adds groups and
PyTorch's meaning of ``padding`` / ``output_padding``. ``DepthwiseConv`` and
``SeparableConv`` (which Flax lacks) keep Flax's kernel layout for grouped convolution
and compute with :func:`jaxconv.depthwise_conv` / :func:`jaxconv.separable_conv`; the
pooling layers wrap :mod:`jaxconv`'s pooling functions.

The layer bodies below the modules (``conv_transpose_layer``, ``depthwise_layer``,
``separable_layer``, ``flax_padding``) are plain functions of arrays, shared with the
NNX modules of :mod:`jaxconv._src.flax_nnx`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
from flax.linen.dtypes import promote_dtype
from flax.linen.linear import canonicalize_padding, default_kernel_init

from jaxconv._src.api import conv_general_dilated
from jaxconv._src.pooling import (
    avg_pool,
    global_avg_pool,
    global_max_pool,
    lp_pool,
    max_pool,
)
from jaxconv._src.separable import depthwise_conv, separable_conv
from jaxconv._src.transpose import conv_transpose

Implementation = str | Sequence[str] | None
Array = Any


# --------------------------------------------------------------------------------------
# The lax-signature callable handed to Flax
# --------------------------------------------------------------------------------------


def hashable_implementation(implementation: Any) -> Any:
    """``None``, a name, or a tuple of names (lists become tuples so modules hash)."""
    if implementation is None or isinstance(implementation, str):
        return implementation
    if isinstance(implementation, Sequence):
        return tuple(implementation)
    raise TypeError(
        "`implementation` must be None, a name, or a sequence of names, "
        f"got {type(implementation).__name__}"
    )


@dataclasses.dataclass(frozen=True)
class DispatchedConv:
    """:func:`jax.lax.conv_general_dilated`'s signature, computed by jaxconv.

    A frozen (hashable, comparable) callable, so modules holding it stay valid static
    data under ``jax.jit`` / ``nnx.jit`` and compare equal when their implementation is.
    """

    implementation: Any = None

    def __call__(self, lhs, rhs, window_strides, padding, *args, **kwargs):
        return conv_general_dilated(
            lhs, rhs, window_strides, padding, *args, implementation=self.implementation, **kwargs
        )


def conv_hook(implementation: Any, conv_fn: Any, module: str) -> Any:
    """The callable a Flax module should use for ``conv_general_dilated``.

    ``conv_fn`` is the user's own ``conv_general_dilated=`` (or ``None``); a user
    function and an ``implementation`` together are ambiguous and raise.
    """
    if conv_fn is None or isinstance(conv_fn, DispatchedConv):
        return DispatchedConv(hashable_implementation(implementation))
    if implementation is not None:
        raise ValueError(
            f"{module}: give either `implementation` (={implementation!r}) or your own "
            "`conv_general_dilated`, not both"
        )
    return conv_fn


# --------------------------------------------------------------------------------------
# Layer bodies (shared with the NNX modules)
# --------------------------------------------------------------------------------------


def as_kernel_size(kernel_size: int | Sequence[int]) -> tuple[int, ...]:
    """Flax's rule: an int is a 1-D window."""
    if isinstance(kernel_size, int):
        return (kernel_size,)
    return tuple(int(k) for k in kernel_size)


def broadcast(x: None | int | Sequence[int], n: int) -> tuple[int, ...]:
    """Flax's ``maybe_broadcast``: ``None`` is 1, an int is repeated ``n`` times."""
    if x is None:
        x = 1
    if isinstance(x, int):
        return (x,) * n
    return tuple(x)


def flatten_batch(inputs: Array, nspatial: int) -> tuple[Array, tuple[int, ...] | None]:
    """``(*batch, *spatial, C)`` -> ``(N, *spatial, C)`` as Flax does (no batch axis
    adds one); returns the batch shape to restore, or ``None`` for exactly one."""
    nbatch = inputs.ndim - (nspatial + 1)
    if nbatch < 0:
        raise ValueError(
            f"`inputs` must have shape (*batch_dims, *spatial, features) with {nspatial} "
            f"spatial axes, got shape {inputs.shape}"
        )
    if nbatch == 1:
        return inputs, None
    batch_shape = inputs.shape[:nbatch]
    return jnp.reshape(inputs, (-1,) + inputs.shape[nbatch:]), batch_shape


def restore_batch(y: Array, batch_shape: tuple[int, ...] | None) -> Array:
    """Undo :func:`flatten_batch` on an output ``(N, *out_spatial, O)``."""
    if batch_shape is None:
        return y
    return jnp.reshape(y, batch_shape + y.shape[1:])


def flax_padding(
    padding: Any, kernel_size: Sequence[int], kernel_dilation: Sequence[int]
) -> tuple[Any, str]:
    """Flax's ``padding`` in jaxconv's terms: ``(padding, padding_mode)``.

    ``CIRCULAR`` / ``REFLECT`` pad ``((k - 1) // 2, k // 2)`` of the dilated window with
    wrapped / reflected samples (then the strided convolution runs ``VALID``), as Flax
    does; ``CAUSAL`` pads ``k - 1`` before (Flax allows it in 1-D only, so do we, for
    the same numbers). Other words and explicit pads mean what they mean to lax.
    """
    n = len(kernel_size)
    eff = [(k - 1) * d + 1 for k, d in zip(kernel_size, kernel_dilation)]
    pad = canonicalize_padding(padding, n)
    if pad in ("CIRCULAR", "REFLECT"):
        pairs = tuple(((k - 1) // 2, k // 2) for k in eff)
        return pairs, {"CIRCULAR": "circular", "REFLECT": "reflect"}[pad]
    if pad == "CAUSAL":
        if n != 1:
            raise ValueError(
                f"`padding` 'CAUSAL' is defined for 1-D convolutions (as in Flax), got a "
                f"{n}-D kernel_size {tuple(kernel_size)}"
            )
        return ((eff[0] - 1, 0),), "zeros"
    if isinstance(pad, str):
        return pad, "zeros"
    return tuple((int(lo), int(hi)) for lo, hi in pad), "zeros"


def check_conv_input(
    inputs: Array, kernel_size: int | Sequence[int], feature_group_count: int
) -> None:
    """``inputs`` ``(*batch, *spatial, C)`` fits the window, and the groups divide ``C``."""
    n = len(as_kernel_size(kernel_size))
    if inputs.ndim < n + 1:
        raise ValueError(
            f"`inputs` must have shape (*batch_dims, *spatial, features) with {n} spatial "
            f"axes (kernel_size {kernel_size!r}), got shape {inputs.shape}"
        )
    if inputs.shape[-1] % feature_group_count:
        raise ValueError(
            f"`feature_group_count` (={feature_group_count}) must divide the input "
            f"features (={inputs.shape[-1]})"
        )


def check_mask(mask: Array | None, kernel_shape: tuple[int, ...], name: str = "mask"):
    if mask is not None and tuple(mask.shape) != tuple(kernel_shape):
        raise ValueError(
            f"`{name}` must have the kernel's shape {tuple(kernel_shape)}, got {tuple(mask.shape)}"
        )


def transpose_kernel_shape(
    kernel_size: Sequence[int],
    in_features: int,
    features: int,
    transpose_kernel: bool,
    feature_group_count: int,
):
    """Flax's ``ConvTranspose`` kernel shape, with ``feature_group_count`` groups."""
    G = feature_group_count
    if isinstance(G, bool) or not isinstance(G, int) or G < 1:
        raise ValueError(f"`feature_group_count` must be an int >= 1, got {G!r}")
    if transpose_kernel:
        if features % G:
            raise ValueError(f"`feature_group_count` (={G}) must divide `features` (={features})")
        return tuple(kernel_size) + (features // G, in_features)
    if in_features % G:
        raise ValueError(
            f"`feature_group_count` (={G}) must divide the input features (={in_features})"
        )
    return tuple(kernel_size) + (in_features // G, features)


def conv_transpose_layer(
    inputs: Array,
    kernel: Array,
    bias: Array | None,
    *,
    kernel_size: Sequence[int],
    strides: Any,
    padding: Any,
    kernel_dilation: Any,
    transpose_kernel: bool,
    precision: Any,
    preferred_element_type: Any,
    feature_group_count: int,
    output_padding: Any,
    padding_convention: str,
    implementation: Any,
) -> Array:
    """The body of ``ConvTranspose`` after its parameters are made (and promoted).

    ``padding_convention="lax"`` is Flax's meaning (``SAME``, ``VALID``, ``CIRCULAR``
    or pads of the dilated input, as ``lax.conv_transpose``); ``"torch"`` is
    PyTorch's: an int or per-axis ints ``p`` of the forward convolution, so that
    ``out = (in - 1) * stride - 2 p + dilation (k - 1) + output_padding + 1``.
    """
    n = len(kernel_size)
    x, batch_shape = flatten_batch(inputs, n)
    strides = broadcast(strides, n)
    kernel_dilation = broadcast(kernel_dilation, n)
    common = dict(
        feature_group_count=feature_group_count,
        output_padding=output_padding,
        implementation=implementation,
    )
    if padding_convention == "torch":
        ints = (padding,) if isinstance(padding, int) else padding
        if isinstance(padding, str) or not all(
            isinstance(p, int) and not isinstance(p, bool) and p >= 0 for p in ints
        ):
            raise ValueError(
                "`padding` with padding_convention='torch' must be an int >= 0 or per-axis "
                f"ints (PyTorch's meaning), got {padding!r}"
            )
        pads = [(p, p) for p in broadcast(padding, n)]
        y = conv_transpose(
            x,
            kernel,
            strides,
            pads,
            kernel_dilation,
            None,
            transpose_kernel,
            precision,
            preferred_element_type,
            True,
            **common,
        )
    elif padding_convention == "lax":
        padding_lax = canonicalize_padding(padding, n)
        if isinstance(padding_lax, str) and padding_lax not in ("SAME", "VALID", "CIRCULAR"):
            raise ValueError(
                "`padding` of a transposed convolution must be 'SAME', 'VALID', 'CIRCULAR' "
                f"or explicit pads, got {padding!r}"
            )
        circular = padding_lax == "CIRCULAR"
        if circular:
            if output_padding is not None:
                raise ValueError(
                    "`output_padding` cannot be combined with padding 'CIRCULAR' (the "
                    "output size is the input size times the stride)"
                )
            padding_lax = "VALID"
        y = conv_transpose(
            x,
            kernel,
            strides,
            padding_lax,
            kernel_dilation,
            None,
            transpose_kernel,
            precision,
            preferred_element_type,
            **common,
        )
        if circular:
            y = _wrap_circular(y, x.shape[1:-1], strides, transpose_kernel)
    else:
        raise ValueError(
            f"`padding_convention` must be 'lax' or 'torch', got {padding_convention!r}"
        )
    if bias is not None:
        y += jnp.reshape(bias, (1,) * (y.ndim - 1) + (-1,))
    return restore_batch(y, batch_shape)


def _wrap_circular(
    y: Array, in_spatial: Sequence[int], strides: Sequence[int], transpose_kernel: bool
) -> Array:
    """Flax's circular transposed convolution: fold the ``VALID`` output periodically
    onto ``in * stride`` samples per axis (the same alignment as Flax)."""
    periods = [i * s for i, s in zip(in_spatial, strides)]
    diffs = [-(yd - p) % (2 * p) for yd, p in zip(y.shape[1:-1], periods)]
    if transpose_kernel:
        total = [(d // 2, (d + 1) // 2) for d in diffs]
    else:
        total = [((d + 1) // 2, d // 2) for d in diffs]
    y = jnp.pad(y, [(0, 0)] + total + [(0, 0)])
    for i in range(1, y.ndim - 1):
        y = y.reshape(y.shape[:i] + (-1, periods[i - 1]) + y.shape[i + 1 :])
        y = y.sum(axis=i)
    return y


def depthwise_kernel_shape(
    kernel_size: Sequence[int], in_features: int, depth_multiplier: int
) -> tuple[int, ...]:
    """Flax's grouped-convolution kernel layout for a depthwise convolution:
    ``(*kernel_size, 1, in_features * depth_multiplier)``."""
    if (
        isinstance(depth_multiplier, bool)
        or not isinstance(depth_multiplier, int)
        or (depth_multiplier < 1)
    ):
        raise ValueError(f"`depth_multiplier` must be an int >= 1, got {depth_multiplier!r}")
    return tuple(kernel_size) + (1, in_features * depth_multiplier)


def _tf_depthwise(kernel: Array, nspatial: int, in_features: int) -> Array:
    """``(*k, 1, C * M)`` (Flax grouped layout) -> ``(*k, C, M)`` (TensorFlow layout):
    output channel ``c * M + q`` is filter ``q`` of input channel ``c`` in both."""
    return jnp.reshape(kernel, kernel.shape[:nspatial] + (in_features, -1))


def depthwise_layer(
    inputs: Array,
    kernel: Array,
    bias: Array | None,
    *,
    kernel_size: Sequence[int],
    strides: Any,
    padding: Any,
    kernel_dilation: Any,
    precision: Any,
    implementation: Any,
) -> Array:
    """The body of ``DepthwiseConv``: ``kernel`` ``(*k, 1, C * M)``, ``bias``
    ``(C * M,)``; input ``(*batch, *spatial, C)``."""
    n = len(kernel_size)
    x, batch_shape = flatten_batch(inputs, n)
    kernel_dilation = broadcast(kernel_dilation, n)
    pad, mode = flax_padding(padding, kernel_size, kernel_dilation)
    y = depthwise_conv(
        x,
        _tf_depthwise(kernel, n, x.shape[-1]),
        stride=broadcast(strides, n),
        padding=pad,
        dilation=kernel_dilation,
        padding_mode=mode,
        bias=bias,
        precision=precision,
        implementation=implementation,
    )
    return restore_batch(y, batch_shape)


def separable_layer(
    inputs: Array,
    depthwise_kernel: Array,
    pointwise_kernel: Array,
    bias: Array | None,
    *,
    kernel_size: Sequence[int],
    strides: Any,
    padding: Any,
    kernel_dilation: Any,
    precision: Any,
    implementation: Any,
) -> Array:
    """The body of ``SeparableConv``: ``depthwise_kernel`` ``(*k, 1, C * M)``,
    ``pointwise_kernel`` ``(1, .., 1, C * M, O)``, ``bias`` ``(O,)``."""
    n = len(kernel_size)
    x, batch_shape = flatten_batch(inputs, n)
    kernel_dilation = broadcast(kernel_dilation, n)
    pad, mode = flax_padding(padding, kernel_size, kernel_dilation)
    y = separable_conv(
        x,
        _tf_depthwise(depthwise_kernel, n, x.shape[-1]),
        pointwise_kernel,
        stride=broadcast(strides, n),
        padding=pad,
        dilation=kernel_dilation,
        padding_mode=mode,
        bias=bias,
        precision=precision,
        implementation=implementation,
    )
    return restore_batch(y, batch_shape)


def run_pooling(fn: Callable, inputs: Array, window_shape: Sequence[int], *args, **kwargs) -> Array:
    """Run a pooling function on ``(*batch, *spatial, C)`` (any number of batch axes,
    as Flax's pooling)."""
    window_shape = tuple(window_shape)
    x, batch_shape = flatten_batch(inputs, len(window_shape))
    return restore_batch(fn(x, *args, **kwargs), batch_shape)


# --------------------------------------------------------------------------------------
# Modules
# --------------------------------------------------------------------------------------


class Conv(nn.Conv):
    """Drop-in for :class:`flax.linen.Conv` with a choice of implementation.

    Same fields, defaults, parameters (``kernel`` of shape
    ``(*kernel_size, in_features // feature_group_count, features)``, ``bias`` of shape
    ``(features,)``) and results as Flax's module, plus:

    Attributes:
      implementation: ``None`` (automatic), a name from :func:`jaxconv.implementations`,
        or a sequence of names tried in order.

    Input ``(*batch_dims, *spatial, in_features)`` (no batch dimension is allowed);
    output ``(*batch_dims, *out_spatial, features)``.
    """

    implementation: Implementation = None

    def __post_init__(self) -> None:
        if self.conv_general_dilated_cls is not None and self.implementation is not None:
            raise ValueError(
                "Conv: give either `implementation` or `conv_general_dilated_cls`, not both"
            )
        if self.conv_general_dilated_cls is None:
            object.__setattr__(
                self,
                "conv_general_dilated",
                conv_hook(self.implementation, self.conv_general_dilated, "Conv"),
            )
        super().__post_init__()

    def __call__(self, inputs: Array) -> Array:
        """Flax's ``Conv.__call__``, after checks that turn Flax's bare assertions into
        errors naming the argument."""
        check_conv_input(inputs, self.kernel_size, self.feature_group_count)
        return super().__call__(inputs)


class ConvTranspose(nn.ConvTranspose):
    """Drop-in for :class:`flax.linen.ConvTranspose`, computed by
    :func:`jaxconv.conv_transpose`.

    Same fields, defaults and parameters as Flax's module (``kernel`` of shape
    ``(*kernel_size, in_features, features)``, or ``(*kernel_size, features,
    in_features)`` with ``transpose_kernel=True``; ``bias`` of shape ``(features,)``),
    plus:

    Attributes:
      feature_group_count: groups; the kernel's per-group axis shrinks by this factor
        (``in_features // G``, or ``features // G`` with ``transpose_kernel``).
      output_padding: extra output samples on the high side of each axis
        (``< max(stride, dilation)``), as PyTorch.
      padding_convention: ``"lax"`` (Flax's meaning of ``padding``, the default) or
        ``"torch"``: ``padding`` is PyTorch's int / per-axis ints, and with
        ``transpose_kernel=True`` a PyTorch weight ``(C_in, C_out // G, *k)``
        transposed to ``(*k, C_out // G, C_in)`` gives PyTorch's output.
      implementation: ``None`` (automatic), a name, or a sequence of names.

    Input ``(*batch_dims, *spatial, in_features)``; output
    ``(*batch_dims, *out_spatial, features)``.
    """

    feature_group_count: int = 1
    output_padding: None | int | Sequence[int] = None
    padding_convention: str = "lax"
    implementation: Implementation = None

    @nn.compact
    def __call__(self, inputs: Array) -> Array:
        kernel_size = as_kernel_size(self.kernel_size)
        kernel_shape = transpose_kernel_shape(
            kernel_size,
            inputs.shape[-1],
            self.features,
            self.transpose_kernel,
            self.feature_group_count,
        )
        check_mask(self.mask, kernel_shape)
        kernel = self.param("kernel", self.kernel_init, kernel_shape, self.param_dtype)
        if self.mask is not None:
            kernel *= self.mask
        bias = (
            self.param("bias", self.bias_init, (self.features,), self.param_dtype)
            if self.use_bias
            else None
        )
        inputs, kernel, bias = self.promote_dtype(inputs, kernel, bias, dtype=self.dtype)
        return conv_transpose_layer(
            inputs,
            kernel,
            bias,
            kernel_size=kernel_size,
            strides=self.strides,
            padding=self.padding,
            kernel_dilation=self.kernel_dilation,
            transpose_kernel=self.transpose_kernel,
            precision=self.precision,
            preferred_element_type=self.preferred_element_type,
            feature_group_count=self.feature_group_count,
            output_padding=self.output_padding,
            padding_convention=self.padding_convention,
            implementation=hashable_implementation(self.implementation),
        )


class DepthwiseConv(nn.Module):
    """Depthwise convolution: each input channel filtered by ``depth_multiplier``
    kernels of its own, computed by :func:`jaxconv.depthwise_conv`.

    Parameters are those of ``flax.linen.Conv(features=C * depth_multiplier,
    feature_group_count=C)`` (``kernel`` ``(*kernel_size, 1, C * depth_multiplier)``,
    ``bias`` ``(C * depth_multiplier,)``, same initialisers) and so are the results:
    such a Flax module's parameters load unchanged. Padding words as
    :class:`flax.linen.Conv` (``CIRCULAR``, ``REFLECT``, ``CAUSAL`` included).

    Input ``(*batch_dims, *spatial, C)``; output
    ``(*batch_dims, *out_spatial, C * depth_multiplier)``.
    """

    kernel_size: int | Sequence[int]
    depth_multiplier: int = 1
    strides: None | int | Sequence[int] = 1
    padding: Any = "SAME"
    kernel_dilation: None | int | Sequence[int] = 1
    use_bias: bool = True
    mask: Array | None = None
    dtype: Any = None
    param_dtype: Any = jnp.float32
    precision: Any = None
    kernel_init: Callable = default_kernel_init
    bias_init: Callable = nn.initializers.zeros_init()
    promote_dtype: Callable = promote_dtype
    implementation: Implementation = None

    @nn.compact
    def __call__(self, inputs: Array) -> Array:
        kernel_size = as_kernel_size(self.kernel_size)
        kernel_shape = depthwise_kernel_shape(kernel_size, inputs.shape[-1], self.depth_multiplier)
        check_mask(self.mask, kernel_shape)
        kernel = self.param("kernel", self.kernel_init, kernel_shape, self.param_dtype)
        if self.mask is not None:
            kernel *= self.mask
        bias = (
            self.param("bias", self.bias_init, kernel_shape[-1:], self.param_dtype)
            if self.use_bias
            else None
        )
        inputs, kernel, bias = self.promote_dtype(inputs, kernel, bias, dtype=self.dtype)
        return depthwise_layer(
            inputs,
            kernel,
            bias,
            kernel_size=kernel_size,
            strides=self.strides,
            padding=self.padding,
            kernel_dilation=self.kernel_dilation,
            precision=self.precision,
            implementation=hashable_implementation(self.implementation),
        )


class SeparableConv(nn.Module):
    """Depthwise-separable convolution (depthwise, then a 1x1 convolution that mixes
    channels), computed by :func:`jaxconv.separable_conv`.

    Parameters: ``depthwise_kernel`` ``(*kernel_size, 1, C * depth_multiplier)`` (Flax's
    grouped layout), ``pointwise_kernel`` ``(1, .., 1, C * depth_multiplier,
    features)`` and ``bias`` ``(features,)`` (Keras' names). The result equals
    ``flax.linen.Conv(C * M, kernel_size, feature_group_count=C, use_bias=False)``
    followed by ``flax.linen.Conv(features, (1,) * n)`` with those kernels.

    Input ``(*batch_dims, *spatial, C)``; output ``(*batch_dims, *out_spatial,
    features)``.
    """

    features: int
    kernel_size: int | Sequence[int]
    depth_multiplier: int = 1
    strides: None | int | Sequence[int] = 1
    padding: Any = "SAME"
    kernel_dilation: None | int | Sequence[int] = 1
    use_bias: bool = True
    dtype: Any = None
    param_dtype: Any = jnp.float32
    precision: Any = None
    depthwise_init: Callable = default_kernel_init
    pointwise_init: Callable = default_kernel_init
    bias_init: Callable = nn.initializers.zeros_init()
    promote_dtype: Callable = promote_dtype
    implementation: Implementation = None

    @nn.compact
    def __call__(self, inputs: Array) -> Array:
        kernel_size = as_kernel_size(self.kernel_size)
        dshape = depthwise_kernel_shape(kernel_size, inputs.shape[-1], self.depth_multiplier)
        pshape = (1,) * len(kernel_size) + (dshape[-1], self.features)
        dk = self.param("depthwise_kernel", self.depthwise_init, dshape, self.param_dtype)
        pk = self.param("pointwise_kernel", self.pointwise_init, pshape, self.param_dtype)
        bias = (
            self.param("bias", self.bias_init, (self.features,), self.param_dtype)
            if self.use_bias
            else None
        )
        inputs, dk, pk, bias = self.promote_dtype(inputs, dk, pk, bias, dtype=self.dtype)
        return separable_layer(
            inputs,
            dk,
            pk,
            bias,
            kernel_size=kernel_size,
            strides=self.strides,
            padding=self.padding,
            kernel_dilation=self.kernel_dilation,
            precision=self.precision,
            implementation=hashable_implementation(self.implementation),
        )


class MaxPool(nn.Module):
    """Max pooling layer: :func:`jaxconv.max_pool` (``flax.linen.max_pool``'s meaning,
    plus window ``dilation`` and PyTorch's ``ceil_mode``).

    Input ``(*batch_dims, *spatial, C)``; output ``(*batch_dims, *out_spatial, C)``.
    """

    window_shape: Sequence[int]
    strides: Sequence[int] | None = None
    padding: Any = "VALID"
    dilation: None | int | Sequence[int] = None
    ceil_mode: bool = False
    implementation: Implementation = None

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
            implementation=hashable_implementation(self.implementation),
        )


class AvgPool(nn.Module):
    """Average pooling layer: :func:`jaxconv.avg_pool` (``flax.linen.avg_pool``'s
    meaning, ``count_include_pad`` included, plus ``dilation``, ``ceil_mode`` and
    ``divisor_override``).

    Input ``(*batch_dims, *spatial, C)``; output ``(*batch_dims, *out_spatial, C)``.
    """

    window_shape: Sequence[int]
    strides: Sequence[int] | None = None
    padding: Any = "VALID"
    count_include_pad: bool = True
    dilation: None | int | Sequence[int] = None
    ceil_mode: bool = False
    divisor_override: int | None = None
    implementation: Implementation = None

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
            implementation=hashable_implementation(self.implementation),
        )


class LpPool(nn.Module):
    """Power-average pooling layer: :func:`jaxconv.lp_pool`,
    ``(sum over the window of |x| ** p) ** (1 / p)``.

    Input ``(*batch_dims, *spatial, C)``; output ``(*batch_dims, *out_spatial, C)``.
    """

    norm_type: float
    window_shape: Sequence[int]
    strides: Sequence[int] | None = None
    padding: Any = "VALID"
    dilation: None | int | Sequence[int] = None
    ceil_mode: bool = False
    implementation: Implementation = None

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
            implementation=hashable_implementation(self.implementation),
        )


class GlobalMaxPool(nn.Module):
    """Max over all spatial axes: ``(N, *spatial, C) -> (N, C)`` (``(N, 1, .., 1, C)``
    with ``keepdims``)."""

    keepdims: bool = False
    implementation: Implementation = None

    def __call__(self, inputs: Array) -> Array:
        return global_max_pool(
            inputs, self.keepdims, implementation=hashable_implementation(self.implementation)
        )


class GlobalAvgPool(nn.Module):
    """Mean over all spatial axes: ``(N, *spatial, C) -> (N, C)`` (``(N, 1, .., 1, C)``
    with ``keepdims``)."""

    keepdims: bool = False
    implementation: Implementation = None

    def __call__(self, inputs: Array) -> Array:
        return global_avg_pool(
            inputs, self.keepdims, implementation=hashable_implementation(self.implementation)
        )
