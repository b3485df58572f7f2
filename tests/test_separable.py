"""Depthwise (TensorFlow channel order) and separable convolution, their cost against
the dense layer, and bias + activation fused into ``conv`` on every implementation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import jaxconv
from jaxconv._src.impl import cpu_direct
from jaxconv._src.reference import reference_conv, relative_error, tolerance
from jaxconv._src.separable import (
    depthwise_conv,
    depthwise_cost,
    separable_conv,
    separable_cost,
)
from jaxconv._src.spec import ConvSpec, default_dimension_numbers

IMPLS = ["xla", "im2col", "taps"]
TOL32 = tolerance(np.float32)
HIGHEST = lax.Precision.HIGHEST


def _depthwise_reference(x, w, stride, padding, dilation):
    """TensorFlow's definition, one channel and one multiplier at a time:
    output channel k * M + q = conv(x[..., k], w[..., k, q])."""
    n = w.ndim - 2
    dn = ("N" + "HWD"[:n] + "C", "HWD"[:n] + "IO", "N" + "HWD"[:n] + "C")
    C, M = w.shape[-2:]
    outs = []
    for k in range(C):
        for q in range(M):
            outs.append(
                lax.conv_general_dilated(
                    x[..., k : k + 1],
                    w[..., k : k + 1, q : q + 1],
                    (stride,) * n,
                    padding,
                    rhs_dilation=(dilation,) * n,
                    dimension_numbers=dn,
                    precision=HIGHEST,
                )
            )
    return np.concatenate(outs, -1)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(
    "shape,window,M,stride,padding,dilation",
    [
        ((2, 7, 8, 3), (3, 3), 2, 1, "SAME", 1),
        ((1, 9, 4), (3,), 3, 2, "VALID", 2),
        ((1, 4, 5, 4, 2), (2, 3, 2), 1, 1, "SAME", 1),
    ],
)
def test_depthwise_channel_order(shape, window, M, stride, padding, dilation, impl):
    rng = np.random.default_rng(0)
    x = rng.normal(size=shape).astype(np.float32)
    w = rng.normal(size=window + (shape[-1], M)).astype(np.float32)
    out = jax.jit(
        lambda x, w: depthwise_conv(
            x, w, stride=stride, padding=padding, dilation=dilation, implementation=impl
        )
    )(x, w)
    expected = _depthwise_reference(x, w, stride, padding, dilation)
    assert out.shape == expected.shape
    assert relative_error(out, expected) < TOL32


@pytest.mark.parametrize("impl", IMPLS)
def test_separable_is_depthwise_then_pointwise(impl):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 8, 7, 3)).astype(np.float32)
    dk = rng.normal(size=(3, 3, 3, 2)).astype(np.float32)
    pk = rng.normal(size=(6, 5)).astype(np.float32)
    b = rng.normal(size=(5,)).astype(np.float32)
    out = jax.jit(
        lambda x: separable_conv(
            x, dk, pk, stride=2, bias=b, activation=jax.nn.relu, implementation=impl
        )
    )(x)
    mid = _depthwise_reference(x, dk, 2, "SAME", 1)
    expected = jax.nn.relu(np.einsum("nhwc,co->nhwo", mid, pk) + b)
    assert out.shape == (2, 4, 4, 5)
    assert relative_error(out, expected) < TOL32
    # the 4-D pointwise layout of tf.nn.separable_conv2d gives the same result
    out4 = separable_conv(
        x, dk, pk[None, None], stride=2, bias=b, activation=jax.nn.relu, implementation=impl
    )
    assert relative_error(out4, out) < TOL32


def test_separable_cost_against_dense():
    """Separable / dense multiply-adds = M/O + M/K for a K-tap window, stride 1, SAME."""
    for C, O, K, M in [(32, 64, 3, 1), (16, 48, 5, 2)]:
        c = separable_cost((1, 14, 14, C), (K, K), O, depth_multiplier=M)
        hw = 14 * 14
        assert c["dense"]["macs"] == hw * K * K * C * O
        assert c["depthwise"]["macs"] == hw * K * K * C * M
        assert c["pointwise"]["macs"] == hw * C * M * O
        assert c["separable"]["flops"] == 2 * c["separable"]["macs"]
        assert c["dense"]["params"] == K * K * C * O
        assert c["separable"]["params"] == K * K * C * M + C * M * O
        assert c["flops_ratio"] == pytest.approx(M / O + M / (K * K))
        assert c["separable"]["out_shape"] == (1, 14, 14, O)
    d = depthwise_cost((2, 10, 10, 8), (3, 3), stride=2)
    assert d["depthwise"]["out_shape"] == (2, 5, 5, 8)
    assert d["flops_ratio"] == pytest.approx(1 / 8)
    assert d["params_ratio"] == pytest.approx(1 / 8)


def test_depthwise_jit_vmap_grad():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(3, 6, 5, 4)).astype(np.float32)
    w = rng.normal(size=(3, 2, 4, 2)).astype(np.float32)

    def f(x, w, impl="taps"):
        return depthwise_conv(x, w, padding="SAME", implementation=impl)

    assert relative_error(jax.vmap(f, (0, None))(x, w), f(x, w)) < TOL32
    g = jax.jit(jax.grad(lambda w: jnp.sum(jnp.sin(f(x, w)))))(w)
    g_ref = jax.grad(lambda w: jnp.sum(jnp.sin(f(x, w, "xla"))))(w)
    assert relative_error(g, g_ref) < 5 * TOL32


def test_depthwise_errors():
    x = np.ones((1, 5, 5, 3), np.float32)
    with pytest.raises(ValueError, match="input's channels"):
        depthwise_conv(x, np.ones((3, 3, 4, 1), np.float32))
    with pytest.raises(ValueError, match="spatial axes"):
        depthwise_conv(x, np.ones((3, 3, 3, 3, 3, 1), np.float32))
    with pytest.raises(ValueError, match="pointwise_kernel"):
        separable_conv(x, np.ones((3, 3, 3, 2), np.float32), np.ones((3, 4), np.float32))


# ---------------------------------------------------------------------------------------
# Bias and activation fused into the call, on every registered implementation
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("impl", jaxconv.implementations())
def test_bias_and_activation_every_implementation(impl):
    """``conv(x, w, bias=b, activation=relu)`` equals ``relu(conv(x, w) + b)`` for every
    implementation (those registered with ``fuses_epilogue`` apply it themselves, the
    dispatcher applies it for the others)."""
    if impl == "cpu_direct" and cpu_direct.library()[1] is not None:
        pytest.skip(f"cpu_direct unavailable: {cpu_direct.library()[1]}")
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 6, 7, 4)).astype(np.float32)
    w = rng.normal(size=(3, 3, 4, 5)).astype(np.float32)
    b = rng.normal(size=(5,)).astype(np.float32)
    spec = ConvSpec.create(
        x.shape, w.shape, 1, "SAME", None, None, default_dimension_numbers(2), lhs_dtype=x.dtype
    )
    expected = jax.nn.relu(np.asarray(reference_conv(x, w, spec)) + b)
    out = jax.jit(
        lambda x, w, b: jaxconv.conv(x, w, bias=b, activation=jax.nn.relu, implementation=impl)
    )(x, w, b)
    assert relative_error(out, expected) < TOL32
    assert float(jnp.min(out)) == 0.0 and float(jnp.max(out)) > 0.0
    # the same epilogue through depthwise_conv
    wd = rng.normal(size=(3, 3, 4, 2)).astype(np.float32)
    bd = rng.normal(size=(8,)).astype(np.float32)
    outd = depthwise_conv(x, wd, bias=bd, activation=jax.nn.gelu, implementation=impl)
    expected_d = jax.nn.gelu(_depthwise_reference(x, wd, 1, "SAME", 1) + bd)
    assert relative_error(outd, expected_d) < TOL32
