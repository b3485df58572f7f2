"""scipy.signal-compatible convolve / correlate / convolve2d / correlate2d, in float64
against scipy at ~1e-12, and the textbook worked example (correlation -8, convolution +8)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.signal as ss
from hypothesis import given
from hypothesis import strategies as st
from params import examples, rotated

from jaxconv._src.reference import relative_error, tolerance
from jaxconv._src.signal import convolve, convolve2d, correlate, correlate2d

IMPLS = ["xla", "im2col", "taps"]
TOL64 = tolerance(np.float64)


def jitted(fn, *args, **kwargs):
    """``fn(*arrays, **kwargs)`` compiled as one program (one compile instead of many
    eager op dispatches for the gather-based implementations)."""
    return jax.jit(lambda *arrays: fn(*arrays, **kwargs))(*args)


def _random(rng, shape, complex_):
    x = rng.normal(size=shape)
    return x + 1j * rng.normal(size=shape) if complex_ else x


# ---------------------------------------------------------------------------------------
# The worked example
# ---------------------------------------------------------------------------------------

IMAGE = np.array([[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12], [13, 14, 15, 16]], np.float32)
KERNEL = np.array([[1, 1], [-1, -1]], np.float32)


@pytest.mark.parametrize("impl", IMPLS)
def test_worked_example_correlation_gives_minus_8(impl):
    """Sliding the kernel as written (cross-correlation, what CNNs compute): each 2x2
    window gives (a + b) - (a + 4 + b + 4) = -8."""
    out = correlate2d(IMAGE, KERNEL, "valid", implementation=impl)
    np.testing.assert_array_equal(out, np.full((3, 3), -8.0))
    np.testing.assert_array_equal(ss.correlate2d(IMAGE, KERNEL, "valid"), out)


@pytest.mark.parametrize("impl", IMPLS)
def test_worked_example_convolution_gives_plus_8(impl):
    """True convolution flips the kernel to [[-1, -1], [1, 1]]: +8 everywhere. This is
    what scipy.signal.convolve2d returns (not -8, as a common write-up states)."""
    out = convolve2d(IMAGE, KERNEL, "valid", implementation=impl)
    np.testing.assert_array_equal(out, np.full((3, 3), 8.0))
    np.testing.assert_array_equal(ss.convolve2d(IMAGE, KERNEL, "valid"), out)
    np.testing.assert_array_equal(convolve(IMAGE, KERNEL, "valid"), out)


# ---------------------------------------------------------------------------------------
# Against scipy, float64 / complex128
# ---------------------------------------------------------------------------------------


@examples(10)
@given(
    rank=st.integers(1, 3),
    data=st.data(),
    complex_=st.booleans(),
    mode=st.sampled_from(["full", "same", "valid"]),
    impl=st.sampled_from(IMPLS),
    seed=st.integers(0, 2**16),
)
def test_nd_matches_scipy(x64, rank, data, complex_, mode, impl, seed):
    s1 = data.draw(st.lists(st.integers(1, 7), min_size=rank, max_size=rank))
    if mode == "valid":  # one input must dominate on every axis: draw both ways
        small = [data.draw(st.integers(1, n)) for n in s1]
        s1, s2 = (s1, small) if data.draw(st.booleans()) else (small, s1)
    else:
        s2 = data.draw(st.lists(st.integers(1, 5), min_size=rank, max_size=rank))
    rng = np.random.default_rng(seed)
    a, b = _random(rng, s1, complex_), _random(rng, s2, complex_)
    for ours, theirs in ((convolve, ss.convolve), (correlate, ss.correlate)):
        expected = theirs(a, b, mode)
        out = jitted(ours, a, b, mode=mode, implementation=impl)
        assert out.shape == expected.shape
        assert relative_error(out, expected) < TOL64


@pytest.mark.parametrize("boundary,impl", rotated(["fill", "wrap", "symm"], IMPLS))
def test_2d_boundaries_match_scipy(x64, boundary, impl):
    rng = np.random.default_rng(1)
    cases = [((6, 7), (2, 4)), ((5, 5), (3, 3)), ((3, 4), (5, 6))]
    for s1, s2 in cases:
        a, b = rng.normal(size=s1), rng.normal(size=s2)
        for mode in ("full", "same", "valid"):
            for ours, theirs in ((convolve2d, ss.convolve2d), (correlate2d, ss.correlate2d)):
                expected = theirs(a, b, mode, boundary, 1.5)
                out = jitted(
                    ours, a, b, mode=mode, boundary=boundary, fillvalue=1.5, implementation=impl
                )
                assert out.shape == expected.shape, (ours.__name__, s1, s2, mode)
                assert relative_error(out, expected) < TOL64, (ours.__name__, s1, s2, mode)


def test_2d_complex_and_swapped_valid_match_scipy(x64):
    """correlate2d conjugates in2; in valid mode with the larger in2 scipy swaps the
    inputs (and correlate2d then returns the conjugate of correlate's result)."""
    rng = np.random.default_rng(2)
    for s1, s2 in [((6, 5), (3, 2)), ((2, 3), (5, 4))]:
        a, b = _random(rng, s1, True), _random(rng, s2, True)
        for mode in ("full", "same", "valid"):
            for ours, theirs in (
                (convolve2d, ss.convolve2d),
                (correlate2d, ss.correlate2d),
                (correlate, ss.correlate),
            ):
                assert relative_error(ours(a, b, mode), theirs(a, b, mode)) < TOL64
    a, b = _random(rng, (2, 3), True), _random(rng, (5, 4), True)
    nd, two_d = correlate(a, b, "valid"), correlate2d(a, b, "valid")
    assert relative_error(two_d, np.conj(nd)) < TOL64
    assert relative_error(correlate(2.0 + 1j, 3.0 - 2j), (2.0 + 1j) * (3.0 + 2j)) < TOL64


def test_same_mode_centring_differs_for_even_kernels(x64):
    """For even kernels correlate2d's 'same' starts one sample later in the full
    result than correlate's (scipy's behaviour, kept)."""
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(6, 7)), rng.normal(size=(4, 2))
    full = np.asarray(correlate2d(a, b, "full"))
    same_nd, same_2d = correlate(a, b, "same"), correlate2d(a, b, "same")
    np.testing.assert_allclose(same_nd, full[1:7, 0:7], rtol=0, atol=1e-12)  # (k-1)//2
    np.testing.assert_allclose(same_2d, full[2:8, 1:8], rtol=0, atol=1e-12)  # k//2
    odd = rng.normal(size=(3, 3))
    assert relative_error(correlate(a, odd, "same"), correlate2d(a, odd, "same")) < TOL64


def test_wider_than_input_boundaries_wrap_repeatedly(x64):
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(2, 3)), rng.normal(size=(5, 7))
    for boundary in ("wrap", "symm"):
        for ours, theirs in ((convolve2d, ss.convolve2d), (correlate2d, ss.correlate2d)):
            assert (
                relative_error(ours(a, b, "full", boundary), theirs(a, b, "full", boundary)) < TOL64
            )


def test_integers_exact():
    a = np.arange(1, 13, dtype=np.int32).reshape(3, 4)
    b = np.array([[2, -1], [0, 3]], np.int32)
    for mode in ("full", "same", "valid"):
        out = convolve2d(a, b, mode)
        assert out.dtype == jnp.int32
        np.testing.assert_array_equal(out, ss.convolve2d(a, b, mode))
        np.testing.assert_array_equal(correlate(a, b, mode), ss.correlate(a, b, mode))


def test_jit_vmap_grad():
    rng = np.random.default_rng(5)
    a = rng.normal(size=(4, 9)).astype(np.float32)
    b = rng.normal(size=(3,)).astype(np.float32)
    f = lambda a, b: convolve(a, b, "same", implementation="taps")  # noqa: E731
    batched = jax.vmap(f, (0, None))(a, b)
    np.testing.assert_allclose(
        batched, np.stack([ss.convolve(r, b, "same") for r in a]), rtol=1e-5, atol=1e-5
    )
    np.testing.assert_allclose(jax.jit(f)(a[0], b), batched[0], rtol=1e-6, atol=1e-6)
    g = jax.grad(lambda a, b: jnp.sum(jnp.sin(f(a, b))), argnums=(0, 1))(a[0], b)
    ref = jax.grad(
        lambda a, b: jnp.sum(jnp.sin(jax.scipy.signal.convolve(a, b, "same"))), argnums=(0, 1)
    )(a[0], b)
    for x, y in zip(g, ref):
        assert relative_error(x, y) < 5 * tolerance(np.float32)


def test_errors_name_the_argument():
    a, b = np.ones((4, 4)), np.ones((2, 2))
    with pytest.raises(ValueError, match="`mode`"):
        convolve(a, b, "circular")
    with pytest.raises(ValueError, match="`boundary`"):
        convolve2d(a, b, boundary="reflect")
    with pytest.raises(ValueError, match="same rank"):
        correlate(a, np.ones(3))
    with pytest.raises(ValueError, match="2-D"):
        correlate2d(np.ones(4), np.ones(2))
    with pytest.raises(ValueError, match="at least as large"):
        convolve(np.ones((4, 2)), np.ones((2, 4)), "valid")
    with pytest.raises(ValueError, match="`fillvalue`"):
        convolve2d(a, b, fillvalue=1 + 2j)
