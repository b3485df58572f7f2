"""Receptive field and cost of a stack of convolution and pooling layers.

Per spatial axis, with ``k`` the window, ``s`` the stride, ``d`` the dilation and
``p`` the low-side padding of a layer, the standard recurrences are::

    j_out     = j_in * s                          # jump: input samples between outputs
    r_out     = r_in + (k - 1) * d * j_in         # receptive-field size
    start_out = start_in + ((k - 1) * d / 2 - p) * j_in   # centre of the first output's field

starting from ``j = 1``, ``r = 1``, ``start = 0`` (input index 0). Output ``i`` of a layer
sees input indices ``start + i * j - (r - 1) / 2 ... start + i * j + (r - 1) / 2``
(clipped to the input where the window reaches into padding).

The cost table makes the textbook's ``O(H * W * Fh * Fw * C)`` concrete: a layer's
multiply-adds are ``N * H_out * W_out * F * Fh * Fw * C / groups``, computed by
:meth:`ConvSpec.cost` on the layer's spec.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from jaxconv._src.spec import (
    ConvSpec,
    _dilate,
    _int_tuple,
    default_dimension_numbers,
    padding_to_pairs,
)


@dataclasses.dataclass(frozen=True)
class Layer:
    """One layer of a stack: a convolution (``features`` output channels) or a pooling
    (``features=None``: channels kept, no weights).

    ``window``, ``stride``, ``dilation``: int or per-axis; ``padding``: a word, an int or
    per-axis ints / ``(lo, hi)`` pairs (words need the input size).
    """

    window: int | Sequence[int]
    stride: int | Sequence[int] = 1
    dilation: int | Sequence[int] = 1
    padding: Any = 0
    features: int | None = None
    groups: int = 1
    bias: bool = True
    name: str | None = None

    @property
    def kind(self) -> str:
        return "pool" if self.features is None else "conv"


def conv_layer(
    window,
    features: int,
    stride=1,
    padding: Any = 0,
    dilation=1,
    groups: int = 1,
    bias: bool = True,
    name: str | None = None,
) -> Layer:
    """A convolution layer with ``features`` output channels."""
    if isinstance(features, bool) or not isinstance(features, (int, np.integer)) or features < 1:
        raise ValueError(f"`features` must be an int >= 1, got {features!r}")
    return Layer(window, stride, dilation, padding, int(features), groups, bias, name)


def pool_layer(window, stride=None, padding: Any = 0, dilation=1, name: str | None = None) -> Layer:
    """A pooling layer (``stride`` defaults to the window, as PyTorch)."""
    return Layer(
        window, window if stride is None else stride, dilation, padding, None, 1, False, name
    )


def _as_layer(layer: Any, i: int) -> Layer:
    if isinstance(layer, Layer):
        return layer
    if isinstance(layer, ConvSpec):
        if any(d != 1 for d in layer.lhs_dilation):
            raise ValueError(
                f"`layers[{i}]` has input dilation {layer.lhs_dilation}: the receptive-field "
                "recurrences hold for strided (not transposed) layers only"
            )
        return Layer(
            layer.window,
            layer.window_strides,
            layer.rhs_dilation,
            layer.padding,
            layer.out_features,
            layer.feature_group_count,
            False,
        )
    if isinstance(layer, dict):
        try:
            return Layer(**layer)
        except TypeError as e:
            raise ValueError(f"`layers[{i}]` is not a valid layer description: {e}") from None
    raise TypeError(
        f"`layers[{i}]` must be a Layer (conv_layer / pool_layer), a dict of its fields or "
        f"a ConvSpec, got {type(layer).__name__}"
    )


def _axes(layers: Sequence[Layer], input_size: Sequence[int] | None) -> int:
    if input_size is not None:
        return len(input_size)
    for layer in layers:
        for v in (layer.window, layer.stride, layer.dilation):
            if not isinstance(v, (int, np.integer)):
                return len(v)
    return 1


def receptive_field(
    layers: Sequence[Any],
    input_size: int | Sequence[int] | None = None,
) -> list[dict[str, Any]]:
    """Receptive-field size, jump and start offset after every layer of a stack.

    Args:
      layers: :class:`Layer` s (:func:`conv_layer`, :func:`pool_layer`), dicts of their
        fields, or :class:`ConvSpec` s, in order from the input.
      input_size: spatial input size (int or per-axis); needed for padding words and to
        report output sizes.

    Returns:
      One dict per layer with per-axis tuples: ``name``, ``kind``, ``window``,
      ``stride``, ``dilation``, ``padding`` (``(lo, hi)`` pairs), ``size`` (output size,
      or ``None`` without ``input_size``), ``jump``, ``rf`` (receptive-field size) and
      ``start`` (input coordinate of the centre of output 0's field; may be fractional
      or negative).
    """
    layers = [_as_layer(layer, i) for i, layer in enumerate(layers)]
    n = _axes(layers, None if input_size is None else np.atleast_1d(input_size))
    size = None if input_size is None else _int_tuple(input_size, n, "input_size")
    jump, rf, start = (1,) * n, (1,) * n, (0.0,) * n
    rows = []
    for i, layer in enumerate(layers):
        k = _int_tuple(layer.window, n, f"layers[{i}].window")
        s = _int_tuple(layer.stride, n, f"layers[{i}].stride")
        d = _int_tuple(layer.dilation, n, f"layers[{i}].dilation")
        if isinstance(layer.padding, str) and size is None:
            raise ValueError(
                f"`layers[{i}].padding` is the word {layer.padding!r}: give `input_size` "
                "to resolve it"
            )
        pads = padding_to_pairs(layer.padding, size or (0,) * n, k, s, d)
        start = tuple(
            st + ((kk - 1) * dd / 2 - lo) * j
            for st, kk, dd, (lo, _), j in zip(start, k, d, pads, jump)
        )
        rf = tuple(r + (kk - 1) * dd * j for r, kk, dd, j in zip(rf, k, d, jump))
        jump = tuple(j * ss for j, ss in zip(jump, s))
        if size is not None:
            new = []
            for ax, (sz, kk, dd, ss, (lo, hi)) in enumerate(zip(size, k, d, s, pads)):
                span = sz + lo + hi - _dilate(kk, dd)
                if span < 0:
                    raise ValueError(
                        f"`layers[{i}]`: window larger than the padded input on axis {ax} "
                        f"(input {sz}, padding ({lo}, {hi}), dilated window {_dilate(kk, dd)})"
                    )
                new.append(span // ss + 1)
            size = tuple(new)
        rows.append(
            dict(
                name=layer.name or f"{layer.kind}{i}",
                kind=layer.kind,
                window=k,
                stride=s,
                dilation=d,
                padding=pads,
                size=size,
                jump=jump,
                rf=rf,
                start=tuple(float(x) for x in start),
            )
        )
    return rows


def cost_table(
    layers: Sequence[Any],
    input_shape: Sequence[int],
    dtype: Any = np.float32,
) -> list[dict[str, Any]]:
    """Per-layer and total cost of a stack on a channels-last input ``(N, *spatial, C)``.

    Each row: ``name``, ``kind``, ``out_shape``, ``macs`` (multiply-adds), ``flops``
    (2 per multiply-add for convolutions, plus the bias adds; one per window tap for
    pooling), ``params`` (weights and bias), ``activation_bytes`` (the layer's output)
    and the receptive field ``rf``. The last row, ``name="total"``, sums the numbers
    (``activation_bytes`` sums every layer's output; its ``out_shape`` is the last one).
    """
    layers = [_as_layer(layer, i) for i, layer in enumerate(layers)]
    shape = tuple(int(v) for v in input_shape)
    if len(shape) < 3:
        raise ValueError(
            f"`input_shape` must be (N, *spatial, C) with at least one spatial axis, got {shape}"
        )
    fields = receptive_field(layers, shape[1:-1])
    itemsize = np.dtype(dtype).itemsize
    n = len(shape) - 2
    rows = []
    for i, (layer, field) in enumerate(zip(layers, fields)):
        C = shape[-1]
        features = C if layer.features is None else layer.features
        groups = C if layer.features is None else layer.groups
        if C % groups or features % groups:
            raise ValueError(
                f"`layers[{i}].groups` (={groups}) must divide the input channels (={C}) and "
                f"the features (={features})"
            )
        spec = ConvSpec.create(
            shape,
            field["window"] + (C // groups, features),
            field["stride"],
            field["padding"],
            None,
            field["dilation"],
            default_dimension_numbers(n),
            groups,
        )
        cost = spec.cost()
        out_elems = math.prod(spec.out_shape)
        if layer.kind == "conv":
            macs = cost["macs"]
            params = cost["params"] + (features if layer.bias else 0)
            flops = cost["flops"] + (out_elems if layer.bias else 0)
        else:
            macs, params = 0, 0
            flops = out_elems * math.prod(field["window"])
        rows.append(
            dict(
                name=field["name"],
                kind=layer.kind,
                out_shape=spec.out_shape,
                macs=macs,
                flops=flops,
                params=params,
                activation_bytes=out_elems * itemsize,
                rf=field["rf"],
            )
        )
        shape = spec.out_shape
    total = dict(
        name="total",
        kind="",
        out_shape=shape,
        **{k: sum(r[k] for r in rows) for k in ("macs", "flops", "params", "activation_bytes")},
        rf=rows[-1]["rf"] if rows else (1,) * n,
    )
    return rows + [total]


def _human(v: Any) -> str:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        if isinstance(v, tuple):
            return (
                "x".join(_human(x) for x in v)
                if all(isinstance(x, (int, np.integer)) for x in v)
                else str(v)
            )
        return str(v)
    if isinstance(v, (float, np.floating)) and not float(v).is_integer():
        return f"{v:.3g}"
    v = int(v)
    for unit, scale in (("G", 10**9), ("M", 10**6), ("k", 10**3)):
        if abs(v) >= scale:
            return f"{v / scale:.2f}{unit}"
    return str(v)


def format_table(
    rows: Sequence[dict[str, Any]],
    columns: Sequence[str] | None = None,
    *,
    human: bool = True,
    indent: str = "",
) -> str:
    """Render rows of dicts as an aligned text table (large numbers as k / M / G), each
    line prefixed by ``indent``."""
    rows = list(rows)
    if not rows:
        return ""
    columns = list(columns or rows[0].keys())
    cells = [
        [(_human(r.get(c, "")) if human else str(r.get(c, ""))) for c in columns] for r in rows
    ]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    line = "  ".join(c.ljust(w) for c, w in zip(columns, widths))
    out = [line, "  ".join("-" * w for w in widths)]
    for row in cells:
        out.append(
            "  ".join(
                v.rjust(w) if v[:1].isdigit() or v[:1] == "-" else v.ljust(w)
                for v, w in zip(row, widths)
            )
        )
    return "\n".join(indent + x.rstrip() for x in out)
