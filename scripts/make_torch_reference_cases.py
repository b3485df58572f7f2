"""Generate PyTorch reference cases for jaxconv's transposed convolution and pooling.

PyTorch is not a dependency of jaxconv: this script runs once, in a separate
environment, and writes small ``.npz`` files under ``tests/data/`` that the tests read.
It does not import jaxconv. Each case stores its inputs, weights, arguments (as JSON)
and PyTorch's output, all in PyTorch's channels-first layout::

    python3 -m venv /tmp/torchvenv && /tmp/torchvenv/bin/pip install torch numpy
    /tmp/torchvenv/bin/python scripts/make_torch_reference_cases.py

Files written:

* ``tests/data/torch_conv_transpose.npz``: ``F.conv_transpose{1,2,3}d`` with stride,
  padding, output_padding, groups, dilation, bias, and ``nn.ConvTranspose*d`` called
  with ``output_size``;
* ``tests/data/torch_pooling.npz``: ``F.max_pool*d`` (padding, dilation, ceil_mode),
  ``F.avg_pool*d`` (padding, ceil_mode, count_include_pad, divisor_override) and
  ``F.lp_pool*d``.

Keys are ``<case>_<field>``: ``x`` (input), ``w``/``b`` (weight, bias), ``y`` (output)
and ``args`` (a JSON string with the op name and its keyword arguments).
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
import torch
import torch.nn.functional as F

OUT_DIR = pathlib.Path(__file__).resolve().parent.parent / "tests" / "data"

# (rank, batch, in_ch, out_ch, spatial, window, stride, padding, output_padding, groups,
#  dilation, bias, output_size)
TRANSPOSE_CASES = [
    (1, 2, 3, 4, (9,), (3,), 2, 1, 1, 1, 1, True, None),
    (1, 1, 4, 6, (7,), (4,), 3, 0, 2, 2, 1, False, None),
    (1, 2, 6, 3, (6,), (3,), 1, 2, 0, 3, 2, True, None),
    (1, 1, 2, 2, (5,), (2,), 2, 3, 0, 1, 1, False, None),  # padding > d*(k-1): crops
    (2, 2, 3, 4, (5, 6), (3, 3), 2, 1, 1, 1, 1, True, None),
    (2, 1, 4, 4, (4, 5), (3, 2), (2, 3), (1, 0), (0, 2), 2, 1, False, None),
    (2, 2, 6, 6, (5, 4), (3, 3), 2, (2, 1), (1, 1), 3, (2, 1), True, None),
    (2, 1, 4, 8, (3, 3), (2, 2), 1, 0, 0, 4, 1, False, None),  # depthwise, multiplier 2
    (2, 1, 2, 3, (4, 5), (3, 3), 2, 1, 0, 1, 1, False, (8, 10)),  # output_size
    (2, 2, 4, 2, (3, 4), (4, 3), 3, 1, 0, 2, 1, True, (8, 10)),
    (2, 1, 3, 2, (4, 4), (3, 3), 3, 0, 0, 1, 3, False, None),  # dilation 3, stride 3
    (3, 1, 2, 3, (3, 4, 3), (2, 3, 2), 2, 1, 1, 1, 1, True, None),
    (3, 2, 4, 2, (3, 3, 2), (3, 2, 2), (1, 2, 2), (1, 0, 1), (0, 1, 0), 2, (2, 1, 1), False, None),
    (3, 1, 2, 2, (2, 3, 3), (2, 2, 2), 2, 0, 0, 1, 1, False, (5, 6, 7)),
]

# (op, rank, x_shape, kwargs)
POOL_CASES = [
    ("max_pool", 1, (2, 3, 11), dict(kernel_size=3, stride=2, padding=1)),
    ("max_pool", 1, (1, 2, 10), dict(kernel_size=3, stride=3, padding=1, ceil_mode=True)),
    ("max_pool", 1, (1, 2, 12), dict(kernel_size=3, stride=2, padding=1, dilation=2)),
    ("max_pool", 2, (2, 3, 7, 8), dict(kernel_size=2, stride=2)),
    ("max_pool", 2, (1, 2, 7, 8), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
    (
        "max_pool",
        2,
        (1, 2, 9, 7),
        dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 0), dilation=(2, 3)),
    ),
    ("max_pool", 2, (1, 1, 6, 6), dict(kernel_size=2, stride=4, ceil_mode=True)),
    ("max_pool", 3, (1, 2, 5, 6, 5), dict(kernel_size=2, stride=2, padding=1, ceil_mode=True)),
    ("avg_pool", 1, (2, 3, 11), dict(kernel_size=3, stride=2, padding=1)),
    (
        "avg_pool",
        1,
        (1, 2, 10),
        dict(kernel_size=4, stride=3, padding=2, ceil_mode=True, count_include_pad=False),
    ),
    ("avg_pool", 2, (2, 3, 7, 8), dict(kernel_size=3, stride=2, padding=1, count_include_pad=True)),
    (
        "avg_pool",
        2,
        (2, 3, 7, 8),
        dict(kernel_size=3, stride=2, padding=1, count_include_pad=False),
    ),
    (
        "avg_pool",
        2,
        (1, 2, 7, 8),
        dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=True),
    ),
    (
        "avg_pool",
        2,
        (1, 2, 8, 7),
        dict(
            kernel_size=(2, 3),
            stride=(3, 2),
            padding=(1, 1),
            ceil_mode=True,
            count_include_pad=False,
        ),
    ),
    ("avg_pool", 2, (1, 2, 6, 6), dict(kernel_size=3, stride=2, padding=1, divisor_override=5)),
    (
        "avg_pool",
        3,
        (1, 2, 5, 6, 5),
        dict(kernel_size=2, stride=2, padding=1, ceil_mode=True, count_include_pad=True),
    ),
    (
        "avg_pool",
        3,
        (1, 2, 5, 4, 5),
        dict(kernel_size=3, stride=2, padding=1, count_include_pad=False),
    ),
    ("lp_pool", 1, (2, 3, 10), dict(norm_type=2.0, kernel_size=3, stride=2)),
    ("lp_pool", 2, (1, 2, 7, 8), dict(norm_type=2.0, kernel_size=(2, 3), stride=(2, 1))),
    ("lp_pool", 2, (1, 2, 7, 8), dict(norm_type=3.0, kernel_size=2, stride=2)),
    ("lp_pool", 3, (1, 2, 4, 5, 4), dict(norm_type=2.0, kernel_size=2, stride=2)),
]


def _json(obj) -> np.ndarray:
    return np.array(json.dumps(obj))


def _as_list(v):
    return list(v) if isinstance(v, tuple) else v


def make_transpose(rng: np.random.Generator) -> dict[str, np.ndarray]:
    arrays = {}
    for i, (
        rank,
        n,
        cin,
        cout,
        spatial,
        window,
        stride,
        padding,
        out_pad,
        groups,
        dilation,
        bias,
        output_size,
    ) in enumerate(TRANSPOSE_CASES):
        x = rng.standard_normal((n, cin) + spatial).astype(np.float32)
        w = rng.standard_normal((cin, cout // groups) + window).astype(np.float32)
        b = rng.standard_normal((cout,)).astype(np.float32) if bias else None
        if output_size is None:
            fn = getattr(F, f"conv_transpose{rank}d")
            y = fn(
                torch.from_numpy(x),
                torch.from_numpy(w),
                None if b is None else torch.from_numpy(b),
                stride=stride,
                padding=padding,
                output_padding=out_pad,
                groups=groups,
                dilation=dilation,
            )
        else:
            mod = getattr(torch.nn, f"ConvTranspose{rank}d")(
                cin,
                cout,
                window,
                stride=stride,
                padding=padding,
                groups=groups,
                dilation=dilation,
                bias=bias,
            )
            with torch.no_grad():
                mod.weight.copy_(torch.from_numpy(w))
                if bias:
                    mod.bias.copy_(torch.from_numpy(b))
            y = mod(torch.from_numpy(x), output_size=list(output_size))
        key = f"c{i:02d}"
        arrays[f"{key}_x"] = x
        arrays[f"{key}_w"] = w
        if b is not None:
            arrays[f"{key}_b"] = b
        arrays[f"{key}_y"] = y.detach().numpy()
        arrays[f"{key}_args"] = _json(
            dict(
                op=f"conv_transpose{rank}d",
                stride=_as_list(stride),
                padding=_as_list(padding),
                output_padding=None if output_size is not None else _as_list(out_pad),
                groups=groups,
                dilation=_as_list(dilation),
                output_size=None if output_size is None else list(output_size),
            )
        )
    return arrays


def make_pooling(rng: np.random.Generator) -> dict[str, np.ndarray]:
    arrays = {}
    for i, (op, rank, shape, kwargs) in enumerate(POOL_CASES):
        x = rng.standard_normal(shape).astype(np.float32)
        if op == "lp_pool" and kwargs["norm_type"] % 2:
            x = np.abs(x)  # PyTorch sums x**p without abs: compare where they agree
        fn = getattr(F, f"{op}{rank}d")
        y = fn(torch.from_numpy(x), **kwargs)
        key = f"c{i:02d}"
        arrays[f"{key}_x"] = x
        arrays[f"{key}_y"] = y.detach().numpy()
        arrays[f"{key}_args"] = _json(
            dict(op=op, rank=rank, **{k: _as_list(v) for k, v in kwargs.items()})
        )
    return arrays


def main() -> None:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(20260101)
    torch.manual_seed(0)
    files = {
        "torch_conv_transpose.npz": make_transpose(rng),
        "torch_pooling.npz": make_pooling(rng),
    }
    for name, arrays in files.items():
        path = OUT_DIR / name
        np.savez_compressed(path, torch_version=np.array(torch.__version__), **arrays)
        print(
            f"wrote {path} ({path.stat().st_size} bytes, "
            f"{sum(1 for k in arrays if k.endswith('_args'))} cases)"
        )


if __name__ == "__main__":
    main()
