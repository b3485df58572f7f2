"""jaxconv.nnx layers against Flax's own NNX layers: the same parameters from the same
Rngs, state that loads both ways with the same outputs, over products of
configurations; transformations (nnx.jit, nnx.grad, vmap over a batch, nnx.vmap over a
stack of models, nnx.scan over repeated layers)."""

from __future__ import annotations

import flax.linen as fnn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from params import rotated
from test_flax_linen import (
    CONV_CASES,
    DEPTHWISE_CASES,
    IMPLS,
    POOL_CASES,
    TOL32,
    TRANSPOSE_CASES,
    assert_close,
    rand,
)

import jaxconv.nnx as jnnx
from jaxconv._src.reference import tolerance


def rotated_half(cases):
    """As ``rotated``, with every second case entirely under ``slow``: the layer bodies
    are the linen modules' (tested on every case there); here the NNX plumbing is."""
    params = rotated(cases, IMPLS)
    out = []
    for p in params:
        case = p.values[0]
        if cases.index(case) % 2:
            p = pytest.param(*p.values, marks=(pytest.mark.slow,), id=p.id)
        out.append(p)
    return out


def params_of(module):
    return nnx.to_pure_dict(nnx.state(module, nnx.Param))


def assert_same_params(a, b):
    pa, pb = params_of(a), params_of(b)
    assert jax.tree.structure(pa) == jax.tree.structure(pb)
    for x, y in zip(jax.tree.leaves(pa), jax.tree.leaves(pb)):
        assert x.shape == y.shape and x.dtype == y.dtype
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def perturbed_state(module, seed):
    state = nnx.state(module, nnx.Param)
    return jax.tree.map(lambda p: p + 0.1 * rand(p.shape, seed, p.dtype), state)


def check_drop_in(ours, theirs, x, tol=TOL32):
    """Same parameters from the same Rngs; each module's state gives the same output
    when loaded into the other."""
    assert_same_params(ours, theirs)
    state = perturbed_state(theirs, 7)
    nnx.update(theirs, state)
    nnx.update(ours, state)
    assert_close(ours(x), theirs(x), tol)
    state = perturbed_state(ours, 8)
    nnx.update(ours, state)
    nnx.update(theirs, state)
    assert_close(ours(x), theirs(x), tol)


@pytest.mark.parametrize("case,impl", rotated_half(list(CONV_CASES)))
def test_conv_drop_in(case, impl):
    k, s, p, ld, kd, g, shape = CONV_CASES[case]
    use_bias = list(CONV_CASES).index(case) % 4 != 2
    kw = dict(
        padding=p, input_dilation=ld, kernel_dilation=kd, feature_group_count=g, use_bias=use_bias
    )
    C = shape[-1]
    ours = jnnx.Conv(C, 8, k, s, **kw, implementation=impl, rngs=nnx.Rngs(3))
    theirs = nnx.Conv(C, 8, k, s, **kw, rngs=nnx.Rngs(3))
    check_drop_in(ours, theirs, rand(shape))


@pytest.mark.parametrize(
    "dtype,param_dtype,impl",
    [
        (jnp.bfloat16, jnp.float32, "im2col"),
        (jnp.float16, jnp.float16, "taps"),
    ],
)
def test_conv_dtypes_mask_preferred_element_type(dtype, param_dtype, impl):
    x = rand((2, 7, 7, 3))
    mask = jnp.asarray(np.random.default_rng(0).random((3, 3, 3, 4)) > 0.4)
    kw = dict(
        mask=mask,
        dtype=dtype,
        param_dtype=param_dtype,
        precision="highest",
        kernel_init=nnx.initializers.normal(0.3),
        preferred_element_type=jnp.float32,
    )
    ours = jnnx.Conv(3, 4, (3, 3), **kw, implementation=impl, rngs=nnx.Rngs(0))
    theirs = nnx.Conv(3, 4, (3, 3), **kw, rngs=nnx.Rngs(0))
    check_drop_in(ours, theirs, x, tol=tolerance(dtype))


def test_conv_errors():
    with pytest.raises(ValueError, match="feature_group_count"):
        jnnx.Conv(3, 4, (3, 3), feature_group_count=2, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="not both"):
        jnnx.Conv(
            3,
            4,
            (3, 3),
            implementation="taps",
            conv_general_dilated=jax.lax.conv_general_dilated,
            rngs=nnx.Rngs(0),
        )
    layer = jnnx.Conv(3, 4, (3, 3), implementation="nope", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="implementation"):
        layer(rand((1, 5, 5, 3)))


@pytest.mark.parametrize("case,impl", rotated_half(list(TRANSPOSE_CASES)))
def test_conv_transpose_drop_in(case, impl):
    k, s, p, kd, tk, shape = TRANSPOSE_CASES[case]
    kw = dict(
        padding=p,
        kernel_dilation=kd,
        transpose_kernel=tk,
        use_bias=list(TRANSPOSE_CASES).index(case) % 3 != 1,
    )
    C = shape[-1]
    ours = jnnx.ConvTranspose(C, 4, k, s, **kw, implementation=impl, rngs=nnx.Rngs(2))
    theirs = nnx.ConvTranspose(C, 4, k, s, **kw, rngs=nnx.Rngs(2))
    check_drop_in(ours, theirs, rand(shape))


def test_conv_transpose_torch_convention_and_groups():
    x = rand((2, 5, 5, 4))
    layer = jnnx.ConvTranspose(
        4,
        6,
        (3, 3),
        (2, 2),
        padding=1,
        output_padding=1,
        transpose_kernel=True,
        padding_convention="torch",
        feature_group_count=2,
        rngs=nnx.Rngs(0),
    )
    assert layer.kernel.shape == (3, 3, 3, 4)
    y = layer(x)
    assert y.shape == (2, 10, 10, 6)  # (5 - 1) * 2 - 2 + 2 + 1 + 1
    parts = []
    for g in range(2):
        flax_g = nnx.ConvTranspose(
            2,
            3,
            (3, 3),
            (2, 2),
            padding=[(1, 2)] * 2,
            transpose_kernel=True,
            use_bias=False,
            rngs=nnx.Rngs(0),
        )
        flax_g.kernel[...] = layer.kernel[..., 2 * g : 2 * g + 2]
        parts.append(flax_g(x[..., 2 * g : 2 * g + 2]))
    assert_close(y, jnp.concatenate(parts, -1) + layer.bias[...])


@pytest.mark.parametrize("case,impl", rotated_half(list(DEPTHWISE_CASES)))
def test_depthwise_is_flax_grouped_conv(case, impl):
    k, m, s, p, kd, shape = DEPTHWISE_CASES[case]
    C = shape[-1]
    ours = jnnx.DepthwiseConv(
        C, k, m, s, padding=p, kernel_dilation=kd, implementation=impl, rngs=nnx.Rngs(4)
    )
    theirs = nnx.Conv(
        C, C * m, k, s, padding=p, kernel_dilation=kd, feature_group_count=C, rngs=nnx.Rngs(4)
    )
    check_drop_in(ours, theirs, rand(shape))


@pytest.mark.parametrize("case,impl", rotated(["same", "mult2-s2", "reflect-dil"], IMPLS))
def test_separable_is_flax_depthwise_then_pointwise(case, impl):
    k, m, s, p, kd, shape = DEPTHWISE_CASES[case]
    C, n = shape[-1], len(k)
    ours = jnnx.SeparableConv(
        C, 5, k, m, s, padding=p, kernel_dilation=kd, implementation=impl, rngs=nnx.Rngs(0)
    )
    state = perturbed_state(ours, 3)
    nnx.update(ours, state)
    dw = nnx.Conv(
        C,
        C * m,
        k,
        s,
        padding=p,
        kernel_dilation=kd,
        feature_group_count=C,
        use_bias=False,
        rngs=nnx.Rngs(0),
    )
    pw = nnx.Conv(C * m, 5, (1,) * n, rngs=nnx.Rngs(0))
    dw.kernel[...] = ours.depthwise_kernel[...]
    pw.kernel[...] = ours.pointwise_kernel[...]
    pw.bias[...] = ours.bias[...]
    x = rand(shape)
    assert_close(ours(x), pw(dw(x)))


@pytest.mark.parametrize("case,impl", rotated_half(list(POOL_CASES)))
def test_pooling_is_flax_pooling(case, impl):
    w, s, p, shape = POOL_CASES[case]
    x = rand(shape)
    assert_close(jnnx.MaxPool(w, s, p, implementation=impl)(x), nnx.max_pool(x, w, s, p))
    assert_close(
        jnnx.AvgPool(w, s, p, False, implementation=impl)(x),
        nnx.avg_pool(x, w, s, p, count_include_pad=False),
    )
    expected = (fnn.avg_pool(x**2, w, s, p) * np.prod(w)) ** 0.5
    assert_close(jnnx.LpPool(2.0, w, s, p, implementation=impl)(x), expected, tol=1e-5)
    if len(shape) == len(w) + 2:
        axes = tuple(range(1, len(w) + 1))
        assert_close(jnnx.GlobalAvgPool(implementation=impl)(x), x.mean(axes))
        assert_close(jnnx.GlobalMaxPool(implementation=impl)(x), x.max(axes))


# ----------------------------------------------------------------------------- transforms


@pytest.mark.parametrize("impl", ["taps", "im2col"])
def test_jit_grad_and_vmap_over_a_batch(impl):
    x = rand((4, 7, 7, 3))
    ours = jnnx.Conv(3, 5, (3, 3), 2, padding="REFLECT", implementation=impl, rngs=nnx.Rngs(0))
    theirs = nnx.Conv(3, 5, (3, 3), 2, padding="REFLECT", rngs=nnx.Rngs(0))

    def loss(m, x):
        return jnp.sum(jnp.tanh(m(x)) ** 2)

    assert_close(nnx.jit(lambda m, x: m(x))(ours, x), theirs(x))
    g_ours = nnx.jit(nnx.grad(loss))(ours, x)
    g_theirs = nnx.grad(loss)(theirs, x)
    for a, b in zip(jax.tree.leaves(g_ours), jax.tree.leaves(g_theirs)):
        assert_close(a, b, 1e-4)
    per_example = nnx.vmap(lambda m, xi: m(xi), in_axes=(None, 0))(ours, x)
    assert_close(per_example, theirs(x))
    graphdef, state = nnx.split(ours)
    via_jax = jax.vmap(lambda xi: nnx.merge(graphdef, state)(xi))(x)
    assert_close(via_jax, theirs(x))


def _stack(make, n=3):
    @nnx.split_rngs(splits=n)
    @nnx.vmap(in_axes=(0,), out_axes=0)
    def create(rngs):
        return make(rngs)

    return create(nnx.Rngs(0))


@pytest.mark.parametrize("impl", ["taps"])
def test_nnx_vmap_over_a_stack_of_models(impl):
    ours = _stack(lambda r: jnnx.Conv(2, 4, (3, 3), implementation=impl, rngs=r))
    theirs = _stack(lambda r: nnx.Conv(2, 4, (3, 3), rngs=r))
    assert ours.kernel.shape == (3, 3, 3, 2, 4)
    assert_same_params(ours, theirs)
    xs = rand((3, 2, 6, 6, 2))  # 3 models, each on its own batch of 2
    forward = nnx.vmap(lambda m, x: m(x), in_axes=(0, 0))
    y = forward(ours, xs)
    assert_close(y, forward(theirs, xs))
    single = nnx.Conv(2, 4, (3, 3), rngs=nnx.Rngs(1))
    for i in range(3):
        single.kernel[...] = ours.kernel[i]
        single.bias[...] = ours.bias[i]
        assert_close(y[i], single(xs[i]))


@pytest.mark.parametrize("impl", ["im2col"])
def test_nnx_scan_over_repeated_layers(impl):
    ours = _stack(
        lambda r: jnnx.Conv(3, 3, (3, 3), padding="CIRCULAR", implementation=impl, rngs=r), n=4
    )
    theirs = _stack(lambda r: nnx.Conv(3, 3, (3, 3), padding="CIRCULAR", rngs=r), n=4)

    @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
    def run(x, layer):
        return jnp.tanh(layer(x))

    x = rand((2, 6, 6, 3))
    y = nnx.jit(run)(x, ours)
    assert_close(y, run(x, theirs), 1e-5)
    expected = x
    single = nnx.Conv(3, 3, (3, 3), padding="CIRCULAR", rngs=nnx.Rngs(1))
    for i in range(4):
        single.kernel[...] = ours.kernel[i]
        single.bias[...] = ours.bias[i]
        expected = jnp.tanh(single(expected))
    assert_close(y, expected, 1e-5)
