"""Convolution benchmarks: named layer shapes from real models, and the runner.

The suites are layer shapes taken from published models (ResNet-50, ResNeXt-50,
MobileNetV2, ConvNeXt, U-Net / DCGAN, WaveNet, MelGAN-style 1-D upsampling, C3D,
RepLKNet). :func:`run` times every implementation registered for the current backend
and the baselines (``lax.conv_general_dilated`` always, PyTorch when it is installed) in
one process, so every ratio compares numbers measured side by side. The same layers, at
tiny sizes (:meth:`Layer.tiny`), are the smoke test of ``tests/test_bench.py``.

Each result row records: median time after warm-up, compile time, GFLOP/s, the
fraction of the machine's matmul rate measured in the same run, the peak memory of the
compiled program (``compiled.memory_analysis()``), the relative error against lax, and
the speedup over lax and over PyTorch.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxconv._src import dispatch
from jaxconv._src.reference import relative_error, tolerance
from jaxconv._src.spec import ConvSpec, default_dimension_numbers

MODES = ("fwd", "fwd+bwd")


# --------------------------------------------------------------------------------------
# Layers and suites
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Layer:
    """One convolution layer of a real model, channels last.

    ``spatial`` is the input's spatial size, ``window`` the kernel's, ``padding`` a word
    or explicit pairs, ``input_dilation`` > 1 makes it a transposed (upsampling) layer,
    written as lax writes one: a convolution of the input-dilated input.
    """

    suite: str
    name: str
    spatial: tuple[int, ...]
    in_channels: int
    out_channels: int
    window: tuple[int, ...]
    stride: int = 1
    padding: Any = "SAME"
    dilation: int = 1
    groups: int = 1
    input_dilation: int = 1
    batch: int = 8
    note: str = ""

    @property
    def key(self) -> str:
        return f"{self.suite}/{self.name}"

    @property
    def kind(self) -> str:
        if self.input_dilation > 1:
            return "transposed"
        if self.groups > 1 and self.groups == self.in_channels:
            return "depthwise"
        if self.groups > 1:
            return "grouped"
        return "dense"

    def spec(self, dtype: Any = np.float32) -> ConvSpec:
        n = len(self.spatial)
        return ConvSpec.create(
            (self.batch, *self.spatial, self.in_channels),
            (*self.window, self.in_channels // self.groups, self.out_channels),
            window_strides=self.stride,
            padding=self.padding,
            lhs_dilation=self.input_dilation,
            rhs_dilation=self.dilation,
            dimension_numbers=default_dimension_numbers(n),
            feature_group_count=self.groups,
            lhs_dtype=dtype,
        )

    def tiny(self) -> Layer:
        """The same layer kind (rank, window, stride, dilation, groups structure,
        padding, input dilation) at a size that compiles and runs in well under a
        second: batch 1, at most 8 channels, small spatial extent."""
        n = len(self.spatial)
        eff = [1 + self.dilation * (k - 1) for k in self.window]
        limit = 40 if n == 1 else (10 if n == 2 else 5)
        spatial = tuple(
            max(min(s, limit), e if self.padding == "VALID" else 1)
            for s, e in zip(self.spatial, eff)
        )
        if self.groups == 1:
            cin, cout, groups = min(self.in_channels, 6), min(self.out_channels, 5), 1
        elif self.groups == self.in_channels:  # depthwise, keep the multiplier
            mult = self.out_channels // self.in_channels
            groups = cin = 4
            cout = 4 * mult
        else:
            groups = 2
            cin = 2 * min(self.in_channels // self.groups, 3)
            cout = 2 * min(self.out_channels // self.groups, 3)
        padding = self.padding
        if not isinstance(padding, str):
            padding = tuple((min(lo, e - 1), min(hi, e - 1)) for (lo, hi), e in zip(padding, eff))
        return dataclasses.replace(
            self,
            spatial=spatial,
            in_channels=cin,
            out_channels=cout,
            groups=groups,
            batch=1,
            padding=padding,
        )


def _transposed(suite, name, spatial, cin, cout, k, s, p, **kw) -> Layer:
    """A PyTorch ``ConvTranspose(k, stride=s, padding=p)`` layer as lax writes it: input
    dilation ``s`` and padding ``k - 1 - p`` on both sides."""
    return Layer(
        suite,
        name,
        spatial,
        cin,
        cout,
        (k,) * len(spatial),
        padding=tuple((k - 1 - p, k - 1 - p) for _ in spatial),
        input_dilation=s,
        note=f"ConvTranspose k={k} s={s} p={p}",
        **kw,
    )


def _suites() -> dict[str, list[Layer]]:
    s: dict[str, list[Layer]] = {}
    s["resnet50"] = [
        Layer(
            "resnet50", "stem_7x7_s2", (224, 224), 3, 64, (7, 7), stride=2, padding=((3, 3), (3, 3))
        ),
        Layer("resnet50", "s1_1x1_reduce", (56, 56), 256, 64, (1, 1)),
        Layer("resnet50", "s1_3x3", (56, 56), 64, 64, (3, 3)),
        Layer("resnet50", "s1_1x1_expand", (56, 56), 64, 256, (1, 1)),
        Layer("resnet50", "s2_1x1_reduce", (28, 28), 512, 128, (1, 1)),
        Layer("resnet50", "s2_3x3", (28, 28), 128, 128, (3, 3)),
        Layer("resnet50", "s2_1x1_expand", (28, 28), 128, 512, (1, 1)),
        Layer("resnet50", "s3_1x1_reduce", (14, 14), 1024, 256, (1, 1)),
        Layer("resnet50", "s3_3x3", (14, 14), 256, 256, (3, 3)),
        Layer("resnet50", "s3_1x1_expand", (14, 14), 256, 1024, (1, 1)),
        Layer("resnet50", "s4_1x1_reduce", (7, 7), 2048, 512, (1, 1)),
        Layer("resnet50", "s4_3x3", (7, 7), 512, 512, (3, 3)),
        Layer("resnet50", "s4_1x1_expand", (7, 7), 512, 2048, (1, 1)),
    ]
    s["resnext50"] = [
        Layer("resnext50", "s1_3x3_g32", (56, 56), 128, 128, (3, 3), groups=32),
        Layer("resnext50", "s2_3x3_g32", (28, 28), 256, 256, (3, 3), groups=32),
        Layer("resnext50", "s3_3x3_g32", (14, 14), 512, 512, (3, 3), groups=32),
    ]
    s["mobilenetv2"] = [
        Layer(
            "mobilenetv2",
            "dw_112x96_s2",
            (112, 112),
            96,
            96,
            (3, 3),
            stride=2,
            padding=((1, 1), (1, 1)),
            groups=96,
        ),
        Layer("mobilenetv2", "dw_56x144", (56, 56), 144, 144, (3, 3), groups=144),
        Layer("mobilenetv2", "dw_28x192", (28, 28), 192, 192, (3, 3), groups=192),
        Layer("mobilenetv2", "dw_14x576", (14, 14), 576, 576, (3, 3), groups=576),
        Layer("mobilenetv2", "dw_7x960", (7, 7), 960, 960, (3, 3), groups=960),
        Layer("mobilenetv2", "pw_56_24to144", (56, 56), 24, 144, (1, 1)),
        Layer("mobilenetv2", "pw_14_576to96", (14, 14), 576, 96, (1, 1)),
        Layer("mobilenetv2", "pw_7_960to320", (7, 7), 960, 320, (1, 1)),
    ]
    s["convnext"] = [
        Layer("convnext", "dw7x7_56x96", (56, 56), 96, 96, (7, 7), groups=96),
        Layer("convnext", "dw7x7_28x192", (28, 28), 192, 192, (7, 7), groups=192),
        Layer("convnext", "dw7x7_14x384", (14, 14), 384, 384, (7, 7), groups=384),
    ]
    s["transposed"] = [
        _transposed("transposed", "dcgan_4x4_s2_16to32", (16, 16), 256, 128, 4, 2, 1),
        _transposed("transposed", "unet_2x2_s2_32to64", (32, 32), 256, 128, 2, 2, 0),
        _transposed("transposed", "melgan_1d_k8_s4", (2048,), 128, 64, 8, 4, 2),
    ]
    s["wavenet"] = [
        Layer("wavenet", f"causal_k2_d{d}", (16000,), 64, 64, (2,), dilation=d, padding="CAUSAL")
        for d in (1, 32, 512)
    ]
    s["c3d"] = [
        Layer(
            "c3d",
            "conv1_3x3x3",
            (8, 112, 112),
            3,
            64,
            (3, 3, 3),
            note="C3D conv1 at 112x112 on an 8-frame clip (16 in the model) to keep the "
            "suite short",
        ),
        Layer("c3d", "conv5a_3x3x3", (2, 7, 7), 512, 512, (3, 3, 3)),
    ]
    s["large_kernel"] = [
        Layer("large_kernel", "replknet_dw31_14x512", (14, 14), 512, 512, (31, 31), groups=512),
        Layer("large_kernel", "dense31_16x32", (16, 16), 32, 32, (31, 31)),
    ]
    return s


#: suite name -> layers (batch 8, float32 by default)
SUITES: dict[str, list[Layer]] = _suites()


def layers(suites: Iterable[str] | None = None) -> list[Layer]:
    """The layers of the named suites (all suites when ``None``)."""
    names = list(SUITES) if suites is None else list(suites)
    unknown = [n for n in names if n not in SUITES]
    if unknown:
        raise ValueError(f"`suites` must be among {sorted(SUITES)}, got {unknown}")
    return [layer for n in names for layer in SUITES[n]]


def native_dtypes(backend: str | None = None) -> list[str]:
    """float32 everywhere, plus bfloat16 where the backend computes it natively (GPU,
    TPU; the CPU backend emulates bfloat16 convolutions through float32)."""
    backend = backend or jax.default_backend()
    return ["float32"] if backend == "cpu" else ["float32", "bfloat16"]


# --------------------------------------------------------------------------------------
# What is timed
# --------------------------------------------------------------------------------------

#: Implementations timed only where they are meant to pay off. ``fft`` is the
#: large-kernel implementation: on a 1x1 or 3x3 layer its frequency-domain kernel
#: (window padded to the input size, times I x O) is many times lax's memory.
#: ``taps`` and ``im2col`` are timed up to 64 taps per window: on a 31x31 window taps
#: unrolls 961 slices (minutes to compile) and im2col's forward+backward took 36 s per
#: call on RepLKNet's 14x14x512 layer (NOTES.md), where fft takes 0.4 s.
TIMING_RULES: dict[str, Callable[[ConvSpec], bool]] = {
    "fft": lambda spec: math.prod(spec.window) >= 49,
    "taps": lambda spec: math.prod(spec.window) <= 64,
    "im2col": lambda spec: math.prod(spec.window) <= 64,
}


def candidate_implementations(spec: ConvSpec, backend: str | None = None) -> list[str]:
    """Registered implementations worth timing for ``spec`` on ``backend``: those that
    support the spec, list the backend among their platforms, and pass
    :data:`TIMING_RULES`. ``xla`` is left out: it is lax, timed as the baseline."""
    backend = backend or jax.default_backend()
    out = []
    for name in dispatch.implementations():
        if name in ("xla", "autotune"):  # lax is the baseline; autotune picks among these
            continue
        try:
            impl = dispatch._get(name)
        except ImportError:  # an optional extra of that implementation is missing
            continue
        if backend not in impl.platforms or impl.supports(spec) is not None:
            continue
        if not TIMING_RULES.get(name, lambda s: True)(spec):
            continue
        out.append(name)
    return out


def _operands(spec: ConvSpec, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(spec.lhs_shape).astype(np.float32)
    fan_in = spec.rhs_in_features * math.prod(spec.window)
    w = (rng.standard_normal(spec.rhs_shape) / math.sqrt(fan_in)).astype(np.float32)
    ct = rng.standard_normal(spec.out_shape).astype(np.float32)
    dt = jnp.dtype(spec.lhs_dtype)
    return jnp.asarray(x, dt), jnp.asarray(w, dt), jnp.asarray(ct, dt)


def conv_function(spec: ConvSpec, implementation: str | None) -> Callable:
    """``f(x, w)`` computing ``spec`` with ``implementation`` (``"lax"`` is the baseline
    ``lax.conv_general_dilated`` itself, ``None`` the automatic choice)."""
    if implementation == "lax":
        return lambda x, w: lax.conv_general_dilated(x, w, **spec.lax_kwargs())
    return lambda x, w: dispatch.run(x, w, spec, implementation)


def mode_function(f: Callable, mode: str) -> Callable:
    """``fwd``: ``f(x, w)``; ``fwd+bwd``: the output and both gradients for a fixed
    output cotangent ``ct`` (one forward and one backward pass)."""
    if mode == "fwd":
        return lambda x, w, ct: f(x, w)

    def fwd_bwd(x, w, ct):
        y, vjp = jax.vjp(f, x, w)
        dx, dw = vjp(ct)
        return y, dx, dw

    return fwd_bwd


def _memory(compiled) -> dict[str, int | None]:
    try:
        m = compiled.memory_analysis()
    except Exception:  # not every backend / version reports it
        m = None
    if m is None:
        return {"peak_bytes": None, "temp_bytes": None}
    temp = int(getattr(m, "temp_size_in_bytes", 0) or 0)
    args = int(getattr(m, "argument_size_in_bytes", 0) or 0)
    outs = int(getattr(m, "output_size_in_bytes", 0) or 0)
    alias = int(getattr(m, "alias_size_in_bytes", 0) or 0)
    peak = getattr(m, "peak_memory_in_bytes", None)
    return {"peak_bytes": int(peak) if peak else temp + args + outs - alias, "temp_bytes": temp}


def _repeat_count(first: float, *, repeats: int, min_time: float, max_time: float) -> int:
    """How many timed calls a call taking ``first`` seconds gets: at least ``repeats``
    unless that would exceed ``max_time`` (then as many as fit, at least one), and more
    (up to 50) while the total stays under ``min_time``."""
    if first * repeats > max_time:
        return max(1, int(max_time // max(first, 1e-9)))
    if first * repeats < min_time:
        return min(50, max(repeats, int(min_time // max(first, 1e-9))))
    return repeats


#: Calls faster than this (seconds) are primed by untimed calls of the same program
#: right before each timed one when several programs are timed round-robin ...
PRIME_BELOW_S = 0.2
#: ... for at least this long (seconds; at least one call).
PRIME_MIN_S = 0.02


def time_interleaved(
    calls: dict[str, Callable[[], Any]],
    *,
    repeats: int,
    min_time: float,
    max_time: float,
) -> dict[str, tuple[float, int]]:
    """Median wall time of each call after one warm-up call each, ``{name: (seconds,
    timed calls)}``. The calls are timed round-robin (one call of each per round), so
    every ratio between them is taken under the same machine load: on a shared machine
    the load drifts by more than the differences being measured, and timing one
    implementation after the other turned identical programs into 0.45-2.3x ratios
    (``benchmarks/NOTES.md`` section 7).

    With several calls, each timed call of a program faster than :data:`PRIME_BELOW_S`
    follows untimed calls of the same program for at least :data:`PRIME_MIN_S`: right
    after another program, XLA:CPU's worker threads of that program are still spinning
    and slowed the next program 2-3x (taps after lax on MobileNetV2's 56x56x144 layer: 28
    vs 10-13 ms; NOTES.md section 11), while a pause instead adds thread wake-up to
    sub-millisecond calls; and after either, the second core takes a few milliseconds to
    come back to speed (a 0.3 ms call read 1.5, 1.0, 0.7, 0.6, 0.3 ms in its first five
    calls after 30 ms of idling; NOTES.md section 14). Every timed call then runs as it
    does back to back, as PyTorch's are timed."""
    counts, prime = {}, {}
    for name, call in calls.items():
        t0 = time.perf_counter()
        jax.block_until_ready(call())  # warm-up
        first = time.perf_counter() - t0
        counts[name] = _repeat_count(first, repeats=repeats, min_time=min_time, max_time=max_time)
        prime[name] = len(calls) > 1 and first < PRIME_BELOW_S
    times: dict[str, list[float]] = {name: [] for name in calls}
    for r in range(max(counts.values(), default=0)):
        for name, call in calls.items():
            if r < counts[name]:
                if prime[name]:
                    start = time.perf_counter()
                    jax.block_until_ready(call())
                    while time.perf_counter() - start < PRIME_MIN_S:
                        jax.block_until_ready(call())
                t0 = time.perf_counter()
                jax.block_until_ready(call())
                times[name].append(time.perf_counter() - t0)
    return {name: (statistics.median(ts), len(ts)) for name, ts in times.items()}


def _time_calls(
    call: Callable[[], Any], *, repeats: int, min_time: float, max_time: float
) -> tuple[float, int]:
    """Median wall time of one call (:func:`time_interleaved` with one entry)."""
    return time_interleaved({"call": call}, repeats=repeats, min_time=min_time, max_time=max_time)[
        "call"
    ]


def measure_matmul_rate(dtype: str = "float32", size: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of one large jitted square matmul on the default device (the machine's
    reference rate, measured in the same run as the convolutions)."""
    rng = np.random.default_rng(0)
    a = jnp.asarray(rng.standard_normal((size, size)), dtype)
    b = jnp.asarray(rng.standard_normal((size, size)), dtype)
    f = jax.jit(jnp.matmul)
    t, _ = _time_calls(lambda: f(a, b), repeats=repeats, min_time=0.5, max_time=20.0)
    return 2 * size**3 / t / 1e9


# --------------------------------------------------------------------------------------
# PyTorch baseline (optional)
# --------------------------------------------------------------------------------------


def torch_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def torch_function(layer: Layer, spec: ConvSpec, mode: str, dtype: str):
    """A zero-argument callable running the layer in PyTorch (channels-last memory
    format, the fastest on CPU), or ``None`` when PyTorch cannot express the layer."""
    import torch
    import torch.nn.functional as F

    n = len(layer.spatial)
    tdt = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    x, w, ct = (np.asarray(a, np.float32) for a in _operands(spec))
    # channels-last (N, *sp, C) -> (N, C, *sp); kernel (*win, I, O) -> (O, I, *win)
    xt = torch.from_numpy(np.moveaxis(x, -1, 1).copy()).to(tdt)
    fmt = {2: torch.channels_last, 3: torch.channels_last_3d}.get(n)
    if fmt is not None:
        xt = xt.contiguous(memory_format=fmt)
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[n]
    if layer.input_dilation > 1:
        if layer.dilation != 1:
            return None
        k = layer.window[0]
        p = k - 1 - layer.padding[0][0]
        tconv = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}[n]
        # transposed weight (I, O, *win)
        wt = torch.from_numpy(
            np.ascontiguousarray(np.transpose(w, (n, n + 1) + tuple(range(n))))
        ).to(tdt)

        def run(a, b):
            return tconv(a, b, stride=layer.input_dilation, padding=p)
    else:
        wt = torch.from_numpy(
            np.ascontiguousarray(np.transpose(w, (n + 1, n) + tuple(range(n))))
        ).to(tdt)
        if isinstance(layer.padding, str):
            pads = spec.padding
        else:
            pads = layer.padding
        sym = all(lo == hi for lo, hi in pads)

        def run(a, b):
            if not sym:
                flat = [v for lo, hi in reversed(pads) for v in (lo, hi)]
                a = F.pad(a, flat)
                return conv(a, b, stride=layer.stride, dilation=layer.dilation, groups=layer.groups)
            return conv(
                a,
                b,
                stride=layer.stride,
                padding=[lo for lo, _ in pads],
                dilation=layer.dilation,
                groups=layer.groups,
            )

    with torch.no_grad():
        out_shape = tuple(run(xt, wt).shape)
    want = (spec.out_shape[0], spec.out_shape[-1]) + tuple(spec.out_shape[1:-1])
    if out_shape != want:
        raise AssertionError(
            f"torch baseline for {layer.key} has shape {out_shape}, expected {want}"
        )
    if mode == "fwd":

        def call():
            with torch.no_grad():
                return run(xt, wt)

        return call
    ctt = torch.from_numpy(np.moveaxis(ct, -1, 1).copy()).to(tdt)
    xg = xt.detach().requires_grad_(True)
    wg = wt.detach().requires_grad_(True)

    def call_fb():
        xg.grad = None
        wg.grad = None
        y = run(xg, wg)
        y.backward(ctt)
        return y

    return call_fb


# --------------------------------------------------------------------------------------
# The runner
# --------------------------------------------------------------------------------------


@dataclasses.dataclass
class Options:
    suites: Sequence[str] | None = None
    layers: Sequence[str] | None = None  # "suite/name" or "name"; None: every layer
    modes: Sequence[str] = MODES
    implementations: Sequence[str] | None = None  # None: every candidate
    dtypes: Sequence[str] | None = None  # None: native_dtypes()
    torch: bool = True
    tiny: bool = False
    batch: int | None = None
    repeats: int = 5
    min_time: float = 0.3
    max_time: float = 6.0
    check: bool = True


def _cpu_model() -> dict[str, Any]:
    """The processor's model name and widest vector extension (from ``/proc/cpuinfo``
    where there is one): results from different machines differ by more than the
    changes they measure, and ``cpu_direct``'s blocks depend on the vector width."""
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        return {}
    fields = dict(
        (k.strip(), v.strip())
        for k, _, v in (line.partition(":") for line in text.splitlines())
        if v
    )
    flags = set(fields.get("flags", "").split())
    isa = next((name for name in ("avx512f", "avx2", "avx", "sse2") if name in flags), None)
    return {"cpu_model": fields.get("model name"), "cpu_isa": isa}


def machine_info(matmul_gflops: dict[str, float]) -> dict[str, Any]:
    dev = jax.devices()[0]
    info = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "backend": jax.default_backend(),
        "device_kind": dev.device_kind,
        "device_count": jax.device_count(),
        "cpu": platform.processor() or platform.machine(),
        **_cpu_model(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jaxlib": jax.lib.__version__ if hasattr(jax, "lib") else None,
        "numpy": np.__version__,
        "matmul_gflops": matmul_gflops,
    }
    try:
        import jaxlib

        info["jaxlib"] = jaxlib.__version__
    except Exception:
        pass
    if torch_available():
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    import jaxconv

    info["jaxconv"] = jaxconv.__version__
    return info


def plan(options: Options) -> list[tuple[Layer, str, str, str]]:
    """Every (layer, dtype, mode, implementation) the run times, baselines included."""
    backend = jax.default_backend()
    dtypes = list(options.dtypes or native_dtypes(backend))
    rows = []
    chosen = layers(options.suites)
    if options.layers is not None:
        wanted = set(options.layers)
        chosen = [lay for lay in chosen if lay.key in wanted or lay.name in wanted]
        if not chosen:
            raise ValueError(f"`layers` {sorted(wanted)} match no layer of the suites")
    for layer in chosen:
        if options.tiny:
            layer = layer.tiny()
        if options.batch is not None:
            layer = dataclasses.replace(layer, batch=options.batch)
        for dtype in dtypes:
            spec = layer.spec(dtype)
            impls = candidate_implementations(spec, backend)
            if options.implementations is not None:
                impls = [i for i in impls if i in options.implementations]
            names = ["lax"] + impls
            if options.torch and torch_available():
                names.append("torch")
            for mode in options.modes:
                rows.extend((layer, dtype, mode, name) for name in names)
    return rows


def _prepare_row(
    layer: Layer, dtype: str, mode: str, name: str, options: Options, cache: dict
) -> tuple[dict[str, Any], Callable[[], Any] | None]:
    """Compile (and check against lax) one row; returns the row and the zero-argument
    call to time, or ``None`` when the implementation refused the spec."""
    spec = layer.spec(dtype)
    cost = spec.cost()
    flops = cost["flops"] * (1 if mode == "fwd" else 3)
    row: dict[str, Any] = {
        "suite": layer.suite,
        "layer": layer.name,
        "kind": layer.kind,
        "dtype": dtype,
        "mode": mode,
        "impl": name,
        "spec": str(spec),
        "gflop": flops / 1e9,
        "note": layer.note,
    }
    x, w, ct = _operands(spec)
    if name == "torch":
        call = torch_function(layer, spec, mode, dtype)
        if call is None:
            row["error"] = "not expressible in PyTorch"
        row.update(compile_s=None, peak_bytes=None, temp_bytes=None)
        return row, call
    f = mode_function(conv_function(spec, name), mode)
    t0 = time.perf_counter()
    try:
        compiled = jax.jit(f).lower(x, w, ct).compile()
    except NotImplementedError as e:
        row["error"] = str(e)
        return row, None
    row["compile_s"] = time.perf_counter() - t0
    row.update(_memory(compiled))
    if options.check:
        out = compiled(x, w, ct)
        out = out if isinstance(out, tuple) else (out,)
        key = (layer.key, dtype, mode)
        if name == "lax":
            cache[key] = out
        elif key in cache:
            row["rel_error"] = max(relative_error(a, b) for a, b in zip(out, cache[key]))
            tol = tolerance(dtype) * (50 if mode != "fwd" else 10)
            row["matches_lax"] = bool(row["rel_error"] <= tol)
    return row, lambda: compiled(x, w, ct)


def _measure_group(todo, options: Options, cache: dict) -> list[dict[str, Any]]:
    """Compile every row of one (layer, dtype, mode) group, then time them interleaved
    (:func:`time_interleaved`), so the group's ratios share one machine load."""
    rows, calls = [], {}
    for layer, dtype, mode, name in todo:
        row, call = _prepare_row(layer, dtype, mode, name, options, cache)
        rows.append(row)
        if call is not None:
            calls[name] = call
    kw = dict(repeats=options.repeats, min_time=options.min_time, max_time=options.max_time)
    # PyTorch is timed on its own, after a pause: interleaved right after an XLA call,
    # XLA's still-spinning worker threads take its cores (6.5 -> 11.8-17 ms), and
    # with a pause before every call its sleeping threads add ~10 ms of wake-up to
    # sub-millisecond layers (NOTES.md section 7)
    torch_call = calls.pop("torch", None)
    timed = time_interleaved(calls, **kw)
    if torch_call is not None:
        time.sleep(0.05)
        timed["torch"] = time_interleaved({"torch": torch_call}, **kw)["torch"]
    for row in rows:
        if row["impl"] in timed:
            row["time_s"], row["repeats"] = timed[row["impl"]]
    return rows


def _derive(rows: list[dict], matmul: dict[str, float]) -> None:
    """Fill GFLOP/s, matmul fraction, ratios to lax and torch, and the automatic
    choice's rows (the implementation ``implementation=None`` picks, with its time)."""
    by_key: dict[tuple, dict[str, dict]] = {}
    for r in rows:
        by_key.setdefault((r["suite"], r["layer"], r["dtype"], r["mode"]), {})[r["impl"]] = r
    for group in by_key.values():
        base = group.get("lax", {}).get("time_s")
        ref_torch = group.get("torch", {}).get("time_s")
        for r in group.values():
            t = r.get("time_s")
            if not t:
                continue
            r["gflops"] = r["gflop"] / t
            rate = matmul.get(r["dtype"])
            r["matmul_fraction"] = r["gflops"] / rate if rate else None
            r["speedup_vs_lax"] = base / t if base else None
            r["speedup_vs_torch"] = ref_torch / t if ref_torch else None
            lax_peak = group.get("lax", {}).get("peak_bytes")
            r["peak_vs_lax"] = (
                r["peak_bytes"] / lax_peak if r.get("peak_bytes") and lax_peak else None
            )


def auto_rows(
    rows: list[dict], layer_specs: dict[tuple, ConvSpec], backend: str | None = None
) -> list[dict]:
    """One ``auto`` row per (layer, dtype, mode): the timing of the implementation that
    ``implementation=None`` selects for that spec (the automatic choice runs exactly
    that compiled program)."""
    out = []
    by_key: dict[tuple, dict[str, dict]] = {}
    for r in rows:
        by_key.setdefault((r["suite"], r["layer"], r["dtype"], r["mode"]), {})[r["impl"]] = r
    for key, group in by_key.items():
        spec = layer_specs.get(key[:3])
        if spec is None:
            continue
        chosen = dispatch.select(spec, None).name
        src = group.get("lax" if chosen == "xla" else chosen)
        if src is None or "time_s" not in src:
            continue
        r = dict(src)
        r["impl"] = "auto"
        r["auto_choice"] = chosen
        if chosen == "xla":  # the same program as the lax row
            r.update(rel_error=0.0, matches_lax=True)
        out.append(r)
    return out


def run(options: Options, progress: bool = True) -> dict[str, Any]:
    """Time everything :func:`plan` lists; returns ``{"machine": ..., "rows": [...]}``."""
    backend = jax.default_backend()
    dtypes = list(options.dtypes or native_dtypes(backend))
    todo = plan(options)
    matmul = {dt: measure_matmul_rate(dt, size=512 if options.tiny else 2048) for dt in dtypes}
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), unit="row", dynamic_ncols=True)
    rows: list[dict] = []
    cache: dict = {}
    specs: dict[tuple, ConvSpec] = {}
    groups: dict[tuple, list] = {}
    for item in todo:
        layer, dtype, mode, _ = item
        groups.setdefault((layer.key, dtype, mode), []).append(item)
    try:
        for group in groups.values():
            layer, dtype, mode, _ = group[0]
            if bar is not None:
                bar.set_description(f"{layer.key} {mode}"[:60])
            specs[(layer.suite, layer.name, dtype)] = layer.spec(dtype)
            rows.extend(_measure_group(group, options, cache))
            if bar is not None:
                bar.update(len(group))
    finally:
        if bar is not None:
            bar.close()
    rows.extend(auto_rows(rows, specs, backend))
    _derive(rows, matmul)
    return {
        "machine": machine_info(matmul),
        "options": _jsonable(dataclasses.asdict(options)),
        "rows": rows,
    }


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return value


# --------------------------------------------------------------------------------------
# Reports: JSON, Markdown, PNG
# --------------------------------------------------------------------------------------


def _fmt(v, spec: str = ".2f", none: str = "") -> str:
    if v is None:
        return none
    return format(v, spec)


def markdown(result: dict[str, Any]) -> str:
    """A readable Markdown report: machine, then one table per suite."""
    m = result["machine"]
    lines = ["# jaxconv benchmarks", ""]
    lines.append(
        f"{m['date_utc']} UTC, backend `{m['backend']}` ({m['device_kind']}, "
        f"{m['cpu_count']} CPU threads"
        + (f", {m['cpu_model']}, {m['cpu_isa']}" if m.get("cpu_model") else "")
        + f"), jax {m['jax']}, jaxlib {m['jaxlib']}, "
        f"jaxconv {m['jaxconv']}" + (f", torch {m['torch']}" if m.get("torch") else "") + "."
    )
    rates = ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in m["matmul_gflops"].items())
    lines += [f"Measured matmul rate (2048x2048, same run): {rates}.", ""]
    if m.get("auto_rows_rederived"):
        lines += [f"The `auto` rows: {m['auto_rows_rederived']}", ""]
    lines += [
        "Times are medians after warm-up; `x lax` / `x torch` are speedups "
        "(>1 is faster than the baseline); `peak` is the compiled program's "
        "memory analysis; `auto` is the implementation `implementation=None` "
        "picks. `fwd+bwd` is the output and both gradients; its GFLOP count is 3x the "
        "forward's. Transposed layers count the zeros of the input dilation, as "
        "lax computes them.",
        "",
    ]
    lines += [
        "## Summary",
        "",
        targets_markdown(result),
        "## Automatic choice",
        "",
        auto_choice_markdown(result),
    ]
    rows = result["rows"]
    for suite in dict.fromkeys(r["suite"] for r in rows):
        lines += [
            f"## {suite}",
            "",
            "| layer | mode | impl | ms | compile s | GFLOP/s | % matmul | peak MB | "
            "x lax | x torch | ok |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|:-:|",
        ]
        for r in rows:
            if r["suite"] != suite:
                continue
            if "time_s" not in r:
                lines.append(
                    f"| {r['layer']} | {r['mode']} | {r['impl']} | "
                    f"{r.get('error', 'n/a')[:60]} | | | | | | | |"
                )
                continue
            impl = r["impl"] + (f" ({r['auto_choice']})" if r.get("auto_choice") else "")
            frac = r.get("matmul_fraction")
            ok = {True: "yes", False: "NO", None: ""}[r.get("matches_lax")]
            lines.append(
                f"| {r['layer']} | {r['mode']} | {impl} | {r['time_s'] * 1e3:.2f} | "
                f"{_fmt(r.get('compile_s'))} | {_fmt(r.get('gflops'), '.1f')} | "
                f"{_fmt(frac * 100 if frac is not None else None, '.0f')} | "
                f"{_fmt(r['peak_bytes'] / 2**20 if r.get('peak_bytes') else None, '.1f')} | "
                f"{_fmt(r.get('speedup_vs_lax'))} | {_fmt(r.get('speedup_vs_torch'))} | {ok} |"
            )
        lines.append("")
    return "\n".join(lines)


def chart(result: dict[str, Any], path: str) -> bool:
    """A PNG of the speedup over lax per layer (log scale), one panel per mode.
    Returns False (and writes nothing) when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = [r for r in result["rows"] if r.get("speedup_vs_lax") and r["impl"] != "lax"]
    modes = [m for m in MODES if any(r["mode"] == m for r in rows)]
    if not modes:
        return False
    impls = list(dict.fromkeys(r["impl"] for r in rows))
    labels = list(dict.fromkeys(f"{r['suite']}/{r['layer']}" for r in rows))
    fig, axes = plt.subplots(
        len(modes), 1, figsize=(max(10, 0.45 * len(labels)), 4.5 * len(modes)), squeeze=False
    )
    width = 0.8 / max(1, len(impls))
    for ax, mode in zip(axes[:, 0], modes):
        for k, impl in enumerate(impls):
            vals = {
                f"{r['suite']}/{r['layer']}": r["speedup_vs_lax"]
                for r in rows
                if r["mode"] == mode and r["impl"] == impl
            }
            xs = [
                i + (k - len(impls) / 2) * width + width / 2
                for i, lb in enumerate(labels)
                if lb in vals
            ]
            ax.bar(xs, [vals[lb] for lb in labels if lb in vals], width, label=impl)
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_yscale("log")
        ax.set_ylabel(f"speedup over lax ({mode})")
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels, rotation=70, ha="right", fontsize=7)
        ax.legend(fontsize=7, ncol=len(impls))
        ax.grid(axis="y", which="both", alpha=0.3)
    m = result["machine"]
    fig.suptitle(
        f"jaxconv vs lax on {m['backend']} ({m['device_kind']}, "
        f"{m['cpu_count']} threads), jax {m['jax']}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write(result: dict[str, Any], out_dir: str, name: str) -> dict[str, str]:
    """Write ``<name>.json``, ``<name>.md`` and (with matplotlib) ``<name>.png``."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {
        "json": os.path.join(out_dir, f"{name}.json"),
        "md": os.path.join(out_dir, f"{name}.md"),
    }
    with open(paths["json"], "w") as fh:
        json.dump(_jsonable(result), fh, indent=1)
    with open(paths["md"], "w") as fh:
        fh.write(markdown(result))
    paths["auto_choice"] = os.path.join(out_dir, f"{name}_auto_choice.md")
    with open(paths["auto_choice"], "w") as fh:
        fh.write(
            "# The automatic choice (`implementation=None`), measured\n\n"
            f"From `{name}.json` ({result['machine']['backend']}, "
            f"{result['machine']['date_utc']} UTC); the rule is "
            "`jaxconv._src.dispatch.auto_order`.\n\n" + auto_choice_markdown(result)
        )
    png = os.path.join(out_dir, f"{name}.png")
    if chart(result, png):
        paths["png"] = png
    return paths


# --------------------------------------------------------------------------------------
# Summaries computed from a result: the automatic choice's table and the targets
# --------------------------------------------------------------------------------------

#: Implementations that are not this library's own (baselines and the auto alias).
BASELINES = ("lax", "torch", "auto")


def _geomean(values: Iterable[float]) -> float | None:
    vals = [v for v in values if v]
    return math.exp(sum(math.log(v) for v in vals) / len(vals)) if vals else None


def _groups(rows: list[dict]) -> dict[tuple, dict[str, dict]]:
    out: dict[tuple, dict[str, dict]] = {}
    for r in rows:
        if "time_s" in r:
            key = (r["suite"], r["layer"], r["dtype"], r["mode"])
            out.setdefault(key, {})[r["impl"]] = r
    return out


def auto_choice_markdown(result: dict[str, Any]) -> str:
    """The automatic choice per layer (what ``implementation=None`` runs), with its
    measured speedup over lax and PyTorch in both modes: the docs' table."""
    groups = _groups(result["rows"])
    lines = [
        "| suite | layer | kind | auto choice | fwd x lax | fwd+bwd x lax | fwd x torch | "
        "fwd+bwd x torch |",
        "|---|---|---|---|---:|---:|---:|---:|",
    ]
    layers_seen = dict.fromkeys((k[0], k[1], k[2]) for k in groups)
    for suite, layer, dtype in layers_seen:
        fwd = groups.get((suite, layer, dtype, "fwd"), {}).get("auto", {})
        fb = groups.get((suite, layer, dtype, "fwd+bwd"), {}).get("auto", {})
        ref = fwd or fb
        if not ref:
            continue
        lines.append(
            f"| {suite} | {layer} | {ref['kind']} | `{ref['auto_choice']}` | "
            f"{_fmt(fwd.get('speedup_vs_lax'))} | {_fmt(fb.get('speedup_vs_lax'))} | "
            f"{_fmt(fwd.get('speedup_vs_torch'))} | {_fmt(fb.get('speedup_vs_torch'))} |"
        )
    return "\n".join(lines) + "\n"


def targets_markdown(result: dict[str, Any]) -> str:
    """Per layer kind and mode: the geometric mean and the minimum, over layers, of the
    best own implementation's speedup over lax and PyTorch; the automatic choice's
    worst ratio to lax; and the worst peak memory of any own implementation
    relative to lax's."""
    groups = _groups(result["rows"])
    stats: dict[tuple, dict[str, list]] = {}
    for (suite, _layer, _dtype, mode), g in groups.items():
        own = {k: r for k, r in g.items() if k not in BASELINES}
        if not own:
            continue
        best = min(own.values(), key=lambda r: r["time_s"])
        kind = best["kind"] if suite != "large_kernel" else "large kernel"
        s = stats.setdefault((kind, mode), {"lax": [], "torch": [], "auto": [], "mem": []})
        s["lax"].append(best.get("speedup_vs_lax"))
        s["torch"].append(best.get("speedup_vs_torch"))
        if "auto" in g and g["auto"].get("speedup_vs_lax"):
            s["auto"].append(g["auto"]["speedup_vs_lax"])
        s["mem"].extend(r.get("peak_vs_lax") for r in own.values() if r.get("peak_vs_lax"))
    lines = [
        "| kind | mode | best own x lax (geomean / min) | best own x torch (geomean / min) "
        "| auto x lax (min) | own peak memory / lax (max) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for (kind, mode), s in sorted(stats.items()):
        lax_v = [v for v in s["lax"] if v]
        torch_v = [v for v in s["torch"] if v]
        lines.append(
            f"| {kind} | {mode} | {_fmt(_geomean(lax_v))} / {_fmt(min(lax_v, default=None))} | "
            f"{_fmt(_geomean(torch_v))} / {_fmt(min(torch_v, default=None))} | "
            f"{_fmt(min(s['auto'], default=None))} | {_fmt(max(s['mem'], default=None))} |"
        )
    return "\n".join(lines) + "\n"
