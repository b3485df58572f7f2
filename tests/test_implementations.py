"""One shared test body run over every window-gather implementation and lax itself.

Random configurations (hypothesis) and named regression cases from real models are
compared against the reference (lax at HIGHEST precision on upcast operands).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jax import lax
from params import examples
from strategies import conv_specs, random_operands

import jaxconv
from jaxconv._src import dispatch
from jaxconv._src.impl import im2col
from jaxconv._src.reference import reference_conv, relative_error, tolerance
from jaxconv._src.spec import ConvSpec, default_dimension_numbers

IMPLEMENTATIONS = ["xla", "im2col", "taps", "xla_taps_grad"]


def assert_matches_reference(spec: ConvSpec, impl: str, seed: int = 0):
    x, w = random_operands(spec, seed)
    out = jax.jit(lambda a, b: dispatch.run(a, b, spec, impl))(x, w)
    assert out.shape == spec.out_shape
    assert out.dtype == spec.out_dtype
    ref = reference_conv(x, w, spec)
    err = relative_error(out, ref)
    assert err <= tolerance(spec.out_dtype), f"{impl} {spec}: relative error {err:.3g}"


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@examples(20)
@given(spec=conv_specs())
def test_random_configurations_float32(impl, spec):
    assert_matches_reference(spec, impl)


@examples(12)
@given(spec=conv_specs())
def test_random_configurations_taps_split_into_regions(spec, split_regions):
    # the small inputs above are read as one padded box; the border/interior split
    # that large inputs take, on the same random geometries
    assert_matches_reference(spec, "taps")


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@examples(5)
@given(spec=conv_specs(ranks=(1, 2), dtype=np.float64))
def test_random_configurations_float64_to_1e12(impl, spec, x64):
    x, w = random_operands(spec)
    out = dispatch.run(x, w, spec, impl)
    assert out.dtype == np.float64
    assert relative_error(out, reference_conv(x, w, spec)) <= 1e-12


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@examples(6)
@given(
    spec=conv_specs(ranks=(1, 2), dtype=jnp.bfloat16, boundary=False),
    precision=st.sampled_from([None, "highest"]),
)
def test_random_configurations_bfloat16(impl, spec, precision):
    assert_matches_reference(
        spec.replace(precision=lax.Precision(precision) if precision else None), impl
    )


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "complex64"])
@examples(3)
@given(spec=conv_specs(ranks=(2,), boundary=False))
def test_dtypes(impl, dtype, spec):
    assert_matches_reference(
        spec.replace(lhs_dtype=np.dtype(jnp.dtype(dtype)), rhs_dtype=np.dtype(jnp.dtype(dtype))),
        impl,
    )


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("dtype,pet", [("int8", "int32"), ("int32", None), ("int16", "int32")])
def test_integer_inputs(impl, dtype, pet):
    x = jnp.asarray(np.random.default_rng(1).integers(-5, 6, (2, 7, 6, 3)), dtype)
    w = jnp.asarray(np.random.default_rng(2).integers(-5, 6, (3, 2, 3, 4)), dtype)
    kw = dict(
        window_strides=(1, 2),
        padding="SAME",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        preferred_element_type=pet,
    )
    out = jaxconv.conv_general_dilated(x, w, **kw, implementation=impl)
    ref = lax.conv_general_dilated(x, w, **kw)
    assert out.dtype == ref.dtype
    np.testing.assert_array_equal(np.asarray(out), np.asarray(ref))


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_float32_preferred_from_bfloat16(impl):
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 8, 8, 4)), jnp.bfloat16)
    w = jnp.asarray(np.random.default_rng(1).standard_normal((3, 3, 4, 5)), jnp.bfloat16)
    kw = dict(
        window_strides=(1, 1),
        padding="SAME",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        preferred_element_type=jnp.float32,
    )
    out = jaxconv.conv_general_dilated(x, w, **kw, implementation=impl)
    assert out.dtype == jnp.float32
    ref = lax.conv_general_dilated(
        x.astype(jnp.float32), w.astype(jnp.float32), **kw, precision="highest"
    )
    assert relative_error(out, ref) < 1e-5


# Named regression cases from real models (small batch and spatial extent).
REAL_MODEL_CASES = {
    "resnet50_stem_7x7_s2": (
        (1, 32, 32, 3),
        (7, 7, 3, 8),
        dict(window_strides=(2, 2), padding=((3, 3), (3, 3))),
    ),
    "resnet50_3x3": ((2, 14, 14, 16), (3, 3, 16, 16), dict(padding="SAME")),
    "resnet50_1x1_s2": ((2, 14, 14, 16), (1, 1, 16, 32), dict(window_strides=(2, 2))),
    "resnext_grouped_32": (
        (1, 8, 8, 64),
        (3, 3, 2, 64),
        dict(padding="SAME", feature_group_count=32),
    ),
    "mobilenetv2_depthwise_s2": (
        (2, 16, 16, 24),
        (3, 3, 1, 24),
        dict(window_strides=(2, 2), padding="SAME", feature_group_count=24),
    ),
    "convnext_7x7_depthwise": (
        (1, 14, 14, 16),
        (7, 7, 1, 16),
        dict(padding="SAME", feature_group_count=16),
    ),
    "wavenet_causal_dilated": ((2, 64, 8), (2, 8, 8), dict(padding="CAUSAL", rhs_dilation=(8,))),
    "unet_transposed_2x": (
        (1, 8, 8, 8),
        (4, 4, 8, 4),
        dict(padding=((2, 2), (2, 2)), lhs_dilation=(2, 2)),
    ),
    "c3d_3x3x3": ((1, 4, 8, 8, 3), (3, 3, 3, 3, 8), dict(padding="SAME")),
    "replknet_13x13_depthwise": (
        (1, 16, 16, 4),
        (13, 13, 1, 4),
        dict(padding="SAME", feature_group_count=4),
    ),
}


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("case", sorted(REAL_MODEL_CASES))
def test_real_model_cases(impl, case):
    xs, ws, kw = REAL_MODEL_CASES[case]
    spec = ConvSpec.create(xs, ws, dimension_numbers=default_dimension_numbers(len(xs) - 2), **kw)
    assert_matches_reference(spec, impl)


def test_im2col_chunks_stay_under_the_bound(monkeypatch):
    monkeypatch.setattr(im2col, "MAX_PATCH_BYTES", 4096)
    spec = ConvSpec.create(
        (2, 13, 9, 4), (3, 3, 4, 5), (1, 2), "SAME", dimension_numbers=default_dimension_numbers(2)
    )
    row_bytes = 2 * spec.out_spatial[1] * 9 * 4 * 4
    assert row_bytes < 4096 < row_bytes * spec.out_spatial[0]  # several chunks
    assert_matches_reference(spec, "im2col")


@pytest.mark.parametrize("impl", ["im2col", "taps"])
def test_infinities_are_not_turned_into_nan(impl):
    # conv_general_dilated_patches multiplies by a one-hot kernel, so inf * 0 = nan;
    # the explicit gathers keep a +inf input where the kernel is positive.
    x = np.ones((1, 5, 5, 1), np.float32)
    x[0, 2, 2, 0] = np.inf
    w = np.ones((3, 3, 1, 1), np.float32)
    out = np.asarray(jaxconv.conv(x, w, padding="VALID", implementation=impl))
    assert np.all(np.isposinf(out))


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_spatial_rank_zero_and_four(impl):
    # the window-gather implementations take any rank
    rng = np.random.default_rng(0)
    for xs, ws in [((3, 5), (5, 4)), ((1, 4, 3, 3, 3, 2), (2, 2, 2, 2, 2, 3))]:
        n = len(xs) - 2
        spec = ConvSpec.create(
            xs, ws, padding="SAME", dimension_numbers=default_dimension_numbers(n)
        )
        if impl == "xla" and n > 3:
            continue  # lax on CPU handles rank <= 3 spatial convolutions only
        x = jnp.asarray(rng.standard_normal(xs), jnp.float32)
        w = jnp.asarray(rng.standard_normal(ws), jnp.float32)
        out = dispatch.run(x, w, spec, impl)
        if n == 4:
            xp = jnp.pad(x, [(0, 0), (0, 1), (0, 1), (0, 1), (0, 1), (0, 0)])
            # direct numpy loop over the 16 taps (SAME pads 0 before, 1 after for k=2)
            xn, wn = np.asarray(xp, np.float64), np.asarray(w, np.float64)
            ref = np.zeros(out.shape)
            for t in np.ndindex(2, 2, 2, 2):
                sl = xn[:, t[0] : t[0] + 4, t[1] : t[1] + 3, t[2] : t[2] + 3, t[3] : t[3] + 3, :]
                ref += np.einsum("nabcdi,io->nabcdo", sl, wn[t])
        else:
            ref = reference_conv(x, w, spec)
        assert relative_error(out, ref) <= tolerance(np.float32)
