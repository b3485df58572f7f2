"""``"im2col"``: gather every window into a patch matrix with explicit index
gathers, then one contraction per group.

Not built on ``lax.conv_general_dilated_patches`` (that is a convolution itself and
turns +-inf into NaN). The patch matrix is built in chunks of output rows (along the
first spatial axis): each chunk holds at most :data:`MAX_PATCH_BYTES` bytes, or one
output row when a single row is larger than that. Peak extra memory is one chunk.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from jaxconv._src.impl import window as W
from jaxconv._src.spec import ConvSpec

NAME = "im2col"

#: Upper bound, in bytes, on one chunk of the patch matrix (or one output row if larger).
MAX_PATCH_BYTES = 64 * 2**20


def supports(spec: ConvSpec) -> str | None:
    return None


def _window_indices(out: int, k: int, stride: int, dilation: int) -> np.ndarray:
    """``(out, k)`` padded-input positions read by output ``o`` at tap ``t``."""
    return (np.arange(out)[:, None] * stride + np.arange(k)[None, :] * dilation).astype(np.int32)


def patches(xp, spec: ConvSpec, rows: slice | None = None):
    """Patch matrix ``(N, *out, *window, C)`` of padded input ``xp``, optionally only
    output rows ``rows`` of the first spatial axis."""
    n = spec.nspatial
    x = xp
    for i in range(n):
        idx = _window_indices(
            spec.out_spatial[i], spec.window[i], spec.window_strides[i], spec.rhs_dilation[i]
        )
        if i == 0 and rows is not None:
            idx = idx[rows]
        # axis of spatial i after i earlier axes each became (out, k): 1 + 2 * i
        x = jnp.take(
            x,
            jnp.asarray(idx),
            axis=1 + 2 * i,
            mode="clip",
            unique_indices=False,
            indices_are_sorted=True,
        )
    # (N, o1, k1, o2, k2, ..., C) -> (N, o1, ..., on, k1, ..., kn, C)
    perm = (0,) + tuple(1 + 2 * i for i in range(n)) + tuple(2 + 2 * i for i in range(n))
    return jnp.transpose(x, perm + (2 * n + 1,))


def conv(lhs, rhs, spec: ConvSpec):
    x, w = W.to_channels_last(lhs, rhs, spec)
    xp = W.dilate_and_pad(x, spec)
    acc_dtype = W.accumulation_dtype(spec)
    n = spec.nspatial
    K = math.prod(spec.window)
    G, B, I, Og = W.group_sizes(spec)
    wk = W.split_groups_rhs(w.reshape((K,) + w.shape[n:]), spec)  # (K, I, G, B, O')

    out = spec.out_spatial
    row_bytes = x.shape[0] * math.prod(out[1:]) * K * x.shape[-1] * x.dtype.itemsize if n else 0
    rows_per_chunk = max(1, MAX_PATCH_BYTES // max(row_bytes, 1)) if n else 1
    chunks = []
    starts = range(0, out[0], rows_per_chunk) if n else [None]
    for s in starts:
        rows = None if s is None else slice(s, min(s + rows_per_chunk, out[0]))
        p = patches(xp, spec, rows)  # (N, *o, *win, C)
        lead = p.shape[: 1 + n]
        p = p.reshape(lead + (K,) + p.shape[-1:])
        p = W.split_groups_lhs(p, spec)  # (B, N', *o, K, G, I)
        y = jnp.einsum(
            "bn...kgi,kigbo->n...gbo",
            p,
            wk,
            precision=spec.precision,
            preferred_element_type=acc_dtype,
        )
        chunks.append(W.merge_groups_out(y))
    y = chunks[0] if len(chunks) == 1 else jnp.concatenate(chunks, axis=1)
    return W.from_channels_last(y.astype(spec.out_dtype), spec)
