"""Window geometry shared by the window-gather implementations (im2col, taps).

Both work in one canonical layout, channels last: input ``(N, *spatial, C)``, kernel
``(*window, I, O)``, output ``(N, *spatial, O)``. Input dilation and padding (crops
too) are applied once, by ``lax.pad`` with interior padding, so that output position
``o`` and tap ``t`` read padded position ``o * stride + t * rhs_dilation`` on each axis.
Groups are a reshape: input channels ``(G, I)``, output features ``(G, B, O')``, input
batch ``(B, N')`` with at most one of ``G`` (feature groups) and ``B`` (batch groups)
larger than one, and one contraction over ``I`` (and the taps) per group.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxconv._src.spec import ConvSpec, dtype_kind


def to_channels_last(lhs, rhs, spec: ConvSpec):
    """Transpose operands into ``(N, *sp, C)`` and ``(*win, I, O)``."""
    lhs_spec, rhs_spec, _ = spec.dimension_numbers
    lhs_cl = jnp.transpose(lhs, (lhs_spec[0],) + tuple(lhs_spec[2:]) + (lhs_spec[1],))
    rhs_cl = jnp.transpose(rhs, tuple(rhs_spec[2:]) + (rhs_spec[1], rhs_spec[0]))
    return lhs_cl, rhs_cl


def from_channels_last(out, spec: ConvSpec):
    """Transpose a ``(N, *sp, O)`` result into the spec's output layout."""
    out_spec = spec.dimension_numbers.out_spec
    n = spec.nspatial
    # logical axis order of `out` is (batch, *spatial, feature)
    logical_pos = (0, n + 1) + tuple(range(1, n + 1))  # batch, feature, *spatial
    perm = [0] * (n + 2)
    for logical, dim in enumerate(out_spec):
        perm[dim] = logical_pos[logical]
    return jnp.transpose(out, perm)


def dilate_and_pad(x_cl, spec: ConvSpec):
    """Apply input dilation and the (zero) padding, crops included, in one ``lax.pad``."""
    config = [(0, 0, 0)]
    config += [(lo, hi, d - 1) for (lo, hi), d in zip(spec.padding, spec.lhs_dilation)]
    config += [(0, 0, 0)]
    if all(c == (0, 0, 0) for c in config):
        return x_cl
    return lax.pad(x_cl, jnp.zeros((), x_cl.dtype), config)


def accumulation_dtype(spec: ConvSpec):
    """Dtype in which partial sums are kept: the preferred type, else float32 for
    floating inputs narrower than 32 bits, else the input dtype."""
    if spec.preferred_element_type is not None:
        return spec.preferred_element_type
    dt = spec.lhs_dtype
    if dtype_kind(dt) == "f" and dt.itemsize < 4:
        return np.dtype(np.float32)
    return dt


def group_sizes(spec: ConvSpec) -> tuple[int, int, int, int]:
    """``(G, B, I, O')``: feature groups, batch groups, input channels per group and
    output features per group."""
    G, B = spec.feature_group_count, spec.batch_group_count
    return G, B, spec.rhs_in_features, spec.out_features // (G * B)


def split_groups_lhs(x, spec: ConvSpec):
    """``(N, *rest, C)`` -> ``(B, N', *rest, G, I)``."""
    G, B, I, _ = group_sizes(spec)
    N = x.shape[0]
    return x.reshape((B, N // B) + x.shape[1:-1] + (G, I))


def split_groups_rhs(w, spec: ConvSpec):
    """``(*lead, I, O)`` -> ``(*lead, I, G, B, O')``."""
    G, B, I, Og = group_sizes(spec)
    return w.reshape(w.shape[:-1] + (G, B, Og))


def merge_groups_out(y):
    """``(N', *rest, G, B, O')`` -> ``(N', *rest, O)``."""
    return y.reshape(y.shape[:-3] + (y.shape[-3] * y.shape[-2] * y.shape[-1],))


def tap_starts(spec: ConvSpec):
    """All kernel taps, as (multi-index, start offsets in the padded input)."""
    idx = np.stack(np.meshgrid(*[np.arange(k) for k in spec.window], indexing="ij"), -1)
    idx = idx.reshape(-1, spec.nspatial) if spec.nspatial else np.zeros((1, 0), int)
    return [
        (tuple(int(t) for t in tap), tuple(int(t) * d for t, d in zip(tap, spec.rhs_dilation)))
        for tap in idx
    ]
