"""``"pallas_triton"``: convolution as an implicit GEMM in Pallas on the Triton backend.

Each program owns a tile of the output and accumulates in float32 over kernel taps and
channel blocks, loading input tiles at computed offsets with masks at the borders and
between input-dilated samples: no patch matrix and no dilated input is ever written to
device memory. The epilogue fuses bias, activation and the cast to the output dtype.

Four kernels, chosen by :func:`jaxconv._src.pallas.tiling.geometry` (the tiling and
index arithmetic live there, apart from the backend calls, for a future Mosaic GPU
variant):

* forward/dot: output pixels x output channels of one group, on the matrix unit;
* forward/fma: per-channel multiply-adds for depthwise and small groups;
* weight_grad/dot and weight_grad/fma: the kernel-gradient specs (batch groups, windows
  as large as the forward output), one program per forward tap x channel tile, the
  reduction over batch x output pixels split for parallelism.

Input (lhs) dilation, as in transposed convolution, is a sub-pixel decomposition where
the window stride is 1 (each program owns output pixels of one phase and visits only
the taps that read real samples: :func:`jaxconv._src.pallas.tiling.phases`), and masked
loads elsewhere. Operands are brought to the channels-last layouts of the formulation
at the boundary (no-ops for NHWC / HWIO and for the gradient specs derived from them).

Where it runs: ``jax.lax.platform_dependent`` picks interpret mode when lowering for the
CPU and the compiled Triton kernel otherwise, so a CPU host runs the kernels
interpreted and ``jax.jit(f).trace(...).lower(lowering_platforms=("cuda",))`` emits the
Triton kernels. :func:`force_interpret` (or ``JAXCONV_PALLAS_INTERPRET=1``) runs the
interpreter on a GPU too.

Gradients: a ``custom_vjp`` whose input and kernel gradients run these same kernels on
the transposed specs of :mod:`jaxconv._src.autodiff` (gradients of gradients too).
``vmap`` over the input folds the mapped axis into the batch (one launch).
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from jaxconv._src import autodiff
from jaxconv._src.dispatch import Implementation, apply_epilogue, register
from jaxconv._src.impl import window as W
from jaxconv._src.pallas import tiling
from jaxconv._src.pallas.tiling import (
    Blocks,
    Geometry,
    cdiv,
    div,
    group_lanes_ok,
    input_pixel,
    output_rows,
    phase_tap,
    rem,
    safe,
    same_group,
    unravel,
)
from jaxconv._src.spec import ConvSpec

NAME = "pallas_triton"

#: Input dtypes the kernels take.
DTYPES = (np.dtype(np.float32), np.dtype(jnp.bfloat16), np.dtype(np.float16))

_INTERPRET = os.environ.get("JAXCONV_PALLAS_INTERPRET", "") not in ("", "0")


def force_interpret(enabled: bool = True) -> None:
    """Run the kernels in Pallas interpret mode on every platform (GPU included), for
    functions traced after this call. ``False`` restores the automatic choice."""
    global _INTERPRET
    _INTERPRET = bool(enabled)


# --------------------------------------------------------------------------------------
# What the kernels take
# --------------------------------------------------------------------------------------


def supports(spec: ConvSpec) -> str | None:
    """``None`` if the kernels compute ``spec``, else the reason (boundary modes are
    materialised by the dispatcher before the kernels see the spec)."""
    if spec.lhs_dtype not in DTYPES:
        return f"input dtype {spec.lhs_dtype} (takes float32, bfloat16, float16)"
    pet = spec.preferred_element_type
    if pet is not None and pet not in (spec.lhs_dtype, np.dtype(np.float32)):
        return f"preferred_element_type {pet} (takes None, float32 or the input dtype)"
    if not 1 <= spec.nspatial <= 3:
        return f"{spec.nspatial} spatial dimensions (takes 1, 2 or 3)"
    precisions = spec.precision if isinstance(spec.precision, tuple) else (spec.precision,)
    if not all(p is None or isinstance(p, lax.Precision) for p in precisions):
        return f"precision {spec.precision!r} (takes None or jax.lax.Precision values)"
    biggest = max(math.prod(spec.lhs_shape), math.prod(spec.rhs_shape), math.prod(spec.out_shape))
    if biggest >= 2**31:
        return f"an operand of {biggest} elements (32-bit offsets: at most 2**31 - 1)"
    return None


def _dot_precision(spec: ConvSpec):
    """TF32 for float32 unless ``precision`` asks for HIGHEST (then full float32)."""
    if spec.lhs_dtype != np.float32:
        return None
    precisions = spec.precision if isinstance(spec.precision, tuple) else (spec.precision,)
    if any(p == lax.Precision.HIGHEST for p in precisions):
        return (lax.Precision.HIGHEST, lax.Precision.HIGHEST)
    return (lax.Precision.DEFAULT, lax.Precision.DEFAULT)


# --------------------------------------------------------------------------------------
# Kernels (flat 1-D refs; all addresses computed with tiling's index arithmetic)
# --------------------------------------------------------------------------------------


class _Memory:
    """Masked gathers and scatters at computed flat offsets.

    Compiled (``interpret=False``), masked-off lanes never touch memory, so offsets stay
    as computed: Triton's pointer analysis then sees contiguous runs along the channel
    axis and vectorises the loads. Interpreted, loads gather with every offset (clamped
    to the array) and stores scatter, so masked-off lanes get a safe load address and
    the one-past-the-end store address, which the scatter drops (rather than writing a
    stale value over a lane another program owns).
    """

    def __init__(self, interpret: bool):
        self.interpret = interpret

    def load(self, ref, offsets, mask=None):
        if mask is None:
            return plgpu.load(ref.at[offsets])
        if self.interpret:
            offsets = safe(offsets, mask)
        return plgpu.load(ref.at[offsets], mask=mask, other=0.0)

    def store(self, ref, offsets, value, mask):
        if self.interpret:
            offsets = jnp.where(mask, offsets, math.prod(ref.shape))
        plgpu.store(ref.at[offsets], value, mask=mask)


def _epilogue(mem: _Memory, acc, cols, cols_ok, b_ref, activation, dtype):
    if b_ref is not None:
        acc = acc + mem.load(b_ref, cols, cols_ok)[None, :]
    if activation is not None:
        acc = activation(acc)
    return acc.astype(dtype)


def _forward_dot(geom: Geometry, blk: Blocks, precision, activation, has_bias, mem: _Memory):
    """y (N*P, O) tile (blk.m x blk.n of one block of groups) = sum over taps, input-channel
    blocks of x[rows(t), g0*I + c] @ w[t, c, g0*O' + o]; with several groups per block
    (``geom.groups_per_block``) the kernel tile is block-diagonal (zeros between groups)."""
    I, C = geom.in_per_group, geom.channels
    O, Og = geom.out_features, geom.out_per_group
    gpb = geom.groups_per_block
    nbn, nkb = cdiv(gpb * Og, blk.n), cdiv(gpb * I, blk.k)
    nmb = cdiv(geom.phase_rows, blk.m)

    def kernel(x_ref, w_ref, *refs):
        b_ref, y_ref = refs if has_bias else (None, refs[0])
        g0 = div(pl.program_id(1), nbn) * gpb  # first group of the block
        ob = rem(pl.program_id(1), nbn)
        j = rem(pl.program_id(0), nmb) * blk.m + jnp.arange(blk.m)
        n, p, m, m_ok, ph = output_rows(geom, div(pl.program_id(0), nmb), j)
        o_loc = ob * blk.n + jnp.arange(blk.n)  # channel within the block's outputs
        o = g0 * Og + o_loc
        o_ok = group_lanes_ok(o_loc, g0, Og, gpb, O)

        def body(it, acc):
            step, kb = div(it, nkb), rem(it, nkb)
            tap, t, tap_ok = phase_tap(geom, ph, step)
            pix, valid = input_pixel(geom, p, tap)
            valid = valid & tap_ok
            c = kb * blk.k + jnp.arange(blk.k)  # channel within the block's inputs
            c_ok = group_lanes_ok(c, g0, I, gpb, C)
            w_row, wm = c, c_ok[:, None] & o_ok[None, :]
            if gpb > 1:  # block-diagonal kernel tile
                w_row, wm = rem(c, I), wm & same_group(c, I, o_loc, Og)
            xm = (valid & m_ok)[:, None] & c_ok[None, :]
            x = mem.load(x_ref, (n * geom.in_pixels + pix)[:, None] * C + (g0 * I + c)[None, :], xm)
            w = mem.load(w_ref, (t * I + w_row)[:, None] * O + o[None, :], wm)
            return acc + jnp.dot(x, w, precision=precision, preferred_element_type=jnp.float32)

        acc = lax.fori_loop(0, geom.phase_taps * nkb, body, jnp.zeros((blk.m, blk.n), jnp.float32))
        y = _epilogue(mem, acc, o, o_ok, b_ref, activation, y_ref.dtype)
        mem.store(y_ref, m[:, None] * O + o[None, :], y, m_ok[:, None] & o_ok[None, :])

    grid = (geom.phase_count * nmb, cdiv(geom.groups, gpb) * nbn)
    return kernel, grid


def _forward_fma(geom: Geometry, blk: Blocks, activation, has_bias, mem: _Memory):
    """Depthwise and small groups: y[m, o] += x[rows(t), g(o)*I + c] * w[t, c, o] with
    per-channel multiply-adds (no one-channel dots)."""
    I, C = geom.in_per_group, geom.channels
    O, Og = geom.out_features, geom.out_per_group
    nmb = cdiv(geom.phase_rows, blk.m)

    def kernel(x_ref, w_ref, *refs):
        b_ref, y_ref = refs if has_bias else (None, refs[0])
        j = rem(pl.program_id(0), nmb) * blk.m + jnp.arange(blk.m)
        n, p, m, m_ok, ph = output_rows(geom, div(pl.program_id(0), nmb), j)
        # Unclamped channel offsets (masked instead): Triton's pointer analysis then
        # sees contiguous channel runs and vectorises the loads.
        o = pl.program_id(1) * blk.n + jnp.arange(blk.n)
        o_ok = o < O
        g = div(o, Og)

        def body(it, acc):
            step, c = div(it, I), rem(it, I)
            tap, t, tap_ok = phase_tap(geom, ph, step)
            pix, valid = input_pixel(geom, p, tap)
            xm = (valid & tap_ok & m_ok)[:, None] & o_ok[None, :]
            x = mem.load(x_ref, (n * geom.in_pixels + pix)[:, None] * C + (g * I + c)[None, :], xm)
            w = mem.load(w_ref, (t * I + c) * O + o, o_ok)
            return acc + x.astype(jnp.float32) * w.astype(jnp.float32)[None, :]

        acc = lax.fori_loop(0, geom.phase_taps * I, body, jnp.zeros((blk.m, blk.n), jnp.float32))
        y = _epilogue(mem, acc, o, o_ok, b_ref, activation, y_ref.dtype)
        mem.store(y_ref, m[:, None] * O + o[None, :], y, m_ok[:, None] & o_ok[None, :])

    grid = (geom.phase_count * nmb, cdiv(O, blk.n))
    return kernel, grid


def _split_rows(geom: Geometry, blk: Blocks):
    """Rows of the weight_grad reduction per split (a multiple of ``blk.k``) and steps."""
    per_split = cdiv(cdiv(geom.rows, blk.splits), blk.k) * blk.k
    return per_split, per_split // blk.k


def _reduction_rows(geom: Geometry, blk: Blocks, split, it, q_coords):
    """One weight_grad step: rows ``r`` of the reduction over ``F x`` (the window
    positions of output pixel ``q_coords``'s phase). Returns ``(r_ok, w_row, x_row,
    valid)``: whether each row exists, the row of ``w`` (over ``F x K``) and of ``x``
    (over ``F x S``) it reads, and whether that input sample exists."""
    R = geom.rows
    per_split, _ = _split_rows(geom, blk)
    r = split * per_split + it * blk.k + jnp.arange(blk.k)
    r_ok = r < jnp.minimum(split * per_split + per_split, R)
    f, step = unravel(jnp.minimum(r, R - 1), (geom.outer, geom.phase_taps))
    ph = [rem(q, L) for q, L in zip(q_coords, geom.phase)]
    tap, t, tap_ok = phase_tap(geom, ph, step)
    pix, valid = input_pixel(geom, q_coords, tap)
    return r_ok, f * geom.taps + t, f * geom.in_pixels + pix, valid & tap_ok & r_ok


def _weight_grad_dot(geom: Geometry, blk: Blocks, precision, mem: _Memory):
    """y[q, b, gb*O'' + o] tile (blk.n x blk.o) = sum over row blocks of
    x[rows(q), gb*Nb' + b]^T @ w[rows, gb*O'' + o]; split ``blk.splits`` ways. With several
    groups per block (``geom.groups_per_block``) the tiles span whole groups and only the
    product's diagonal (same-group) blocks are stored."""
    Q, Bg, Nb, Nbg = geom.out_pixels, geom.groups, geom.channels, geom.in_per_group
    O, Og = geom.out_features, geom.out_per_group
    gpb = geom.groups_per_block
    ngb, nbo = cdiv(Bg, gpb), cdiv(gpb * Og, blk.o)
    _, steps = _split_rows(geom, blk)

    def kernel(x_ref, w_ref, y_ref):
        q, g0 = div(pl.program_id(0), ngb), rem(pl.program_id(0), ngb) * gpb
        bb, ob = div(pl.program_id(1), nbo), rem(pl.program_id(1), nbo)
        split = pl.program_id(2)
        q_coords = unravel(q, geom.out_spatial)
        b = bb * blk.n + jnp.arange(blk.n)  # batch channel within the block's groups
        o_loc = ob * blk.o + jnp.arange(blk.o)
        o = g0 * Og + o_loc
        b_ok = group_lanes_ok(b, g0, Nbg, gpb, Nb)
        o_ok = group_lanes_ok(o_loc, g0, Og, gpb, O)

        def body(it, acc):
            r_ok, w_row, x_row, valid = _reduction_rows(geom, blk, split, it, q_coords)
            xm = valid[:, None] & b_ok[None, :]
            x = mem.load(x_ref, x_row[:, None] * Nb + (g0 * Nbg + b)[None, :], xm)
            wm = r_ok[:, None] & o_ok[None, :]
            w = mem.load(w_ref, w_row[:, None] * O + o[None, :], wm)
            return acc + lax.dot_general(
                x,
                w,
                (((0,), (0,)), ((), ())),
                precision=precision,
                preferred_element_type=jnp.float32,
            )

        acc = lax.fori_loop(0, steps, body, jnp.zeros((blk.n, blk.o), jnp.float32))
        keep = b_ok[:, None] & o_ok[None, :]
        b_in = b
        if gpb > 1:  # the diagonal blocks: batch channel and output in the same group
            keep = keep & same_group(b, Nbg, o_loc, Og)
            b_in = rem(b, Nbg)
        mem.store(
            y_ref,
            ((split * Q + q) * Nbg + b_in)[:, None] * O + o[None, :],
            acc.astype(y_ref.dtype),
            keep,
        )

    grid = (Q * ngb, cdiv(gpb * Nbg, blk.n) * nbo, blk.splits)
    return kernel, grid


def _weight_grad_fma(geom: Geometry, blk: Blocks, mem: _Memory):
    """Depthwise / small-group kernel gradient: y[q, b, o] = sum over rows of
    x[rows(q), gb(o)*Nb' + b] * w[rows, o], multiply-adds then one column sum."""
    Q, Nb, Nbg = geom.out_pixels, geom.channels, geom.in_per_group
    O, Og = geom.out_features, geom.out_per_group
    _, steps = _split_rows(geom, blk)

    def kernel(x_ref, w_ref, y_ref):
        q, b = div(pl.program_id(0), Nbg), rem(pl.program_id(0), Nbg)
        split = pl.program_id(2)
        q_coords = unravel(q, geom.out_spatial)
        o = pl.program_id(1) * blk.o + jnp.arange(blk.o)
        o_ok = o < O
        gb = div(jnp.minimum(o, O - 1), Og)

        def body(it, acc):
            r_ok, w_row, x_row, valid = _reduction_rows(geom, blk, split, it, q_coords)
            xm = valid[:, None] & o_ok[None, :]
            x = mem.load(x_ref, x_row[:, None] * Nb + (gb * Nbg + b)[None, :], xm)
            wm = r_ok[:, None] & o_ok[None, :]
            w = mem.load(w_ref, w_row[:, None] * O + o[None, :], wm)
            return acc + x.astype(jnp.float32) * w.astype(jnp.float32)

        acc = lax.fori_loop(0, steps, body, jnp.zeros((blk.k, blk.o), jnp.float32))
        mem.store(
            y_ref,
            ((split * Q + q) * Nbg + b) * O + o,
            jnp.sum(acc, axis=0).astype(y_ref.dtype),
            o_ok,
        )

    grid = (Q * Nbg, cdiv(O, blk.o), blk.splits)
    return kernel, grid


# --------------------------------------------------------------------------------------
# pallas_call wiring
# --------------------------------------------------------------------------------------


def _pallas(build, blk: Blocks, out: jax.ShapeDtypeStruct, name: str, *args):
    """Run the kernel ``build(mem) -> (kernel, grid)`` compiled for the GPU, or
    interpreted where lowered for the CPU (or everywhere under :func:`force_interpret`)."""

    def call(interpret: bool, *operands):
        kernel, grid = build(_Memory(interpret))
        return pl.pallas_call(
            kernel,
            out_shape=out,
            grid=grid,
            interpret=interpret,
            name=name,
            compiler_params=plgpu.CompilerParams(
                num_warps=blk.num_warps, num_stages=blk.num_stages
            ),
        )(*operands)

    if _INTERPRET:
        return call(True, *args)
    return lax.platform_dependent(
        *args, cpu=functools.partial(call, True), default=functools.partial(call, False)
    )


def _forward(lhs, rhs, spec: ConvSpec, geom: Geometry, bias, activation):
    x, w = W.to_channels_last(lhs, rhs, spec)  # (N, *S, C), (*K, I, O)
    blk = tiling.blocks(geom, spec.lhs_dtype.itemsize)
    has_bias = bias is not None
    if geom.variant == "dot":
        build = functools.partial(
            _forward_dot, geom, blk, _dot_precision(spec), activation, has_bias
        )
    else:
        build = functools.partial(_forward_fma, geom, blk, activation, has_bias)
    args = [x.reshape(-1), w.reshape(-1)]
    if has_bias:
        args.append(jnp.asarray(bias).astype(jnp.float32).reshape(-1))
    out = jax.ShapeDtypeStruct((geom.rows * geom.out_features,), spec.out_dtype)
    y = _pallas(build, blk, out, f"conv_{geom.variant}", *args)
    y = y.reshape((geom.outer,) + geom.out_spatial + (geom.out_features,))
    return W.from_channels_last(y, spec)


def _weight_grad(lhs, rhs, spec: ConvSpec, geom: Geometry):
    lhs_spec, rhs_spec, out_spec = spec.dimension_numbers
    n = spec.nspatial
    x = jnp.transpose(lhs, (lhs_spec[1],) + tuple(lhs_spec[2:]) + (lhs_spec[0],))
    w = jnp.transpose(rhs, (rhs_spec[1],) + tuple(rhs_spec[2:]) + (rhs_spec[0],))
    blk = tiling.blocks(geom, spec.lhs_dtype.itemsize)
    if geom.variant == "dot":
        build = functools.partial(_weight_grad_dot, geom, blk, _dot_precision(spec))
    else:
        build = functools.partial(_weight_grad_fma, geom, blk)
    size = geom.out_pixels * geom.in_per_group * geom.out_features
    dtype = spec.out_dtype if blk.splits == 1 else np.dtype(np.float32)
    out = jax.ShapeDtypeStruct((blk.splits * size,), dtype)
    y = _pallas(build, blk, out, f"conv_weight_grad_{geom.variant}", x.reshape(-1), w.reshape(-1))
    if blk.splits > 1:
        y = jnp.sum(y.reshape(blk.splits, size), axis=0).astype(spec.out_dtype)
    y = y.reshape(geom.out_spatial + (geom.in_per_group, geom.out_features))
    perm = [0] * (n + 2)
    perm[out_spec[0]], perm[out_spec[1]] = n, n + 1
    for i, d in enumerate(out_spec[2:]):
        perm[d] = i
    return jnp.transpose(y, perm)


def _conv_kernels(lhs, rhs, spec: ConvSpec, bias=None, activation=None):
    """The convolution of a zero-boundary ``spec`` on the Pallas kernels (no autodiff
    rule of its own: see :func:`conv`)."""
    reason = supports(spec)
    if reason is not None:
        raise NotImplementedError(f"{NAME} cannot compute {spec}: {reason}")
    geom = tiling.geometry(spec)
    if (
        math.prod(spec.out_shape) == 0
        or geom.rows == 0
        or geom.in_per_group == 0
        or (geom.formulation == "forward" and geom.in_per_group * geom.taps == 0)
    ):
        y = jnp.zeros(spec.out_shape, spec.out_dtype)
        return apply_epilogue(y, spec, bias, activation).astype(spec.out_dtype)
    if geom.formulation == "forward":
        return _forward(lhs, rhs, spec, geom, bias, activation)
    y = _weight_grad(lhs, rhs, spec, geom)
    return apply_epilogue(y, spec, bias, activation).astype(spec.out_dtype)


# --------------------------------------------------------------------------------------
# vmap: the mapped axis folds into the batch
# --------------------------------------------------------------------------------------


def _fold_into_batch(lhs, spec: ConvSpec):
    """``(V, *lhs_shape)`` -> lhs with batch ``V * N`` (V outer) and its spec."""
    bdim = spec.dimension_numbers.lhs_spec[0]
    x = jnp.moveaxis(lhs, 0, bdim)
    shape = list(spec.lhs_shape)
    shape[bdim] *= lhs.shape[0]
    return x.reshape(shape), spec.replace(lhs_shape=tuple(shape))


def _unfold_from_batch(y, spec: ConvSpec, size: int):
    """Output with batch ``V * N`` -> ``(V, *out_shape)``."""
    bdim = spec.dimension_numbers.out_spec[0]
    shape = list(y.shape)
    shape[bdim : bdim + 1] = [size, shape[bdim] // size]
    return jnp.moveaxis(y.reshape(shape), bdim, 0)


@functools.lru_cache(maxsize=256)
def _batchable(spec: ConvSpec, activation: Callable | None, has_bias: bool):
    """``_conv_kernels`` for one spec, whose ``vmap`` over the input alone folds the
    mapped axis into the batch (one kernel launch over ``V * N``); other mappings
    (a mapped kernel or bias) use Pallas' own batching (an extra grid axis)."""

    def run(lhs, rhs, *bias):
        return _conv_kernels(lhs, rhs, spec, bias[0] if has_bias else None, activation)

    f = jax.custom_batching.custom_vmap(run)

    @f.def_vmap
    def rule(axis_size, in_batched, lhs, rhs, *bias):
        if in_batched[0] and not any(in_batched[1:]) and spec.batch_group_count == 1:
            x, folded = _fold_into_batch(lhs, spec)
            y = _conv_kernels(x, rhs, folded, bias[0] if has_bias else None, activation)
            return _unfold_from_batch(y, folded, axis_size), True
        args = [
            a if b else jnp.broadcast_to(a, (axis_size,) + a.shape)
            for a, b in zip((lhs, rhs) + bias, in_batched)
        ]
        return jax.vmap(run)(*args), True

    return f


def _kernels(lhs, rhs, spec: ConvSpec, bias=None, activation=None):
    extra = () if bias is None else (bias,)
    return _batchable(spec, activation, bias is not None)(lhs, rhs, *extra)


# --------------------------------------------------------------------------------------
# Autodiff and the registered entry point
# --------------------------------------------------------------------------------------


#: The kernels with a custom_vjp whose gradients run the kernels on the transposed specs
#: (:func:`jaxconv._src.autodiff.lhs_grad` / ``rhs_grad``), to any order.
conv_vjp = autodiff.with_transposed_vjp(_kernels)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _fused(lhs, rhs, bias, spec: ConvSpec, activation: Callable | None):
    return _kernels(lhs, rhs, spec, bias, activation)


def _fused_fwd(lhs, rhs, bias, spec, activation):
    return _fused(lhs, rhs, bias, spec, activation), (lhs, rhs, bias)


def _fused_bwd(spec, activation, res, g):
    lhs, rhs, bias = res
    if activation is not None:  # recompute the pre-activation on the kernels
        z = conv_vjp(lhs, rhs, spec)
        if bias is not None:
            z = apply_epilogue(z, spec, bias).astype(spec.out_dtype)
        _, act_vjp = jax.vjp(activation, z)
        (g,) = act_vjp(g.astype(z.dtype))
    g = g.astype(spec.out_dtype)
    dlhs = autodiff.lhs_grad(g, rhs, spec, conv_vjp)
    drhs = autodiff.rhs_grad(g, lhs, spec, conv_vjp)
    dbias = None
    if bias is not None:
        out_spec = spec.dimension_numbers.out_spec
        axes = tuple(d for d in range(g.ndim) if d != out_spec[1])
        dbias = jnp.sum(g.astype(jnp.float32), axis=axes).astype(bias.dtype)
    return dlhs, drhs, dbias


_fused.defvjp(_fused_fwd, _fused_bwd)


def conv(lhs, rhs, spec: ConvSpec, *, bias=None, activation: Callable | None = None):
    """Convolution of a zero-boundary ``spec`` on the Pallas Triton kernels.

    Args:
      lhs, rhs: operands in the layouts of ``spec.dimension_numbers``.
      bias: optional ``(O,)``, added in the kernel's epilogue.
      activation: optional elementwise function, applied in the epilogue (its backward
        recomputes the pre-activation on the kernels).

    Returns:
      ``spec.out_shape`` in ``spec.out_dtype``. Differentiable (any order): input and
      kernel gradients run on the same kernels through the transposed specs.
    """
    if bias is None and activation is None:
        return conv_vjp(lhs, rhs, spec)
    return _fused(lhs, rhs, bias, spec, activation)


register(Implementation(NAME, conv, supports, fuses_epilogue=True, platforms=("gpu",)))
