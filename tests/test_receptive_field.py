"""Receptive field (size, jump, start) by the recurrences, checked against the support
of the input gradient of real layer stacks; the per-layer cost table."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxconv
from jaxconv._src.pooling import avg_pool
from jaxconv._src.receptive_field import (
    conv_layer,
    cost_table,
    format_table,
    pool_layer,
    receptive_field,
)
from jaxconv._src.spec import ConvSpec


def vgg16():
    layers = []
    for block, (convs, feats) in enumerate([(2, 64), (2, 128), (3, 256), (3, 512), (3, 512)]):
        for c in range(convs):
            layers.append(conv_layer(3, feats, padding=1, name=f"conv{block + 1}_{c + 1}"))
        layers.append(pool_layer(2, name=f"pool{block + 1}"))
    return layers


def test_vgg16_known_values():
    """VGG-16's classic numbers: 196 at conv5_3, 212 at pool5, jump 32."""
    rows = {r["name"]: r for r in receptive_field(vgg16(), 224)}
    assert rows["conv1_2"]["rf"] == (5,)
    assert rows["conv5_3"]["rf"] == (196,)
    assert rows["pool5"]["rf"] == (212,)
    assert rows["pool5"]["jump"] == (32,)
    assert rows["pool5"]["size"] == (7,)
    assert rows["conv5_3"]["size"] == (14,)


def test_recurrences_by_hand():
    rows = receptive_field(
        [
            conv_layer(3, 8, stride=2, padding=1),
            conv_layer(3, 8, padding=2, dilation=2),
            pool_layer((2, 3), padding=0),
        ],
        (9, 10),
    )
    # layer 0: r = 3, j = 2, start = 0 + (1 - 1) * 1 = 0
    assert (rows[0]["rf"], rows[0]["jump"], rows[0]["start"]) == ((3, 3), (2, 2), (0.0, 0.0))
    # layer 1 (dilation 2): r = 3 + 2 * 2 * 2 = 11, start = 0 + (2 - 2) * 2 = 0
    assert (rows[1]["rf"], rows[1]["jump"], rows[1]["start"]) == ((11, 11), (2, 2), (0.0, 0.0))
    # layer 2 (window 2x3, stride 2x3): r = 11 + 1 * 2 = 13 / 11 + 2 * 2 = 15
    assert rows[2]["rf"] == (13, 15)
    assert rows[2]["jump"] == (4, 6)
    assert rows[2]["start"] == (1.0, 2.0)
    assert rows[2]["size"] == (2, 1)


STACKS = [
    [conv_layer(3, 2, stride=2, padding=1), conv_layer(3, 2, padding=1), pool_layer(2)],
    [
        conv_layer(5, 2, padding=0),
        conv_layer(3, 2, stride=2, dilation=2, padding=1),
        pool_layer(3, stride=2, padding=1),
    ],
    [
        conv_layer(2, 2, stride=2),
        conv_layer(4, 2, padding=((2, 1),)),
        conv_layer(3, 2, stride=3, dilation=3, padding=3),
    ],
]


def _run_stack(layers, x):
    for layer in layers:
        if layer.kind == "conv":
            k = (layer.window,) * 1 if isinstance(layer.window, int) else layer.window
            w = jnp.ones(k + (x.shape[-1], layer.features), x.dtype)
            x = jaxconv.conv(
                x, w, stride=layer.stride, padding=layer.padding, dilation=layer.dilation
            )
        else:
            win = (layer.window,) if isinstance(layer.window, int) else layer.window
            x = avg_pool(
                x,
                win,
                (layer.stride,) if isinstance(layer.stride, int) else layer.stride,
                layer.padding,
                dilation=layer.dilation,
            )
    return x


@pytest.mark.parametrize("stack", range(len(STACKS)))
def test_matches_gradient_support(stack):
    """Output i depends on inputs start + i*jump -/+ (rf - 1) / 2: exactly those ends
    where the field lies inside the input, within them where it reaches the padding
    (taps on an intermediate layer's padding see nothing)."""
    layers, size = STACKS[stack], 61
    rows = receptive_field(layers, size)
    rf, jump, start = rows[-1]["rf"][0], rows[-1]["jump"][0], rows[-1]["start"][0]
    x = jnp.asarray(np.random.default_rng(0).uniform(1, 2, size=(1, size, 1)), jnp.float32)
    out_size = rows[-1]["size"][0]
    assert _run_stack(layers, x).shape == (1, out_size, 2)
    jac = np.asarray(jax.jit(jax.jacrev(lambda x: _run_stack(layers, x)[0, :, 0]))(x))
    interior = 0
    for i in range(out_size):
        support = np.nonzero(jac[i, 0, :, 0])[0]
        lo = start + i * jump - (rf - 1) / 2
        hi = start + i * jump + (rf - 1) / 2
        if lo >= 0 and hi <= size - 1:
            interior += 1
            assert (support.min(), support.max()) == (lo, hi), (i, support, lo, hi)
        else:
            assert support.min() >= lo and support.max() <= hi, (i, support, lo, hi)
    assert interior >= out_size // 2


def test_accepts_specs_and_dicts():
    spec = ConvSpec.create((1, 3, 32, 32), (8, 3, 3, 3), 2, "SAME", None, 2)
    rows = receptive_field([spec, dict(window=3, features=4)], (32, 32))
    assert rows[0]["rf"] == (5, 5) and rows[0]["jump"] == (2, 2)
    assert rows[1]["rf"] == (9, 9)
    with pytest.raises(ValueError, match="input dilation"):
        receptive_field([ConvSpec.create((1, 1, 8), (1, 1, 3), 1, ((1, 1),), 2)])
    with pytest.raises(ValueError, match="input_size"):
        receptive_field([conv_layer(3, 4, padding="SAME")])
    with pytest.raises(TypeError, match="layers\\[0\\]"):
        receptive_field([(3, 1)])
    with pytest.raises(ValueError, match="window larger"):
        receptive_field([conv_layer(5, 1)], 3)


def test_cost_table():
    """MACs of a convolution = N * H_out * W_out * F * Fh * Fw * C / groups."""
    layers = [
        conv_layer(3, 16, padding=1, name="c1"),
        pool_layer(2, name="p1"),
        conv_layer((3, 1), 32, stride=2, groups=4, bias=False, name="c2"),
    ]
    rows = cost_table(layers, (2, 32, 30, 8))
    c1, p1, c2, total = rows
    assert c1["out_shape"] == (2, 32, 30, 16)
    assert c1["macs"] == 2 * 32 * 30 * 16 * 3 * 3 * 8
    assert c1["flops"] == 2 * c1["macs"] + 2 * 32 * 30 * 16  # + bias adds
    assert c1["params"] == 3 * 3 * 8 * 16 + 16
    assert c1["activation_bytes"] == 2 * 32 * 30 * 16 * 4
    assert p1["out_shape"] == (2, 16, 15, 16) and p1["macs"] == 0 and p1["params"] == 0
    assert p1["flops"] == 2 * 16 * 15 * 16 * 4
    assert c2["out_shape"] == (2, 7, 8, 32)
    assert c2["macs"] == 2 * 7 * 8 * 32 * 3 * 1 * 16 // 4
    assert c2["params"] == 3 * 1 * 4 * 32
    assert total["macs"] == c1["macs"] + c2["macs"]
    assert total["params"] == c1["params"] + c2["params"]
    assert total["activation_bytes"] == sum(r["activation_bytes"] for r in rows[:3])
    assert total["rf"] == receptive_field(layers, (32, 30))[-1]["rf"]
    text = format_table(rows, ["name", "out_shape", "macs", "params"])
    lines = text.splitlines()
    assert lines[0].split() == ["name", "out_shape", "macs", "params"]
    assert "2x32x30x16" in lines[2] and "2.21M" in lines[2]  # 2,211,840 MACs
    assert lines[-1].startswith("total")
