"""``jaxconv demo``: the walkthrough prints numbers computed by jaxconv, and ``--plot``
saves feature maps of edge kernels on a real photograph."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal as ss

from jaxconv._src import cli
from jaxconv._src.commands import demo


def _section_lines(text: str, title: str) -> list[str]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith(title))
    return lines[start + 1 :]


def _matrix_after(text: str, title: str, rows: int, cols: slice = slice(None)) -> np.ndarray:
    """Columns ``cols`` of the ``rows`` lines of numbers printed under the line that
    starts with ``title``."""
    lines = _section_lines(text, title)[:rows]
    return np.array([[float(v) for v in line.split()[cols]] for line in lines])


def test_worked_example_and_sections(capsys):
    sections = ["example", "size", "pooling", "separable", "transpose", "receptive"]
    argv = ["demo"] + [a for s in sections for a in ("--section", s)]
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    corr = _matrix_after(text, "correlate2d (valid)", 3)
    conv = _matrix_after(text, "convolve2d (valid)", 3)
    image, kernel = demo.IMAGE4, demo.EDGE
    np.testing.assert_array_equal(corr, ss.correlate2d(image, kernel, "valid"))
    np.testing.assert_array_equal(conv, ss.convolve2d(image, kernel, "valid"))
    assert (corr == -8).all() and (conv == 8).all()
    assert "1*1 + 2*1 + 5*(-1) + 6*(-1) = -8" in text
    # output-size table: formula and jaxconv.output_shape agree on every row
    table = _section_lines(text, "n    k  stride")[1:7]
    for line in table:
        n, k, s, d, p, formula, shape = (int(v) for v in line.split())
        assert formula == shape == (n + 2 * p - d * (k - 1) - 1) // s + 1
    # pooling: max and mean of 2x2 blocks of the printed 4x4 input
    x = _matrix_after(text, "x         max_pool", 4, slice(0, 4))
    pooled = _matrix_after(text, "x         max_pool", 2, slice(4, 8))
    blocks = x.reshape(2, 2, 2, 2).transpose(0, 2, 1, 3).reshape(2, 2, 4)
    np.testing.assert_array_equal(pooled[:, :2], blocks.max(-1))
    np.testing.assert_allclose(pooled[:, 2:], blocks.mean(-1))
    # transposed convolution of [[1, 2], [3, 4]] with a 2x2 ones kernel, stride 2
    up = _matrix_after(text, "input 2x2   kernel   output 4x4", 4, slice(-4, None))
    np.testing.assert_array_equal(up, np.kron([[1, 2], [3, 4]], np.ones((2, 2))))
    assert "separable / dense = 0.119" in text
    assert "total" in text and "activation_bytes" in text


def test_padding_stride_channels_sections(capsys):
    argv = [
        "demo",
        "--section",
        "padding",
        "--section",
        "stride",
        "--section",
        "channels",
        "--implementation",
        "taps",
    ]
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    same = _matrix_after(text, "VALID         SAME", 5, slice(-5, None))
    padded = np.pad(demo.IMAGE5, 1)
    np.testing.assert_array_equal(same, ss.correlate2d(padded, np.ones((3, 3)), "valid"))
    circular = _matrix_after(text, "circular", 5, slice(0, 5))
    np.testing.assert_array_equal(
        circular, ss.correlate2d(demo.IMAGE5, np.ones((3, 3)), "same", "wrap")
    )
    assert "output shape (1, 3, 3, 2)" in text


def test_feature_maps_match_scipy():
    rng = np.random.default_rng(0)
    image = rng.uniform(size=(12, 15)).astype(np.float32)
    maps = demo.feature_maps(image)
    padded = np.pad(image, 2, mode="reflect")
    for name, kernel in demo.EDGE_KERNELS.items():
        k = kernel.shape[0]
        o = (5 - k) // 2
        inner = padded[o : padded.shape[0] - o, o : padded.shape[1] - o]
        expected = ss.correlate2d(inner, kernel, "valid")
        np.testing.assert_allclose(maps[name], expected, rtol=1e-5, atol=1e-5)
    assert maps["|Sobel| then 2x2 max pool"].shape == (6, 7)


def test_plot_saves_png(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    pytest.importorskip("sklearn")
    path = tmp_path / "maps.png"
    assert cli.main(["demo", "--section", "size", "--plot", str(path)]) == 0
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 10_000
    assert str(path) in capsys.readouterr().out


def test_plot_without_extra_says_what_to_install(tmp_path, monkeypatch, capsys):
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    assert demo.save_figure(str(tmp_path / "x.png")) == 2
    assert "jaxconv[demo]" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()
