"""Pooling on the convolution's window machinery: max, average, Lp and global pooling.

A pooling window is a depthwise convolution's window: the geometry (padding words,
strides, dilation, output size, validation) is a :class:`~jaxconv._src.spec.ConvSpec`
with one group per channel, and padding is resolved by the same
:func:`~jaxconv._src.spec.padding_to_pairs`. Only the reduction differs (max or sum
instead of a weighted sum). The padded input is materialised once with ``lax.pad``
(``-inf`` for max, ``0`` for sums) and reduced by one of three implementations, named
after the convolution implementations that share their machinery:

* ``"xla"``: ``lax.reduce_window`` (the default);
* ``"taps"``: one strided slice per window tap, combined elementwise
  (:func:`jaxconv._src.impl.taps.tap_slice`);
* ``"im2col"``: the patch gather of :func:`jaxconv._src.impl.im2col.patches`, reduced
  over the window axes.

Layout is channels-last, as ``flax.linen`` pooling: ``(N, *spatial, C)`` or unbatched
``(*spatial, C)``. ``ceil_mode`` and ``count_include_pad`` follow PyTorch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxconv._src.api import _as_array
from jaxconv._src.dispatch import implementations as conv_implementations
from jaxconv._src.impl import im2col as _im2col
from jaxconv._src.impl import taps as _taps
from jaxconv._src.impl import window as W
from jaxconv._src.spec import (
    ConvSpec,
    _dilate,
    _int_tuple,
    default_dimension_numbers,
    padding_to_pairs,
)

#: Implementations that can pool, in the order tried when ``implementation=None``.
POOL_IMPLEMENTATIONS = ("xla", "taps", "im2col")


def pool_spec(
    x_shape: Sequence[int],
    window_shape: Sequence[int],
    strides: Any = None,
    padding: Any = "VALID",
    dilation: Any = None,
    ceil_mode: bool = False,
    dtype: Any = np.float32,
) -> ConvSpec:
    """The window geometry of a pooling as a depthwise :class:`ConvSpec`.

    ``x_shape`` is ``(N, *spatial, C)``. ``ceil_mode`` (PyTorch) rounds the output size
    up, adding high-side padding, but drops a last window that would start in the
    high padding. Raises ``ValueError`` naming the argument for bad geometry.
    """
    x_shape = tuple(int(s) for s in x_shape)
    try:
        window = tuple(int(k) for k in window_shape)
    except TypeError:
        raise TypeError(
            f"`window_shape` must be a sequence of ints, got {window_shape!r}"
        ) from None
    n = len(window)
    if len(x_shape) != n + 2:
        raise ValueError(
            f"`inputs` must have shape (N, *spatial, C) or (*spatial, C) with {n} spatial "
            f"axes to match `window_shape` {window}, got shape {x_shape[1:]} or {x_shape}"
        )
    if any(k < 1 for k in window):
        raise ValueError(f"`window_shape` entries must be >= 1, got {window}")
    strides = _int_tuple(strides, n, "strides")
    dilation = _int_tuple(dilation, n, "dilation")
    spatial = x_shape[1:-1]
    pads = padding_to_pairs(padding, spatial, window, strides, dilation)
    if ceil_mode:
        new = []
        for size, (lo, hi), k, s, d in zip(spatial, pads, window, strides, dilation):
            span = size + lo + hi - _dilate(k, d)
            out = -(-span // s) + 1 if span >= 0 else 0
            if out > 1 and (out - 1) * s >= size + lo:  # last window starts in the padding
                out -= 1
            extra = (out - 1) * s + _dilate(k, d) - (size + lo + hi)
            new.append((lo, hi + max(extra, 0)))
        pads = tuple(new)
    C = x_shape[-1]
    if C < 1:
        raise ValueError(f"`inputs` must have at least one channel (last axis), got {x_shape}")
    return ConvSpec.create(
        x_shape,
        window + (1, C),
        strides,
        pads,
        None,
        dilation,
        default_dimension_numbers(n),
        C,
        lhs_dtype=dtype,
    )


def _candidates(implementation: Any) -> list[str]:
    if implementation is None:
        return list(POOL_IMPLEMENTATIONS[:1])
    names = [implementation] if isinstance(implementation, str) else list(implementation)
    if not names or not all(isinstance(n, str) for n in names):
        raise TypeError(
            "`implementation` must be None, a name, or a non-empty sequence of names, "
            f"got {implementation!r}"
        )
    known = set(conv_implementations()) | set(POOL_IMPLEMENTATIONS)
    for name in names:
        if name not in known:
            raise ValueError(
                f"`implementation` must be one of {sorted(known)} or None, got {name!r}"
            )
    usable = [n for n in names if n in POOL_IMPLEMENTATIONS]
    if not usable:
        raise NotImplementedError(
            f"implementation(s) {names} have no pooling; pooling runs on "
            f"{list(POOL_IMPLEMENTATIONS)}"
        )
    return usable


def _pad_value(dtype, reduction: str):
    dtype = np.dtype(dtype)
    if reduction == "sum":
        return np.zeros((), dtype)
    if dtype.kind == "f" or dtype == jnp.bfloat16:
        return np.array(-np.inf, dtype)
    if dtype.kind in "iu":
        return np.array(np.iinfo(dtype).min, dtype)
    raise TypeError(f"max pooling needs real inputs, got dtype {dtype}")


def _reduce(x, spec: ConvSpec, reduction: str, implementation: Any):
    """Pad ``x`` ``(N, *sp, C)`` per ``spec`` and reduce every window (max or sum)."""
    pad_value = _pad_value(x.dtype, reduction)
    config = [(0, 0, 0)] + [(lo, hi, 0) for lo, hi in spec.padding] + [(0, 0, 0)]
    xp = x if all(c == (0, 0, 0) for c in config) else lax.pad(x, pad_value, config)
    name = _candidates(implementation)[0]
    n = spec.nspatial
    if name == "xla":
        op = lax.max if reduction == "max" else lax.add
        # a concrete numpy init value lets lax recognise the monoid (max / add), which
        # is what makes reduce_window differentiable under jit and vmap
        return lax.reduce_window(
            xp,
            pad_value,
            op,
            (1,) + spec.window + (1,),
            (1,) + spec.window_strides + (1,),
            "VALID",
            window_dilation=(1,) + spec.rhs_dilation + (1,),
        )
    if name == "taps":
        combine = jnp.maximum if reduction == "max" else jnp.add
        acc = None
        for _, start in W.tap_starts(spec):
            part = _taps.tap_slice(xp, start, spec)
            acc = part if acc is None else combine(acc, part)
        return acc
    p = _im2col.patches(xp, spec)  # (N, *out, *window, C)
    axes = tuple(range(1 + n, 1 + 2 * n))
    return jnp.max(p, axis=axes) if reduction == "max" else jnp.sum(p, axis=axes)


def _batched(inputs, window_shape):
    x = _as_array(inputs, "inputs")
    try:
        n = len(window_shape)
    except TypeError:
        raise TypeError(
            f"`window_shape` must be a sequence of ints, got {window_shape!r}"
        ) from None
    unbatched = x.ndim == n + 1
    return (x[None] if unbatched else x), unbatched


def _window_counts(
    spec: ConvSpec,
    spatial: Sequence[int],
    count_include_pad: bool,
    explicit: Sequence[tuple[int, int]],
) -> np.ndarray:
    """``(1, *out, 1)`` number of window taps that fall on the input (and, with
    ``count_include_pad``, on the explicit padding; ceil-mode padding never counts)."""
    counts = None
    for size, (lo, _), (elo, ehi), k, s, d, o in zip(
        spatial,
        spec.padding,
        explicit,
        spec.window,
        spec.window_strides,
        spec.rhs_dilation,
        spec.out_spatial,
    ):
        pos = np.arange(o)[:, None] * s + np.arange(k)[None, :] * d - lo  # input coords
        lo_b, hi_b = (-elo, size + ehi) if count_include_pad else (0, size)
        c = ((pos >= lo_b) & (pos < hi_b)).sum(axis=1)
        counts = c if counts is None else np.multiply.outer(counts, c)
    counts = np.asarray(1 if counts is None else counts)
    return counts.reshape((1,) + counts.shape + (1,))


def max_pool(
    inputs,
    window_shape: Sequence[int],
    strides: Sequence[int] | None = None,
    padding: Any = "VALID",
    *,
    dilation: Sequence[int] | int | None = None,
    ceil_mode: bool = False,
    implementation: str | Sequence[str] | None = None,
):
    """Max pooling, channels-last, any rank (``flax.linen.max_pool`` plus dilation and
    PyTorch's ``ceil_mode``).

    Args:
      inputs: ``(N, *spatial, C)`` or unbatched ``(*spatial, C)``.
      window_shape: window size per spatial axis.
      strides: per-axis strides (default 1, as Flax; PyTorch's default is the window).
      padding: a word (``VALID``, ``SAME``, ``SAME_LOWER``, ``FULL``, ``CAUSAL``), an
        int, or per-axis ints / ``(lo, hi)`` pairs. Padding never wins the max.
      dilation: window dilation.
      ceil_mode: round the output size up (PyTorch).
      implementation: ``"xla"`` (default), ``"taps"``, ``"im2col"`` or a sequence.

    Returns:
      ``(N, *out_spatial, C)`` (unbatched in, unbatched out).
    """
    x, unbatched = _batched(inputs, window_shape)
    spec = pool_spec(x.shape, window_shape, strides, padding, dilation, ceil_mode, x.dtype)
    y = _reduce(x, spec, "max", implementation)
    return y[0] if unbatched else y


def avg_pool(
    inputs,
    window_shape: Sequence[int],
    strides: Sequence[int] | None = None,
    padding: Any = "VALID",
    count_include_pad: bool = True,
    *,
    dilation: Sequence[int] | int | None = None,
    ceil_mode: bool = False,
    divisor_override: int | None = None,
    implementation: str | Sequence[str] | None = None,
):
    """Average pooling, channels-last, any rank (``flax.linen.avg_pool`` plus dilation
    and PyTorch's ``ceil_mode`` / ``divisor_override``).

    Args:
      inputs: ``(N, *spatial, C)`` or unbatched ``(*spatial, C)``.
      window_shape, strides, padding, dilation, ceil_mode, implementation: as
        :func:`max_pool`.
      count_include_pad: divide by the window taps on the input *and* the explicit
        padding (True, as Flax and PyTorch) or on the input only (False). Taps on the
        extra high padding of ``ceil_mode`` are never counted (as PyTorch).
      divisor_override: divide every window sum by this number instead.

    Returns:
      ``(N, *out_spatial, C)``, floating.
    """
    x, unbatched = _batched(inputs, window_shape)
    spec = pool_spec(x.shape, window_shape, strides, padding, dilation, ceil_mode, x.dtype)
    y = _reduce(x, spec, "sum", implementation)
    if divisor_override is not None:
        if isinstance(divisor_override, bool) or int(divisor_override) < 1:
            raise ValueError(f"`divisor_override` must be an int >= 1, got {divisor_override!r}")
        y = y / divisor_override
    else:
        explicit = padding_to_pairs(
            padding, x.shape[1:-1], spec.window, spec.window_strides, spec.rhs_dilation
        )
        counts = _window_counts(spec, x.shape[1:-1], count_include_pad, explicit)
        dt = y.dtype if jnp.issubdtype(y.dtype, jnp.inexact) else jnp.float32
        y = y.astype(dt) / np.maximum(counts, 1).astype(dt)
    return y[0] if unbatched else y


def lp_pool(
    inputs,
    norm_type: float,
    window_shape: Sequence[int],
    strides: Sequence[int] | None = None,
    padding: Any = "VALID",
    *,
    dilation: Sequence[int] | int | None = None,
    ceil_mode: bool = False,
    implementation: str | Sequence[str] | None = None,
):
    """Power-average (Lp) pooling: ``(sum over the window of |x|**p) ** (1/p)``.

    ``p = inf`` is the max of ``|x|``. Equals ``torch.nn.functional.lp_pool{1,2,3}d``
    for even ``p`` or non-negative inputs (PyTorch sums ``x**p`` without ``abs``) and
    without ``ceil_mode`` (PyTorch then rescales clipped windows). Padding adds zeros.

    Args:
      inputs: ``(N, *spatial, C)`` or unbatched ``(*spatial, C)``.
      norm_type: ``p > 0`` (float or ``inf``).
      window_shape, strides, padding, dilation, ceil_mode, implementation: as
        :func:`max_pool`.

    Returns:
      ``(N, *out_spatial, C)``.
    """
    p = float(norm_type)
    if not p > 0:
        raise ValueError(f"`norm_type` must be > 0, got {norm_type!r}")
    x, unbatched = _batched(inputs, window_shape)
    spec = pool_spec(x.shape, window_shape, strides, padding, dilation, ceil_mode, x.dtype)
    a = jnp.abs(x)
    if math.isinf(p):
        y = _reduce(a, spec, "max", implementation)
        y = jnp.maximum(y, 0)  # all-padding windows give 0, not -inf
    else:
        y = _reduce(a**p, spec, "sum", implementation) ** (1.0 / p)
    return y[0] if unbatched else y


def _global(inputs, reduction: str, keepdims: bool, implementation: Any):
    x = _as_array(inputs, "inputs")
    if x.ndim < 2:
        raise ValueError(f"`inputs` must have shape (N, *spatial, C), got {x.shape}")
    window = x.shape[1:-1]
    if reduction == "max":
        y = max_pool(x, window, implementation=implementation)
    else:
        y = avg_pool(x, window, implementation=implementation)
    return y if keepdims else y.reshape((y.shape[0], y.shape[-1]))


def global_max_pool(
    inputs, keepdims: bool = False, *, implementation: str | Sequence[str] | None = None
):
    """Max over all spatial axes: ``(N, *spatial, C) -> (N, C)`` (or ``(N, 1.., C)``
    with ``keepdims``), a max pool whose window is the whole input."""
    return _global(inputs, "max", keepdims, implementation)


def global_avg_pool(
    inputs, keepdims: bool = False, *, implementation: str | Sequence[str] | None = None
):
    """Mean over all spatial axes: ``(N, *spatial, C) -> (N, C)`` (or ``(N, 1.., C)``
    with ``keepdims``), an average pool whose window is the whole input."""
    return _global(inputs, "avg", keepdims, implementation)
