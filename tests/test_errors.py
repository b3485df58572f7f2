"""Catalogue of bad inputs: each raises a clear ValueError / TypeError /
NotImplementedError naming the argument, before tracing reaches XLA."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxconv
from jaxconv._src import dispatch

X = np.zeros((2, 8, 8, 4), np.float32)  # NHWC
W = np.zeros((3, 3, 4, 6), np.float32)  # HWIO
X1 = np.zeros((2, 8, 4), np.float32)
W1 = np.zeros((3, 4, 6), np.float32)
XL = np.zeros((2, 4, 8, 8), np.float32)  # NCHW for the lax drop-in
WL = np.zeros((6, 4, 3, 3), np.float32)  # OIHW


def conv(**kw):
    args = dict(x=X, w=W)
    args.update(kw)
    x, w = args.pop("x"), args.pop("w")
    return lambda: jaxconv.conv(x, w, **args)


def cgd(*args, **kw):
    return lambda: jaxconv.conv_general_dilated(*args, **kw)


CATALOGUE = [
    # (id, callable, exception, message regex)
    (
        "rank mismatch",
        conv(x=np.zeros((1, 2, 8, 8, 4), np.float32)),
        ValueError,
        r"`x` must have shape \(N, \*spatial, C\)",
    ),
    ("kernel rank < 2", conv(w=np.zeros((3,))), ValueError, r"`w` must have shape"),
    ("lax rank mismatch", cgd(XL, np.zeros((6, 4, 3)), (1, 1), "SAME"), ValueError, r"same rank"),
    (
        "channels mismatch",
        conv(w=np.zeros((3, 3, 5, 6), np.float32)),
        ValueError,
        r"input channels \(=4\).*kernel's input-feature size \(=5\)",
    ),
    (
        "groups do not divide channels",
        conv(w=np.zeros((3, 3, 1, 6), np.float32), groups=3),
        ValueError,
        r"`groups` \(=3\) must divide the input channels \(=4\)",
    ),
    (
        "groups do not divide outputs",
        conv(w=np.zeros((3, 3, 2, 5), np.float32), groups=2),
        ValueError,
        r"must divide the kernel's output features \(=5\)",
    ),
    ("groups zero", conv(groups=0), ValueError, r"`groups` must be >= 1, got 0"),
    ("groups float", conv(groups=2.0), TypeError, r"`groups` must be an int"),
    (
        "batch groups do not divide batch",
        cgd(np.zeros((3, 4, 8, 8), np.float32), WL, (1, 1), "SAME", batch_group_count=2),
        ValueError,
        r"`batch_group_count` \(=2\) must divide the batch size \(=3\)",
    ),
    (
        "batch groups do not divide outputs",
        cgd(
            np.zeros((4, 4, 8, 8), np.float32),
            np.zeros((5, 4, 3, 3), np.float32),
            (1, 1),
            "SAME",
            batch_group_count=2,
        ),
        ValueError,
        r"`batch_group_count` \(=2\) must divide the kernel's output features \(=5\)",
    ),
    (
        "both group counts",
        cgd(
            np.zeros((4, 4, 8, 8), np.float32),
            np.zeros((4, 2, 3, 3), np.float32),
            (1, 1),
            "SAME",
            feature_group_count=2,
            batch_group_count=2,
        ),
        ValueError,
        r"at most one of",
    ),
    ("stride zero", conv(stride=0), ValueError, r"`stride` entries must be >= 1"),
    (
        "stride negative tuple",
        conv(stride=(1, -2)),
        ValueError,
        r"`stride` entries must be >= 1",
    ),
    (
        "stride wrong length",
        conv(stride=(1, 2, 3)),
        ValueError,
        r"`stride` must have one entry per spatial axis \(=2\), got 3",
    ),
    (
        "stride not int",
        conv(stride="2"),
        TypeError,
        r"`stride` must be an int or a sequence",
    ),
    ("dilation zero", conv(dilation=0), ValueError, r"`dilation` entries must be >= 1"),
    (
        "input dilation zero",
        conv(input_dilation=(1, 0)),
        ValueError,
        r"`input_dilation` entries must be >= 1",
    ),
    (
        "window larger than input",
        conv(w=np.zeros((9, 3, 4, 6), np.float32), padding="VALID"),
        ValueError,
        r"window larger than the padded input on spatial axis 0",
    ),
    (
        "dilated window larger",
        conv(dilation=5, padding="VALID"),
        ValueError,
        r"window larger than the padded input",
    ),
    ("unknown padding word", conv(padding="SMAE"), ValueError, r"`padding` word must be one of"),
    (
        "padding wrong length",
        conv(padding=[(1, 1)]),
        ValueError,
        r"`padding` must have one entry per spatial axis \(=2\), got 1",
    ),
    (
        "padding bad pair",
        conv(padding=[(1, 2, 3), (1, 1)]),
        ValueError,
        r"`padding` entries must be ints or \(lo, hi\) pairs",
    ),
    ("padding wrong type", conv(padding=1.5), TypeError, r"`padding` must be a word, an int"),
    (
        "padding bool",
        conv(padding=True),
        TypeError,
        r"`padding` must be a word, an int or a sequence",
    ),
    (
        "unknown padding mode",
        conv(padding_mode="mirror"),
        ValueError,
        r"`padding_mode` must be one of",
    ),
    ("padding mode not str", conv(padding_mode=3), TypeError, r"`padding_mode` must be a string"),
    (
        "circular wider than input",
        conv(x=np.zeros((1, 3, 3, 4), np.float32), padding=4, padding_mode="circular"),
        ValueError,
        r"circular padding of 4 on spatial axis 0 is wider",
    ),
    (
        "reflect as wide as input",
        conv(x=np.zeros((1, 3, 3, 4), np.float32), padding=3, padding_mode="reflect"),
        ValueError,
        r"reflect padding of 3 .* at most 2",
    ),
    (
        "boundary mode with input dilation",
        conv(padding_mode="reflect", input_dilation=2),
        ValueError,
        r"needs lhs_dilation == 1",
    ),
    (
        "dtype mix",
        conv(w=np.zeros((3, 3, 4, 6), np.float16)),
        TypeError,
        r"must have the same dtype .* float32 and rhs float16",
    ),
    (
        "bool input",
        conv(x=np.zeros((2, 8, 8, 4), bool), w=np.zeros((3, 3, 4, 6), bool)),
        TypeError,
        r"dtype must be numeric, got bool",
    ),
    (
        "int preferred for float",
        conv(preferred_element_type=jnp.int32),
        TypeError,
        r"`preferred_element_type` must be of the same kind",
    ),
    (
        "unknown implementation",
        conv(implementation="cudnn"),
        ValueError,
        r"`implementation` must be one of .* got 'cudnn'",
    ),
    (
        "implementation wrong type",
        conv(implementation=3),
        TypeError,
        r"`implementation` must be None",
    ),
    ("empty implementation list", conv(implementation=[]), TypeError, r"non-empty sequence"),
    (
        "bias shape",
        conv(bias=np.zeros((5,), np.float32)),
        ValueError,
        r"`bias` must have shape \(6,\) .* got \(5,\)",
    ),
    (
        "activation not callable",
        conv(activation="relu"),
        TypeError,
        r"`activation` must be callable",
    ),
    ("x not an array", conv(x="image"), TypeError, r"`x` must be an array, got str"),
    (
        "bad dimension numbers",
        cgd(XL, WL, (1, 1), "SAME", dimension_numbers=("NCHW", "OIHW")),
        ValueError,
        r"`dimension_numbers`",
    ),
    ("precision word", conv(precision="ultra"), ValueError, r"`precision` must be one of"),
    (
        "string padding with lhs dilation (lax drop-in)",
        cgd(XL, WL, (1, 1), "SAME", lhs_dilation=(2, 2)),
        ValueError,
        r"padding word together with `lhs_dilation`",
    ),
    (
        "1d kernel larger than causal-free input",
        lambda: jaxconv.conv(X1[:, :2], W1, padding="VALID"),
        ValueError,
        r"window larger than the padded input on spatial axis 0",
    ),
    (
        "output_shape bad groups",
        lambda: jaxconv.output_shape((1, 3, 8, 8), (4, 2, 3, 3), 1, "SAME", feature_group_count=2),
        ValueError,
        r"must divide the input channels \(=3\)",
    ),
]


def test_catalogue_has_at_least_30_cases():
    assert len(CATALOGUE) >= 30


@pytest.mark.parametrize("name,fn,exc,pattern", CATALOGUE, ids=[c[0] for c in CATALOGUE])
def test_bad_input(name, fn, exc, pattern):
    with pytest.raises(exc) as info:
        fn()
    message = str(info.value)
    assert isinstance(info.value.args[0], str), "message must be a string, not a tuple"
    assert re.search(pattern, message), f"{message!r} does not match {pattern!r}"
    assert "XlaRuntimeError" not in type(info.value).__name__


@pytest.mark.parametrize("name,fn,exc,pattern", CATALOGUE[:10], ids=[c[0] for c in CATALOGUE[:10]])
def test_bad_input_raises_at_trace_time_under_jit(name, fn, exc, pattern):
    # the same errors under jit: validation happens on shapes, before lowering
    with pytest.raises(exc):
        jax.jit(lambda: fn())()


def test_unsupported_spec_names_implementation_and_limit():
    dispatch.register(
        dispatch.Implementation(
            "only_1d",
            lambda x, w, s: None,
            lambda spec: None if spec.nspatial == 1 else f"only 1-D, got {spec.nspatial}-D",
        )
    )
    try:
        with pytest.raises(NotImplementedError, match=r"only_1d: only 1-D, got 2-D"):
            jaxconv.conv(X, W, implementation="only_1d")
        # in a sequence, the next one takes over
        out = jaxconv.conv(X, W, implementation=["only_1d", "taps"])
        assert out.shape == (2, 8, 8, 6)
    finally:
        dispatch._REGISTRY.pop("only_1d")


def test_user_mistake_is_not_hidden_by_fallback():
    with pytest.raises(ValueError, match="input channels"):
        jaxconv.conv(X, np.zeros((3, 3, 5, 6), np.float32), implementation=["taps", "xla"])
