"""The ``"taps"`` and ``"xla_taps_grad"`` primitives' hand-written derivatives against lax: both gradient paths
(per-tap reductions, and the FFT kernel gradient of large stride-1 windows), forward
mode, second order, and the broadcast (few channels per group) forward."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxconv._src.impl import taps
from jaxconv._src.spec import ConvSpec, default_dimension_numbers

CASES = {
    "transposed_4x4": ((1, 5, 4, 3), (4, 4, 3, 2), (1, 1), ((2, 2), (2, 2)), 1),
    # name: (lhs NHWC, rhs HWIO, stride, padding, groups)
    "depthwise_3x3_s2": ((2, 9, 8, 4), (3, 3, 1, 8), (2, 2), "SAME", 4),
    "grouped_3x3": ((1, 7, 7, 8), (3, 3, 2, 8), (1, 1), "SAME", 4),
    "depthwise_5x5_fft_grad": ((2, 8, 9, 3), (5, 5, 1, 3), (1, 1), "SAME", 3),
    "dense_5x5_fft_grad": ((1, 9, 8, 3), (5, 5, 3, 2), (1, 1), ((2, 1), (3, 0)), 1),
}


def _setup(case):
    xs, ws, stride, padding, groups = CASES[case]
    spec = ConvSpec.create(
        xs,
        ws,
        stride,
        padding,
        dimension_numbers=default_dimension_numbers(2),
        feature_group_count=groups,
        lhs_dtype=np.float64,
        lhs_dilation=(2, 2) if case.startswith("transposed") else None,
    )
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal(xs))
    w = jnp.asarray(rng.standard_normal(ws))
    kw = {**spec.lax_kwargs(), "precision": lax.Precision.HIGHEST}
    ref = lambda x, w: lax.conv_general_dilated(x, w, **kw)
    return spec, x, w, ref


def close(a, b):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-9, atol=1e-9)


DEFAULT = [
    ("depthwise_3x3_s2", "taps"),
    ("depthwise_5x5_fft_grad", "taps"),
    ("transposed_4x4", "xla_taps_grad"),
]
ALL = [(c, i) for c in sorted(CASES) for i in ("taps", "xla_taps_grad")]


@pytest.mark.parametrize(
    "case,impl",
    DEFAULT + [pytest.param(c, i, marks=pytest.mark.slow) for c, i in ALL if (c, i) not in DEFAULT],
)
def test_gradients_jvp_and_second_order_match_lax(case, impl, x64):
    spec, x, w, ref = _setup(case)
    assert taps.uses_fft_kernel_grad(spec) == case.endswith("fft_grad")
    conv = taps.conv if impl == "taps" else taps.xla_taps_grad_conv
    f = lambda x, w: conv(x, w, spec)
    loss = lambda fn: lambda x, w: jnp.sum(jnp.sin(fn(x, w)))
    close(jax.jit(f)(x, w), ref(x, w))
    for a, b in zip(jax.jit(jax.grad(loss(f), (0, 1)))(x, w), jax.grad(loss(ref), (0, 1))(x, w)):
        close(a, b)
    t = (jnp.cos(x), jnp.sin(w))
    close(jax.jit(lambda x, w: jax.jvp(f, (x, w), t)[1])(x, w), jax.jvp(ref, (x, w), t)[1])
    # mixed second derivative: d/dw of the input gradient
    mixed = lambda fn: jax.grad(lambda w: jnp.sum(jax.grad(loss(fn))(x, w) ** 2))
    close(jax.jit(mixed(f))(w), mixed(ref)(w))


def test_broadcast_form_is_used_for_few_channels_per_group():
    assert taps.uses_broadcast_form(_setup("grouped_3x3")[0])
    assert taps.uses_broadcast_form(_setup("depthwise_3x3_s2")[0])
    assert not taps.uses_broadcast_form(_setup("dense_5x5_fft_grad")[0])


@pytest.mark.parametrize(
    "lhs_shape, rhs_shape, strides, rhs_dilation, groups",
    [
        ((2, 9, 8, 6), (3, 3, 2, 6), (1, 1), (1, 1), 3),  # 2 channels per group
        ((2, 10, 9, 8), (3, 2, 4, 4), (2, 1), (1, 2), 2),  # 4 -> 2 per group, strided
        ((1, 8, 7, 4), (3, 3, 1, 8), (2, 2), (1, 1), 4),  # depthwise, multiplier 2
        ((2, 11, 6), (3, 2, 6), (1,), (2,), 3),  # 1-D
        ((1, 5, 4, 6, 4), (2, 3, 2, 2, 4), (1, 2, 1), (1, 1, 1), 2),  # 3-D
    ],
)
def test_blocked_grouped_kernel_gradient(lhs_shape, rhs_shape, strides, rhs_dilation, groups, x64):
    """The cache-blocked kernel gradient of grouped and depthwise convolutions, with
    blocks of one output row (many loop steps), against lax's."""
    n = len(lhs_shape) - 2
    spec = ConvSpec.create(
        lhs_shape,
        rhs_shape,
        strides,
        "SAME",
        rhs_dilation=rhs_dilation,
        dimension_numbers=default_dimension_numbers(n),
        feature_group_count=groups,
        lhs_dtype=np.float64,
    )
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.standard_normal(lhs_shape))
    g = jnp.asarray(rng.standard_normal(spec.out_shape))

    def lax_conv(w):
        return lax.conv_general_dilated(
            x,
            w,
            strides,
            spec.padding,
            rhs_dilation=rhs_dilation,
            dimension_numbers=spec.dimension_numbers,
            feature_group_count=groups,
        )

    want = jax.vjp(lax_conv, jnp.zeros(rhs_shape))[1](g)[0]
    old = taps.KERNEL_GRAD_BLOCK_BYTES
    try:
        taps.KERNEL_GRAD_BLOCK_BYTES = 1  # one output row per block
        got = taps.kernel_grad(x, g, spec)
    finally:
        taps.KERNEL_GRAD_BLOCK_BYTES = old
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
