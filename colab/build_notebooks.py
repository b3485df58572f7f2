"""Write the notebooks of ``colab/`` (without outputs) from the cell sources below.

Run ``python colab/build_notebooks.py`` after editing a cell here; the ``.ipynb`` files
are the committed result, executed top to bottom by ``tests/test_notebooks.py``.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

#: GitHub ``owner/name`` of the repository the Colab badges and install cells point at.
#: Update once the repository is published.
REPOSITORY = "jaxconv/jaxconv"

HERE = Path(__file__).resolve().parent


def md(text: str):
    return new_markdown_cell(textwrap.dedent(text).strip())


def code(text: str):
    return new_code_cell(textwrap.dedent(text).strip())


def badge(filename: str) -> str:
    url = f"https://colab.research.google.com/github/{REPOSITORY}/blob/main/colab/{filename}"
    return f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({url})"


def install_cell(extra: str = "notebooks"):
    """Installs jaxconv from GitHub unless it is importable (a local checkout, CI)."""
    return code(
        f'''
        # Install jaxconv, skipped when it is already importable (a local checkout, CI).
        import importlib.util
        import os
        import shutil
        import subprocess
        import sys

        JAXCONV_REPOSITORY = "{REPOSITORY}"  # GitHub owner/name

        if importlib.util.find_spec("jaxconv") is None:
            packages = [f"jaxconv[{extra}] @ git+https://github.com/{{JAXCONV_REPOSITORY}}"]
            # Keep jax's accelerator plugin in step with the jax that jaxconv needs.
            if shutil.which("nvidia-smi"):
                packages.append("jax[cuda12]>=0.10.2")
            elif os.path.exists("/dev/accel0") or "COLAB_TPU_ADDR" in os.environ:
                packages.append("jax[tpu]>=0.10.2")
            subprocess.run([sys.executable, "-m", "pip", "install", "-q", *packages], check=True)
        else:
            print("jaxconv is already importable: nothing to install")
        '''
    )


def devices_cell():
    return code(
        """
        import jax

        import jaxconv

        print(f"jax {jax.__version__}, jaxconv {jaxconv.__version__}")
        print("default backend:", jax.default_backend())
        print("devices:", jax.devices())
        """
    )


def notebook(filename: str, cells: list, accelerator: str | None = None):
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.metadata["language_info"] = {"name": "python"}
    nb.metadata["colab"] = {"name": filename, "provenance": [], "toc_visible": True}
    if accelerator:
        nb.metadata["accelerator"] = accelerator
        if accelerator == "GPU":
            nb.metadata["colab"]["gpuType"] = "T4"
    return nb


# ----------------------------------------------------------------------------------------
# 01: convolution from scratch
# ----------------------------------------------------------------------------------------

NB01 = "01_convolution_from_scratch.ipynb"


def notebook_01():
    cells = [
        md(
            f"""
            # Convolution from scratch, on real numbers

            {badge(NB01)}

            What a convolution layer computes, one idea at a time, each computed by
            [jaxconv](https://github.com/{REPOSITORY}) and checked against a plain loop, numpy
            or scipy: the sliding window, correlation against true convolution (the worked
            4x4 example), padding words and boundary modes, stride and dilation, channels,
            kernels, bias and ReLU, pooling, what depthwise-separable convolution saves,
            transposed convolution as upsampling, how the receptive field grows through a
            stack, and edge detection on a real photograph.

            Runs on any Colab runtime (a CPU one is enough) in well under a minute.
            """
        ),
        install_cell("notebooks"),
        devices_cell(),
        md(
            """
            ## Parameters

            The only cell to edit. `JAXCONV_SMOKE=1` (set by the test suite) shrinks the
            photograph so the whole notebook runs in seconds on one CPU core.
            `IMPLEMENTATION` picks how every convolution below is computed: `None` (the
            automatic choice), `"xla"` (lax itself), `"im2col"` or `"taps"`; the numbers
            are the same whichever you pick.
            """
        ),
        code(
            """
            import os

            SMOKE = os.environ.get("JAXCONV_SMOKE", "0") == "1"
            IMPLEMENTATION = None  # None (automatic), "xla", "im2col" or "taps"
            PHOTO_STEP = 8 if SMOKE else 2  # keep every PHOTO_STEP-th pixel of the 427x640 photo
            CROP = 16 if SMOKE else 40  # side of the photo crop used for padding pictures
            """
        ),
        code(
            """
            import jax.numpy as jnp
            import matplotlib.pyplot as plt
            import numpy as np
            import scipy.signal
            from matplotlib.patches import Rectangle
            from sklearn.datasets import load_sample_image

            plt.rcParams.update({"figure.dpi": 80, "image.interpolation": "nearest"})

            photo = load_sample_image("china.jpg")[::PHOTO_STEP, ::PHOTO_STEP] / np.float32(255)
            photo = photo.astype(np.float32)  # (H, W, 3) in [0, 1]
            gray = photo @ np.array([0.299, 0.587, 0.114], np.float32)  # (H, W) luminance
            top, left = int(0.35 * gray.shape[0]), int(0.25 * gray.shape[1])
            crop = gray[top : top + CROP, left : left + CROP]  # a piece of the pagoda: edges
            # Implementations that compute on this machine as compiled code; the Pallas
            # kernels (interpreted on a CPU) have their own notebook, 02.
            WINDOW_IMPLEMENTATIONS = [n for n in jaxconv.implementations() if not n.startswith("pallas")]
            print("photo", photo.shape, "gray", gray.shape, "crop", crop.shape)


            # Notebook-only drawing helpers (no convolution in here).
            def show_numbers(ax, a, title="", box=None, cmap="RdBu_r"):
                \"\"\"A small matrix as coloured cells with its numbers written in;
                `box=(row, col, height, width)` outlines a window.\"\"\"
                a = np.asarray(a, dtype=np.float64)
                lim = 1.6 * (float(np.max(np.abs(a))) or 1.0)  # pale colours, legible numbers
                ax.imshow(a, cmap=cmap, vmin=0 if a.min() >= 0 and cmap != "RdBu_r" else -lim, vmax=lim)
                for (i, j), v in np.ndenumerate(a):
                    ax.text(j, i, f"{v:.3g}", ha="center", va="center", fontsize=9)
                if box is not None:
                    i, j, h, w = box
                    ax.add_patch(Rectangle((j - 0.5, i - 0.5), w, h, fill=False, ec="k", lw=3))
                ax.set_title(title)
                ax.set_xticks([])
                ax.set_yticks([])


            def show_image(ax, a, title="", signed=None):
                \"\"\"An image in gray, or in blue/red when it has negative values.\"\"\"
                a = np.asarray(a)
                signed = float(a.min()) < 0 if signed is None else signed
                if a.ndim == 3:
                    ax.imshow(np.clip(a, 0, 1))
                elif signed:
                    lim = float(np.abs(a).max()) or 1.0
                    ax.imshow(a, cmap="RdBu_r", vmin=-lim, vmax=lim)
                else:
                    ax.imshow(a, cmap="gray")
                ax.set_title(title, fontsize=10)
                ax.axis("off")
            """
        ),
        md(
            """
            ## 1. The sliding window: a numpy loop beside jaxconv

            A convolution layer slides a small kernel over the image; at every position it
            multiplies the window by the kernel element by element and adds the products:

            $$y[i, j] = \\sum_{a,b} x[i + a,\\ j + b]\\; k[a, b]$$

            Two loops say it all. (Strictly, this is *cross-correlation*; section 2 shows
            why deep learning calls it convolution anyway.)
            """
        ),
        code(
            """
            def correlate2d_loop(image, kernel):
                \"\"\"'valid' cross-correlation with two plain loops.\"\"\"
                kh, kw = kernel.shape
                out = np.zeros((image.shape[0] - kh + 1, image.shape[1] - kw + 1))
                for i in range(out.shape[0]):
                    for j in range(out.shape[1]):
                        out[i, j] = np.sum(image[i : i + kh, j : j + kw] * kernel)
                return out


            rng = np.random.default_rng(0)
            x = rng.integers(-3, 4, size=(6, 6)).astype(np.float32)
            k = rng.integers(-1, 2, size=(3, 3)).astype(np.float32)
            loop = correlate2d_loop(x, k)
            # The same thing through jaxconv: the textbook function, and the layer-style
            # channels-last `conv` (batch 1, one channel in, one out) with every implementation.
            ours = {"correlate2d": np.asarray(jaxconv.correlate2d(x, k, "valid"))}
            for impl in WINDOW_IMPLEMENTATIONS:
                try:
                    y = jaxconv.conv(x[None, :, :, None], k[:, :, None, None], padding="VALID", implementation=impl)
                except NotImplementedError as e:  # an implementation says what it cannot do
                    print(e)
                    continue
                ours[f"conv, {impl}"] = np.asarray(y[0, :, :, 0])
            for name, y in ours.items():
                np.testing.assert_allclose(y, loop, rtol=2e-5, atol=2e-5 * np.abs(loop).max())
                print(f"{name:16s} matches the loop, max |difference| = {np.max(np.abs(y - loop)):.1e}")

            fig, axes = plt.subplots(1, 3, figsize=(10, 3.4))
            show_numbers(axes[0], x, "input x (6x6), window at (1, 2)", box=(1, 2, 3, 3))
            show_numbers(axes[1], k, "kernel k (3x3)")
            show_numbers(axes[2], loop, f"output y (4x4): y[1, 2] = {loop[1, 2]:g}", box=(1, 2, 1, 1))
            plt.tight_layout()
            plt.show()
            """
        ),
        md(
            """
            A `(H, W)` image and a `(kh, kw)` kernel give a `(H - kh + 1, W - kw + 1)` output
            when the kernel has to stay inside the image ("valid"). The general rule, with
            padding, stride and dilation, is

            $$n_{out} = \\left\\lfloor \\frac{n + p_{lo} + p_{hi} - d\\,(k - 1) - 1}{s} \\right\\rfloor + 1$$

            and `jaxconv.output_shape` computes it for any layout.
            """
        ),
        md(
            """
            ## 2. Correlation (-8) against true convolution (+8)

            The worked example: the 4x4 image of the numbers 1 to 16 and a 2x2 horizontal-edge
            kernel. Every window gives the same answer, because each row of the image is the
            row above plus 4.
            """
        ),
        code(
            """
            image = np.arange(1, 17, dtype=np.float32).reshape(4, 4)
            edge = np.array([[1, 1], [-1, -1]], np.float32)

            corr = np.asarray(jaxconv.correlate2d(image, edge, "valid", implementation=IMPLEMENTATION))
            conv = np.asarray(jaxconv.convolve2d(image, edge, "valid", implementation=IMPLEMENTATION))
            print("top-left window, kernel as written: 1*1 + 2*1 + 5*(-1) + 6*(-1) =", corr[0, 0])
            print("top-left window, kernel flipped:    1*(-1) + 2*(-1) + 5*1 + 6*1 =", conv[0, 0])

            assert np.all(corr == -8) and np.all(conv == 8)
            # scipy agrees: its convolve2d flips the kernel, its correlate2d does not.
            np.testing.assert_array_equal(conv, scipy.signal.convolve2d(image, edge, "valid"))
            np.testing.assert_array_equal(corr, scipy.signal.correlate2d(image, edge, "valid"))

            fig, axes = plt.subplots(1, 5, figsize=(15, 3.2))
            show_numbers(axes[0], image, "image", box=(0, 0, 2, 2))
            show_numbers(axes[1], edge, "kernel as written")
            show_numbers(axes[2], corr, "correlate2d: -8")
            show_numbers(axes[3], edge[::-1, ::-1], "kernel flipped (both axes)")
            show_numbers(axes[4], conv, "convolve2d: +8")
            plt.tight_layout()
            plt.show()
            """
        ),
        md(
            """
            **Why they differ.** True convolution (the one of signal processing, of
            `scipy.signal.convolve2d` and of the convolution theorem) flips the kernel in
            every axis before sliding it; cross-correlation slides it as written. This edge
            kernel is antisymmetric, flipping negates it, so the sign of every output
            changes: correlation gives -8, convolution +8 (a common write-up of this example
            says -8 for convolution; scipy says +8).

            **Why CNNs do not care.** A network learns its kernels: if the flipped kernel is
            the useful one, training finds it. So every deep-learning framework computes
            cross-correlation and calls it convolution; `jaxconv.conv` and
            `jaxconv.conv_general_dilated` do the same, `jaxconv.convolve2d` flips.
            """
        ),
        md(
            """
            ## 3. Padding: how much, and filled with what

            *How much* is a padding word (or explicit `(lo, hi)` pairs per axis). Below, a 5x5
            box blur on a crop of the photograph: the top row is the zero-padded input the
            kernel slides over (the red square is the original crop), the bottom row the
            output and its size. A 1x1 kernel of one with the same padding returns the
            padded input itself, which is how the top row is drawn.
            """
        ),
        code(
            """
            one = np.ones((1, 1, 1, 1), np.float32)  # the identity kernel
            blur = np.full((5, 5, 1, 1), 1 / 25, np.float32)
            x = crop[None, :, :, None]
            dims = ("NHWC", "HWIO", "NHWC")

            words = ["VALID", "SAME", "FULL", "CAUSAL"]
            fig, axes = plt.subplots(2, len(words), figsize=(3.2 * len(words), 6.4))
            for col, word in enumerate(words):
                spec = jaxconv.ConvSpec.create(x.shape, blur.shape, 1, word, dimension_numbers=dims)
                pads = spec.padding  # the word resolved to (lo, hi) per axis
                padded = jaxconv.conv(x, one, padding=pads, implementation=IMPLEMENTATION)[0, :, :, 0]
                y = jaxconv.conv(x, blur, padding=word, implementation=IMPLEMENTATION)[0, :, :, 0]
                assert y.shape == spec.out_shape[1:3]
                show_image(axes[0, col], padded, f"{word}: pads {pads[0]}")
                (lo_h, _), (lo_w, _) = pads
                axes[0, col].add_patch(
                    Rectangle((lo_w - 0.5, lo_h - 0.5), CROP, CROP, fill=False, ec="r", lw=2)
                )
                show_image(axes[1, col], y, f"5x5 blur -> {y.shape[0]}x{y.shape[1]}")
            fig.suptitle(f"padding words on a {CROP}x{CROP} crop, 5x5 kernel, stride 1")
            plt.tight_layout()
            plt.show()

            for word in words:
                shape = jaxconv.output_shape((1, 224, 224, 3), (7, 7, 3, 64), 2, word, dimension_numbers=dims)
                print(f"{word:7s} 224x224 input, 7x7 kernel, stride 2 -> {shape[1]}x{shape[2]}")
            """
        ),
        md(
            """
            `VALID` pads nothing and shrinks the image; `SAME` pads so that the output has
            `ceil(n / stride)` samples (the odd one after); `FULL` pads `k - 1` on each side:
            every partial overlap; `CAUSAL` puts all the padding before, so output `t` never
            sees an input after `t` (WaveNet, audio, time series).

            *Filled with what* is the boundary mode (`padding_mode=`). Zeros darken the
            border of a blurred image; the others continue the image in different ways. The
            same words mean different things in numpy, PyTorch and scipy (see the README's
            table): here is what each of jaxconv's modes does on one image.
            """
        ),
        code(
            """
            pad = CROP // 2
            modes = {
                "zeros": {},
                "constant (0.5)": {"padding_value": 0.5},
                "reflect": {},
                "symmetric": {},
                "circular": {},
                "replicate": {},
            }
            fig, axes = plt.subplots(2, len(modes), figsize=(2.6 * len(modes), 5.6))
            for col, (name, extra) in enumerate(modes.items()):
                mode = name.split()[0]
                padded = jaxconv.conv(x, one, padding=pad, padding_mode=mode, implementation=IMPLEMENTATION, **extra)
                blurred = jaxconv.conv(x, blur, padding="SAME", padding_mode=mode, implementation=IMPLEMENTATION, **extra)
                show_image(axes[0, col], padded[0, :, :, 0], name, signed=False)
                axes[0, col].add_patch(Rectangle((pad - 0.5, pad - 0.5), CROP, CROP, fill=False, ec="r", lw=2))
                show_image(axes[1, col], blurred[0, :, :, 0], "5x5 blur, SAME", signed=False)
            plt.tight_layout()
            plt.show()

            row = np.array([1, 2, 3, 4], np.float32)  # the row "a b c d" padded by 2
            for mode in ["zeros", "reflect", "symmetric", "circular", "replicate"]:
                padded = jaxconv.conv(row[None, :, None], one[0], padding=2, padding_mode=mode)[0, :, 0]
                print(f"{mode:10s}", np.asarray(padded).astype(int))
            """
        ),
        md(
            """
            ## 4. Stride and dilation

            *Stride* moves the window by more than one sample: the output shrinks by the
            stride. *Dilation* spreads the kernel's taps apart: a 3x3 kernel with dilation 2
            covers a 5x5 area with 9 weights. Which input pixels does an output read? Its
            gradient with respect to the input says exactly that (the kernel placed on its
            window), so `jax.grad` through `jaxconv.conv` draws it: blue for output (0, 0),
            red for its right-hand neighbour (0, 1), purple where both read.
            """
        ),
        code(
            """
            def pixels_read(stride, dilation, size=9):
                \"\"\"1 where output (0, 0) reads, 2 where output (0, 1) reads, 3 for both.\"\"\"
                w = jnp.ones((3, 3, 1, 1))

                def output(x, i, j):
                    y = jaxconv.conv(x, w, stride=stride, dilation=dilation, padding="VALID", implementation=IMPLEMENTATION)
                    return y[0, i, j, 0]

                x = jnp.zeros((1, size, size, 1))
                first = jax.grad(output)(x, 0, 0)[0, :, :, 0]
                second = jax.grad(output)(x, 0, 1)[0, :, :, 0]
                return np.asarray(first + 2 * second)


            colours = plt.matplotlib.colors.ListedColormap(["white", "tab:blue", "tab:red", "tab:purple"])
            fig, axes = plt.subplots(1, 4, figsize=(13, 3.6))
            for ax, (s, d) in zip(axes, [(1, 1), (2, 1), (1, 2), (2, 2)]):
                shape = jaxconv.output_shape((1, 9, 9, 1), (3, 3, 1, 1), s, "VALID", None, d, dims)
                ax.imshow(pixels_read(s, d), cmap=colours, vmin=0, vmax=3)
                ax.set_xticks(np.arange(-0.5, 9), minor=True)
                ax.set_yticks(np.arange(-0.5, 9), minor=True)
                ax.grid(which="minor", color="0.8")
                ax.tick_params(which="both", length=0, labelbottom=False, labelleft=False)
                ax.set_title(f"stride {s}, dilation {d}\\n9x9 -> {shape[1]}x{shape[2]}")
            plt.tight_layout()
            plt.show()
            """
        ),
        md(
            """
            ## 5. Channels, several kernels, bias and ReLU

            A colour image has 3 channels, so a kernel has one 2-D slice per input channel:
            each output is the **sum over input channels** of the per-channel correlations.
            A layer has several kernels; each gives one output channel (one *feature map*).
            In jaxconv's channels-last layout the kernel is `(kh, kw, C_in, C_out)`. Four
            hand-made kernels on the colour photograph:
            """
        ),
        code(
            """
            sobel_x = np.array([[1, 0, -1], [2, 0, -2], [1, 0, -1]], np.float32)
            centre = np.zeros((3, 3), np.float32)
            centre[1, 1] = 1
            kernels = np.zeros((3, 3, 3, 4), np.float32)  # (kh, kw, C_in=RGB, C_out=4)
            kernels[:, :, :, 0] = sobel_x[:, :, None] / 3  # vertical edges of the brightness
            kernels[:, :, 0, 1], kernels[:, :, 1, 1] = centre, -centre  # red minus green
            kernels[:, :, 2, 2] = 1 / 9  # blurred blue
            kernels[:, :, 1, 3] = [[0, 1, 0], [1, -4, 1], [0, 1, 0]]  # Laplacian of green
            names = ["Sobel x of RGB mean", "red - green", "blur of blue", "Laplacian of green"]

            rgb = photo[None]  # (1, H, W, 3)
            # A mirrored border (section 3) keeps the frame of the image from looking like an edge.
            mirror = dict(padding="SAME", padding_mode="symmetric", implementation=IMPLEMENTATION)
            y = np.asarray(jaxconv.conv(rgb, kernels, **mirror))
            print("input", rgb.shape, "kernel", kernels.shape, "-> output", y.shape)

            # Output channel 0 is the sum of three single-channel correlations (scipy's
            # boundary "symm" is the same mirrored border).
            parts = [
                jaxconv.correlate2d(photo[:, :, c], kernels[:, :, c, 0], "same", boundary="symm")
                for c in range(3)
            ]
            np.testing.assert_allclose(y[0, :, :, 0], sum(parts), rtol=1e-5, atol=1e-5)

            fig, axes = plt.subplots(2, 4, figsize=(14, 5.4))
            show_image(axes[0, 0], photo, "input (RGB)")
            for c, name in enumerate(["red", "green", "blue"]):
                show_image(axes[0, c + 1], photo[:, :, c], f"channel {c}: {name}")
            for o, name in enumerate(names):
                show_image(axes[1, o], y[0, :, :, o], f"output {o}: {name}")
            plt.tight_layout()
            plt.show()
            """
        ),
        md(
            """
            A layer then adds a **bias** per output channel and applies a non-linearity,
            usually **ReLU** `max(0, v)`: negative responses are cut to zero, so a feature map
            says where a pattern *is*, not where its opposite is. `conv(..., bias=b,
            activation=jax.nn.relu)` does both in the same call (fused where the
            implementation can).
            """
        ),
        code(
            """
            bias = np.array([-0.05, 0.0, -0.3, 0.0], np.float32)
            z = np.asarray(
                jaxconv.conv(rgb, kernels, bias=bias, activation=jax.nn.relu, **mirror)
            )
            np.testing.assert_allclose(z, np.maximum(y + bias, 0), rtol=1e-5, atol=1e-6)

            fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
            axes[0].hist(y[..., 0].ravel() + bias[0], bins=60, color="0.5")
            axes[0].axvline(0, color="r")
            axes[0].set_title("output 0 + bias: ReLU keeps what is right of the red line", fontsize=10)
            show_image(axes[1], y[0, :, :, 0] + bias[0], "Sobel x + bias")
            show_image(axes[2], z[0, :, :, 0], "ReLU(Sobel x + bias)")
            plt.tight_layout()
            plt.show()
            print(f"ReLU zeroed {np.mean(z[..., 0] == 0):.0%} of the map")
            """
        ),
        md(
            """
            ## 6. Pooling

            Pooling slides a window like a convolution but has no weights: it takes the
            maximum (`max_pool`) or the mean (`avg_pool`) of each window. With stride equal
            to the window it halves the resolution, keeping the strongest response of each
            2x2 block.
            """
        ),
        code(
            """
            a = np.array([[1, 3, 2, 4], [5, 6, 1, 2], [7, 2, 9, 0], [1, 8, 3, 4]], np.float32)
            mp = np.asarray(jaxconv.max_pool(a[:, :, None], (2, 2), (2, 2)))[:, :, 0]
            ap = np.asarray(jaxconv.avg_pool(a[:, :, None], (2, 2), (2, 2)))[:, :, 0]
            np.testing.assert_array_equal(mp, a.reshape(2, 2, 2, 2).max(axis=(1, 3)))
            np.testing.assert_allclose(ap, a.reshape(2, 2, 2, 2).mean(axis=(1, 3)))
            gap = jaxconv.global_avg_pool(a[None, :, :, None])
            np.testing.assert_allclose(gap[0, 0], a.mean())

            edges = z[0, :, :, :1]  # the ReLU'd Sobel map from section 5
            pooled = [jaxconv.max_pool(edges, (p, p), (p, p))[:, :, 0] for p in (2, 4)]
            fig, axes = plt.subplots(1, 6, figsize=(17, 3.2), gridspec_kw={"width_ratios": [1, 0.5, 0.5, 1.6, 1.6, 1.6]})
            show_numbers(axes[0], a, "x", box=(0, 0, 2, 2), cmap="Greens")
            show_numbers(axes[1], mp, "max_pool 2x2", cmap="Greens")
            show_numbers(axes[2], ap, "avg_pool 2x2", cmap="Greens")
            show_image(axes[3], edges[:, :, 0], f"ReLU(Sobel x) {edges.shape[0]}x{edges.shape[1]}")
            for ax, p, m in zip(axes[4:], (2, 4), pooled):
                show_image(ax, m, f"max_pool {p}x{p}, stride {p}: {m.shape[0]}x{m.shape[1]}")
            plt.tight_layout()
            plt.show()
            """
        ),
        md(
            """
            ## 7. Dense against depthwise-separable: what it costs

            A dense `k x k` convolution from `C` to `O` channels does `k*k*C*O`
            multiply-adds per output pixel. A *depthwise-separable* one (MobileNet, Xception)
            splits it in two: a depthwise `k x k` convolution, one kernel per channel
            (`k*k*C`), then a pointwise `1 x 1` convolution that mixes channels (`C*O`). The
            ratio is `1/O + 1/k^2`, which tends to `1/9` for 3x3 kernels and many channels
            (8.4 times fewer multiply-adds at 128 channels). First, that the pieces are what
            they say:
            """
        ),
        code(
            """
            C, O = 3, 4
            x = photo[None, :16, :16]  # (1, 16, 16, 3)
            depthwise = rng.normal(size=(3, 3, C, 1)).astype(np.float32)
            pointwise = rng.normal(size=(C, O)).astype(np.float32)
            sep = jaxconv.separable_conv(x, depthwise, pointwise, implementation=IMPLEMENTATION)
            # depthwise = a grouped convolution with one group per channel, then a 1x1 convolution
            # (a depthwise kernel (kh, kw, C, 1) is the grouped kernel (kh, kw, 1, C))
            dw = jaxconv.conv(x, depthwise.reshape(3, 3, 1, C), groups=C, implementation=IMPLEMENTATION)
            np.testing.assert_allclose(jaxconv.depthwise_conv(x, depthwise), dw, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(sep, jaxconv.conv(dw, pointwise[None, None]), rtol=1e-5, atol=1e-5)
            print("separable_conv = depthwise_conv (groups = C) then a 1x1 conv:", sep.shape)

            cost = jaxconv.separable_cost((1, 56, 56, 128), (3, 3), 128)
            for part in ("dense", "depthwise", "pointwise", "separable"):
                print(f"{part:10s} MACs {cost[part]['macs']:>12,d}   params {cost[part]['params']:>7,d}")
            print(f"separable / dense FLOPs = {cost['flops_ratio']:.3f} = 1/128 + 1/9")
            """
        ),
        code(
            """
            channels = [8, 16, 32, 64, 128, 256, 512]
            fig, ax = plt.subplots(figsize=(7, 3.6))
            for k, colour in [(3, "tab:blue"), (5, "tab:orange"), (7, "tab:green")]:
                ratio = [jaxconv.separable_cost((1, 28, 28, c), (k, k), c)["flops_ratio"] for c in channels]
                ax.plot(channels, ratio, "o", color=colour, label=f"{k}x{k}: separable_cost")
                ax.plot(channels, [1 / c + 1 / k**2 for c in channels], "-", color=colour, alpha=0.5, label=f"1/O + 1/{k * k}")
            ax.set_xscale("log", base=2)
            ax.set_xlabel("channels C = O")
            ax.set_ylabel("separable / dense FLOPs")
            ax.set_title("the saving grows with the kernel and the channels")
            ax.legend(ncol=3, fontsize=8)
            plt.tight_layout()
            plt.show()
            """
        ),
        md(
            """
            ## 8. Transposed convolution: learnable upsampling

            A transposed convolution with stride 2 puts a zero between input samples and
            convolves: each input sample *paints* a scaled copy of the kernel into an output
            twice as large, and overlapping copies add up. Decoders (U-Net, DCGAN) learn their
            upsampling this way; with a fixed bilinear kernel it is bilinear interpolation
            (the darker frame: zeros beyond the border). It is also exactly the gradient of a
            strided convolution with respect to its input, which the cell checks.
            """
        ),
        code(
            """
            small = np.array([[1, 2], [3, 4]], np.float32)
            ones = np.ones((2, 2), np.float32)
            up = jaxconv.conv_transpose_torch(small[None, None], ones[None, None], stride=2)[0, 0]

            # Bilinear upsampling of the photo crop as a transposed convolution (PyTorch's
            # meaning of the arguments: kernel 4, stride 2, padding 1 doubles the size).
            tent = np.array([0.25, 0.75, 0.75, 0.25], np.float32)
            bilinear = np.outer(tent, tent)
            crop_up = jaxconv.conv_transpose_torch(
                crop[None, None], bilinear[None, None], stride=2, padding=1, implementation=IMPLEMENTATION
            )[0, 0]
            nearest = np.kron(crop, np.ones((2, 2), np.float32))

            # The transposed convolution is the input gradient (vjp) of the forward one.
            w = bilinear[:, :, None, None]
            _, vjp = jax.vjp(lambda v: jaxconv.conv(v, w, stride=2, padding=1), jnp.zeros((1, 2 * CROP, 2 * CROP, 1)))
            np.testing.assert_allclose(vjp(crop[None, :, :, None])[0][0, :, :, 0], crop_up, rtol=1e-5, atol=1e-6)

            fig, axes = plt.subplots(1, 5, figsize=(16, 3.4), gridspec_kw={"width_ratios": [0.6, 0.6, 1, 1.4, 1.4]})
            show_numbers(axes[0], small, "input 2x2", cmap="Greens")
            show_numbers(axes[1], ones, "kernel 2x2", cmap="Greens")
            show_numbers(axes[2], up, "stride 2: 4x4", cmap="Greens")
            show_image(axes[3], nearest, f"nearest {crop.shape[0]} -> {nearest.shape[0]}")
            show_image(axes[4], crop_up, f"transposed conv, bilinear kernel -> {crop_up.shape[0]}")
            plt.tight_layout()
            plt.show()
            """
        ),
        md(
            """
            ## 9. How the receptive field grows through a stack

            An output of layer `L` sees a patch of the input, its *receptive field*. With
            `k` the window, `s` the stride, `d` the dilation and `j` the jump (input pixels
            between neighbouring outputs), each layer adds `(k - 1) * d * j` and multiplies
            the jump by `s`. Stacked 3x3 convolutions grow it linearly; strides and pooling,
            or dilations that double, grow it exponentially. `jaxconv.receptive_field`
            applies the recurrences.
            """
        ),
        code(
            """
            depth = 8
            stacks = {
                "3x3 convs, stride 1": [jaxconv.conv_layer(3, 32, padding=1) for _ in range(depth)],
                "3x3 convs, max pool 2 after every 2nd": [
                    jaxconv.conv_layer(3, 32, padding=1) if i % 3 != 2 else jaxconv.pool_layer(2)
                    for i in range(depth)
                ],
                "3x3 convs, dilation 1, 2, 4, ...": [
                    jaxconv.conv_layer(3, 32, padding=2**i, dilation=2**i) for i in range(depth)
                ],
            }
            fig, ax = plt.subplots(figsize=(7, 3.8))
            for name, layers in stacks.items():
                rows = jaxconv.receptive_field(layers, (224, 224))
                ax.plot(range(1, depth + 1), [r["rf"][0] for r in rows], "o-", label=name)
            ax.set_yscale("log", base=2)
            ax.set_xlabel("layer")
            ax.set_ylabel("receptive field (pixels)")
            ax.legend()
            plt.tight_layout()
            plt.show()

            layers = stacks["3x3 convs, max pool 2 after every 2nd"]
            for row in jaxconv.cost_table(layers, (1, 224, 224, 3)):
                print(f"{row['name']:6s} out {str(row['out_shape']):20s} rf {row['rf'][0]:3d}  MACs {row['macs']:>13,d}")
            """
        ),
        code(
            """
            # The same stack's receptive fields drawn on the photograph, centred on one output.
            rows = jaxconv.receptive_field(layers, gray.shape)
            fig, ax = plt.subplots(figsize=(7, 4.6))
            ax.imshow(gray, cmap="gray")
            cy, cx = gray.shape[0] / 2, gray.shape[1] / 2
            for i, r in enumerate(rows):
                rf = r["rf"][0]
                colour = plt.cm.viridis(i / len(rows))
                ax.add_patch(Rectangle((cx - rf / 2, cy - rf / 2), rf, rf, fill=False, ec=colour, lw=2, label=f"layer {i + 1}: {rf}"))
            ax.legend(loc="upper left", bbox_to_anchor=(1, 1), fontsize=8)
            ax.set_title(f"receptive fields of one output ({gray.shape[0]}x{gray.shape[1]} photo)")
            ax.axis("off")
            plt.tight_layout()
            plt.show()
            """
        ),
        md(
            """
            ## 10. Edge detection and feature maps on a real photograph

            Hand-made kernels are what a trained first layer tends to learn: Sobel filters
            respond to vertical and horizontal edges (red and blue for the two directions of
            change), the Laplacian to every edge, a box blur smooths. jaxconv's demo applies
            them all in one convolution (the kernels stacked as output channels, `SAME`
            padding with a reflected border, so no dark frame), then ReLU and max pooling, as
            a CNN's first block would; `jaxconv demo --plot maps.png` saves the same figure
            from the command line.
            """
        ),
        code(
            """
            from jaxconv._src.commands.demo import EDGE_KERNELS, feature_maps

            maps = feature_maps(gray, IMPLEMENTATION)
            fig, axes = plt.subplots(2, 4, figsize=(15, 6.2))
            axes = axes.ravel()
            show_image(axes[0], gray, f"input (china.jpg, gray) {gray.shape[0]}x{gray.shape[1]}")
            for ax, (name, m) in zip(axes[1:], maps.items()):
                show_image(ax, m, f"{name} {m.shape[0]}x{m.shape[1]}")
            for ax in axes[1 + len(maps) :]:
                ax.axis("off")
            plt.tight_layout()
            plt.show()
            print("kernels:", ", ".join(EDGE_KERNELS))
            """
        ),
        md(
            """
            ## 11. Every implementation, the same numbers

            `IMPLEMENTATION` only changes *how* the convolutions are computed. The feature
            maps above, recomputed with every implementation listed by
            `jaxconv.implementations()` (the Pallas kernels have their own notebook, 02),
            against `lax.conv_general_dilated` (`"xla"`):
            """
        ),
        code(
            """
            reference = feature_maps(gray, "xla")
            for impl in WINDOW_IMPLEMENTATIONS:
                try:
                    other = feature_maps(gray, impl)
                except NotImplementedError as e:
                    print(e)
                    continue
                err = max(float(np.max(np.abs(other[n] - reference[n]))) for n in reference)
                assert err < 1e-4, (impl, err)
                print(f"{impl:8s} max |difference| from xla over all maps: {err:.1e}")
            """
        ),
        md(
            """
            ## Where next

            * `02_pallas_kernels.ipynb`: the hand-written Pallas kernels, checked against
              lax and timed on a GPU or TPU.
            * `03_train_flax_cnn.ipynb`: a CNN of `jaxconv.nn` layers trained on digits, and
              its effective receptive field.
            * `jaxconv demo` prints the numbers of this notebook in a terminal.
            """
        ),
    ]
    return notebook(NB01, cells)


# ----------------------------------------------------------------------------------------
# 03: train a Flax CNN
# ----------------------------------------------------------------------------------------

NB03 = "03_train_flax_cnn.ipynb"


def notebook_03():
    cells = [
        md(
            f"""
            # Train a Flax CNN made of jaxconv layers

            {badge(NB03)}

            `jaxconv.nn` holds Flax (linen) layers computed by jaxconv: `Conv` and
            `ConvTranspose` are drop-ins for Flax's own (same fields, same parameters), plus
            depthwise, separable and pooling layers, each taking `implementation=`. This
            notebook trains the library's small digits CNN on scikit-learn's bundled 8x8
            handwritten digits (no download) with every implementation, compares the loss
            curves and the time per training step, and maps the network's *effective*
            receptive field against the theoretical one.

            A CPU runtime trains each implementation in about a minute.
            """
        ),
        install_cell("notebooks"),
        devices_cell(),
        md(
            """
            ## Parameters

            The only cell to edit. `JAXCONV_SMOKE=1` (set by the test suite) makes every
            run a few steps long, so the notebook checks its pipeline in seconds.
            """
        ),
        code(
            """
            import os

            SMOKE = os.environ.get("JAXCONV_SMOKE", "0") == "1"
            # Implementations to train and compare (on a GPU runtime, try adding "pallas_triton").
            IMPLEMENTATIONS = ["xla", "taps"] if SMOKE else ["xla", "im2col", "taps"]
            EPOCHS = 2 if SMOKE else 20  # 20 reaches >= 98% test accuracy
            STEPS_PER_EPOCH = 8 if SMOKE else None  # None: the whole training set each epoch
            TIMING_STEPS = 3 if SMOKE else 50  # training steps timed per implementation
            STACK_DEPTH = 4 if SMOKE else 8  # 3x3 layers of the deep stack in section 5
            STACK_INPUT = 16 if SMOKE else 40  # its input side
            """
        ),
        code(
            """
            import time

            import flax.linen as nn
            import jax.numpy as jnp
            import matplotlib.pyplot as plt
            import numpy as np
            import optax

            import jaxconv.nn as jnn
            from jaxconv._src.receptive_field_map import (
                effective_receptive_field,
                plot_effective_receptive_field,
                theoretical_receptive_field_box,
            )
            from jaxconv._src.train_digits import (
                DigitsCNN,
                TrainConfig,
                load_digits_split,
                make_step,
                predict,
                train,
            )

            plt.rcParams.update({"figure.dpi": 80})
            """
        ),
        md(
            """
            ## 1. The data: 1797 handwritten digits, 8x8 pixels

            scikit-learn ships them; `load_digits_split` scales them to [0, 1], adds a
            channel axis (channels last, as Flax) and splits 80/20, stratified, with a fixed
            seed.
            """
        ),
        code(
            """
            data = load_digits_split()
            print("train", data.x_train.shape, data.y_train.shape, " test", data.x_test.shape)
            print("images per class (train):", np.bincount(data.y_train))

            fig, axes = plt.subplots(2, 10, figsize=(12, 2.8))
            for ax, img, label in zip(axes.ravel(), data.x_train, data.y_train):
                ax.imshow(img[:, :, 0], cmap="gray_r")
                ax.set_title(str(label))
                ax.axis("off")
            plt.tight_layout()
            plt.show()
            """
        ),
        md(
            """
            ## 2. A drop-in for Flax's layer

            `jaxconv.nn.Conv` takes the fields of `flax.linen.Conv` and creates the same
            parameters, so parameters made by one load into the other and give the same
            output; `implementation=` picks how it is computed. Flax's own layer also takes
            jaxconv's lax drop-in as its `conv_general_dilated`.
            """
        ),
        code(
            """
            x = jnp.asarray(data.x_train[:4])
            flax_conv = nn.Conv(16, (3, 3), strides=2, padding="SAME")
            params = flax_conv.init(jax.random.key(0), x)
            expected = flax_conv.apply(params, x)
            for impl in IMPLEMENTATIONS:
                ours = jnn.Conv(16, (3, 3), strides=2, padding="SAME", implementation=impl)
                assert jax.tree.structure(ours.init(jax.random.key(0), x)) == jax.tree.structure(params)
                np.testing.assert_allclose(ours.apply(params, x), expected, rtol=1e-5, atol=1e-5)
            plugged = nn.Conv(16, (3, 3), strides=2, conv_general_dilated=jaxconv.conv_general_dilated)
            np.testing.assert_allclose(plugged.apply(params, x), expected, rtol=1e-5, atol=1e-5)
            print("flax.linen.Conv parameters", jax.tree.map(jnp.shape, params["params"]))
            print("same output from jaxconv.nn.Conv with", IMPLEMENTATIONS, "and from the plug-in")
            """
        ),
        md(
            """
            ## 3. The model

            `DigitsCNN`: a 3x3 convolution (32 channels), a depthwise-separable 3x3 block
            (64 channels), a 2x2 max pool and a dense layer to 10 classes, ReLU between,
            every layer a `jaxconv.nn` layer on one `implementation`. The same stack written
            as layers gives its cost and receptive field (`jaxconv.cost_table`); the
            parameter counts agree.
            """
        ),
        code(
            """
            model = DigitsCNN()
            variables = model.init(jax.random.key(0), x)
            print(jax.tree.map(jnp.shape, variables["params"]))

            layers = [
                jaxconv.conv_layer(3, 32, padding="SAME", name="conv 3x3"),
                jaxconv.conv_layer(3, 32, padding="SAME", groups=32, bias=False, name="depthwise 3x3"),
                jaxconv.conv_layer(1, 64, name="pointwise 1x1"),
                jaxconv.pool_layer(2, name="max pool 2x2"),
            ]
            table = jaxconv.cost_table(layers, (1, 8, 8, 1))
            for row in table:
                print(
                    f"{row['name']:14s} out {str(row['out_shape']):15s} MACs {row['macs']:>7,d}  "
                    f"params {row['params']:>5,d}  receptive field {row['rf']}"
                )
            conv_params = sum(
                a.size for name in ("Conv_0", "SeparableConv_0") for a in jax.tree.leaves(variables["params"][name])
            )
            assert table[-1]["params"] == conv_params, (table[-1]["params"], conv_params)
            """
        ),
        md(
            """
            ## 4. Train with every implementation

            `train` runs AdamW with a cosine schedule and random one-pixel shifts, from the
            same seed, so the runs see the same batches: the implementations compute the
            same convolutions, and the loss curves lie on top of each other (up to float
            rounding, which grows slowly over a long run).
            """
        ),
        code(
            """
            results = {}
            for impl in IMPLEMENTATIONS:
                config = TrainConfig(epochs=EPOCHS, steps_per_epoch=STEPS_PER_EPOCH, implementation=impl)
                results[impl] = train(config, progress=not SMOKE, data=data)
                r = results[impl]
                print(f"{impl:8s} test accuracy {r.test_accuracy:.2%}  ({r.seconds:.1f} s with compilation)")

            first, *others = IMPLEMENTATIONS
            for impl in others:
                a, b = np.asarray(results[first].history["loss"]), np.asarray(results[impl].history["loss"])
                np.testing.assert_allclose(b[:5], a[:5], rtol=1e-3)  # the first steps agree closely
                print(f"{impl} vs {first}: largest relative loss difference {np.max(np.abs(b - a) / a):.1e}")
            """
        ),
        code(
            """
            fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(12, 4))
            for i, (impl, r) in enumerate(results.items()):
                loss = np.asarray(r.history["loss"])
                steps = np.arange(1, loss.size + 1)
                ax_loss.plot(steps, loss, lw=2.5 - i * 0.7, alpha=0.5, color=f"C{i}", label=f"{impl}, per step")
                per_epoch = len(loss) // len(r.history["epoch_loss"])
                ends = per_epoch * np.arange(1, len(r.history["epoch_loss"]) + 1)
                ax_loss.plot(ends, r.history["epoch_loss"], "o", color=f"C{i}", ms=8 - 2 * i, label=f"{impl}, epoch mean")
                epochs = np.arange(1, len(r.history["test_accuracy"]) + 1)
                ax_acc.plot(epochs, 100 * np.asarray(r.history["test_accuracy"]), "o-", label=impl)
            ax_loss.set_yscale("log")
            ax_loss.set_xlabel("training step")
            ax_loss.set_ylabel("cross-entropy")
            ax_loss.set_title("training loss (the curves lie on top of each other)")
            ax_acc.set_xlabel("epoch")
            ax_acc.set_ylabel("test accuracy (%)")
            ax_acc.set_title("test accuracy after each epoch")
            for ax in (ax_loss, ax_acc):
                ax.legend()
            plt.tight_layout()
            plt.show()
            """
        ),
        md(
            """
            ### Time per training step

            The same jitted step `train` uses (`make_step`: forward, backward through every
            convolution, AdamW update) on one batch of 32, timed after compilation (median
            of `TIMING_STEPS`); compilation is its own bar. On a CPU, lax's grouped
            convolution is slow, which is why the automatic choice sends depthwise layers to
            `taps` there; on a GPU, `xla` (cuDNN) usually wins.
            """
        ),
        code(
            """
            batch = TrainConfig().batch_size
            xb, yb = jnp.asarray(data.x_train[:batch]), jnp.asarray(data.y_train[:batch])
            timing = {}
            for impl in IMPLEMENTATIONS:
                m = DigitsCNN(impl)
                tx = optax.adamw(1e-3)
                params = m.init(jax.random.key(0), xb)["params"]
                opt_state = tx.init(params)
                step = make_step(m, tx)
                t0 = time.perf_counter()
                jax.block_until_ready(step(params, opt_state, xb, yb))
                compile_s = time.perf_counter() - t0
                times = []
                for _ in range(TIMING_STEPS):
                    t0 = time.perf_counter()
                    params, opt_state, loss = jax.block_until_ready(step(params, opt_state, xb, yb))
                    times.append(time.perf_counter() - t0)
                timing[impl] = (1e3 * float(np.median(times)), compile_s)
                print(f"{impl:8s} {timing[impl][0]:7.2f} ms/step   first call {compile_s:5.2f} s")

            fig, (ax_step, ax_compile) = plt.subplots(1, 2, figsize=(10, 3.2))
            names = list(timing)
            ax_step.barh(names, [timing[n][0] for n in names], color="tab:blue")
            ax_step.set_xlabel(f"ms per training step (batch {batch}, {jax.default_backend()})")
            ax_compile.barh(names, [timing[n][1] for n in names], color="tab:gray")
            ax_compile.set_xlabel("first call (compilation), s")
            plt.tight_layout()
            plt.show()
            """
        ),
        md(
            """
            ### What the network gets wrong

            Predictions of the first implementation's model on test digits; mistakes in red.
            """
        ),
        code(
            """
            r = results[first]
            pred = np.argmax(predict(r.params, data.x_test, first), axis=-1)
            wrong = np.flatnonzero(pred != data.y_test)
            print(f"{len(wrong)} of {len(pred)} test digits misclassified ({r.test_accuracy:.2%} right)")
            show = np.concatenate([wrong[:8], np.flatnonzero(pred == data.y_test)[: 16 - min(len(wrong), 8)]])
            fig, axes = plt.subplots(2, 8, figsize=(11, 3.2))
            for ax, i in zip(axes.ravel(), show):
                ax.imshow(data.x_test[i, :, :, 0], cmap="gray_r")
                ok = pred[i] == data.y_test[i]
                ax.set_title(f"{pred[i]} (true {data.y_test[i]})", color="k" if ok else "r", fontsize=9)
                ax.axis("off")
            plt.tight_layout()
            plt.show()
            """
        ),
        md(
            """
            ## 5. The effective receptive field

            The theoretical receptive field (section 3, `jaxconv.receptive_field`) says which
            input pixels *can* influence an output. The *effective* receptive field (Luo et
            al., 2016) says how much each one *does*: back-propagate a gradient of 1 from one
            output position and look at the magnitude of the gradient on the input.

            For the digits CNN the output is the max-pooled feature map (4x4), read from the
            model itself with Flax's `capture_intermediates`; the maps average over real test
            digits, at initialisation and after training. The dashed box is the theoretical
            field.
            """
        ),
        code(
            """
            def pooled_features(variables, images):
                \"\"\"The digits CNN's max-pooled feature map (N, 4, 4, 64), from the model itself.\"\"\"
                _, state = DigitsCNN(first).apply(
                    variables,
                    images,
                    capture_intermediates=lambda module, _: isinstance(module, jnn.MaxPool),
                    mutable=["intermediates"],
                )
                return state["intermediates"]["MaxPool_0"]["__call__"][0]


            digits = jnp.asarray(data.x_test[:64])
            box = theoretical_receptive_field_box(layers, (8, 8))
            fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
            for ax, (name, params) in zip(axes, [("at initialisation", variables["params"]), ("trained", r.params)]):
                erf = effective_receptive_field(pooled_features, {"params": params}, digits.shape, inputs=digits)
                plot_effective_receptive_field(erf, box=box, ax=ax, title=f"digits CNN, {name}")
            plt.tight_layout()
            plt.show()
            print(f"theoretical field of output (2, 2): rows {box[0]}, columns {box[1]}")
            """
        ),
        md(
            """
            On 8x8 digits the field covers most of the image. A deeper stack on a larger input
            shows the classic result: the effective field is roughly Gaussian, concentrated
            in the middle of the theoretical square, and grows like the square root of the
            depth while the theoretical one grows linearly. A stack of randomly initialised
            3x3 `jaxconv.nn.Conv` layers with ReLU (log scale):
            """
        ),
        code(
            """
            stack = nn.Sequential(
                [f for _ in range(STACK_DEPTH) for f in (jnn.Conv(16, (3, 3), implementation=first), nn.relu)]
            )
            shape = (8, STACK_INPUT, STACK_INPUT, 1)
            stack_vars = stack.init(jax.random.key(1), jnp.zeros(shape))
            erf = effective_receptive_field(stack.apply, stack_vars, shape, normalize=True)
            stack_layers = [jaxconv.conv_layer(3, 16, padding="SAME") for _ in range(STACK_DEPTH)]
            stack_box = theoretical_receptive_field_box(stack_layers, shape[1:3])
            centre = shape[1] // 2

            fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
            plot_effective_receptive_field(erf, box=stack_box, ax=axes[0], log=True, title=f"{STACK_DEPTH} random 3x3 layers")
            plot_effective_receptive_field(erf[centre], box=stack_box[1:], ax=axes[1], title="the centre row")
            plt.tight_layout()
            plt.show()
            inside = float(np.sum(np.asarray(erf)[stack_box[0][0] : stack_box[0][1] + 1, stack_box[1][0] : stack_box[1][1] + 1]))
            assert np.isclose(inside, float(np.sum(erf)), rtol=1e-6), "gradient outside the theoretical field"
            print(f"theoretical field {stack_box}: all of the gradient lies inside it")
            """
        ),
        md(
            """
            ## Where next

            * `jaxconv train` runs the same training from the command line, with a progress
              bar, an orbax checkpoint and the curves as a PNG.
            * `01_convolution_from_scratch.ipynb` explains each layer used here;
              `02_pallas_kernels.ipynb` times the Pallas kernels on a GPU or TPU.
            """
        ),
    ]
    return notebook(NB03, cells)


# ----------------------------------------------------------------------------------------
# 02: Pallas kernels
# ----------------------------------------------------------------------------------------

NB02 = "02_pallas_kernels.ipynb"


def notebook_02():
    cells = [
        md(
            f"""
            # Pallas convolution kernels: checked against lax, timed against lax

            {badge(NB02)}

            jaxconv has hand-written [Pallas](https://docs.jax.dev/en/latest/pallas/index.html)
            kernels behind the same API as everything else: `implementation="pallas_triton"`
            (Triton, for NVIDIA GPUs) and `implementation="pallas_tpu"` (Mosaic, for TPUs).
            This notebook

            1. shows that the kernels lower for their real targets from any host,
            2. checks the kernel for this runtime's device against `lax.conv_general_dilated`
               (forward and both gradients, across strides, dilations, groups, transposed,
               1-D and 3-D),
            3. times it against lax on layers of real models (ResNet-50, MobileNetV2,
               transposed decoders) and draws the speed-ups and a roofline.

            **Pick a GPU or TPU runtime** (Runtime > Change runtime type; a free T4 works).
            On a CPU runtime the same cells run the kernels in Pallas's *interpret mode* (the
            kernel body executed as ordinary JAX operations, one grid step at a time) at tiny
            sizes: the checks still mean something, the timings do not.
            """
        ),
        install_cell("notebooks"),
        devices_cell(),
        md(
            """
            ## Parameters

            The only cell to edit. `JAXCONV_SMOKE=1` (set by the test suite) keeps a
            handful of tiny cases so the notebook runs in seconds on a CPU.
            """
        ),
        code(
            """
            import os
            import re

            import jax

            SMOKE = os.environ.get("JAXCONV_SMOKE", "0") == "1"
            BACKEND = jax.default_backend()  # "gpu", "tpu" or "cpu"
            INTERPRET = BACKEND not in ("gpu", "tpu")  # no Pallas target here: interpret mode
            # The kernels checked and timed: the one for this device; on a CPU, both, interpreted.
            KERNELS = {"gpu": ["pallas_triton"], "tpu": ["pallas_tpu"]}.get(BACKEND, ["pallas_triton", "pallas_tpu"])
            if SMOKE:
                KERNELS = KERNELS[:1]
            CHECK_CASES = 3 if SMOKE else None  # None: every case of section 2
            SUITES = ["resnet50", "mobilenetv2", "transposed"]  # layer suites timed in section 3
            # None: every layer (about 25; several minutes on a T4); 2 for a quick look.
            LAYERS_PER_SUITE = 1 if SMOKE else (3 if INTERPRET else None)
            MODES = ["fwd"] if SMOKE else ["fwd", "fwd+bwd"]
            # Half precision where the device has it: bfloat16, or float16 on GPUs older than
            # Ampere (a T4 has no bfloat16 matrix instructions).
            device = jax.devices()[0]
            major = re.match(r"\\d+", str(getattr(device, "compute_capability", "")))  # "7.5" on a T4
            old_gpu = int(major.group()) < 8 if major else any(g in device.device_kind for g in ("T4", "V100", "P100"))
            HALF = "float16" if BACKEND == "gpu" and old_gpu else "bfloat16"
            DTYPES = ["float32"] if INTERPRET else ["float32", HALF]
            BATCH = 1 if INTERPRET else 8  # images per layer (interpreted layers are also tiny)
            REPEATS = 2 if INTERPRET else 20  # timed calls per row (median)
            """
        ),
        code(
            """
            import dataclasses
            import statistics
            import time

            import jax.numpy as jnp
            import matplotlib.pyplot as plt
            import numpy as np
            from jax import lax

            from jaxconv._src import bench
            from jaxconv._src.reference import relative_error, tolerance

            plt.rcParams.update({"figure.dpi": 80})
            print(f"backend {BACKEND}: kernels {KERNELS}, " + ("INTERPRET MODE (timings mean nothing)" if INTERPRET else "compiled"))
            """
        ),
        md(
            """
            ## 1. One kernel source, every target

            The kernels are chosen when a program is *lowered*, by the platform it is lowered
            for: interpret mode for the CPU, the compiled kernel otherwise. So even on a CPU
            host, lowering for `cuda` emits the Triton kernel and lowering for `tpu` the
            Mosaic kernel (that is how the tests catch lowering errors without the hardware).
            The cell prints the custom call and the kernel each lowering contains.
            """
        ),
        code(
            """
            x = jnp.ones((2, 16, 16, 32), jnp.float32)
            w = jnp.ones((3, 3, 32, 64), jnp.float32)
            for impl, platform in [("pallas_triton", "cuda"), ("pallas_tpu", "tpu")]:
                f = jax.jit(lambda x, w, impl=impl: jaxconv.conv(x, w, implementation=impl))
                text = f.trace(x, w).lower(lowering_platforms=(platform,)).as_text()
                calls = sorted(set(re.findall(r"custom_call @([\\w$.]+)", text)))
                kernels = sorted(set(re.findall(r'name = "(\\w+)"', text)))
                print(f"{impl:14s} lowered for {platform:4s}: custom calls {calls}, kernels {kernels}")
            """
        ),
        md(
            """
            ## 2. Checked against lax

            Each case runs `jaxconv.conv` with the kernel and with `"xla"` (lax itself), both
            at `Precision.HIGHEST` (otherwise a GPU multiplies float32 in TF32), and compares
            the output and the gradients with respect to the input and the kernel. The
            tolerance is the library's table (`jaxconv._src.reference.TOLERANCE`: 2e-5
            relative for float32), ten times that for gradients, whose sums run over the
            whole batch and output.
            """
        ),
        code(
            """
            relu = jax.nn.relu
            CASES = {
                "3x3 SAME": dict(x=(2, 12, 12, 8), w=(3, 3, 8, 16)),
                "3x3 stride 2 VALID": dict(x=(2, 13, 13, 8), w=(3, 3, 8, 16), stride=2, padding="VALID"),
                "depthwise 5x5": dict(x=(2, 10, 10, 8), w=(5, 5, 1, 8), groups=8),
                "3x3 dilation 2": dict(x=(2, 12, 12, 8), w=(3, 3, 8, 8), dilation=2),
                "grouped 3x3, 4 groups": dict(x=(2, 10, 10, 8), w=(3, 3, 2, 8), groups=4),
                "transposed 4x4 stride 2": dict(x=(2, 6, 6, 8), w=(4, 4, 8, 4), input_dilation=2, padding=((2, 2), (2, 2))),
                "1-D causal dilation 4": dict(x=(2, 32, 8), w=(2, 8, 8), dilation=4, padding="CAUSAL"),
                "3-D 3x3x3": dict(x=(1, 6, 6, 6, 4), w=(3, 3, 3, 4, 8)),
                "1x1 + bias + ReLU": dict(x=(2, 8, 8, 16), w=(1, 1, 16, 32), bias=True, activation=relu),
            }
            cases = list(CASES.items())[:CHECK_CASES]


            def case_function(case, impl):
                \"\"\"f(x, w, b) computing one case with `impl` at full float32 precision.\"\"\"
                kw = {k: v for k, v in case.items() if k not in ("x", "w", "bias")}
                use_bias = case.get("bias", False)

                def f(x, w, b):
                    return jaxconv.conv(
                        x, w, bias=b if use_bias else None, precision=lax.Precision.HIGHEST, implementation=impl, **kw
                    )

                return f


            rng = np.random.default_rng(0)
            check_rows = []
            for name, case in cases:
                x = jnp.asarray(rng.standard_normal(case["x"]), jnp.float32)
                w = jnp.asarray(rng.standard_normal(case["w"]) / np.sqrt(np.prod(case["w"][:-1])), jnp.float32)
                b = jnp.asarray(rng.standard_normal(case["w"][-1]), jnp.float32)
                want, want_vjp = jax.vjp(case_function(case, "xla"), x, w, b)
                ct = jnp.asarray(rng.standard_normal(want.shape), jnp.float32)
                want_grads = want_vjp(ct)
                for impl in KERNELS:
                    try:
                        got, got_vjp = jax.vjp(jax.jit(case_function(case, impl)), x, w, b)
                    except NotImplementedError as e:  # outside what this kernel takes: it says why
                        print(f"{name:26s} {impl:14s} not supported: {e}")
                        continue
                    grads = got_vjp(ct)
                    errors = {"out": relative_error(got, want), "d x": relative_error(grads[0], want_grads[0]), "d w": relative_error(grads[1], want_grads[1])}
                    limits = {"out": tolerance("float32"), "d x": 10 * tolerance("float32"), "d w": 10 * tolerance("float32")}
                    ok = all(errors[k] <= limits[k] for k in errors)
                    check_rows.append(dict(case=name, impl=impl, ok=ok, **errors))
                    print(f"{name:26s} {impl:14s} " + "  ".join(f"{k} {v:.1e}" for k, v in errors.items()) + ("  ok" if ok else "  FAILED"))

            failed = [r for r in check_rows if not r["ok"]]
            assert not failed, f"kernel results differ from lax: {failed}"
            """
        ),
        code(
            """
            fig, ax = plt.subplots(figsize=(9, 0.5 + 0.45 * len(check_rows)))
            labels = [f"{r['case']} ({r['impl']})" for r in check_rows]
            ypos = np.arange(len(check_rows))
            for k, (key, colour) in enumerate([("out", "tab:blue"), ("d x", "tab:orange"), ("d w", "tab:green")]):
                values = [max(r[key], 1e-9) for r in check_rows]
                ax.barh(ypos + (k - 1) * 0.27, values, 0.27, color=colour, label=key)
            ax.axvline(tolerance("float32"), color="k", ls="--", lw=1, label="float32 tolerance (out)")
            ax.axvline(10 * tolerance("float32"), color="r", ls="--", lw=1, label="gradient tolerance")
            ax.set_yticks(ypos, labels)
            ax.invert_yaxis()
            ax.set_xscale("log")
            ax.set_xlabel("relative error against lax (HIGHEST), lower is better; 1e-9 = exact")
            ax.legend(loc="lower right", fontsize=8)
            plt.tight_layout()
            plt.show()
            """
        ),
        md(
            """
            ## 3. Timed against lax on layers of real models

            The layer shapes are the benchmark suites of `jaxconv._src.bench` (from
            ResNet-50, MobileNetV2 and U-Net / DCGAN decoders). Each row is compiled once
            with `jax.jit` (compile time measured apart), checked against lax, and timed as
            the median of `REPEATS` calls after a warm-up, with `block_until_ready`. `fwd+bwd`
            is the output and both gradients.

            First the machine's two ceilings, measured here: the rate of a large matrix
            multiply (`bench.measure_matmul_rate`) and the memory bandwidth of a large
            elementwise operation (read once, written once).
            """
        ),
        code(
            """
            def median_seconds(f, *args, repeats=REPEATS):
                jax.block_until_ready(f(*args))  # warm-up
                times = []
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    jax.block_until_ready(f(*args))
                    times.append(time.perf_counter() - t0)
                return statistics.median(times)


            matmul_size = 256 if SMOKE else (1024 if INTERPRET else 4096)
            peak_gflops = {dt: bench.measure_matmul_rate(dt, size=matmul_size, repeats=3) for dt in DTYPES}
            n = (1 << 20) if SMOKE else (1 << 24 if INTERPRET else 1 << 27)  # 4, 64 or 512 MiB
            big = jnp.ones((n,), jnp.float32)
            bandwidth_gbs = 2 * big.nbytes / median_seconds(jax.jit(lambda a: a * 2 + 1), big) / 1e9
            del big
            print("matmul rate:", {k: f"{v:,.0f} GFLOP/s" for k, v in peak_gflops.items()}, f" memory: {bandwidth_gbs:,.0f} GB/s")
            """
        ),
        code(
            """
            layers = []
            for suite in SUITES:
                for layer in bench.SUITES[suite][:LAYERS_PER_SUITE]:
                    layer = layer.tiny() if INTERPRET else layer
                    layers.append(dataclasses.replace(layer, batch=BATCH))

            rows = []
            for layer in layers:
                for dtype in DTYPES:
                    spec = layer.spec(dtype)
                    cost = spec.cost()
                    r0 = np.random.default_rng(0)
                    x = jnp.asarray(r0.standard_normal(spec.lhs_shape), dtype)
                    w = jnp.asarray(r0.standard_normal(spec.rhs_shape) / np.sqrt(np.prod(spec.rhs_shape[:-1])), dtype)
                    ct = jnp.asarray(r0.standard_normal(spec.out_shape), dtype)
                    for mode in MODES:
                        reference = None
                        for impl in ["lax", *KERNELS]:
                            f = jax.jit(bench.mode_function(bench.conv_function(spec, impl), mode))
                            t0 = time.perf_counter()
                            try:
                                compiled = f.lower(x, w, ct).compile()
                            except NotImplementedError as e:  # the kernel says what it cannot do
                                print(f"{layer.key} {dtype} {mode}, {impl} not run: {e}")
                                continue
                            compile_s = time.perf_counter() - t0
                            out = jax.tree.leaves(compiled(x, w, ct))
                            if reference is None:
                                reference, err = out, 0.0
                            else:
                                err = max(relative_error(a, b) for a, b in zip(out, reference))
                            seconds = median_seconds(compiled, x, w, ct)
                            factor = 1 if mode == "fwd" else 3  # fwd+bwd: three convolutions
                            rows.append(
                                dict(
                                    layer=layer.key, kind=layer.kind, dtype=dtype, mode=mode, impl=impl,
                                    ms=1e3 * seconds, compile_s=compile_s, rel_error=err,
                                    gflops=factor * cost["flops"] / seconds / 1e9,
                                    intensity=cost["flops"] / cost["bytes"],
                                )
                            )
                            # Both sides run at the default precision (TF32 or bfloat16 products
                            # on an accelerator), so this only guards against a wrong program;
                            # section 2 is the check at full precision.
                            assert err <= 0.05, (layer.key, impl, mode, err)

            for r in rows:
                print(
                    f"{r['layer']:34s} {r['dtype']:8s} {r['mode']:7s} {r['impl']:14s} {r['ms']:9.3f} ms "
                    f"{r['gflops']:9.1f} GFLOP/s  compile {r['compile_s']:5.1f} s  err {r['rel_error']:.1e}"
                )
            """
        ),
        code(
            """
            def speedups(impl, dtype, mode):
                base = {r["layer"]: r["ms"] for r in rows if r["impl"] == "lax" and r["dtype"] == dtype and r["mode"] == mode}
                return {r["layer"]: base[r["layer"]] / r["ms"] for r in rows if r["impl"] == impl and r["dtype"] == dtype and r["mode"] == mode and r["layer"] in base}


            panels = [(dtype, mode) for dtype in DTYPES for mode in MODES]
            fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 0.8 + 0.4 * len(layers)), squeeze=False)
            for ax, (dtype, mode) in zip(axes[0], panels):
                for k, impl in enumerate(KERNELS):
                    s = speedups(impl, dtype, mode)
                    ypos = [i + k * 0.8 / len(KERNELS) for i, layer in enumerate(layers) if layer.key in s]
                    ax.barh(ypos, [s[layer.key] for layer in layers if layer.key in s], 0.8 / len(KERNELS), label=impl)
                ax.axvline(1, color="k", lw=1)
                ax.set_xscale("log")
                ax.set_yticks(range(len(layers)), [layer.key for layer in layers], fontsize=8)
                ax.invert_yaxis()
                ax.set_xlabel("speed-up over lax (> 1: the kernel is faster)")
                ax.set_title(f"{dtype}, {mode}" + (" (INTERPRET MODE)" if INTERPRET else ""))
                ax.legend(fontsize=8)
            plt.tight_layout()
            plt.show()
            """
        ),
        md(
            """
            ### Roofline

            A kernel is limited either by arithmetic (the matmul rate, flat line) or by
            memory traffic (bandwidth times arithmetic intensity, the slanted line); the
            intensity of a layer is its FLOPs per byte of input, kernel and output
            (`ConvSpec.cost()`). Circles are lax, triangles the Triton kernel, squares the
            TPU kernel; one colour per layer, named beside its lax point. A point near its roof uses the machine well; the gap between
            the lax point and the kernel point of one layer is the speed-up above.
            Depthwise layers have little arithmetic per byte and sit under the memory roof.
            """
        ),
        code(
            """
            fig, axes = plt.subplots(1, len(DTYPES), figsize=(6.5 * len(DTYPES), 4.5), squeeze=False)
            markers = {"lax": "o", "pallas_triton": "^", "pallas_tpu": "s"}
            for ax, dtype in zip(axes[0], DTYPES):
                sel = [r for r in rows if r["dtype"] == dtype and r["mode"] == "fwd"]
                ai = np.logspace(np.log10(min(r["intensity"] for r in sel) / 2), np.log10(max(r["intensity"] for r in sel) * 2), 100)
                ax.plot(ai, np.minimum(peak_gflops[dtype], bandwidth_gbs * ai), "k-", lw=1.5, label="roof (measured)")
                for i, layer in enumerate(layers):
                    for r in sel:
                        if r["layer"] == layer.key:
                            ax.scatter(r["intensity"], r["gflops"], marker=markers.get(r["impl"], "x"), color=f"C{i % 10}", s=50)
                            if r["impl"] == "lax":
                                ax.annotate(layer.name, (r["intensity"], r["gflops"]), fontsize=7, color=f"C{i % 10}", xytext=(4, -3), textcoords="offset points")
                for impl, m in markers.items():
                    if any(r["impl"] == impl for r in sel):
                        ax.scatter([], [], marker=m, color="0.4", label=impl)
                ax.set_xscale("log")
                ax.set_yscale("log")
                ax.set_xlabel("arithmetic intensity (FLOP / byte)")
                ax.set_ylabel("GFLOP/s")
                ax.set_title(f"forward, {dtype}, {BACKEND}" + (" (INTERPRET MODE)" if INTERPRET else ""))
                ax.legend(fontsize=8)
            plt.tight_layout()
            plt.show()
            """
        ),
        md(
            """
            ## Reading the results

            * Every check in section 2 passed, or the notebook stopped there.
            * The automatic choice (`implementation=None`) stays with lax on GPU and TPU
              (`jaxconv.auto_order`); the kernels are opt-in, by name, where the chart above
              shows them ahead.
            * On a CPU runtime the times above are those of the Pallas *interpreter*; rerun on
              a GPU or TPU runtime for real numbers. `python benchmarks/run.py` runs the full
              suites from the command line.
            """
        ),
    ]
    return notebook(NB02, cells, accelerator="GPU")


NOTEBOOKS = {NB01: notebook_01, NB02: notebook_02, NB03: notebook_03}


def main(argv: list[str]) -> int:
    names = argv or list(NOTEBOOKS)
    for name in names:
        nb = NOTEBOOKS[name]()
        nbformat.validate(nb)
        path = HERE / name
        nbformat.write(nb, path)
        # Cells are written loosely above; ruff (the project's formatter) lays them out.
        done = subprocess.run([sys.executable, "-m", "ruff", "format", "-q", str(path)])
        if done.returncode:
            print(f"warning: `ruff format {path}` failed; the cells are left as written")
        print(f"wrote {path.relative_to(HERE.parent)} ({len(nb.cells)} cells)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
