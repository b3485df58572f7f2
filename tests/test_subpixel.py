"""The sub-pixel split of input-dilated (transposed) convolutions into ordinary ones
(``jaxconv._src.subpixel``), exhaustively over small 1-D geometries and on 2-D layouts,
against lax on the dilated form."""

import itertools

import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxconv._src import subpixel
from jaxconv._src.spec import ConvSpec


def _lax(x, w, spec):
    return lax.conv_general_dilated(x, w, **spec.lax_kwargs())


def _numpy_conv1d(x, w, spec):
    """Direct 1-D convolution (NCW / OIW) in numpy: dilate, pad (negative crops), slide."""
    (d,), (lo, hi) = spec.lhs_dilation, spec.padding[0]
    n, c, length = x.shape
    xd = np.zeros((n, c, (length - 1) * d + 1))
    xd[:, :, ::d] = x
    xd = np.pad(xd, ((0, 0), (0, 0), (max(lo, 0), max(hi, 0))))
    xd = xd[:, :, max(-lo, 0) : xd.shape[2] - max(-hi, 0)]
    (s,), (rd,) = spec.window_strides, spec.rhs_dilation
    g = spec.feature_group_count
    o, i, k = w.shape
    out = np.zeros((n, o, spec.out_spatial[0]))
    for j in range(out.shape[2]):
        win = xd[:, :, j * s : j * s + (k - 1) * rd + 1 : rd]  # (n, c, k)
        for gi in range(g):
            xs = win[:, gi * i : (gi + 1) * i]
            ws = w[gi * (o // g) : (gi + 1) * (o // g)]
            out[:, gi * (o // g) : (gi + 1) * (o // g), j] = np.einsum("nck,ock->no", xs, ws)
    return out


def test_phases_cover_every_output_once():
    spec = ConvSpec.create((1, 1, 7), (1, 1, 4), (2,), [(3, 2)], lhs_dilation=(3,))
    seen = []
    for ph in subpixel.phases(spec):
        (r,), (e,), (c,) = ph.residue, ph.every, ph.count
        seen += [r + j * e for j in range(c)]
        assert ph.spec is None or ph.spec.lhs_dilation == (1,)
    assert sorted(seen) == list(range(spec.out_spatial[0]))


def test_one_dimensional_geometries_exhaustively():
    rng = np.random.default_rng(0)
    checked = 0
    for n, k, stride, d, rhs_dil in itertools.product(
        range(1, 5), range(1, 5), range(1, 4), range(2, 4), (1, 2)
    ):
        for lo, hi in [(0, 0), (1, 2), (-1, 3), (3, -1), (4, 4)]:
            if (n - 1) * d + 1 + lo + hi < (k - 1) * rhs_dil + 1:
                continue
            groups = 1 + n % 2  # shared-geometry phases merge only without groups
            spec = ConvSpec.create(
                (2, 4, n),
                (6, 4 // groups, k),
                (stride,),
                [(lo, hi)],
                lhs_dilation=(d,),
                rhs_dilation=(rhs_dil,),
                feature_group_count=groups,
            )
            x = rng.standard_normal(spec.lhs_shape)
            w = rng.standard_normal(spec.rhs_shape)
            got = subpixel.conv(x, w, spec, _numpy_conv1d)
            want = _numpy_conv1d(x, w, spec)
            assert got.shape == want.shape
            # (crops go through jnp: float32 without x64)
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=str(spec))
            checked += 1
    assert checked > 500


@pytest.mark.parametrize(
    "dn, strides, padding, lhs_dil, rhs_dil",
    [
        (("NHWC", "HWIO", "NHWC"), (1, 2), [(2, 1), (0, 3)], (2, 3), (1, 2)),
        (("NCHW", "OIHW", "NCHW"), (1, 1), [(2, 2), (2, 2)], (2, 2), (1, 1)),  # DCGAN-like
        (("NHWC", "OHWI", "NCHW"), (1, 1), [(1, 1), (1, 1)], (2, 2), (1, 1)),  # U-Net 2x2
    ],
)
def test_two_dimensional_layouts(dn, strides, padding, lhs_dil, rhs_dil, x64):
    rng = np.random.default_rng(1)
    lhs = {"NHWC": (2, 5, 6, 3), "NCHW": (2, 3, 5, 6)}[dn[0]]
    rhs = {"HWIO": (4, 3, 3, 5), "OIHW": (5, 3, 4, 3), "OHWI": (5, 2, 2, 3)}[dn[1]]
    spec = ConvSpec.create(
        lhs,
        rhs,
        strides,
        padding,
        lhs_dilation=lhs_dil,
        rhs_dilation=rhs_dil,
        dimension_numbers=dn,
    )
    x = jnp.asarray(rng.standard_normal(lhs))
    w = jnp.asarray(rng.standard_normal(rhs))
    np.testing.assert_allclose(subpixel.conv(x, w, spec, _lax), _lax(x, w, spec), atol=1e-12)
