"""The public API: padding words, boundary modes, output shapes, cost, Flax drop-in."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import jaxconv
from jaxconv._src.reference import relative_error

IMPLEMENTATIONS = ["xla", "im2col", "taps"]
rng = np.random.default_rng(0)
X = jnp.asarray(rng.standard_normal((2, 9, 8, 3)), jnp.float32)
W = jnp.asarray(rng.standard_normal((3, 4, 3, 5)), jnp.float32)
DN = ("NHWC", "HWIO", "NHWC")


def lax_conv(x, w, pads, stride=(1, 1), dil=(1, 1), groups=1):
    return lax.conv_general_dilated(
        x,
        w,
        stride,
        pads,
        rhs_dilation=dil,
        dimension_numbers=DN,
        feature_group_count=groups,
        precision="highest",
    )


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize(
    "padding,pads",
    [
        ("VALID", [(0, 0), (0, 0)]),
        ("SAME", [(1, 1), (1, 2)]),
        ("same", [(1, 1), (1, 2)]),
        ("SAME_LOWER", [(1, 1), (2, 1)]),
        ("FULL", [(2, 2), (3, 3)]),
        ("CAUSAL", [(2, 0), (3, 0)]),
        (1, [(1, 1), (1, 1)]),
        ((2, (0, 1)), [(2, 2), (0, 1)]),
        ([(-1, 2), (1, -1)], [(-1, 2), (1, -1)]),
    ],
)
def test_padding_words_and_forms(impl, padding, pads):
    out = jaxconv.conv(X, W, padding=padding, implementation=impl)
    assert relative_error(out, lax_conv(X, W, pads)) < 2e-5


def test_same_keeps_size_and_causal_never_looks_ahead():
    x = jnp.asarray(rng.standard_normal((1, 10, 2)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((4, 2, 3)), jnp.float32)
    assert jaxconv.conv(x, w, padding="SAME").shape == (1, 10, 3)
    y = jaxconv.conv(x, w, padding="CAUSAL", dilation=2)
    y_cut = jaxconv.conv(x.at[:, 6:].set(99.0), w, padding="CAUSAL", dilation=2)
    np.testing.assert_allclose(y[:, :6], y_cut[:, :6], rtol=1e-6)  # outputs < 6 ignore the future
    assert not np.allclose(y[:, 6:], y_cut[:, 6:])


MODE_TO_NUMPY = {
    "circular": "wrap",
    "wrap": "wrap",
    "reflect": "reflect",
    "symmetric": "symmetric",
    "replicate": "edge",
    "edge": "edge",
}


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("mode", sorted(MODE_TO_NUMPY) + ["constant", "zeros"])
@pytest.mark.parametrize("padding", ["SAME", 2, [(1, 2), (3, -1)]])
def test_boundary_modes_against_numpy_pad(impl, mode, padding):
    x = np.asarray(rng.standard_normal((2, 6, 7, 3)), np.float32)
    w = np.asarray(rng.standard_normal((3, 3, 3, 4)), np.float32)
    pads = {"SAME": [(1, 1), (1, 1)], 2: [(2, 2), (2, 2)]}.get(
        padding if not isinstance(padding, list) else None, padding
    )
    widths = [(0, 0)] + [(max(lo, 0), max(hi, 0)) for lo, hi in pads] + [(0, 0)]
    if mode in MODE_TO_NUMPY:
        xp = np.pad(x, widths, mode=MODE_TO_NUMPY[mode])
    else:
        xp = np.pad(x, widths, constant_values=1.5 if mode == "constant" else 0.0)
    crops = [(min(lo, 0), min(hi, 0)) for lo, hi in pads]
    ref = lax_conv(jnp.asarray(xp), jnp.asarray(w), crops)
    out = jaxconv.conv(
        x, w, padding=padding, padding_mode=mode, padding_value=1.5, implementation=impl
    )
    assert relative_error(out, ref) < 2e-5


def test_circular_wraps_across_the_ends():
    x = jnp.arange(8.0).reshape(1, 8, 1)
    w = jnp.asarray([1.0, 0.0, 0.0]).reshape(3, 1, 1)  # picks the left neighbour
    y = jaxconv.conv(x, w, padding="SAME", padding_mode="circular")
    np.testing.assert_array_equal(np.asarray(y).ravel(), [7, 0, 1, 2, 3, 4, 5, 6])


@pytest.mark.parametrize(
    "args",
    [
        ((8, 3, 32, 32), (16, 3, 3, 3), 2, "SAME", None, None, None, 1),
        ((8, 3, 31, 17), (16, 3, 5, 2), (2, 3), "VALID", None, (2, 1), None, 1),
        ((4, 4, 10), (6, 2, 3), 1, [(1, 2)], (2,), None, None, 2),
        (
            (2, 10, 11, 4),
            (3, 3, 4, 8),
            1,
            [(1, 1), (0, 2)],
            (1, 2),
            (2, 1),
            ("NHWC", "HWIO", "NCHW"),
            1,
        ),
    ],
)
def test_output_shape_matches_lax(args):
    lhs, rhs, s, pad, ld, rd, dn, g = args
    n = len(lhs) - 2
    strides = (s,) * n if isinstance(s, int) else s
    out = lax.conv_general_dilated(jnp.zeros(lhs), jnp.zeros(rhs), strides, pad, ld, rd, dn, g)
    assert jaxconv.output_shape(lhs, rhs, strides, pad, ld, rd, dn, g) == out.shape


def test_cost_figures():
    spec = jaxconv.ConvSpec.create((8, 56, 56, 64), (3, 3, 64, 64), 1, "SAME", dimension_numbers=DN)
    cost = jaxconv.conv_cost(spec)
    assert cost["macs"] == 8 * 56 * 56 * 64 * 64 * 9
    assert cost["flops"] == 2 * cost["macs"]
    assert cost["bytes_read"] == (8 * 56 * 56 * 64 + 9 * 64 * 64) * 4
    assert cost["bytes_written"] == 8 * 56 * 56 * 64 * 4
    dw = jaxconv.ConvSpec.create(
        (8, 56, 56, 64), (3, 3, 1, 64), 1, "SAME", dimension_numbers=DN, feature_group_count=64
    )
    assert dw.cost()["macs"] * 64 == cost["macs"]  # depthwise is C times cheaper


def test_spec_is_hashable_and_canonical():
    a = jaxconv.ConvSpec.create((1, 8, 8, 3), (3, 3, 3, 4), 1, "SAME", dimension_numbers=DN)
    b = jaxconv.ConvSpec.create(
        (1, 8, 8, 3), (3, 3, 3, 4), (1, 1), [(1, 1), (1, 1)], dimension_numbers=DN
    )
    assert a == b and hash(a) == hash(b)
    assert {a: 1}[b] == 1


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_bias_activation_and_unbatched(impl):
    b = jnp.asarray(rng.standard_normal(5), jnp.float32)
    out = jaxconv.conv(X, W, bias=b, activation=jax.nn.relu, implementation=impl)
    ref = jax.nn.relu(lax_conv(X, W, [(1, 1), (1, 2)]) + b)
    assert relative_error(out, ref) < 2e-5
    single = jaxconv.conv(X[0], W, bias=b, activation=jax.nn.relu, implementation=impl)
    assert single.shape == out.shape[1:]
    assert relative_error(single, out[0]) < 2e-5


def test_lax_drop_in_defaults_and_flax_callable():
    flax_nn = pytest.importorskip("flax.linen")
    xl = jnp.transpose(X, (0, 3, 1, 2))
    wl = jnp.transpose(W, (3, 2, 0, 1))
    # lax's default layout (NCHW, OIHW) and positional arguments
    assert (
        relative_error(
            jaxconv.conv_general_dilated(xl, wl, (1, 1), "SAME"),
            lax.conv_general_dilated(xl, wl, (1, 1), "SAME", precision="highest"),
        )
        < 2e-5
    )
    # Flax passes its own keywords (and out_sharding) to the callable
    layer = flax_nn.Conv(5, (3, 4), conv_general_dilated=jaxconv.conv_general_dilated)
    ref_layer = flax_nn.Conv(5, (3, 4))
    params = ref_layer.init(jax.random.key(0), X)
    assert relative_error(layer.apply(params, X), ref_layer.apply(params, X)) < 2e-5
    out = jaxconv.conv_general_dilated(
        xl, wl, (1, 1), "SAME", implementation="taps", out_sharding=None
    )
    assert out.shape == (2, 5, 9, 8)


def test_implementations_listed_and_auto_choice():
    names = jaxconv.implementations()
    assert {"xla", "im2col", "taps"} <= set(names)
    dense = jaxconv.ConvSpec.create((1, 8, 8, 4), (3, 3, 4, 4), 1, "SAME", dimension_numbers=DN)
    grouped = jaxconv.ConvSpec.create(
        (1, 8, 8, 4), (3, 3, 1, 4), 1, "SAME", dimension_numbers=DN, feature_group_count=4
    )
    assert jaxconv.auto_order(dense, "cpu")[0] in names
    assert jaxconv.auto_order(grouped, "cpu")[:2] == ["cpu_direct", "taps"]


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("pads", [[(-1, 1)], [(2, -1)], [(-2, -1)], [(-1, 3)]])
@pytest.mark.parametrize("input_dilation", [1, 2, 3])
def test_crops_are_computed_right(impl, pads, input_dilation):
    # XLA:CPU returns values ~1e16 for lax.conv_general_dilated with pads ((-1, 1),) and a
    # 1-wide window (jax 0.10.2); jaxconv applies crops as slices, so every path is right.
    x = jnp.asarray(rng.standard_normal((1, 5, 16)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((1, 16, 2)), jnp.float32)
    (lo, hi) = pads[0]
    xp = lax.pad(x, 0.0, [(0, 0, 0), (lo, hi, input_dilation - 1), (0, 0, 0)])
    ref = lax.conv_general_dilated(xp, w, (1,), "VALID", dimension_numbers=("NWC", "WIO", "NWC"))
    out = jaxconv.conv(x, w, padding=pads, input_dilation=input_dilation, implementation=impl)
    assert relative_error(out, ref) < 2e-5
