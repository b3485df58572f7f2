"""Smoke test of the benchmark suites and runner, at tiny sizes.

Every named layer of every suite (the shapes `jaxconv bench` times at full size) is run
at a tiny size through every implementation the runner would time, and compared with
the reference; the runner itself runs end to end and writes its JSON and Markdown.
"""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from jaxconv._src import bench, dispatch
from jaxconv._src.cli import main as cli_main
from jaxconv._src.reference import reference_conv, relative_error, tolerance


def test_suites_hold_the_real_model_layers():
    names = {lay.key for lay in bench.layers()}
    kinds = {lay.kind for lay in bench.layers()}
    assert kinds == {"dense", "grouped", "depthwise", "transposed"}
    # ResNet-50: the stem and the 1x1 and 3x3 layers of every stage
    assert "resnet50/stem_7x7_s2" in names
    for stage in (1, 2, 3, 4):
        assert {
            f"resnet50/s{stage}_3x3",
            f"resnet50/s{stage}_1x1_reduce",
            f"resnet50/s{stage}_1x1_expand",
        } <= names
    stem = next(lay for lay in bench.SUITES["resnet50"] if lay.name == "stem_7x7_s2")
    assert stem.spec().out_shape == (8, 112, 112, 64)
    assert all(lay.groups == 32 for lay in bench.SUITES["resnext50"])
    assert {lay.kind for lay in bench.SUITES["mobilenetv2"]} == {"depthwise", "dense"}
    assert all(lay.window == (7, 7) and lay.kind == "depthwise" for lay in bench.SUITES["convnext"])
    ranks = {len(lay.spatial) for lay in bench.SUITES["transposed"]}
    assert ranks == {1, 2}
    assert all(lay.padding == "CAUSAL" for lay in bench.SUITES["wavenet"])
    assert {lay.dilation for lay in bench.SUITES["wavenet"]} > {1}
    assert all(lay.window == (3, 3, 3) for lay in bench.SUITES["c3d"])
    assert any(lay.window == (31, 31) for lay in bench.SUITES["large_kernel"])
    # MobileNetV2's stride-2 depthwise layer halves 112 to 56, as the model does
    dw = next(lay for lay in bench.SUITES["mobilenetv2"] if lay.stride == 2)
    assert dw.spec().out_shape == (8, 56, 56, 96)


def test_transposed_layers_upsample_like_pytorch():
    # ConvTranspose(k, s, p) on L samples gives (L - 1) * s - 2 p + k
    for lay in bench.SUITES["transposed"]:
        k, s = lay.window[0], lay.input_dilation
        p = k - 1 - lay.padding[0][0]
        want = tuple((n - 1) * s - 2 * p + k for n in lay.spatial)
        assert lay.spec().out_spatial == want


@pytest.mark.parametrize("suite", sorted(bench.SUITES))
def test_every_layer_tiny_matches_the_reference(suite):
    """Each layer, shrunk, through every implementation the runner times (one jitted
    program per layer), against lax at HIGHEST precision."""
    for layer in bench.SUITES[suite]:
        tiny = layer.tiny()
        assert tiny.kind == layer.kind and len(tiny.spatial) == len(layer.spatial)
        spec = tiny.spec()
        names = ["xla"] + bench.candidate_implementations(spec)
        x, w, _ = bench._operands(spec)
        outs = jax.jit(lambda a, b: [dispatch.run(a, b, spec, n) for n in names])(x, w)
        ref = reference_conv(x, w, spec)
        for name, out in zip(names, outs):
            assert out.shape == spec.out_shape
            err = relative_error(out, ref)
            assert err <= tolerance(np.float32), f"{tiny.key} {name}: {err:.3g}"


def test_runner_end_to_end_writes_json_and_markdown(tmp_path):
    opts = bench.Options(
        suites=["mobilenetv2", "large_kernel"],
        layers=["dw_56x144", "dense31_16x32"],
        tiny=True,
        repeats=1,
        min_time=0.0,
        torch=False,
    )
    result = bench.run(opts, progress=False)
    paths = bench.write(result, str(tmp_path), "smoke")
    data = json.loads(open(paths["json"]).read())
    m = data["machine"]
    assert m["backend"] == jax.default_backend() and m["jax"] == jax.__version__
    assert m["matmul_gflops"]["float32"] > 0
    rows = data["rows"]
    impls = {(r["layer"], r["mode"], r["impl"]) for r in rows}
    assert ("dw_56x144", "fwd", "taps") in impls and ("dw_56x144", "fwd+bwd", "lax") in impls
    assert ("dense31_16x32", "fwd", "fft") in impls  # large kernel: fft timed
    assert ("dense31_16x32", "fwd", "taps") not in impls  # 961 taps: not timed
    for r in rows:
        assert r["time_s"] > 0 and r["gflops"] > 0 and r["matmul_fraction"] > 0
        if r["impl"] == "lax":
            assert r["speedup_vs_lax"] == pytest.approx(1.0)
        else:
            assert r["matches_lax"] is True, r
        if r["impl"] != "torch":
            assert r["peak_bytes"] > 0 and r["compile_s"] >= 0
    autos = [r for r in rows if r["impl"] == "auto"]
    assert len(autos) == 4  # two layers x two modes
    assert all(r["auto_choice"] in dispatch.implementations() for r in autos)
    md = open(paths["md"]).read()
    assert "| layer | mode | impl |" in md and "dw_56x144" in md and "x lax" in md


def test_cli_lists_suites(capsys):
    assert cli_main(["bench", "--list"]) == 0
    out = capsys.readouterr().out
    assert "resnext50" in out and "s1_3x3_g32" in out


def test_unknown_suite_and_layer_are_user_errors():
    with pytest.raises(ValueError, match="suites"):
        bench.layers(["resnet51"])
    with pytest.raises(ValueError, match="layers"):
        bench.plan(bench.Options(suites=["c3d"], layers=["nope"]))


def test_torch_baseline_matches_the_layer_shapes():
    pytest.importorskip("torch")  # the optional baseline; the runner works without it
    for key in (
        "mobilenetv2/dw_112x96_s2",
        "transposed/dcgan_4x4_s2_16to32",
        "transposed/melgan_1d_k8_s4",
        "wavenet/causal_k2_d32",
    ):
        layer = next(lay for lay in bench.layers() if lay.key == key).tiny()
        for mode in bench.MODES:
            call = bench.torch_function(layer, layer.spec(), mode, "float32")
            assert tuple(call().shape)[2:] == layer.spec().out_spatial
