"""The reference every implementation is checked against, and one tolerance table.

``reference_conv`` is ``lax.conv_general_dilated`` at ``Precision.HIGHEST`` on
upcast operands (float64 where x64 is enabled, else float32; complex128/complex64),
with the boundary mode materialised by ``jnp.pad``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxconv._src.spec import ConvSpec, dtype_kind, pad_input

#: Relative tolerance (max |a - b| / max |b|) by output dtype, used by the tests,
#: ``jaxconv check`` and the kernel checks alike.
TOLERANCE: dict[str, float] = {
    "float64": 1e-12,
    "complex128": 1e-12,
    "float32": 2e-5,
    "complex64": 2e-5,
    "float16": 5e-3,
    "bfloat16": 2e-2,
    "int8": 0.0,
    "int16": 0.0,
    "int32": 0.0,
    "int64": 0.0,
    "uint8": 0.0,
    "uint32": 0.0,
}


def tolerance(dtype) -> float:
    """Relative tolerance for results of ``dtype`` (see :data:`TOLERANCE`)."""
    return TOLERANCE[np.dtype(dtype).name]


def _upcast_dtype(dtype):
    dtype = np.dtype(dtype)
    x64 = jax.config.jax_enable_x64
    if dtype_kind(dtype) == "c":
        return np.dtype(np.complex128 if x64 else np.complex64)
    if dtype_kind(dtype) == "f":
        return np.dtype(np.float64 if x64 else np.float32)
    return dtype


def reference_conv(lhs, rhs, spec: ConvSpec):
    """Ground truth for ``spec``: lax at HIGHEST precision on upcast operands.

    Returns the result in the upcast dtype (compare before casting down)."""
    floating = dtype_kind(spec.out_dtype) in "fc"
    dt = _upcast_dtype(spec.out_dtype if floating else spec.lhs_dtype)
    lhs = jnp.asarray(lhs).astype(dt) if floating else jnp.asarray(lhs)
    rhs = jnp.asarray(rhs).astype(dt) if floating else jnp.asarray(rhs)
    if floating:
        spec = spec.replace(
            lhs_dtype=dt, rhs_dtype=dt, preferred_element_type=None, precision=lax.Precision.HIGHEST
        )
    lhs, zspec = pad_input(lhs, spec)
    return lax.conv_general_dilated(lhs, rhs, **zspec.lax_kwargs())


def relative_error(actual, expected) -> float:
    """``max |actual - expected| / max(max |expected|, tiny)`` in float64 numpy."""
    a = np.asarray(actual).astype(np.complex128 if np.iscomplexobj(actual) else np.float64)
    e = np.asarray(expected).astype(a.dtype)
    if a.shape != e.shape:
        raise AssertionError(f"shape mismatch: {a.shape} vs {e.shape}")
    if e.size == 0:
        return 0.0
    scale = max(float(np.max(np.abs(e))), 1e-30)
    return float(np.max(np.abs(a - e))) / scale
