"""``scipy.signal``-compatible convolution and correlation on jaxconv's spec and dispatch.

True convolution flips the kernel; correlation (what deep learning calls
"convolution") does not, and conjugates a complex kernel. All four functions are one
correlation ``out[n] = sum_m x[n + m - lo] * K[m]`` of the first input ``x`` with a
kernel ``K`` (``flip(in2)`` for convolution, ``conj(in2)`` for correlation), computed
by one :class:`~jaxconv._src.spec.ConvSpec` (one batch, one channel, layout ``NC...``)
and :func:`~jaxconv._src.dispatch.run`. The modes are explicit pads of that spec:

* ``full``: ``k - 1`` on both sides, output ``n + k - 1``;
* ``same``: output ``n``, centred as scipy centres it: the output starts ``(k - 1) // 2``
  samples into the full result for ``convolve``, ``correlate`` and ``convolve2d``, but
  ``k // 2`` samples for ``correlate2d`` (one sample apart for even ``k``);
* ``valid``: no padding, output ``|n - k| + 1``; when ``in2`` is the larger input on
  every axis the inputs are swapped, as scipy swaps them.

``convolve2d`` / ``correlate2d`` also take scipy's ``boundary`` (``fill`` with
``fillvalue``, ``wrap``, ``symm``), realised by the spec's boundary modes
(``constant``, ``circular``, ``symmetric``); ``jax.scipy.signal`` has only ``fill``
with ``fillvalue=0``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxconv._src import dispatch
from jaxconv._src.spec import ConvSpec

MODES = ("full", "same", "valid")

#: scipy's ``boundary`` names -> the spec's boundary modes.
SCIPY_BOUNDARIES = {"fill": "constant", "wrap": "circular", "symm": "symmetric"}


def _as_arrays(in1, in2):
    a, b = jnp.asarray(in1), jnp.asarray(in2)
    dt = jnp.result_type(a, b)
    if dt == jnp.bool_:
        raise TypeError(f"`in1` and `in2` must be numeric, got {a.dtype} and {b.dtype}")
    return a.astype(dt), b.astype(dt)


def _check_mode(mode: str) -> str:
    if not isinstance(mode, str) or mode not in MODES:
        raise ValueError(f"`mode` must be one of {MODES}, got {mode!r}")
    return mode


def _swap_needed(mode: str, shape1: Sequence[int], shape2: Sequence[int]) -> bool:
    """scipy's rule: in ``valid`` mode one input must be at least as large as the other
    on every axis; swap when it is ``in2``."""
    if mode != "valid" or not shape1:
        return False
    ok1 = all(a >= b for a, b in zip(shape1, shape2))
    ok2 = all(b >= a for a, b in zip(shape1, shape2))
    if not (ok1 or ok2):
        raise ValueError(
            "for `mode='valid'` one input must be at least as large as the other on every "
            f"axis, got shapes {tuple(shape1)} and {tuple(shape2)}"
        )
    return not ok1


def _mode_pads(x_shape, k_shape, mode: str, same_start: str) -> list[tuple[int, int]]:
    pads = []
    for kk in k_shape:
        if mode == "full":
            pads.append((kk - 1, kk - 1))
        elif mode == "same":
            start = (kk - 1) // 2 if same_start == "convolve" else kk // 2
            pads.append((kk - 1 - start, start))
        else:
            pads.append((0, 0))
    return pads


def _correlate(
    x,
    k,
    mode: str,
    same_start: str,
    implementation: Any,
    boundary: str = "zeros",
    fillvalue: float = 0.0,
):
    """``sum_m x[n + m - lo] * k[m]`` for ``mode`` (no flip, no conjugation here)."""
    pads = _mode_pads(x.shape, k.shape, mode, same_start)
    if boundary in ("circular", "symmetric") and any(max(p) > n for p, n in zip(pads, x.shape)):
        # Wider than the input: scipy wraps / mirrors repeatedly, as numpy.pad does.
        # Materialise here; the spec then sees an explicitly padded, zero-boundary input.
        x = jnp.pad(x, pads, mode="wrap" if boundary == "circular" else "symmetric")
        pads, boundary = [(0, 0)] * x.ndim, "zeros"
    dims = tuple(range(x.ndim + 2))
    spec = ConvSpec.create(
        (1, 1) + x.shape,
        (1, 1) + k.shape,
        None,
        tuple(pads),
        None,
        None,
        lax.ConvDimensionNumbers(dims, dims, dims),
        precision=lax.Precision.HIGHEST if jnp.issubdtype(x.dtype, jnp.inexact) else None,
        lhs_dtype=x.dtype,
        rhs_dtype=k.dtype,
        boundary=boundary,
        boundary_value=fillvalue,
    )
    return dispatch.run(x[None, None], k[None, None], spec, implementation)[0, 0]


def _flip(a):
    return lax.rev(a, tuple(range(a.ndim))) if a.ndim else a


def _conj(a):
    return jnp.conj(a) if jnp.iscomplexobj(a) else a


def convolve(in1, in2, mode: str = "full", *, implementation: str | Sequence[str] | None = None):
    """N-D true convolution, as :func:`scipy.signal.convolve`: the kernel is flipped.

    Args:
      in1, in2: arrays of the same rank (0-d gives the product).
      mode: ``"full"`` (shape ``n1 + n2 - 1``), ``"same"`` (shape of ``in1``, centred
        as scipy), ``"valid"`` (shape ``|n1 - n2| + 1``; the larger input is the
        signal, as convolution commutes).
      implementation: ``None`` (automatic), a name, or a sequence of names.

    Returns:
      The convolution, in the promoted dtype of the inputs.
    """
    a, b = _as_arrays(in1, in2)
    mode = _check_mode(mode)
    if a.ndim == b.ndim == 0:
        return a * b
    _check_rank(a, b, "convolve")
    if _swap_needed(mode, a.shape, b.shape):
        a, b = b, a
    return _correlate(a, _flip(b), mode, "convolve", implementation)


def correlate(in1, in2, mode: str = "full", *, implementation: str | Sequence[str] | None = None):
    """N-D cross-correlation, as :func:`scipy.signal.correlate`:
    ``z[k] = sum_l in1[l] * conj(in2[l - k + n2 - 1])`` (``full``), i.e. the kernel is
    not flipped and a complex ``in2`` is conjugated.

    Args:
      in1, in2: arrays of the same rank (0-d gives ``in1 * conj(in2)``).
      mode: ``"full"``, ``"same"`` (centred as :func:`scipy.signal.correlate`, which
        differs by one sample from ``correlate2d`` for even kernels) or ``"valid"``.
      implementation: ``None`` (automatic), a name, or a sequence of names.
    """
    a, b = _as_arrays(in1, in2)
    mode = _check_mode(mode)
    if a.ndim == b.ndim == 0:
        return a * _conj(b)
    _check_rank(a, b, "correlate")
    # scipy: correlate(in1, in2) = convolve(in1, reverse_and_conj(in2)); convolve swaps
    # its inputs in valid mode when the second is larger (convolution commutes)
    k = _conj(b)
    if _swap_needed(mode, a.shape, b.shape):
        return _correlate(_flip(k), _flip(a), mode, "convolve", implementation)
    return _correlate(a, k, mode, "convolve", implementation)


def _check_rank(a, b, name: str) -> None:
    if a.ndim != b.ndim:
        raise ValueError(
            f"`in1` and `in2` of {name} must have the same rank, got shapes {a.shape} and {b.shape}"
        )


def _check_2d(a, b, name: str) -> None:
    if not a.ndim == b.ndim == 2:
        raise ValueError(
            f"{name} inputs must both be 2-D arrays, got shapes {a.shape} and {b.shape}"
        )


def _boundary(boundary: str, fillvalue) -> tuple[str, float]:
    if not isinstance(boundary, str) or boundary not in SCIPY_BOUNDARIES:
        raise ValueError(f"`boundary` must be one of {tuple(SCIPY_BOUNDARIES)}, got {boundary!r}")
    fill = np.asarray(fillvalue)
    if fill.ndim != 0:
        raise ValueError(f"`fillvalue` must be a scalar, got shape {fill.shape}")
    if np.iscomplexobj(fill):
        if fill.imag != 0:
            raise ValueError(f"`fillvalue` must be real, got {fillvalue!r}")
        fill = fill.real
    return SCIPY_BOUNDARIES[boundary], float(fill)


def convolve2d(
    in1,
    in2,
    mode: str = "full",
    boundary: str = "fill",
    fillvalue: Any = 0,
    *,
    implementation: str | Sequence[str] | None = None,
):
    """2-D true convolution, as :func:`scipy.signal.convolve2d`.

    Args:
      in1: ``(H, W)`` signal; in ``full`` and ``same`` mode it is extended by
        ``boundary``: ``"fill"`` (with ``fillvalue``), ``"wrap"`` (circular) or
        ``"symm"`` (mirrored, edge sample repeated).
      in2: ``(kh, kw)`` kernel, flipped.
      mode: ``"full"``, ``"same"``, ``"valid"`` (inputs swapped when ``in2`` is larger).
      implementation: ``None`` (automatic), a name, or a sequence of names.
    """
    a, b = _as_arrays(in1, in2)
    mode = _check_mode(mode)
    _check_2d(a, b, "convolve2d")
    bmode, fill = _boundary(boundary, fillvalue)
    if _swap_needed(mode, a.shape, b.shape):
        a, b = b, a
    return _correlate(a, _flip(b), mode, "convolve", implementation, bmode, fill)


def correlate2d(
    in1,
    in2,
    mode: str = "full",
    boundary: str = "fill",
    fillvalue: Any = 0,
    *,
    implementation: str | Sequence[str] | None = None,
):
    """2-D cross-correlation, as :func:`scipy.signal.correlate2d` (``in2`` conjugated,
    not flipped; ``same`` output starts ``k // 2`` samples into the full result).

    In ``valid`` mode with ``in2`` the larger input, scipy correlates ``in2`` with
    ``conj(in1)`` and reverses the result; so does this function (for complex inputs
    that is the conjugate of :func:`correlate`'s result).
    """
    a, b = _as_arrays(in1, in2)
    mode = _check_mode(mode)
    _check_2d(a, b, "correlate2d")
    bmode, fill = _boundary(boundary, fillvalue)
    if _swap_needed(mode, a.shape, b.shape):
        return _flip(_correlate(b, _conj(a), mode, "correlate2d", implementation, bmode, fill))
    return _correlate(a, _conj(b), mode, "correlate2d", implementation, bmode, fill)
