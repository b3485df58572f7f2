"""The effective receptive field: which inputs actually move one output, and how much.

Luo et al. (2016), "Understanding the Effective Receptive Field in Deep Convolutional
Neural Networks": back-propagate a gradient of 1 at one output position (summed over
the output channels) and 0 elsewhere; the magnitude of the gradient at the input is
the map. Its support lies inside the theoretical receptive field of
:func:`jaxconv.receptive_field` (and fills it for a stack of linear layers with
positive weights and no gaps), but its mass concentrates near the centre.

matplotlib is imported only by :func:`plot_effective_receptive_field`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def effective_receptive_field(
    apply_fn: Callable[[Any, jax.Array], jax.Array],
    params: Any,
    input_shape: Sequence[int],
    *,
    position: Sequence[int] | None = None,
    inputs: jax.Array | None = None,
    key: jax.Array | None = None,
    normalize: bool = False,
) -> jax.Array:
    """The gradient of one output position with respect to the input, as a map.

    Args:
      apply_fn: ``apply_fn(params, x) -> y`` with channels-last ``x`` of shape
        ``input_shape`` ``(N, *spatial, C)`` and ``y`` ``(N, *out_spatial, O)`` (e.g.
        ``model.apply`` of a linen model, with ``params`` its variables).
      params: the first argument of ``apply_fn``.
      input_shape: ``(N, *spatial, C)``; the map averages over the ``N`` examples.
      position: the output position (one index per spatial axis); default the centre,
        ``out_spatial // 2``.
      inputs: the inputs to differentiate at (default: standard normal samples drawn
        with ``key``, default ``jax.random.key(0)``); matters for non-linear models.
      normalize: divide the map by its maximum.

    Returns:
      ``(*spatial)``: ``mean over N of sum over C of |d (sum_o y[n, position, o]) /
      d x[n, ..., c]|``.
    """
    input_shape = tuple(int(s) for s in input_shape)
    if len(input_shape) < 3:
        raise ValueError(
            f"`input_shape` must be (N, *spatial, C) with at least one spatial axis, got "
            f"{input_shape}"
        )
    if inputs is None:
        key = jax.random.key(0) if key is None else key
        inputs = jax.random.normal(key, input_shape, jnp.float32)
    elif tuple(inputs.shape) != input_shape:
        raise ValueError(f"`inputs` must have shape {input_shape}, got {inputs.shape}")
    out = jax.eval_shape(lambda x: apply_fn(params, x), inputs)
    n = len(input_shape) - 2
    if len(out.shape) != n + 2:
        raise ValueError(
            f"`apply_fn` must return (N, *out_spatial, O) with {n} spatial axes like its "
            f"input {input_shape}, got shape {out.shape}"
        )
    out_spatial = out.shape[1:-1]
    if position is None:
        position = tuple(s // 2 for s in out_spatial)
    position = tuple(int(p) for p in position)
    if len(position) != n or not all(0 <= p < s for p, s in zip(position, out_spatial)):
        raise ValueError(
            f"`position` must give {n} indices inside the output's spatial shape "
            f"{out_spatial}, got {position}"
        )

    def centre(x):
        y = apply_fn(params, x)
        return jnp.sum(y[(slice(None),) + position + (slice(None),)])

    # compiled: one program instead of the model's operations dispatched one by one
    grad = jax.jit(jax.grad(centre))(inputs)
    erf = jnp.mean(jnp.sum(jnp.abs(grad), axis=-1), axis=0)
    if normalize:
        erf = erf / jnp.maximum(jnp.max(erf), jnp.finfo(erf.dtype).tiny)
    return erf


def erf_support(erf: Any, threshold: float = 0.0) -> tuple[tuple[int, int], ...]:
    """Per axis, the first and last index (inclusive) where ``erf > threshold * max``;
    ``threshold=0`` gives the support of the map."""
    erf = np.asarray(erf)
    mask = erf > threshold * erf.max()
    if not mask.any():
        raise ValueError("`erf` is zero everywhere: no output depends on the input")
    box = []
    for axis in range(erf.ndim):
        other = tuple(a for a in range(erf.ndim) if a != axis)
        hit = np.flatnonzero(mask.any(axis=other))
        box.append((int(hit[0]), int(hit[-1])))
    return tuple(box)


def theoretical_receptive_field_box(
    layers: Sequence[Any],
    input_size: int | Sequence[int],
    position: Sequence[int] | None = None,
) -> tuple[tuple[int, int], ...]:
    """The input indices (first, last; inclusive, clipped to the input) that the
    theoretical receptive field of :func:`jaxconv.receptive_field` gives for one output
    position of the stack (default the centre, ``out_size // 2``, as
    :func:`effective_receptive_field`)."""
    from jaxconv._src.receptive_field import receptive_field

    rows = receptive_field(layers, input_size)
    if not rows:
        raise ValueError("`layers` must hold at least one layer")
    last = rows[-1]
    in_size = np.broadcast_to(np.atleast_1d(input_size), (len(last["rf"]),))
    if position is None:
        position = tuple(s // 2 for s in last["size"])
    box = []
    for i, st, j, r, size in zip(position, last["start"], last["jump"], last["rf"], in_size):
        c = st + int(i) * j
        lo, hi = int(round(c - (r - 1) / 2)), int(round(c + (r - 1) / 2))
        box.append((max(lo, 0), min(hi, int(size) - 1)))
    return tuple(box)


def plot_effective_receptive_field(
    erf: Any,
    *,
    box: Sequence[tuple[int, int]] | None = None,
    ax: Any = None,
    title: str | None = None,
    log: bool = False,
):
    """Draw a 1-D or 2-D effective receptive field, with the theoretical box
    (``box``, e.g. from :func:`theoretical_receptive_field_box`) outlined.

    Returns the matplotlib ``Axes``.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    erf = np.asarray(erf, dtype=np.float64)
    if erf.ndim not in (1, 2):
        raise ValueError(f"`erf` must be a 1-D or 2-D map, got shape {erf.shape}")
    if ax is None:
        _, ax = plt.subplots(figsize=(4.2, 3.6))
    shown = np.log10(erf + erf.max() * 1e-6) if log else erf
    if erf.ndim == 2:
        im = ax.imshow(shown, cmap="magma", interpolation="nearest", origin="upper")
        ax.figure.colorbar(
            im, ax=ax, fraction=0.046, label="log10 |gradient|" if log else "|gradient|"
        )
        if box is not None:
            (r0, r1), (c0, c1) = box
            ax.add_patch(
                Rectangle(
                    (c0 - 0.5, r0 - 0.5),
                    c1 - c0 + 1,
                    r1 - r0 + 1,
                    fill=False,
                    edgecolor="cyan",
                    lw=1.5,
                    ls="--",
                    label="theoretical",
                )
            )
            ax.legend(loc="upper right", fontsize=8)
    else:
        ax.bar(np.arange(erf.size), shown, width=1.0, color="C1")
        if box is not None:
            ((lo, hi),) = box
            ax.axvspan(lo - 0.5, hi + 0.5, color="C0", alpha=0.15, label="theoretical")
            ax.legend(fontsize=8)
        ax.set_ylabel("log10 |gradient|" if log else "|gradient|")
    ax.set_title(title or "effective receptive field")
    return ax
