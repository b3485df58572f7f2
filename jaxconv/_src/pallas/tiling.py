"""Tiling and index arithmetic for the Pallas GPU convolution kernels.

Backend-independent: nothing here calls a Pallas backend. The Triton kernels
(:mod:`jaxconv._src.pallas.triton`) use it today; a Mosaic GPU (Hopper) variant can
reuse the same geometry, formulations, block choices and offset arithmetic.

Two formulations of one convolution, both implicit GEMMs (no patch matrix is written):

* **output-stationary** (``"forward"``), for specs with ``batch_group_count == 1``:
  operands channels-last, input ``x (N, *S, C)``, kernel ``w (*K, I, O)``, output
  ``y (N, *P, O)``. A program owns ``BM`` output pixels (flattened over ``N, *P``) times
  ``BN`` output channels of one group, and reduces over taps x input-channel blocks::

      y[n, p, g*O' + o] = sum_{t, c} x[n, pos(p, t), g*I + c] * w[t, c, g*O' + o]

* **tap-stationary** (``"weight_grad"``), for specs with ``feature_group_count == 1``
  (the kernel-gradient specs the core derives, with ``batch_group_count`` = the forward's
  feature groups and a window as large as the forward output): input ``x (F, *S, Nb)``,
  kernel ``w (F, *K, O)``, output ``y (*P, Nb / B, O)``. A program owns one output pixel
  (a forward kernel tap) times ``BB x BO`` (batch, channel) and reduces over ``F x K``
  (forward batch x forward output pixels), split ``splits`` ways::

      y[q, b, gb*O'' + o] = sum_{f, t} x[f, pos(q, t), gb*Nb' + b] * w[f, t, gb*O'' + o]

For NHWC/HWIO forward operands both formulations read the gradient specs' operands in
their natural memory order (no transposes). ``pos`` is the same on both:
``pos = out * stride + tap * rhs_dilation - pad_lo`` on the input-dilated grid, valid when
inside it and on a multiple of ``lhs_dilation`` (masked loads: no zeros are materialised).

Each formulation has a matrix-unit variant (``dot``) and a per-channel multiply-add
variant (``fma``) for small per-group sizes, which would waste the matrix unit on
one-channel dots. Convolutions with a few channels per group (ResNeXt's 4 or 8) take
the matrix unit anyway, ``groups_per_block`` groups at a time: the program's channel
tiles span whole groups; forward multiplies by a block-diagonal kernel tile (the
off-diagonal lanes load as zeros), weight_grad keeps the diagonal blocks of its product.
A ``16 x 16`` dot then does ``16 / min(I, O')`` times the useful work, still far faster
than multiply-adds.
"""

from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp
from jax import lax

from jaxconv._src.spec import ConvSpec

#: Smallest dot operand extent the GPU matrix-unit lowering accepts (Triton: 16).
MIN_DOT = 16
#: Per-group sizes below this use the multiply-add variant instead of the matrix unit.
DOT_MIN_CHANNELS = 8
#: Grouped convolutions with ``min(I, O')`` in ``[BLOCKDIAG_MIN_CHANNELS,
#: BLOCKDIAG_MAX_CHANNELS)`` run on the matrix unit with block-diagonal tiles of about
#: ``BLOCKDIAG_LANES`` lanes (the smaller per-group side times the groups per block).
BLOCKDIAG_MIN_CHANNELS = 2
BLOCKDIAG_MAX_CHANNELS = 16
BLOCKDIAG_LANES = 32
#: Largest channel tile of a block-diagonal program (its groups fit one tile).
BLOCKDIAG_MAX_TILE = 128
#: Number of programs the tap-stationary split aims for (about 4 waves on 132 SMs).
TARGET_PROGRAMS = 528


def next_pow2(n: int) -> int:
    return 1 if n <= 1 else 1 << (int(n) - 1).bit_length()


def clamp_pow2(n: int, lo: int, hi: int) -> int:
    """The power of two covering ``n``, clamped to ``[lo, hi]`` (both powers of two)."""
    return max(lo, min(hi, next_pow2(n)))


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


@dataclasses.dataclass(frozen=True)
class Geometry:
    """Static sizes of one convolution in the kernels' channels-last view.

    ``in_spatial``/``out_spatial``/``window`` as in the spec; ``pad_lo`` the low pads
    (negative crops). Channel sizes: ``channels`` = the contiguous channel extent of the
    input rows (``C`` forward, ``Nb`` tap-stationary), ``out_features`` = ``O``.
    """

    formulation: str  # "forward" | "weight_grad"
    variant: str  # "dot" | "fma"
    outer: int  # N (forward) or F (weight_grad): the leading, non-contiguous axis of x
    in_spatial: tuple[int, ...]
    out_spatial: tuple[int, ...]
    window: tuple[int, ...]
    strides: tuple[int, ...]
    rhs_dilation: tuple[int, ...]
    lhs_dilation: tuple[int, ...]
    pad_lo: tuple[int, ...]
    channels: int  # C (forward) or Nb (weight_grad)
    groups: int  # G (forward) or B (weight_grad)
    in_per_group: int  # I (forward) or Nb' (weight_grad)
    out_features: int  # O
    out_per_group: int  # O' (forward) or O'' (weight_grad)
    #: Sub-pixel phases per axis (forward with input dilation; 1 elsewhere): see
    #: :func:`phases`.
    phase: tuple[int, ...] = ()
    #: dot variants: groups one program covers with a block-diagonal tile (1: the
    #: program's channels belong to one group): see :func:`groups_per_block`.
    groups_per_block: int = 1

    @property
    def taps(self) -> int:
        return math.prod(self.window)

    @property
    def out_pixels(self) -> int:
        return math.prod(self.out_spatial)

    @property
    def in_pixels(self) -> int:
        return math.prod(self.in_spatial)

    @property
    def phase_count(self) -> int:
        return math.prod(self.phase)

    @property
    def phase_out(self) -> tuple[int, ...]:
        """Output extent of one phase per axis (the largest phase's)."""
        return tuple(cdiv(p, ph) for p, ph in zip(self.out_spatial, self.phase))

    @property
    def phase_window(self) -> tuple[int, ...]:
        """Taps one phase visits per axis (an upper bound: the rest are masked)."""
        return tuple(cdiv(k, ph) for k, ph in zip(self.window, self.phase))

    @property
    def phase_rows(self) -> int:
        return self.outer * math.prod(self.phase_out)

    @property
    def phase_taps(self) -> int:
        return math.prod(self.phase_window)

    @property
    def rows(self) -> int:
        """Forward: output rows ``N * prod(P)``; weight_grad: reduction rows
        ``F * phase_taps`` (``F * prod(K)`` without input dilation)."""
        if self.formulation == "forward":
            return self.outer * self.out_pixels
        return self.outer * self.phase_taps


def formulation(spec: ConvSpec) -> str:
    """``"weight_grad"`` for batch-grouped specs and for ungrouped specs whose window
    covers more pixels than the output (kernel-gradient shaped), else ``"forward"``."""
    if spec.batch_group_count > 1:
        return "weight_grad"
    if spec.feature_group_count > 1:
        return "forward"
    return "weight_grad" if math.prod(spec.window) > math.prod(spec.out_spatial) else "forward"


def phases(spec: ConvSpec) -> tuple[int, ...]:
    """Sub-pixel decomposition of input dilation (transposed convolution).

    With window stride 1 and input dilation ``L`` on an axis, output pixels
    ``p = ph + L * j`` of one phase ``ph`` read real input samples only at the taps
    ``t = t0(ph) + L * i`` (with ``t0 = (pad_lo - ph) / rhs_dilation mod L``), so each
    program owns pixels of a single phase and visits only those taps instead of masking
    ``(L - 1) / L`` of its loads and multiply-adds. The tap-stationary (weight_grad)
    kernels use the same arithmetic the other way round: a program's output pixel ``q``
    fixes the phase ``q mod L``, and its reduction visits only the window positions
    ``t0 + L * i``. Axes where this does not hold (a stride, or a kernel dilation
    sharing a factor with ``L``) keep phase 1 and masks.
    """
    return tuple(
        ld if ld > 1 and st == 1 and math.gcd(rd, ld) == 1 else 1
        for ld, st, rd in zip(spec.lhs_dilation, spec.window_strides, spec.rhs_dilation)
    )


def geometry(spec: ConvSpec) -> Geometry:
    """The kernel geometry of a zero-boundary ``spec``."""
    form = formulation(spec)
    common = dict(
        in_spatial=spec.lhs_spatial,
        out_spatial=spec.out_spatial,
        window=spec.window,
        strides=spec.window_strides,
        rhs_dilation=spec.rhs_dilation,
        lhs_dilation=spec.lhs_dilation,
        pad_lo=tuple(lo for lo, _ in spec.padding),
        out_features=spec.out_features,
    )
    if form == "forward":
        G, I = spec.feature_group_count, spec.rhs_in_features
        Og = spec.out_features // G
        variant, gpb = _variant(G, I, Og)
        return Geometry(
            form,
            variant,
            outer=spec.batch,
            channels=spec.in_features,
            groups=G,
            in_per_group=I,
            out_per_group=Og,
            phase=phases(spec),
            groups_per_block=gpb,
            **common,
        )
    B = spec.batch_group_count
    Nb = spec.batch
    Og = spec.out_features // B
    variant, gpb = _variant(B, Nb // B, Og)
    return Geometry(
        form,
        variant,
        outer=spec.in_features,
        channels=Nb,
        groups=B,
        in_per_group=Nb // B,
        out_per_group=Og,
        phase=phases(spec),
        groups_per_block=gpb,
        **common,
    )


def groups_per_block(groups: int, in_per_group: int, out_per_group: int) -> int:
    """Groups a dot program covers with one block-diagonal tile (forward: of the
    kernel; weight_grad: of the product, whose off-diagonal blocks are dropped): enough
    for about :data:`BLOCKDIAG_LANES` lanes on the smaller per-group side when it is in
    ``[BLOCKDIAG_MIN_CHANNELS, BLOCKDIAG_MAX_CHANNELS)`` (a per-group tile would leave
    lanes of the 16-wide matrix-unit minimum empty), while both sides fit
    :data:`BLOCKDIAG_MAX_TILE`; 1 otherwise."""
    small, large = min(in_per_group, out_per_group), max(in_per_group, out_per_group)
    if groups == 1 or not BLOCKDIAG_MIN_CHANNELS <= small < BLOCKDIAG_MAX_CHANNELS:
        return 1
    gpb = min(groups, max(1, BLOCKDIAG_LANES // small), BLOCKDIAG_MAX_TILE // large)
    return max(1, gpb)


def _variant(groups: int, in_per_group: int, out_per_group: int) -> tuple[str, int]:
    """``(variant, groups_per_block)`` of either formulation: the matrix unit when both
    per-group sides reach :data:`DOT_MIN_CHANNELS` or several groups share a tile,
    multiply-adds otherwise."""
    gpb = groups_per_block(groups, in_per_group, out_per_group)
    dot = min(in_per_group, out_per_group) >= DOT_MIN_CHANNELS or gpb > 1
    return ("dot" if dot else "fma"), gpb


# --------------------------------------------------------------------------------------
# Block choices
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Blocks:
    """Tile sizes (powers of two) and launch hints of one kernel.

    forward/dot: ``m`` output rows x ``n`` channels, reducing ``k`` input channels a step.
    forward/fma: ``m`` output rows x ``n`` channels.
    weight_grad/dot: ``n`` (batch) x ``o`` channels, reducing ``k`` rows a step.
    weight_grad/fma: one batch index x ``o`` channels, reducing ``k`` rows a step.
    ``splits``: ways the weight_grad reduction is split (partials summed afterwards).
    """

    m: int = 1
    n: int = 1
    k: int = 1
    o: int = 1
    splits: int = 1
    num_warps: int = 4
    num_stages: int = 3


def blocks(geom: Geometry, itemsize: int) -> Blocks:
    """Heuristic tile sizes: matrix-unit friendly 128 x 128 output tiles for large
    problems, shrunk (not below the lowering's minimum) to cover small ones."""
    kmax = 64 if itemsize <= 2 else 32
    if geom.formulation == "forward":
        gpb = geom.groups_per_block
        if geom.variant == "dot" and gpb > 1:  # one tile spans the block's groups
            bn = clamp_pow2(gpb * geom.out_per_group, MIN_DOT, BLOCKDIAG_MAX_TILE)
            bk = clamp_pow2(gpb * geom.in_per_group, MIN_DOT, BLOCKDIAG_MAX_TILE)
            bm = clamp_pow2(geom.phase_rows, MIN_DOT, 128)
            return Blocks(m=bm, n=bn, k=bk, num_warps=4, num_stages=3)
        if geom.variant == "dot":
            bn = clamp_pow2(geom.out_per_group, MIN_DOT, 128)
            bm = clamp_pow2(geom.phase_rows, MIN_DOT, 128)
            bk = clamp_pow2(geom.in_per_group, MIN_DOT, kmax)
            warps = 8 if bm * bn >= 128 * 128 else 4
            return Blocks(m=bm, n=bn, k=bk, num_warps=warps, num_stages=3)
        bn = clamp_pow2(geom.out_features, 8, 64)
        bm = clamp_pow2(geom.phase_rows, 8, 64)
        return Blocks(m=bm, n=bn, num_warps=4, num_stages=2)
    # weight_grad: parallelism comes from output pixels x channel tiles x splits.
    gpb = geom.groups_per_block
    if geom.variant == "dot":
        cap = 64 if gpb == 1 else BLOCKDIAG_MAX_TILE
        bb = clamp_pow2(gpb * geom.in_per_group, MIN_DOT, cap)
        bo = clamp_pow2(gpb * geom.out_per_group, MIN_DOT, 128)
        bk = kmax
        tiles = (
            geom.out_pixels
            * cdiv(geom.groups, gpb)
            * cdiv(gpb * geom.in_per_group, bb)
            * cdiv(gpb * geom.out_per_group, bo)
        )
        warps = 8 if bb * bo >= 64 * 128 else 4
    else:
        bo = clamp_pow2(geom.out_features, 8, 64)
        bk = 64
        tiles = geom.out_pixels * geom.in_per_group * cdiv(geom.out_features, bo)
        warps = 4
    out_size = geom.out_pixels * geom.in_per_group * geom.out_features
    splits = max(1, min(cdiv(TARGET_PROGRAMS, tiles), cdiv(geom.rows, 4 * bk)))
    splits = max(1, min(splits, (2**31 - 1) // max(1, out_size)))  # 32-bit partial offsets
    if geom.variant == "dot":
        return Blocks(n=bb, o=bo, k=bk, splits=splits, num_warps=warps, num_stages=3)
    return Blocks(o=bo, k=bk, splits=splits, num_warps=warps, num_stages=2)


# --------------------------------------------------------------------------------------
# Index arithmetic (traced: works on scalars and on arrays, inside any kernel)
# --------------------------------------------------------------------------------------


def div(index, size: int):
    """``index // size`` for non-negative traced ``index`` and a static ``size``."""
    if size == 1:
        return index
    return lax.div(index, jnp.asarray(size, jnp.result_type(index)))


def rem(index, size: int):
    """``index % size`` for non-negative traced ``index`` and a static ``size``."""
    if size == 1:
        return jnp.zeros_like(index)
    return lax.rem(index, jnp.asarray(size, jnp.result_type(index)))


def group_lanes_ok(lane, first_group, per_group: int, gpb: int, total: int):
    """Which channel ``lane`` s (offsets within a block of ``gpb`` groups starting at
    group ``first_group``, ``per_group`` channels each) exist: inside the block and,
    for the last block, below ``total`` channels."""
    if gpb == 1:
        return lane < per_group
    return (lane < gpb * per_group) & (first_group * per_group + lane < total)


def same_group(rows, per_row: int, cols, per_col: int):
    """``(len(rows), len(cols))`` mask of lane pairs in the same group of a block: the
    block-diagonal of a tile spanning several groups."""
    return div(rows, per_row)[:, None] == div(cols, per_col)[None, :]


def unravel(index, sizes: tuple[int, ...]):
    """Row-major coordinates of a flat non-negative ``index`` over ``sizes`` (last
    fastest)."""
    coords = []
    for size in reversed(sizes[1:]):
        coords.append(rem(index, size))
        index = div(index, size)
    coords.append(index)
    return coords[::-1]


def ravel(coords, sizes: tuple[int, ...]):
    """Flat row-major index of ``coords`` over ``sizes``."""
    flat = coords[0]
    for c, size in zip(coords[1:], sizes[1:]):
        flat = flat * size + c
    return flat


def input_pixel(geom: Geometry, out_coords, tap_coords):
    """Flat input pixel read by output ``out_coords`` at tap ``tap_coords`` (each a list
    of per-axis scalars or arrays, broadcast together), and whether it exists (False in
    the padding and between input-dilated samples). The pixel is clamped to 0 where it
    does not exist, so it is always a safe address."""
    valid = None
    pos = []
    for ax in range(len(geom.in_spatial)):
        d = (
            out_coords[ax] * geom.strides[ax]
            + tap_coords[ax] * geom.rhs_dilation[ax]
            - geom.pad_lo[ax]
        )
        ld = geom.lhs_dilation[ax]
        ok = d >= 0
        if ld > 1:
            d = jnp.maximum(d, 0)
            ok = ok & (rem(d, ld) == 0)
            d = div(d, ld)
        ok = ok & (d < geom.in_spatial[ax])
        valid = ok if valid is None else valid & ok
        pos.append(d)
    flat = ravel(pos, geom.in_spatial) if pos else 0
    if valid is None:
        return flat, True
    return jnp.where(valid, flat, 0), valid


def safe(offsets, mask):
    """Offsets with masked-off entries replaced by 0 (always a valid address)."""
    return jnp.where(mask, offsets, 0)


def output_rows(geom: Geometry, phase_index, j):
    """Forward output rows ``j`` (an array) of phase ``phase_index`` (a scalar).

    Returns ``(n, p, m, ok, ph)``: batch index and per-axis output coordinates (clamped
    into range), the flat output row ``m`` over ``(N, *P)``, whether the row exists,
    and the phase's per-axis residues."""
    ph = unravel(phase_index, geom.phase)
    ok = j < geom.phase_rows
    n, *jc = unravel(jnp.minimum(j, geom.phase_rows - 1), (geom.outer,) + geom.phase_out)
    p = []
    for ax, L in enumerate(geom.phase):
        if L == 1:
            p.append(jc[ax])
            continue
        pa = ph[ax] + L * jc[ax]
        ok = ok & (pa < geom.out_spatial[ax])
        p.append(jnp.minimum(pa, geom.out_spatial[ax] - 1))
    return n, p, ravel([n] + p, (geom.outer,) + geom.out_spatial), ok, ph


def phase_tap(geom: Geometry, ph, step):
    """Tap visited at ``step`` (in ``range(phase_taps)``; a scalar or an array) by
    phase ``ph`` (per-axis residues).

    Returns ``(coords, flat, ok)``: per-axis tap coordinates (clamped), the flat tap
    index over the window, and whether the tap exists (True when known statically)."""
    jt = unravel(step, geom.phase_window)
    coords, ok = [], True
    for ax, L in enumerate(geom.phase):
        if L == 1:
            coords.append(jt[ax])
            continue
        inv = pow(geom.rhs_dilation[ax], -1, L)
        t0 = rem((geom.pad_lo[ax] % L + L - ph[ax]) * inv, L)
        ta = t0 + L * jt[ax]
        ok = ok & (ta < geom.window[ax])
        coords.append(jnp.minimum(ta, geom.window[ax] - 1))
    return coords, ravel(coords, geom.window), ok
