"""Spatially partitioned convolution (``jaxconv._src.sharded.sharded_conv``) on 8 CPU
devices, against the single-device reference, forward and backward.

The multi-device bodies run in a subprocess started with
``XLA_FLAGS=--xla_force_host_platform_device_count=8`` (this file run as a script):
the test session's own JAX backend keeps one device. The subprocess computes every
case (output, input gradient, kernel gradient of a random cotangent, and the output's
sharding) and the error messages, and prints them as JSON; the tests check them here.
"""

from __future__ import annotations

import json
import sys

import multidevice
import numpy as np
import pytest

DEVICES = multidevice.DEVICES

#: name -> (x shape, w shape, implementation, mesh shape (or "explicit": an 8-device
#: mesh with Explicit axes), sharded_conv keyword arguments)
CASES: dict[str, tuple] = {
    "same_stride1": ((2, 32, 6, 3), (3, 3, 3, 4), "xla", (8,), {}),
    "valid_k9_drift": ((1, 64, 5, 2), (9, 3, 2, 3), "xla", (8,), {"padding": "VALID"}),
    "stride3_same": ((2, 48, 5, 3), (3, 3, 3, 4), "xla", (8,), {"stride": 3}),
    "circular_multihop_dilated": (
        (1, 16, 5, 2),
        (9, 3, 2, 3),
        "xla",
        (8,),
        {"dilation": (3, 1), "padding_mode": "circular"},
    ),
    "reflect_stride2": (
        (2, 32, 6, 3),
        (5, 3, 3, 4),
        "taps",
        (8,),
        {"stride": 2, "padding_mode": "reflect"},
    ),
    "symmetric": ((1, 32, 5, 2), (4, 3, 2, 3), "xla", (8,), {"padding_mode": "symmetric"}),
    "replicate_causal": (
        (1, 32, 5, 2),
        (3, 3, 2, 3),
        "xla",
        (8,),
        {"padding": ((2, 0), (1, 1)), "padding_mode": "replicate"},
    ),
    "constant_value": (
        (1, 32, 5, 2),
        (3, 3, 2, 3),
        "xla",
        (8,),
        {"padding_mode": "constant", "padding_value": 1.5},
    ),
    "input_dilation_crop": (
        (1, 16, 5, 2),
        (3, 3, 2, 3),
        "xla",
        (8,),
        {"input_dilation": (2, 1), "padding": ((1, 2), (-1, 1))},
    ),
    "volume_axis2_taps": (
        (1, 4, 3, 16, 2),
        (3, 3, 3, 2, 4),
        "taps",
        (8,),
        {"spatial_axis": 2, "padding_mode": "circular", "dilation": 2},
    ),
    "grouped_im2col": ((2, 32, 5, 4), (3, 3, 2, 4), "im2col", (8,), {"groups": 2}),
    "signal_1d_causal": (
        (2, 64, 3),
        (5, 3, 4),
        "xla",
        (8,),
        {"padding": "CAUSAL", "dilation": 2, "bias": True, "activation": "tanh"},
    ),
    "reflect_mirror_beyond_window": (  # boundary rows copy rows outside the window
        (1, 16, 4, 3),
        (1, 3, 3, 2),
        "xla",
        (8,),
        {"stride": (2, 1), "padding": ((3, -3), (1, 1)), "padding_mode": "reflect"},
    ),
    "batch_and_space_2x4": (
        (4, 16, 6, 3),
        (3, 3, 3, 4),
        "xla",
        (2, 4),
        {"batch_axis_name": "b"},
    ),
    "explicit_mesh_im2col": (  # jax.make_mesh's default Explicit axes: placed by reshard
        (2, 16, 6, 3),
        (3, 3, 3, 4),
        "im2col",
        "explicit",
        {"stride": 2, "padding_mode": "replicate"},
    ),
}

#: cases also run eagerly (outside jax.jit)
EAGER = ("same_stride1", "explicit_mesh_im2col")


def run_worker(*args: str, timeout: float = 900) -> dict:
    """Run this file's worker mode with 8 CPU devices; return its JSON result."""
    return multidevice.run_worker(__file__, *args, timeout=timeout)


# --------------------------------------------------------------------------------------
# Tests (parent process)
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def results():
    return run_worker("cases")


def _assert_close(r: dict, name: str):
    from jaxconv._src.reference import tolerance

    tol = tolerance(np.float32)
    assert r["shape"] == r["reference_shape"], name
    for key in ("forward", "grad_x", "grad_w"):
        assert r[key] <= tol, (name, key, r)
    assert r["reference_scale"] > 0.1  # a real, non-trivial reference


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_single_device(results, name):
    r = results["cases"][name]
    _assert_close(r, name)
    axis = 1 + CASES[name][4].get("spatial_axis", 0)
    expected = [None] * len(r["shape"])
    expected[axis] = "x"
    if CASES[name][4].get("batch_axis_name"):
        expected[0] = "b"
    assert r["spec"] == expected  # the output stays split, nothing gathered
    if name in EAGER:
        assert r["eager_error"] <= 1e-6


def test_halo_plan(results):
    from jaxconv._src.sharded import halo_plan
    from jaxconv._src.spec import ConvSpec, default_dimension_numbers

    def plan(x, w, **kw):
        spec = ConvSpec.create(x, w, dimension_numbers=default_dimension_numbers(2), **kw)
        return halo_plan(spec, 0, DEVICES)

    p = plan((1, 32, 4, 1), (3, 3, 1, 1), padding="SAME")
    assert (p.left, p.right, p.drift, p.local, p.out_local) == (1, 1, 0, 4, 4)
    p = plan((1, 32, 4, 1), (5, 3, 1, 1), padding="SAME", rhs_dilation=(3, 1))
    assert (p.left, p.right, p.hops()) == (6, 6, (2, 2))  # (k - 1) * dilation = 12 rows
    p = plan((1, 64, 4, 1), (9, 3, 1, 1), padding="VALID")
    # 56 output rows: device p computes rows 7p.. from input rows 7p..7p+14 while it
    # holds 8p..8p+7, so device 7 needs 7 rows on the left and device 0 7 on the right
    assert (p.left, p.right, p.drift, p.window_rows) == (7, 7, -1, 15)
    with pytest.raises(ValueError, match="divisible by the number of devices"):
        plan((1, 30, 4, 1), (3, 3, 1, 1), padding="SAME")
    assert results["plans"]["same_stride1"] == [1, 1]


def test_errors(results):
    e = results["errors"]
    assert (
        "`x` spatial axis 0 (size 30) must be divisible by the number of devices"
        in (e["uneven_input"])
    )
    assert "has 30 rows, not divisible by the number of devices" in e["uneven_output"]
    assert "`axis_name` must be one of the mesh's axes ('x',), got 'y'" in e["axis_name"]
    assert "`spatial_axis` must be in [-2, 2)" in e["spatial_axis"]
    assert "`batch_axis_name` must differ" in e["same_axes"]
    assert "`groups` (=2) must divide the input channels (=3)" in e["groups"]


@pytest.mark.slow
def test_random_configurations():
    r = run_worker("random", "40")
    assert len(r["cases"]) == 40
    for name, case in r["cases"].items():
        _assert_close(case, name)


@pytest.mark.slow
@pytest.mark.parametrize("implementation", ["pallas_triton", "pallas_tpu"])
def test_pallas_local_convolution(implementation):
    r = run_worker("pallas", implementation)
    for name, case in r["cases"].items():
        _assert_close(case, name)


# --------------------------------------------------------------------------------------
# Worker (subprocess with 8 CPU devices)
# --------------------------------------------------------------------------------------

PALLAS = {
    "pallas_triton": "jaxconv._src.pallas.triton",
    "pallas_tpu": "jaxconv._src.pallas_tpu.kernel",
}


def _mesh(shape):
    import jax
    from jax.sharding import AxisType, Mesh

    if shape == "explicit":
        return jax.make_mesh((DEVICES,), ("x",), axis_types=(AxisType.Explicit,))
    names = ("x",) if len(shape) == 1 else ("b", "x")
    return Mesh(np.array(jax.devices()[: int(np.prod(shape))]).reshape(shape), names)


def _case(xs, ws, implementation, mesh_shape, kw, seed=0, eager=False) -> dict:
    import jax
    import jax.numpy as jnp

    from jaxconv._src.reference import reference_conv, relative_error
    from jaxconv._src.sharded import sharded_conv
    from jaxconv._src.spec import ConvSpec, default_dimension_numbers

    kw = dict(kw)
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=xs), jnp.float32)
    w = jnp.asarray(rng.normal(size=ws), jnp.float32)
    bias = jnp.asarray(rng.normal(size=ws[-1]), jnp.float32) if kw.pop("bias", False) else None
    act = {"tanh": jnp.tanh, None: None}[kw.pop("activation", None)]
    mesh = _mesh(mesh_shape)
    n = len(ws) - 2
    ref_kw = {k: v for k, v in kw.items() if k not in ("spatial_axis", "batch_axis_name")}
    spec = ConvSpec.create(
        xs,
        ws,
        ref_kw.get("stride", 1),
        ref_kw.get("padding", "SAME"),
        ref_kw.get("input_dilation", 1),
        ref_kw.get("dilation", 1),
        default_dimension_numbers(n),
        ref_kw.get("groups", 1),
        boundary=ref_kw.get("padding_mode", "zeros"),
        boundary_value=ref_kw.get("padding_value", 0.0),
    )

    def sharded(x, w):
        y = sharded_conv(
            x,
            w,
            mesh=mesh,
            axis_name="x",
            bias=bias,
            activation=act,
            implementation=implementation,
            **kw,
        )
        return y

    def reference(x, w):
        y = reference_conv(x, w, spec)
        if bias is not None:
            y = y + bias
        return act(y) if act is not None else y

    ct = jnp.asarray(rng.normal(size=spec.out_shape), jnp.float32)

    @jax.jit
    def forward_backward(x, w):
        y, vjp = jax.vjp(sharded, x, w)
        return (y, *vjp(ct))

    @jax.jit
    def reference_forward_backward(x, w):
        y, vjp = jax.vjp(reference, x, w)
        return (y, *vjp(ct))

    y, gx, gw = forward_backward(x, w)
    r, rx, rw = reference_forward_backward(x, w)
    out = {
        "shape": list(y.shape),
        "reference_shape": list(r.shape),
        "forward": relative_error(y, r),
        "grad_x": relative_error(gx, rx),
        "grad_w": relative_error(gw, rw),
        "reference_scale": float(jnp.max(jnp.abs(r))),
        "spec": list(y.sharding.spec) + [None] * (y.ndim - len(y.sharding.spec)),
    }
    if eager:  # the same call outside jax.jit (shard_map run eagerly)
        out["eager_error"] = relative_error(sharded(x, w), y)
    return out


def _errors() -> dict:
    import jax.numpy as jnp

    from jaxconv._src.sharded import sharded_conv

    mesh = _mesh((8,))
    mesh2 = _mesh((2, 4))
    x = jnp.ones((1, 32, 4, 3))
    w = jnp.ones((3, 3, 3, 2))
    cases = {
        "uneven_input": lambda: sharded_conv(jnp.ones((1, 30, 4, 3)), w, mesh=mesh, axis_name="x"),
        "uneven_output": lambda: sharded_conv(x, w, mesh=mesh, axis_name="x", padding="VALID"),
        "axis_name": lambda: sharded_conv(x, w, mesh=mesh, axis_name="y"),
        "spatial_axis": lambda: sharded_conv(x, w, mesh=mesh, axis_name="x", spatial_axis=2),
        "same_axes": lambda: sharded_conv(
            jnp.ones((4, 16, 4, 3)), w, mesh=mesh2, axis_name="x", batch_axis_name="x"
        ),
        "groups": lambda: sharded_conv(
            x, jnp.ones((3, 3, 1, 2)), mesh=mesh, axis_name="x", groups=2
        ),
    }
    out = {}
    for name, fn in cases.items():
        try:
            fn()
            out[name] = "no error"
        except (ValueError, TypeError) as e:
            out[name] = f"{type(e).__name__}: {e}"
    return out


def _random_cases(count: int, seed: int = 1) -> dict:
    """Random 1-D / 2-D configurations whose input and output lengths split evenly."""
    rng = np.random.default_rng(seed)
    modes = ["zeros", "circular", "reflect", "symmetric", "replicate", "constant"]
    impls = ["xla", "taps", "im2col"]
    cases = {}
    while len(cases) < count:
        n = int(rng.integers(1, 3))
        P = int(rng.choice([2, 4, 8]))
        stride = int(rng.integers(1, 4))
        k = int(rng.integers(1, 6))
        dil = int(rng.integers(1, 4))
        local = int(rng.integers(1, 4)) * stride * int(rng.integers(1, 3))
        L = local * P
        mode = str(rng.choice(modes))
        padding = rng.choice(["SAME", "CAUSAL", "pairs"])
        if padding == "pairs":
            padding = [(int(rng.integers(-1, 4)), int(rng.integers(-1, 4))) for _ in range(n)]
        xs = (int(rng.integers(1, 3)), L) + (5,) * (n - 1) + (int(rng.integers(1, 4)),)
        ws = (k,) + (3,) * (n - 1) + (xs[-1], int(rng.integers(1, 4)))
        kw = {
            "stride": (stride,) + (1,) * (n - 1),
            "dilation": (dil,) + (1,) * (n - 1),
            "padding": padding,
            "padding_mode": mode,
            "padding_value": 0.7,
        }
        mesh = (P,)
        name = f"r{len(cases)}_P{P}_{xs}_{ws}_{kw}"
        try:
            result = _case(xs, ws, str(rng.choice(impls)), mesh, kw, seed=len(cases))
        except ValueError as e:  # uneven output or a mode the spec rejects: draw again
            if "divisible" in str(e) or "padding of" in str(e) or "larger" in str(e):
                continue
            raise
        cases[name] = result
    return cases


def _worker(argv: list[str]) -> dict:
    import importlib

    import jax

    from jaxconv._src.sharded import halo_plan
    from jaxconv._src.spec import ConvSpec, default_dimension_numbers

    assert len(jax.devices()) == DEVICES, jax.devices()
    command = argv[0]
    if command == "cases":
        cases = {name: _case(*args, eager=name in EAGER) for name, args in CASES.items()}
        spec = ConvSpec.create(
            (2, 32, 6, 3),
            (3, 3, 3, 4),
            padding="SAME",
            dimension_numbers=default_dimension_numbers(2),
        )
        p = halo_plan(spec, 0, DEVICES)
        return {"cases": cases, "errors": _errors(), "plans": {"same_stride1": [p.left, p.right]}}
    if command == "random":
        return {"cases": _random_cases(int(argv[1]))}
    if command == "pallas":
        importlib.import_module(PALLAS[argv[1]])
        chosen = ["same_stride1", "valid_k9_drift", "circular_multihop_dilated", "reflect_stride2"]
        return {"cases": {n: _case(*CASES[n][:2], argv[1], *CASES[n][3:]) for n in chosen}}
    raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    print(json.dumps(_worker(sys.argv[1:])))
