"""``"fft"``: convolution through the FFT over the spatial axes, for large kernels.

The padded (and input-dilated) input and the dilated, spatially reversed kernel are
transformed over the spatial axes at the padded input's size ``P``; the product is
contracted over the input channels of each group frequency by frequency; the inverse
transform gives the circular convolution, whose samples ``K - 1 .. P - 1`` (``K`` the
dilated window) are the cross-correlation lax computes, free of wrap-around. Strides
keep every ``s``-th of those samples.

Cost: ``O(N C P log P)`` for the transforms plus ``N * F * C_in/G * C_out`` complex
multiply-adds (``F`` frequencies), independent of the window size: it pays off for large
windows (RepLKNet's 31x31, ConvNeXt's 7x7 at larger sizes), not for 1x1 or 3x3.

Supported: any rank, padding (crops too), strides, kernel and input dilation, feature
and batch groups, every layout, float16 / bfloat16 (computed in float32) / float32
(complex64) / float64 (complex128) and complex inputs. Not supported, with
``NotImplementedError``: integer inputs (the result would only be approximately an
integer), and spatial rank 0 (nothing to transform).

Accuracy: the error grows with ``log P`` and the kernel size like any FFT convolution;
on float32 it stays within the float32 tolerance of :mod:`jaxconv._src.reference` for
the benchmarked layers (``tests/test_fft.py``).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxconv._src.impl import window as W
from jaxconv._src.spec import ConvSpec, dtype_kind

NAME = "fft"


def supports(spec: ConvSpec) -> str | None:
    kind = dtype_kind(spec.lhs_dtype)
    if kind in "iu":
        return (
            f"fft computes in floating point; integer inputs ({spec.lhs_dtype}) would "
            "not give exact integer results"
        )
    if spec.nspatial == 0:
        return "fft needs at least one spatial axis to transform"
    return None


def _compute_dtype(spec: ConvSpec):
    """Real (or complex) dtype in which the transforms run."""
    dt = spec.out_dtype
    if dtype_kind(dt) == "c":
        return np.dtype(np.complex128 if dt == np.complex128 else np.complex64)
    return np.dtype(np.float64 if dt == np.float64 else np.float32)


def conv(lhs, rhs, spec: ConvSpec):
    reason = supports(spec)
    if reason is not None:
        raise NotImplementedError(reason)
    n = spec.nspatial
    cdt = _compute_dtype(spec)
    complex_input = dtype_kind(cdt) == "c"
    x, w = W.to_channels_last(lhs, rhs, spec)
    xp = W.dilate_and_pad(x.astype(cdt), spec)  # (N, *P, C)
    P = xp.shape[1 : 1 + n]
    K = spec.effective_window
    # dilated, reversed kernel (*K, I, O), zero-padded to P on every spatial axis
    w = w.astype(cdt)
    if any(d != 1 for d in spec.rhs_dilation):
        config = [(0, 0, d - 1) for d in spec.rhs_dilation] + [(0, 0, 0), (0, 0, 0)]
        w = lax.pad(w, jnp.zeros((), cdt), config)
    w = lax.rev(w, tuple(range(n)))
    w = jnp.pad(w, [(0, p - k) for p, k in zip(P, K)] + [(0, 0), (0, 0)])

    axes_x = tuple(range(1, 1 + n))
    axes_w = tuple(range(n))
    if complex_input:
        fx = jnp.fft.fftn(xp, axes=axes_x)
        fw = jnp.fft.fftn(w, axes=axes_w)
    else:
        fx = jnp.fft.rfftn(xp, axes=axes_x)
        fw = jnp.fft.rfftn(w, axes=axes_w)
    fx = W.split_groups_lhs(fx, spec)  # (B, N', *F, G, I)
    fw = W.split_groups_rhs(fw, spec)  # (*F, I, G, B, O')
    fy = jnp.einsum("bn...gi,...igbo->n...gbo", fx, fw, precision=lax.Precision.HIGHEST)
    fy = W.merge_groups_out(fy)  # (N', *F, O)
    if complex_input:
        y = jnp.fft.ifftn(fy, axes=axes_x)
    else:
        y = jnp.fft.irfftn(fy, s=P, axes=axes_x)
    # valid samples K-1 .. P-1, every stride-th
    starts = (0,) + tuple(k - 1 for k in K) + (0,)
    limits = (y.shape[0],) + tuple(P) + (y.shape[-1],)
    strides = (1,) + tuple(spec.window_strides) + (1,)
    y = lax.slice(y, starts, limits, strides)
    return W.from_channels_last(y.astype(spec.out_dtype), spec)
