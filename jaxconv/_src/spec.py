"""The canonical description of one convolution: :class:`ConvSpec`.

Every public entry point (the lax drop-in, the channels-last ``conv``, the Flax
modules, the scipy-style functions) turns its arguments into one frozen, hashable
``ConvSpec``. The spec validates once, computes the output shape and the cost once,
and is the only thing an implementation reads.

Vocabulary follows ``jax.lax``: ``lhs`` is the input, ``rhs`` the kernel,
``dimension_numbers`` a :class:`jax.lax.ConvDimensionNumbers` of three permutations
``(lhs_spec, rhs_spec, out_spec)`` that list, for each operand, the position of
(batch, feature, *spatial) resp. (out-feature, in-feature, *spatial).
"""

from __future__ import annotations

import dataclasses
import math
import operator
from collections.abc import Sequence
from typing import Any

import numpy as np
from jax import lax

# --------------------------------------------------------------------------------------
# Boundary modes
# --------------------------------------------------------------------------------------

#: Canonical boundary-mode names, with the ``numpy.pad`` mode that realises each.
BOUNDARY_MODES: dict[str, str | None] = {
    "zeros": None,  # handled by the convolution's own zero padding
    "constant": "constant",
    "circular": "wrap",
    "reflect": "reflect",
    "symmetric": "symmetric",
    "replicate": "edge",
}

#: Accepted aliases (numpy / PyTorch / scipy spellings) for the canonical names.
BOUNDARY_ALIASES: dict[str, str] = {
    "zeros": "zeros",
    "zero": "zeros",
    "fill": "constant",
    "constant": "constant",
    "circular": "circular",
    "wrap": "circular",
    "periodic": "circular",
    "reflect": "reflect",
    "symmetric": "symmetric",
    "symm": "symmetric",
    "replicate": "replicate",
    "edge": "replicate",
    "nearest": "replicate",
}


def canonical_boundary(mode: str) -> str:
    """Return the canonical boundary-mode name for ``mode`` (case-insensitive)."""
    if not isinstance(mode, str):
        raise TypeError(f"`padding_mode` must be a string, got {type(mode).__name__}")
    key = mode.lower()
    if key not in BOUNDARY_ALIASES:
        raise ValueError(f"`padding_mode` must be one of {sorted(BOUNDARY_ALIASES)}, got {mode!r}")
    return BOUNDARY_ALIASES[key]


# --------------------------------------------------------------------------------------
# Padding words
# --------------------------------------------------------------------------------------

PADDING_WORDS = ("VALID", "SAME", "SAME_LOWER", "FULL", "CAUSAL")


def _dilate(size: int, dilation: int) -> int:
    return 0 if size == 0 else 1 + dilation * (size - 1)


def padding_to_pairs(
    padding: Any,
    in_spatial: Sequence[int],
    window: Sequence[int],
    strides: Sequence[int],
    rhs_dilation: Sequence[int],
    lhs_dilation: Sequence[int] | None = None,
) -> tuple[tuple[int, int], ...]:
    """Turn any accepted padding into explicit ``(lo, hi)`` pairs, one per spatial axis.

    Accepted: a word (``VALID``, ``SAME``, ``SAME_LOWER``, ``FULL``, ``CAUSAL``; any
    case), an int (symmetric on every axis, as PyTorch), or a sequence with one entry
    per spatial axis, each an int (symmetric) or a ``(lo, hi)`` pair. Negative pads crop.
    Words are resolved against the (input-dilated) input and the dilated window.
    """
    n = len(in_spatial)
    lhs_dilation = tuple(lhs_dilation) if lhs_dilation is not None else (1,) * n
    if isinstance(padding, str):
        word = padding.upper()
        eff_in = [_dilate(s, d) for s, d in zip(in_spatial, lhs_dilation)]
        eff_k = [_dilate(k, d) for k, d in zip(window, rhs_dilation)]
        if word in ("VALID", "SAME", "SAME_LOWER"):
            pairs = lax.padtype_to_pads(eff_in, eff_k, tuple(strides), word)
            return tuple((int(lo), int(hi)) for lo, hi in pairs)
        if word == "FULL":
            return tuple((k - 1, k - 1) for k in eff_k)
        if word == "CAUSAL":
            return tuple((k - 1, 0) for k in eff_k)
        raise ValueError(
            f"`padding` word must be one of {PADDING_WORDS} (any case), got {padding!r}"
        )
    if isinstance(padding, (bool, np.bool_)):
        raise TypeError("`padding` must be a word, an int or a sequence, got a bool")
    if isinstance(padding, (int, np.integer)):
        return tuple((int(padding), int(padding)) for _ in range(n))
    try:
        entries = list(padding)
    except TypeError:
        raise TypeError(
            "`padding` must be a word, an int, or a sequence of ints or (lo, hi) pairs, "
            f"got {type(padding).__name__}"
        ) from None
    if len(entries) != n:
        raise ValueError(
            f"`padding` must have one entry per spatial axis (={n}), "
            f"got {len(entries)} entries: {padding!r}"
        )
    pairs = []
    for e in entries:
        if isinstance(e, (int, np.integer)) and not isinstance(e, (bool, np.bool_)):
            pairs.append((int(e), int(e)))
            continue
        try:
            lo, hi = e
            pairs.append((operator.index(lo), operator.index(hi)))
        except (TypeError, ValueError):
            raise ValueError(
                "`padding` entries must be ints or (lo, hi) pairs of ints, "
                f"got {e!r} in {padding!r}"
            ) from None
    return tuple(pairs)


def dtype_kind(dtype) -> str:
    """numpy's kind letter, with the ml_dtypes floats (bfloat16, ...) as ``"f"``."""
    import jax.numpy as jnp

    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return "b"
    if jnp.issubdtype(dtype, jnp.floating):
        return "f"
    return dtype.kind


# --------------------------------------------------------------------------------------
# Small normalisers
# --------------------------------------------------------------------------------------


def _int_tuple(value: Any, n: int, name: str, *, minimum: int = 1) -> tuple[int, ...]:
    """An int or a sequence of n ints, each >= minimum, as a tuple."""
    if value is None:
        return (1,) * n
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        out = (int(value),) * n
    else:
        try:
            out = tuple(operator.index(v) for v in value)
        except TypeError:
            raise TypeError(
                f"`{name}` must be an int or a sequence of {n} ints, got {value!r}"
            ) from None
        if len(out) != n:
            raise ValueError(
                f"`{name}` must have one entry per spatial axis (={n}), got {len(out)}: {value!r}"
            )
    for v in out:
        if v < minimum:
            raise ValueError(f"`{name}` entries must be >= {minimum}, got {value!r}")
    return out


def _canonical_precision(precision: Any) -> Any:
    if precision is None:
        return None
    if isinstance(precision, (list, tuple)):
        if len(precision) != 2:
            raise ValueError(
                f"`precision` must be None, a Precision, a string or a pair, got {precision!r}"
            )
        return tuple(_canonical_precision(p) for p in precision)
    if isinstance(precision, lax.Precision):
        return precision
    if isinstance(precision, str):
        try:
            return lax.Precision(precision)
        except ValueError:
            raise ValueError(
                "`precision` must be one of 'default', 'high', 'highest' (or a "
                f"jax.lax.Precision), got {precision!r}"
            ) from None
    if isinstance(precision, (lax.DotAlgorithmPreset,)):
        return precision
    raise TypeError(f"`precision` must be None, a string or jax.lax.Precision, got {precision!r}")


def _dimension_numbers(lhs_shape, rhs_shape, dimension_numbers) -> lax.ConvDimensionNumbers:
    try:
        return lax.conv_dimension_numbers(lhs_shape, rhs_shape, dimension_numbers)
    except (TypeError, ValueError, AssertionError) as e:
        raise ValueError(
            f"`dimension_numbers` {dimension_numbers!r} do not fit lhs of shape {lhs_shape} "
            f"and rhs of shape {rhs_shape}: {e}"
        ) from None


def default_dimension_numbers(nspatial: int, channels_last: bool = True):
    """Dimension numbers for channels-last (NHWC, HWIO, NHWC) or lax's default (NCHW)."""
    sp = tuple(range(1, nspatial + 1))
    if channels_last:
        lhs = (0, nspatial + 1) + sp
        rhs = (nspatial + 1, nspatial) + tuple(range(nspatial))
        return lax.ConvDimensionNumbers(lhs, rhs, lhs)
    sp2 = tuple(range(2, nspatial + 2))
    return lax.ConvDimensionNumbers((0, 1) + sp2, (0, 1) + sp2, (0, 1) + sp2)


# --------------------------------------------------------------------------------------
# The spec
# --------------------------------------------------------------------------------------


_LAX_NAMES = {
    "window_strides": "window_strides",
    "lhs_dilation": "lhs_dilation",
    "rhs_dilation": "rhs_dilation",
    "feature_group_count": "feature_group_count",
    "batch_group_count": "batch_group_count",
}


@dataclasses.dataclass(frozen=True)
class ConvSpec:
    """Canonical, validated, hashable description of one N-D convolution.

    Shapes are in the operands' own layouts; ``dimension_numbers`` says where each
    logical axis sits. ``padding`` holds explicit ``(lo, hi)`` pairs (negative crops);
    ``boundary`` says how the positive part of the padding is filled (``"zeros"``
    leaves it to the convolution; other modes are materialised by :func:`pad_input`).

    Build one with :meth:`ConvSpec.create`; never construct it by hand.
    """

    lhs_shape: tuple[int, ...]
    rhs_shape: tuple[int, ...]
    lhs_dtype: np.dtype
    rhs_dtype: np.dtype
    window_strides: tuple[int, ...]
    padding: tuple[tuple[int, int], ...]
    lhs_dilation: tuple[int, ...]
    rhs_dilation: tuple[int, ...]
    dimension_numbers: lax.ConvDimensionNumbers
    feature_group_count: int = 1
    batch_group_count: int = 1
    precision: Any = None
    preferred_element_type: np.dtype | None = None
    boundary: str = "zeros"
    boundary_value: float = 0.0

    # ---------------------------------------------------------------- construction
    @classmethod
    def create(
        cls,
        lhs_shape: Sequence[int],
        rhs_shape: Sequence[int],
        window_strides: Any = None,
        padding: Any = "VALID",
        lhs_dilation: Any = None,
        rhs_dilation: Any = None,
        dimension_numbers: Any = None,
        feature_group_count: int = 1,
        batch_group_count: int = 1,
        precision: Any = None,
        preferred_element_type: Any = None,
        *,
        lhs_dtype: Any = np.float32,
        rhs_dtype: Any = None,
        boundary: str = "zeros",
        boundary_value: float = 0.0,
        arg_names: dict[str, str] | None = None,
    ) -> ConvSpec:
        """Validate lax-style arguments and return the canonical spec.

        Raises ``ValueError`` / ``TypeError`` naming the argument for any bad input.
        ``arg_names`` maps lax's argument names to the caller's (``{"feature_group_count":
        "groups"}``) so that messages name what the user typed.
        """
        lhs_shape = tuple(int(s) for s in lhs_shape)
        rhs_shape = tuple(int(s) for s in rhs_shape)
        if len(lhs_shape) != len(rhs_shape):
            raise ValueError(
                f"`lhs` and `rhs` must have the same rank: lhs has shape {lhs_shape} "
                f"(rank {len(lhs_shape)}), rhs has shape {rhs_shape} (rank {len(rhs_shape)})"
            )
        if len(lhs_shape) < 2:
            raise ValueError(
                f"`lhs` must have rank >= 2 (batch, feature, *spatial), got shape {lhs_shape}"
            )
        n = len(lhs_shape) - 2
        dnums = _dimension_numbers(lhs_shape, rhs_shape, dimension_numbers)

        lhs_dtype = np.dtype(lhs_dtype)
        rhs_dtype = lhs_dtype if rhs_dtype is None else np.dtype(rhs_dtype)
        if lhs_dtype != rhs_dtype:
            raise TypeError(
                "`lhs` and `rhs` must have the same dtype (as in lax.conv_general_dilated), "
                f"got lhs {lhs_dtype} and rhs {rhs_dtype}"
            )
        if dtype_kind(lhs_dtype) not in "fciu":
            raise TypeError(f"`lhs` dtype must be numeric, got {lhs_dtype}")
        pet = None if preferred_element_type is None else np.dtype(preferred_element_type)
        if pet is not None and (dtype_kind(pet) in "iu") != (dtype_kind(lhs_dtype) in "iu"):
            raise TypeError(
                "`preferred_element_type` must be of the same kind as the inputs "
                f"(integer with integer, floating with floating), got {pet} for {lhs_dtype}"
            )

        nm = dict(_LAX_NAMES, **(arg_names or {}))
        strides = _int_tuple(window_strides, n, nm["window_strides"])
        lhs_dil = _int_tuple(lhs_dilation, n, nm["lhs_dilation"])
        rhs_dil = _int_tuple(rhs_dilation, n, nm["rhs_dilation"])

        for name, v in (
            (nm["feature_group_count"], feature_group_count),
            (nm["batch_group_count"], batch_group_count),
        ):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise TypeError(f"`{name}` must be an int, got {v!r}")
            if v < 1:
                raise ValueError(f"`{name}` must be >= 1, got {v}")
        G, B = int(feature_group_count), int(batch_group_count)
        if G > 1 and B > 1:
            raise ValueError(
                f"at most one of `{nm['feature_group_count']}` and `{nm['batch_group_count']}` may be > 1, "
                f"got feature_group_count={G} and batch_group_count={B}"
            )
        lhs_spec, rhs_spec, _ = dnums
        N, C = lhs_shape[lhs_spec[0]], lhs_shape[lhs_spec[1]]
        O, I = rhs_shape[rhs_spec[0]], rhs_shape[rhs_spec[1]]
        if C % G:
            raise ValueError(
                f"`{nm['feature_group_count']}` (={G}) must divide the input channels (={C})"
            )
        if C // G != I:
            raise ValueError(
                f"input channels (={C}) divided by `{nm['feature_group_count']}` (={G}) must equal "
                f"the kernel's input-feature size (={I}); got {C} // {G} = {C // G}"
            )
        if O % G:
            raise ValueError(
                f"`{nm['feature_group_count']}` (={G}) must divide the kernel's output features (={O})"
            )
        if N % B:
            raise ValueError(
                f"`{nm['batch_group_count']}` (={B}) must divide the batch size (={N})"
            )
        if O % B:
            raise ValueError(
                f"`{nm['batch_group_count']}` (={B}) must divide the kernel's output features (={O})"
            )

        in_sp = tuple(lhs_shape[d] for d in lhs_spec[2:])
        win = tuple(rhs_shape[d] for d in rhs_spec[2:])
        pads = padding_to_pairs(padding, in_sp, win, strides, rhs_dil, lhs_dil)

        bmode = canonical_boundary(boundary)
        spec = cls(
            lhs_shape=lhs_shape,
            rhs_shape=rhs_shape,
            lhs_dtype=lhs_dtype,
            rhs_dtype=rhs_dtype,
            window_strides=strides,
            padding=pads,
            lhs_dilation=lhs_dil,
            rhs_dilation=rhs_dil,
            dimension_numbers=dnums,
            feature_group_count=G,
            batch_group_count=B,
            precision=_canonical_precision(precision),
            preferred_element_type=pet,
            boundary=bmode,
            boundary_value=float(boundary_value),
        )
        spec._validate_geometry()
        return spec

    def _validate_geometry(self) -> None:
        for i, (size, (lo, hi), k, ld, rd) in enumerate(
            zip(self.lhs_spatial, self.padding, self.window, self.lhs_dilation, self.rhs_dilation)
        ):
            padded = _dilate(size, ld) + lo + hi
            eff_k = _dilate(k, rd)
            if padded < eff_k or padded <= 0:
                raise ValueError(
                    f"window larger than the padded input on spatial axis {i}: the dilated "
                    f"window spans {eff_k} but the padded input has {padded} "
                    f"(size {size}, lhs_dilation {ld}, padding ({lo}, {hi}))"
                )
        if self.boundary in ("zeros",):
            return
        if self.boundary == "constant" and self.boundary_value == 0.0:
            return
        if any(d != 1 for d in self.lhs_dilation):
            raise ValueError(
                f"`padding_mode` {self.boundary!r} needs lhs_dilation == 1 on every axis "
                f"(boundary values of an input-dilated signal are undefined), got "
                f"{self.lhs_dilation}"
            )
        for i, (size, (lo, hi)) in enumerate(zip(self.lhs_spatial, self.padding)):
            need = max(lo, hi, 0)
            limit = {"circular": size, "reflect": size - 1, "symmetric": size}.get(self.boundary)
            if limit is not None and need > limit:
                raise ValueError(
                    f"{self.boundary} padding of {need} on spatial axis {i} is wider than "
                    f"the input allows (size {size}: at most {limit})"
                )

    # ---------------------------------------------------------------- derived shapes
    @property
    def nspatial(self) -> int:
        return len(self.lhs_shape) - 2

    @property
    def lhs_spatial(self) -> tuple[int, ...]:
        return tuple(self.lhs_shape[d] for d in self.dimension_numbers.lhs_spec[2:])

    @property
    def window(self) -> tuple[int, ...]:
        return tuple(self.rhs_shape[d] for d in self.dimension_numbers.rhs_spec[2:])

    @property
    def batch(self) -> int:
        return self.lhs_shape[self.dimension_numbers.lhs_spec[0]]

    @property
    def in_features(self) -> int:
        return self.lhs_shape[self.dimension_numbers.lhs_spec[1]]

    @property
    def out_features(self) -> int:
        return self.rhs_shape[self.dimension_numbers.rhs_spec[0]]

    @property
    def rhs_in_features(self) -> int:
        return self.rhs_shape[self.dimension_numbers.rhs_spec[1]]

    @property
    def effective_window(self) -> tuple[int, ...]:
        return tuple(_dilate(k, d) for k, d in zip(self.window, self.rhs_dilation))

    @property
    def padded_spatial(self) -> tuple[int, ...]:
        """Spatial sizes after input dilation and padding (what the window slides over)."""
        return tuple(
            _dilate(s, d) + lo + hi
            for s, d, (lo, hi) in zip(self.lhs_spatial, self.lhs_dilation, self.padding)
        )

    @property
    def out_spatial(self) -> tuple[int, ...]:
        return tuple(
            (p - k) // s + 1
            for p, k, s in zip(self.padded_spatial, self.effective_window, self.window_strides)
        )

    @property
    def out_shape(self) -> tuple[int, ...]:
        """Output shape in the output layout given by ``dimension_numbers.out_spec``."""
        logical = (self.batch // self.batch_group_count, self.out_features) + self.out_spatial
        shape = [0] * len(logical)
        for pos, size in zip(self.dimension_numbers.out_spec, logical):
            shape[pos] = size
        return tuple(shape)

    @property
    def out_dtype(self) -> np.dtype:
        return self.preferred_element_type or self.lhs_dtype

    @property
    def is_depthwise(self) -> bool:
        """Each group sees one input channel (depthwise, with any channel multiplier)."""
        return self.feature_group_count > 1 and self.rhs_in_features == 1

    # ---------------------------------------------------------------- cost
    def cost(self) -> dict[str, int]:
        """Nominal cost: FLOPs (2 per multiply-add, input-dilation zeros counted), bytes
        read (input and kernel) and written (output)."""
        out_elems = math.prod(self.out_shape)
        macs = out_elems * self.rhs_in_features * math.prod(self.window)
        read = (math.prod(self.lhs_shape) + math.prod(self.rhs_shape)) * self.lhs_dtype.itemsize
        written = out_elems * self.out_dtype.itemsize
        return {
            "macs": macs,
            "flops": 2 * macs,
            "bytes_read": read,
            "bytes_written": written,
            "bytes": read + written,
            "params": math.prod(self.rhs_shape),
        }

    # ---------------------------------------------------------------- variants
    def replace(self, **changes: Any) -> ConvSpec:
        """A copy with some fields changed (no re-validation of geometry)."""
        return dataclasses.replace(self, **changes)

    @property
    def needs_boundary_padding(self) -> bool:
        """True when the positive padding must be materialised (non-zero fill)."""
        if self.boundary == "zeros":
            return False
        if self.boundary == "constant" and self.boundary_value == 0.0:
            return False
        return any(lo > 0 or hi > 0 for lo, hi in self.padding)

    def lax_kwargs(self) -> dict[str, Any]:
        """Keyword arguments that make ``lax.conv_general_dilated`` compute this spec
        (zero boundary only; see :func:`pad_input`)."""
        return dict(
            window_strides=self.window_strides,
            padding=self.padding,
            lhs_dilation=self.lhs_dilation,
            rhs_dilation=self.rhs_dilation,
            dimension_numbers=self.dimension_numbers,
            feature_group_count=self.feature_group_count,
            batch_group_count=self.batch_group_count,
            precision=self.precision,
            preferred_element_type=self.preferred_element_type,
        )

    def __str__(self) -> str:
        parts = [
            f"lhs={self.lhs_shape}",
            f"rhs={self.rhs_shape}",
            f"dtype={self.lhs_dtype}",
            f"strides={self.window_strides}",
            f"padding={self.padding}",
        ]
        if any(d != 1 for d in self.lhs_dilation):
            parts.append(f"lhs_dilation={self.lhs_dilation}")
        if any(d != 1 for d in self.rhs_dilation):
            parts.append(f"rhs_dilation={self.rhs_dilation}")
        if self.feature_group_count > 1:
            parts.append(f"groups={self.feature_group_count}")
        if self.batch_group_count > 1:
            parts.append(f"batch_groups={self.batch_group_count}")
        if self.boundary != "zeros":
            parts.append(f"boundary={self.boundary}")
        return "ConvSpec(" + ", ".join(parts) + ")"


def pad_input(lhs, spec: ConvSpec):
    """Bring ``lhs`` and ``spec`` to the form every implementation computes: a zero
    boundary and no negative pads. Returns ``(lhs', spec')``.

    A non-zero boundary mode is materialised with ``jnp.pad``; negative pads (crops) are
    applied as slices by :func:`crop_input`. A spec with neither is returned unchanged.
    """
    import jax.numpy as jnp

    if spec.needs_boundary_padding:
        lhs_spec = spec.dimension_numbers.lhs_spec
        widths = [(0, 0)] * lhs.ndim
        for d, (lo, hi) in zip(lhs_spec[2:], spec.padding):
            widths[d] = (max(lo, 0), max(hi, 0))
        np_mode = BOUNDARY_MODES[spec.boundary]
        if np_mode == "constant":
            fill = np.asarray(spec.boundary_value, dtype=lhs.dtype)
            lhs = jnp.pad(lhs, widths, mode="constant", constant_values=fill)
        else:
            lhs = jnp.pad(lhs, widths, mode=np_mode)
        shape = list(spec.lhs_shape)
        for d, (lo, hi) in zip(lhs_spec[2:], spec.padding):
            shape[d] += max(lo, 0) + max(hi, 0)
        spec = spec.replace(
            lhs_shape=tuple(shape),
            padding=tuple((min(lo, 0), min(hi, 0)) for lo, hi in spec.padding),
        )
    spec = spec.replace(boundary="zeros", boundary_value=0.0)
    return crop_input(lhs, spec)


def crop_input(lhs, spec: ConvSpec):
    """Apply negative pads as slices of ``lhs``; returns ``(lhs', spec')`` with every pad
    >= 0 (unchanged when none is negative).

    On an input-dilated axis (dilation ``d``) a crop of ``c`` samples of the dilated
    signal drops ``ceil(c / d)`` input samples and pads ``ceil(c / d) * d - c`` back.
    Besides simplifying kernels, this keeps negative pads away from XLA:CPU, which
    computes wrong values for some mixed-sign pads (e.g. ``((-1, 1),)`` with a 1-wide
    window: values around 1e16 in jax 0.10.2).
    """
    from jax import lax

    if all(lo >= 0 and hi >= 0 for lo, hi in spec.padding):
        return lhs, spec
    lhs_spec = spec.dimension_numbers.lhs_spec
    starts, limits = [0] * lhs.ndim, list(lhs.shape)
    shape, pads = list(spec.lhs_shape), []
    for d, size, ld, (lo, hi) in zip(
        lhs_spec[2:], spec.lhs_spatial, spec.lhs_dilation, spec.padding
    ):
        drop_lo = -(-max(-lo, 0) // ld)
        drop_hi = -(-max(-hi, 0) // ld)
        if drop_lo + drop_hi >= size:  # nothing of the input would be left: keep the crop
            pads.append((lo, hi))
            continue
        starts[d], limits[d] = drop_lo, size - drop_hi
        shape[d] = size - drop_lo - drop_hi
        pads.append((lo + drop_lo * ld if lo < 0 else lo, hi + drop_hi * ld if hi < 0 else hi))
    lhs = lax.slice(lhs, starts, limits)
    return lhs, spec.replace(lhs_shape=tuple(shape), padding=tuple(pads))


def output_shape(
    lhs_shape: Sequence[int],
    rhs_shape: Sequence[int],
    window_strides: Any = None,
    padding: Any = "VALID",
    lhs_dilation: Any = None,
    rhs_dilation: Any = None,
    dimension_numbers: Any = None,
    feature_group_count: int = 1,
    batch_group_count: int = 1,
) -> tuple[int, ...]:
    """Output shape of ``conv_general_dilated`` for these shapes and arguments.

    Example: ``output_shape((8, 3, 32, 32), (16, 3, 3, 3), 2, "SAME") == (8, 16, 16, 16)``.
    """
    return ConvSpec.create(
        lhs_shape,
        rhs_shape,
        window_strides,
        padding,
        lhs_dilation,
        rhs_dilation,
        dimension_numbers,
        feature_group_count,
        batch_group_count,
    ).out_shape


def conv_cost(spec: ConvSpec) -> dict[str, int]:
    """FLOPs, MACs, bytes read and written, and parameter count of a spec."""
    return spec.cost()
