"""Window geometry shared by the window-gather implementations (im2col, taps).

Both work in one canonical layout, channels last: input ``(N, *spatial, C)``, kernel
``(*window, I, O)``, output ``(N, *spatial, O)``. Input dilation and padding (crops
too) are applied once, by ``lax.pad`` with interior padding, so that output position
``o`` and tap ``t`` read padded position ``o * stride + t * rhs_dilation`` on each axis.
Groups are a reshape: input channels ``(G, I)``, output features ``(G, B, O')``, input
batch ``(B, N')`` with at most one of ``G`` (feature groups) and ``B`` (batch groups)
larger than one, and one contraction over ``I`` (and the taps) per group.
"""

from __future__ import annotations

import itertools
import math
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxconv._src.spec import ConvSpec, dtype_kind


def lhs_to_channels_last(lhs, spec: ConvSpec):
    """Transpose an input in the spec's layout into ``(N, *sp, C)``."""
    lhs_spec = spec.dimension_numbers.lhs_spec
    return jnp.transpose(lhs, (lhs_spec[0],) + tuple(lhs_spec[2:]) + (lhs_spec[1],))


def to_channels_last(lhs, rhs, spec: ConvSpec):
    """Transpose operands into ``(N, *sp, C)`` and ``(*win, I, O)``."""
    rhs_spec = spec.dimension_numbers.rhs_spec
    rhs_cl = jnp.transpose(rhs, tuple(rhs_spec[2:]) + (rhs_spec[1], rhs_spec[0]))
    return lhs_to_channels_last(lhs, spec), rhs_cl


def from_channels_last(out, spec: ConvSpec):
    """Transpose a ``(N, *sp, O)`` result into the spec's output layout."""
    out_spec = spec.dimension_numbers.out_spec
    n = spec.nspatial
    # logical axis order of `out` is (batch, *spatial, feature)
    logical_pos = (0, n + 1) + tuple(range(1, n + 1))  # batch, feature, *spatial
    perm = [0] * (n + 2)
    for logical, dim in enumerate(out_spec):
        perm[dim] = logical_pos[logical]
    return jnp.transpose(out, perm)


def dilate_and_pad(x_cl, spec: ConvSpec):
    """Apply input dilation and the (zero) padding, crops included, in one ``lax.pad``."""
    config = [(0, 0, 0)]
    config += [(lo, hi, d - 1) for (lo, hi), d in zip(spec.padding, spec.lhs_dilation)]
    config += [(0, 0, 0)]
    if all(c == (0, 0, 0) for c in config):
        return x_cl
    return lax.pad(x_cl, jnp.zeros((), x_cl.dtype), config)


def pad_last(a, size: int):
    """``a`` zero-padded on its last axis to ``size``."""
    extra = size - a.shape[-1]
    return a if extra == 0 else jnp.pad(a, [(0, 0)] * (a.ndim - 1) + [(0, extra)])


def accumulation_dtype(spec: ConvSpec):
    """Dtype in which partial sums are kept: the preferred type, else float32 for
    floating inputs narrower than 32 bits, else the input dtype."""
    if spec.preferred_element_type is not None:
        return spec.preferred_element_type
    dt = spec.lhs_dtype
    if dtype_kind(dt) == "f" and dt.itemsize < 4:
        return np.dtype(np.float32)
    return dt


def group_sizes(spec: ConvSpec) -> tuple[int, int, int, int]:
    """``(G, B, I, O')``: feature groups, batch groups, input channels per group and
    output features per group."""
    G, B = spec.feature_group_count, spec.batch_group_count
    return G, B, spec.rhs_in_features, spec.out_features // (G * B)


def split_groups_lhs(x, spec: ConvSpec):
    """``(N, *rest, C)`` -> ``(B, N', *rest, G, I)``."""
    G, B, I, _ = group_sizes(spec)
    N = x.shape[0]
    return x.reshape((B, N // B) + x.shape[1:-1] + (G, I))


def split_groups_rhs(w, spec: ConvSpec):
    """``(*lead, I, O)`` -> ``(*lead, I, G, B, O')``."""
    G, B, I, Og = group_sizes(spec)
    return w.reshape(w.shape[:-1] + (G, B, Og))


def merge_groups_out(y):
    """``(N', *rest, G, B, O')`` -> ``(N', *rest, O)``."""
    return y.reshape(y.shape[:-3] + (y.shape[-3] * y.shape[-2] * y.shape[-1],))


def tap_starts(spec: ConvSpec):
    """All kernel taps, as (multi-index, start offsets in the padded input)."""
    idx = np.stack(np.meshgrid(*[np.arange(k) for k in spec.window], indexing="ij"), -1)
    idx = idx.reshape(-1, spec.nspatial) if spec.nspatial else np.zeros((1, 0), int)
    return [
        (tuple(int(t) for t in tap), tuple(int(t) * d for t, d in zip(tap, spec.rhs_dilation)))
        for tap in idx
    ]


class TapRead(NamedTuple):
    """Where one kernel tap reads the *unpadded, undilated* input and which outputs
    those reads feed, per spatial axis.

    The tap reads ``count`` input positions from ``start`` with step ``step``; they
    feed output positions ``lo, lo + every, ...`` (``hi`` positions after the last one
    are not fed). Positions of the padded, dilated input that are zeros are never read:
    the kernel gradient of a transposed convolution (input dilation ``d``) touches only
    the real inputs, ``d**n`` times fewer than the dilated form.
    """

    tap: tuple[int, ...]
    start: tuple[int, ...]
    step: tuple[int, ...]
    count: tuple[int, ...]
    lo: tuple[int, ...]
    every: tuple[int, ...]
    hi: tuple[int, ...]


def _axis_read(n, out, stride, lhs_dil, lo_pad, offset):
    """One axis of :class:`TapRead`: input size ``n``, output size ``out``; the tap
    reads padded-dilated position ``o * stride + offset`` for output ``o``. Returns
    ``(start, step, count, lo, every, hi)`` or None when the tap reads only zeros."""
    d = lhs_dil
    # dilated index q = o * stride + offset - lo_pad must be a multiple of d in [0, (n-1) d]
    c = (lo_pad - offset) % d
    g = math.gcd(stride, d)
    if c % g:
        return None
    every = d // g
    o0 = next(o for o in range(every) if (o * stride) % d == c)
    o_min = max(0, -((offset - lo_pad) // stride))  # ceil((lo_pad - offset) / stride)
    o_max = min(out - 1, ((n - 1) * d + lo_pad - offset) // stride)
    first = o_min + (o0 - o_min) % every
    last = o_max - (o_max - o0) % every
    if last < first:
        return None
    count = (last - first) // every + 1
    start = (first * stride + offset - lo_pad) // d
    return start, stride // g, count, first, every, out - 1 - last


def tap_reads(spec: ConvSpec) -> list[TapRead]:
    """Every kernel tap that reads at least one real input element (see
    :class:`TapRead`), in :func:`tap_starts` order; taps reading only padding are
    left out."""
    if not spec.nspatial:
        return [TapRead((), (), (), (), (), (), ())]
    reads = []
    for tap, offsets in tap_starts(spec):
        axes = []
        for ax, off in enumerate(offsets):
            r = _axis_read(
                spec.lhs_spatial[ax],
                spec.out_spatial[ax],
                spec.window_strides[ax],
                spec.lhs_dilation[ax],
                spec.padding[ax][0],
                off,
            )
            if r is None:
                break
            axes.append(r)
        else:
            reads.append(TapRead(tap, *(tuple(v) for v in zip(*axes))))
    return reads


def window_slice(x, start, count, step):
    """``x[:, start :: step][:count]`` on spatial axes ``1..len(start)`` of a
    ``(N, *spatial, ...)`` array: ``count`` positions per axis, every ``step``-th from
    ``start``. The one strided slice behind every tap read."""
    n = len(start)
    rest = x.ndim - 1 - n
    limits = tuple(s + (c - 1) * st + 1 for s, c, st in zip(start, count, step))
    return lax.slice(
        x,
        (0,) + tuple(start) + (0,) * rest,
        (x.shape[0],) + limits + x.shape[1 + n :],
        (1,) + tuple(step) + (1,) * rest,
    )


def read_tap(x, read: TapRead):
    """The ``(N, *count, C)`` input elements (channels last) that one tap reads."""
    return window_slice(x, read.start, read.count, read.step)


def out_window(y, read: TapRead):
    """The ``(N, *count, ...)`` output positions (spatial axes 1..n) one tap writes."""
    return window_slice(y, read.lo, read.count, read.every)


class Region(NamedTuple):
    """One box of the output and the input box it reads (spatial axes only).

    The output of a convolution without input dilation splits, per axis, into at most
    three ranges: outputs whose first taps read the low padding, outputs whose taps all
    read real input (the interior), and outputs whose last taps read the high padding.
    Their products are boxes (``3**n`` at most). An interior box reads a plain slice of
    the input; a border box reads a small slice, zero-padded by ``pad``. So padding is
    materialised only around the borders, and the bulk of the work is strided slices
    of the unpadded input, which XLA fuses into one vectorised loop. (Materialising the
    padded input costs a full copy: 14 of the 15.5 ms of MobileNetV2's 112x112x96
    stride-2 layer. Fusing one pad per tap into the loop instead costs a select per tap
    and element: 3.4x slower at 7x7. See ``benchmarks/NOTES.md``.) Inputs of at most
    ``SPLIT_REGIONS_BYTES`` are one box, the whole padded input: there the copy is cheap
    and the split would only multiply the program (a 13x13 window: 9 boxes of 169 taps,
    10.6 s to lower and compile instead of 1.1 s).
    """

    out_start: tuple[int, ...]
    out_size: tuple[int, ...]
    in_start: tuple[int, ...]
    in_stop: tuple[int, ...]
    pad: tuple[tuple[int, int], ...]

    @property
    def reads_input(self) -> bool:
        """False when the box reads only padding (its output is zero)."""
        return all(e > s for s, e in zip(self.in_start, self.in_stop))


def _axis_ranges(n, out, stride, lo, span):
    """Output ranges ``[(start, stop)]`` of one axis: low border, interior, high border
    (empty ones left out). ``span`` is the dilated window's extent."""
    a = min(out, max(0, -(-lo // stride)))  # first output whose first tap reads input
    b = max(a, min(out, (n - 1 + lo - (span - 1)) // stride + 1))  # first past the interior
    return [(s, e) for s, e in ((0, a), (a, b), (b, out)) if e > s]


#: Inputs of at most this many bytes are read as one padded box: their padded copy is
#: cheap, and splitting into up to ``3**n`` boxes multiplies the program's size (and its
#: compile time) by as much.
SPLIT_REGIONS_BYTES = 1 << 20


def regions(spec: ConvSpec) -> list[Region]:
    """The output boxes of :class:`Region` (specs without input dilation only): one box,
    the whole padded input, for inputs of at most ``SPLIT_REGIONS_BYTES``."""
    if any(d != 1 for d in spec.lhs_dilation):
        raise ValueError("regions() takes specs without input dilation")
    split = math.prod(spec.lhs_shape) * np.dtype(spec.lhs_dtype).itemsize > SPLIT_REGIONS_BYTES
    per_axis = []
    for n, out, st, (lo, _hi), k, d in zip(
        spec.lhs_spatial,
        spec.out_spatial,
        spec.window_strides,
        spec.padding,
        spec.window,
        spec.rhs_dilation,
    ):
        span = (k - 1) * d + 1
        boxes = []
        for s, e in _axis_ranges(n, out, st, lo, span) if split else [(0, out)]:
            first = s * st - lo  # input index read by the first tap of output s
            last = (e - 1) * st + span - 1 - lo  # read by the last tap of output e - 1
            i0, i1 = max(0, first), min(n, last + 1)
            if i1 <= i0:  # only padding: an empty box (Region.reads_input is False)
                i0 = i1 = 0
            boxes.append((s, e - s, i0, i1, (i0 - first, last + 1 - i1)))
        per_axis.append(boxes)
    out = []
    for combo in itertools.product(*per_axis):
        out.append(
            Region(*(tuple(v) for v in zip(*combo))) if combo else Region((), (), (), (), ())
        )
    return out


def region_input(x, region: Region):
    """The channels-last input box a region reads, zero-padded where it leaves the
    input: ``(N, *box, C)``."""
    n = len(region.in_start)
    box = lax.slice(
        x, (0,) + region.in_start + (0,), (x.shape[0],) + region.in_stop + (x.shape[-1],)
    )
    if all(p == (0, 0) for p in region.pad):
        return box
    config = [(0, 0, 0)] + [(lo, hi, 0) for lo, hi in region.pad] + [(0, 0, 0)] * (x.ndim - 1 - n)
    return lax.pad(box, jnp.zeros((), x.dtype), config)


def region_tap(xr, offset, region: Region, spec: ConvSpec):
    """The ``(N, *region.out_size, C)`` slice of a region's input that the tap at
    ``offset`` (its start in the padded input, as in :func:`tap_starts`) reads."""
    return window_slice(xr, offset, region.out_size, spec.window_strides)


def assemble(pieces: list, regions_: list[Region], nspatial: int):
    """Put the per-region outputs ``(N, *out_size, ...)`` together into the whole
    output (spatial axes ``1..nspatial``) by nested concatenation (measured as fast
    as padding the interior and updating the borders in place, and 1.5-7x faster than
    summing one padded copy per region; NOTES.md section 8)."""
    if nspatial == 0:
        return pieces[0]

    def build(items, axis):
        if axis == nspatial:
            (piece,) = [p for _r, p in items]
            return piece
        starts = sorted({r.out_start[axis] for r, _ in items})
        parts = [
            build([(r, p) for r, p in items if r.out_start[axis] == s], axis + 1) for s in starts
        ]
        return parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=1 + axis)

    return build(list(zip(regions_, pieces)), 0)
