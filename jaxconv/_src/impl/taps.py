"""``"taps"``: one strided slice of the padded, dilated input per kernel tap,
contracted with that tap's kernel slice and accumulated. No patch matrix.

Memory: one output-sized accumulator plus one tap slice at a time. This is the
natural fast path for depthwise and grouped convolution, where each tap is a cheap
per-group product instead of a wasteful dense contraction.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from jaxconv._src.spec import ConvSpec
from jaxconv._src.impl import window as W

NAME = "taps"


def supports(spec: ConvSpec) -> str | None:
    """Every zero-boundary spec is supported (boundary modes are materialised before)."""
    return None


def tap_slice(xp, start, spec: ConvSpec):
    """The ``(N, *out, C)`` slice of padded input ``xp`` that one tap reads."""
    out = spec.out_spatial
    starts = (0,) + tuple(start) + (0,)
    limits = (xp.shape[0],) + tuple(
        s + (o - 1) * st + 1 for s, o, st in zip(start, out, spec.window_strides)
    ) + (xp.shape[-1],)
    strides = (1,) + tuple(spec.window_strides) + (1,)
    return lax.slice(xp, starts, limits, strides)


def conv(lhs, rhs, spec: ConvSpec):
    x, w = W.to_channels_last(lhs, rhs, spec)
    xp = W.dilate_and_pad(x, spec)
    acc_dtype = W.accumulation_dtype(spec)
    w = W.split_groups_rhs(w, spec)  # (*win, I, G, B, O')
    acc = None
    for tap, start in W.tap_starts(spec):
        xs = W.split_groups_lhs(tap_slice(xp, start, spec), spec)  # (B, N', *out, G, I)
        part = jnp.einsum("bn...gi,igbo->n...gbo", xs, w[tap],
                          precision=spec.precision, preferred_element_type=acc_dtype)
        acc = part if acc is None else acc + part
    y = W.merge_groups_out(acc).astype(spec.out_dtype)
    return W.from_channels_last(y, spec)
