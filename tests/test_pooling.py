"""Pooling: against flax.linen pooling, recorded PyTorch cases (ceil_mode,
count_include_pad, dilation, lp_pool), every pooling implementation, jit/vmap/grad."""

from __future__ import annotations

import json
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from params import rotated

from jaxconv._src.pooling import (
    POOL_IMPLEMENTATIONS,
    avg_pool,
    global_avg_pool,
    global_max_pool,
    lp_pool,
    max_pool,
)
from jaxconv._src.reference import relative_error, tolerance

IMPLS = list(POOL_IMPLEMENTATIONS)
TOL32 = tolerance(np.float32)
DATA = pathlib.Path(__file__).parent / "data" / "torch_pooling.npz"


FLAX_CASES = [
    # (x shape, window, strides, padding)
    ((2, 7, 9, 3), (3, 2), (2, 1), "VALID"),
    ((2, 7, 9, 3), (3, 3), (2, 2), "SAME"),
    ((1, 8, 6, 2), (2, 3), None, ((1, 1), (0, 2))),
    ((3, 11, 2), (4,), (3,), "SAME"),
    ((1, 5, 4, 6, 2), (2, 2, 3), (2, 1, 2), "VALID"),
    ((6, 5, 3), (2, 2), (1, 2), "SAME"),  # unbatched (*spatial, C)
]


@pytest.mark.parametrize("case,impl", rotated(FLAX_CASES, IMPLS))
def test_matches_flax_pooling(case, impl):
    shape, window, strides, padding = case
    x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    assert (
        relative_error(
            jax.jit(lambda x: max_pool(x, window, strides, padding, implementation=impl))(x),
            nn.max_pool(x, window, strides, padding),
        )
        == 0.0
    )
    for cip in (True, False):
        out = jax.jit(
            lambda x, cip=cip: avg_pool(x, window, strides, padding, cip, implementation=impl)
        )(x)
        assert relative_error(out, nn.avg_pool(x, window, strides, padding, cip)) < TOL32


def _torch_cases():
    with np.load(DATA) as f:
        data = {k: f[k] for k in f.files}
    keys = sorted({k.split("_")[0] for k in data if k.endswith("_args")})
    return [(k, json.loads(str(data[f"{k}_args"])), data[f"{k}_x"], data[f"{k}_y"]) for k in keys]


TORCH_CASES = _torch_cases()


def _per_axis(v, n, default):
    if v is None:
        return default
    return tuple(v) if isinstance(v, list) else (v,) * n


def _channels_last(a):
    return np.moveaxis(a, 1, -1)


@pytest.mark.parametrize("case,impl", rotated(TORCH_CASES, IMPLS, [c[0] for c in TORCH_CASES]))
def test_matches_pytorch_pooling(case, impl):
    _, args, x, y = case
    n = args["rank"]
    window = _per_axis(args["kernel_size"], n, None)
    strides = _per_axis(args.get("stride"), n, window)  # PyTorch: stride defaults to window
    pads = _per_axis(args.get("padding", 0), n, (0,) * n)
    dilation = _per_axis(args.get("dilation", 1), n, (1,) * n)
    ceil_mode = args.get("ceil_mode", False)
    xl = _channels_last(x)
    if args["op"] == "max_pool":
        f = lambda x: max_pool(
            x,
            window,
            strides,
            pads,
            dilation=dilation,  # noqa: E731
            ceil_mode=ceil_mode,
            implementation=impl,
        )
    elif args["op"] == "avg_pool":
        f = lambda x: avg_pool(  # noqa: E731
            x,
            window,
            strides,
            pads,
            args.get("count_include_pad", True),
            ceil_mode=ceil_mode,
            divisor_override=args.get("divisor_override"),
            implementation=impl,
        )
    else:
        f = lambda x: lp_pool(
            x,
            args["norm_type"],
            window,
            strides,  # noqa: E731
            ceil_mode=ceil_mode,
            implementation=impl,
        )
    out = jax.jit(f)(xl)
    expected = _channels_last(y)
    assert out.shape == expected.shape
    assert relative_error(out, expected) < 5 * TOL32


@pytest.mark.parametrize("impl", IMPLS)
def test_dilation_matches_reduce_window(impl):
    x = np.random.default_rng(1).normal(size=(2, 9, 10, 3)).astype(np.float32)
    out = max_pool(x, (3, 2), (1, 2), "VALID", dilation=(2, 3), implementation=impl)
    ref = lax.reduce_window(
        x, -np.inf, lax.max, (1, 3, 2, 1), (1, 1, 2, 1), "VALID", window_dilation=(1, 2, 3, 1)
    )
    assert relative_error(out, ref) == 0.0
    out = avg_pool(x, (3, 2), (1, 2), "VALID", dilation=(2, 3), implementation=impl)
    ref = (
        lax.reduce_window(
            x, 0.0, lax.add, (1, 3, 2, 1), (1, 1, 2, 1), "VALID", window_dilation=(1, 2, 3, 1)
        )
        / 6
    )
    assert relative_error(out, ref) < TOL32


def test_padding_words_follow_the_convolution():
    """SAME keeps ceil(in / stride); FULL and CAUSAL pad like the convolution does."""
    x = np.random.default_rng(2).normal(size=(1, 7, 2)).astype(np.float32)
    assert max_pool(x, (3,), (2,), "SAME").shape == (1, 4, 2)
    full = max_pool(x, (3,), (1,), "FULL")
    assert full.shape == (1, 9, 2)
    np.testing.assert_array_equal(full[:, 0], x[:, 0])  # window [pad, pad, x0]
    causal = avg_pool(x, (3,), (1,), "CAUSAL", count_include_pad=False)
    expected = np.stack([x[:, max(0, i - 2) : i + 1].mean(1) for i in range(7)], 1)
    assert relative_error(causal, expected) < TOL32


@pytest.mark.parametrize("impl", IMPLS)
def test_lp_pool(impl):
    x = np.random.default_rng(3).normal(size=(2, 6, 7, 3)).astype(np.float32)
    out = lp_pool(x, 3.0, (2, 3), (2, 2), "SAME", implementation=impl)
    ref = (nn.avg_pool(np.abs(x) ** 3, (2, 3), (2, 2), "SAME") * 6) ** (1 / 3)
    assert relative_error(out, ref) < 5 * TOL32
    inf = lp_pool(x, float("inf"), (2, 3), (2, 2), "VALID", implementation=impl)
    assert relative_error(inf, nn.max_pool(np.abs(x), (2, 3), (2, 2), "VALID")) == 0.0


@pytest.mark.parametrize("impl", IMPLS)
def test_gradients(impl):
    x = np.random.default_rng(4).normal(size=(2, 6, 7, 3)).astype(np.float32)
    w = np.random.default_rng(5).normal(size=(2, 3, 4, 3)).astype(np.float32)

    def loss(pool, ref_pool):  # ours under jit (reduce_window must stay differentiable)
        return (
            jax.jit(jax.grad(lambda x: jnp.sum(w * pool(x))))(x),
            jax.grad(lambda x: jnp.sum(w * ref_pool(x)))(x),
        )

    got, ref = loss(
        lambda x: max_pool(x, (2, 3), (2, 2), "SAME", implementation=impl),
        lambda x: nn.max_pool(x, (2, 3), (2, 2), "SAME"),
    )
    assert relative_error(got, ref) < TOL32  # random inputs: no ties
    got, ref = loss(
        lambda x: avg_pool(x, (2, 3), (2, 2), "SAME", False, implementation=impl),
        lambda x: nn.avg_pool(x, (2, 3), (2, 2), "SAME", False),
    )
    assert relative_error(got, ref) < TOL32


def test_jit_vmap():
    x = np.random.default_rng(6).normal(size=(4, 2, 6, 5, 3)).astype(np.float32)
    f = lambda x: avg_pool(x, (2, 2), (2, 1), "SAME", implementation="taps")  # noqa: E731
    batched = jax.vmap(f)(x)
    assert relative_error(batched, np.stack([f(xi) for xi in x])) < TOL32
    assert relative_error(jax.jit(f)(x[0]), f(x[0])) < TOL32


@pytest.mark.parametrize("impl", IMPLS)
def test_global_pooling(impl):
    x = np.random.default_rng(7).normal(size=(2, 5, 4, 3, 6)).astype(np.float32)
    gmax = jax.jit(lambda x: global_max_pool(x, implementation=impl))(x)
    assert relative_error(gmax, x.max((1, 2, 3))) == 0.0
    mean = jax.jit(lambda x: global_avg_pool(x, keepdims=True, implementation=impl))(x)
    assert mean.shape == (2, 1, 1, 1, 6)
    assert relative_error(mean, x.mean((1, 2, 3), keepdims=True)) < TOL32


def test_integer_max_pool_and_errors():
    x = np.arange(-20, 20, dtype=np.int32).reshape(1, 5, 8, 1)
    out = max_pool(x, (2, 2), (2, 2), "SAME")
    assert out.dtype == jnp.int32
    np.testing.assert_array_equal(
        out[0, :, :, 0],
        np.array(nn.max_pool(x.astype(np.float32), (2, 2), (2, 2), "SAME"))[0, :, :, 0].astype(
            np.int32
        ),
    )
    with pytest.raises(ValueError, match="window larger than the padded input"):
        max_pool(np.ones((1, 3, 3, 1)), (4, 4))
    with pytest.raises(ValueError, match="`inputs` must have shape"):
        max_pool(np.ones((3, 3)), (2, 2))
    with pytest.raises(ValueError, match="`implementation`"):
        max_pool(np.ones((1, 4, 4, 1)), (2, 2), implementation="nope")
    with pytest.raises(TypeError, match="real inputs"):
        max_pool(np.ones((1, 4, 4, 1), np.complex64), (2, 2))
    with pytest.raises(ValueError, match="norm_type"):
        lp_pool(np.ones((1, 4, 4, 1)), 0.0, (2, 2))
    with pytest.raises(ValueError, match="strides"):
        avg_pool(np.ones((1, 4, 4, 1)), (2, 2), (0, 1))
