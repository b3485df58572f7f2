"""``jaxconv demo``: convolution on real numbers, step by step, for a newcomer.

Every number printed is computed by jaxconv (the same functions a user calls); the
text explains what to look for. ``--plot FILE.png`` also saves a figure of feature
maps of edge-detection kernels on a real photograph (scikit-learn's sample image),
which needs the optional ``demo`` extra (matplotlib, scikit-learn).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable

import numpy as np

HELP = "walk through convolution on real numbers (correlation vs convolution, padding, ...)"


# --------------------------------------------------------------------------------------
# Printing
# --------------------------------------------------------------------------------------


def _fmt(v: float) -> str:
    v = float(v)
    if v == int(v) and abs(v) < 1e9:
        return str(int(v))
    return f"{v:.4g}"


def matrix(a, indent: str = "    ") -> str:
    """A 2-D array as aligned rows of numbers."""
    a = np.asarray(a)
    if a.ndim == 1:
        a = a[None]
    cells = [[_fmt(v) for v in row] for row in a]
    width = max(len(c) for row in cells for c in row)
    return "\n".join(indent + " ".join(c.rjust(width) for c in row) for row in cells)


def side_by_side(blocks: list[tuple[str, np.ndarray]], indent: str = "    ") -> str:
    """Several titled matrices next to each other."""
    rendered = []
    for title, a in blocks:
        lines = matrix(a, indent="").splitlines()
        width = max(len(title), *(len(x) for x in lines))
        rendered.append([title.ljust(width)] + [x.ljust(width) for x in lines])
    height = max(len(r) for r in rendered)
    for r in rendered:
        r += [" " * len(r[0])] * (height - len(r))
    return "\n".join((indent + "   ".join(r[i] for r in rendered)).rstrip() for i in range(height))


def heading(title: str) -> str:
    return f"\n{title}\n{'=' * len(title)}"


# --------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------

IMAGE4 = np.arange(1, 17, dtype=np.float32).reshape(4, 4)
EDGE = np.array([[1, 1], [-1, -1]], np.float32)
IMAGE5 = np.arange(1, 26, dtype=np.float32).reshape(5, 5)


def _conv2d(image, kernel, impl, **kwargs):
    """One channel in, one channel out, through jaxconv.conv (channels-last)."""
    import jaxconv

    y = jaxconv.conv(
        image[None, :, :, None], kernel[:, :, None, None], implementation=impl, **kwargs
    )
    return np.asarray(y[0, :, :, 0])


def _window_sum(window, kernel) -> str:
    """``"1*1 + 2*1 + 5*(-1) + 6*(-1) = -8"`` for one window and kernel."""
    terms = [
        f"{_fmt(a)}*{_fmt(b) if b >= 0 else '(' + _fmt(b) + ')'}"
        for a, b in zip(np.ravel(window), np.ravel(kernel))
    ]
    return " + ".join(terms) + f" = {_fmt(np.sum(window * kernel)):>s}"


def section_worked_example(impl, out) -> None:
    from jaxconv._src.signal import convolve2d, correlate2d

    out(heading("1. Correlation vs convolution: the worked example"))
    out(side_by_side([("image", IMAGE4), ("kernel", EDGE)]))
    corr = np.asarray(correlate2d(IMAGE4, EDGE, "valid", implementation=impl))
    conv = np.asarray(convolve2d(IMAGE4, EDGE, "valid", implementation=impl))
    flipped = EDGE[::-1, ::-1]
    out("\n  Cross-correlation slides the kernel as written (what CNN layers compute):")
    out(f"  top-left window: {_window_sum(IMAGE4[:2, :2], EDGE)}")
    out(side_by_side([("correlate2d (valid)", corr)]))
    out(f"\n  True convolution flips the kernel first, to {flipped.astype(int).tolist()}:")
    out(f"  top-left window: {_window_sum(IMAGE4[:2, :2], flipped)}")
    out(side_by_side([("convolve2d (valid)", conv)]))
    out("\n  scipy.signal.convolve2d also returns +8 here (it flips the kernel); a common")
    out("  write-up of this example says -8, which is the correlation. The two differ only")
    out("  by the flip, so a learned kernel absorbs it: CNNs correlate and call it convolution.")


def section_output_size(impl, out) -> None:
    import jaxconv
    from jaxconv._src.receptive_field import format_table

    out(heading("2. Output size"))
    out("  out = floor((n + pad_lo + pad_hi - dilation * (k - 1) - 1) / stride) + 1")
    rows = []
    for n, k, s, d, p in [
        (5, 3, 1, 1, 0),
        (5, 3, 1, 1, 1),
        (7, 3, 2, 1, 1),
        (7, 3, 1, 2, 0),
        (32, 5, 2, 1, 2),
        (224, 7, 2, 1, 3),
    ]:
        formula = (n + 2 * p - d * (k - 1) - 1) // s + 1
        shape = jaxconv.output_shape((1, 1, n), (1, 1, k), (s,), ((p, p),), None, (d,))
        rows.append(
            dict(n=n, k=k, stride=s, dilation=d, pad=p, formula=formula, output_shape=shape[-1])
        )
    out(format_table(rows, indent="    "))


def section_padding(impl, out) -> None:
    out(heading("3. Padding: what fills the border"))
    box = np.ones((3, 3), np.float32)
    out("  5x5 image, 3x3 kernel of ones (each output = sum of a 3x3 window):")
    out(matrix(IMAGE5))
    out("\n  Padding words (zeros): VALID none, SAME keeps the size, FULL every overlap,")
    out("  CAUSAL pads only before (the output never sees later samples):")
    blocks = [(w, _conv2d(IMAGE5, box, impl, padding=w)) for w in ("VALID", "SAME")]
    out(side_by_side(blocks))
    out(side_by_side([(w, _conv2d(IMAGE5, box, impl, padding=w)) for w in ("FULL", "CAUSAL")]))
    out("\n  Padding modes with SAME (one sample each side): what the border is filled with:")
    modes = ["zeros", "reflect", "symmetric", "circular", "replicate"]
    out(
        side_by_side(
            [(m, _conv2d(IMAGE5, box, impl, padding="SAME", padding_mode=m)) for m in modes[:3]]
        )
    )
    out(
        side_by_side(
            [(m, _conv2d(IMAGE5, box, impl, padding="SAME", padding_mode=m)) for m in modes[3:]]
        )
    )


def section_stride_dilation(impl, out) -> None:
    out(heading("4. Stride and dilation"))
    image = np.arange(1, 50, dtype=np.float32).reshape(7, 7)
    k = np.array([[0, 0, 0], [0, 1, 0], [0, 0, 0]], np.float32)
    out("  7x7 image, a 3x3 kernel that picks the centre (so outputs are input samples):")
    out(matrix(image))
    out(
        side_by_side(
            [
                ("stride 1", _conv2d(image, k, impl, padding="VALID")),
                ("stride 2: every 2nd", _conv2d(image, k, impl, padding="VALID", stride=2)),
            ]
        )
    )
    corner = np.zeros((3, 3), np.float32)
    corner[0, 0] = 1
    out("\n  Dilation spreads the taps: a 3x3 kernel with dilation 2 spans 5x5. With the")
    out("  top-left tap set, output (i, j) reads input (i, j) for dilation 1 and 2 alike,")
    out("  but the span (and the output size) differs:")
    out(
        side_by_side(
            [
                ("dilation 1", _conv2d(image, corner, impl, padding="VALID")),
                ("dilation 2", _conv2d(image, corner, impl, padding="VALID", dilation=2)),
            ]
        )
    )


def section_channels(impl, out) -> None:
    import jax

    import jaxconv

    out(heading("5. Several channels, several kernels, bias and ReLU"))
    rng = np.random.default_rng(0)
    x = rng.integers(-2, 3, size=(1, 4, 4, 3)).astype(np.float32)
    w = rng.integers(-1, 2, size=(2, 2, 3, 2)).astype(np.float32)
    out("  Input 4x4 with 3 channels; 2 kernels of shape 2x2x3 (one 2x2 slice per channel).")
    out(side_by_side([(f"x[..., {c}]", x[0, :, :, c]) for c in range(3)]))
    out(side_by_side([(f"kernel 0, ch {c}", w[:, :, c, 0]) for c in range(3)]))
    y = np.asarray(jaxconv.conv(x, w, padding="VALID", implementation=impl))
    per = [
        np.asarray(
            jaxconv.conv(
                x[..., c : c + 1], w[:, :, c : c + 1, :1], padding="VALID", implementation=impl
            )
        )[0, :, :, 0]
        for c in range(3)
    ]
    out("\n  Output channel 0 = sum over input channels of each channel's 2-D correlation:")
    out(
        side_by_side(
            [
                ("ch 0 part", per[0]),
                ("+ ch 1 part", per[1]),
                ("+ ch 2 part", per[2]),
                ("= out[..., 0]", y[0, :, :, 0]),
            ]
        )
    )
    out("  Each kernel gives one output channel: output shape (1, 3, 3, 2).")
    b = np.array([0.5, -1.0], np.float32)
    z = np.asarray(
        jaxconv.conv(x, w, padding="VALID", bias=b, activation=jax.nn.relu, implementation=impl)
    )
    out("\n  conv(x, w, bias=b, activation=jax.nn.relu): bias per output channel, then ReLU")
    out(
        side_by_side(
            [
                ("out[..., 1]", y[0, :, :, 1]),
                ("+ bias -1", y[0, :, :, 1] - 1),
                ("ReLU", z[0, :, :, 1]),
            ]
        )
    )


def section_pooling(impl, out) -> None:
    from jaxconv._src.pooling import avg_pool, global_avg_pool, max_pool

    out(heading("6. Pooling"))
    x = np.array([[1, 3, 2, 4], [5, 6, 1, 2], [7, 2, 9, 0], [1, 8, 3, 4]], np.float32)
    pool_impl = impl if impl in (None, "xla", "taps", "im2col") else None
    mp = np.asarray(max_pool(x[..., None], (2, 2), (2, 2), implementation=pool_impl))
    ap = np.asarray(avg_pool(x[..., None], (2, 2), (2, 2), implementation=pool_impl))
    gp = np.asarray(global_avg_pool(x[None, :, :, None], implementation=pool_impl))
    out("  2x2 windows, stride 2: the same window machinery as convolution, with max or mean")
    out("  instead of a weighted sum (no weights to learn):")
    out(side_by_side([("x", x), ("max_pool", mp[..., 0]), ("avg_pool", ap[..., 0])]))
    out(f"  global_avg_pool(x) = {_fmt(gp[0, 0])} (the mean of all 16 samples)")


def section_separable(impl, out) -> None:
    from jaxconv._src.receptive_field import format_table
    from jaxconv._src.separable import separable_cost

    out(heading("7. Dense vs depthwise-separable cost"))
    out("  3x3 convolution, 56x56x128 input, 128 output channels (a MobileNet block):")
    c = separable_cost((1, 56, 56, 128), (3, 3), 128)
    rows = [
        dict(layer=name, macs=c[name]["macs"], params=c[name]["params"])
        for name in ("dense", "depthwise", "pointwise", "separable")
    ]
    out(format_table(rows, indent="    "))
    out(f"  separable / dense = {c['flops_ratio']:.3f} = 1/O + 1/K = 1/128 + 1/9")


def section_transpose(impl, out) -> None:
    from jaxconv._src.transpose import conv_transpose_torch

    out(heading("8. Transposed convolution: learnable upsampling"))
    x = np.array([[1, 2], [3, 4]], np.float32)
    w = np.array([[1, 1], [1, 1]], np.float32)
    y = np.asarray(
        conv_transpose_torch(x[None, None], w[None, None], stride=2, implementation=impl)
    )[0, 0]
    out("  Stride 2 puts one zero between input samples, then convolves: each input")
    out("  sample paints a copy of the kernel, scaled, into a 2x larger output:")
    out(side_by_side([("input 2x2", x), ("kernel", w), ("output 4x4", y)]))
    w3 = np.arange(1, 10, dtype=np.float32).reshape(3, 3)
    y3 = np.asarray(
        conv_transpose_torch(
            x[None, None],
            w3[None, None],
            stride=2,
            padding=1,
            output_padding=1,
            implementation=impl,
        )
    )[0, 0]
    out("  3x3 kernel, stride 2, padding 1, output_padding 1 (overlaps add up):")
    out(side_by_side([("kernel", w3), ("output 4x4", y3)]))


def section_receptive_field(impl, out) -> None:
    from jaxconv._src.receptive_field import (
        conv_layer,
        cost_table,
        format_table,
        pool_layer,
        receptive_field,
    )

    out(heading("9. Receptive field and cost of a small stack"))
    layers = [
        conv_layer(3, 16, padding=1, name="conv 3x3"),
        conv_layer(3, 16, padding=1, name="conv 3x3"),
        pool_layer(2, name="max pool 2"),
        conv_layer(3, 32, padding=2, dilation=2, name="conv 3x3 d2"),
        conv_layer(3, 32, stride=2, padding=1, name="conv 3x3 s2"),
    ]
    rows = receptive_field(layers, (32, 32))
    out("  r_out = r_in + (k - 1) * d * j_in,   j_out = j_in * s,")
    out("  start_out = start_in + ((k - 1) * d / 2 - pad) * j_in  (centre of output 0's field)")
    out(
        format_table(
            [
                dict(
                    layer=r["name"],
                    size=r["size"],
                    rf=r["rf"][0],
                    jump=r["jump"][0],
                    start=r["start"][0],
                )
                for r in rows
            ],
            indent="    ",
        )
    )
    last = rows[-1]
    out(
        f"  Each output of the last layer sees a {last['rf'][0]}x{last['rf'][1]} patch of the "
        f"input; neighbouring outputs are {last['jump'][0]} input pixels apart."
    )
    out("\n  Cost on a 1x32x32x3 input (MACs = H_out * W_out * F * Fh * Fw * C):")
    columns = ["name", "out_shape", "macs", "flops", "params", "activation_bytes"]
    out(format_table(cost_table(layers, (1, 32, 32, 3)), columns, indent="    "))


SECTIONS: dict[str, Callable] = {
    "example": section_worked_example,
    "size": section_output_size,
    "padding": section_padding,
    "stride": section_stride_dilation,
    "channels": section_channels,
    "pooling": section_pooling,
    "separable": section_separable,
    "transpose": section_transpose,
    "receptive": section_receptive_field,
}


# --------------------------------------------------------------------------------------
# The figure
# --------------------------------------------------------------------------------------

EDGE_KERNELS = {
    "Sobel x (vertical edges)": np.array([[1, 0, -1], [2, 0, -2], [1, 0, -1]], np.float32),
    "Sobel y (horizontal edges)": np.array([[1, 2, 1], [0, 0, 0], [-1, -2, -1]], np.float32),
    "Laplacian (all edges)": np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], np.float32),
    "Box blur 5x5": np.full((5, 5), 1 / 25, np.float32),
}


def feature_maps(image, impl=None) -> dict[str, np.ndarray]:
    """Edge-kernel feature maps of a grayscale ``(H, W)`` image: one conv call with all
    kernels as output channels (same padding, reflect border), then ReLU and 2x2 max pool
    of the Sobel magnitude."""
    import jax

    import jaxconv
    from jaxconv._src.pooling import max_pool

    k = max(w.shape[0] for w in EDGE_KERNELS.values())
    bank = np.zeros((k, k, 1, len(EDGE_KERNELS)), np.float32)
    for i, w in enumerate(EDGE_KERNELS.values()):
        o = (k - w.shape[0]) // 2
        bank[o : o + w.shape[0], o : o + w.shape[1], 0, i] = w
    y = np.asarray(
        jaxconv.conv(
            image[None, :, :, None],
            bank,
            padding="SAME",
            padding_mode="reflect",
            implementation=impl,
        )
    )[0]
    maps = {name: y[..., i] for i, name in enumerate(EDGE_KERNELS)}
    magnitude = np.hypot(y[..., 0], y[..., 1])
    maps["ReLU(Sobel x)"] = np.asarray(jax.nn.relu(y[..., 0]))
    maps["|Sobel| then 2x2 max pool"] = np.asarray(max_pool(magnitude[..., None], (2, 2), (2, 2)))[
        ..., 0
    ]
    return maps


def save_figure(path: str, impl=None, out=print) -> int:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from sklearn.datasets import load_sample_image
    except ImportError as e:
        print(
            f"`--plot` needs matplotlib and scikit-learn ({e}); install them with "
            "`pip install 'jaxconv[demo]'`",
            file=sys.stderr,
        )
        return 2
    photo = load_sample_image("china.jpg").astype(np.float32) / 255.0
    gray = photo @ np.array([0.299, 0.587, 0.114], np.float32)
    gray = gray[::2, ::2]  # 214 x 320: quick, still a real photograph
    maps = feature_maps(gray, impl)
    n = 1 + len(maps)
    cols = 4
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows))
    axes = np.asarray(axes).reshape(-1)
    axes[0].imshow(gray, cmap="gray")
    axes[0].set_title("input (sklearn china.jpg, gray)")
    for ax, (name, m) in zip(axes[1:], maps.items()):
        lim = float(np.max(np.abs(m))) or 1.0
        signed = float(np.min(m)) < 0
        ax.imshow(m, cmap="RdBu_r" if signed else "gray", vmin=-lim if signed else 0, vmax=lim)
        ax.set_title(name)
    for ax in axes:
        ax.axis("off")
    fig.suptitle("jaxconv: feature maps of edge-detection kernels")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    out(f"\nSaved feature maps of {len(EDGE_KERNELS)} edge kernels to {path}")
    return 0


# --------------------------------------------------------------------------------------
# Command
# --------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--section",
        action="append",
        choices=list(SECTIONS),
        help="show only this section (repeatable; default: all)",
    )
    parser.add_argument(
        "--implementation",
        default=None,
        help="convolution implementation to use (default: automatic)",
    )
    parser.add_argument(
        "--plot",
        metavar="FILE.png",
        default=None,
        help="also save edge-kernel feature maps of a real photograph "
        "(needs matplotlib and scikit-learn: the `demo` extra)",
    )


def main(args: argparse.Namespace) -> int:
    out = print
    out("jaxconv demo: convolution on real numbers (every number below is computed by jaxconv)")
    for name in args.section or list(SECTIONS):
        SECTIONS[name](args.implementation, out)
    if args.plot:
        return save_figure(args.plot, args.implementation, out)
    return 0
