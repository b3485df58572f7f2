"""jaxconv.nn (flax.linen) layers against Flax's own: same parameter trees, trees that
load both ways with the same outputs, over products of configurations; transformations
(jit, grad, vmap of apply, nn.vmap, nn.scan); implementation passed down to dispatch."""

from __future__ import annotations

import flax.linen as fnn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from params import rotated

import jaxconv.nn as jnn
from jaxconv._src import dispatch
from jaxconv._src.impl import xla as xla_impl
from jaxconv._src.reference import relative_error, tolerance

IMPLS = ["xla", "taps", "im2col"]
TOL32 = tolerance(np.float32)


def rand(shape, seed=0, dtype=jnp.float32):
    return jax.random.normal(jax.random.key(seed), shape, dtype)


def assert_same_tree(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert x.shape == y.shape and x.dtype == y.dtype
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def assert_close(actual, expected, tol=TOL32):
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    assert relative_error(actual, expected) <= tol, relative_error(actual, expected)


def check_drop_in(ours, theirs, x, tol=TOL32):
    """Same tree from init; each module's tree gives the same output in the other."""
    v_ours = ours.init(jax.random.key(1), x)
    v_theirs = theirs.init(jax.random.key(1), x)
    assert_same_tree(v_ours, v_theirs)
    # perturb the bias so a dropped bias would show
    v_theirs = jax.tree.map(lambda p: p + 0.1 * rand(p.shape, 7, p.dtype), v_theirs)
    assert_close(ours.apply(v_theirs, x), theirs.apply(v_theirs, x), tol)
    v_ours = jax.tree.map(lambda p: p - 0.1 * rand(p.shape, 8, p.dtype), v_ours)
    assert_close(ours.apply(v_ours, x), theirs.apply(v_ours, x), tol)


# ----------------------------------------------------------------------------- Conv

# (kernel_size, strides, padding, input_dilation, kernel_dilation, groups, x shape)
CONV_CASES = {
    "same": ((3, 3), 1, "SAME", 1, 1, 1, (2, 9, 8, 4)),
    "valid-s2": ((3, 3), 2, "VALID", 1, 1, 1, (2, 9, 8, 4)),
    "circular-s2": ((3, 3), 2, "CIRCULAR", 1, 1, 2, (2, 9, 8, 4)),
    "reflect-dil": ((3, 2), 1, "REFLECT", 1, (2, 1), 1, (2, 9, 8, 4)),
    "causal-1d": ((3,), 1, "CAUSAL", 1, 2, 1, (2, 12, 4)),
    "int-pad": ((3, 3), (2, 1), 1, 1, 1, 4, (2, 9, 8, 4)),
    "pairs": ((2, 3), 1, [(1, 2), (0, 1)], 1, 1, 1, (2, 9, 8, 4)),
    "input-dilation": ((3, 3), 1, [(1, 1), (2, 0)], 2, 1, 2, (2, 5, 6, 4)),
    "unbatched": ((3, 3), 1, "SAME", 1, 1, 1, (9, 8, 4)),
    "two-batch-dims": ((3,), 2, "SAME", 1, 1, 1, (2, 3, 10, 4)),
    "3d": ((2, 3, 2), 1, "SAME", 1, 1, 2, (1, 5, 6, 4, 4)),
}


@pytest.mark.parametrize("case,impl", rotated(list(CONV_CASES), IMPLS))
def test_conv_drop_in(case, impl):
    k, s, p, ld, kd, g, shape = CONV_CASES[case]
    use_bias = list(CONV_CASES).index(case) % 4 != 1
    kw = dict(
        features=8,
        kernel_size=k,
        strides=s,
        padding=p,
        input_dilation=ld,
        kernel_dilation=kd,
        feature_group_count=g,
        use_bias=use_bias,
    )
    check_drop_in(jnn.Conv(**kw, implementation=impl), fnn.Conv(**kw), rand(shape))


@pytest.mark.parametrize("impl", ["taps"])
def test_conv_mask_precision_inits(impl):
    x = rand((2, 7, 7, 3))
    mask = jnp.asarray(np.random.default_rng(0).random((3, 3, 3, 5)) > 0.4)
    kw = dict(
        features=5,
        kernel_size=(3, 3),
        mask=mask,
        precision="highest",
        kernel_init=fnn.initializers.normal(0.3),
        bias_init=fnn.initializers.uniform(0.5),
    )
    check_drop_in(jnn.Conv(**kw, implementation=impl), fnn.Conv(**kw), x)


@pytest.mark.parametrize(
    "dtype,param_dtype,impl",
    [
        (jnp.bfloat16, jnp.float32, "taps"),
        (None, jnp.bfloat16, "im2col"),
        (jnp.float16, jnp.float16, "xla"),
    ],
)
def test_conv_dtypes(dtype, param_dtype, impl):
    x = rand((2, 8, 8, 3))
    kw = dict(features=4, kernel_size=(3, 3), dtype=dtype, param_dtype=param_dtype)
    out_dtype = jnp.dtype(dtype or param_dtype)
    check_drop_in(jnn.Conv(**kw, implementation=impl), fnn.Conv(**kw), x, tol=tolerance(out_dtype))


def test_conv_errors():
    x = rand((1, 8, 8, 3))
    with pytest.raises(ValueError, match="Causal padding"):
        jnn.Conv(4, (3, 3), padding="CAUSAL").init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="implementation"):
        jnn.Conv(4, (3, 3), implementation="nope").init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="not both"):
        jnn.Conv(
            4, (3, 3), implementation="taps", conv_general_dilated=jax.lax.conv_general_dilated
        )
    with pytest.raises(ValueError, match="feature_group_count"):
        jnn.Conv(4, (3, 3), feature_group_count=2).init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="spatial"):
        jnn.Conv(4, (3, 3)).init(jax.random.key(0), x[0, 0])


def test_conv_own_conv_general_dilated_is_used():
    calls = []

    def mine(*args, **kwargs):
        calls.append(1)
        return jax.lax.conv_general_dilated(*args, **kwargs)

    x = rand((1, 6, 6, 2))
    layer = jnn.Conv(3, (3, 3), conv_general_dilated=mine)
    v = layer.init(jax.random.key(0), x)
    assert_close(layer.apply(v, x), fnn.Conv(3, (3, 3)).apply(v, x))
    assert calls


# ----------------------------------------------------------------------------- ConvTranspose

# (kernel_size, strides, padding, kernel_dilation, transpose_kernel, x shape)
TRANSPOSE_CASES = {
    "same-s2": ((3, 3), (2, 2), "SAME", None, False, (2, 5, 6, 3)),
    "same-s2-tk": ((4, 3), (2, 2), "SAME", None, True, (2, 5, 6, 3)),
    "valid-s3": ((3, 3), (3, 2), "VALID", (1, 2), False, (2, 4, 5, 3)),
    "circular-tk": ((6, 6), (2, 2), "CIRCULAR", None, True, (2, 7, 5, 3)),
    "circular": ((3, 4), (2, 1), "CIRCULAR", None, False, (2, 5, 6, 3)),
    "pairs": ((3, 3), (2, 2), [(2, 1), (0, 3)], None, False, (2, 5, 6, 3)),
    "int-pad-1d": ((5,), (2,), 2, 2, True, (2, 7, 3)),
    "unbatched": ((3, 3), (1, 1), "SAME", None, False, (5, 6, 3)),
    "two-batch-dims": ((3,), None, "VALID", None, False, (2, 3, 7, 3)),
}


@pytest.mark.parametrize("case,impl", rotated(list(TRANSPOSE_CASES), IMPLS))
def test_conv_transpose_drop_in(case, impl):
    k, s, p, kd, tk, shape = TRANSPOSE_CASES[case]
    use_bias = list(TRANSPOSE_CASES).index(case) % 4 != 1
    kw = dict(
        features=4,
        kernel_size=k,
        strides=s,
        padding=p,
        kernel_dilation=kd,
        transpose_kernel=tk,
        use_bias=use_bias,
    )
    check_drop_in(
        jnn.ConvTranspose(**kw, implementation=impl), fnn.ConvTranspose(**kw), rand(shape)
    )


def test_conv_transpose_mask_dtype():
    x = rand((2, 5, 5, 3))
    mask = jnp.asarray(np.random.default_rng(1).random((3, 3, 3, 4)) > 0.3)
    kw = dict(
        features=4,
        kernel_size=(3, 3),
        strides=(2, 2),
        mask=mask,
        dtype=jnp.bfloat16,
        preferred_element_type=jnp.float32,
    )
    check_drop_in(
        jnn.ConvTranspose(**kw, implementation="taps"),
        fnn.ConvTranspose(**kw),
        x,
        tol=tolerance(jnp.bfloat16),
    )


@pytest.mark.parametrize("tk", [False, True])
def test_conv_transpose_groups_is_per_group_flax(tk):
    G, C, O = 2, 4, 6
    x = rand((2, 5, 6, C))
    layer = jnn.ConvTranspose(
        O,
        (3, 3),
        (2, 2),
        padding="SAME",
        transpose_kernel=tk,
        feature_group_count=G,
        implementation="taps",
    )
    v = layer.init(jax.random.key(0), x)
    k = v["params"]["kernel"]
    assert k.shape == ((3, 3, O // G, C) if tk else (3, 3, C // G, O))
    parts = []
    for g in range(G):
        xg = x[..., g * C // G : (g + 1) * C // G]
        kg = k[..., g * C // G : (g + 1) * C // G] if tk else k[..., g * O // G : (g + 1) * O // G]
        flax_g = fnn.ConvTranspose(
            O // G, (3, 3), (2, 2), padding="SAME", transpose_kernel=tk, use_bias=False
        )
        parts.append(flax_g.apply({"params": {"kernel": kg}}, xg))
    expected = jnp.concatenate(parts, -1) + v["params"]["bias"]
    assert_close(layer.apply(v, x), expected)


@pytest.mark.parametrize(
    "stride,pad,out_pad,dil", [(2, 1, 1, 1), (3, 0, 2, 1), (2, 2, 0, 2), (1, 1, 0, 1)]
)
def test_conv_transpose_torch_convention(stride, pad, out_pad, dil):
    """PyTorch's meaning: out = (in - 1) s - 2 p + d (k - 1) + output_padding + 1, the
    same numbers as Flax with the equivalent explicit pads of the dilated input."""
    k, n_in = 3, 6
    x = rand((2, n_in, n_in, 3))
    layer = jnn.ConvTranspose(
        5,
        (k, k),
        (stride, stride),
        padding=pad,
        output_padding=out_pad,
        kernel_dilation=(dil, dil),
        transpose_kernel=True,
        padding_convention="torch",
    )
    v = layer.init(jax.random.key(0), x)
    y = layer.apply(v, x)
    size = (n_in - 1) * stride - 2 * pad + dil * (k - 1) + out_pad + 1
    assert y.shape == (2, size, size, 5)
    e = dil * (k - 1) - pad
    flax_layer = fnn.ConvTranspose(
        5,
        (k, k),
        (stride, stride),
        padding=[(e, e + out_pad)] * 2,
        kernel_dilation=(dil, dil),
        transpose_kernel=True,
    )
    assert_close(y, flax_layer.apply(v, x))


def test_conv_transpose_errors():
    x = rand((1, 5, 5, 2))
    with pytest.raises(ValueError, match="padding_convention"):
        jnn.ConvTranspose(3, (3, 3), padding_convention="keras").init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="padding"):
        jnn.ConvTranspose(3, (3, 3), padding="SAME", padding_convention="torch").init(
            jax.random.key(0), x
        )
    with pytest.raises(ValueError, match="output_padding"):
        jnn.ConvTranspose(3, (3, 3), (2, 2), padding="CIRCULAR", output_padding=1).init(
            jax.random.key(0), x
        )
    with pytest.raises(ValueError, match="feature_group_count"):
        jnn.ConvTranspose(3, (3, 3), feature_group_count=2).init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="'SAME', 'VALID', 'CIRCULAR'"):
        jnn.ConvTranspose(3, (3, 3), padding="REFLECT").init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="int >= 0"):
        jnn.ConvTranspose(3, (3, 3), padding=[(1, 1), (0, 0)], padding_convention="torch").init(
            jax.random.key(0), x
        )


def test_depthwise_errors():
    x = rand((1, 6, 6, 2))
    with pytest.raises(ValueError, match="CAUSAL"):
        jnn.DepthwiseConv((3, 3), padding="CAUSAL").init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="depth_multiplier"):
        jnn.DepthwiseConv((3, 3), 0).init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="mask"):
        jnn.DepthwiseConv((3, 3), mask=jnp.ones((3, 3, 2, 1))).init(jax.random.key(0), x)


# ----------------------------------------------------------------------------- depthwise

# (kernel_size, depth_multiplier, strides, padding, kernel_dilation, x shape)
DEPTHWISE_CASES = {
    "same": ((3, 3), 1, 1, "SAME", 1, (2, 8, 9, 4)),
    "mult2-s2": ((3, 3), 2, 2, "VALID", 1, (2, 8, 9, 4)),
    "circular": ((3, 2), 3, (2, 1), "CIRCULAR", 1, (2, 8, 9, 4)),
    "reflect-dil": ((3, 3), 1, 1, "REFLECT", (1, 2), (2, 8, 9, 4)),
    "causal-1d": ((4,), 2, 1, "CAUSAL", 2, (2, 11, 3)),
    "pairs-unbatched": ((2, 3), 1, 1, [(0, 2), (1, 1)], 1, (8, 9, 4)),
    "two-batch-dims": ((3,), 1, 1, 1, 1, (2, 3, 10, 4)),
}


@pytest.mark.parametrize("case,impl", rotated(list(DEPTHWISE_CASES), IMPLS))
def test_depthwise_is_flax_grouped_conv(case, impl):
    k, m, s, p, kd, shape = DEPTHWISE_CASES[case]
    C = shape[-1]
    kw = dict(kernel_size=k, strides=s, padding=p, kernel_dilation=kd)
    check_drop_in(
        jnn.DepthwiseConv(depth_multiplier=m, **kw, implementation=impl),
        fnn.Conv(features=C * m, feature_group_count=C, **kw),
        rand(shape),
    )


@pytest.mark.parametrize(
    "case,impl", rotated(["same", "mult2-s2", "circular", "causal-1d", "two-batch-dims"], IMPLS)
)
def test_separable_is_flax_depthwise_then_pointwise(case, impl):
    k, m, s, p, kd, shape = DEPTHWISE_CASES[case]
    C, n = shape[-1], len(k)

    class FlaxSeparable(fnn.Module):
        @fnn.compact
        def __call__(self, x):
            x = fnn.Conv(
                C * m,
                k,
                s,
                p,
                kernel_dilation=kd,
                feature_group_count=C,
                use_bias=False,
                name="depthwise",
            )(x)
            return fnn.Conv(5, (1,) * n, name="pointwise")(x)

    x = rand(shape)
    ours = jnn.SeparableConv(5, k, m, s, p, kd, implementation=impl)
    v = ours.init(jax.random.key(0), x)["params"]
    assert v["depthwise_kernel"].shape == tuple(k) + (1, C * m)
    assert v["pointwise_kernel"].shape == (1,) * n + (C * m, 5)
    v = jax.tree.map(lambda a: a + 0.1 * rand(a.shape, 3), v)
    flax_params = {
        "depthwise": {"kernel": v["depthwise_kernel"]},
        "pointwise": {"kernel": v["pointwise_kernel"], "bias": v["bias"]},
    }
    assert_close(ours.apply({"params": v}, x), FlaxSeparable().apply({"params": flax_params}, x))


# ----------------------------------------------------------------------------- pooling

POOL_CASES = {
    "2x2-s2": ((2, 2), (2, 2), "VALID", (2, 8, 9, 3)),
    "3x3-same": ((3, 3), (2, 2), "SAME", (2, 8, 9, 3)),
    "pairs": ((3, 2), (1, 2), [(1, 1), (0, 1)], (2, 8, 9, 3)),
    "1d-unbatched": ((3,), None, "SAME", (10, 3)),
    "two-batch-dims": ((2,), (2,), "VALID", (2, 3, 10, 3)),
}


@pytest.mark.parametrize("case,impl", rotated(list(POOL_CASES), IMPLS))
def test_pooling_is_flax_pooling(case, impl):
    w, s, p, shape = POOL_CASES[case]
    x = rand(shape)
    assert_close(jnn.MaxPool(w, s, p, implementation=impl).apply({}, x), fnn.max_pool(x, w, s, p))
    for cip in (True, False):
        assert_close(
            jnn.AvgPool(w, s, p, cip, implementation=impl).apply({}, x),
            fnn.avg_pool(x, w, s, p, count_include_pad=cip),
        )
    for norm in (2.0, 3.0):
        expected = (fnn.avg_pool(jnp.abs(x) ** norm, w, s, p) * np.prod(w)) ** (1 / norm)
        assert_close(
            jnn.LpPool(norm, w, s, p, implementation=impl).apply({}, x), expected, tol=1e-5
        )


@pytest.mark.parametrize("impl", ["taps", "im2col"])
def test_global_pooling(impl):
    x = rand((2, 5, 6, 3))
    assert_close(jnn.GlobalAvgPool(implementation=impl).apply({}, x), x.mean((1, 2)))
    assert_close(jnn.GlobalMaxPool(implementation=impl).apply({}, x), x.max((1, 2)))
    assert jnn.GlobalAvgPool(keepdims=True).apply({}, x).shape == (2, 1, 1, 3)


# ----------------------------------------------------------------------------- dispatch


@pytest.fixture
def spy(monkeypatch):
    """A registered implementation "spy" that records its specs and computes as xla."""
    seen = []

    def conv(lhs, rhs, spec):
        seen.append(spec)
        return xla_impl.conv(lhs, rhs, spec)

    monkeypatch.setitem(
        dispatch._REGISTRY, "spy", dispatch.Implementation("spy", conv, xla_impl.supports)
    )
    return seen


@pytest.mark.parametrize(
    "make",
    [
        lambda: jnn.Conv(4, (3, 3), implementation="spy"),
        lambda: jnn.ConvTranspose(4, (3, 3), (2, 2), implementation="spy"),
        lambda: jnn.DepthwiseConv((3, 3), 2, implementation="spy"),
        lambda: jnn.SeparableConv(4, (3, 3), implementation="spy"),
    ],
    ids=["Conv", "ConvTranspose", "DepthwiseConv", "SeparableConv"],
)
def test_implementation_reaches_dispatch(spy, make):
    x = rand((2, 6, 6, 3))
    layer = make()
    v = layer.init(jax.random.key(0), x)
    spy.clear()
    jax.jit(layer.apply)(v, x)
    assert spy and all(s.lhs_dtype == np.float32 for s in spy)


@pytest.mark.parametrize("impl", IMPLS)
def test_pooling_grad_under_jit_is_flax(impl):
    x = rand((2, 6, 7, 3))

    def loss(pool):
        return lambda x: jnp.sum(jnp.sin(pool(x)))

    layers = [
        (
            jnn.MaxPool((2, 2), (2, 2), "SAME", implementation=impl),
            lambda x: fnn.max_pool(x, (2, 2), (2, 2), "SAME"),
        ),
        (
            jnn.AvgPool((3, 3), (2, 1), "SAME", implementation=impl),
            lambda x: fnn.avg_pool(x, (3, 3), (2, 1), "SAME"),
        ),
    ]
    for ours, theirs in layers:
        g = jax.jit(jax.grad(loss(lambda x: ours.apply({}, x))))(x)
        assert_close(g, jax.grad(loss(theirs))(x))


def test_pooling_implementation_is_checked():
    x = rand((1, 6, 6, 2))
    with pytest.raises(ValueError, match="implementation"):
        jnn.MaxPool((2, 2), implementation="nope").apply({}, x)


# ----------------------------------------------------------------------------- transforms


@pytest.mark.parametrize("impl", ["taps", "im2col"])
def test_jit_grad_vmap_of_apply(impl):
    x = rand((4, 7, 7, 3))
    ours = jnn.Conv(5, (3, 3), strides=2, padding="CIRCULAR", implementation=impl)
    theirs = fnn.Conv(5, (3, 3), strides=2, padding="CIRCULAR")
    v = theirs.init(jax.random.key(0), x)

    def loss(module):
        return lambda v, x: jnp.sum(jnp.tanh(module.apply(v, x)) ** 2)

    assert_close(jax.jit(ours.apply)(v, x), theirs.apply(v, x))
    g_ours = jax.jit(jax.grad(loss(ours), argnums=(0, 1)))(v, x)
    g_theirs = jax.grad(loss(theirs), argnums=(0, 1))(v, x)
    for a, b in zip(jax.tree.leaves(g_ours), jax.tree.leaves(g_theirs)):
        assert_close(a, b, 1e-4)
    # vmap of apply over a batch of (unbatched) examples
    per_example = jax.vmap(lambda xi: ours.apply(v, xi))(x)
    assert_close(per_example, theirs.apply(v, x))


@pytest.mark.parametrize("impl", ["taps"])
def test_nn_vmap_over_a_stack_of_models(impl):
    def stack(cls, **kw):
        return fnn.vmap(
            cls, variable_axes={"params": 0}, split_rngs={"params": True}, in_axes=0, out_axes=0
        )(features=4, kernel_size=(3, 3), **kw)

    xs = rand((3, 2, 6, 6, 2))  # 3 models, each on its own batch of 2
    ours, theirs = stack(jnn.Conv, implementation=impl), stack(fnn.Conv)
    check_drop_in(ours, theirs, xs)
    v = ours.init(jax.random.key(0), xs)
    assert v["params"]["kernel"].shape == (3, 3, 3, 2, 4)
    y = ours.apply(v, xs)
    for i in range(3):
        vi = jax.tree.map(lambda p: p[i], v)
        assert_close(y[i], fnn.Conv(4, (3, 3)).apply(vi, xs[i]))


class Block(fnn.Module):
    conv: type = fnn.Conv
    kw: tuple = ()

    @fnn.compact
    def __call__(self, x, _):
        return jnp.tanh(self.conv(x.shape[-1], (3, 3), **dict(self.kw))(x)), None


@pytest.mark.parametrize("impl", ["im2col"])
def test_nn_scan_over_repeated_layers(impl):
    def scanned(conv, kw=()):
        return fnn.scan(Block, variable_axes={"params": 0}, split_rngs={"params": True}, length=4)(
            conv, kw
        )

    x = rand((2, 6, 6, 3))
    ours = scanned(jnn.Conv, (("implementation", impl),))
    theirs = scanned(fnn.Conv)
    v = theirs.init(jax.random.key(0), x, None)
    assert v["params"]["Conv_0"]["kernel"].shape == (4, 3, 3, 3, 3)
    y_ours, _ = jax.jit(ours.apply)(v, x, None)
    y_theirs, _ = theirs.apply(v, x, None)
    assert_close(y_ours, y_theirs, 1e-5)
    assert_same_tree(ours.init(jax.random.key(0), x, None), v)


def test_modules_inside_a_model_keep_flax_names():
    class Net(fnn.Module):
        mod: object

        @fnn.compact
        def __call__(self, x):
            x = self.mod.Conv(4, (3, 3))(x)
            x = self.mod.ConvTranspose(3, (2, 2), (2, 2))(x)
            return self.mod.Conv(2, (3, 3))(x)

    x = rand((1, 5, 5, 2))
    v = Net(fnn).init(jax.random.key(0), x)
    assert_same_tree(Net(jnn).init(jax.random.key(0), x), v)
    assert sorted(v["params"]) == ["ConvTranspose_0", "Conv_0", "Conv_1"]
    assert_close(Net(jnn).apply(v, x), Net(fnn).apply(v, x))
