"""Every implementation under jit, vmap, grad, jvp, jacfwd, jacrev and hessian (the
default run takes the implementations in rotation across cases; ``-m slow`` every pair)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from jax.test_util import check_grads
from params import rotated

import jaxconv
from jaxconv._src import autodiff, dispatch
from jaxconv._src.impl import taps, xla
from jaxconv._src.spec import ConvSpec

IMPLEMENTATIONS = ["xla", "im2col", "taps"]

# (lhs NCHW-style shape, rhs OIHW-style shape, kwargs) in lax's default layout
CASES = {
    "strided_dilated": (
        (2, 3, 7, 6),
        (4, 3, 3, 2),
        dict(window_strides=(2, 1), padding=((1, 2), (0, -1)), rhs_dilation=(1, 2)),
    ),
    "grouped": (
        (2, 4, 6, 5),
        (6, 2, 3, 3),
        dict(window_strides=(1, 1), padding="SAME", feature_group_count=2),
    ),
    "depthwise_x2": (
        (1, 3, 6, 6),
        (6, 1, 3, 3),
        dict(window_strides=(2, 2), padding="SAME", feature_group_count=3),
    ),
    "batch_groups": (
        (4, 3, 5, 5),
        (4, 3, 2, 2),
        dict(window_strides=(1, 1), padding="VALID", batch_group_count=2),
    ),
    "lhs_dilated": (
        (1, 2, 4, 5),
        (3, 2, 3, 3),
        dict(window_strides=(1, 1), padding=((2, 1), (1, 2)), lhs_dilation=(2, 3)),
    ),
    "conv1d_nwc": (
        (2, 9, 3),
        (3, 3, 4),
        dict(window_strides=(2,), padding=((2, 0),), dimension_numbers=("NWC", "WIO", "NWC")),
    ),
}


def operands(case, dtype=np.float64, seed=0):
    xs, ws, kw = CASES[case]
    rng = np.random.default_rng(seed)
    return (
        jnp.asarray(rng.standard_normal(xs), dtype),
        jnp.asarray(rng.standard_normal(ws), dtype),
        kw,
    )


def f_impl(impl, kw):
    return jax.jit(lambda x, w: jaxconv.conv_general_dilated(x, w, **kw, implementation=impl))


def f_lax(kw):
    return lambda x, w: lax.conv_general_dilated(x, w, **kw, precision="highest")


def close(a, b, tol=1e-10):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol * max(1.0, float(np.abs(b).max())))


@pytest.mark.parametrize("case,impl", rotated(sorted(CASES), IMPLEMENTATIONS))
def test_grad_jvp_match_lax(case, impl, x64):
    x, w, kw = operands(case)
    f, g = f_impl(impl, kw), f_lax(kw)
    ct = jnp.asarray(np.random.default_rng(5).standard_normal(g(x, w).shape))
    _, vjp_f = jax.vjp(jax.jit(f), x, w)
    _, vjp_g = jax.vjp(g, x, w)
    for a, b in zip(vjp_f(ct), vjp_g(ct)):
        close(a, b)
    tx, tw = jnp.ones_like(x) * 0.3, jnp.asarray(np.random.default_rng(6).standard_normal(w.shape))
    close(jax.jvp(f, (x, w), (tx, tw))[1], jax.jvp(g, (x, w), (tx, tw))[1])


@pytest.mark.parametrize(
    "case,impl",
    rotated(["lhs_dilated", "strided_dilated", "batch_groups"], ["taps", "im2col", "xla"]),
)
def test_check_grads_order_2(case, impl, x64):
    x, w, kw = operands(case)
    check_grads(f_impl(impl, kw), (x, w), order=2, modes=("fwd", "rev"), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize(
    "impl", ["taps", "im2col", pytest.param("xla", marks=pytest.mark.slow)]
)  # xla's are lax's own
def test_jacobians_and_hessian(impl, x64):
    x, w, kw = operands("conv1d_nwc")
    f, g = f_impl(impl, kw), f_lax(kw)
    close(jax.jacfwd(f, argnums=(0, 1))(x, w)[1], jax.jacfwd(g, argnums=(0, 1))(x, w)[1])
    close(jax.jacrev(f)(x, w), jax.jacrev(g)(x, w))

    def loss(fn):
        return lambda x, w: jnp.sum(jnp.tanh(fn(x, w)))

    close(jax.hessian(loss(f), argnums=1)(x, w), jax.hessian(loss(g), argnums=1)(x, w))


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_vmap_over_input_kernel_and_both(impl, x64):
    x, w, kw = operands("grouped")
    f, g = f_impl(impl, kw), f_lax(kw)
    xs = jnp.stack([x, 2 * x, -x])
    ws = jnp.stack([w, w * 0.5, -w])
    close(jax.vmap(f, (0, None))(xs, w), jnp.stack([g(xi, w) for xi in xs]))
    close(jax.vmap(f, (None, 0))(x, ws), jnp.stack([g(x, wi) for wi in ws]))
    close(jax.jit(jax.vmap(f))(xs, ws), jnp.stack([g(xi, wi) for xi, wi in zip(xs, ws)]))
    # vmap of the gradient too
    grad = jax.vmap(jax.grad(lambda x, w: jnp.sum(f(x, w) ** 2)), (0, None))
    grad_ref = jax.vmap(jax.grad(lambda x, w: jnp.sum(g(x, w) ** 2)), (0, None))
    close(grad(xs, w), grad_ref(xs, w))


@pytest.mark.parametrize("case,impl", rotated(sorted(CASES), ["taps", "xla"]))
def test_transposed_specs_give_lax_gradients(case, impl, x64):
    """The gradient convolutions derived beside the spec reproduce lax's own VJP."""
    impl_fn = {"taps": taps.conv, "xla": xla.conv}[impl]
    x, w, kw = operands(case)
    dn = kw.get("dimension_numbers")
    spec = ConvSpec.create(
        x.shape,
        w.shape,
        kw["window_strides"],
        kw["padding"],
        kw.get("lhs_dilation"),
        kw.get("rhs_dilation"),
        dn,
        kw.get("feature_group_count", 1),
        kw.get("batch_group_count", 1),
        lhs_dtype=x.dtype,
    )
    f = autodiff.with_transposed_vjp(impl_fn)
    ct = jnp.asarray(np.random.default_rng(3).standard_normal(spec.out_shape))
    vjp_f = jax.jit(lambda a, b, c: jax.vjp(lambda a, b: f(a, b, spec), a, b)[1](c))
    _, vjp_g = jax.vjp(f_lax(kw), x, w)
    for a, b in zip(vjp_f(x, w, ct), vjp_g(ct)):
        close(a, b)
    # gradient of gradient through the same implementation
    gg = jax.jit(jax.grad(lambda a: jnp.sum(jax.grad(lambda b: jnp.sum(f(a, b, spec) ** 2))(w))))(x)
    gg_ref = jax.grad(lambda a: jnp.sum(jax.grad(lambda b: jnp.sum(f_lax(kw)(a, b) ** 2))(w)))(x)
    close(gg, gg_ref)


def test_boundary_mode_gradients(x64):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((1, 6, 5, 2)))
    w = jnp.asarray(rng.standard_normal((3, 3, 2, 2)))
    for mode in ["circular", "reflect", "symmetric", "replicate"]:
        f = lambda x, impl: jnp.sum(
            jnp.sin(jaxconv.conv(x, w, padding_mode=mode, implementation=impl))
        )
        ref = jax.grad(f)(x, "xla")
        for impl in ["im2col", "taps"]:
            close(jax.grad(f)(x, impl), ref)


def test_dispatch_auto_works_under_jit_and_grad(x64):
    x, w, kw = operands("grouped")
    f = jax.jit(lambda x, w: jnp.sum(jaxconv.conv_general_dilated(x, w, **kw) ** 2))
    g = lambda x, w: jnp.sum(f_lax(kw)(x, w) ** 2)
    close(jax.grad(f, (0, 1))(x, w)[1], jax.grad(g, (0, 1))(x, w)[1])
    spec = ConvSpec.create(
        x.shape, w.shape, (1, 1), "SAME", feature_group_count=2, lhs_dtype=x.dtype
    )
    assert dispatch.auto_order(spec, "cpu")[:2] == ["cpu_direct", "taps"]
    assert dispatch.select(spec).name == "taps"  # float64: cpu_direct declines
