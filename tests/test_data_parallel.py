"""Data parallelism (``jaxconv._src.data_parallel``) on 8 CPU devices.

The multi-device bodies run in a subprocess started with
``XLA_FLAGS=--xla_force_host_platform_device_count=8`` (this file run as a script):
the test session's own JAX backend keeps one device. The subprocess trains a small CNN
of ``jaxconv.conv`` layers (plain functions + optax) for a few steps once on one device
and once data-parallel on 8 devices, for each implementation, and prints the two loss
curves and the final parameters' difference as JSON; the tests compare them here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import multidevice
import numpy as np
import pytest

DEVICES = multidevice.DEVICES
STEPS = 4
BATCH = 16  # 2 images per device
CORE = ["xla", "taps", "im2col", "fft"]
#: module of each Pallas implementation (registered when imported)
PALLAS = {
    "pallas_triton": "jaxconv._src.pallas.triton",
    "pallas_tpu": "jaxconv._src.pallas_tpu.kernel",
}


def run_worker(*args: str, timeout: float = 600) -> dict:
    """Run this file's worker mode with 8 CPU devices; return its JSON result."""
    return multidevice.run_worker(__file__, *args, timeout=timeout)


# --------------------------------------------------------------------------------------
# Tests (parent process)
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def core_curves():
    return run_worker("curves", *CORE)


@pytest.mark.parametrize("implementation", CORE)
def test_loss_curve_matches_single_device(core_curves, implementation):
    from jaxconv._src.reference import tolerance

    r = core_curves["curves"][implementation]
    single, parallel = np.asarray(r["single"]), np.asarray(r["parallel"])
    assert r["devices"] == DEVICES
    assert single.shape == parallel.shape == (STEPS,)
    assert np.all(np.isfinite(single))
    assert single[-1] < single[0]  # it trains
    rel = np.max(np.abs(parallel - single)) / np.max(np.abs(single))
    assert rel <= tolerance(np.float32), (single, parallel)
    assert r["params_rel_error"] <= 10 * tolerance(np.float32)
    assert r["batch_spec"] == ["data"]  # the batch really was split over the mesh
    assert r["params_spec"] == []  # and the parameters replicated


def test_errors(core_curves):
    errors = core_curves["errors"]
    assert "batch size (=12" in errors["uneven_batch"]
    assert "divisible by the number of devices" in errors["uneven_batch"]
    assert "`devices` (=9) exceeds the 8" in errors["too_many_devices"]
    assert "xla_force_host_platform_device_count=9" in errors["too_many_devices"]
    assert "`reduction` must be 'mean' or 'sum'" in errors["reduction"]
    assert "`axis_name` must be one of the mesh's axes" in errors["axis_name"]


@pytest.mark.slow
@pytest.mark.parametrize("implementation", sorted(PALLAS))
def test_loss_curve_matches_single_device_pallas(implementation):
    import importlib.util

    if importlib.util.find_spec(PALLAS[implementation]) is None:  # the module is absent
        pytest.skip(f"{PALLAS[implementation]} does not exist")
    from jaxconv._src.reference import tolerance

    r = run_worker("curves", implementation)["curves"][implementation]
    single, parallel = np.asarray(r["single"]), np.asarray(r["parallel"])
    assert single[-1] < single[0]
    rel = np.max(np.abs(parallel - single)) / np.max(np.abs(single))
    assert rel <= tolerance(np.float32), (single, parallel)
    assert r["params_rel_error"] <= 10 * tolerance(np.float32)


@pytest.mark.slow
def test_two_processes_jax_distributed():
    """Two processes x 4 CPU devices joined by ``jax.distributed.initialize`` (gloo
    collectives): the multi-host setting of docs/multi_host.md on one machine. Both
    modes run on the 8-device global mesh and match one device."""
    import socket

    from jaxconv._src.reference import tolerance

    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        port = sock.getsockname()[1]
    env = dict(os.environ)
    env["XLA_FLAGS"] = (
        env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
    ).strip()
    env["JAX_PLATFORMS"] = "cpu"
    procs = [
        subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "process", str(i), str(port)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outs = []
    for proc in procs:
        try:
            stdout, stderr = proc.communicate(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 0, stderr[-4000:]
        outs.append(json.loads(stdout.strip().splitlines()[-1]))
    assert sorted(o["process"] for o in outs) == [0, 1]
    for o in outs:
        assert (o["devices"], o["local_devices"]) == (8, 4)
        assert o["sharded_error"] <= tolerance(np.float32)
        single, parallel = np.asarray(o["single"]), np.asarray(o["parallel"])
        rel = np.max(np.abs(parallel - single)) / np.max(np.abs(single))
        assert rel <= tolerance(np.float32), (single, parallel)
    assert outs[0]["parallel"] == outs[1]["parallel"]  # one program, one result


# --------------------------------------------------------------------------------------
# Worker (subprocess with 8 CPU devices)
# --------------------------------------------------------------------------------------


def _init(key):
    import jax

    k1, k2, k3 = jax.random.split(key, 3)
    return {
        "w1": 0.4 * jax.random.normal(k1, (3, 3, 1, 8)),
        "b1": jax.numpy.zeros(8),
        "w2": 0.15 * jax.random.normal(k2, (3, 3, 8, 8)),
        "b2": jax.numpy.zeros(8),
        "wd": 0.08 * jax.random.normal(k3, (4 * 4 * 8, 10)),
        "bd": jax.numpy.zeros(10),
    }


def _loss_fn(implementation):
    import jax
    import optax

    import jaxconv

    def apply(params, x):
        h = jaxconv.conv(
            x,
            params["w1"],
            bias=params["b1"],
            activation=jax.nn.relu,
            implementation=implementation,
        )
        h = jaxconv.conv(
            h,
            params["w2"],
            stride=2,
            bias=params["b2"],
            activation=jax.nn.relu,
            implementation=implementation,
        )
        return h.reshape(h.shape[0], -1) @ params["wd"] + params["bd"]

    def loss(params, x, y):
        return optax.softmax_cross_entropy_with_integer_labels(apply(params, x), y).mean()

    return loss


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(STEPS, BATCH, 8, 8, 1)).astype(np.float32)
    teacher = rng.normal(size=(64, 10)).astype(np.float32)
    y = np.argmax(x.reshape(STEPS, BATCH, 64) @ teacher, -1).astype(np.int32)
    return x, y


def _curves(implementation: str) -> dict:
    import jax
    import optax

    from jaxconv._src import data_parallel as dp

    loss_fn = _loss_fn(implementation)
    tx = optax.sgd(0.1, momentum=0.9)
    x, y = _data()
    params0 = _init(jax.random.key(0))

    @jax.jit
    def single_step(params, opt_state, xb, yb):
        loss, grads = jax.value_and_grad(loss_fn)(params, xb, yb)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    params, state, single = params0, tx.init(params0), []
    for i in range(STEPS):
        params, state, loss = single_step(params, state, x[i], y[i])
        single.append(float(loss))
    params_single = params

    mesh = dp.device_mesh(DEVICES)
    step = dp.data_parallel_step(loss_fn, tx, mesh)
    params, state = dp.replicate((params0, tx.init(params0)), mesh)
    parallel = []
    for i in range(STEPS):
        xb, yb = dp.shard_batch((x[i], y[i]), mesh)
        params, state, loss = step(params, state, xb, yb)
        parallel.append(float(loss))
    num = max(
        float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
        for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(params_single))
    )
    den = max(float(np.max(np.abs(np.asarray(b)))) for b in jax.tree.leaves(params_single))
    return {
        "single": single,
        "parallel": parallel,
        "params_rel_error": num / den,
        "devices": len(mesh.devices.flat),
        "batch_spec": list(xb.sharding.spec),
        "params_spec": list(params["w1"].sharding.spec),
    }


def _errors() -> dict:
    import jax.numpy as jnp
    import optax

    from jaxconv._src import data_parallel as dp

    mesh = dp.device_mesh(DEVICES)
    out = {}
    cases = {
        "uneven_batch": lambda: dp.shard_batch(jnp.zeros((12, 3)), mesh),
        "too_many_devices": lambda: dp.device_mesh(DEVICES + 1),
        "reduction": lambda: dp.data_parallel_loss(_loss_fn("xla"), mesh, reduction="max"),
        "axis_name": lambda: dp.data_parallel_step(_loss_fn("xla"), optax.sgd(0.1), mesh, "x"),
    }
    for name, fn in cases.items():
        try:
            fn()
            out[name] = "no error"
        except (ValueError, TypeError) as e:
            out[name] = str(e)
    return out


def _process(index: int, port: int) -> dict:
    """One of two processes of :func:`test_two_processes_jax_distributed`."""
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        f"localhost:{port}", num_processes=2, process_id=index, initialization_timeout=120
    )
    import jax.numpy as jnp
    import optax
    from jax.experimental import multihost_utils
    from jax.sharding import NamedSharding, PartitionSpec

    import jaxconv
    from jaxconv._src import data_parallel as dp
    from jaxconv._src.reference import relative_error
    from jaxconv._src.sharded import sharded_conv

    mesh = dp.device_mesh()  # all 8 devices of both processes
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, 32, 6, 3)).astype(np.float32)
    w = rng.normal(size=(3, 3, 3, 4)).astype(np.float32)
    # each process supplies only the rows its own devices hold
    split = NamedSharding(mesh, PartitionSpec(None, "data"))
    xg = jax.make_array_from_callback(x.shape, split, lambda index: x[index])
    conv = lambda x, w: sharded_conv(  # noqa: E731
        x, w, mesh=mesh, axis_name="data", padding_mode="circular", implementation="taps"
    )
    y = multihost_utils.process_allgather(jax.jit(conv)(xg, w), tiled=True)
    ref = jaxconv.conv(x, w, padding_mode="circular", implementation="xla", precision="highest")

    loss_fn = _loss_fn("taps")
    tx = optax.sgd(0.1, momentum=0.9)
    xs, ys = _data()
    params0 = _init(jax.random.key(0))
    step = dp.data_parallel_step(loss_fn, tx, mesh)
    params, state = dp.replicate((params0, tx.init(params0)), mesh)
    parallel = []
    for i in range(STEPS):
        params, state, loss = step(params, state, xs[i], ys[i])
        parallel.append(float(loss))
    single, q, qs = [], params0, tx.init(params0)
    for i in range(STEPS):
        loss, grads = jax.value_and_grad(loss_fn)(q, jnp.asarray(xs[i]), jnp.asarray(ys[i]))
        updates, qs = tx.update(grads, qs, q)
        q = optax.apply_updates(q, updates)
        single.append(float(loss))
    return {
        "process": jax.process_index(),
        "devices": jax.device_count(),
        "local_devices": jax.local_device_count(),
        "sharded_error": relative_error(y, ref),
        "parallel": parallel,
        "single": single,
    }


def _worker(argv: list[str]) -> dict:
    import importlib

    if argv[0] == "process":
        return _process(int(argv[1]), int(argv[2]))
    import jax

    assert len(jax.devices()) == DEVICES, jax.devices()
    command, names = argv[0], argv[1:]
    assert command == "curves"
    result = {"curves": {}}
    for name in names:
        if name in PALLAS:
            importlib.import_module(PALLAS[name])  # registers the implementation
        result["curves"][name] = _curves(name)
    if set(names) == set(CORE):
        result["errors"] = _errors()
    return result


if __name__ == "__main__":
    print(json.dumps(_worker(sys.argv[1:])))
