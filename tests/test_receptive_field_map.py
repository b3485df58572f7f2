"""The effective receptive field against the theoretical one of the same stack."""

from __future__ import annotations

import flax.linen as fnn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxconv.nn as jnn
from jaxconv._src.receptive_field import conv_layer, pool_layer
from jaxconv._src.receptive_field_map import (
    effective_receptive_field,
    erf_support,
    plot_effective_receptive_field,
    theoretical_receptive_field_box,
)

positive = fnn.initializers.uniform(1.0)  # positive weights: no cancellation in the map


class Stack(fnn.Module):
    """conv 3 SAME -> conv 3 stride 2 -> avg pool 3 stride 2 -> conv 3 dilation 2
    (-> activation between, if any)."""

    activation: object = None
    implementation: str | None = None

    @fnn.compact
    def __call__(self, x):
        act = self.activation or (lambda v: v)
        impl = self.implementation
        x = act(jnn.Conv(3, (3, 3), kernel_init=positive, implementation=impl)(x))
        x = act(jnn.Conv(3, (3, 3), (2, 2), "VALID", kernel_init=positive, implementation=impl)(x))
        x = jnn.AvgPool((3, 3), (2, 2))(x)
        return jnn.Conv(2, (3, 3), kernel_dilation=2, kernel_init=positive, implementation=impl)(x)


LAYERS = [
    conv_layer(3, 3, padding="SAME"),
    conv_layer(3, 3, stride=2, padding="VALID"),
    pool_layer(3, 2),
    conv_layer(3, 2, padding="SAME", dilation=2),
]


@pytest.mark.parametrize("impl", ["taps", "xla"])
def test_linear_stack_fills_the_theoretical_field(impl):
    shape = (2, 41, 37, 2)
    model = Stack(implementation=impl)
    variables = model.init(jax.random.key(0), jnp.zeros(shape))
    erf = effective_receptive_field(model.apply, variables, shape)
    assert erf.shape == shape[1:3]
    box = theoretical_receptive_field_box(LAYERS, shape[1:3])
    # rf = 1 + 2 + 2*1 + 2*2 + 2*2*4 = 25 on each axis; centred on output (4, 4)
    assert [hi - lo + 1 for lo, hi in box] == [25, 25]
    assert erf_support(erf) == box
    # off centre, away from the border (the output is 9 x 9): the same field
    erf_p = effective_receptive_field(model.apply, variables, shape, position=(2, 5))
    assert erf_support(erf_p) == theoretical_receptive_field_box(LAYERS, shape[1:3], (2, 5))
    # at the border, taps of the last (dilated, SAME) layer fall on its zero padding, so
    # inputs the clipped theoretical box still counts do not move the output: inside
    for position in [(1, 3), (0, 0)]:
        erf_p = effective_receptive_field(model.apply, variables, shape, position=position)
        support = erf_support(erf_p)
        theory = theoretical_receptive_field_box(LAYERS, shape[1:3], position)
        assert all(t0 <= s0 <= s1 <= t1 for (s0, s1), (t0, t1) in zip(support, theory))
        if position == (1, 3):  # row 1 reads pool row -1 (padding): inputs 0..2 unused
            assert support == ((3, 19), (3, 27)) and theory == ((0, 19), (3, 27))


def test_linear_map_is_the_kernel_chain():
    """One linear conv: the map is the sum over channels of |kernel| (flipped into input
    coordinates), independent of the inputs."""
    shape = (1, 9, 9, 2)
    layer = jnn.Conv(3, (3, 3), padding="VALID", implementation="im2col")
    v = layer.init(jax.random.key(1), jnp.zeros(shape))
    erf = effective_receptive_field(layer.apply, v, shape, key=jax.random.key(5))
    k = np.asarray(v["params"]["kernel"])  # (3, 3, 2, 3)
    expected = np.zeros((9, 9))
    # output (3, 3) reads inputs 3..5: gradient w.r.t. x[3 + a, 3 + b, c] is
    # sum_o k[a, b, c, o]
    expected[3:6, 3:6] = np.abs(k.sum(-1)).sum(-1)
    np.testing.assert_allclose(np.asarray(erf), expected, rtol=1e-6, atol=1e-7)


def test_relu_stack_stays_inside_the_theoretical_field():
    shape = (8, 41, 37, 2)
    model = Stack(activation=jax.nn.relu)
    variables = model.init(jax.random.key(2), jnp.zeros(shape))
    erf = effective_receptive_field(model.apply, variables, shape, normalize=True)
    assert float(erf.max()) == pytest.approx(1.0)
    box = theoretical_receptive_field_box(LAYERS, shape[1:3])
    (r0, r1), (c0, c1) = erf_support(erf)
    assert box[0][0] <= r0 <= r1 <= box[0][1] and box[1][0] <= c0 <= c1 <= box[1][1]
    # the non-linear map depends on the inputs, the linear one does not
    other = effective_receptive_field(
        model.apply, variables, shape, normalize=True, key=jax.random.key(9)
    )
    assert float(jnp.max(jnp.abs(other - erf))) > 1e-3
    linear = Stack()
    erf_a, erf_b = (
        effective_receptive_field(linear.apply, variables, shape, key=k)
        for k in (jax.random.key(0), jax.random.key(9))
    )
    np.testing.assert_allclose(np.asarray(erf_a), np.asarray(erf_b), rtol=1e-5)


def test_errors():
    layer = jnn.Conv(2, (3,))
    v = layer.init(jax.random.key(0), jnp.zeros((1, 8, 1)))
    with pytest.raises(ValueError, match="position"):
        effective_receptive_field(layer.apply, v, (1, 8, 1), position=(8,))
    with pytest.raises(ValueError, match="input_shape"):
        effective_receptive_field(layer.apply, v, (8,))
    with pytest.raises(ValueError, match="apply_fn"):
        effective_receptive_field(lambda p, x: layer.apply(p, x).sum(-1), v, (1, 8, 1))
    with pytest.raises(ValueError, match="zero everywhere"):
        erf_support(np.zeros((4, 4)))


def test_plot(tmp_path):
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shape = (1, 41, 37, 2)
    model = Stack()
    variables = model.init(jax.random.key(0), jnp.zeros(shape))
    erf = effective_receptive_field(model.apply, variables, shape)
    box = theoretical_receptive_field_box(LAYERS, shape[1:3])
    ax = plot_effective_receptive_field(erf, box=box, log=True)
    assert len(ax.images) == 1 and len(ax.patches) == 1
    np.testing.assert_array_equal(ax.patches[0].get_xy(), (box[1][0] - 0.5, box[0][0] - 0.5))
    path = tmp_path / "erf.png"
    ax.figure.savefig(path)
    plt.close(ax.figure)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ax1 = plot_effective_receptive_field(np.asarray(erf)[20], box=box[1:])
    assert len(ax1.patches) >= erf.shape[1]  # one bar per input position
    plt.close(ax1.figure)
