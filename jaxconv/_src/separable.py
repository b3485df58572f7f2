"""Depthwise and depthwise-separable convolution, and what they save.

A depthwise convolution is a grouped convolution with one group per input channel
(``feature_group_count = C``); with a depth multiplier ``M`` each input channel ``k``
gets ``M`` filters and output channel ``k * M + q`` is filter ``q`` of channel ``k``,
the order of TensorFlow's ``tf.nn.depthwise_conv2d``. A separable convolution is a
depthwise convolution followed by a pointwise (1x1) convolution that mixes channels,
as ``tf.nn.separable_conv2d``. Both are thin layers over :func:`jaxconv.conv`.

Cost, per output position, for a ``K``-tap window, ``C`` input and ``O`` output
channels: dense ``K*C*O`` multiply-adds; separable ``K*C*M + C*M*O``; the ratio is
``M/O + M/K`` (``1/O + 1/K`` for ``M = 1``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from jaxconv._src.api import _as_array, conv
from jaxconv._src.spec import ConvSpec, default_dimension_numbers


def _check_depthwise_kernel(x, w, name: str = "w") -> tuple[int, int, int]:
    """``(n, C, M)`` for input ``x`` ``(N, *sp, C)`` / ``(*sp, C)`` and a depthwise
    kernel ``(*window, C, M)``."""
    if w.ndim < 2:
        raise ValueError(f"`{name}` must have shape (*window, C, depth_multiplier), got {w.shape}")
    n = w.ndim - 2
    if x.ndim not in (n + 1, n + 2):
        raise ValueError(
            f"`x` must have shape (N, *spatial, C) with {n} spatial axes to match `{name}` "
            f"of shape {w.shape}, got shape {x.shape}"
        )
    C, M = w.shape[-2], w.shape[-1]
    if x.shape[-1] != C:
        raise ValueError(
            f"`{name}` must have shape (*window, C, depth_multiplier) with C = {x.shape[-1]} "
            f"(the input's channels), got {w.shape}"
        )
    return n, C, M


def depthwise_conv(
    x,
    w,
    *,
    stride: int | Sequence[int] = 1,
    padding: Any = "SAME",
    dilation: int | Sequence[int] = 1,
    padding_mode: str = "zeros",
    padding_value: float = 0.0,
    bias=None,
    activation: Callable | None = None,
    precision: Any = None,
    preferred_element_type: Any = None,
    implementation: str | Sequence[str] | None = None,
):
    """Channels-last depthwise convolution with a depth multiplier (TensorFlow's order).

    Args:
      x: input ``(N, *spatial, C)`` or unbatched ``(*spatial, C)``.
      w: kernel ``(*window, C, M)`` (``tf.nn.depthwise_conv2d``'s layout; ``M`` is the
        depth multiplier).
      stride, padding, dilation, padding_mode, padding_value, bias, activation,
        precision, preferred_element_type, implementation: as :func:`jaxconv.conv`
        (``bias`` has shape ``(C * M,)``).

    Returns:
      ``(N, *out_spatial, C * M)``; channel ``k * M + q`` is input channel ``k``
      filtered by ``w[..., k, q]``.
    """
    x = _as_array(x, "x")
    w = _as_array(w, "w")
    n, C, M = _check_depthwise_kernel(x, w)
    # (*window, C, M) -> (*window, 1, C * M): flat output feature k * M + q lies in
    # group k, which is how grouped convolution orders its output features.
    wg = w.reshape(w.shape[:n] + (1, C * M))
    return conv(
        x,
        wg,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=C,
        padding_mode=padding_mode,
        padding_value=padding_value,
        bias=bias,
        activation=activation,
        precision=precision,
        preferred_element_type=preferred_element_type,
        implementation=implementation,
    )


def separable_conv(
    x,
    depthwise_kernel,
    pointwise_kernel,
    *,
    stride: int | Sequence[int] = 1,
    padding: Any = "SAME",
    dilation: int | Sequence[int] = 1,
    padding_mode: str = "zeros",
    padding_value: float = 0.0,
    bias=None,
    activation: Callable | None = None,
    precision: Any = None,
    preferred_element_type: Any = None,
    implementation: str | Sequence[str] | None = None,
):
    """Depthwise then pointwise convolution, as ``tf.nn.separable_conv2d`` (any rank).

    Args:
      x: input ``(N, *spatial, C)`` or unbatched ``(*spatial, C)``.
      depthwise_kernel: ``(*window, C, M)``.
      pointwise_kernel: ``(C * M, O)`` or ``(1, ..., 1, C * M, O)``.
      stride, padding, dilation, padding_mode, padding_value: of the depthwise step.
      bias, activation: applied after the pointwise step (``bias`` of shape ``(O,)``).
      implementation: used for both steps.

    Returns:
      ``(N, *out_spatial, O)``.
    """
    x = _as_array(x, "x")
    dk = _as_array(depthwise_kernel, "depthwise_kernel")
    pk = _as_array(pointwise_kernel, "pointwise_kernel")
    n, C, M = _check_depthwise_kernel(x, dk, "depthwise_kernel")
    if pk.ndim == 2:
        pk = pk.reshape((1,) * n + pk.shape)
    if pk.ndim != n + 2 or pk.shape[:n] != (1,) * n or pk.shape[n] != C * M:
        raise ValueError(
            f"`pointwise_kernel` must have shape ({C * M}, O) or {(1,) * n + (C * M,)} + "
            f"(O,) (C * depth_multiplier = {C} * {M} input channels), got "
            f"{pointwise_kernel.shape}"
        )
    y = depthwise_conv(
        x,
        dk,
        stride=stride,
        padding=padding,
        dilation=dilation,
        padding_mode=padding_mode,
        padding_value=padding_value,
        precision=precision,
        preferred_element_type=preferred_element_type,
        implementation=implementation,
    )
    return conv(
        y,
        pk.astype(y.dtype),
        padding="VALID",
        bias=bias,
        activation=activation,
        precision=precision,
        preferred_element_type=preferred_element_type,
        implementation=implementation,
    )


def _spec(x_shape, window, cin, cout, groups, stride, padding, dilation) -> ConvSpec:
    n = len(window)
    return ConvSpec.create(
        tuple(x_shape),
        tuple(window) + (cin // groups, cout),
        stride,
        padding,
        None,
        dilation,
        default_dimension_numbers(n),
        groups,
    )


def separable_cost(
    x_shape: Sequence[int],
    window: Sequence[int],
    out_channels: int,
    *,
    depth_multiplier: int = 1,
    stride: int | Sequence[int] = 1,
    padding: Any = "SAME",
    dilation: int | Sequence[int] = 1,
) -> dict[str, Any]:
    """Cost of a separable convolution against the dense one it replaces.

    Args:
      x_shape: input shape ``(N, *spatial, C)``.
      window: kernel spatial sizes.
      out_channels: ``O``.
      depth_multiplier: ``M``.

    Returns:
      ``{"depthwise": cost, "pointwise": cost, "separable": cost, "dense": cost,
      "flops_ratio": separable / dense FLOPs, "params_ratio": ...}``, each cost a dict
      of ``macs``, ``flops``, ``params`` (weights, no bias) and ``out_shape``.
    """
    x_shape = tuple(int(s) for s in x_shape)
    window = tuple(int(k) for k in window)
    if len(x_shape) != len(window) + 2:
        raise ValueError(
            f"`x_shape` must be (N, *spatial, C) with {len(window)} spatial axes to match "
            f"`window` {window}, got {x_shape}"
        )
    C, M, O = x_shape[-1], int(depth_multiplier), int(out_channels)
    if M < 1 or O < 1:
        raise ValueError(f"`depth_multiplier` and `out_channels` must be >= 1, got {M} and {O}")
    dw = _spec(x_shape, window, C, C * M, C, stride, padding, dilation)
    pw = ConvSpec.create(
        dw.out_shape,
        (1,) * len(window) + (C * M, O),
        1,
        "VALID",
        None,
        None,
        default_dimension_numbers(len(window)),
    )
    dense = _spec(x_shape, window, C, O, 1, stride, padding, dilation)

    def summary(spec: ConvSpec) -> dict[str, Any]:
        c = spec.cost()
        return {
            "macs": c["macs"],
            "flops": c["flops"],
            "params": c["params"],
            "out_shape": spec.out_shape,
        }

    d, p = summary(dw), summary(pw)
    sep = {
        "macs": d["macs"] + p["macs"],
        "flops": d["flops"] + p["flops"],
        "params": d["params"] + p["params"],
        "out_shape": p["out_shape"],
    }
    den = summary(dense)
    return {
        "depthwise": d,
        "pointwise": p,
        "separable": sep,
        "dense": den,
        "flops_ratio": sep["flops"] / den["flops"] if den["flops"] else math.nan,
        "params_ratio": sep["params"] / den["params"],
    }


def depthwise_cost(
    x_shape: Sequence[int],
    window: Sequence[int],
    *,
    depth_multiplier: int = 1,
    stride: int | Sequence[int] = 1,
    padding: Any = "SAME",
    dilation: int | Sequence[int] = 1,
) -> dict[str, Any]:
    """Cost of a depthwise convolution against a dense one with the same output
    channels ``C * M``: ``{"depthwise": cost, "dense": cost, "flops_ratio",
    "params_ratio"}`` (ratio ``1 / C``)."""
    x_shape = tuple(int(s) for s in x_shape)
    window = tuple(int(k) for k in window)
    C, M = x_shape[-1], int(depth_multiplier)
    out = {}
    for name, groups in (("depthwise", C), ("dense", 1)):
        spec = _spec(x_shape, window, C, C * M, groups, stride, padding, dilation)
        c = spec.cost()
        out[name] = {
            "macs": c["macs"],
            "flops": c["flops"],
            "params": c["params"],
            "out_shape": spec.out_shape,
        }
    out["flops_ratio"] = out["depthwise"]["flops"] / out["dense"]["flops"]
    out["params_ratio"] = out["depthwise"]["params"] / out["dense"]["params"]
    return out
