"""``pallas_triton``: the Pallas Triton convolution kernels, tested without a GPU.

* interpret mode on the CPU (``lax.platform_dependent`` picks it) against the reference,
  forward and both gradients, over named classes, dtypes and random configurations;
* lowering for the GPU on this CPU machine (``lowering_platforms=("cuda",)`` runs the
  Triton lowering) for every class and dtype, forward and backward;
* GPU runtime tests (``-m gpu``) that skip cleanly without a GPU.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from jax import lax
from params import examples

import jaxconv
from jaxconv._src import autodiff, dispatch
from jaxconv._src.pallas import tiling
from jaxconv._src.pallas import triton as pt
from jaxconv._src.reference import reference_conv, relative_error, tolerance
from jaxconv._src.spec import ConvSpec, default_dimension_numbers

NCHW = default_dimension_numbers(2, channels_last=False)

#: Named classes: (lhs shape, rhs shape, lax-style keyword arguments). NHWC/HWIO unless
#: ``dimension_numbers`` says otherwise.
CASES = {
    "dense2d_same": ((2, 5, 6, 16), (3, 3, 16, 16), dict(padding="SAME")),
    "dense1d_stride": ((2, 9, 16), (3, 16, 24), dict(window_strides=2, padding=((1, 2),))),
    "dense3d": ((1, 3, 4, 5, 16), (2, 3, 2, 16, 16), dict(padding=((1, 0), (1, 1), (0, 1)))),
    "rhs_dilation_crop": (
        (2, 7, 8, 16),
        (3, 3, 16, 16),
        dict(rhs_dilation=(2, 1), padding=((-1, 2), (1, 1))),
    ),
    "grouped_dot": ((2, 5, 6, 32), (3, 3, 16, 32), dict(padding="SAME", feature_group_count=2)),
    "grouped_blockdiag": (
        (2, 6, 6, 16),
        (3, 3, 4, 16),
        dict(window_strides=2, padding="SAME", feature_group_count=4),
    ),
    # 24 groups of 4 -> 2 channels: blocks of 16 groups, the second one half empty.
    "grouped_blockdiag_ragged": (
        (2, 5, 4, 96),
        (3, 2, 4, 48),
        dict(padding="SAME", feature_group_count=24),
    ),
    "depthwise": ((2, 6, 7, 8), (3, 3, 1, 8), dict(padding="SAME", feature_group_count=8)),
    "depthwise_multiplier": (
        (2, 6, 7, 4),
        (3, 3, 1, 8),
        dict(window_strides=2, padding=((1, 1), (0, 1)), feature_group_count=4),
    ),
    "transposed": (
        (2, 4, 5, 16),
        (3, 3, 16, 16),
        dict(lhs_dilation=(2, 2), padding=((2, 2), (1, 2))),
    ),
    "transposed_dilated": (
        (1, 4, 3, 16),
        (3, 2, 16, 16),
        dict(lhs_dilation=(3, 2), rhs_dilation=(2, 3), padding=((-1, 2), (2, 0))),
    ),
    "nchw": ((2, 16, 5, 6), (24, 16, 3, 3), dict(padding="SAME", dimension_numbers=NCHW)),
    "large_window": ((2, 6, 6, 16), (5, 5, 16, 16), dict(padding="VALID")),
    "batch_groups": ((4, 5, 6, 16), (3, 3, 16, 32), dict(padding="SAME", batch_group_count=2)),
}

#: Classes also run forward and backward in the 16-bit dtypes (all lower in every dtype).
HALF_CASES = ("dense2d_same", "depthwise")

DTYPES = (np.float32, jnp.bfloat16, np.float16)


def _spec(lhs_shape, rhs_shape, kwargs, dtype=np.float32) -> ConvSpec:
    kwargs = dict(kwargs)
    dn = kwargs.pop("dimension_numbers", default_dimension_numbers(len(lhs_shape) - 2))
    return ConvSpec.create(lhs_shape, rhs_shape, dimension_numbers=dn, lhs_dtype=dtype, **kwargs)


def _operands(spec: ConvSpec, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.standard_normal(spec.lhs_shape), spec.lhs_dtype)
    w = jnp.asarray(rng.standard_normal(spec.rhs_shape), spec.rhs_dtype)
    ct = jnp.asarray(rng.standard_normal(spec.out_shape), spec.out_dtype)
    return x, w, ct


def _forward_and_grads(conv_fn, spec):
    """jitted ``(x, w, ct) -> (y, dx, dw)`` of ``conv_fn(x, w, spec)``."""

    def f(x, w, ct):
        y, vjp = jax.vjp(lambda a, b: conv_fn(a, b, spec), x, w)
        return (y,) + vjp(ct.astype(y.dtype))

    return jax.jit(f)


def _reference(lhs, rhs, spec: ConvSpec):
    """:func:`reference_conv` with the padding and input dilation materialised by
    ``lax.pad`` first: XLA:CPU miscomputes a convolution whose pads mix signs, e.g.
    ``lax.conv_general_dilated`` of ``(1, 3, 16)`` by ``(1, 16, 2)`` (NWC, WIO) with
    padding ``((-1, 1),)`` returns ~1e19 in its last row, and lax's own gradients of
    cropping specs produce such pads."""
    lhs_spec = spec.dimension_numbers.lhs_spec
    config = [(0, 0, 0)] * len(spec.lhs_shape)
    for d, (lo, hi), ld in zip(lhs_spec[2:], spec.padding, spec.lhs_dilation):
        config[d] = (lo, hi, ld - 1)
    xp = lax.pad(lhs.astype(jnp.float32), jnp.float32(0), config)
    n = spec.nspatial
    valid = spec.replace(
        lhs_shape=xp.shape,
        lhs_dtype=np.dtype(np.float32),
        rhs_dtype=np.dtype(np.float32),
        preferred_element_type=None,
        padding=((0, 0),) * n,
        lhs_dilation=(1,) * n,
    )
    return reference_conv(xp, rhs.astype(jnp.float32), valid)


def _reference_forward_and_grads(spec, x, w, ct):
    """The same from lax at HIGHEST on float32 operands (float32 results)."""
    y, vjp = jax.vjp(
        lambda a, b: _reference(a, b, spec), x.astype(jnp.float32), w.astype(jnp.float32)
    )
    return (y,) + vjp(ct.astype(jnp.float32))


def check_against_reference(spec: ConvSpec, seed: int = 0) -> None:
    """Forward and both gradients of the kernels (interpret mode here) vs lax."""
    x, w, ct = _operands(spec, seed)
    got = _forward_and_grads(pt.conv, spec)(x, w, ct)
    want = _reference_forward_and_grads(spec, x, w, ct)
    names = ("forward", "input gradient", "kernel gradient")
    dtypes = (spec.out_dtype, spec.lhs_dtype, spec.rhs_dtype)
    for name, dtype, a, b in zip(names, dtypes, got, want):
        assert a.dtype == dtype, (name, a.dtype, dtype)
        err = relative_error(a, b)
        assert err <= tolerance(dtype), f"{name}: relative error {err:.2e} for {spec}"


# --------------------------------------------------------------------------------------
# Interpret mode against the reference
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(CASES))
def test_classes_float32(case):
    check_against_reference(_spec(*CASES[case]))


@pytest.mark.parametrize("dtype", [jnp.bfloat16, np.float16], ids=["bfloat16", "float16"])
@pytest.mark.parametrize("case", HALF_CASES)
def test_classes_half(case, dtype):
    check_against_reference(_spec(*CASES[case], dtype=dtype))


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [jnp.bfloat16, np.float16], ids=["bfloat16", "float16"])
@pytest.mark.parametrize("case", sorted(set(CASES) - set(HALF_CASES)))
def test_classes_half_all(case, dtype):
    check_against_reference(_spec(*CASES[case], dtype=dtype))


@st.composite
def conv_specs(draw, dtypes=(np.float32,)):
    """Random zero-boundary specs over every class the kernels take."""
    n = draw(st.integers(1, 2))
    groups = draw(st.sampled_from([1, 1, 2, 4]))
    depthwise = groups > 1 and draw(st.booleans())
    I = 1 if depthwise else draw(st.sampled_from([2, 8, 16]))
    Og = draw(st.sampled_from([1, 2, 16])) if depthwise else draw(st.sampled_from([4, 16]))
    N = draw(st.integers(1, 2))
    spatial = tuple(draw(st.integers(3, 7)) for _ in range(n))
    window = tuple(draw(st.integers(1, 3)) for _ in range(n))
    strides = tuple(draw(st.integers(1, 2)) for _ in range(n))
    rhs_dil = tuple(draw(st.integers(1, 2)) for _ in range(n))
    lhs_dil = tuple(draw(st.sampled_from([1, 1, 2])) for _ in range(n))
    pads = tuple((draw(st.integers(-1, 2)), draw(st.integers(-1, 2))) for _ in range(n))
    dtype = draw(st.sampled_from(dtypes))
    try:
        return ConvSpec.create(
            (N,) + spatial + (groups * I,),
            window + (I, groups * Og),
            strides,
            pads,
            lhs_dil,
            rhs_dil,
            default_dimension_numbers(n),
            groups,
            lhs_dtype=dtype,
        )
    except ValueError:
        assume(False)


@examples(5)
@given(spec=conv_specs())
def test_random_configurations(spec):
    check_against_reference(spec, seed=1)


@pytest.mark.slow
@examples(60)
@given(spec=conv_specs(dtypes=DTYPES))
def test_random_configurations_slow(spec):
    check_against_reference(spec, seed=2)


def test_weight_gradient_split_reduction():
    """A kernel gradient large enough to split its reduction (partials summed)."""
    spec = _spec((2, 16, 16, 16), (3, 3, 16, 16), dict(padding="SAME"))
    tspec = autodiff.transpose_rhs_spec(spec)
    geom = tiling.geometry(tspec)
    assert geom.formulation == "weight_grad"
    assert tiling.blocks(geom, 4).splits > 1
    check_against_reference(spec)


def test_gradient_of_gradient():
    spec = _spec((1, 5, 5, 16), (3, 3, 16, 16), dict(padding="SAME", window_strides=2))
    x, w, _ = _operands(spec)

    def second(conv_fn):
        def inner(a, b):
            return jnp.sum(jnp.sin(conv_fn(a, b)))

        return jax.grad(lambda b: jnp.sum(jax.grad(inner)(x, b) ** 2))(w)

    got = jax.jit(lambda: second(lambda a, b: pt.conv(a, b, spec)))()
    want = second(lambda a, b: _reference(a, b, spec))
    assert relative_error(got, want) <= 10 * tolerance(np.float32)


def _pallas_calls(jaxpr):
    from jax._src import core

    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "pallas_call":
            found.append(eqn)
        for sub in core.jaxprs_in_params(eqn.params):
            found += _pallas_calls(sub)
    return found


def test_vmap_folds_into_batch():
    spec = _spec(*CASES["depthwise"])
    rng = np.random.default_rng(3)
    xs = jnp.asarray(rng.standard_normal((3,) + spec.lhs_shape), np.float32)
    w = jnp.asarray(rng.standard_normal(spec.rhs_shape), np.float32)
    f = jax.vmap(lambda a: pt.conv(a, w, spec))
    want = jax.vmap(lambda a: _reference(a, w, spec))(xs)
    assert relative_error(f(xs), want) <= tolerance(np.float32)
    calls = _pallas_calls(jax.make_jaxpr(f)(xs).jaxpr)
    assert calls  # one launch per platform branch, each over the folded batch 3 * N
    for eqn in calls:
        assert eqn.invars[0].aval.shape == (xs.size,)
        assert len(eqn.params["grid_mapping"].grid) == 2


def test_vmap_over_kernels_and_per_example_gradients():
    lhs, rhs, kw = CASES["grouped_blockdiag"]
    spec = _spec((1,) + lhs[1:], rhs, kw)
    rng = np.random.default_rng(7)
    xs = jnp.asarray(rng.standard_normal((2,) + spec.lhs_shape), np.float32)
    ws = jnp.asarray(rng.standard_normal((2,) + spec.rhs_shape), np.float32)

    def per_example(conv_fn):
        loss = lambda a, b: jnp.sum(jnp.sin(conv_fn(a, b)))  # noqa: E731
        return jax.vmap(jax.grad(loss, (0, 1)))(xs, ws)

    got = per_example(lambda a, b: pt.conv(a, b, spec))
    want = per_example(lambda a, b: _reference(a, b, spec))
    for a, b in zip(got, want):
        assert relative_error(a, b) <= 10 * tolerance(np.float32)


def test_fused_epilogue_and_its_gradient():
    spec = _spec(*CASES["grouped_dot"])
    x, w, _ = _operands(spec)
    bias = jnp.asarray(np.random.default_rng(4).standard_normal(spec.out_features), np.float32)

    def loss(conv_fn, a, b, c):
        return jnp.sum(jnp.sin(conv_fn(a, b, c)))

    def ours(a, b, c):
        return pt.conv(a, b, spec, bias=c, activation=jax.nn.gelu)

    def ref(a, b, c):
        return jax.nn.gelu(_reference(a, b, spec) + c)

    assert relative_error(ours(x, w, bias), ref(x, w, bias)) <= tolerance(np.float32)
    got = jax.jit(jax.grad(lambda *a: loss(ours, *a), (0, 1, 2)))(x, w, bias)
    want = jax.grad(lambda *a: loss(ref, *a), (0, 1, 2))(x, w, bias)
    for a, b in zip(got, want):
        assert relative_error(a, b) <= 10 * tolerance(np.float32)


def test_public_api_with_boundary_mode():
    """Through ``jaxconv.conv``: the dispatcher materialises ``reflect`` padding, the
    kernel sees a zero-boundary spec; bias and activation are fused."""
    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.standard_normal((2, 6, 5, 8)), np.float32)
    w = jnp.asarray(rng.standard_normal((3, 3, 1, 8)), np.float32)
    b = jnp.asarray(rng.standard_normal(8), np.float32)
    kw = dict(padding="SAME", groups=8, padding_mode="reflect", bias=b, activation=jax.nn.relu)
    got = jaxconv.conv(x, w, implementation="pallas_triton", **kw)
    want = jaxconv.conv(x, w, implementation="xla", precision="highest", **kw)
    assert relative_error(got, want) <= tolerance(np.float32)


# --------------------------------------------------------------------------------------
# What the kernels refuse, and the tiling invariants
# --------------------------------------------------------------------------------------


def test_unsupported_specs_raise_with_reason(x64):
    spec64 = _spec(*CASES["dense2d_same"], dtype=np.float64)
    assert "float64" in pt.supports(spec64)
    x, w, _ = _operands(spec64)
    with pytest.raises(NotImplementedError, match="pallas_triton"):
        dispatch.run(x, w, spec64, "pallas_triton")
    # the automatic-style list falls back to the next implementation
    assert dispatch.select(spec64, ["pallas_triton", "xla"]).name == "xla"
    spec_int = _spec(*CASES["depthwise"], dtype=np.int32)
    assert "int32" in pt.supports(spec_int)
    spec4d = ConvSpec.create(
        (1, 3, 3, 3, 3, 2), (1, 1, 1, 1, 2, 2), dimension_numbers=("NHWDTC", "HWDTIO", "NHWDTC")
    )
    assert "4 spatial" in pt.supports(spec4d)


@examples(60)
@given(spec=conv_specs(dtypes=DTYPES))
def test_block_shapes_fit_the_triton_lowering(spec):
    """Every tile is a power of two; matrix-unit tiles are at least 16 on each side."""
    for s in (spec, autodiff.transpose_lhs_spec(spec), autodiff.transpose_rhs_spec(spec)):
        geom = tiling.geometry(s)
        blk = tiling.blocks(geom, s.lhs_dtype.itemsize)
        for size in (blk.m, blk.n, blk.k, blk.o):
            assert size & (size - 1) == 0
        if geom.variant == "dot":
            dims = (blk.m, blk.n, blk.k) if geom.formulation == "forward" else (blk.n, blk.o, blk.k)
            assert min(dims) >= tiling.MIN_DOT
        assert blk.splits >= 1
        assert geom.in_per_group * geom.groups == geom.channels


def test_variant_choice():
    assert tiling.geometry(_spec(*CASES["depthwise"])).variant == "fma"
    blockdiag = tiling.geometry(_spec(*CASES["grouped_blockdiag"]))
    assert (blockdiag.variant, blockdiag.groups_per_block) == ("dot", 4)
    ragged = tiling.geometry(_spec(*CASES["grouped_blockdiag_ragged"]))
    assert (ragged.variant, ragged.groups_per_block, ragged.groups) == ("dot", 16, 24)
    # Below BLOCKDIAG_MIN_CHANNELS per group (depthwise): multiply-adds.
    assert tiling.geometry(_spec(*CASES["depthwise_multiplier"])).variant == "fma"
    assert tiling.geometry(_spec(*CASES["grouped_dot"])).variant == "dot"
    dense = _spec(*CASES["dense2d_same"])
    assert tiling.geometry(dense).formulation == "forward"
    wg = tiling.geometry(autodiff.transpose_rhs_spec(dense))
    assert (wg.formulation, wg.variant) == ("weight_grad", "dot")
    dw = tiling.geometry(autodiff.transpose_rhs_spec(_spec(*CASES["depthwise"])))
    assert (dw.formulation, dw.variant, dw.groups) == ("weight_grad", "fma", 8)


@pytest.mark.parametrize(
    "case, formulation",
    [("transposed", "forward"), ("transposed_dilated", "forward"), ("transposed", "weight_grad")],
)
def test_sub_pixel_phases_visit_exactly_the_real_taps(case, formulation):
    """Each phase of an input-dilated spec visits every tap that reads a real input
    sample, once, and (within the per-axis bound) no other: no masked-off work. The
    kernel gradient of a transposed convolution (tap-stationary) uses the same phases."""
    spec = _spec(*CASES[case])
    if formulation == "weight_grad":
        spec = autodiff.transpose_rhs_spec(spec)
    geom = tiling.geometry(spec)
    assert geom.formulation == formulation
    assert geom.phase == spec.lhs_dilation
    for phase_index in range(geom.phase_count):
        ph = [int(v) for v in tiling.unravel(np.int32(phase_index), geom.phase)]
        visited = []
        for step in range(geom.phase_taps):
            coords, _, ok = tiling.phase_tap(geom, [np.int32(v) for v in ph], np.int32(step))
            if bool(ok):
                visited.append(tuple(int(c) for c in coords))
        real = [
            t
            for t in np.ndindex(*geom.window)
            if all(
                (p + ti * rd - lo) % L == 0
                for p, ti, rd, lo, L in zip(ph, t, geom.rhs_dilation, geom.pad_lo, geom.phase)
            )
        ]
        assert sorted(visited) == sorted(real)
        assert len(visited) == len(set(visited))


# --------------------------------------------------------------------------------------
# Lowering for the GPU on this CPU machine
# --------------------------------------------------------------------------------------


def _lower_for_cuda(spec: ConvSpec):
    x, w, ct = _operands(spec)
    fn = _forward_and_grads(pt.conv, spec)
    lowered = fn.trace(x, w, ct).lower(lowering_platforms=("cuda",))
    return lowered.as_text()


def _lowering_params():
    """Every case in float32 (TF32 dots) and one 16-bit type, bfloat16 and float16 in
    turn; the other 16-bit type under ``slow`` (the two lower alike)."""
    params, half = [], (jnp.bfloat16, np.float16)
    for i, case in enumerate(sorted(CASES)):
        for dtype, marks in (
            (np.float32, ()),
            (half[i % 2], ()),
            (half[1 - i % 2], (pytest.mark.slow,)),
        ):
            params.append(
                pytest.param(case, dtype, marks=marks, id=f"{case}-{np.dtype(dtype).name}")
            )
    return params


@pytest.mark.parametrize("case,dtype", _lowering_params())
def test_lowers_for_cuda(case, dtype):
    """Forward and both gradients run the Triton lowering (block shapes, ops)."""
    text = _lower_for_cuda(_spec(*CASES[case], dtype=dtype))
    assert "xla.gpu.triton" in text


@pytest.mark.parametrize("precision", [lax.Precision.DEFAULT, lax.Precision.HIGHEST])
def test_lowers_float32_precisions(precision):
    """TF32 (DEFAULT / HIGH) and full float32 (HIGHEST) dots both lower."""
    lhs, rhs, kw = CASES["dense2d_same"]
    text = _lower_for_cuda(_spec(lhs, rhs, dict(kw, precision=precision)))
    assert "xla.gpu.triton" in text


def test_force_interpret_runs_the_interpreter_for_every_platform():
    spec = _spec(*CASES["depthwise"])
    x, w, ct = _operands(spec)
    pt.force_interpret(True)
    try:
        text = _lower_for_cuda(spec)
        got = _forward_and_grads(pt.conv, spec)(x, w, ct)
    finally:
        pt.force_interpret(False)
    assert "xla.gpu.triton" not in text  # the interpreter is plain XLA
    want = _reference_forward_and_grads(spec, x, w, ct)
    for a, b in zip(got, want):
        assert relative_error(a, b) <= tolerance(np.float32)
    assert "xla.gpu.triton" in _lower_for_cuda(spec)


def test_lowers_vmap_and_fused_epilogue_for_cuda():
    spec = _spec(*CASES["dense2d_same"])
    x, w, _ = _operands(spec)
    b = jnp.zeros((spec.out_features,), np.float32)
    xs = jnp.stack([x, x])
    f = jax.vmap(lambda a: pt.conv(a, w, spec, bias=b, activation=jax.nn.silu))
    text = (
        jax.jit(jax.grad(lambda a: jnp.sum(f(a))))
        .trace(xs)
        .lower(lowering_platforms=("cuda",))
        .as_text()
    )
    assert "xla.gpu.triton" in text


# --------------------------------------------------------------------------------------
# On a GPU (pytest -m gpu): the compiled kernels
# --------------------------------------------------------------------------------------


def _has_gpu() -> bool:
    try:
        return bool(jax.devices("gpu"))
    except RuntimeError:
        return False


gpu = pytest.mark.skipif(not _has_gpu(), reason="needs a CUDA GPU")


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "bfloat16", "float16"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_gpu_classes(case, dtype):
    lhs, rhs, kw = CASES[case]
    kw = dict(kw, precision=lax.Precision.HIGHEST) if dtype == np.float32 else kw
    with jax.default_device(jax.devices("gpu")[0]):
        check_against_reference(_spec(lhs, rhs, kw, dtype=dtype))


@pytest.mark.gpu
@gpu
@examples(12, deadline=None)
@given(spec=conv_specs(dtypes=(jnp.bfloat16, np.float16)))
def test_gpu_random_configurations(spec):
    with jax.default_device(jax.devices("gpu")[0]):
        check_against_reference(spec, seed=6)


@pytest.mark.gpu
@gpu
def test_gpu_tf32_default_precision():
    """float32 at DEFAULT precision runs TF32 dots: close to, not equal to, float32."""
    spec = _spec((4, 16, 16, 64), (3, 3, 64, 64), dict(padding="SAME"))
    x, w, _ = _operands(spec)
    with jax.default_device(jax.devices("gpu")[0]):
        got = pt.conv(x, w, spec)
        want = _reference(x, w, spec)
    assert relative_error(got, want) <= 5e-3


# --------------------------------------------------------------------------------------
# The prepared GPU check script, dry-run on this CPU
# --------------------------------------------------------------------------------------


def test_gpu_check_script_dry_run(tmp_path):
    """``benchmarks/gpu_check.py --dry-run`` times one tiny layer both ways (interpret
    mode here) and writes its JSON and table."""
    import importlib.util
    import json
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"
    module_spec = importlib.util.spec_from_file_location("gpu_check", path)
    gpu_check = importlib.util.module_from_spec(module_spec)
    sys.modules["gpu_check"] = gpu_check  # dataclasses look their module up
    module_spec.loader.exec_module(gpu_check)
    rc = gpu_check.main(
        [
            "--dry-run",
            "--skip-tests",
            "--families",
            "unet_transposed",
            "--dtypes",
            "bfloat16",
            "--repeats",
            "1",
            "--out",
            str(tmp_path),
        ]
    )
    assert rc == 0
    result = json.loads((tmp_path / "gpu_check_dryrun.json").read_text())
    rows = result["rows"]
    assert {(r["implementation"], r["mode"]) for r in rows} == {
        (i, m) for i in ("pallas_triton", "xla") for m in ("forward", "forward+backward")
    }
    assert all(r["median_s"] > 0 and r["speedup_vs_lax"] > 0 for r in rows)
    # timed as two convolutions per program, and one per call beside it
    assert all(r["copies"] == 2 and r["one_call_s"] > 0 for r in rows)
    assert result["dispatch_floor_s"] > 0
    assert "| unet_transposed |" in (tmp_path / "gpu_check_dryrun.md").read_text()


@pytest.mark.slow  # 35 s on 2 cores; the GPU check script's dry run above stays in the suite
def test_gpu_variants_script_dry_run(tmp_path):
    """``benchmarks/gpu_variants.py --dry-run`` times one variant against lax on the tiny
    grouped and depthwise layers (interpret mode here), checks each forward, and writes
    its JSON and table."""
    import importlib.util
    import json
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_variants.py"
    module_spec = importlib.util.spec_from_file_location("gpu_variants", path)
    gpu_variants = importlib.util.module_from_spec(module_spec)
    sys.modules["gpu_variants"] = gpu_variants
    module_spec.loader.exec_module(gpu_variants)
    argv = ["--dry-run", "--variants", "blockdiag32", "--repeats", "1", "--out", str(tmp_path)]
    assert gpu_variants.main(argv) == 0
    rows = json.loads((tmp_path / "gpu_variants_dryrun.json").read_text())["rows"]
    assert {r["variant"] for r in rows} == {"lax", "blockdiag32"}
    forward = [r for r in rows if r["mode"] == "forward"]
    assert forward and all(r["relative_error"] < 1e-2 for r in forward)
    assert "| g32_56x56x128 | forward |" in (tmp_path / "gpu_variants_dryrun.md").read_text()


@pytest.mark.slow  # ~30 s on 2 cores
def test_gpu_precision_script_dry_run(tmp_path):
    """``benchmarks/gpu_precision.py --dry-run`` runs each dot precision on a tiny layer
    (interpret mode here: the TF32 preset is recorded as an error, XLA:CPU has no TF32)
    and checks each result against lax at HIGHEST."""
    import importlib.util
    import json
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_precision.py"
    module_spec = importlib.util.spec_from_file_location("gpu_precision", path)
    gpu_precision = importlib.util.module_from_spec(module_spec)
    sys.modules["gpu_precision"] = gpu_precision
    module_spec.loader.exec_module(gpu_precision)
    argv = ["--dry-run", "--layers", "conv4_14x14x256", "--out", str(tmp_path)]
    assert gpu_precision.main(argv) == 0
    rows = json.loads((tmp_path / "gpu_precision.json").read_text())["rows"]
    timed = {(r["implementation"], r["precision"]): r for r in rows if "ms" in r}
    assert set(timed) >= {("xla", "highest"), ("xla", "default"), ("pallas_triton", "highest")}
    assert all(r["relative_error_vs_lax_highest"] < 1e-5 for r in timed.values())
