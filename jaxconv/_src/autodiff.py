"""Gradients are convolutions too.

The input gradient and the kernel gradient of a convolution are convolutions with a
transposed spec: strides and input dilation swap, the kernel is flipped, the dimension
numbers are transposed and the pads are derived (as ``_conv_general_dilated_transpose_lhs``
/ ``_rhs`` in ``jax/_src/lax/convolution.py``). They are derived here once, beside the
spec, so that every kernel-based implementation reuses them in its ``custom_vjp``
(:func:`with_transposed_vjp`) instead of falling back to lax.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import numpy as np
from jax import lax

from jaxconv._src.spec import ConvSpec, _dilate


def _swap01(spec):
    return (spec[1], spec[0]) + tuple(spec[2:])


def _reshape_axis_out_of(src: int, size1: int, x):
    shape = list(x.shape)
    size2, rem = divmod(shape[src], size1)
    assert rem == 0
    shape[src : src + 1] = [size1, size2]
    return x.reshape(shape)


def _reshape_axis_into(src: int, dst: int, x):
    perm = [i for i in range(x.ndim) if i != src]
    perm.insert(dst, src)
    shape = list(np.delete(x.shape, src))
    shape[dst] *= x.shape[src]
    return x.transpose(perm).reshape(shape)


def _out_spatial_dilated(spec: ConvSpec):
    return [_dilate(o, s) for o, s in zip(spec.out_spatial, spec.window_strides)]


def transpose_lhs_spec(spec: ConvSpec) -> ConvSpec:
    """Spec of ``conv(g, flip(rhs'), ·)`` whose result is the gradient w.r.t. ``lhs``.

    ``rhs'`` is ``rhs`` regrouped by :func:`transposed_rhs_kernel`; for batch groups
    the result is regrouped by :func:`regroup_lhs_grad`.
    """
    assert spec.boundary == "zeros", "boundary modes are materialised before autodiff"
    lhs_spec, rhs_spec, out_spec = spec.dimension_numbers
    G, B = spec.feature_group_count, spec.batch_group_count
    in_dil = [_dilate(s, d) for s, d in zip(spec.lhs_spatial, spec.lhs_dilation)]
    k_dil = spec.effective_window
    out_dil = _out_spatial_dilated(spec)
    lo = [k - p - 1 for k, (p, _) in zip(k_dil, spec.padding)]
    hi = [i + k - 1 - o - b for i, k, o, b in zip(in_dil, k_dil, out_dil, lo)]
    rhs_shape = transposed_rhs_kernel_shape(spec)
    return ConvSpec.create(
        spec.out_shape,
        rhs_shape,
        window_strides=spec.lhs_dilation,
        padding=tuple(zip(lo, hi)),
        lhs_dilation=spec.window_strides,
        rhs_dilation=spec.rhs_dilation,
        dimension_numbers=lax.ConvDimensionNumbers(out_spec, _swap01(rhs_spec), lhs_spec),
        feature_group_count=max(G, B),
        batch_group_count=1,
        precision=spec.precision,
        preferred_element_type=spec.preferred_element_type,
        lhs_dtype=spec.out_dtype,
        rhs_dtype=spec.out_dtype,
    )


def transposed_rhs_kernel_shape(spec: ConvSpec) -> tuple[int, ...]:
    rhs_spec = spec.dimension_numbers.rhs_spec
    shape = list(spec.rhs_shape)
    groups = max(spec.feature_group_count, spec.batch_group_count)
    shape[rhs_spec[0]] //= groups
    shape[rhs_spec[1]] *= groups
    return tuple(shape)


def transposed_rhs_kernel(rhs, spec: ConvSpec):
    """The kernel of the input-gradient convolution: regrouped and spatially flipped."""
    rhs_spec = spec.dimension_numbers.rhs_spec
    groups = max(spec.feature_group_count, spec.batch_group_count)
    if groups > 1:
        rhs = _reshape_axis_out_of(rhs_spec[0], groups, rhs)
        rhs = _reshape_axis_into(rhs_spec[0], rhs_spec[1], rhs)
    return lax.rev(rhs, tuple(rhs_spec[2:]))


def regroup_lhs_grad(dlhs, spec: ConvSpec):
    """Undo the batch-group folding in the input gradient (identity otherwise)."""
    if spec.batch_group_count == 1:
        return dlhs
    lhs_spec = spec.dimension_numbers.lhs_spec
    dlhs = _reshape_axis_out_of(lhs_spec[1], spec.batch_group_count, dlhs)
    return _reshape_axis_into(lhs_spec[1], lhs_spec[0], dlhs)


def transpose_rhs_spec(spec: ConvSpec) -> ConvSpec:
    """Spec of ``conv(lhs, g, ·)`` whose result is the gradient w.r.t. ``rhs``."""
    assert spec.boundary == "zeros", "boundary modes are materialised before autodiff"
    lhs_spec, rhs_spec, out_spec = spec.dimension_numbers
    G, B = spec.feature_group_count, spec.batch_group_count
    in_dil = [_dilate(s, d) for s, d in zip(spec.lhs_spatial, spec.lhs_dilation)]
    k_dil = spec.effective_window
    out_dil = _out_spatial_dilated(spec)
    lo = [p for p, _ in spec.padding]
    hi = [o - i + k - p - 1 for o, i, k, p in zip(out_dil, in_dil, k_dil, lo)]
    return ConvSpec.create(
        spec.lhs_shape,
        spec.out_shape,
        window_strides=spec.rhs_dilation,
        padding=tuple(zip(lo, hi)),
        lhs_dilation=spec.lhs_dilation,
        rhs_dilation=spec.window_strides,
        dimension_numbers=lax.ConvDimensionNumbers(
            _swap01(lhs_spec), _swap01(out_spec), _swap01(rhs_spec)
        ),
        feature_group_count=B if B > 1 else 1,
        batch_group_count=G if G > 1 else 1,
        precision=spec.precision,
        preferred_element_type=spec.preferred_element_type,
        lhs_dtype=spec.out_dtype,
        rhs_dtype=spec.out_dtype,
    )


ConvFn = Callable[..., jax.Array]  # (lhs, rhs, spec) -> out


def lhs_grad(g, rhs, spec: ConvSpec, conv_fn: ConvFn):
    """Gradient w.r.t. ``lhs`` of ``conv_fn(lhs, rhs, spec)``, computed by ``conv_fn``."""
    tspec = transpose_lhs_spec(spec)
    w = transposed_rhs_kernel(rhs.astype(g.dtype), spec)
    out = regroup_lhs_grad(conv_fn(g, w, tspec), spec)
    return out.astype(spec.lhs_dtype)


def rhs_grad(g, lhs, spec: ConvSpec, conv_fn: ConvFn):
    """Gradient w.r.t. ``rhs`` of ``conv_fn(lhs, rhs, spec)``, computed by ``conv_fn``."""
    if g.size == 0:
        return jax.numpy.zeros(spec.rhs_shape, spec.rhs_dtype)
    tspec = transpose_rhs_spec(spec)
    return conv_fn(lhs.astype(g.dtype), g, tspec).astype(spec.rhs_dtype)


def with_transposed_vjp(conv_fn: ConvFn) -> ConvFn:
    """Wrap ``conv_fn(lhs, rhs, spec)`` in a ``custom_vjp`` whose backward pass runs
    ``conv_fn`` itself on the transposed specs. The backward is differentiable in turn,
    so gradients of gradients run on the same implementation."""

    @functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
    def f(lhs, rhs, spec):
        return conv_fn(lhs, rhs, spec)

    def fwd(lhs, rhs, spec):
        # `f`, not `conv_fn`: under an outer differentiation (gradient of gradient) the
        # forward rule is differentiated too, and a bare kernel may have no rule.
        return f(lhs, rhs, spec), (lhs, rhs)

    def bwd(spec, res, g):
        lhs, rhs = res
        return lhs_grad(g, rhs, spec, f), rhs_grad(g, lhs, spec, f)

    f.defvjp(fwd, bwd)
    return f
