"""Layout, block sizes and the roofline model of the ``"pallas_tpu"`` kernels.

The kernel's view of a convolution (:class:`Layout`)
----------------------------------------------------
The wrapper (``kernel.py``) rewrites every spec into one shape the Mosaic kernel can
walk with contiguous, static slices only:

* channels last, channels on the 128-wide lane axis (padded to a multiple of 128);
* input dilation and padding applied once by ``lax.pad`` (interior padding for the
  transposed convolution, negative pads crop);
* strides removed by a *phase split* (space-to-depth): an axis of stride ``s`` becomes
  ``s`` phases of length ``Lph = out + (dilated_window - 1) // s``, so tap ``k`` reads
  phase ``(k * dilation) % s`` at shift ``(k * dilation) // s``;
* the last one or two spatial axes are flattened into one row axis. The output is
  computed on the *wide* grid (every row of the phase image, the columns past the
  output width are cropped afterwards), so every tap is one row shift ``f`` of the
  flattened input: ``out[r] += x[r + f] @ w[tap]``. In 3-D the leading (depth) axis
  stays a grid axis and each depth shift is its own input stream.

Block-size rule (:func:`choose_blocks`)
---------------------------------------
* Lanes: output features in blocks ``To`` of 256 (the v6e MXU width) when the padded
  count divides by 256, else 128; input features in blocks ``Tc`` of 512/256/128, the
  largest that divides the padded count (a reduction grid axis accumulates over them).
* Rows: the halo ``hr`` is the largest tap shift rounded up to the sublane tile (8 for
  32-bit, 16 for bfloat16); ``R`` is the output rows of a plane, capped at
  :data:`TARGET_ROWS`, rounded up to a multiple of ``hr``. A grid step reads its
  ``R``-row block and the ``hr``-row block after it (block index ``(i + 1) R / hr``), so
  the input is read ``1 + hr / R`` times. Without a halo (1x1 windows, patchifying
  strides) there is no halo block and ``R`` is all the rows when they fit
  :data:`TARGET_ROWS` (a full-extent block needs no sublane multiple), else a sublane
  multiple, preferably one in ``[TARGET_ROWS / 4, 2 TARGET_ROWS]`` that divides the rows
  (then the input needs no row padding at all).
* VMEM: the estimate :func:`vmem_bytes` (double-buffered input, weight and output
  blocks, the halo-joined input copy and the float32 accumulator) must stay within
  :data:`VMEM_BUDGET`; while it does not, ``Tc`` then ``To`` then ``R`` are halved
  (``R`` not below the halo). If the smallest blocks do not fit, the spec is refused
  with ``NotImplementedError`` naming the halo. The kernel asks Mosaic for
  :data:`VMEM_LIMIT` of scoped VMEM (v5e and v6e have 128 MiB of VMEM per core).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from jaxconv._src.spec import ConvSpec, default_dimension_numbers

LANES = 128
#: Output rows per grid step aimed at (before the VMEM check and the halo floor).
TARGET_ROWS = 512
#: Bytes of VMEM the blocks of one grid step may use (estimate of :func:`vmem_bytes`).
VMEM_BUDGET = 24 * 2**20
#: Scoped VMEM limit requested from Mosaic (``vmem_limit_bytes``).
VMEM_LIMIT = 32 * 2**20
#: The kernel unrolls its taps; a window with more taps than this is refused.
MAX_TAPS = 343
#: Supported operand dtypes.
DTYPES = ("float32", "bfloat16")


def round_up(x: int, m: int) -> int:
    return -(-x // m) * m


def sublanes(dtype) -> int:
    """Rows of one (sublane x lane) tile: 8 for 32-bit, 16 for 16-bit types."""
    return 8 * (4 // np.dtype(dtype).itemsize)


def _dilate(size: int, d: int) -> int:
    return 0 if size == 0 else 1 + d * (size - 1)


@dataclasses.dataclass(frozen=True)
class Layout:
    """Static geometry of the kernel for one spec (channels-last, phase split, flattened).

    Shapes: the prepared input is ``(N, P, D, Lrows, NT * cin_tp)`` (``P`` phases, ``D``
    depth planes, 1 unless 3-D); the output is ``(N, DOUT, nblk * R, NT * cout_tp)``.
    ``taps`` lists per kernel tap ``(phase, depth_shift, row_shift)`` in window order.
    """

    kind: str  # "matmul" or "depthwise"
    nspatial: int
    batch: int  # after folding batch groups into channels
    strides: tuple[int, ...]
    lph: tuple[int, ...]  # phase length per spatial axis
    out: tuple[int, ...]  # output spatial sizes
    taps: tuple[tuple[int, int, int], ...]
    groups: int  # feature groups after folding batch groups (1 for dense)
    in_per_group: int
    out_per_group: int
    groups_per_tile: int
    cin_tp: int  # padded input lanes per group tile (depthwise: all lanes)
    cout_tp: int  # padded output lanes per group tile (depthwise: all lanes)
    multiplier: int  # depthwise channel multiplier (1 otherwise)
    dtype: str
    out_dtype: str

    @property
    def phases(self) -> int:
        return math.prod(self.strides)

    @property
    def depth(self) -> int:
        return self.lph[0] if self.nspatial == 3 else 1

    @property
    def dout(self) -> int:
        return self.out[0] if self.nspatial == 3 else 1

    @property
    def depth_shifts(self) -> tuple[int, ...]:
        return tuple(sorted({e for _, e, _ in self.taps}))

    @property
    def flat_axes(self) -> tuple[int, ...]:
        return tuple(range(self.nspatial - min(self.nspatial, 2), self.nspatial))

    @property
    def rows(self) -> int:
        """Wide output rows per depth plane."""
        f = self.flat_axes
        return self.out[f[0]] * (self.lph[f[1]] if len(f) == 2 else 1)

    @property
    def halo(self) -> int:
        return max(f for _, _, f in self.taps)

    @property
    def tiles(self) -> int:
        """Group tiles ``NT`` (1 for dense and depthwise)."""
        return self.groups // self.groups_per_tile if self.kind == "matmul" else 1


def layout(spec: ConvSpec) -> Layout:
    """The kernel geometry of a zero-boundary ``spec``; raises ``NotImplementedError``
    for what the kernel cannot take."""
    reason = unsupported(spec)
    if reason is not None:
        raise NotImplementedError(f"pallas_tpu: {reason}")
    n = spec.nspatial
    G, B = spec.feature_group_count, spec.batch_group_count
    I, O = spec.rhs_in_features, spec.out_features
    effk = spec.effective_window
    strides = spec.window_strides
    out = spec.out_spatial
    lph = tuple(o + (k - 1) // s for o, k, s in zip(out, effk, strides))
    flat = tuple(range(n - min(n, 2), n))
    taps = []
    for tap in np.ndindex(*spec.window):
        offs = [t * d for t, d in zip(tap, spec.rhs_dilation)]
        phase = 0
        for o, s in zip(offs, strides):
            phase = phase * s + o % s
        shifts = [o // s for o, s in zip(offs, strides)]
        depth = shifts[0] if n == 3 else 0
        row = shifts[flat[0]] * (lph[flat[1]] if len(flat) == 2 else 1)
        row += shifts[flat[1]] if len(flat) == 2 else 0
        taps.append((phase, depth, row))
    dtype = np.dtype(spec.lhs_dtype).name
    out_dtype = np.dtype(spec.out_dtype).name
    batch = spec.batch // B
    if spec.is_depthwise:
        m = O // G
        return Layout(
            "depthwise",
            n,
            batch,
            strides,
            lph,
            out,
            tuple(taps),
            G,
            1,
            m,
            1,
            round_up(G * m, LANES),
            round_up(G * m, LANES),
            m,
            dtype,
            out_dtype,
        )
    groups = max(G, B)
    ig = I if B == 1 else spec.in_features
    og = O // groups
    gpt = 1
    for d in range(1, groups + 1):
        if groups % d == 0 and d * max(ig, og) <= LANES:
            gpt = d
    return Layout(
        "matmul",
        n,
        batch,
        strides,
        lph,
        out,
        tuple(taps),
        groups,
        ig,
        og,
        gpt,
        round_up(gpt * ig, LANES),
        round_up(gpt * og, LANES),
        1,
        dtype,
        out_dtype,
    )


#: Taps are folded into lanes when the folded contraction (``taps * C``) fits this many
#: lanes and cuts the MXU work at least ``FOLD_MIN_SAVING`` times (:func:`folded_spec`).
FOLD_MAX_LANES = 256
FOLD_MIN_SAVING = 4


def folded_spec(spec: ConvSpec) -> ConvSpec | None:
    """For a dense convolution with few input channels (an RGB stem), the 1x1 spec the
    kernel runs instead: the wrapper gathers the taps into channels (``(N, *out,
    taps * C)``, tap-major) so that ``taps * C`` fills the lanes once instead of padding
    ``C`` to 128 for every tap. ``None`` when folding does not apply."""
    taps = math.prod(spec.window)
    C = spec.in_features
    if (
        spec.feature_group_count > 1
        or spec.batch_group_count > 1
        or taps == 1
        or taps * C > FOLD_MAX_LANES
        or FOLD_MIN_SAVING * round_up(taps * C, LANES) > taps * round_up(C, LANES)
    ):
        return None
    n = spec.nspatial
    return ConvSpec.create(
        (spec.batch,) + spec.out_spatial + (taps * C,),
        (1,) * n + (taps * C, spec.out_features),
        dimension_numbers=default_dimension_numbers(n),
        precision=spec.precision,
        preferred_element_type=spec.preferred_element_type,
        lhs_dtype=spec.lhs_dtype,
    )


def pointwise_spec(spec: ConvSpec) -> ConvSpec | None:
    """For a pointwise convolution (1x1 window, unit strides and dilations, no padding,
    no batch groups), the 1-D spec over one long row axis that the kernel runs instead:
    ``(1, N * prod(spatial), C)``, so that small feature maps (7x7, 14x14) fill row
    blocks across images and a weight block is read once, not once per image."""
    n = spec.nspatial
    if (
        spec.batch_group_count > 1
        or n == 0
        or any(k != 1 for k in spec.window)
        or any(s != 1 for s in spec.window_strides)
        or any(d != 1 for d in spec.lhs_dilation)
        or any(p != (0, 0) for p in spec.padding)
        or (n == 1 and spec.batch == 1)
    ):
        return None
    rows = spec.batch * math.prod(spec.lhs_spatial)
    return ConvSpec.create(
        (1, rows, spec.in_features),
        (1, spec.rhs_in_features, spec.out_features),
        dimension_numbers=default_dimension_numbers(1),
        feature_group_count=spec.feature_group_count,
        precision=spec.precision,
        preferred_element_type=spec.preferred_element_type,
        lhs_dtype=spec.lhs_dtype,
    )


def unsupported(spec: ConvSpec) -> str | None:
    """Why the kernel cannot compute ``spec`` (``None`` when it can)."""
    if not 1 <= spec.nspatial <= 3:
        return f"spatial rank must be 1, 2 or 3, got {spec.nspatial}"
    if np.dtype(spec.lhs_dtype).name not in DTYPES:
        return f"operand dtype must be one of {DTYPES}, got {spec.lhs_dtype}"
    if np.dtype(spec.out_dtype).name not in DTYPES:
        return f"output dtype must be one of {DTYPES}, got {spec.out_dtype}"
    taps = math.prod(spec.window)
    if taps > MAX_TAPS:
        return (
            f"the window has {taps} taps; the kernel unrolls at most {MAX_TAPS} "
            "(weight gradients use the dedicated weight-gradient kernel)"
        )
    if math.prod(spec.out_shape) == 0:
        return "empty output"
    return None


# --------------------------------------------------------------------------------------
# Block sizes
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Blocks:
    """Block sizes of one kernel launch: rows ``R``, input lanes ``tc``, output lanes
    ``to``, halo rows ``hr`` (a multiple of the sublane tile dividing ``R``; 0 when the
    window has no shift)."""

    rows: int
    tc: int
    to: int
    hr: int
    vmem: int

    def grid_rows(self, lay: Layout) -> int:
        return -(-lay.rows // self.rows)


def _largest_dividing(n: int, options: tuple[int, ...]) -> int:
    return next(o for o in options if n % o == 0)


def vmem_bytes(lay: Layout, rows: int, tc: int, to: int, hr: int, wgrad: bool = False) -> int:
    """VMEM estimate of one grid step: double-buffered blocks plus scratch."""
    isz = np.dtype(lay.dtype).itemsize
    osz = np.dtype(lay.out_dtype).itemsize
    e, p, t = len(lay.depth_shifts), lay.phases, len(lay.taps)
    x_blocks = e * p * (rows + hr) * tc * isz
    joined = e * p * (rows + hr) * tc * isz if hr else 0
    if lay.kind == "depthwise":
        w = t * tc * isz
        if wgrad:
            return 2 * (x_blocks + rows * tc * osz + w) + joined + t * tc * 4
        return 2 * (x_blocks + w + rows * tc * osz + tc * 4) + joined + rows * tc * 4
    w = t * tc * to * isz
    if wgrad:
        return 2 * (x_blocks + rows * to * isz + t * tc * to * osz) + joined + t * tc * to * 4
    return 2 * (x_blocks + w + rows * to * osz + to * 4) + joined + rows * to * 4


def choose_blocks(lay: Layout, wgrad: bool = False) -> Blocks:
    """Apply the block-size rule of the module docstring (``wgrad``: the weight-gradient
    kernel's estimate, whose accumulator is the ``(taps, tc, to)`` weight block)."""
    sub = sublanes(lay.dtype)
    hr = round_up(lay.halo, sub)
    unit = hr or sub
    rows = round_up(min(lay.rows, TARGET_ROWS), unit)
    if not hr and lay.rows <= TARGET_ROWS:  # one block of the full row extent
        rows = lay.rows
    elif not hr:  # prefer a block that divides the rows exactly
        candidates = [
            *range(TARGET_ROWS, TARGET_ROWS // 2 - 1, -sub),
            *range(TARGET_ROWS + sub, 2 * TARGET_ROWS + 1, sub),
            *range(TARGET_ROWS // 2 - sub, TARGET_ROWS // 4 - 1, -sub),
        ]
        rows = next((r for r in candidates if lay.rows % r == 0), TARGET_ROWS)
    if lay.kind == "depthwise":
        tc = to = _largest_dividing(lay.cin_tp, (512, 256, 128))
    else:
        tc = _largest_dividing(lay.cin_tp, (512, 256, 128))
        to = _largest_dividing(lay.cout_tp, (256, 128))
    while True:
        need = vmem_bytes(lay, rows, tc, to, hr, wgrad)
        if need <= VMEM_BUDGET:
            return Blocks(rows, tc, to, hr, need)
        if tc > LANES:
            tc //= 2
            if lay.kind == "depthwise":
                to = tc
        elif to > LANES:
            to //= 2
        elif rows > unit:
            rows = max(unit, round_up(rows // 2, unit))
        else:
            what = "weight-gradient" if wgrad else "forward"
            raise NotImplementedError(
                f"pallas_tpu: the {what} kernel needs {need / 2**20:.1f} MiB of VMEM per "
                f"grid step with the smallest blocks (halo of {lay.halo} rows, the largest "
                f"tap shift in the flattened image; {len(lay.taps)} taps), over the "
                f"{VMEM_BUDGET / 2**20:.0f} MiB budget"
            )


# --------------------------------------------------------------------------------------
# Roofline model
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Chip:
    """Peak figures of one TPU generation (per chip, one TensorCore)."""

    name: str
    bf16_flops: float  # MXU peak, FLOP/s
    hbm_bytes_per_s: float
    source: str


#: Published peak figures. f32 matmuls at HIGHEST precision are modelled as 6 bf16
#: passes (bf16x6), the split XLA and Mosaic use on the MXU.
CHIPS: dict[str, Chip] = {
    "v5e": Chip(
        "v5e",
        197e12,
        819e9,
        "https://cloud.google.com/tpu/docs/v5e (197 TFLOP/s bf16, 819 GB/s HBM)",
    ),
    "v6e": Chip(
        "v6e",
        918e12,
        1640e9,
        "https://cloud.google.com/tpu/docs/v6e (918 TFLOP/s bf16, 1640 GB/s HBM)",
    ),
}
F32_PASSES = 6


def _layout_bytes(spec: ConvSpec, lay: Layout, blk: Blocks, wide_out_bytes: int) -> int:
    """HBM bytes of the XLA-side layout passes: the input pass (pad, phase split, lane
    and row padding) and the output pass (crop of wide columns, lanes and rows), each
    counted only when the layout differs from the operand's own (channels last)."""
    isz = np.dtype(lay.dtype).itemsize
    ib = blk.grid_rows(lay)
    rows_in = math.prod(lay.lph[a] for a in lay.flat_axes)
    total_rows = (ib + (1 if blk.hr else 0)) * blk.rows
    ig = lay.groups_per_tile * lay.in_per_group if lay.kind == "matmul" else lay.groups
    og = (
        lay.groups_per_tile * lay.out_per_group
        if lay.kind == "matmul"
        else lay.groups * lay.multiplier
    )
    input_pass = (
        any(lo or hi for lo, hi in spec.padding)
        or lay.phases > 1
        or any(d > 1 for d in spec.lhs_dilation)
        or spec.batch_group_count > 1
        or lay.multiplier > 1
        or ig != lay.cin_tp
        or total_rows != rows_in
    )
    output_pass = og != lay.cout_tp or ib * blk.rows != lay.rows or lay.lph[-1] != lay.out[-1]
    prepared = lay.batch * lay.phases * lay.depth * total_rows * lay.tiles * lay.cin_tp * isz
    out_final = math.prod(spec.out_shape) * np.dtype(lay.out_dtype).itemsize
    return (math.prod(spec.lhs_shape) * isz + prepared) * input_pass + (
        wide_out_bytes + out_final
    ) * output_pass


def roofline(spec: ConvSpec, chip: Chip) -> dict:
    """Blocks, HBM traffic, MXU (or VPU) work and roofline time of the forward kernel.

    Traffic follows the grid order ``(NT, JO, N, DOUT, IB, KC)``: an input block and its
    ``hr``-row halo are read once per output-lane block (``JO`` times); the weight block
    stays resident across the batch and row blocks when ``KC == 1``.
    ``wrapper_bytes`` is the XLA-side layout work (pad, phase split, crop): one read and
    one write of the input and of the wide output, where needed (:func:`_layout_bytes`).
    """
    pointwise = pointwise_spec(spec) if unsupported(spec) is None else None
    if pointwise is not None:  # a reshape away: same traffic and work as the 1-D spec
        r = roofline(pointwise, chip)
        r["kind"] += " (pointwise rows)"
        return r
    folded = folded_spec(spec) if unsupported(spec) is None else None
    if folded is not None:  # the tap gather fuses with the layout pass: reads x instead
        r = roofline(folded, chip)
        gather = (math.prod(spec.lhs_shape) - math.prod(folded.lhs_shape)) * np.dtype(
            spec.lhs_dtype
        ).itemsize
        r["kind"] = "matmul (taps in lanes)"
        r["useful_flops"] = spec.cost()["flops"]
        r["halo"] = 0
        r["wrapper_bytes"] += gather
        r["hbm_s"] = (r["kernel_bytes"] + r["wrapper_bytes"]) / chip.hbm_bytes_per_s
        r["time_s"] = max(r["compute_s"], r["hbm_s"])
        r["bound"] = "compute" if r["compute_s"] > r["hbm_s"] else "HBM"
        return r
    lay = layout(spec)
    blk = choose_blocks(lay)
    isz = np.dtype(lay.dtype).itemsize
    osz = np.dtype(lay.out_dtype).itemsize
    ib = blk.grid_rows(lay)
    e, p, t = len(lay.depth_shifts), lay.phases, len(lay.taps)
    steps_rows = lay.batch * lay.dout * ib
    nt = lay.tiles
    kc = lay.cin_tp // blk.tc
    jo = lay.cout_tp // blk.to if lay.kind == "matmul" else 1
    x_bytes = steps_rows * nt * jo * kc * e * p * (blk.rows + blk.hr) * blk.tc * isz
    if lay.kind == "matmul":
        w_reads = nt * jo * kc * (steps_rows if kc > 1 else 1)
        w_bytes = w_reads * t * blk.tc * blk.to * isz
        out_bytes = steps_rows * blk.rows * nt * lay.cout_tp * osz
        mxu = 2 * steps_rows * blk.rows * t * nt * lay.cin_tp * lay.cout_tp
        passes = F32_PASSES if lay.dtype == "float32" else 1
        compute_s = mxu * passes / chip.bf16_flops
        vpu = 0
    else:
        w_bytes = lay.batch * lay.dout * t * lay.cin_tp * isz
        out_bytes = steps_rows * blk.rows * lay.cout_tp * osz
        mxu = 0
        vpu = 2 * steps_rows * blk.rows * t * lay.cin_tp
        compute_s = 0.0
    kernel_bytes = x_bytes + w_bytes + out_bytes
    wrapper_bytes = _layout_bytes(spec, lay, blk, out_bytes)
    hbm_s = (kernel_bytes + wrapper_bytes) / chip.hbm_bytes_per_s
    return {
        "kind": lay.kind,
        "rows": blk.rows,
        "tc": blk.tc,
        "to": blk.to,
        "halo": lay.halo,
        "grid_rows": ib,
        "tiles": nt,
        "vmem_mib": blk.vmem / 2**20,
        "useful_flops": spec.cost()["flops"],
        "mxu_flops": mxu,
        "vpu_ops": vpu,
        "kernel_bytes": kernel_bytes,
        "wrapper_bytes": wrapper_bytes,
        "compute_s": compute_s,
        "hbm_s": hbm_s,
        "time_s": max(compute_s, hbm_s),
        "bound": "compute" if compute_s > hbm_s else "HBM",
    }


def roofline_wgrad(spec: ConvSpec, chip: Chip) -> dict:
    """Roofline of the weight-gradient kernel for forward ``spec``.

    Grid ``(NT, JO, KC, N, DOUT, IB)``: every step reads an input block with its halo
    and an output-gradient block; the ``(taps, tc, to)`` result is written once. The
    wrapper writes the prepared input and the wide, lane-padded output gradient.
    """
    pointwise = pointwise_spec(spec)
    if pointwise is not None:
        return roofline_wgrad(pointwise, chip)
    lay = layout(spec)
    blk = choose_blocks(lay, wgrad=True)
    isz = np.dtype(lay.dtype).itemsize
    ib = blk.grid_rows(lay)
    e, p, t = len(lay.depth_shifts), lay.phases, len(lay.taps)
    steps_rows = lay.batch * lay.dout * ib
    kc = lay.cin_tp // blk.tc
    jo = lay.cout_tp // blk.to if lay.kind == "matmul" else 1
    steps = lay.tiles * jo * kc * steps_rows
    x_bytes = steps * e * p * (blk.rows + blk.hr) * blk.tc * isz
    g_bytes = steps * blk.rows * (blk.to if lay.kind == "matmul" else blk.tc) * isz
    out_bytes = lay.tiles * t * lay.cin_tp * (lay.cout_tp if lay.kind == "matmul" else 1) * isz
    g_wide = steps_rows * blk.rows * lay.tiles * lay.cout_tp * isz
    # the input pass as in the forward; the output gradient is widened (read + write)
    wrapper = _layout_bytes(spec, lay, blk, 0) + math.prod(spec.out_shape) * isz + g_wide
    if lay.kind == "matmul":
        mxu = 2 * steps_rows * blk.rows * t * lay.tiles * lay.cin_tp * lay.cout_tp
        passes = F32_PASSES if lay.dtype == "float32" else 1
        compute_s = mxu * passes / chip.bf16_flops
    else:
        mxu, compute_s = 0, 0.0
    hbm_s = (x_bytes + g_bytes + out_bytes + wrapper) / chip.hbm_bytes_per_s
    return {
        "rows": blk.rows,
        "tc": blk.tc,
        "to": blk.to,
        "mxu_flops": mxu,
        "kernel_bytes": x_bytes + g_bytes + out_bytes,
        "wrapper_bytes": wrapper,
        "compute_s": compute_s,
        "hbm_s": hbm_s,
        "time_s": max(compute_s, hbm_s),
    }


def roofline_training(spec: ConvSpec, chip: Chip) -> dict:
    """Forward + input gradient (the forward kernel on the transposed spec) + weight
    gradient: the roofline time of one training step of the layer, in seconds each."""
    from jaxconv._src.autodiff import transpose_lhs_spec

    fwd = roofline(spec, chip)["time_s"]
    dlhs = roofline(transpose_lhs_spec(spec), chip)["time_s"]
    dw = roofline_wgrad(spec, chip)["time_s"]
    return {"forward_s": fwd, "lhs_grad_s": dlhs, "rhs_grad_s": dw, "total_s": fwd + dlhs + dw}
