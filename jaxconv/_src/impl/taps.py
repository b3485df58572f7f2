"""``"taps"``: one strided slice of the padded, dilated input per kernel tap,
contracted with that tap's kernel slice and accumulated. No patch matrix.

Memory: one output-sized accumulator plus one tap slice at a time. This is the
natural fast path for depthwise and grouped convolution, where each tap is a cheap
per-group product instead of a wasteful dense contraction.

Two contraction forms, chosen per spec (see ``benchmarks/NOTES.md`` for the numbers):

* few input channels per group (depthwise, ResNeXt-style groups): each tap and each
  input channel of a group is one broadcast multiply-add over the output, which XLA
  fuses into a single loop over the output (``I * prod(window)`` fused FMAs per output
  element, no dot calls, no layout changes);
* otherwise one ``dot_general`` per tap over the group's input channels.

Derivatives: :func:`conv` binds one primitive that is bilinear in (lhs, rhs). Its JVP is
the same primitive on the tangents, and its transposes are the fast gradients: the
input gradient is this same implementation on the transposed spec of
:mod:`jaxconv._src.autodiff`, the kernel gradient one reduction per tap
(:func:`kernel_grad`). Plain autodiff of the slices would instead pad every tap's
cotangent to the input size and reduce through badly laid-out dots (see
``benchmarks/NOTES.md``). ``jax.custom_vjp`` would forbid forward mode and
``linear_call`` cannot be differentiated in its residual; a primitive has neither limit,
so jvp, jacfwd, jacrev, hessian and gradients of gradients all run here.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend import core
from jax.interpreters import ad, batching, mlir

from jaxconv._src import autodiff, subpixel
from jaxconv._src.impl import window as W
from jaxconv._src.spec import ConvSpec

NAME = "taps"

#: Largest number of input channels per group for which the broadcast multiply-add
#: form is used (above it one dot per tap is faster on the CPU; see NOTES.md).
MAX_BROADCAST_CHANNELS = 8


def supports(spec: ConvSpec) -> str | None:
    """Every zero-boundary spec is supported (boundary modes are materialised before)."""
    return None


def tap_slice(xp, start, spec: ConvSpec):
    """The ``(N, *out, C)`` slice of padded input ``xp`` that one tap reads."""
    return W.window_slice(xp, start, spec.out_spatial, spec.window_strides)


def _taps(spec: ConvSpec):
    """``(multi-index, start offsets)`` of every kernel tap (one empty tap at rank 0)."""
    return W.tap_starts(spec) if spec.nspatial else [((), ())]


def uses_broadcast_form(spec: ConvSpec) -> bool:
    """True when each tap is computed by broadcast multiply-adds (few channels per
    group, feature groups only) rather than by a dot."""
    return (
        spec.batch_group_count == 1
        and spec.feature_group_count > 1
        and spec.rhs_in_features <= MAX_BROADCAST_CHANNELS
    )


def _accumulate(tap_inputs, w, spec: ConvSpec, out_spatial):
    """``sum_t x_t . w_t`` over ``(tap, x_t)`` pairs, ``x_t`` the ``(N, *out_spatial,
    C)`` input slice tap ``t`` reads; ``w`` is the kernel as ``(*win, I, G, B, O')``.
    Returns ``(N', *out_spatial, O)`` in the accumulation dtype."""
    acc_dtype = W.accumulation_dtype(spec)
    G, B, I, Og = W.group_sizes(spec)
    broadcast = uses_broadcast_form(spec)
    acc = None
    for tap, xt in tap_inputs:
        xs = W.split_groups_lhs(xt, spec)  # (B, N', *count, G, I)
        if broadcast:
            # one broadcast product per input channel of a group
            xs = xs[0].astype(acc_dtype)[..., None]  # (N', *count, G, I, 1)
            wt = w[tap][:, :, 0, :].astype(acc_dtype)  # (I, G, O')
            part = sum(xs[..., i, :] * wt[i] for i in range(I))  # (N', *count, G, O')
            part = part.reshape(part.shape[:-2] + (G, 1, Og))
        else:
            part = jnp.einsum(
                "bn...gi,igbo->n...gbo",
                xs,
                w[tap],
                precision=spec.precision,
                preferred_element_type=acc_dtype,
            )
        acc = part if acc is None else acc + part
    if acc is None:  # every tap reads only padding
        acc = jnp.zeros((spec.batch // B,) + tuple(out_spatial) + (G, B, Og), acc_dtype)
    return W.merge_groups_out(acc)


def forward(lhs, rhs, spec: ConvSpec):
    """The convolution itself (not differentiated by hand): ``lhs`` and ``rhs`` in the
    spec's layouts, output in the spec's output layout.

    The padded (or dilated) input is never materialised. The output is computed per
    :class:`window.Region`: plain strided slices of the input in the interior, small
    padded boxes at the borders. Input-dilated (transposed) convolutions are first
    split into their sub-pixel phases (:mod:`jaxconv._src.subpixel`), ordinary
    convolutions that read only the real inputs.
    """
    if any(d > 1 for d in spec.lhs_dilation):
        return subpixel.conv(lhs, rhs, spec, forward)
    x, w = W.to_channels_last(lhs, rhs, spec)
    w = W.split_groups_rhs(w, spec)  # (*win, I, G, B, O')
    regions = W.regions(spec)
    pieces = []
    for region in regions:
        taps = ()
        if region.reads_input:
            xr = W.region_input(x, region)
            taps = ((tap, W.region_tap(xr, offset, region, spec)) for tap, offset in _taps(spec))
        pieces.append(_accumulate(taps, w, spec, region.out_size))
    y = W.assemble(pieces, regions, spec.nspatial)
    return W.from_channels_last(y.astype(spec.out_dtype), spec)


def _to_channels_last_out(y, spec: ConvSpec):
    """A tensor in the spec's output layout as ``(N', *out, O)``."""
    out_spec = spec.dimension_numbers.out_spec
    return jnp.transpose(y, (out_spec[0],) + tuple(out_spec[2:]) + (out_spec[1],))


def _from_channels_last_rhs(w_cl, spec: ConvSpec):
    """A ``(*win, I, O)`` kernel back in the spec's kernel layout."""
    rhs_spec = spec.dimension_numbers.rhs_spec
    n = spec.nspatial
    src = tuple(rhs_spec[2:]) + (rhs_spec[1], rhs_spec[0])  # where each cl axis goes
    perm = [0] * (n + 2)
    for cl_axis, dim in enumerate(src):
        perm[dim] = cl_axis
    return jnp.transpose(w_cl, perm)


#: Windows of at least this many taps (stride 1) take their kernel gradient through
#: the FFT: one correlation of the input with the cotangent instead of one reduction
#: per tap (ConvNeXt 7x7 depthwise: 183 -> 42 ms; a stride-2 3x3 gets slower, 71 ->
#: 233 ms, see benchmarks/NOTES.md).
FFT_KERNEL_GRAD_TAPS = 25


def uses_fft_kernel_grad(spec: ConvSpec) -> bool:
    from jaxconv._src.impl import fft

    tspec = autodiff.transpose_rhs_spec(spec)
    return (
        math.prod(spec.window) >= FFT_KERNEL_GRAD_TAPS
        and all(s == 1 for s in spec.window_strides)
        and fft.supports(tspec) is None
    )


def _tap_pairs(x, gg, spec: ConvSpec):
    """``(tap, x_t, g_t)``: the ``(N, *count, C)`` input elements each tap reads and
    the ``(N', *count, ...)`` cotangent of the outputs they went to.

    Without input dilation the padded input is materialised once and every tap reads
    a same-shaped slice of it (measured faster for the per-tap reductions than the
    per-region split of :func:`forward`: 34 vs 46 ms on MobileNetV2's stride-2 layer,
    2.7 vs 16 ms on 14x14x576, NOTES.md section 8); with input dilation each tap reads
    only the real inputs (:func:`window.tap_reads`), never the zeros between them."""
    if all(d == 1 for d in spec.lhs_dilation):
        xp = W.dilate_and_pad(x, spec)
        for tap, start in _taps(spec):
            yield tap, tap_slice(xp, start, spec), gg
    else:
        for read in W.tap_reads(spec):
            yield read.tap, W.read_tap(x, read), W.out_window(gg, read)


#: Bytes of output cotangent per block of :func:`_blocked_grouped_kernel_grad`: the
#: block and its input rows stay in the core's cache while every tap reads them.
KERNEL_GRAD_BLOCK_BYTES = 512 * 1024


def _blocked_grouped_kernel_grad(x, g, spec: ConvSpec, acc_dtype):
    """Grouped (and depthwise) kernel gradient, cache-blocked: ``x`` is the
    channels-last input ``(N, *sp, G*I)``, ``g`` the cotangent ``(N, *out, G, O')``;
    returns ``(*win, G, I, O')``.

    Each tap's gradient is one reduction over the whole cotangent; done tap by tap over
    the whole arrays, the 9 taps of a 3x3 window read the input and the cotangent 9
    times from memory (37 ms on MobileNetV2's 8x56x56x144), and the per-group batched
    dots of a grouped layer also transpose both operands per tap (112 ms on ResNeXt's
    8x56x56x128 with 32 groups). Here a loop runs over blocks of (image, output rows) of
    about :data:`KERNEL_GRAD_BLOCK_BYTES`, and every tap reduces the block while it is in
    cache: depthwise by multiply-reduces (8 ms), groups of several channels by a batched
    dot over the block (35-40 ms; NOTES.md sections 10 and 11)."""
    n = spec.nspatial
    N = x.shape[0]
    out = spec.out_spatial
    S0, D0 = spec.window_strides[0], spec.rhs_dilation[0]
    G, Og = g.shape[-2:]
    I = x.shape[-1] // G
    row_bytes = math.prod(g.shape[2:]) * g.dtype.itemsize
    target = max(1, KERNEL_GRAD_BLOCK_BYTES // max(row_bytes, 1))
    hb = max(d for d in range(1, out[0] + 1) if out[0] % d == 0 and d <= target)
    nb = out[0] // hb
    xp = W.dilate_and_pad(x, spec)  # (N, *padded, G*I)
    span0 = (hb - 1) * S0 + (spec.window[0] - 1) * D0 + 1
    block_out = (hb,) + tuple(out[1:])
    rows = math.prod(block_out)

    # depthwise: one (N, *out, G) cotangent per channel multiplier (a trailing unit axis
    # on the products stops XLA vectorising over the channels)
    gs = [g[..., o] for o in range(Og)] if I == 1 else [g]

    def tap_grad(xs, gis):
        if I == 1:  # (1, hb, *out[1:], G) times each multiplier's cotangent
            prods = [jnp.sum(xs * gi.astype(acc_dtype), axis=tuple(range(1 + n))) for gi in gis]
            return jnp.stack(prods, axis=-1)[:, None, :]  # (G, 1, O')
        return jnp.einsum(
            "rgi,rgo->gio",
            xs.reshape(rows, G, I),
            gis[0].reshape(rows, G, Og),
            precision=spec.precision,
            preferred_element_type=acc_dtype,
        )

    def body(i, acc):
        b, r = i // nb, (i % nb) * hb
        xi = lax.dynamic_slice(xp, (b, r * S0) + (0,) * (xp.ndim - 2), (1, span0) + xp.shape[2:])
        gis = [
            lax.dynamic_slice(go, (b, r) + (0,) * (go.ndim - 2), (1, hb) + go.shape[2:])
            for go in gs
        ]
        parts = []
        for _tap, start in _taps(spec):
            xs = W.window_slice(xi, start, block_out, spec.window_strides).astype(acc_dtype)
            parts.append(tap_grad(xs, gis))  # (G, I, O')
        return acc + jnp.stack(parts)

    acc = jnp.zeros((len(_taps(spec)), G, I, Og), acc_dtype)
    acc = lax.fori_loop(0, N * nb, body, acc)
    return acc.reshape(spec.window + (G, I, Og))


def kernel_grad(lhs, g, spec: ConvSpec):
    """Gradient w.r.t. the kernel of :func:`forward`: for each tap, the input slice that
    tap reads contracted with the output cotangent ``g`` over batch and output positions
    (large stride-1 windows: the same correlation through the FFT).

    ``lhs`` in the spec's input layout, ``g`` in its output layout; returns the kernel
    gradient in the spec's kernel layout and dtype.
    """
    if uses_fft_kernel_grad(spec):
        from jaxconv._src.impl import fft

        return autodiff.rhs_grad(g, lhs, spec, fft.conv)
    x = W.lhs_to_channels_last(lhs, spec).astype(g.dtype)
    G, B, I, Og = W.group_sizes(spec)
    gc = _to_channels_last_out(g, spec)  # (N', *out, O)
    n = spec.nspatial
    gg_all = gc.reshape(gc.shape[:-1] + (G, B, Og))  # (N', *out, G, B, O')
    acc_dtype = W.accumulation_dtype(
        spec.replace(lhs_dtype=np.dtype(g.dtype), preferred_element_type=None)
    )
    if (
        B == 1
        and G > 1
        and n > 0
        and all(d == 1 for d in spec.lhs_dilation)
        and len(_taps(spec)) > 1
    ):
        dw = _blocked_grouped_kernel_grad(x, gg_all[..., 0, :], spec, acc_dtype)
        dw = jnp.swapaxes(dw, -3, -2).reshape(spec.window + (I, G * Og))
        return _from_channels_last_rhs(dw, spec).astype(spec.rhs_dtype)
    parts = {}
    for tap, xt, gg in _tap_pairs(x, gg_all, spec):
        # the input elements a tap reads and the cotangent where its products went
        xs = W.split_groups_lhs(xt, spec)  # (B, N', *count, G, I)
        rows = math.prod(gg.shape[: 1 + n])
        if B == 1 and I == 1 and G > 1:
            # depthwise: one fused multiply-reduce over batch and positions per tap
            # (37 ms for MobileNetV2's 8x56x56x144, against 67 ms for the batched
            # dot below and 58 ms through the FFT; NOTES.md section 2)
            prod = xs[0].astype(acc_dtype) * gg[..., 0, :].astype(acc_dtype)  # (N',*o,G,O')
            d = jnp.sum(prod, axis=tuple(range(1 + n)))  # (G, O')
            d = d[None, :, None, :]  # (I=1, G, 1, O')
        elif B == 1 and I * Og <= MAX_BROADCAST_CHANNELS**2 and G > 1:
            # per-group outer products over the rows, summed over the row-batch axis
            # last: a batched dot over (out-columns, G) reads both operands once.
            last = gg.shape[n] if n else 1
            xr = xs[0].reshape((rows // last, last, G, I))
            gr = gg[..., 0, :].reshape((rows // last, last, G, Og))
            d = jnp.einsum(
                "rwgi,rwgo->wgio",
                xr,
                gr,
                precision=spec.precision,
                preferred_element_type=acc_dtype,
            ).sum(0)  # (G, I, O')
            d = jnp.transpose(d, (1, 0, 2))[:, :, None, :]  # (I, G, 1, O')
        else:
            d = jnp.einsum(
                "bn...gi,n...gbo->igbo",
                xs,
                gg,
                precision=spec.precision,
                preferred_element_type=acc_dtype,
            )
        parts[tap] = d if tap not in parts else parts[tap] + d
    zero = jnp.zeros((I, G, B, Og), acc_dtype)  # taps that read only padding
    dw = jnp.stack([parts.get(tap, zero) for tap, _ in _taps(spec)])
    dw = dw.reshape(spec.window + (I, G * B * Og))
    return _from_channels_last_rhs(dw, spec).astype(spec.rhs_dtype)


def _xla_forward(lhs, rhs, spec: ConvSpec):
    """The forward of ``"xla_taps_grad"``: XLA's own operations, in the form XLA:CPU
    computes fastest (``benchmarks/NOTES.md`` section 9):

    * input-dilated (transposed) convolutions as their sub-pixel phases
      (:mod:`jaxconv._src.subpixel`), each computed by this function again;
    * 1x1 convolutions without padding or groups as one ``dot_general`` over the
      channels (of the strided input): 1.2-2.6x faster than lax's 1x1 convolution;
    * everything else by ``lax.conv_general_dilated`` itself.
    """
    if any(d > 1 for d in spec.lhs_dilation):
        return subpixel.conv(lhs, rhs, spec, _xla_forward)
    pointwise = (
        all(k == 1 for k in spec.window)
        and all(p == (0, 0) for p in spec.padding)
        and spec.feature_group_count == 1 == spec.batch_group_count
    )
    if not pointwise:
        return lax.conv_general_dilated(lhs, rhs, **spec.lax_kwargs())
    x, w = W.to_channels_last(lhs, rhs, spec)  # (N, *sp, C), (1, ..., 1, C, O)
    n = spec.nspatial
    if any(st > 1 for st in spec.window_strides):
        limits = (
            (x.shape[0],)
            + tuple((o - 1) * st + 1 for o, st in zip(spec.out_spatial, spec.window_strides))
            + (x.shape[-1],)
        )
        x = lax.slice(x, (0,) * x.ndim, limits, (1,) + tuple(spec.window_strides) + (1,))
    y = lax.dot_general(
        x,
        w.reshape(w.shape[-2:]),
        (((n + 1,), (0,)), ((), ())),
        precision=spec.precision,
        preferred_element_type=spec.preferred_element_type,
    )
    return W.from_channels_last(y.astype(spec.out_dtype), spec)


def bilinear_primitive(name: str, forward_fn, kernel_grad_fn=None):
    """A primitive computing ``forward_fn(lhs, rhs, spec)``, bilinear in (lhs, rhs): its
    JVP is itself on the tangents; its transposes are the input gradient (itself on
    the transposed spec of :mod:`jaxconv._src.autodiff`) and ``kernel_grad_fn(lhs, g,
    spec)`` (default :func:`kernel_grad`). So jvp, grad, jacfwd, jacrev, hessian and
    gradients of gradients all run on it. Returns ``conv(lhs, rhs, spec)``."""
    kernel_grad_fn = kernel_grad_fn or kernel_grad
    prim = core.Primitive(name)

    def conv_fn(lhs, rhs, spec: ConvSpec):
        return prim.bind(lhs, rhs, spec=spec)

    def jvp(primals, tangents, *, spec: ConvSpec):
        lhs, rhs = primals
        t_lhs, t_rhs = tangents
        y = prim.bind(lhs, rhs, spec=spec)
        out = None
        if type(t_lhs) is not ad.Zero:
            out = prim.bind(t_lhs, rhs, spec=spec)
        if type(t_rhs) is not ad.Zero:
            part = prim.bind(lhs, t_rhs, spec=spec)
            out = part if out is None else out + part
        if out is None:
            out = ad.Zero.from_primal_value(y)
        return y, out

    def transpose(ct, lhs, rhs, *, spec: ConvSpec):
        if type(ct) is ad.Zero:
            return (
                None if not ad.is_undefined_primal(lhs) else ad.Zero(lhs.aval),
                None if not ad.is_undefined_primal(rhs) else ad.Zero(rhs.aval),
            )
        if ad.is_undefined_primal(lhs):
            return autodiff.lhs_grad(ct, rhs, spec, conv_fn), None
        return None, kernel_grad_fn(lhs, ct, spec)

    def batched(args, dims, *, spec: ConvSpec):
        # the forward computation vmapped (its gradients then come from plain autodiff
        # of the vmapped computation: correct, only slower)
        out = jax.vmap(lambda a, b: forward_fn(a, b, spec), in_axes=tuple(dims))(*args)
        return out, 0

    # eager calls run the forward's jnp ops (public API only: no jax._src dispatch)
    prim.def_impl(lambda lhs, rhs, *, spec: forward_fn(lhs, rhs, spec))
    prim.def_abstract_eval(
        lambda lhs, rhs, *, spec: jax.core.ShapedArray(spec.out_shape, spec.out_dtype)
    )
    mlir.register_lowering(
        prim,
        mlir.lower_fun(
            lambda lhs, rhs, *, spec: forward_fn(lhs, rhs, spec), multiple_results=False
        ),
    )
    ad.primitive_jvps[prim] = jvp
    ad.primitive_transposes[prim] = transpose
    batching.primitive_batchers[prim] = batched
    return conv_fn


_taps_conv = bilinear_primitive("jaxconv_taps", forward)
_xla_taps_grad_conv = bilinear_primitive("jaxconv_xla_taps_grad", _xla_forward)


def conv(lhs, rhs, spec: ConvSpec):
    """The ``"taps"`` convolution of ``lhs`` and ``rhs`` (in the spec's layouts),
    differentiable to any order in either mode, with gradients on the fast paths."""
    return _taps_conv(lhs, rhs, spec)


#: ``"xla_taps_grad"``: an XLA forward (:func:`_xla_forward`: lax, a dot for 1x1,
#: sub-pixel phases for transposed layers) with this module's gradients (where lax's
#: are slow: its kernel gradient of transposed and wide-group layers is 10-50x slower
#: on the CPU). Registered beside ``"taps"``.
XLA_TAPS_GRAD = "xla_taps_grad"


def xla_taps_grad_conv(lhs, rhs, spec: ConvSpec):
    """An XLA forward convolution (:func:`_xla_forward`) with the ``"taps"`` gradients."""
    return _xla_taps_grad_conv(lhs, rhs, spec)
