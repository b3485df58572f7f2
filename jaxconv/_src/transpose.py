"""Transposed convolution: lax's ``conv_transpose`` and PyTorch's ``conv_transpose{1,2,3}d``.

A transposed convolution with strides ``s`` is a forward convolution over the input
dilated by ``s`` (``s - 1`` zeros between samples), with stride 1. Both argument
conventions are resolved here into explicit ``(lo, hi)`` pads of that dilated
convolution, one :class:`~jaxconv._src.spec.ConvSpec`, and one :func:`dispatch.run`:

* **lax meaning** (:func:`conv_transpose`): ``padding`` is ``"SAME"`` / ``"VALID"``
  (resolved as ``lax.conv_transpose`` does) or explicit pads of the dilated input;
  ``use_consistent_padding=True`` reads pairs as the forward convolution's padding.
* **PyTorch meaning** (:func:`conv_transpose_torch`): ``padding`` is the forward
  convolution's padding, so ``dilation * (k - 1) - padding`` is padded on each side of
  the dilated input, ``output_padding`` (or ``output_size``) adds to the high side.

Groups (which lax's ``conv_transpose`` lacks): with ``transpose_kernel=True`` the kernel
is the *forward* convolution's kernel, so the groups are moved from its output-feature
axis to its input-feature axis, as in the input gradient
(:func:`jaxconv._src.autodiff.transposed_rhs_kernel`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from jax import lax

from jaxconv._src import dispatch
from jaxconv._src.api import _as_array
from jaxconv._src.autodiff import _reshape_axis_into, _reshape_axis_out_of
from jaxconv._src.spec import (
    ConvSpec,
    _dilate,
    _dimension_numbers,
    _int_tuple,
    default_dimension_numbers,
)


def _swap01(perm):
    return (perm[1], perm[0]) + tuple(perm[2:])


def _lax_word_pads(word: str, eff_k: int, stride: int) -> tuple[int, int]:
    """``lax.conv_transpose``'s pads of the dilated input for ``SAME`` / ``VALID``."""
    if word == "SAME":
        pad_len = eff_k + stride - 2
        pad_a = eff_k - 1 if stride > eff_k - 1 else int(np.ceil(pad_len / 2))
    else:  # VALID
        pad_len = eff_k + stride - 2 + max(eff_k - stride, 0)
        pad_a = eff_k - 1
    return pad_a, pad_len - pad_a


def _pairs(padding: Any, n: int, name: str = "padding") -> tuple[tuple[int, int], ...]:
    try:
        entries = list(padding)
    except TypeError:
        raise TypeError(
            f"`{name}` must be 'SAME', 'VALID' or a sequence of {n} (lo, hi) pairs, got "
            f"{padding!r} (for PyTorch's integer padding use jaxconv.conv_transpose_torch)"
        ) from None
    if len(entries) != n:
        raise ValueError(
            f"`{name}` must have one (lo, hi) pair per spatial axis (={n}), got {padding!r}"
        )
    out = []
    for e in entries:
        try:
            lo, hi = e
            out.append((int(lo), int(hi)))
        except (TypeError, ValueError):
            raise ValueError(
                f"`{name}` entries must be (lo, hi) pairs of ints, got {e!r} in {padding!r}"
            ) from None
    return tuple(out)


def _output_padding(
    output_padding: Any,
    output_size: Any,
    base_size: Sequence[int],
    strides: Sequence[int],
    dilation: Sequence[int],
) -> tuple[int, ...]:
    """Extra high-side output samples from ``output_padding`` or ``output_size``
    (PyTorch's rules: ``0 <= output_padding < max(stride, dilation)``; ``output_size``
    between the smallest output and ``stride - 1`` more)."""
    n = len(base_size)
    if output_padding is not None and output_size is not None:
        raise ValueError(
            "give at most one of `output_padding` and `output_size`, got "
            f"output_padding={output_padding!r} and output_size={output_size!r}"
        )
    if output_size is not None:
        size = tuple(int(s) for s in np.atleast_1d(output_size))
        if len(size) > n:  # PyTorch also accepts the full (N, C, *spatial) shape
            size = size[-n:]
        if len(size) != n:
            raise ValueError(f"`output_size` must give {n} spatial sizes, got {output_size!r}")
        for i, (want, base, s) in enumerate(zip(size, base_size, strides)):
            if not base <= want <= base + s - 1:
                raise ValueError(
                    f"`output_size` on spatial axis {i} must be between {base} and "
                    f"{base + s - 1} (stride {s}), got {want}"
                )
        return tuple(w - b for w, b in zip(size, base_size))
    ops = _int_tuple(
        0 if output_padding is None else output_padding, n, "output_padding", minimum=0
    )
    for i, (op, s, d) in enumerate(zip(ops, strides, dilation)):
        if op >= max(s, d):
            raise ValueError(
                f"`output_padding` on spatial axis {i} (={op}) must be smaller than the "
                f"stride (={s}) or the dilation (={d})"
            )
    return ops


def transpose_spec(
    lhs_shape: Sequence[int],
    rhs_shape: Sequence[int],
    strides: Any,
    padding: Any,
    rhs_dilation: Any = None,
    dimension_numbers: Any = None,
    transpose_kernel: bool = False,
    precision: Any = None,
    preferred_element_type: Any = None,
    use_consistent_padding: bool = False,
    *,
    feature_group_count: int = 1,
    output_padding: Any = None,
    output_size: Any = None,
    lhs_dtype: Any = np.float32,
    rhs_dtype: Any = None,
) -> ConvSpec:
    """The :class:`ConvSpec` of the dilated forward convolution that computes a
    transposed convolution (lax meaning of the arguments; see :func:`conv_transpose`).

    With ``transpose_kernel=True`` the spec's kernel is the regrouped kernel of
    :func:`transposed_kernel` and its ``dimension_numbers`` have the kernel's two
    feature axes swapped.
    """
    lhs_shape = tuple(int(s) for s in lhs_shape)
    rhs_shape = tuple(int(s) for s in rhs_shape)
    if len(lhs_shape) != len(rhs_shape) or len(lhs_shape) < 2:
        raise ValueError(
            f"`lhs` and `rhs` must have the same rank >= 2, got shapes {lhs_shape} and {rhs_shape}"
        )
    n = len(lhs_shape) - 2
    if dimension_numbers is None:
        dimension_numbers = default_dimension_numbers(n)
    dn = _dimension_numbers(lhs_shape, rhs_shape, dimension_numbers)
    G = feature_group_count
    if isinstance(G, bool) or not isinstance(G, (int, np.integer)) or G < 1:
        raise ValueError(f"`feature_group_count` must be an int >= 1, got {G!r}")
    strides = _int_tuple(strides, n, "strides")
    rhs_dil = _int_tuple(rhs_dilation, n, "rhs_dilation")
    window = [rhs_shape[d] for d in dn.rhs_spec[2:]]
    eff_k = [_dilate(k, d) for k, d in zip(window, rhs_dil)]

    if transpose_kernel:
        # The kernel is the forward convolution's: its "O" axis has the transposed
        # input's features, its "I" axis the transposed output's features per group.
        o_ax, i_ax = dn.rhs_spec[0], dn.rhs_spec[1]
        if rhs_shape[o_ax] % G:
            raise ValueError(
                f"`feature_group_count` (={G}) must divide the kernel's axis of input "
                f"features (={rhs_shape[o_ax]}) when `transpose_kernel=True`"
            )
        k_shape = list(rhs_shape)
        k_shape[o_ax] //= G
        k_shape[i_ax] *= G
        k_shape = tuple(k_shape)
        dn = lax.ConvDimensionNumbers(dn.lhs_spec, _swap01(dn.rhs_spec), dn.out_spec)
    else:
        k_shape = rhs_shape

    if isinstance(padding, str):
        word = padding.upper()
        if word not in ("SAME", "VALID"):
            raise ValueError(
                f"`padding` word for a transposed convolution must be 'SAME' or 'VALID', "
                f"got {padding!r}"
            )
        pads = tuple(_lax_word_pads(word, k, s) for k, s in zip(eff_k, strides))
    else:
        pads = _pairs(padding, n)
        if use_consistent_padding:
            pads = tuple((k - lo - 1, k - hi - 1) for k, (lo, hi) in zip(eff_k, pads))

    in_sp = [lhs_shape[d] for d in dn.lhs_spec[2:]]
    base = [
        _dilate(i, s) + lo + hi - k + 1 for i, s, (lo, hi), k in zip(in_sp, strides, pads, eff_k)
    ]
    extra = _output_padding(output_padding, output_size, base, strides, rhs_dil)
    pads = tuple((lo, hi + e) for (lo, hi), e in zip(pads, extra))
    return ConvSpec.create(
        lhs_shape,
        k_shape,
        window_strides=(1,) * n,
        padding=pads,
        lhs_dilation=strides,
        rhs_dilation=rhs_dil,
        dimension_numbers=dn,
        feature_group_count=G,
        precision=precision,
        preferred_element_type=preferred_element_type,
        lhs_dtype=lhs_dtype,
        rhs_dtype=rhs_dtype,
    )


def transposed_kernel(rhs, rhs_spec: Sequence[int], groups: int):
    """Flip ``rhs`` spatially and move ``groups`` from its output-feature axis
    (``rhs_spec[0]``) into its input-feature axis (``rhs_spec[1]``)."""
    if groups > 1:
        rhs = _reshape_axis_out_of(rhs_spec[0], groups, rhs)
        rhs = _reshape_axis_into(rhs_spec[0], rhs_spec[1], rhs)
    return lax.rev(rhs, tuple(rhs_spec[2:]))


def conv_transpose(
    lhs,
    rhs,
    strides: Sequence[int],
    padding: str | Sequence[tuple[int, int]],
    rhs_dilation: Sequence[int] | None = None,
    dimension_numbers: Any = None,
    transpose_kernel: bool = False,
    precision: Any = None,
    preferred_element_type: Any = None,
    use_consistent_padding: bool = False,
    *,
    feature_group_count: int = 1,
    output_padding: int | Sequence[int] | None = None,
    output_size: Sequence[int] | None = None,
    bias=None,
    activation: Callable | None = None,
    implementation: str | Sequence[str] | None = None,
):
    """Drop-in for :func:`jax.lax.conv_transpose`, plus groups and output padding.

    Same positional signature, defaults (channels-last ``NH..C`` / ``H..IO``) and results
    as lax, for any number of spatial axes.

    Args:
      lhs: input ``(N, *spatial, C)`` (or as ``dimension_numbers`` say).
      rhs: kernel ``(*window, I, O)``. With ``transpose_kernel=False`` it is the kernel
        of the convolution over the dilated input: ``I = C // feature_group_count``.
        With ``transpose_kernel=True`` it is the *forward* convolution's kernel, flipped
        and with its feature axes swapped here: ``O = C`` and ``I`` = output features
        per group (the gradient / Keras ``Conv2DTranspose`` meaning).
      strides: the fractional strides (input dilation), int or per-axis.
      padding: ``"SAME"`` (output ``in * stride``), ``"VALID"`` (output
        ``in * stride + max(k - stride, 0)``), or ``(lo, hi)`` pads of the dilated input
        (with ``use_consistent_padding=True``: the forward convolution's pads). Words
        work although lax rejects a word together with input dilation.
      rhs_dilation: kernel dilation.
      feature_group_count: groups (lax's ``conv_transpose`` has none).
      output_padding: extra samples on the high side of each axis (``< max(stride,
        dilation)``), or ``output_size``: the wanted spatial output sizes.
      bias, activation: fused epilogue, ``bias`` of shape ``(out_features,)``.
      implementation: ``None`` (automatic), a name, or a sequence of names.

    Returns:
      ``(N, *out_spatial, O_out)`` in the output layout of ``dimension_numbers``.
    """
    lhs = _as_array(lhs, "lhs")
    rhs = _as_array(rhs, "rhs")
    spec = transpose_spec(
        lhs.shape,
        rhs.shape,
        strides,
        padding,
        rhs_dilation,
        dimension_numbers,
        transpose_kernel,
        precision,
        preferred_element_type,
        use_consistent_padding,
        feature_group_count=feature_group_count,
        output_padding=output_padding,
        output_size=output_size,
        lhs_dtype=lhs.dtype,
        rhs_dtype=rhs.dtype,
    )
    if transpose_kernel:
        # the spec's rhs_spec is swapped; the user's O axis is its I axis
        rhs = transposed_kernel(
            rhs, _swap01(spec.dimension_numbers.rhs_spec), spec.feature_group_count
        )
    if bias is not None:
        bias = _as_array(bias, "bias")
        if bias.shape != (spec.out_features,):
            raise ValueError(
                f"`bias` must have shape ({spec.out_features},) (one per output feature), "
                f"got {bias.shape}"
            )
    return dispatch.run(lhs, rhs, spec, implementation, bias=bias, activation=activation)


def conv_transpose_torch(
    input,
    weight,
    bias=None,
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    output_padding: int | Sequence[int] = 0,
    groups: int = 1,
    dilation: int | Sequence[int] = 1,
    *,
    output_size: Sequence[int] | None = None,
    activation: Callable | None = None,
    precision: Any = None,
    implementation: str | Sequence[str] | None = None,
):
    """``torch.nn.functional.conv_transpose{1,2,3}d`` (any rank) with PyTorch's meaning
    of every argument; the same numbers as PyTorch.

    Args:
      input: ``(N, C_in, *spatial)`` or unbatched ``(C_in, *spatial)``.
      weight: ``(C_in, C_out // groups, *window)``.
      bias: optional ``(C_out,)``.
      stride, dilation: int or per-axis.
      padding: the forward convolution's padding: ``dilation * (k - 1) - padding`` zeros
        are added on both sides of the dilated input (negative values crop).
      output_padding: extra samples on the high side (``< max(stride, dilation)``).
      output_size: alternative to ``output_padding``: the wanted spatial sizes (or the
        full output shape), as ``nn.ConvTranspose2d.forward(x, output_size)``.
      implementation: ``None`` (automatic), a name, or a sequence of names.

    Returns:
      ``(N, C_out, *out)`` with ``out = (in - 1) * stride - 2 * padding
      + dilation * (k - 1) + output_padding + 1``.
    """
    input = _as_array(input, "input")
    weight = _as_array(weight, "weight")
    n = weight.ndim - 2
    if n < 0:
        raise ValueError(
            f"`weight` must have shape (C_in, C_out // groups, *window), got {weight.shape}"
        )
    unbatched = input.ndim == n + 1
    if unbatched:
        input = input[None]
    if input.ndim != n + 2:
        raise ValueError(
            f"`input` must have shape (N, C_in, *spatial) with {n} spatial axes to match "
            f"`weight` of shape {weight.shape}, got shape {input.shape}"
        )
    if input.shape[1] != weight.shape[0]:
        raise ValueError(
            f"`weight` must have shape (C_in, C_out // groups, *window) with C_in = "
            f"{input.shape[1]} (the input's channels), got {weight.shape}"
        )
    pads = _int_tuple(padding, n, "padding", minimum=0)
    dims = tuple(range(n + 2))
    dn = lax.ConvDimensionNumbers(dims, dims, dims)
    y = conv_transpose(
        input,
        weight,
        stride,
        [(p, p) for p in pads],
        dilation,
        dn,
        True,
        precision,
        None,
        True,
        feature_group_count=groups,
        output_padding=None if output_size is not None else output_padding,
        output_size=output_size,
        bias=bias,
        activation=activation,
        implementation=implementation,
    )
    return y[0] if unbatched else y
