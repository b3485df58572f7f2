"""Public entry points: the lax drop-in and the channels-last ``conv``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxconv._src import dispatch
from jaxconv._src.spec import ConvSpec, default_dimension_numbers, pad_input


def _as_array(x, name: str):
    if isinstance(x, (jax.Array, np.ndarray, np.generic)) or hasattr(x, "__jax_array__"):
        return x
    if isinstance(x, (list, tuple, int, float, complex)):
        return jnp.asarray(x)
    raise TypeError(f"`{name}` must be an array, got {type(x).__name__}")


def conv_general_dilated(
    lhs,
    rhs,
    window_strides: Sequence[int],
    padding: str | Sequence[tuple[int, int]],
    lhs_dilation: Sequence[int] | None = None,
    rhs_dilation: Sequence[int] | None = None,
    dimension_numbers: Any = None,
    feature_group_count: int = 1,
    batch_group_count: int = 1,
    precision: Any = None,
    preferred_element_type: Any = None,
    *,
    implementation: str | Sequence[str] | None = None,
    out_sharding: Any = None,
):
    """Drop-in for :func:`jax.lax.conv_general_dilated` with a choice of implementation.

    Same signature, defaults and results as lax (so it can be given to Flax as
    ``conv_general_dilated=``). ``padding`` also takes ``"FULL"``, ``"CAUSAL"``, an int
    or per-axis ints. As in lax, a padding word together with ``lhs_dilation`` raises:
    use explicit pairs or :func:`jaxconv.conv_transpose`.

    Args:
      lhs: input, rank ``n + 2``, layout given by ``dimension_numbers`` (default NCH..).
      rhs: kernel, rank ``n + 2`` (default OIH..).
      implementation: ``None`` (automatic), a name from
        :func:`jaxconv.implementations`, or a sequence of names tried in order.
      out_sharding: accepted for Flax compatibility; passed to lax by ``"xla"`` and
        applied as a sharding constraint by the other implementations.

    Returns:
      The output, of shape :func:`jaxconv.output_shape` and dtype
      ``preferred_element_type`` or the input dtype.
    """
    lhs = _as_array(lhs, "lhs")
    rhs = _as_array(rhs, "rhs")
    if (
        isinstance(padding, str)
        and lhs_dilation is not None
        and any(d != 1 for d in np.atleast_1d(lhs_dilation))
    ):
        raise ValueError(
            "a padding word together with `lhs_dilation` is not defined by "
            "lax.conv_general_dilated: give explicit (lo, hi) pairs, or use "
            "jaxconv.conv_transpose, which resolves words for transposed convolution"
        )
    spec = ConvSpec.create(
        lhs.shape,
        rhs.shape,
        window_strides,
        padding,
        lhs_dilation,
        rhs_dilation,
        dimension_numbers,
        feature_group_count,
        batch_group_count,
        precision,
        preferred_element_type,
        lhs_dtype=lhs.dtype,
        rhs_dtype=rhs.dtype,
    )
    if out_sharding is not None and dispatch.select(spec, implementation).name == "xla":
        from jax import lax

        lhs, zspec = pad_input(lhs, spec)  # crops as slices, as in every other path
        return lax.conv_general_dilated(lhs, rhs, **zspec.lax_kwargs(), out_sharding=out_sharding)
    out = dispatch.run(lhs, rhs, spec, implementation)
    if out_sharding is not None:
        out = jax.lax.with_sharding_constraint(out, out_sharding)
    return out


#: How ``conv``'s arguments are called in lax (for error messages).
CONV_ARG_NAMES = {
    "window_strides": "stride",
    "lhs_dilation": "input_dilation",
    "rhs_dilation": "dilation",
    "feature_group_count": "groups",
}


def conv(
    x,
    w,
    *,
    stride: int | Sequence[int] = 1,
    padding: Any = "SAME",
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    padding_mode: str = "zeros",
    padding_value: float = 0.0,
    bias=None,
    activation: Callable | None = None,
    input_dilation: int | Sequence[int] = 1,
    precision: Any = None,
    preferred_element_type: Any = None,
    implementation: str | Sequence[str] | None = None,
):
    """Channels-last N-D convolution (cross-correlation, as in deep learning and Flax).

    Args:
      x: input ``(N, *spatial, C)``, or unbatched ``(*spatial, C)``.
      w: kernel ``(*window, C // groups, O)`` (Flax's layout).
      stride: int or per-axis ints.
      padding: ``"SAME"`` (default), ``"VALID"``, ``"SAME_LOWER"``, ``"FULL"``,
        ``"CAUSAL"`` (all padding before), an int (symmetric, as PyTorch), or per-axis
        ints or ``(lo, hi)`` pairs (negative pads crop).
      dilation: kernel (rhs) dilation, int or per-axis.
      groups: feature groups; ``groups == C`` is depthwise.
      padding_mode: how the padding is filled: ``"zeros"``, ``"constant"`` (with
        ``padding_value``), ``"circular"``/``"wrap"``, ``"reflect"``, ``"symmetric"``,
        ``"replicate"``/``"edge"``.
      bias: optional ``(O,)``, added to the output.
      activation: optional elementwise function applied last (e.g. ``jax.nn.relu``).
      input_dilation: lhs dilation (zeros between input samples), int or per-axis.
      implementation: ``None`` (automatic), a name, or a sequence of names.

    Returns:
      ``(N, *out_spatial, O)`` (unbatched input gives unbatched output).
    """
    x, w, spec, bias, unbatched = conv_operands(
        x,
        w,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        padding_mode=padding_mode,
        padding_value=padding_value,
        bias=bias,
        activation=activation,
        input_dilation=input_dilation,
        precision=precision,
        preferred_element_type=preferred_element_type,
    )
    y = dispatch.run(x, w, spec, implementation, bias=bias, activation=activation)
    return y[0] if unbatched else y


def conv_operands(
    x,
    w,
    *,
    stride: Any = 1,
    padding: Any = "SAME",
    dilation: Any = 1,
    groups: int = 1,
    padding_mode: str = "zeros",
    padding_value: float = 0.0,
    bias=None,
    activation: Callable | None = None,
    input_dilation: Any = 1,
    precision: Any = None,
    preferred_element_type: Any = None,
):
    """Validate :func:`conv`'s arguments (shared by every channels-last entry point).

    Returns ``(x, w, spec, bias, unbatched)`` with ``x`` batched ``(N, *spatial, C)``,
    ``spec`` the canonical spec and ``unbatched`` whether a batch axis was added.
    """
    x = _as_array(x, "x")
    w = _as_array(w, "w")
    if w.ndim < 2:
        raise ValueError(f"`w` must have shape (*window, C // groups, O), got {w.shape}")
    n = w.ndim - 2
    unbatched = x.ndim == n + 1
    if unbatched:
        x = x[None]
    if x.ndim != n + 2:
        raise ValueError(
            f"`x` must have shape (N, *spatial, C) with {n} spatial axes to match `w` of "
            f"shape {w.shape}, got shape {x.shape}"
        )
    spec = ConvSpec.create(
        x.shape,
        w.shape,
        stride,
        padding,
        input_dilation,
        dilation,
        default_dimension_numbers(n),
        groups,
        1,
        precision,
        preferred_element_type,
        lhs_dtype=x.dtype,
        rhs_dtype=w.dtype,
        boundary=padding_mode,
        boundary_value=padding_value,
        arg_names=CONV_ARG_NAMES,
    )
    if bias is not None:
        bias = _as_array(bias, "bias")
        if bias.shape != (spec.out_features,):
            raise ValueError(
                f"`bias` must have shape ({spec.out_features},) (one per output feature), "
                f"got {bias.shape}"
            )
    if activation is not None and not callable(activation):
        raise TypeError(f"`activation` must be callable, got {type(activation).__name__}")
    return x, w, spec, bias, unbatched
