"""``"cpu_direct"``: the C++ grouped/depthwise loop called through XLA's FFI, against lax.

Forward, both gradients (the input gradient runs the same loop on the transposed spec,
input dilation included; the kernel gradient its own loop), forward mode and second
order, vmap, random configurations, and the reasons it declines a spec."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st
from jax import lax
from params import examples
from strategies import conv_specs, random_operands

import jaxconv
from jaxconv._src import dispatch
from jaxconv._src.impl import cpu_direct
from jaxconv._src.reference import reference_conv, relative_error, tolerance
from jaxconv._src.spec import ConvSpec, default_dimension_numbers

pytestmark = pytest.mark.skipif(
    cpu_direct.library()[1] is not None, reason=f"cpu_direct unavailable: {cpu_direct.library()[1]}"
)

# name: (lhs NHWC / NWC / NDHWC, rhs, strides, padding, groups, rhs dilation, lhs dilation)
CASES = {
    "depthwise_3x3_s2": ((2, 9, 10, 32), (3, 3, 1, 32), (2, 2), "SAME", 32, None, None),
    "depthwise_multiplier": ((2, 7, 6, 5), (3, 3, 1, 15), (1, 1), "SAME", 5, None, None),
    "grouped_16_per_group": ((1, 6, 7, 64), (3, 3, 16, 64), (1, 1), "SAME", 4, None, None),
    "grouped_strided_dilated": ((2, 9, 10, 64), (3, 3, 4, 64), (2, 1), "SAME", 16, (1, 2), None),
    "grouped_crops": ((2, 9, 10, 48), (3, 3, 2, 72), (1, 1), ((2, 0), (1, -1)), 24, None, None),
    "input_dilated_grouped": (
        (2, 5, 6, 12),
        (3, 3, 3, 8),
        (1, 1),
        ((2, 1), (1, 2)),
        4,
        None,
        (2, 2),
    ),
    "depthwise_1d_s3": ((2, 12, 40), (5, 1, 40), (3,), "SAME", 40, None, None),
    "grouped_3d": ((1, 5, 6, 7, 32), (3, 3, 3, 2, 32), (1, 1, 1), "SAME", 16, None, None),
    "depthwise_7x7": ((2, 9, 20, 17), (7, 7, 1, 17), (1, 1), "SAME", 17, None, None),
    # 7 columns on rows of at most 14: the wide kernels' contiguous slices (ConvNeXt 14x14)
    "depthwise_7x7_narrow_row": ((2, 9, 14, 24), (7, 7, 1, 24), (1, 1), "SAME", 24, None, None),
    # every register blocking of the C++ forward: lanes of 1-4 vectors, 1-16 outputs/group
    "depthwise_four_vectors": ((1, 5, 9, 64), (3, 3, 1, 64), (1, 1), "SAME", 64, None, None),
    "depthwise_three_vectors": ((1, 5, 9, 48), (3, 3, 1, 48), (2, 1), "VALID", 48, None, None),
    "grouped_4_out_two_vectors": ((1, 5, 6, 64), (3, 3, 2, 128), (1, 1), "SAME", 32, None, None),
    "grouped_2_out": ((1, 5, 6, 8), (3, 3, 2, 8), (1, 1), "SAME", 4, None, None),
    "depthwise_31x31_on_5x6": ((1, 5, 6, 16), (31, 31, 1, 16), (1, 1), "SAME", 16, None, None),
    # wide kernels' blocks: rows wider than a block, uneven pads and crops, 2 vectors
    "depthwise_9x9_wide_row": ((1, 4, 37, 16), (9, 9, 1, 16), (1, 1), "SAME", 16, None, None),
    "depthwise_11x11_uneven": (
        (1, 5, 20, 32),
        (11, 11, 1, 32),
        (1, 1),
        ((5, 5), (2, 7)),
        32,
        None,
        None,
    ),
    "depthwise_13x13_crop": (
        (1, 6, 30, 16),
        (13, 13, 1, 16),
        (1, 1),
        ((6, 6), (-2, 9)),
        16,
        None,
        None,
    ),
    # narrow rows with a large kernel slice: several rows per block (spanning images),
    # crops, strides, kernel dilation, one-phase input dilation, a kernel over 16 MB
    "dense_narrow_rows_crops": (
        (3, 5, 4, 256),
        (3, 3, 256, 32),
        (1, 1),
        ((1, 0), (2, -1)),
        1,
        None,
        None,
    ),
    "dense_narrow_rows_strided": ((2, 9, 9, 256), (3, 3, 256, 16), (2, 2), "SAME", 1, (1, 2), None),
    "dense_narrow_rows_input_dilated": (
        (1, 4, 4, 256),
        (3, 3, 256, 16),
        (2, 2),
        ((1, 1), (1, 1)),
        1,
        None,
        (2, 2),
    ),
    "dense_narrow_rows_kernel_runs": (
        (1, 3, 5, 768),
        (3, 3, 768, 768),
        (1, 1),
        "SAME",
        1,
        None,
        None,
    ),
    # wide depthwise blocks of 16 and 12 columns, 3-D
    "depthwise_9x9_32_columns": ((1, 10, 40, 16), (9, 9, 1, 16), (1, 1), "VALID", 16, None, None),
    "depthwise_9x9x9_3d": ((1, 3, 4, 18, 16), (9, 9, 9, 1, 16), (1, 1, 1), "SAME", 16, None, None),
    # the depthwise sliding blocks: widths 3/5/7, strides 1/2, 1-4 vectors, edges and crops
    "depthwise_3x3_s2_four_vectors": (
        (1, 8, 11, 64),
        (3, 3, 1, 64),
        (2, 2),
        ((0, 1), (1, 1)),
        64,
        None,
        None,
    ),
    "depthwise_5x5_s2_one_vector": ((1, 9, 13, 16), (5, 5, 1, 16), (2, 2), "SAME", 16, None, None),
    "depthwise_7x7_s2_crop": (
        (1, 12, 15, 32),
        (7, 7, 1, 32),
        (2, 2),
        ((3, 1), (-1, 2)),
        32,
        None,
        None,
    ),
    "depthwise_3x3_wide_row": ((1, 4, 40, 16), (3, 3, 1, 16), (1, 1), "SAME", 16, None, None),
    # every block for several runs of vectors (the general block: kernel dilation)
    "depthwise_dilated_48": ((1, 7, 9, 48), (3, 3, 1, 48), (1, 1), "SAME", 48, (2, 2), None),
    # input gradient: phases of every width 1-4, and a phase reading only inserted zeros
    "depthwise_1x1_s2": ((1, 5, 7, 16), (1, 1, 1, 16), (2, 2), "VALID", 16, None, None),
    # channels-last loop (8k outputs per group): 8- and 16-lane vectors, 1-16
    # input channels at a time, edges, strides (input-dilated input gradient), crops
    "channels_last_m16_strided": ((2, 9, 10, 64), (3, 3, 16, 64), (2, 2), "SAME", 4, None, None),
    "channels_last_m24_dilated_crops": (
        (1, 8, 9, 6),
        (3, 3, 3, 48),
        (1, 1),
        ((2, 0), (1, -1)),
        2,
        (2, 1),
        None,
    ),
    "channels_last_m32_1d": ((2, 12, 8), (5, 4, 64), (1,), "SAME", 2, None, None),
    "channels_last_3d": ((1, 4, 5, 6, 32), (3, 3, 3, 16, 32), (1, 1, 1), "SAME", 2, None, None),
    "channels_last_wide_row": ((1, 3, 30, 32), (3, 3, 8, 64), (1, 1), "SAME", 4, None, None),
    "depthwise_multiplier_16": ((1, 6, 7, 3), (3, 3, 1, 48), (1, 1), "SAME", 3, None, None),
    # input-dilated channels-last forward: a phase per residue of the output columns
    "channels_last_input_dilated": (
        (1, 5, 6, 16),
        (3, 3, 8, 32),
        (1, 1),
        ((2, 1), (1, 2)),
        2,
        None,
        (2, 3),
    ),
    # dense (one group): the channels-last loops, outputs rounded up to a multiple of 8
    "dense_3x3": ((2, 6, 7, 8), (3, 3, 8, 16), (1, 1), "SAME", 1, None, None),
    "dense_transposed_4x4_s2": (
        (2, 5, 6, 16),
        (4, 4, 16, 8),
        (1, 1),
        ((2, 2), (2, 2)),
        1,
        None,
        (2, 2),
    ),
    "dense_transposed_1d_k8_s4": ((2, 9, 16), (8, 16, 8), (1,), ((5, 5),), 1, None, (4,)),
    # a row longer than the kernel gradient's tile of columns (64 here), strided, dilated
    "dense_1d_row_tiles": ((1, 600, 128), (2, 128, 128), (2,), ((3, 0),), 1, (3,), None),
    # input dilation with strides: 3 phases 2 input columns apart, 2 phases 3 apart
    "dense_input_dilated_strided": (
        (1, 7, 8, 8),
        (3, 3, 8, 16),
        (2, 3),
        ((1, 2), (0, 1)),
        1,
        (1, 2),
        (3, 2),
    ),
    # 3 input features: the input gradient computes 8 outputs and keeps 3
    "dense_3_out_strided": ((2, 6, 7, 8), (3, 3, 8, 3), (2, 2), "SAME", 1, None, None),
    "dense_stem_3_in": ((1, 9, 10, 3), (7, 7, 3, 16), (2, 2), "SAME", 1, None, None),
    # rows wide enough for interior blocks: a kernel row's taps as one run of channels
    "dense_kernel_rows_merged": ((2, 5, 20, 6), (3, 3, 6, 32), (1, 1), "SAME", 1, None, None),
    "dense_stem_rows_merged": ((1, 5, 30, 3), (7, 7, 3, 16), (2, 2), "SAME", 1, None, None),
    "dense_3d": ((1, 4, 5, 6, 8), (3, 3, 3, 8, 8), (1, 1, 1), "SAME", 1, None, None),
    # pointwise: the forward and input gradient one matmul each, the kernel gradient here
    "dense_pointwise": ((2, 5, 6, 16), (1, 1, 16, 8), (1, 1), "VALID", 1, None, None),
    # kernels over 512 KB: the kernel gradient split over the result, not the rows, each
    # tap's 22-24 rows in two tiles (a task's 64 KB of inputs and cotangents: 12-17 rows)
    "dense_large_kernel": ((2, 12, 5, 128), (3, 3, 128, 128), (1, 1), "SAME", 1, None, None),
    # 8-16 channels per group on AVX2: each group's image copied to a contiguous plane
    # (2 x 5 blocks of 8 channels on 14 columns, odd rows; odd group counts, column
    # stride 2 and crops; row dilation; 1-D), where images x groups give each of 2
    # threads two tasks
    "grouped_plane_8_per_group": ((2, 7, 14, 64), (3, 3, 8, 64), (1, 1), "SAME", 8, None, None),
    "grouped_plane_odd_groups_crops": (
        (3, 6, 9, 24),
        (3, 3, 8, 24),
        (1, 2),
        ((2, 0), (1, -1)),
        3,
        None,
        None,
    ),
    "grouped_plane_row_dilated": ((4, 8, 8, 32), (3, 3, 16, 32), (1, 1), "SAME", 2, (2, 1), None),
    "grouped_plane_1d": ((2, 20, 32), (3, 8, 32), (1,), "SAME", 4, None, None),
    "grouped_large_kernel_input_dilated": (
        (1, 5, 4, 256),
        (3, 3, 64, 256),
        (1, 2),
        ((1, 1), (2, 0)),
        4,
        None,
        (2, 1),
    ),
}


def _setup(case):
    xs, ws, strides, padding, groups, rhs_dil, lhs_dil = CASES[case]
    n = len(xs) - 2
    spec = ConvSpec.create(
        xs,
        ws,
        strides,
        padding,
        lhs_dilation=lhs_dil,
        rhs_dilation=rhs_dil,
        dimension_numbers=default_dimension_numbers(n),
        feature_group_count=groups,
    )
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal(xs), jnp.float32)
    w = jnp.asarray(rng.standard_normal(ws), jnp.float32)
    kw = {**spec.lax_kwargs(), "precision": lax.Precision.HIGHEST}
    ref = lambda x, w: lax.conv_general_dilated(x, w, **kw)
    return spec, x, w, ref


def close(a, b, tol=2e-5):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = max(np.max(np.abs(b)), 1e-30)
    assert np.max(np.abs(a - b)) / scale <= tol, np.max(np.abs(a - b)) / scale


@pytest.mark.parametrize("case", sorted(CASES))
def test_forward_and_gradients_match_lax(case):
    spec, x, w, ref = _setup(case)
    assert cpu_direct.supports(spec) is None
    f = lambda x, w: cpu_direct.conv(x, w, spec)
    close(jax.jit(f)(x, w), ref(x, w))
    ct = jnp.asarray(np.random.default_rng(1).standard_normal(spec.out_shape), jnp.float32)
    loss = lambda fn: lambda x, w: jnp.sum(fn(x, w) * ct)
    got = jax.jit(jax.grad(loss(f), (0, 1)))(x, w)
    want = jax.grad(loss(ref), (0, 1))(x, w)
    for a, b in zip(got, want):
        close(a, b)


def test_outputs_advised_for_huge_pages_are_computed_whole():
    # 8 MB output and input gradient: their 2 MB-aligned interiors are advised for
    # transparent huge pages before the loops write them (outputs from 4 MB)
    spec = ConvSpec.create(
        (1, 64, 64, 512),
        (3, 3, 1, 512),
        (1, 1),
        "SAME",
        dimension_numbers=default_dimension_numbers(2),
        feature_group_count=512,
    )
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal(spec.lhs_shape), jnp.float32)
    w = jnp.asarray(rng.standard_normal(spec.rhs_shape), jnp.float32)
    ref = lambda x: lax.conv_general_dilated(x, w, **spec.lax_kwargs())
    y, vjp = jax.vjp(lambda x: cpu_direct.conv(x, w, spec), x)
    y_ref, vjp_ref = jax.vjp(ref, x)
    assert y.size * 4 == 8 << 20
    close(y, y_ref)
    close(vjp(y)[0], vjp_ref(y_ref)[0])


@pytest.mark.parametrize(
    "case, layouts",
    [
        # 4 outputs per group: groups in the lanes for all three loops
        ("grouped_strided_dilated", {"forward": 2, "kernel_grad": 1}),
        # 16 in, 16 out per group: all three on the channels-last operands, no transposes
        ("channels_last_m16_strided", {"forward_nhwc": 2, "kernel_grad_nhwc": 1}),
        # 1 in, 16 out: the forward and kernel gradient channels-last, the input gradient
        # (16 in, 1 out per group) with the groups in the lanes
        ("depthwise_multiplier_16", {"forward_nhwc": 1, "kernel_grad_nhwc": 1, "forward": 1}),
        # dense: all three channels-last; pointwise: XLA's matmuls and the kernel gradient
        ("dense_transposed_4x4_s2", {"forward_nhwc": 2, "kernel_grad_nhwc": 1}),
        ("dense_pointwise", {"kernel_grad_nhwc": 1}),
        ("dense_stem_3_in", {"forward_nhwc": 2, "kernel_grad_nhwc": 1}),
    ],
)
def test_the_loops_run_in_the_compiled_program(case, layouts):
    spec, x, w, _ = _setup(case)
    f = lambda x, w: jnp.sum(cpu_direct.conv(x, w, spec) ** 2)
    text = jax.jit(jax.grad(f, (0, 1))).lower(x, w).as_text()
    # forward, input gradient (the forward loop on the transposed spec), kernel gradient
    for target in ("forward", "kernel_grad", "forward_nhwc", "kernel_grad_nhwc"):
        want = layouts.get(target, 0)
        assert text.count(f"@jaxconv_cpu_direct_{target}(") == want, target
    if "forward" not in layouts:  # only the (small) kernel is transposed
        for shape in (x.shape, spec.out_shape):
            operand = "(tensor<" + "x".join(map(str, shape)) + "xf32>) ->"
            assert not [l for l in text.splitlines() if "transpose" in l and operand in l]


@pytest.mark.parametrize("case", ["depthwise_3x3_s2", "grouped_16_per_group"])
def test_forward_mode_second_order_and_vmap(case):
    spec, x, w, ref = _setup(case)
    f = lambda x, w: cpu_direct.conv(x, w, spec)
    t = (jnp.cos(x), jnp.sin(w))
    close(jax.jit(lambda x, w: jax.jvp(f, (x, w), t)[1])(x, w), jax.jvp(ref, (x, w), t)[1])
    loss = lambda fn: lambda x, w: jnp.sum(jnp.sin(fn(x, w)))
    mixed = lambda fn: jax.grad(lambda w: jnp.sum(jax.grad(loss(fn))(x, w) ** 2))
    close(jax.jit(mixed(f))(w), mixed(ref)(w), tol=1e-4)
    xs = jnp.stack([x, 2 * x, -x])
    close(jax.vmap(f, (0, None))(xs, w), jax.vmap(ref, (0, None))(xs, w))
    ws = jnp.stack([w, -w])
    close(jax.jit(jax.vmap(f, (None, 0)))(x, ws), jax.vmap(ref, (None, 0))(x, ws))


@examples(5, deadline=None)
@given(spec=conv_specs(ranks=(1, 2, 3)))
@example(  # lax's input gradient is wrong here (see below)
    spec=ConvSpec.create(
        (1, 2, 1, 2),
        (4, 1, 2, 3),
        (1, 1),
        ((1, 1), (3, 1)),
        lhs_dilation=(1, 2),
        dimension_numbers=lax.ConvDimensionNumbers((0, 1, 2, 3), (0, 1, 2, 3), (0, 1, 2, 3)),
        feature_group_count=2,
    )
)
def test_random_grouped_configurations(spec):
    assume(spec.batch_group_count == 1)
    x, w = random_operands(spec, 0)
    out = jax.jit(lambda a, b: dispatch.run(a, b, spec, "cpu_direct"))(x, w)
    ref = reference_conv(x, w, spec)
    assert relative_error(out, ref) <= tolerance(spec.out_dtype)
    # gradients through the dispatch (boundary padding included) against im2col's (JAX's
    # autodiff of gathers): lax's own input gradient is wrong on XLA:CPU for some
    # input-dilated specs (its transposed convolution has mixed-sign pads), e.g.
    # lhs (1, 2, 1, 2) NCHW, rhs (4, 1, 2, 3) OIHW, pads ((1, 1), (3, 1)), lhs_dilation
    # (1, 2), 2 groups: lax 2.78 where finite differences, im2col, taps and cpu_direct
    # give 1.67 (openxla/xla#48713: f32 convolutions with a negative low pad)
    ct = jnp.asarray(np.random.default_rng(2).standard_normal(spec.out_shape), jnp.float32)
    grad = lambda impl: jax.grad(lambda a, b: jnp.sum(dispatch.run(a, b, spec, impl) * ct), (0, 1))(
        x, w
    )
    for a, b in zip(jax.jit(lambda: grad("cpu_direct"))(), grad("im2col")):
        assert relative_error(a, b) <= 1e-4


@examples(3, deadline=None)
@given(data=st.data())
def test_random_dense_geometries(data):
    # dense specs (one group, 3-16 outputs, the channels-last loops with outputs rounded
    # up to a multiple of 8): strides, both dilations, pads and crops, 1-3-D
    n = data.draw(st.sampled_from([1, 2, 3]))
    draw = lambda lo, hi: tuple(data.draw(st.integers(lo, hi)) for _ in range(n))
    window, sizes = draw(1, 2 if n == 3 else 3), draw(1, 4 if n == 3 else 7)
    lhs_dil = tuple(data.draw(st.sampled_from([1, 1, 2, 3])) for _ in range(n))
    pads = tuple(zip(draw(-1, 3), draw(-1, 3)))
    C, O = data.draw(st.sampled_from([3, 8])), data.draw(st.sampled_from([3, 8, 13, 16]))
    try:
        spec = ConvSpec.create(
            (2, *sizes, C),
            (*window, C, O),
            draw(1, 3),
            pads,
            lhs_dilation=lhs_dil,
            rhs_dilation=draw(1, 2),
            dimension_numbers=default_dimension_numbers(n),
        )
    except ValueError:
        assume(False)
    assert cpu_direct.supports(spec) is None
    x, w = random_operands(spec, 0)
    out = jax.jit(lambda a, b: cpu_direct.conv(a, b, spec))(x, w)
    assert relative_error(out, reference_conv(x, w, spec)) <= tolerance(spec.out_dtype)
    ct = jnp.asarray(np.random.default_rng(2).standard_normal(spec.out_shape), jnp.float32)
    grad = lambda impl: jax.grad(lambda a, b: jnp.sum(dispatch.run(a, b, spec, impl) * ct), (0, 1))(
        x, w
    )
    for a, b in zip(jax.jit(lambda: grad("cpu_direct"))(), grad("im2col")):
        assert relative_error(a, b) <= 1e-4


def test_declines_what_it_does_not_compute():
    def spec(lhs, rhs, **kw):
        dn = default_dimension_numbers(2)
        return ConvSpec.create(lhs, rhs, (1, 1), "SAME", dimension_numbers=dn, **kw)

    base = spec((1, 5, 5, 8), (3, 3, 1, 8), feature_group_count=8)
    assert cpu_direct.supports(base) is None
    assert "float32" in cpu_direct.supports(base.replace(lhs_dtype=np.dtype(jnp.bfloat16)))
    assert cpu_direct.supports(spec((1, 5, 5, 8), (3, 3, 8, 3))) is None  # dense
    batch = spec((4, 5, 5, 8), (3, 3, 8, 4), batch_group_count=2)
    assert cpu_direct.supports(batch) is not None
    with pytest.raises(NotImplementedError, match="cpu_direct: float32 operands only"):
        jaxconv.conv_general_dilated(
            jnp.ones((1, 5, 5, 8), jnp.bfloat16),
            jnp.ones((3, 3, 8, 4), jnp.bfloat16),
            (1, 1),
            "SAME",
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            implementation="cpu_direct",
        )


def _build_under(monkeypatch, patch):
    """``library()`` after ``patch(monkeypatch)``; then everything is restored and the
    real library built (from the cache) and registered again."""
    patch(monkeypatch)
    cpu_direct.library.cache_clear()
    try:
        return cpu_direct.library()
    finally:
        monkeypatch.undo()
        cpu_direct.library.cache_clear()
        assert cpu_direct.library()[1] is None


def test_without_a_compiler_it_says_so(monkeypatch):
    lib, reason = _build_under(
        monkeypatch, lambda m: m.setattr(cpu_direct, "_compiler", lambda: None)
    )
    assert lib is None and "C++ compiler" in reason


def test_a_failed_build_reports_the_compiler_error(monkeypatch, tmp_path):
    bad = tmp_path / "cpu_direct.cc"
    bad.write_text("this is not C++\n")

    def patch(m):
        m.setenv("JAXCONV_CACHE_DIR", str(tmp_path / "cache"))
        m.setattr(cpu_direct, "_SOURCE", bad)

    lib, reason = _build_under(monkeypatch, patch)
    assert lib is None and "compiling cpu_direct.cc failed" in reason
    assert not list((tmp_path / "cache").glob("*.so"))  # nothing half-written is kept


def test_an_unwritable_cache_is_a_reason_not_a_crash(monkeypatch, tmp_path):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("")

    def patch(m):
        m.setenv("JAXCONV_CACHE_DIR", str(blocker / "cache"))
        m.setattr(cpu_direct, "_FLAGS", cpu_direct._FLAGS + ("-DJAXCONV_NEW_KEY",))

    lib, reason = _build_under(monkeypatch, patch)
    assert lib is None and "JAXCONV_CACHE_DIR" in reason


@pytest.mark.parametrize("case", ["depthwise_3x3_s2", "dense_3x3", "dense_transposed_4x4_s2"])
def test_automatic_choice_on_the_cpu_takes_it(case):
    spec, *_ = _setup(case)
    assert jaxconv.auto_order(spec, "cpu")[0] == "cpu_direct"
    assert jaxconv.auto_order(spec, "gpu") == ["xla"]
    assert dispatch.select(spec).name == "cpu_direct"
    # where it declines (bfloat16), the XLA rules choose
    other = spec.replace(lhs_dtype=np.dtype(jnp.bfloat16), rhs_dtype=np.dtype(jnp.bfloat16))
    assert dispatch.select(other).name != "cpu_direct"


@pytest.mark.parametrize("case", ["dense_transposed_4x4_s2", "dense_transposed_1d_k8_s4"])
def test_xla_direct_grad_matches_lax_and_runs_the_kernel_gradient_loop(case):
    """``"xla_direct_grad"``: XLA's sub-pixel forward and input gradient with this
    module's kernel-gradient loop; value, both gradients, a JVP and a mixed second
    derivative against lax."""
    spec, x, w, ref = _setup(case)
    f = lambda x, w: dispatch.run(x, w, spec, "xla_direct_grad")
    close(jax.jit(f)(x, w), ref(x, w))
    ct = jnp.asarray(np.random.default_rng(1).standard_normal(spec.out_shape), jnp.float32)
    loss = lambda fn: lambda x, w: jnp.sum(fn(x, w) * ct)
    grads = jax.jit(jax.grad(loss(f), (0, 1)))
    for a, b in zip(grads(x, w), jax.grad(loss(ref), (0, 1))(x, w)):
        close(a, b)
    text = grads.lower(x, w).as_text()
    # the kernel gradient is the C++ loop; the forward and input gradient are XLA's
    assert text.count("@jaxconv_cpu_direct_kernel_grad_nhwc(") == 1
    assert "@jaxconv_cpu_direct_forward" not in text
    t = (jnp.cos(x), jnp.sin(w))
    close(jax.jit(lambda x, w: jax.jvp(f, (x, w), t)[1])(x, w), jax.jvp(ref, (x, w), t)[1])
    mixed = lambda fn: jax.grad(lambda w: jnp.sum(jax.grad(loss(fn))(x, w) ** 2))
    close(jax.jit(mixed(f))(w), mixed(ref)(w), tol=1e-4)


def test_vector_lanes_reports_the_compiled_width():
    assert cpu_direct.vector_lanes() in (8, 16)


@pytest.mark.parametrize("lanes", [8, 16])
def test_avx2_rule_sends_dense_layers_outside_its_block_elsewhere(monkeypatch, lanes):
    monkeypatch.setattr(cpu_direct, "vector_lanes", lambda: lanes)
    dn = ("NHWC", "HWIO", "NHWC")

    def spec(cin, groups=1, window=(3, 3), out=128):
        return jaxconv.ConvSpec.create(
            (1, 8, 8, cin),
            (*window, cin // groups, out),
            1,
            "SAME",
            dimension_numbers=dn,
            feature_group_count=groups,
        )

    def signal(out):
        return jaxconv.ConvSpec.create(
            (1, 64, 128), (3, 128, out), 1, "SAME", dimension_numbers=("NWC", "WIO", "NWC")
        )

    volume = jaxconv.ConvSpec.create(
        (1, 4, 8, 8, 128),
        (3, 3, 3, 128, 128),
        1,
        "SAME",
        dimension_numbers=("NDHWC", "DHWIO", "NDHWC"),
    )
    transposed = jaxconv.ConvSpec.create(
        (1, 8, 8, 128),
        (4, 4, 128, 64),
        1,
        ((2, 2), (2, 2)),
        lhs_dilation=(2, 2),
        dimension_numbers=dn,
    )
    # output channels a multiple of 16: the 6 x 16 block on AVX2, 16-float vectors alike
    for blocked in (spec(128), signal(128), volume, transposed, spec(64, out=24)):
        assert jaxconv.auto_order(blocked, "cpu")[0] == "cpu_direct"
    # pointwise: cpu_direct up to 512 KB of kernel; larger ones XLA's dot each way on AVX2
    assert jaxconv.auto_order(spec(256, window=(1, 1), out=512), "cpu")[0] == "cpu_direct"
    pointwise = spec(1024, window=(1, 1), out=256)
    assert (jaxconv.auto_order(pointwise, "cpu")[0] == "cpu_direct") == (lanes == 16)
    wide = jaxconv.auto_order(spec(128, out=136), "cpu")
    assert (wide[0] == "cpu_direct") == (lanes == 16)
    if lanes == 8:  # the XLA rules: lax's forward with taps' gradients for 2-D layers
        assert wide == ["xla_taps_grad", "xla"]
        assert jaxconv.auto_order(pointwise, "cpu") == ["xla_taps_grad", "xla"]
        # lax's own kernel gradient where taps' was measured slower or not at all
        # (3-D: 17x slower on C3D's conv5a; other dtypes)
        half = spec(128, out=136).replace(
            lhs_dtype=np.dtype(jnp.bfloat16), rhs_dtype=np.dtype(jnp.bfloat16)
        )
        assert jaxconv.auto_order(half, "cpu") == ["xla"]
        assert jaxconv.auto_order(volume, "cpu")[1:] == ["xla"]
        # 1-D dense outside the block, wide or narrow: lax's forward, the C++ kernel
        # gradient
        narrow = jaxconv.ConvSpec.create(
            (1, 64, 64), (2, 64, 40), 1, "CAUSAL", dimension_numbers=("NWC", "WIO", "NWC")
        )
        for other in (signal(136), narrow):
            assert jaxconv.auto_order(other, "cpu") == ["xla_direct_grad", "xla"]
        # transposed: after cpu_direct, XLA's sub-pixel forward and input gradient with
        # the C++ kernel gradient
        assert jaxconv.auto_order(transposed, "cpu")[1:] == [
            "xla_direct_grad",
            "xla_taps_grad",
            "xla",
        ]
    assert jaxconv.auto_order(spec(64), "cpu")[0] == "cpu_direct"
    assert jaxconv.auto_order(spec(128, groups=128), "cpu")[0] == "cpu_direct"
    assert jaxconv.auto_order(spec(512, groups=32), "cpu")[0] == "cpu_direct"
