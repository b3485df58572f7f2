"""``pallas_tpu``: the Mosaic TPU convolution kernels, tested without a TPU.

* TPU interpret mode (``pltpu.InterpretParams()``, via ``tpu_interpret_mode``) on the
  CPU against the reference: forward and both gradients over named classes and random
  configurations, gradient of gradient, ``vmap``, the fused epilogue;
* lowering for TPU on this CPU machine (``lowering_platforms=("tpu",)`` runs the Pallas
  Mosaic lowering, which enforces block shapes) for every class and dtype, forward with
  the fused epilogue and both gradients;
* the block-size rule (VMEM budget, halo) and the refusals.
"""

from __future__ import annotations

from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import Phase, given
from params import examples
from strategies import conv_specs, random_operands

import jaxconv
from jaxconv._src import dispatch
from jaxconv._src.pallas_tpu import blocks
from jaxconv._src.pallas_tpu import kernel as K
from jaxconv._src.reference import reference_conv, relative_error, tolerance
from jaxconv._src.spec import ConvSpec, default_dimension_numbers

NCHW = default_dimension_numbers(2, channels_last=False)

#: Named classes: (lhs shape, rhs shape, lax-style keyword arguments), NHWC/HWIO unless
#: ``dimension_numbers`` says otherwise. Tiny: interpret mode compiles every grid loop.
#: Dense classes have ``taps * C > FOLD_MAX_LANES`` so that they take the tap-shift path;
#: ``stem`` (3 channels) takes the taps-in-lanes path.
CASES = {
    "dense1d_stride": ((2, 9, 96), (3, 96, 5), dict(window_strides=2, padding=((1, 2),))),
    "dense2d_dilated": (
        (2, 7, 8, 32),
        (3, 3, 32, 4),
        dict(window_strides=(2, 1), rhs_dilation=(1, 2), padding="SAME"),
    ),
    "dense3d": (
        (1, 4, 5, 6, 24),
        (2, 3, 2, 24, 3),
        dict(window_strides=(1, 2, 1), padding=((1, 0), (1, 1), (0, 1))),
    ),
    "grouped": ((2, 6, 6, 4), (3, 3, 2, 6), dict(padding="SAME", feature_group_count=2)),
    "depthwise": (
        (2, 6, 7, 4),
        (3, 3, 1, 8),
        dict(window_strides=2, padding=((1, 1), (0, 1)), feature_group_count=4),
    ),
    "transposed": (
        (2, 4, 5, 32),
        (3, 3, 32, 4),
        dict(lhs_dilation=(2, 2), padding=((2, 2), (1, 2))),
    ),
    "batch_groups": ((4, 5, 3), (3, 3, 4), dict(padding="SAME", batch_group_count=2)),
    "nchw_crop": (
        (2, 32, 7, 6),
        (4, 32, 3, 3),
        dict(padding=((-1, 2), (1, 1)), dimension_numbers=NCHW),
    ),
    "stem": ((2, 11, 10, 3), (3, 3, 3, 6), dict(window_strides=2, padding="SAME")),
    # no halo: 1x1 and patchifying windows read their blocks without a halo copy
    "pointwise": ((2, 5, 6, 8), (1, 1, 8, 12), {}),
    "patchify": ((2, 6, 8, 96), (2, 2, 96, 5), dict(window_strides=2)),
}

#: Classes also run forward and backward in bfloat16 (all of them lower in both dtypes).
BF16_CASES = ("dense2d_dilated", "depthwise")


def _spec(name: str, dtype=np.float32, **extra) -> ConvSpec:
    lhs_shape, rhs_shape, kwargs = CASES[name]
    kwargs = dict(kwargs, **extra)
    dn = kwargs.pop("dimension_numbers", default_dimension_numbers(len(lhs_shape) - 2))
    return ConvSpec.create(lhs_shape, rhs_shape, dimension_numbers=dn, lhs_dtype=dtype, **kwargs)


def tap_shifts_only():
    """Turn off the taps-in-lanes folding (random specs have few channels and would
    otherwise mostly take it)."""
    return mock.patch.object(blocks, "FOLD_MAX_LANES", 0)


@pytest.fixture
def tpu_interpret():
    with K.tpu_interpret_mode():
        yield


def _check_forward(spec: ConvSpec, seed: int = 0):
    x, w = random_operands(spec, seed)
    y = jax.jit(lambda a, b: dispatch.run(a, b, spec, K.NAME))(x, w)
    assert y.shape == spec.out_shape and y.dtype == spec.out_dtype
    err = relative_error(y, reference_conv(x, w, spec))
    assert err <= tolerance(spec.out_dtype), (str(spec), err)


def _check_gradients(spec: ConvSpec, seed: int = 0):
    x, w = random_operands(spec, seed)
    g = jnp.asarray(np.random.default_rng(seed + 1).standard_normal(spec.out_shape), spec.out_dtype)

    def grads(fn):
        return jax.jit(lambda a, b, c: jax.vjp(fn, a, b)[1](c))(x, w, g)

    got = grads(lambda a, b: dispatch.run(a, b, spec, K.NAME))
    want = grads(lambda a, b: reference_conv(a, b, spec).astype(spec.out_dtype))
    for name, a, b in zip(("lhs", "rhs"), got, want):
        assert a.shape == b.shape and a.dtype == b.dtype, name
        err = relative_error(a, b)
        assert err <= 2 * tolerance(spec.out_dtype), (name, str(spec), err)


# --------------------------------------------------------------------------------------
# TPU interpret mode against the reference
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(CASES))
def test_forward_named(tpu_interpret, name):
    _check_forward(_spec(name))


@pytest.mark.parametrize("name", BF16_CASES)
def test_forward_bfloat16(tpu_interpret, name):
    _check_forward(_spec(name, jnp.bfloat16))
    _check_forward(_spec(name, jnp.bfloat16, preferred_element_type=np.float32))


#: Default-suite hypothesis runs: fixed examples, no shrinking (each example compiles
#: interpreted kernels; the failing example is printed for ``@reproduce_failure``).
FAST = dict(derandomize=True, phases=(Phase.explicit, Phase.generate))


@examples(5, **FAST)
@given(spec=conv_specs(max_size=6))
def test_forward_random(spec):
    with K.tpu_interpret_mode(), tap_shifts_only():
        _check_forward(spec)


@pytest.mark.parametrize(
    "name",
    ["dense2d_dilated", "depthwise", "transposed", "batch_groups", "stem", "patchify", "pointwise"],
)
def test_gradients_named(tpu_interpret, name):
    _check_gradients(_spec(name))


def test_gradients_bfloat16(tpu_interpret):
    _check_gradients(_spec("grouped", jnp.bfloat16))


@examples(3, **FAST)
@given(spec=conv_specs(ranks=(1, 2), max_size=5))
def test_gradients_random(spec):
    with K.tpu_interpret_mode(), tap_shifts_only():
        _check_gradients(spec)


def test_grad_of_grad(tpu_interpret):
    spec = ConvSpec.create(
        (2, 9, 4),
        (3, 2, 6),
        2,
        ((1, 1),),
        feature_group_count=2,
        dimension_numbers=default_dimension_numbers(1),
    )
    x, w = random_operands(spec, 3)

    def outer(fn):
        def inner(a, b):
            ga, gb = jax.grad(lambda p, q: jnp.sum(jnp.sin(fn(p, q))), argnums=(0, 1))(a, b)
            return jnp.sum(ga**2) + jnp.sum(gb * b)

        return jax.jit(jax.grad(inner, argnums=(0, 1)))(x, w)

    got = outer(lambda a, b: K.conv(a, b, spec))
    want = outer(lambda a, b: reference_conv(a, b, spec))
    for a, b in zip(got, want):
        assert relative_error(a, b) <= 1e-4


def test_vmap(tpu_interpret):
    spec = _spec("dense2d_dilated")
    x, w = random_operands(spec, 4)
    xs = jnp.stack([x, -2.0 * x, x + 1.0])
    ws = jnp.stack([w, w[::-1], 0.5 * w])
    got = jax.jit(jax.vmap(lambda a, b: K.conv(a, b, spec)))(xs, ws)
    want = jax.vmap(lambda a, b: reference_conv(a, b, spec))(xs, ws)
    assert relative_error(got, want) <= tolerance(np.float32)


def test_fused_epilogue_and_its_gradients(tpu_interpret):
    spec = _spec("depthwise")
    x, w = random_operands(spec, 5)
    bias = jnp.linspace(-1.0, 1.0, spec.out_features, dtype=jnp.float32)

    def loss(fn):
        return jax.jit(
            jax.value_and_grad(lambda a, b, c: jnp.sum(jnp.cos(fn(a, b, c))), argnums=(0, 1, 2))
        )(x, w, bias)

    got = loss(lambda a, b, c: dispatch.run(a, b, spec, K.NAME, bias=c, activation=jax.nn.gelu))
    want = loss(lambda a, b, c: jax.nn.gelu(reference_conv(a, b, spec) + c))
    assert relative_error(got[0], want[0]) <= 1e-5
    for a, b in zip(got[1], want[1]):
        assert relative_error(a, b) <= 1e-4


def test_public_api(tpu_interpret):
    x, w = random_operands(_spec("dense2d_dilated"), 6)
    got = jax.jit(
        lambda a, b: jaxconv.conv_general_dilated(
            a,
            b,
            (1, 2),
            ((1, 1), (2, 0)),
            rhs_dilation=(2, 1),
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            implementation="pallas_tpu",
        )
    )(x, w)
    want = jax.lax.conv_general_dilated(
        x,
        w,
        (1, 2),
        ((1, 1), (2, 0)),
        rhs_dilation=(2, 1),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        precision="highest",
    )
    assert relative_error(got, want) <= tolerance(np.float32)


def test_interpret_modes_stage_what_they_say():
    spec = _spec("dense1d_stride")
    x, w = random_operands(spec)
    with K.tpu_interpret_mode():
        tpu_interp = str(jax.make_jaxpr(lambda a, b: K.conv(a, b, spec))(x, w))
    plain = str(jax.make_jaxpr(lambda a, b: K.conv(a, b, spec))(x, w))
    assert "interpret=InterpretParams(" in tpu_interp and "platform_index" not in tpu_interp
    # plain: both branches staged, the Mosaic kernel (interpret=False) and the interpreter
    assert "platform_index" in plain and "InterpretParams" not in plain
    assert "interpret=False" in plain and "interpret=True" in plain


def test_platform_dependent_default_runs_the_generic_interpreter():
    """Outside ``tpu_interpret_mode`` the CPU branch of ``platform_dependent`` runs."""
    spec = _spec("dense1d_stride")
    x, w = random_operands(spec, 7)
    assert relative_error(K.conv(x, w, spec), reference_conv(x, w, spec)) <= 2e-5


# --------------------------------------------------------------------------------------
# Lowering for TPU on the CPU (Mosaic block-shape and layout rules, no TPU needed)
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, jnp.bfloat16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("name", list(CASES))
def test_lowers_for_tpu(name, dtype):
    spec = _spec(name, dtype)
    x = jax.ShapeDtypeStruct(spec.lhs_shape, dtype)
    w = jax.ShapeDtypeStruct(spec.rhs_shape, dtype)
    bias = jnp.linspace(-1.0, 1.0, spec.out_features, dtype=dtype)

    def forward(a, b):
        return K.conv(a, b, spec, bias=bias, activation=jax.nn.relu)

    def gradients(a, b):
        return jax.grad(
            lambda p, q: jnp.sum(K.conv(p, q, spec).astype(jnp.float32)), argnums=(0, 1)
        )(a, b)

    def batched(a, b):
        return jax.vmap(forward, in_axes=(None, 0))(a, jnp.stack([b, 2 * b]))

    for fn, kernels in ((forward, 1), (gradients, 2), (batched, 1)):
        text = jax.jit(fn).trace(x, w).lower(lowering_platforms=("tpu",)).as_text()
        assert text.count("tpu_custom_call") == kernels, name
        assert "callback" not in text  # the compiled kernel, not an interpreter


def test_tpu_lowering_of_the_weight_gradient_kernel_names_it():
    spec = _spec("grouped")
    x = jax.ShapeDtypeStruct(spec.lhs_shape, np.float32)
    w = jax.ShapeDtypeStruct(spec.rhs_shape, np.float32)
    text = (
        jax.jit(jax.grad(lambda a, b: jnp.sum(K.conv(a, b, spec)), argnums=1))
        .trace(x, w)
        .lower(lowering_platforms=("tpu",))
        .as_text()
    )
    assert "jaxconv_matmul_conv_wgrad" in text


# --------------------------------------------------------------------------------------
# Block-size rule and refusals
# --------------------------------------------------------------------------------------

LAYERS = [  # (lhs NHWC, rhs HWIO, strides, groups, dtype): real-model layers, spec only
    ((8, 56, 56, 64), (3, 3, 64, 64), 1, 1, jnp.bfloat16),
    ((8, 224, 224, 3), (7, 7, 3, 64), 2, 1, jnp.bfloat16),
    ((8, 14, 14, 1024), (1, 1, 1024, 2048), 2, 1, np.float32),
    ((8, 56, 56, 256), (1, 1, 256, 64), 1, 1, jnp.bfloat16),
    ((8, 112, 112, 96), (3, 3, 1, 96), 2, 96, jnp.bfloat16),
    ((8, 28, 28, 256), (3, 3, 8, 256), 1, 32, jnp.bfloat16),
    ((2, 16, 56, 56, 64), (3, 3, 3, 64, 128), 1, 1, jnp.bfloat16),
]


@pytest.mark.parametrize("layer", LAYERS, ids=lambda v: str(v[0]))
def test_block_rule_respects_vmem_and_halo(layer):
    lhs, rhs, strides, groups, dtype = layer
    n = len(lhs) - 2
    spec = ConvSpec.create(
        lhs,
        rhs,
        strides,
        "SAME",
        feature_group_count=groups,
        dimension_numbers=default_dimension_numbers(n),
        lhs_dtype=dtype,
    )
    lay = blocks.layout(spec)
    for wgrad in (False, True):
        blk = blocks.choose_blocks(lay, wgrad=wgrad)
        sub = blocks.sublanes(dtype)
        assert (blk.rows % sub == 0 or blk.rows == lay.rows) and blk.hr % sub == 0
        assert lay.halo <= blk.hr <= blk.rows and (blk.hr == 0 or blk.rows % blk.hr == 0)
        assert (blk.hr == 0) == (lay.halo == 0)
        assert blk.vmem == blocks.vmem_bytes(lay, blk.rows, blk.tc, blk.to, blk.hr, wgrad)
        assert blk.vmem <= blocks.VMEM_BUDGET
        assert lay.cin_tp % blk.tc == 0 and lay.cout_tp % blk.to == 0
        assert blk.tc % 128 == 0 and blk.to % 128 == 0
    assert (lay.kind == "depthwise") == (groups > 1 and rhs[-2] == 1)


def test_refusals_name_the_limit():
    def spec(lhs, rhs, **kw):
        return ConvSpec.create(
            lhs, rhs, dimension_numbers=default_dimension_numbers(len(lhs) - 2), **kw
        )

    cases = [
        (spec((1, 5, 5, 2), (3, 3, 2, 2), lhs_dtype=np.float16), "dtype"),
        (spec((1, 9, 9, 9, 2), (8, 8, 8, 2, 2)), "taps"),
        (spec((1, 20000, 1), (2, 1, 1), rhs_dilation=(19000,)), "VMEM"),
        (spec((1, 5, 5, 2), (3, 3, 2, 2), lhs_dtype=np.int32), "dtype"),
    ]
    for s, word in cases:
        assert word in K.supports(s)
        x = jnp.zeros(s.lhs_shape, s.lhs_dtype)
        w = jnp.zeros(s.rhs_shape, s.lhs_dtype)
        with pytest.raises(NotImplementedError, match="pallas_tpu"):
            K.conv(x, w, s)
    rank0 = ConvSpec.create((2, 3), (4, 3), dimension_numbers=("NC", "OI", "NC"))
    assert "spatial rank" in K.supports(rank0)


def test_folding_rule():
    stem = _spec("stem")
    folded = blocks.folded_spec(stem)
    assert folded is not None and folded.window == (1, 1)
    assert folded.lhs_shape == (2, 6, 5, 3 * 3 * 3)
    for name in (
        "dense1d_stride",
        "dense2d_dilated",
        "dense3d",
        "transposed",
        "grouped",
        "depthwise",
        "batch_groups",
        "nchw_crop",
        "pointwise",
        "patchify",
    ):
        assert blocks.folded_spec(_spec(name)) is None, name
    pointwise = blocks.pointwise_spec(_spec("pointwise"))
    assert pointwise.lhs_shape == (1, 2 * 5 * 6, 8) and pointwise.rhs_shape == (1, 8, 12)
    assert blocks.pointwise_spec(pointwise) is None
    assert blocks.pointwise_spec(_spec("patchify")) is None


def test_registered_for_dispatch():
    impl = dispatch.select(_spec("grouped"), "pallas_tpu")
    assert impl.name == "pallas_tpu" and impl.fuses_epilogue and impl.platforms == ("tpu",)


# --------------------------------------------------------------------------------------
# Larger sweeps (pytest -m slow)
# --------------------------------------------------------------------------------------


@pytest.mark.slow
@examples(40)
@given(spec=conv_specs())
def test_forward_random_slow(spec):
    with K.tpu_interpret_mode():
        _check_forward(spec)
    with K.tpu_interpret_mode(), tap_shifts_only():
        _check_forward(spec)


@pytest.mark.slow
@examples(25)
@given(spec=conv_specs())
def test_gradients_random_slow(spec):
    with K.tpu_interpret_mode(), tap_shifts_only():
        _check_gradients(spec)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_bfloat16_all_classes_slow(tpu_interpret, name):
    _check_forward(_spec(name, jnp.bfloat16))
    _check_gradients(_spec(name, jnp.bfloat16))
