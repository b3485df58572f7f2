"""Transposed convolution: lax's conv_transpose, PyTorch's conv_transpose*d (recorded
reference cases), groups, string padding with input dilation, and the gradient identity."""

from __future__ import annotations

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jax import lax
from params import examples, rotated

import jaxconv
from jaxconv._src.reference import relative_error, tolerance
from jaxconv._src.transpose import conv_transpose, conv_transpose_torch

IMPLS = ["xla", "im2col", "taps"]


DATA = pathlib.Path(__file__).parent / "data" / "torch_conv_transpose.npz"
TOL32 = tolerance(np.float32)


def _torch_cases():
    with np.load(DATA) as f:
        data = {k: f[k] for k in f.files}
    keys = sorted({k.split("_")[0] for k in data if k.endswith("_args")})
    return [
        (
            k,
            json.loads(str(data[f"{k}_args"])),
            data[f"{k}_x"],
            data[f"{k}_w"],
            data.get(f"{k}_b"),
            data[f"{k}_y"],
        )
        for k in keys
    ]


TORCH_CASES = _torch_cases()


@pytest.mark.parametrize("case,impl", rotated(TORCH_CASES, IMPLS, [c[0] for c in TORCH_CASES]))
def test_matches_pytorch_conv_transpose(case, impl):
    _, args, x, w, b, y = case
    out = jax.jit(
        lambda x, w, b: conv_transpose_torch(
            x,
            w,
            b,
            stride=args["stride"],
            padding=args["padding"],
            output_padding=args["output_padding"] or 0,
            groups=args["groups"],
            dilation=args["dilation"],
            output_size=args["output_size"],
            implementation=impl,
        )
    )(x, w, b)
    assert out.shape == y.shape
    assert relative_error(out, y) < 5 * TOL32


def test_pytorch_output_size_formula():
    x = np.random.default_rng(0).normal(size=(1, 2, 5, 7)).astype(np.float32)
    w = np.random.default_rng(1).normal(size=(2, 3, 3, 4)).astype(np.float32)
    y = conv_transpose_torch(
        x, w, stride=(2, 3), padding=(1, 2), output_padding=(1, 2), dilation=(1, 2)
    )
    # (in - 1) * stride - 2 * padding + dilation * (k - 1) + output_padding + 1
    assert y.shape == (1, 3, 4 * 2 - 2 + 2 + 1 + 1, 6 * 3 - 4 + 6 + 2 + 1)
    unbatched = conv_transpose_torch(
        x[0], w, stride=(2, 3), padding=(1, 2), output_padding=(1, 2), dilation=(1, 2)
    )
    np.testing.assert_array_equal(unbatched, y[0])


LAX_CASES = [
    # (lhs shape NHWC.., kernel window, in, out, strides, padding, rhs_dilation)
    ((2, 5, 6, 3), (3, 2), 3, 4, (2, 3), "SAME", (1, 2)),
    ((2, 5, 6, 3), (3, 2), 3, 4, (2, 3), "VALID", (1, 1)),
    ((1, 4, 5, 2), (4, 3), 2, 3, (2, 2), "same", (1, 1)),
    ((2, 5, 6, 3), (3, 2), 3, 4, (2, 3), ((1, 2), (0, 1)), (2, 1)),
    ((2, 7, 3), (3,), 3, 2, (3,), "VALID", (2,)),
    ((1, 3, 4, 3, 2), (2, 3, 2), 2, 3, (2, 1, 2), "SAME", (1, 1, 1)),
]


@pytest.mark.parametrize("transpose_kernel", [False, True])
@pytest.mark.parametrize("case,impl", rotated(LAX_CASES, IMPLS))
def test_matches_lax_conv_transpose(case, transpose_kernel, impl):
    shape, window, cin, cout, strides, padding, rd = case
    rng = np.random.default_rng(0)
    x = rng.normal(size=shape).astype(np.float32)
    k_io = (cout, cin) if transpose_kernel else (cin, cout)
    w = rng.normal(size=window + k_io).astype(np.float32)
    lax_pad = padding.upper() if isinstance(padding, str) else padding
    expected = lax.conv_transpose(
        x,
        w,
        strides,
        lax_pad,
        rd,
        transpose_kernel=transpose_kernel,
        precision=lax.Precision.HIGHEST,
    )
    out = jax.jit(
        lambda x, w: conv_transpose(
            x,
            w,
            strides,
            padding,
            rd,
            transpose_kernel=transpose_kernel,
            implementation=impl,
        )
    )(x, w)
    assert out.shape == expected.shape
    assert relative_error(out, expected) < TOL32


@pytest.mark.parametrize("transpose_kernel", [False, True])
def test_consistent_padding_and_dimension_numbers_match_lax(transpose_kernel):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 3, 5, 6)).astype(np.float32)  # NCHW
    w = rng.normal(size=(4, 3, 3, 2)).astype(np.float32)  # OIHW
    dn = ("NCHW", "OIHW", "NCHW")
    if transpose_kernel:
        w = rng.normal(size=(3, 4, 3, 2)).astype(np.float32)
    for pads in [((1, 1), (0, 1)), ((2, 0), (1, 1))]:
        expected = lax.conv_transpose(
            x,
            w,
            (2, 2),
            pads,
            (1, 1),
            dn,
            transpose_kernel,
            lax.Precision.HIGHEST,
            use_consistent_padding=True,
        )
        out = conv_transpose(
            x, w, (2, 2), pads, (1, 1), dn, transpose_kernel, use_consistent_padding=True
        )
        assert relative_error(out, expected) < TOL32


@pytest.mark.parametrize("impl", IMPLS)
def test_groups_equal_per_group_lax(impl):
    """Grouped transposed convolution (lax has none) is the concatenation of one
    lax.conv_transpose per group, for both kernel meanings."""
    rng = np.random.default_rng(2)
    G, cin, cout = 3, 6, 9
    x = rng.normal(size=(2, 5, 4, cin)).astype(np.float32)
    # transpose_kernel=False: kernel of the dilated convolution, (k, k, cin/G, cout)
    w = rng.normal(size=(3, 2, cin // G, cout)).astype(np.float32)
    # transpose_kernel=True: forward kernel, (k, k, cout/G, cin): "O" = our input
    wt = rng.normal(size=(3, 2, cout // G, cin)).astype(np.float32)
    xs = np.split(x, G, axis=-1)
    ref = np.concatenate(
        [
            lax.conv_transpose(
                xs[g], w[..., g * 3 : (g + 1) * 3], (2, 2), "SAME", precision=lax.Precision.HIGHEST
            )
            for g in range(G)
        ],
        -1,
    )
    out = conv_transpose(x, w, (2, 2), "SAME", feature_group_count=G, implementation=impl)
    assert relative_error(out, ref) < TOL32
    ref_t = np.concatenate(
        [
            lax.conv_transpose(
                xs[g],
                wt[..., g * 2 : (g + 1) * 2],
                (2, 2),
                "VALID",
                transpose_kernel=True,
                precision=lax.Precision.HIGHEST,
            )
            for g in range(G)
        ],
        -1,
    )
    out_t = conv_transpose(
        x, wt, (2, 2), "VALID", transpose_kernel=True, feature_group_count=G, implementation=impl
    )
    assert relative_error(out_t, ref_t) < TOL32


def test_string_padding_with_input_dilation():
    """lax rejects a padding word together with input dilation; conv_transpose resolves
    the word for the transposed convolution: SAME gives in * stride."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(1, 5, 7, 2)).astype(np.float32)
    w = rng.normal(size=(3, 4, 2, 3)).astype(np.float32)
    with pytest.raises(ValueError, match="padding word together with `lhs_dilation`"):
        jaxconv.conv_general_dilated(
            x, w, (1, 1), "SAME", lhs_dilation=(2, 3), dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
    for impl in IMPLS:
        y = conv_transpose(x, w, (2, 3), "SAME", implementation=impl)
        assert y.shape == (1, 10, 21, 3)
        expected = lax.conv_transpose(x, w, (2, 3), "SAME", precision=lax.Precision.HIGHEST)
        assert relative_error(y, expected) < TOL32


def _forward_and_vjp(x, w, stride, padding, dilation, groups):
    """Forward conv (NCH.., OIH..) and its input gradient, by jax.vjp of lax."""
    n = x.ndim - 2

    def f(x):
        return lax.conv_general_dilated(
            x,
            w,
            (stride,) * n,
            [(padding, padding)] * n,
            rhs_dilation=(dilation,) * n,
            feature_group_count=groups,
            precision=lax.Precision.HIGHEST,
        )

    y, vjp = jax.vjp(f, x)
    return y, vjp


GRAD_CASES = [
    (1, 11, 3, 2, 1, 1, 1),
    (2, 9, 3, 2, 1, 2, 2),
    (2, 8, 4, 3, 2, 1, 3),
    (3, 6, 2, 2, 0, 1, 1),
]


@pytest.mark.parametrize("case,impl", rotated(GRAD_CASES, IMPLS))
def test_equals_input_gradient_of_forward_conv(case, impl):
    """conv_transpose (PyTorch meaning, weight = the forward kernel) is the input
    gradient of the forward convolution with the same stride/padding/dilation/groups."""
    n, size, k, stride, padding, dilation, groups = case
    rng = np.random.default_rng(4)
    cin, cout = 2 * groups, 3 * groups
    x = rng.normal(size=(2, cin) + (size,) * n).astype(np.float32)
    w = rng.normal(size=(cout, cin // groups) + (k,) * n).astype(np.float32)
    y, vjp = _forward_and_vjp(x, w, stride, padding, dilation, groups)
    g = rng.normal(size=y.shape).astype(np.float32)
    (dx,) = vjp(g)
    out = jax.jit(
        lambda g, w: conv_transpose_torch(
            g,
            w,
            stride=stride,
            padding=padding,
            groups=groups,
            dilation=dilation,
            output_size=x.shape[2:],
            implementation=impl,
        )
    )(g, w)
    assert out.shape == dx.shape
    assert relative_error(out, dx) < TOL32


@pytest.mark.slow
@examples(40)
@given(
    n=st.integers(1, 2),
    size=st.integers(3, 8),
    k=st.integers(1, 4),
    stride=st.integers(1, 3),
    padding=st.integers(0, 3),
    dilation=st.integers(1, 2),
    groups=st.sampled_from([1, 2]),
    seed=st.integers(0, 2**16),
)
def test_gradient_identity_random(n, size, k, stride, padding, dilation, groups, seed):
    eff_k = dilation * (k - 1) + 1
    if size + 2 * padding < eff_k:
        return  # forward convolution undefined: nothing to transpose
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(1, 2 * groups) + (size,) * n).astype(np.float32)
    w = rng.normal(size=(2 * groups, 2) + (k,) * n).astype(np.float32)
    y, vjp = _forward_and_vjp(x, w, stride, padding, dilation, groups)
    g = rng.normal(size=y.shape).astype(np.float32)
    (dx,) = vjp(g)
    out = conv_transpose_torch(
        g,
        w,
        stride=stride,
        padding=padding,
        groups=groups,
        dilation=dilation,
        output_size=x.shape[2:],
    )
    assert relative_error(out, dx) < TOL32


def test_jit_vmap_grad():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(3, 2, 4, 5, 2)).astype(np.float32)  # vmap axis first
    w = rng.normal(size=(3, 2, 1, 4)).astype(np.float32)

    def f(x, w):
        return conv_transpose(x, w, (2, 2), "SAME", feature_group_count=2, implementation="taps")

    batched = jax.vmap(f, in_axes=(0, None))(x, w)
    looped = np.stack([f(xi, w) for xi in x])
    assert relative_error(batched, looped) < TOL32
    assert relative_error(jax.jit(f)(x[0], w), looped[0]) < TOL32

    def loss(impl):
        return lambda x, w: jnp.sum(
            jnp.sin(
                conv_transpose(x, w, (2, 2), "SAME", feature_group_count=2, implementation=impl)
            )
        )

    gx, gw = jax.grad(loss("taps"), argnums=(0, 1))(x[0], w)
    rx, rw = jax.grad(loss("xla"), argnums=(0, 1))(x[0], w)
    assert relative_error(gx, rx) < 5 * TOL32
    assert relative_error(gw, rw) < 5 * TOL32


@pytest.mark.parametrize("impl", IMPLS)
def test_bias_and_activation(impl):
    rng = np.random.default_rng(6)
    x = rng.normal(size=(1, 3, 4, 5)).astype(np.float32)
    w = rng.normal(size=(3, 2, 2, 2)).astype(np.float32)
    b = rng.normal(size=(2,)).astype(np.float32)
    plain = conv_transpose_torch(x, w, stride=2, implementation=impl)
    fused = conv_transpose_torch(x, w, b, stride=2, activation=jax.nn.relu, implementation=impl)
    assert relative_error(fused, jax.nn.relu(plain + b[:, None, None])) < TOL32
    assert float(jnp.min(fused)) == 0.0 and float(jnp.max(fused)) > 0.0


def test_errors_name_the_argument():
    x = np.ones((1, 4, 4, 2), np.float32)
    w = np.ones((3, 3, 2, 2), np.float32)
    with pytest.raises(ValueError, match="output_padding"):
        conv_transpose(x, w, (2, 2), "SAME", output_padding=2)
    with pytest.raises(ValueError, match="output_size"):
        conv_transpose(x, w, (2, 2), "SAME", output_size=(20, 8))
    with pytest.raises(ValueError, match="at most one"):
        conv_transpose(x, w, (2, 2), "SAME", output_padding=1, output_size=(9, 9))
    with pytest.raises(TypeError, match="conv_transpose_torch"):
        conv_transpose(x, w, (2, 2), 1)
    with pytest.raises(ValueError, match="'SAME' or 'VALID'"):
        conv_transpose(x, w, (2, 2), "CAUSAL")
    with pytest.raises(ValueError, match="feature_group_count"):
        conv_transpose(
            x,
            np.ones((3, 3, 2, 3), np.float32),
            (2, 2),
            "SAME",
            transpose_kernel=True,
            feature_group_count=2,
        )
    with pytest.raises(ValueError, match="C_in"):
        conv_transpose_torch(np.ones((1, 3, 4, 4), np.float32), np.ones((2, 2, 3, 3)))
    with pytest.raises(ValueError, match="implementation"):
        conv_transpose(x, w, (2, 2), "SAME", implementation="nope")
