"""The ``"fft"`` implementation against the reference: every feature its maths allows,
gradients, and clear errors for the rest."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from params import examples
from strategies import conv_specs, random_operands

import jaxconv
from jaxconv._src import dispatch
from jaxconv._src.impl import fft
from jaxconv._src.reference import reference_conv, relative_error, tolerance
from jaxconv._src.spec import ConvSpec, default_dimension_numbers


def assert_close_to_reference(out, x, w, spec, tol):
    """FFT round-off scales with the operands, not with the output: an output that
    cancels to exactly zero (a window lying wholly in the padding) comes back as
    ~1e-7 * |x| * |w|. So the error is measured against the larger of the output's
    and the operands' scale."""
    ref = np.asarray(reference_conv(x, w, spec))
    scale = max(
        float(np.max(np.abs(ref), initial=0.0)),
        float(np.max(np.abs(x))) * float(np.max(np.abs(w))),
        1e-30,
    )
    err = float(np.max(np.abs(np.asarray(out, ref.dtype) - ref), initial=0.0)) / scale
    assert err <= tol, f"{spec}: error {err:.3g} relative to scale {scale:.3g}"


def _check_float32(spec):
    x, w = random_operands(spec)
    out = jax.jit(lambda a, b: dispatch.run(a, b, spec, "fft"))(x, w)
    assert out.shape == spec.out_shape and out.dtype == spec.out_dtype
    assert_close_to_reference(out, x, w, spec, tolerance(np.float32))


@examples(8)
@given(spec=conv_specs(ranks=(1, 2)))
def test_random_configurations_float32(spec):
    # strides, padding words and crops, both dilations, feature and batch groups,
    # depthwise multipliers, random layouts and boundary modes
    _check_float32(spec)


@pytest.mark.slow
@examples(200)
@given(spec=conv_specs())
def test_random_configurations_float32_sweep(spec):
    _check_float32(spec)


@examples(4)
@given(spec=conv_specs(ranks=(1, 2), dtype=np.float64))
def test_float64_to_1e12(spec, x64):
    x, w = random_operands(spec)
    out = jax.jit(lambda a, b: dispatch.run(a, b, spec, "fft"))(x, w)
    assert_close_to_reference(out, x, w, spec, 1e-12)


@pytest.mark.parametrize("dtype", ["complex64", "bfloat16", "float16"])
def test_other_float_dtypes(dtype):
    rng = np.random.default_rng(0)
    spec = ConvSpec.create(
        (2, 9, 8, 4),
        (3, 3, 2, 6),
        (2, 1),
        "SAME",
        None,
        (1, 2),
        default_dimension_numbers(2),
        2,
        lhs_dtype=jnp.dtype(dtype),
    )
    x = rng.standard_normal(spec.lhs_shape)
    w = rng.standard_normal(spec.rhs_shape)
    if dtype == "complex64":
        x = x + 1j * rng.standard_normal(spec.lhs_shape)
        w = w + 1j * rng.standard_normal(spec.rhs_shape)
    x, w = jnp.asarray(x, dtype), jnp.asarray(w, dtype)
    out = dispatch.run(x, w, spec, "fft")
    assert out.dtype == jnp.dtype(dtype)
    assert relative_error(out, reference_conv(x, w, spec)) <= tolerance(dtype)


def test_large_depthwise_kernel_replknet():
    # the case fft is for: a 31x31 depthwise kernel (RepLKNet), SAME padding
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal((2, 20, 20, 8)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((31, 31, 1, 8)), jnp.float32)
    out = jaxconv.conv(x, w, groups=8, implementation="fft")
    ref = jaxconv.conv(x, w, groups=8, implementation="xla", precision="highest")
    assert relative_error(out, ref) <= tolerance(np.float32)


def test_gradients_and_jvp_match_lax(x64):
    # one jitted program per derivative keeps the compile count low
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.standard_normal((2, 7, 6, 4)))
    w = jnp.asarray(rng.standard_normal((3, 4, 2, 6)))
    kw = dict(stride=(2, 1), padding=((2, 1), (0, 3)), dilation=(1, 2), groups=2)

    def loss(impl):
        return lambda x, w: jnp.sum(jnp.sin(jaxconv.conv(x, w, **kw, implementation=impl)))

    grads = [jax.jit(jax.grad(loss(impl), (0, 1)))(x, w) for impl in ("fft", "xla")]
    for a, b in zip(*grads):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)
    tx, tw = jnp.cos(x), jnp.sin(w)
    f = lambda impl: jax.jit(
        lambda x, w, tx, tw: jax.jvp(
            lambda x, w: jaxconv.conv(x, w, **kw, implementation=impl), (x, w), (tx, tw)
        )[1]
    )
    np.testing.assert_allclose(
        f("fft")(x, w, tx, tw), f("xla")(x, w, tx, tw), rtol=1e-10, atol=1e-10
    )


def test_integer_inputs_and_rank_zero_raise_not_implemented():
    x = jnp.ones((1, 5, 2), jnp.int32)
    w = jnp.ones((3, 2, 2), jnp.int32)
    with pytest.raises(NotImplementedError, match="fft.*integer"):
        jaxconv.conv(x, w, implementation="fft")
    spec0 = ConvSpec.create((3, 5), (5, 4), dimension_numbers=default_dimension_numbers(0))
    assert "spatial axis" in fft.supports(spec0)
    # a fallback list skips it
    out = jaxconv.conv(x, w, implementation=["fft", "xla"])
    np.testing.assert_array_equal(out, jaxconv.conv(x, w, implementation="xla"))


def test_registered():
    assert "fft" in jaxconv.implementations()
