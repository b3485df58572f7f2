"""``"pallas_tpu"``: convolution as Mosaic TPU kernels written in Pallas.

Three kernels share one layout (see :mod:`jaxconv._src.pallas_tpu.blocks`): the input
is padded, input-dilated, phase-split by the strides and flattened, channels on the
128-wide lane axis, so that every kernel tap is one static row shift of a VMEM block.

* ``matmul`` (dense and grouped): grid ``(NT, JO, N, DOUT, IB, KC)``. A step joins its
  ``(P, R, tc)`` input row block with the ``hr``-row block after it (the halo) in VMEM
  and accumulates, per tap, ``x[r + shift] @ w[tap]`` on the MXU into a float32 VMEM
  accumulator; the last input-lane step adds the bias, applies the activation and
  casts. Groups are packed ``groups_per_tile`` to a lane tile with a block-diagonal
  weight, so small groups still feed the MXU full tiles.
* ``depthwise``: the same walk on the vector unit, channels on lanes:
  ``acc += x[r + shift] * w[tap]`` elementwise in float32 (a channel multiplier ``m``
  repeats each input channel ``m`` times in the layout).
* weight gradient: the same walk with the reduction over rows:
  ``dw[tap] += x[r + shift]^T @ g[r]`` (MXU) or ``sum_r x[r + shift] * g[r]`` (vector
  unit), accumulated over batch and row blocks in a float32 ``(taps, tc, to)`` block.

Two rewrites run before the kernels: a pointwise (1x1) convolution becomes a 1-D one
over all images' pixels (:func:`~jaxconv._src.pallas_tpu.blocks.pointwise_spec`), and a
dense convolution with few input channels gathers its taps into lanes and runs as 1x1
(:func:`~jaxconv._src.pallas_tpu.blocks.folded_spec`).

Autodiff (:func:`conv` is a ``custom_vjp``): the input gradient runs the forward kernel
on the core's transposed spec (:func:`jaxconv._src.autodiff.lhs_grad`); the kernel
gradient, whose transposed spec has the output gradient as a huge "window" (and batch
groups for grouped convolutions), runs the weight-gradient kernel on the forward
geometry instead. Both are ``custom_vjp`` functions whose backward passes call these
kernels again, so gradients of gradients stay on Pallas; ``vmap`` batches the
``pallas_call``.

Where it runs: ``lax.platform_dependent`` lowers the compiled Mosaic kernel for TPU and
Pallas's generic interpreter everywhere else, so ``jax.jit(f).trace(...).lower(
lowering_platforms=("tpu",))`` on a CPU machine runs the Mosaic lowering while ``f(x)``
runs interpreted; :func:`tpu_interpret_mode` switches to the TPU interpret mode
(``pltpu.InterpretParams()``, which models VMEM and the copies) for tests.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import math
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from jaxconv._src import dispatch
from jaxconv._src.autodiff import lhs_grad
from jaxconv._src.impl import window as W
from jaxconv._src.impl.taps import tap_slice
from jaxconv._src.pallas_tpu.blocks import (
    VMEM_LIMIT,
    Blocks,
    Layout,
    choose_blocks,
    folded_spec,
    layout,
    pointwise_spec,
    unsupported,
)
from jaxconv._src.spec import ConvSpec

NAME = "pallas_tpu"


def supports(spec: ConvSpec) -> str | None:
    """``None`` when the kernels take ``spec``, else the reason (spatial rank 1-3,
    float32/bfloat16, at most ``MAX_TAPS`` taps, a halo that fits VMEM)."""
    reason = unsupported(spec)
    if reason is not None:
        return reason
    try:
        choose_blocks(layout(spec))
    except NotImplementedError as e:
        return str(e).removeprefix("pallas_tpu: ")
    return None


# --------------------------------------------------------------------------------------
# Layout transforms (XLA side)
# --------------------------------------------------------------------------------------


def _prepare_input(x_cl, spec: ConvSpec, lay: Layout, blk: Blocks):
    """``(N, *sp, C)`` channels-last input -> ``(N', P, D, rows, lanes)`` kernel input."""
    n = spec.nspatial
    B = spec.batch_group_count
    if B > 1:  # batch groups become feature groups: (B, N', ..., C) -> (N', ..., B * C)
        x_cl = x_cl.reshape((B, x_cl.shape[0] // B) + x_cl.shape[1:])
        x_cl = jnp.moveaxis(x_cl, 0, -2)
        x_cl = x_cl.reshape(x_cl.shape[:-2] + (-1,))
    x = W.dilate_and_pad(x_cl, spec)
    # phase split: axis of stride s -> (Lph, s), padded or cropped to s * Lph
    config = [(0, 0, 0)] * x.ndim
    for a, (s, lph) in enumerate(zip(lay.strides, lay.lph)):
        config[a + 1] = (0, s * lph - x.shape[a + 1], 0)
    if any(c != (0, 0, 0) for c in config):
        x = lax.pad(x, jnp.zeros((), x.dtype), config)
    shape = (x.shape[0],)
    for s, lph in zip(lay.strides, lay.lph):
        shape += (lph, s)
    x = x.reshape(shape + (x.shape[-1],))
    perm = (0,) + tuple(2 + 2 * a for a in range(n)) + tuple(1 + 2 * a for a in range(n))
    x = jnp.transpose(x, perm + (2 * n + 1,))
    x = x.reshape((x.shape[0], lay.phases) + lay.lph + (x.shape[-1],))
    # channels onto padded lane tiles
    if lay.kind == "depthwise":
        if lay.multiplier > 1:
            x = jnp.repeat(x, lay.multiplier, axis=-1)
        x = W.pad_last(x, lay.cin_tp)
    else:
        lead = x.shape[:-1]
        x = x.reshape(lead + (lay.tiles, lay.groups_per_tile * lay.in_per_group))
        x = W.pad_last(x, lay.cin_tp).reshape(lead + (lay.tiles * lay.cin_tp,))
    # flatten the last one or two spatial axes into rows; depth stays its own axis
    rows_in = math.prod(lay.lph[a] for a in lay.flat_axes)
    x = x.reshape((x.shape[0], lay.phases, lay.depth, rows_in, x.shape[-1]))
    total = (blk.grid_rows(lay) + (1 if blk.hr else 0)) * blk.rows
    if total == rows_in:
        return x
    return jnp.pad(x, [(0, 0)] * 3 + [(0, total - rows_in), (0, 0)])


def _output_lanes(y, lay: Layout):
    """``(..., NT * cout_tp)`` -> ``(..., O)``: drop the lane padding of each tile."""
    if lay.kind == "depthwise":
        return y[..., : lay.groups * lay.multiplier]
    y = y.reshape(y.shape[:-1] + (lay.tiles, lay.cout_tp))
    y = y[..., : lay.groups_per_tile * lay.out_per_group]
    return y.reshape(y.shape[:-2] + (-1,))


def _from_wide(y, lay: Layout):
    """``(N, DOUT, rows_padded, C)`` wide kernel output -> ``(N, *out, C)``."""
    y = y[:, :, : lay.rows]
    f = lay.flat_axes
    if len(f) == 2:
        y = y.reshape((y.shape[0], lay.dout, lay.out[f[0]], lay.lph[f[1]], y.shape[-1]))
        y = y[:, :, :, : lay.out[f[1]]]
    if lay.nspatial < 3:
        y = y[:, 0]
    return y


def _to_wide(g_cl, lay: Layout, blk: Blocks):
    """``(N, *out, O)`` output gradient -> ``(N, DOUT, rows_padded, lanes)``, zero in the
    cropped columns, so that the wide rows past the output width add nothing."""
    f = lay.flat_axes
    g = g_cl if lay.nspatial == 3 else g_cl[:, None]
    if len(f) == 2:
        pad = [(0, 0)] * g.ndim
        pad[-2] = (0, lay.lph[f[1]] - lay.out[f[1]])
        g = jnp.pad(g, pad)
    g = g.reshape((g.shape[0], lay.dout, lay.rows, g.shape[-1]))
    if lay.kind == "depthwise":
        g = W.pad_last(g, lay.cout_tp)
    else:
        g = g.reshape(g.shape[:-1] + (lay.tiles, lay.groups_per_tile * lay.out_per_group))
        g = W.pad_last(g, lay.cout_tp).reshape(g.shape[:-2] + (lay.tiles * lay.cout_tp,))
    total = blk.grid_rows(lay) * blk.rows
    return jnp.pad(g, [(0, 0), (0, 0), (0, total - lay.rows), (0, 0)])


def _prepare_weight(w_cl, lay: Layout):
    """``(*win, I, O)`` -> ``(NT, T, cin_tp, cout_tp)`` block-diagonal tiles, or
    ``(T, lanes)`` for depthwise."""
    t = len(lay.taps)
    if lay.kind == "depthwise":
        return W.pad_last(w_cl.reshape(t, -1), lay.cin_tp)
    gpt, ig, og = lay.groups_per_tile, lay.in_per_group, lay.out_per_group
    w = w_cl.reshape(t, ig, lay.tiles, gpt, og)
    eye = jnp.eye(gpt, dtype=w.dtype)
    w = w[:, :, :, :, None, :] * eye[None, None, None, :, :, None]  # (T, I, NT, h, h', og)
    w = jnp.transpose(w, (2, 0, 3, 1, 4, 5)).reshape(lay.tiles, t, gpt * ig, gpt * og)
    return jnp.pad(w, [(0, 0), (0, 0), (0, lay.cin_tp - gpt * ig), (0, lay.cout_tp - gpt * og)])


def _weight_from_tiles(dw, lay: Layout, window: tuple[int, ...]):
    """Inverse of :func:`_prepare_weight`: tiles -> ``(*win, I, O)``."""
    t = len(lay.taps)
    if lay.kind == "depthwise":
        return dw[:, : lay.groups * lay.multiplier].reshape(window + (1, -1))
    gpt, ig, og = lay.groups_per_tile, lay.in_per_group, lay.out_per_group
    dw = dw[:, :, : gpt * ig, : gpt * og].reshape(lay.tiles, t, gpt, ig, gpt, og)
    dw = jnp.diagonal(dw, axis1=2, axis2=4)  # (NT, T, I, og, gpt)
    dw = jnp.transpose(dw, (1, 2, 0, 4, 3))  # (T, I, NT, gpt, og)
    return dw.reshape(window + (ig, lay.groups * og))


def _prepare_bias(bias, lay: Layout):
    b = bias.astype(jnp.float32)
    if lay.kind == "depthwise":
        return W.pad_last(b, lay.cout_tp)[None]
    b = b.reshape(lay.tiles, lay.groups_per_tile * lay.out_per_group)
    return W.pad_last(b, lay.cout_tp).reshape(1, -1)


def _rhs_from_cl(w_cl, spec: ConvSpec):
    """Inverse of ``window.to_channels_last`` for the kernel: ``(*win, I, O)`` -> rhs."""
    rhs_spec = spec.dimension_numbers.rhs_spec
    perm = tuple(rhs_spec[2:]) + (rhs_spec[1], rhs_spec[0])
    return jnp.transpose(w_cl, np.argsort(perm))


# --------------------------------------------------------------------------------------
# pallas_call wiring
# --------------------------------------------------------------------------------------


def _dot_precision(lay: Layout):
    return lax.Precision.HIGHEST if lay.dtype == "float32" else lax.Precision.DEFAULT


def _compiler_params(semantics: tuple[str, ...], interpret: Any) -> pltpu.CompilerParams:
    """Mosaic parameters. The TPU interpreter gets no dimension semantics: its grid walk
    does not count the grid axis that ``vmap`` prepends (the Mosaic lowering does) and
    fails on the length mismatch (jax 0.10.2); without them it walks every axis in
    order, which is what the "arbitrary" reduction axes need anyway."""
    if isinstance(interpret, pltpu.InterpretParams):
        return pltpu.CompilerParams(vmem_limit_bytes=VMEM_LIMIT)
    return pltpu.CompilerParams(dimension_semantics=semantics, vmem_limit_bytes=VMEM_LIMIT)


def _n_x(lay: Layout, blk: Blocks) -> int:
    """Input streams: per depth shift the row block, plus its halo block if any."""
    return len(lay.depth_shifts) * (2 if blk.hr else 1)


def _windows(x_refs, scratch, blk: Blocks, n_depth: int):
    """``(read, rest)``: ``read(e, q, f)`` is the ``(R, tc)`` input window of tap shift
    ``f`` in phase ``q`` of depth stream ``e``; ``rest`` the remaining scratch refs.

    With a halo, each stream's row block and the ``hr``-row block after it are first
    joined in the VMEM scratch ``(E, P, R + hr, tc)``; without one (1x1 windows,
    patchifying strides) the windows are read from the input blocks directly."""
    if not blk.hr:
        return (lambda e, q, f: x_refs[e][q, pl.ds(f, blk.rows), :]), scratch
    xs_ref, *rest = scratch
    for e in range(n_depth):
        xs_ref[e, :, : blk.rows, :] = x_refs[2 * e][...]
        xs_ref[e, :, blk.rows :, :] = x_refs[2 * e + 1][...]
    return (lambda e, q, f: xs_ref[e, q, pl.ds(f, blk.rows), :]), rest


def _x_specs(lay: Layout, blk: Blocks, index: Callable, lane_block: Callable):
    """Per depth shift: the ``R``-row block and, when there is a halo, the ``hr``-row
    block after it (``hr`` divides ``R``: block ``(i + 1) * R / hr`` of ``hr`` rows)."""
    specs = []
    streams = [(blk.rows, 1, 0)] + ([(blk.hr, blk.rows // blk.hr, 1)] if blk.hr else [])
    for e in lay.depth_shifts:
        for rows, scale, nxt in streams:

            def imap(*ids, e=e, scale=scale, nxt=nxt):
                n, dz, i = index(*ids)
                return (n, 0, dz + e, (i + nxt) * scale, lane_block(*ids))

            specs.append(pl.BlockSpec((None, lay.phases, None, rows, blk.tc), imap))
    return specs


def _x_scratch(lay: Layout, blk: Blocks) -> list:
    if not blk.hr:
        return []
    n_e = len(lay.depth_shifts)
    return [pltpu.VMEM((n_e, lay.phases, blk.rows + blk.hr, blk.tc), jnp.dtype(lay.dtype))]


def _forward_call(lay: Layout, blk: Blocks, activation, interpret: Any):
    """The forward ``pallas_call`` for a layout: ``(x, w, bias) -> wide output``."""
    depth_index = {e: j for j, e in enumerate(lay.depth_shifts)}
    taps = [(q, depth_index[e], f) for q, e, f in lay.taps]
    n_e, rows = len(lay.depth_shifts), blk.rows
    ib = blk.grid_rows(lay)
    out_shape = jax.ShapeDtypeStruct(
        (lay.batch, lay.dout, ib * rows, lay.tiles * lay.cout_tp), jnp.dtype(lay.out_dtype)
    )
    act = activation if activation is not None else (lambda y: y)
    n_x = _n_x(lay, blk)

    if lay.kind == "depthwise":

        def kernel(*refs):
            x_refs, (w_ref, b_ref, o_ref, *scratch) = refs[:n_x], refs[n_x:]
            read, (acc_ref,) = _windows(x_refs, scratch, blk, n_e)
            acc_ref[...] = jnp.zeros_like(acc_ref)
            for t, (q, e, f) in enumerate(taps):
                xw = read(e, q, f).astype(jnp.float32)
                acc_ref[...] += xw * w_ref[pl.ds(t, 1), :].astype(jnp.float32)
            o_ref[...] = act(acc_ref[...] + b_ref[...]).astype(o_ref.dtype)

        grid = (lay.batch, lay.dout, lay.cin_tp // blk.tc, ib)
        in_specs = _x_specs(lay, blk, lambda n, dz, c, i: (n, dz, i), lambda n, dz, c, i: c)
        in_specs += [
            pl.BlockSpec((len(taps), blk.tc), lambda n, dz, c, i: (0, c)),
            pl.BlockSpec((1, blk.tc), lambda n, dz, c, i: (0, c)),
        ]
        out_spec = pl.BlockSpec((None, None, rows, blk.tc), lambda n, dz, c, i: (n, dz, i, c))
        scratch = _x_scratch(lay, blk) + [pltpu.VMEM((rows, blk.tc), jnp.float32)]
        semantics = ("parallel",) * 4
    else:
        kc, jo = lay.cin_tp // blk.tc, lay.cout_tp // blk.to
        precision = _dot_precision(lay)

        def kernel(*refs):
            x_refs, (w_ref, b_ref, o_ref, *scratch) = refs[:n_x], refs[n_x:]
            read, (acc_ref,) = _windows(x_refs, scratch, blk, n_e)
            k = pl.program_id(5)

            @pl.when(k == 0)
            def _():
                acc_ref[...] = jnp.zeros_like(acc_ref)

            for t, (q, e, f) in enumerate(taps):
                acc_ref[...] += jnp.dot(
                    read(e, q, f), w_ref[t], precision=precision, preferred_element_type=jnp.float32
                )

            @pl.when(k == kc - 1)
            def _():
                o_ref[...] = act(acc_ref[...] + b_ref[...]).astype(o_ref.dtype)

        # weights outermost: with one input-lane block (KC == 1) a weight block stays
        # in VMEM across the whole batch
        grid = (lay.tiles, jo, lay.batch, lay.dout, ib, kc)
        in_specs = _x_specs(
            lay, blk, lambda nt, j, n, dz, i, k: (n, dz, i), lambda nt, j, n, dz, i, k: nt * kc + k
        )
        in_specs += [
            pl.BlockSpec(
                (None, len(taps), blk.tc, blk.to), lambda nt, j, n, dz, i, k: (nt, 0, k, j)
            ),
            pl.BlockSpec((1, blk.to), lambda nt, j, n, dz, i, k: (0, nt * jo + j)),
        ]
        out_spec = pl.BlockSpec(
            (None, None, rows, blk.to), lambda nt, j, n, dz, i, k: (n, dz, i, nt * jo + j)
        )
        scratch = _x_scratch(lay, blk) + [pltpu.VMEM((rows, blk.to), jnp.float32)]
        semantics = ("parallel",) * 5 + ("arbitrary",)

    call = pl.pallas_call(
        kernel,
        out_shape=out_shape,
        grid_spec=pltpu.PrefetchScalarGridSpec(
            num_scalar_prefetch=0,
            grid=grid,
            in_specs=in_specs,
            out_specs=out_spec,
            scratch_shapes=scratch,
        ),
        compiler_params=_compiler_params(semantics, interpret),
        interpret=interpret,
        name=f"jaxconv_{lay.kind}_conv",
    )

    def run(x, w, b):
        return call(*([x] * n_x), w, b)

    return run


def _wgrad_call(lay: Layout, blk: Blocks, interpret: Any):
    """The weight-gradient ``pallas_call``: ``(x, g_wide) -> weight tiles``."""
    depth_index = {e: j for j, e in enumerate(lay.depth_shifts)}
    taps = [(q, depth_index[e], f) for q, e, f in lay.taps]
    n_e, rows, n_t = len(lay.depth_shifts), blk.rows, len(lay.taps)
    ib = blk.grid_rows(lay)
    n_x = _n_x(lay, blk)

    if lay.kind == "depthwise":

        def kernel(*refs):
            x_refs, (g_ref, o_ref, *scratch) = refs[:n_x], refs[n_x:]
            read, (acc_ref,) = _windows(x_refs, scratch, blk, n_e)
            first = (pl.program_id(1) == 0) & (pl.program_id(2) == 0) & (pl.program_id(3) == 0)
            last = (
                (pl.program_id(1) == lay.batch - 1)
                & (pl.program_id(2) == lay.dout - 1)
                & (pl.program_id(3) == ib - 1)
            )

            @pl.when(first)
            def _():
                acc_ref[...] = jnp.zeros_like(acc_ref)

            g = g_ref[...].astype(jnp.float32)
            for t, (q, e, f) in enumerate(taps):
                xw = read(e, q, f).astype(jnp.float32)
                acc_ref[pl.ds(t, 1), :] += jnp.sum(xw * g, axis=0, keepdims=True)

            @pl.when(last)
            def _():
                o_ref[...] = acc_ref[...].astype(o_ref.dtype)

        grid = (lay.cin_tp // blk.tc, lay.batch, lay.dout, ib)
        in_specs = _x_specs(lay, blk, lambda c, n, dz, i: (n, dz, i), lambda c, n, dz, i: c)
        in_specs.append(pl.BlockSpec((None, None, rows, blk.tc), lambda c, n, dz, i: (n, dz, i, c)))
        out_shape = jax.ShapeDtypeStruct((n_t, lay.cin_tp), jnp.dtype(lay.out_dtype))
        out_spec = pl.BlockSpec((n_t, blk.tc), lambda c, n, dz, i: (0, c))
        scratch = _x_scratch(lay, blk) + [pltpu.VMEM((n_t, blk.tc), jnp.float32)]
        semantics = ("parallel",) + ("arbitrary",) * 3
    else:
        kc, jo = lay.cin_tp // blk.tc, lay.cout_tp // blk.to
        precision = _dot_precision(lay)

        def kernel(*refs):
            x_refs, (g_ref, o_ref, *scratch) = refs[:n_x], refs[n_x:]
            read, (acc_ref,) = _windows(x_refs, scratch, blk, n_e)
            first = (pl.program_id(3) == 0) & (pl.program_id(4) == 0) & (pl.program_id(5) == 0)
            last = (
                (pl.program_id(3) == lay.batch - 1)
                & (pl.program_id(4) == lay.dout - 1)
                & (pl.program_id(5) == ib - 1)
            )

            @pl.when(first)
            def _():
                acc_ref[...] = jnp.zeros_like(acc_ref)

            g = g_ref[...]
            for t, (q, e, f) in enumerate(taps):
                acc_ref[t] += lax.dot_general(
                    read(e, q, f),
                    g,
                    (((0,), (0,)), ((), ())),
                    precision=precision,
                    preferred_element_type=jnp.float32,
                )

            @pl.when(last)
            def _():
                o_ref[...] = acc_ref[...].astype(o_ref.dtype)

        grid = (lay.tiles, jo, kc, lay.batch, lay.dout, ib)
        in_specs = _x_specs(
            lay, blk, lambda nt, j, k, n, dz, i: (n, dz, i), lambda nt, j, k, n, dz, i: nt * kc + k
        )
        in_specs.append(
            pl.BlockSpec(
                (None, None, rows, blk.to), lambda nt, j, k, n, dz, i: (n, dz, i, nt * jo + j)
            )
        )
        out_shape = jax.ShapeDtypeStruct(
            (lay.tiles, n_t, lay.cin_tp, lay.cout_tp), jnp.dtype(lay.out_dtype)
        )
        out_spec = pl.BlockSpec(
            (None, n_t, blk.tc, blk.to), lambda nt, j, k, n, dz, i: (nt, 0, k, j)
        )
        scratch = _x_scratch(lay, blk) + [pltpu.VMEM((n_t, blk.tc, blk.to), jnp.float32)]
        semantics = ("parallel",) * 3 + ("arbitrary",) * 3

    call = pl.pallas_call(
        kernel,
        out_shape=out_shape,
        grid_spec=pltpu.PrefetchScalarGridSpec(
            num_scalar_prefetch=0,
            grid=grid,
            in_specs=in_specs,
            out_specs=out_spec,
            scratch_shapes=scratch,
        ),
        compiler_params=_compiler_params(semantics, interpret),
        interpret=interpret,
        name=f"jaxconv_{lay.kind}_conv_wgrad",
    )

    def run(x, g):
        return call(*([x] * n_x), g)

    return run


_TPU_INTERPRET: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "jaxconv_pallas_tpu_interpret", default=False
)


@contextlib.contextmanager
def tpu_interpret_mode(enabled: bool = True) -> Iterator[None]:
    """Trace the kernels in TPU interpret mode (``pltpu.InterpretParams()``, which
    models VMEM, the copies between memory spaces and the grid) on any backend.

    Outside this context the kernels are staged with ``lax.platform_dependent``: the
    compiled Mosaic kernel when lowering for TPU, Pallas's generic interpreter
    (``interpret=True``, plain HLO) elsewhere. The TPU interpreter cannot be one of
    those branches: its ordered host callbacks give the ``cond`` an ordered effect
    that the single-platform TPU lowering drops ("Lowering rule for `cond` returns
    incorrect set of output tokens", jax 0.10.2). The mode is read while tracing, so a
    function jitted in one mode keeps it when called later.
    """
    token = _TPU_INTERPRET.set(enabled)
    try:
        yield
    finally:
        _TPU_INTERPRET.reset(token)


def _on_platform(make: Callable[[Any], Callable], *args):
    """Stage a kernel built by ``make(interpret)`` (see :func:`tpu_interpret_mode`)."""
    if _TPU_INTERPRET.get():
        return make(pltpu.InterpretParams())(*args)
    return lax.platform_dependent(*args, tpu=make(False), default=make(True))


# --------------------------------------------------------------------------------------
# The convolution and its gradients
# --------------------------------------------------------------------------------------


def _channels_last(x, dims):
    """``x`` with logical axes ``dims = (batch, feature, *spatial)`` -> ``(N, *sp, C)``."""
    return jnp.transpose(x, (dims[0],) + tuple(dims[2:]) + (dims[1],))


def _forward(lhs, rhs, spec: ConvSpec, bias, activation):
    pointwise = pointwise_spec(spec)
    if pointwise is not None:  # 1x1: one long row axis over all images
        x_cl, w_cl = W.to_channels_last(lhs, rhs, spec)
        y = _forward(
            x_cl.reshape(pointwise.lhs_shape),
            w_cl.reshape(pointwise.rhs_shape),
            pointwise,
            bias,
            activation,
        )
        y = y.reshape((spec.batch,) + spec.out_spatial + (spec.out_features,))
        return W.from_channels_last(y, spec)
    folded = folded_spec(spec)
    if folded is not None:  # few channels: gather the taps into lanes, run a 1x1 conv
        x_cl, w_cl = W.to_channels_last(lhs, rhs, spec)
        xp = W.dilate_and_pad(x_cl, spec)
        patches = jnp.concatenate(
            [tap_slice(xp, start, spec) for _, start in W.tap_starts(spec)], axis=-1
        )
        w = w_cl.reshape(folded.rhs_shape)  # (*win, I, O) is tap-major like the patches
        y = _forward(patches, w, folded, bias, activation)
        return W.from_channels_last(y, spec)
    lay = layout(spec)
    blk = choose_blocks(lay)
    x_cl, w_cl = W.to_channels_last(lhs, rhs, spec)
    x = _prepare_input(x_cl.astype(lay.dtype), spec, lay, blk)
    w = _prepare_weight(w_cl.astype(lay.dtype), lay)
    if bias is None:
        bias = jnp.zeros((spec.out_features,), jnp.float32)
    b = _prepare_bias(bias, lay)
    y = _on_platform(lambda interp: _forward_call(lay, blk, activation, interp), x, w, b)
    y = _from_wide(_output_lanes(y, lay), lay)
    return W.from_channels_last(y, spec)


def _weight_gradient(lhs, g, spec: ConvSpec):
    """``d(sum(conv(lhs, rhs) * g)) / d rhs`` by the weight-gradient kernel, in the
    rhs layout and dtype."""
    pointwise = pointwise_spec(spec)
    if pointwise is not None:  # 1x1: X^T G over one long row axis
        x_cl = _channels_last(lhs, spec.dimension_numbers.lhs_spec)
        g_cl = _channels_last(g, spec.dimension_numbers.out_spec)
        dw = _weight_gradient(
            x_cl.reshape(pointwise.lhs_shape), g_cl.reshape(pointwise.out_shape), pointwise
        )
        return _rhs_from_cl(dw.reshape((1,) * spec.nspatial + dw.shape[1:]), spec)
    lay = dataclasses.replace(layout(spec), out_dtype=np.dtype(spec.rhs_dtype).name)
    blk = choose_blocks(lay, wgrad=True)
    x_cl = _channels_last(lhs, spec.dimension_numbers.lhs_spec)
    x = _prepare_input(x_cl.astype(lay.dtype), spec, lay, blk)
    g_cl = _channels_last(g, spec.dimension_numbers.out_spec)
    gw = _to_wide(g_cl.astype(lay.dtype), lay, blk)
    dw = _on_platform(lambda interp: _wgrad_call(lay, blk, interp), x, gw)
    return _rhs_from_cl(_weight_from_tiles(dw, lay, spec.window), spec)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv(lhs, rhs, spec: ConvSpec):
    return _forward(lhs, rhs, spec, None, None)


def _conv_fwd(lhs, rhs, spec):
    return _conv(lhs, rhs, spec), (lhs, rhs)


def _conv_bwd(spec, res, g):
    lhs, rhs = res
    return lhs_grad(g, rhs, spec, _conv), _wgrad(lhs, g, spec)


_conv.defvjp(_conv_fwd, _conv_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _wgrad(lhs, g, spec: ConvSpec):
    return _weight_gradient(lhs, g, spec)


def _wgrad_fwd(lhs, g, spec):
    return _wgrad(lhs, g, spec), (lhs, g)


def _wgrad_bwd(spec, res, dw_bar):
    # _wgrad is bilinear: its cotangents are the input gradient and the forward conv.
    lhs, g = res
    lhs_bar = lhs_grad(g, dw_bar.astype(g.dtype), spec, _conv)
    g_bar = _conv(lhs, dw_bar.astype(lhs.dtype), spec).astype(g.dtype)
    return lhs_bar, g_bar


_wgrad.defvjp(_wgrad_fwd, _wgrad_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _conv_fused(lhs, rhs, bias, spec: ConvSpec, activation):
    return _forward(lhs, rhs, spec, bias, activation)


def _conv_fused_fwd(lhs, rhs, bias, spec, activation):
    return _conv_fused(lhs, rhs, bias, spec, activation), (lhs, rhs, bias)


def _conv_fused_bwd(spec, activation, res, g):
    # Recompute the pre-activation on the unfused kernel (one more forward conv) rather
    # than storing it; the activation's own vjp gives its cotangent.
    lhs, rhs, bias = res
    z, conv_vjp = jax.vjp(lambda a, b: _conv(a, b, spec), lhs, rhs)
    z = dispatch.apply_epilogue(z, spec, bias, None)
    if activation is not None:
        _, act_vjp = jax.vjp(activation, z)
        (g,) = act_vjp(g)
    dlhs, drhs = conv_vjp(g.astype(z.dtype))
    dbias = None
    if bias is not None:
        axes = tuple(a for a in range(g.ndim) if a != spec.dimension_numbers.out_spec[1])
        dbias = jnp.sum(g.astype(jnp.float32), axis=axes).astype(bias.dtype)
    return dlhs, drhs, dbias


_conv_fused.defvjp(_conv_fused_fwd, _conv_fused_bwd)


def conv(
    lhs: jax.Array,
    rhs: jax.Array,
    spec: ConvSpec,
    *,
    bias: jax.Array | None = None,
    activation: Callable[[jax.Array], jax.Array] | None = None,
) -> jax.Array:
    """Convolution of ``lhs`` (``spec.lhs_shape``) and ``rhs`` (``spec.rhs_shape``) on
    the Pallas TPU kernels, returning ``spec.out_shape`` in ``spec.out_dtype``, with
    ``bias`` (shape ``(O,)``) and ``activation`` fused into the kernel's epilogue.
    Differentiable (gradients on the same kernels, gradients of gradients too) and
    vmappable.

    Raises ``NotImplementedError`` (naming the limit) for specs the kernels cannot take.
    """
    reason = supports(spec)
    if reason is not None:
        raise NotImplementedError(f"{NAME}: {reason}")
    if spec.needs_boundary_padding:
        raise ValueError(
            f"`spec` must have the zeros boundary (boundary {spec.boundary!r} is "
            "materialised by jaxconv._src.dispatch.run); got " + str(spec)
        )
    if bias is None and activation is None:
        return _conv(lhs, rhs, spec)
    return _conv_fused(lhs, rhs, bias, spec, activation)


dispatch.register(
    dispatch.Implementation(NAME, conv, supports, fuses_epilogue=True, platforms=("tpu",))
)
