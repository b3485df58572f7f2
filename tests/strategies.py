"""Hypothesis strategies for random convolution configurations (shared by test files)."""

from __future__ import annotations

import itertools

import numpy as np
from hypothesis import assume
from hypothesis import strategies as st
from jax import lax

from jaxconv._src.spec import ConvSpec

WORDS = ("VALID", "SAME", "SAME_LOWER", "FULL", "CAUSAL")
MODES = ("zeros", "constant", "circular", "reflect", "symmetric", "replicate")


def _perm(draw, n):
    return tuple(draw(st.permutations(range(n))))


@st.composite
def conv_specs(draw, ranks=(1, 2, 3), dtype=np.float32, boundary=True, max_size=7):
    """A random valid :class:`ConvSpec`: rank, strides, padding words and explicit pads
    (crops too), both dilations, feature or batch groups (depthwise with multipliers),
    random layouts, and (optionally) boundary modes."""
    n = draw(st.sampled_from(ranks))
    small = n == 3
    grouping = draw(st.sampled_from(["none", "feature", "depthwise", "batch"]))
    G = B = 1
    if grouping == "feature":
        G = draw(st.integers(2, 3))
    elif grouping == "depthwise":
        G = draw(st.integers(2, 4))
    elif grouping == "batch":
        B = draw(st.integers(2, 3))
    I = 1 if grouping == "depthwise" else draw(st.integers(1, 3))
    Og = draw(st.integers(1, 3))
    C, O = G * I, G * B * Og
    N = B * draw(st.integers(1, 2))
    window = tuple(draw(st.integers(1, 2 if small else 3)) for _ in range(n))
    rhs_dil = tuple(draw(st.integers(1, 2)) for _ in range(n))
    lhs_dil = tuple(draw(st.sampled_from([1, 1, 2])) for _ in range(n))
    strides = tuple(draw(st.integers(1, 3)) for _ in range(n))
    sizes = tuple(draw(st.integers(1, 5 if small else max_size)) for _ in range(n))
    if draw(st.booleans()):
        padding = draw(st.sampled_from(WORDS))
    else:
        padding = tuple((draw(st.integers(-1, 3)), draw(st.integers(-1, 3))) for _ in range(n))
    mode, value = "zeros", 0.0
    if boundary and all(d == 1 for d in lhs_dil) and draw(st.booleans()):
        mode = draw(st.sampled_from(MODES))
        value = draw(st.sampled_from([0.0, 1.5, -2.0]))
    lhs_spec, rhs_spec, out_spec = _perm(draw, n + 2), _perm(draw, n + 2), _perm(draw, n + 2)
    lhs_shape = [0] * (n + 2)
    for logical, size in zip(lhs_spec, (N, C) + sizes):
        lhs_shape[logical] = size
    rhs_shape = [0] * (n + 2)
    for logical, size in zip(rhs_spec, (O, I) + window):
        rhs_shape[logical] = size
    dnums = lax.ConvDimensionNumbers(lhs_spec, rhs_spec, out_spec)
    try:
        spec = ConvSpec.create(
            lhs_shape,
            rhs_shape,
            strides,
            padding,
            lhs_dil,
            rhs_dil,
            dnums,
            G,
            B,
            lhs_dtype=dtype,
            boundary=mode,
            boundary_value=value,
        )
    except ValueError:
        assume(False)
    return spec


def random_operands(spec: ConvSpec, seed: int = 0):
    """Random normal operands for ``spec`` in its dtype (integers in [-4, 4])."""
    import jax.numpy as jnp

    rng = np.random.default_rng(seed)
    dt = spec.lhs_dtype

    def make(shape):
        if dt.kind in "iu":
            return jnp.asarray(rng.integers(-4, 5, size=shape), dt)
        if dt.kind == "c":
            return jnp.asarray(rng.standard_normal(shape) + 1j * rng.standard_normal(shape), dt)
        return jnp.asarray(rng.standard_normal(shape), dt)

    return make(spec.lhs_shape), make(spec.rhs_shape)


def all_permutations(n):
    return list(itertools.permutations(range(n)))
