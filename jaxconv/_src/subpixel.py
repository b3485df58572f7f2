"""The sub-pixel split: an input-dilated (transposed) convolution as ``m**n`` ordinary
convolutions of the undilated input, one per output phase, interleaved.

With input dilation ``d`` most positions of the dilated input are zeros. Output position
``o`` of one axis reads dilated position ``o * stride + t * rhs_dilation - pad_lo`` for
tap ``t``; it is a real input only when that is a multiple of ``d``. Outputs with the same
residue ``o mod m`` (``m = d / gcd(stride, d)``) see the same subset of taps, every
``d / gcd(rhs_dilation, d)``-th one, and read the undilated input with stride
``stride / gcd(stride, d)``. So each phase is an ordinary convolution (no input
dilation) with a sub-sampled kernel; its outputs land at ``residue, residue + m, ...``.
A 2-D stride-2 transposed convolution is four convolutions with a quarter of the
kernel each, 4x fewer multiply-adds than the dilated form, and each phase runs on
whatever implementation is fastest for an ordinary convolution.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import NamedTuple

import jax.numpy as jnp
from jax import lax

from jaxconv._src.spec import ConvSpec, crop_input


class Phase(NamedTuple):
    """One output phase: outputs ``residue + j * every`` (``j < count``) per axis, the
    kernel taps ``taps`` (one ``slice`` per spatial axis, window order) and the
    ordinary convolution ``spec`` that computes them from the undilated input
    (``None`` when no tap reads a real input: those outputs are zero)."""

    residue: tuple[int, ...]
    every: tuple[int, ...]
    count: tuple[int, ...]
    taps: tuple[slice, ...]
    spec: ConvSpec | None


def _axis_phases(n, out, k, stride, d, rhs_dil, lo):
    """Per residue of one axis: ``(residue, every, count, tap slice, (stride',
    rhs_dilation', (lo', hi')))`` with ``None`` for the last when no tap reads input."""
    every = d // math.gcd(stride, d)
    step = d // math.gcd(rhs_dil, d)
    phases = []
    for r in range(min(every, out)):
        count = (out - r + every - 1) // every
        valid = [t for t in range(k) if (r * stride + t * rhs_dil - lo) % d == 0]
        if not valid:
            phases.append((r, every, count, slice(0, 0), None))
            continue
        t0 = valid[0]
        k2 = len(range(t0, k, step))
        s2 = every * stride // d
        dil2 = step * rhs_dil // d
        base = (r * stride + t0 * rhs_dil - lo) // d  # input index read by j = 0, tap t0
        span = (count - 1) * s2 + (k2 - 1) * dil2 + 1
        lo2 = -base
        phases.append((r, every, count, slice(t0, None, step), (s2, dil2, (lo2, span - n - lo2))))
    return phases


def phases(spec: ConvSpec) -> list[Phase]:
    """The sub-pixel phases of ``spec`` (one phase, the spec itself, without input
    dilation). Output positions of all phases together cover the output once."""
    per_axis = [
        _axis_phases(n, out, k, s, d, rd, lo)
        for n, out, k, s, d, rd, (lo, _hi) in zip(
            spec.lhs_spatial,
            spec.out_spatial,
            spec.window,
            spec.window_strides,
            spec.lhs_dilation,
            spec.rhs_dilation,
            spec.padding,
        )
    ]
    rhs_spec = spec.dimension_numbers.rhs_spec
    result = []
    for combo in itertools.product(*per_axis):
        residue, every, count, taps, geometry = (tuple(v) for v in zip(*combo))
        if any(g is None for g in geometry):
            result.append(Phase(residue, every, count, taps, None))
            continue
        rhs_shape = list(spec.rhs_shape)
        for ax, sl in enumerate(taps):
            rhs_shape[rhs_spec[2 + ax]] = len(range(*sl.indices(spec.window[ax])))
        sub = spec.replace(
            rhs_shape=tuple(rhs_shape),
            window_strides=tuple(g[0] for g in geometry),
            rhs_dilation=tuple(g[1] for g in geometry),
            padding=tuple(g[2] for g in geometry),
            lhs_dilation=(1,) * spec.nspatial,
        )
        result.append(Phase(residue, every, count, taps, sub))
    return result


def _interleave(pieces: dict, spec: ConvSpec, every: tuple[int, ...]):
    """Interleave equally sized phase outputs (``{residue: array}`` in the output
    layout) into the output: per spatial axis, stack the residues next to the axis and
    merge the two (one copy, fused by XLA)."""
    out_spec = spec.dimension_numbers.out_spec

    def build(prefix):
        ax = len(prefix)
        if ax == spec.nspatial:
            return pieces[prefix]
        parts = [build(prefix + (r,)) for r in range(every[ax])]
        if len(parts) == 1:
            return parts[0]
        p = out_spec[2 + ax]
        y = jnp.stack(parts, axis=p + 1)  # (..., count, every, ...)
        return y.reshape(y.shape[:p] + (y.shape[p] * y.shape[p + 1],) + y.shape[p + 2 :])

    return build(())


def conv(lhs, rhs, spec: ConvSpec, conv_fn: Callable):
    """``spec``'s convolution from its phases, each computed by ``conv_fn(lhs,
    rhs_phase, phase_spec)`` (an ordinary convolution: no input dilation, pads >= 0).
    Operands and result in the spec's layouts. When every axis's output size is a
    multiple of its phase count (the usual transposed convolution) the phases are
    interleaved by a stack and reshape; otherwise each is placed by a strided
    ``lax.pad`` and summed."""
    dn = spec.dimension_numbers
    n = spec.nspatial
    all_phases = phases(spec)
    every = all_phases[0].every if all_phases else ()
    # phases that read the input the same way (same geometry, only their kernel taps
    # differ) run as one convolution with their kernels side by side on the output
    # features: a 2x2 stride-2 transposed convolution is one 1x1 convolution (a matmul)
    o_dim, o_out = dn.rhs_spec[0], dn.out_spec[1]
    groups: dict = {}
    for ph in all_phases:
        if ph.spec is not None:
            shared = spec.feature_group_count == 1 == spec.batch_group_count
            key = ph.spec if shared else ph.residue
            groups.setdefault(key, []).append(ph)
    outs = {}
    for members in groups.values():
        kernels = []
        for ph in members:
            index = [slice(None)] * rhs.ndim
            for ax, sl in enumerate(ph.taps):
                index[dn.rhs_spec[2 + ax]] = sl
            kernels.append(rhs[tuple(index)])
        k = kernels[0] if len(kernels) == 1 else jnp.concatenate(kernels, axis=o_dim)
        sub = members[0].spec
        rhs_shape = list(sub.rhs_shape)
        rhs_shape[o_dim] = k.shape[o_dim]
        x, sub = crop_input(lhs, sub.replace(rhs_shape=tuple(rhs_shape)))
        y = conv_fn(x, k, sub)
        O = spec.out_features
        for i, ph in enumerate(members):
            outs[ph.residue] = lax.slice_in_dim(y, i * O, (i + 1) * O, axis=o_out)
    if all(o % e == 0 for o, e in zip(spec.out_spatial, every)):
        pieces = {}
        for ph in all_phases:
            y = outs.get(ph.residue)
            if y is None:  # only padding and inserted zeros: zero outputs
                shape = list(spec.out_shape)
                for ax in range(n):
                    shape[dn.out_spec[2 + ax]] = ph.count[ax]
                y = jnp.zeros(shape, spec.out_dtype)
            pieces[ph.residue] = y
        return _interleave(pieces, spec, every)
    acc = None
    for ph in all_phases:
        if ph.residue not in outs:
            continue
        y = outs[ph.residue]
        config = [(0, 0, 0)] * y.ndim
        for ax in range(n):
            r, e, c = ph.residue[ax], ph.every[ax], ph.count[ax]
            config[dn.out_spec[2 + ax]] = (r, spec.out_spatial[ax] - 1 - (r + (c - 1) * e), e - 1)
        y = lax.pad(y, jnp.zeros((), y.dtype), config)
        acc = y if acc is None else acc + y
    if acc is None:  # every output reads only padding and inserted zeros
        acc = jnp.zeros(spec.out_shape, spec.out_dtype)
    return acc
