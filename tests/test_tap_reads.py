"""The tap geometry behind ``"taps"``: each tap reads the unpadded, undilated input and
places its products with one pad (``window.tap_reads``). Checked exhaustively against a
brute-force model of the padded, dilated input over small 1-D and 2-D geometries, and
end to end against lax where every tap, or some taps, read only padding."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import jaxconv
from jaxconv._src.impl import window as W
from jaxconv._src.spec import ConvSpec


def _brute_force(n, out, stride, lhs_dil, lo, offset):
    """``{output position: input position}`` for one tap on one axis."""
    pairs = {}
    for o in range(out):
        q = o * stride + offset - lo  # index into the dilated input
        if 0 <= q <= (n - 1) * lhs_dil and q % lhs_dil == 0:
            pairs[o] = q // lhs_dil
    return pairs


def _from_read(r):
    if r is None:
        return {}
    start, step, count, lo, every, _hi = r
    return {lo + k * every: start + k * step for k in range(count)}


def test_axis_reads_match_brute_force_exhaustively():
    checked = 0
    for n, k, stride, lhs_dil, rhs_dil in itertools.product(
        range(1, 6), range(1, 4), range(1, 4), range(1, 4), range(1, 3)
    ):
        for lo, hi in itertools.product(range(-1, 5), repeat=2):
            size = (n - 1) * lhs_dil + 1 + lo + hi
            span = (k - 1) * rhs_dil + 1
            if size < span:
                continue
            out = (size - span) // stride + 1
            for t in range(k):
                off = t * rhs_dil
                r = W._axis_read(n, out, stride, lhs_dil, lo, off)
                got = _from_read(r)
                want = _brute_force(n, out, stride, lhs_dil, lo, off)
                assert got == want, (n, k, stride, lhs_dil, rhs_dil, lo, hi, t, r)
                if r is not None:
                    assert r[3] + (r[2] - 1) * r[4] + 1 + r[5] == out  # placed size
                checked += 1
    assert checked > 10_000


def test_one_padded_box_for_small_inputs():
    spec = ConvSpec.create((2, 3, 6), (1, 3, 3), (1,), [(1, 2)])
    (box,) = W.regions(spec)
    assert (box.out_start, box.out_size, box.in_start, box.in_stop) == ((0,), (7,), (0,), (6,))
    assert box.pad == ((1, 2),)
    big = ConvSpec.create((2, 3, W.SPLIT_REGIONS_BYTES), (1, 3, 3), (1,), [(1, 2)])
    assert [r.out_size for r in W.regions(big)] == [(1,), (W.SPLIT_REGIONS_BYTES - 2,), (2,)]


def test_regions_tile_the_output_and_read_the_padded_input(split_regions):
    """Every region's taps see exactly what the same taps see in the padded input."""
    rng = np.random.default_rng(1)
    checked = most = 0
    for n, k, stride, rhs_dil in itertools.product(range(1, 7), range(1, 4), range(1, 4), (1, 2)):
        for lo, hi in itertools.product(range(-1, 4), repeat=2):
            span = (k - 1) * rhs_dil + 1
            if n + lo + hi < span:
                continue
            spec = ConvSpec.create(
                (2, 3, n), (1, 3, k), (stride,), [(lo, hi)], rhs_dilation=(rhs_dil,)
            )
            x = rng.standard_normal((2, n, 3)).astype(np.float32)  # channels last
            xp = np.pad(x, ((0, 0), (max(lo, 0), max(hi, 0)), (0, 0)))
            xp = xp[:, max(-lo, 0) : xp.shape[1] - max(-hi, 0)]
            covered = []
            boxes = W.regions(spec)
            most = max(most, len(boxes))
            for region in boxes:
                (s0,), (size,) = region.out_start, region.out_size
                covered.extend(range(s0, s0 + size))
                for _tap, (off,) in W.tap_starts(spec):
                    want = xp[:, s0 * stride + off : (s0 + size - 1) * stride + off + 1 : stride]
                    if region.reads_input:
                        got = W.region_tap(W.region_input(x, region), (off,), region, spec)
                        np.testing.assert_array_equal(np.asarray(got), want)
                    else:
                        assert not want.any()
                    checked += 1
            assert covered == list(range(spec.out_spatial[0]))
    assert checked > 1000
    assert most == 3  # low border, interior, high border


def test_tap_reads_skip_taps_that_read_only_padding():
    spec = ConvSpec.create(
        (1, 1, 2, 2), (1, 1, 3, 3), (1, 1), [(2, 2), (2, 2)], dimension_numbers=None
    )
    taps = {r.tap for r in W.tap_reads(spec)}
    assert len(taps) == 9  # the 6x6 padded input: every tap meets the 2x2 centre
    spec = ConvSpec.create(
        (1, 1, 2, 2), (1, 1, 3, 3), (3, 3), [(2, 2), (2, 2)], dimension_numbers=None
    )
    # outputs at padded rows 0 and 3 only: tap 0 reads rows 0 and 3 (zero, real), ...
    reads = W.tap_reads(spec)
    assert 0 < len(reads) < 9


@pytest.mark.parametrize(
    "shape, window, strides, padding, lhs_dil",
    [
        ((1, 2, 3, 3), (3, 2, 3, 3), (4, 4), [(4, 4), (4, 4)], (1, 1)),  # mostly padding
        ((2, 2, 4), (3, 2, 3), (3,), [(5, 5)], (3,)),  # transposed with a wide border
        ((2, 4, 5, 3), (6, 2, 2, 3), (2, 3), [(3, 1), (0, 4)], (2, 3)),  # groups=2 below
        ((2, 3, 1), (2, 3, 1), (2,), [(1, 1)], (1,)),  # every tap reads only padding
    ],
)
def test_taps_agrees_with_lax_where_taps_read_padding(
    shape, window, strides, padding, lhs_dil, split_regions
):
    rng = np.random.default_rng(0)
    groups = shape[1] // window[1]
    x = jnp.asarray(rng.standard_normal(shape), jnp.float32)
    w = jnp.asarray(rng.standard_normal(window), jnp.float32)
    kw = dict(lhs_dilation=lhs_dil, feature_group_count=groups)
    want = lax.conv_general_dilated(x, w, strides, padding, **kw)
    for impl in ("taps", "xla_taps_grad"):
        got = jaxconv.conv_general_dilated(x, w, strides, padding, implementation=impl, **kw)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)

        def loss(x, w, impl=impl):
            y = jaxconv.conv_general_dilated(x, w, strides, padding, implementation=impl, **kw)
            return jnp.sum(jnp.sin(y))

        def lax_loss(x, w):
            return jnp.sum(jnp.sin(lax.conv_general_dilated(x, w, strides, padding, **kw)))

        for a, b in zip(jax.grad(loss, (0, 1))(x, w), jax.grad(lax_loss, (0, 1))(x, w)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
