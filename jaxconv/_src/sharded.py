"""Spatially partitioned convolution: one spatial axis split across a mesh axis.

For inputs too large for one device (high-resolution images, 3-D volumes, long 1-D
signals), :func:`sharded_conv` splits one spatial axis of a channels-last input over a
named axis of a :class:`jax.sharding.Mesh` and computes the convolution inside
``shard_map``. Each device holds ``m = L / P`` rows of the ``L`` rows of that axis and
produces ``mo = Lo / P`` of the ``Lo`` output rows (``P`` must divide both ``L`` and
``Lo``: a ``jax.Array`` is split into equal blocks; other sizes raise ``ValueError``). To do so it needs a few rows
of its neighbours (the halo, ``(k - 1) * dilation`` rows in all for a stride-1
convolution): they arrive by :func:`jax.lax.ppermute`, one collective per neighbour
hop (one hop unless a shard is thinner than the halo). The local convolution is the
library's own (:class:`~jaxconv._src.spec.ConvSpec` and
:func:`jaxconv._src.dispatch.run`), so ``implementation=`` picks any implementation,
Pallas kernels included.

Everything is an ordinary differentiable JAX program: the backward pass sends the halo
gradients back to their owners (the transpose of ``ppermute`` is the reverse
``ppermute``) and reduces the kernel gradient over the mesh.

Boundary modes act on the global array: ``zeros`` and ``constant`` fill the rows before
``0`` and after ``L``; ``circular`` wraps across the ends (the ring ``ppermute`` sends
the last device's rows to the first one); ``reflect``, ``symmetric`` and ``replicate``
mirror or repeat rows near the ends.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxconv._src import dispatch
from jaxconv._src.spec import ConvSpec

# --------------------------------------------------------------------------------------
# shard_map of this jax
# --------------------------------------------------------------------------------------


def shard_map(f: Callable, *, mesh: Mesh, in_specs: Any, out_specs: Any) -> Callable:
    """``jax.shard_map`` where it exists (jax >= 0.7), else
    ``jax.experimental.shard_map.shard_map``, with the replication (vma) checks off.

    The checks are off because the library's own primitives (``taps``) and the Pallas
    calls carry no varying-axes rule; without them ``shard_map`` reduces the
    cotangent of every replicated input over the mesh itself (a ``psum`` in its
    transpose), which is what a replicated kernel's gradient needs. Callers return
    only values that are sharded or explicitly reduced (``psum`` / ``pmean``).
    """
    sm = getattr(jax, "shard_map", None)
    if sm is not None:
        return sm(f, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False)
    from jax.experimental.shard_map import shard_map as sm_old  # pragma: no cover

    return sm_old(f, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_rep=False)


def mesh_axis_size(mesh: Mesh, axis_name: str, argument: str = "axis_name") -> int:
    """Number of devices along ``axis_name`` of ``mesh`` (``ValueError`` if absent)."""
    if not isinstance(mesh, Mesh):
        raise TypeError(f"`mesh` must be a jax.sharding.Mesh, got {type(mesh).__name__}")
    if axis_name not in mesh.axis_names:
        raise ValueError(
            f"`{argument}` must be one of the mesh's axes {tuple(mesh.axis_names)}, "
            f"got {axis_name!r}"
        )
    return int(mesh.shape[axis_name])


def place(x, mesh: Mesh, spec: PartitionSpec):
    """``x`` laid out as ``NamedSharding(mesh, spec)``: moved when concrete, constrained
    under ``jax.jit``. Meshes with ``Explicit`` axes (the default of ``jax.make_mesh``
    on recent jax) go through ``jax.sharding.reshard``, others through
    ``jax.lax.with_sharding_constraint``."""
    sharding = NamedSharding(mesh, spec)
    explicit_type = getattr(getattr(jax.sharding, "AxisType", None), "Explicit", None)
    axis_types = getattr(mesh, "axis_types", ())
    if explicit_type is not None and explicit_type in tuple(axis_types):
        return jax.sharding.reshard(x, sharding)
    return lax.with_sharding_constraint(x, sharding)


# --------------------------------------------------------------------------------------
# The halo plan: static geometry of one sharded axis
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class HaloPlan:
    """Where each device's window lies on the sharded axis (all sizes static).

    The axis is taken after input dilation is materialised locally (each input row
    followed by ``input_dilation - 1`` zero rows), so ``length = L * input_dilation``.

    Attributes:
      devices: ``P``, devices along the mesh axis.
      length: global rows (input-dilated).
      local: rows per device, ``length / P``.
      pads: ``(lo, hi)`` of the axis (``hi`` net of the trailing dilation zeros).
      stride, window: stride and dilated kernel extent ``(k - 1) * dilation + 1``.
      out_length: ``Lo``, global output rows.
      out_local: ``mo = Lo / P``, output rows per device.
      left, right: halo rows received from the previous / next devices.
      drift: ``mo * stride - local``; when non-zero, the window start moves by
        ``drift`` rows from one device to the next (a dynamic slice).
      circular: halos wrap around the ends (ring ``ppermute``).
    """

    devices: int
    length: int
    local: int
    pads: tuple[int, int]
    stride: int
    window: int
    out_length: int
    out_local: int
    left: int
    right: int
    drift: int
    circular: bool

    @property
    def window_rows(self) -> int:
        """Input rows one device's local convolution reads: ``(mo - 1) * stride + K``."""
        return (self.out_local - 1) * self.stride + self.window

    @property
    def halo_rows(self) -> int:
        """Rows each device receives per forward pass (left + right halo)."""
        return self.left + self.right

    def window_start(self, p: int) -> int:
        """Global (input-dilated) row where device ``p``'s window starts."""
        return p * self.out_local * self.stride - self.pads[0]

    def hops(self) -> tuple[int, int]:
        """Neighbour hops (``ppermute`` calls) to the left and right."""
        return (-(-self.left // self.local), -(-self.right // self.local))


def halo_plan(spec: ConvSpec, axis: int, devices: int) -> HaloPlan:
    """The :class:`HaloPlan` of spatial axis ``axis`` (0-based among the spatial axes)
    of ``spec`` split over ``devices`` devices. ``ValueError`` for an uneven split."""
    L = spec.lhs_spatial[axis]
    if L % devices:
        raise ValueError(
            f"`x` spatial axis {axis} (size {L}) must be divisible by the number of devices "
            f"on the mesh axis (={devices}): pad or crop it to a multiple of {devices}, "
            f"or use a mesh axis whose size divides {L}"
        )
    ld = spec.lhs_dilation[axis]
    length = L * ld
    local = length // devices
    lo, hi = spec.padding[axis]
    hi -= ld - 1  # the trailing zero rows of the local dilation belong to the array
    stride = spec.window_strides[axis]
    k = spec.effective_window[axis]
    out_length = spec.out_spatial[axis]
    if out_length % devices:
        raise ValueError(
            f"the output of spatial axis {axis} has {out_length} rows, not divisible by the "
            f"number of devices on the mesh axis (={devices}); a jax.Array is split into "
            f"equal blocks, so choose `padding` and `stride` to make the output length a "
            f"multiple of {devices} (for example 'SAME' with the input length a multiple of "
            f"{devices} * stride), or pad or crop the input"
        )
    out_local = out_length // devices
    drift = out_local * stride - local
    rows = (out_local - 1) * stride + k
    # start of device p's window relative to its block: a_p = p * drift - lo (linear in p)
    starts = [p * drift - lo for p in range(devices)]
    left = max(0, max(-a for a in starts))
    right = max(0, max(a + rows - local for a in starts))
    if spec.boundary in ("reflect", "symmetric", "replicate"):
        # rows outside [0, length) are copies of rows near the ends: widen the halos so
        # that every device also receives the rows its boundary rows copy
        for p, a in enumerate(starts):
            g = p * local + a + np.arange(rows)
            src = _mirror(g[(g < 0) | (g >= length)], length, spec.boundary)
            if src.size:
                left = max(left, p * local - int(src.min()))
                right = max(right, int(src.max()) + 1 - (p + 1) * local)
    return HaloPlan(
        devices=devices,
        length=length,
        local=local,
        pads=(lo, hi),
        stride=stride,
        window=k,
        out_length=out_length,
        out_local=out_local,
        left=left,
        right=right,
        drift=drift,
        circular=spec.boundary == "circular",
    )


def _mirror(gpos: np.ndarray | jax.Array, length: int, mode: str, xp=np):
    """Source row of each global row ``gpos`` under a mirroring boundary mode."""
    if mode == "replicate":
        return xp.clip(gpos, 0, length - 1)
    if mode == "reflect":
        lo, hi = -gpos, 2 * (length - 1) - gpos
    else:  # symmetric
        lo, hi = -gpos - 1, 2 * length - 1 - gpos
    return xp.where(gpos < 0, lo, xp.where(gpos >= length, hi, gpos))


# --------------------------------------------------------------------------------------
# Halo exchange (inside shard_map)
# --------------------------------------------------------------------------------------


def _shifted(piece, hop: int, forward: bool, plan: HaloPlan, axis_name: str):
    """``piece`` of device ``p - hop`` (forward) or ``p + hop`` arriving at device ``p``.
    Devices with no such neighbour receive zeros (unless the plan is circular)."""
    P = plan.devices
    if plan.circular:
        if hop % P == 0:
            return piece
        perm = [(i, (i + hop) % P if forward else (i - hop) % P) for i in range(P)]
    else:
        perm = [(i, i + hop) if forward else (i, i - hop) for i in range(P)]
        perm = [(s, d) for s, d in perm if 0 <= d < P]
        if not perm:
            return jnp.zeros_like(piece)
    return lax.ppermute(piece, axis_name, perm)


def _halo(x, rows: int, from_previous: bool, plan: HaloPlan, axis: int, axis_name: str):
    """The ``rows`` rows just before (``from_previous``) or after this device's block."""
    m = plan.local
    pieces = []
    remaining, hop = rows, 1
    while remaining > 0:
        take = min(m, remaining)
        if from_previous:  # the last `take` rows of device p - hop, farthest leftmost
            piece = lax.slice_in_dim(x, m - take, m, axis=axis)
            pieces.insert(0, _shifted(piece, hop, True, plan, axis_name))
        else:  # the first `take` rows of device p + hop
            piece = lax.slice_in_dim(x, 0, take, axis=axis)
            pieces.append(_shifted(piece, hop, False, plan, axis_name))
        remaining -= take
        hop += 1
    return pieces


def _dilate_rows(x, factor: int, axis: int):
    """Each row followed by ``factor - 1`` zero rows (local input dilation)."""
    if factor == 1:
        return x
    cfg = [(0, 0, 0)] * x.ndim
    cfg[axis] = (0, factor - 1, factor - 1)
    return lax.pad(x, jnp.zeros((), x.dtype), cfg)


def _local_window(x, plan: HaloPlan, axis: int, axis_name: str, mode: str, value: float):
    """This device's input window: its block, the halos, the boundary rows filled."""
    parts = _halo(x, plan.left, True, plan, axis, axis_name)
    parts += [x]
    parts += _halo(x, plan.right, False, plan, axis, axis_name)
    ext = jnp.concatenate(parts, axis=axis) if len(parts) > 1 else x
    rows = plan.window_rows
    p = lax.axis_index(axis_name)
    mirror = mode in ("reflect", "symmetric", "replicate")
    if mirror:
        gpos = p * plan.out_local * plan.stride - plan.pads[0] + jnp.arange(rows)
        src = _mirror(gpos, plan.length, mode, jnp)
        idx = jnp.clip(src - (p * plan.local - plan.left), 0, ext.shape[axis] - 1)
        return jnp.take(ext, idx, axis=axis)
    start = plan.left - plan.pads[0]
    if plan.drift == 0:
        window = lax.slice_in_dim(ext, start, start + rows, axis=axis)
    else:
        window = lax.dynamic_slice_in_dim(ext, start + p * plan.drift, rows, axis=axis)
    if mode == "constant" and value != 0.0:
        gpos = p * plan.out_local * plan.stride - plan.pads[0] + jnp.arange(rows)
        outside = (gpos < 0) | (gpos >= plan.length)
        shape = [1] * window.ndim
        shape[axis] = rows
        fill = jnp.asarray(value, window.dtype)
        window = jnp.where(jnp.reshape(outside, shape), fill, window)
    return window


# --------------------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------------------


def sharded_conv(
    x,
    w,
    *,
    mesh: Mesh,
    axis_name: str,
    spatial_axis: int = 0,
    batch_axis_name: str | None = None,
    stride: int | Sequence[int] = 1,
    padding: Any = "SAME",
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    padding_mode: str = "zeros",
    padding_value: float = 0.0,
    input_dilation: int | Sequence[int] = 1,
    bias=None,
    activation: Callable | None = None,
    precision: Any = None,
    preferred_element_type: Any = None,
    implementation: str | Sequence[str] | None = None,
):
    """Channels-last convolution with one spatial axis split across a mesh axis.

    Same arguments and result as :func:`jaxconv.conv`, computed on the devices of
    ``mesh``: spatial axis ``spatial_axis`` of ``x`` is split into ``P`` equal blocks
    over mesh axis ``axis_name`` (``P = mesh.shape[axis_name]``); neighbours exchange
    their halos with :func:`jax.lax.ppermute` inside ``shard_map`` and each device runs
    the local convolution on ``implementation``. Differentiable (forward and reverse
    mode); works eagerly and under ``jax.jit``.

    Args:
      x: input ``(N, *spatial, C)``; ``spatial[spatial_axis]`` must be divisible by
        ``P`` (``ValueError`` otherwise).
      w: kernel ``(*window, C // groups, O)``, replicated on every device.
      mesh: the device mesh.
      axis_name: mesh axis the spatial axis is split over.
      spatial_axis: which spatial axis (0-based; negative counts from the last).
      batch_axis_name: optional second mesh axis that splits the batch (data and
        spatial parallelism together); ``N`` must be divisible by its size.
      stride, padding, dilation, groups, padding_mode, padding_value, input_dilation,
        bias, activation, precision, preferred_element_type, implementation: as in
        :func:`jaxconv.conv`.

    Returns:
      ``(N, *out_spatial, O)``, equal to ``jaxconv.conv(x, w, ...)`` on one device,
      sharded along ``spatial_axis`` over ``axis_name`` (and the batch over
      ``batch_axis_name``).

    Raises:
      ValueError: an uneven split (``P`` must divide the input and the output length
        of the sharded axis: a ``jax.Array`` is split into equal blocks), an unknown
        mesh axis, or any argument :func:`jaxconv.conv` rejects.
    """
    from jaxconv._src.api import conv_operands

    if getattr(w, "ndim", 0) < 3 or getattr(x, "ndim", 0) != w.ndim:
        raise ValueError(
            "`x` must have shape (N, *spatial, C) and `w` (*window, C // groups, O) with at "
            f"least one spatial axis, got {getattr(x, 'shape', x)} and {getattr(w, 'shape', w)}"
        )
    x, w, spec, bias, _ = conv_operands(
        x,
        w,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        padding_mode=padding_mode,
        padding_value=padding_value,
        bias=bias,
        activation=activation,
        input_dilation=input_dilation,
        precision=precision,
        preferred_element_type=preferred_element_type,
    )
    n = spec.nspatial
    if isinstance(spatial_axis, bool) or not isinstance(spatial_axis, (int, np.integer)):
        raise TypeError(f"`spatial_axis` must be an int, got {spatial_axis!r}")
    if not -n <= spatial_axis < n:
        raise ValueError(
            f"`spatial_axis` must be in [{-n}, {n}) for {n} spatial axes, got {spatial_axis}"
        )
    sa = int(spatial_axis) % n
    P = mesh_axis_size(mesh, axis_name)
    Pb = 1
    if batch_axis_name is not None:
        Pb = mesh_axis_size(mesh, batch_axis_name, "batch_axis_name")
        if batch_axis_name == axis_name:
            raise ValueError(
                f"`batch_axis_name` must differ from `axis_name`, both are {axis_name!r}"
            )
        if x.shape[0] % Pb:
            raise ValueError(
                f"`x` batch (={x.shape[0]}) must be divisible by the number of devices on "
                f"mesh axis {batch_axis_name!r} (={Pb})"
            )
    plan = halo_plan(spec, sa, P)
    mode = spec.boundary
    if spec.boundary == "constant" and spec.boundary_value == 0.0:
        mode = "zeros"

    dim = 1 + sa  # array axis of the sharded spatial axis (channels-last layout)
    local_shape = list(x.shape)
    local_shape[0] //= Pb
    local_shape[dim] = plan.window_rows
    pads = list(spec.padding)
    pads[sa] = (0, 0)
    lhs_dil = list(spec.lhs_dilation)
    lhs_dil[sa] = 1
    local_spec = ConvSpec.create(
        local_shape,
        w.shape,
        spec.window_strides,
        tuple(pads),
        tuple(lhs_dil),
        spec.rhs_dilation,
        spec.dimension_numbers,
        spec.feature_group_count,
        1,
        spec.precision,
        spec.preferred_element_type,
        lhs_dtype=spec.lhs_dtype,
        rhs_dtype=spec.rhs_dtype,
        boundary=spec.boundary,
        boundary_value=spec.boundary_value,
    )
    ld = spec.lhs_dilation[sa]
    value = spec.boundary_value

    def local(xb, wb, *maybe_bias):
        xb = _dilate_rows(xb, ld, dim)
        window = _local_window(xb, plan, dim, axis_name, mode, value)
        b = maybe_bias[0] if maybe_bias else None
        return dispatch.run(window, wb, local_spec, implementation, bias=b, activation=activation)

    entries: list[Any] = [None] * x.ndim
    entries[0] = batch_axis_name
    entries[dim] = axis_name
    x_spec = PartitionSpec(*entries)
    args = (x, w) if bias is None else (x, w, bias)
    in_specs = (x_spec, PartitionSpec()) + ((PartitionSpec(),) if bias is not None else ())
    args = tuple(place(a, mesh, s) for a, s in zip(args, in_specs))
    return shard_map(local, mesh=mesh, in_specs=in_specs, out_specs=x_spec)(*args)


def sharded_cost(spec: ConvSpec, axis: int, devices: int) -> dict[str, float]:
    """Per-device cost of the sharded convolution of ``spec`` split over ``devices``
    along spatial axis ``axis``: FLOPs, the halo bytes a device receives in the forward
    pass (the most any device receives), and their ratios to the device's input block
    and FLOPs (for the benchmark and the docs)."""
    plan = halo_plan(spec, axis, devices)
    other = math.prod(spec.lhs_shape) // spec.lhs_spatial[axis]  # elements per row
    itemsize = spec.lhs_dtype.itemsize
    # with one device the halo rows are the boundary fill, nothing is received
    halo_bytes = plan.halo_rows * other * itemsize if devices > 1 else 0
    local_bytes = (plan.local // spec.lhs_dilation[axis]) * other * itemsize
    flops = spec.cost()["flops"] * plan.out_local / plan.out_length
    return {
        "halo_rows": plan.halo_rows,
        "local_rows": plan.local,
        "halo_bytes": halo_bytes,
        "local_input_bytes": local_bytes,
        "flops_per_device": flops,
        "halo_fraction_of_input": halo_bytes / local_bytes,
        "halo_bytes_per_flop": halo_bytes / flops,
    }
