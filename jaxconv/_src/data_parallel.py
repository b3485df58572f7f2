"""Data-parallel training on JAX sharding: the batch split over a mesh, parameters
replicated, gradients averaged.

The engine is JAX's own: a one-axis :class:`jax.sharding.Mesh`, ``NamedSharding`` for
the batch (split along its leading axis) and the replicated parameters, and
``shard_map`` (:func:`jaxconv._src.sharded.shard_map`) around the user's loss. Each
device evaluates the loss on its slice of the batch with whichever convolution
implementation the model uses (Pallas kernels included: inside ``shard_map`` a kernel
sees only the local slice, so nothing has to partition a custom call), and
``lax.pmean`` makes the global mean. The gradient is taken *outside* the ``shard_map``,
so JAX's transpose rules produce the all-reduced gradient of the global mean loss: the
same gradient as one device on the whole batch, up to float32 summation order.

Typical use::

    mesh = device_mesh(8)
    step = data_parallel_step(loss_fn, optax.adam(1e-3), mesh)
    params, opt_state = replicate((params, tx.init(params)), mesh)
    for x, y in batches:
        params, opt_state, loss = step(params, opt_state, x, y)

``loss_fn(params, *batch) -> scalar`` must be a mean over the batch (the usual case),
or pass ``reduction="sum"`` for a sum. The batch size must be divisible by the number
of devices.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxconv._src.sharded import mesh_axis_size, shard_map

#: Default name of the mesh axis the batch is split over.
DATA_AXIS = "data"


def request_cpu_devices(count: int) -> None:
    """Ask JAX for ``count`` CPU devices (``jax_num_cpu_devices``).

    Must run before JAX starts its backends (before the first ``jax.devices()`` or
    computation) to take effect; on a GPU or TPU machine it only affects the CPU
    backend. The equivalent environment setting is
    ``XLA_FLAGS=--xla_force_host_platform_device_count=N``. Once the backends run, it
    succeeds when at least ``count`` CPU devices exist.

    Raises:
      ValueError: ``count < 1``.
      RuntimeError: the backends already started with fewer CPU devices.
    """
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
        raise ValueError(f"`count` must be an int >= 1, got {count!r}")
    try:
        jax.config.update("jax_num_cpu_devices", int(count))
    except RuntimeError as e:
        have = len(jax.devices("cpu"))
        if have < count:
            raise RuntimeError(
                f"cannot set {count} CPU devices: JAX's backends already started with "
                f"{have}; set XLA_FLAGS=--xla_force_host_platform_device_count={count} in "
                "the environment, or call request_cpu_devices before any JAX computation"
            ) from e


def device_mesh(
    devices: int | Sequence[jax.Device] | None = None, axis_name: str = DATA_AXIS
) -> Mesh:
    """A one-axis mesh for data parallelism.

    Args:
      devices: ``None`` (all of ``jax.devices()``), a count ``N`` (the first ``N``
        devices of the default backend) or an explicit list of devices.
      axis_name: the mesh axis name.

    Returns:
      ``Mesh(devices, (axis_name,))`` (``Auto`` axis type: ``jax.jit`` and
      ``with_sharding_constraint`` place arrays on it).

    Raises:
      ValueError: a count below 1 or above the available devices (the message says how
        to get more CPU devices).
    """
    available = jax.devices()
    if devices is None:
        chosen = list(available)
    elif isinstance(devices, (int, np.integer)) and not isinstance(devices, bool):
        if devices < 1:
            raise ValueError(f"`devices` must be >= 1, got {devices}")
        if devices > len(available):
            raise ValueError(
                f"`devices` (={devices}) exceeds the {len(available)} "
                f"{jax.default_backend()} device(s) available; on a CPU, start Python with "
                f"XLA_FLAGS=--xla_force_host_platform_device_count={devices} (or call "
                "jaxconv's request_cpu_devices before JAX starts)"
            )
        chosen = list(available[: int(devices)])
    else:
        chosen = list(devices)
        if not chosen or not all(isinstance(d, jax.Device) for d in chosen):
            raise TypeError(
                "`devices` must be None, an int, or a non-empty sequence of jax.Device, "
                f"got {devices!r}"
            )
    if not isinstance(axis_name, str):
        raise TypeError(f"`axis_name` must be a string, got {type(axis_name).__name__}")
    return Mesh(np.array(chosen), (axis_name,))


def batch_sharding(mesh: Mesh, axis_name: str = DATA_AXIS) -> NamedSharding:
    """Leading (batch) axis split over ``axis_name``, the other axes whole."""
    mesh_axis_size(mesh, axis_name)
    return NamedSharding(mesh, PartitionSpec(axis_name))


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array."""
    return NamedSharding(mesh, PartitionSpec())


def _check_batch(batch: Any, devices: int, axis_name: str) -> None:
    for leaf in jax.tree.leaves(batch):
        shape = np.shape(leaf)
        if not shape:
            raise ValueError(
                "every batch array must have a leading batch axis to split, got a scalar"
            )
        if shape[0] % devices:
            raise ValueError(
                f"the batch size (={shape[0]}, leading axis of an array of shape {shape}) "
                f"must be divisible by the number of devices on mesh axis {axis_name!r} "
                f"(={devices}); use a batch size that is a multiple of {devices}"
            )


def shard_batch(batch: Any, mesh: Mesh, axis_name: str = DATA_AXIS) -> Any:
    """Put every array of the pytree ``batch`` on ``mesh``, split along its leading axis.

    Raises ``ValueError`` when a leading axis is not divisible by the device count."""
    devices = mesh_axis_size(mesh, axis_name)
    _check_batch(batch, devices, axis_name)
    return jax.device_put(batch, batch_sharding(mesh, axis_name))


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Put every array of ``tree`` (parameters, optimizer state) on every device."""
    return jax.device_put(tree, replicated(mesh))


def data_parallel_loss(
    loss_fn: Callable[..., jax.Array],
    mesh: Mesh,
    axis_name: str = DATA_AXIS,
    *,
    reduction: str = "mean",
) -> Callable[..., jax.Array]:
    """``loss_fn(params, *batch)`` evaluated data-parallel: ``(params, *batch) ->``
    the loss of the whole batch, replicated.

    Each device computes ``loss_fn`` on its slice of every batch array (leading axis
    split over ``axis_name``); ``reduction="mean"`` (for a loss that is a batch mean)
    averages the per-device values with ``lax.pmean``, ``"sum"`` adds them with
    ``lax.psum``. Differentiable: ``jax.grad`` of the result is the gradient of the
    whole-batch loss, all-reduced over the mesh by JAX's transpose of ``shard_map``.
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"`reduction` must be 'mean' or 'sum', got {reduction!r}")
    devices = mesh_axis_size(mesh, axis_name)
    reduce = lax.pmean if reduction == "mean" else lax.psum

    def local(params, *batch):
        loss = loss_fn(params, *batch)
        if np.shape(loss) != ():
            raise ValueError(
                f"`loss_fn` must return a scalar, got an array of shape {np.shape(loss)}"
            )
        return reduce(loss, axis_name)

    def loss(params, *batch):
        _check_batch(batch, devices, axis_name)
        in_specs = (PartitionSpec(),) + (PartitionSpec(axis_name),) * len(batch)
        return shard_map(local, mesh=mesh, in_specs=in_specs, out_specs=PartitionSpec())(
            params, *batch
        )

    return loss


def data_parallel_step(
    loss_fn: Callable[..., jax.Array],
    tx: Any,
    mesh: Mesh,
    axis_name: str = DATA_AXIS,
    *,
    reduction: str = "mean",
) -> Callable[..., tuple[Any, Any, jax.Array]]:
    """A jitted data-parallel training step for an optax optimizer ``tx``.

    Returns ``step(params, opt_state, *batch) -> (params, opt_state, loss)``: the
    loss and gradient of ``loss_fn(params, *batch)`` computed by
    :func:`data_parallel_loss` (batch split over ``axis_name``, gradients all-reduced),
    then ``tx.update`` and ``optax.apply_updates`` on the replicated parameters.
    Batch arrays may be host (numpy) arrays or already placed by :func:`shard_batch`;
    ``params`` and ``opt_state`` come back replicated on ``mesh``.
    """
    import optax

    loss = data_parallel_loss(loss_fn, mesh, axis_name, reduction=reduction)
    value_and_grad = jax.value_and_grad(loss)
    rep, split = replicated(mesh), batch_sharding(mesh, axis_name)

    def step(params, opt_state, *batch):
        value, grads = value_and_grad(params, *batch)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    compiled: dict[int, Callable] = {}

    def run(params, opt_state, *batch):
        n = len(batch)
        if n not in compiled:
            compiled[n] = jax.jit(
                step, in_shardings=(rep, rep) + (split,) * n, out_shardings=(rep, rep, rep)
            )
        _check_batch(batch, mesh_axis_size(mesh, axis_name), axis_name)
        params, opt_state = jax.device_put((params, opt_state), rep)  # no-op when placed
        batch = jax.device_put(batch, split)
        return compiled[n](params, opt_state, *batch)

    return run
