"""The prepared GPU check for the ``pallas_triton`` kernels: one script, one GPU, <= 8 min.

1. runs the GPU test subset (``pytest -m gpu tests/test_pallas_triton.py``) on the card;
2. measures the card's bf16 matmul rate (8192^3 ``jnp.dot``);
3. times forward and forward+backward of ResNet-50 3x3 layers, ResNeXt-50 grouped
   layers, MobileNetV2 depthwise layers and a U-Net transposed layer, in bfloat16 and
   float32 (DEFAULT precision: TF32 on both sides), ``pallas_triton`` against ``xla``
   (lax, cuDNN) in the same run: median time, TFLOP/s, fraction of the matmul rate,
   ratio against lax, compile time, peak temporary memory. Each timed program runs
   ``copies`` independent convolutions (own operands, one kernel) per dispatch, so the
   time is the device's and not the host's dispatch of one small layer (a single
   convolution per call is timed too, as ``one_call_s``, with the host's floor);
4. writes ``gpu_check_<card>.json`` and ``gpu_check_<card>.md`` under
   ``benchmarks/results/`` and prints the issue's speed targets with PASS/FAIL.

Usage::

    python benchmarks/gpu_check.py                 # on a GPU machine
    python benchmarks/gpu_check.py --dry-run       # CPU: interpret mode, tiny shapes

``--dry-run`` runs every step on scaled-down layers (the kernels run interpreted on a
CPU), to check the script itself; its results go to a temporary folder unless ``--out``
is given. A time budget (``--budget``, default 450 s) stops the timings early (the rows
left are recorded as skipped) so the whole check fits in 8 minutes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class Layer:
    """One convolution layer, NHWC / HWIO. ``transposed``: a stride-``stride``
    transposed convolution (lhs dilation, no zeros materialised by the kernels)."""

    family: str
    name: str
    batch: int
    size: int  # input height = width
    cin: int
    cout: int
    k: int
    stride: int = 1
    groups: int = 1
    transposed: bool = False

    def tiny(self) -> Layer:
        """A scaled-down copy for ``--dry-run`` (same class: groups, stride, ...)."""
        if self.groups == self.cin:  # depthwise
            cin = cout = groups = 8
        elif self.groups > 1:
            groups, cin, cout = 2, 2 * (self.cin // self.groups), 2 * (self.cout // self.groups)
        else:
            groups, cin, cout = 1, 16, 16
        return dataclasses.replace(
            self, batch=1, size=min(self.size, 6), cin=cin, cout=cout, groups=groups
        )

    def conv_kwargs(self) -> dict:
        if self.transposed:
            p = self.k - 1
            return dict(
                window_strides=(1, 1),
                padding=((p, p), (p, p)),
                lhs_dilation=(self.stride, self.stride),
            )
        return dict(
            window_strides=(self.stride, self.stride),
            padding="SAME",
            feature_group_count=self.groups,
        )


#: Batch 32, the issue's benchmark setting (and ResNet's 3x3 layers at batch 128).
LAYERS = [
    Layer("resnet50_3x3", "conv2_56x56x64", 32, 56, 64, 64, 3),
    Layer("resnet50_3x3", "conv3_28x28x128", 32, 28, 128, 128, 3),
    Layer("resnet50_3x3", "conv4_14x14x256", 32, 14, 256, 256, 3),
    Layer("resnet50_3x3", "conv5_7x7x512", 32, 7, 512, 512, 3),
    # The same layers at batch 128: enough work to fill the card (the rate target).
    Layer("resnet50_3x3_b128", "conv2_56x56x64_b128", 128, 56, 64, 64, 3),
    Layer("resnet50_3x3_b128", "conv3_28x28x128_b128", 128, 28, 128, 128, 3),
    Layer("resnet50_3x3_b128", "conv4_14x14x256_b128", 128, 14, 256, 256, 3),
    Layer("resnet50_3x3_b128", "conv5_7x7x512_b128", 128, 7, 512, 512, 3),
    Layer("resnext50_grouped", "g32_56x56x128", 32, 56, 128, 128, 3, groups=32),
    Layer("resnext50_grouped", "g32_28x28x256", 32, 28, 256, 256, 3, groups=32),
    Layer("resnext50_grouped", "g32_14x14x512", 32, 14, 512, 512, 3, groups=32),
    Layer("mobilenetv2_depthwise", "dw_112x112x96_s2", 32, 112, 96, 96, 3, 2, groups=96),
    Layer("mobilenetv2_depthwise", "dw_56x56x144", 32, 56, 144, 144, 3, groups=144),
    Layer("mobilenetv2_depthwise", "dw_28x28x192", 32, 28, 192, 192, 3, groups=192),
    Layer("mobilenetv2_depthwise", "dw_14x14x576", 32, 14, 576, 576, 3, groups=576),
    Layer("unet_transposed", "up_28x28x512_to_256", 32, 28, 512, 256, 2, 2, transposed=True),
]

IMPLEMENTATIONS = ("pallas_triton", "xla")


def card_tag(device, dry_run: bool) -> str:
    """The card's name as a file-name part (``nvidia_h100_80gb_hbm3``; ``dryrun``)."""
    if dry_run:
        return "dryrun"
    kind = getattr(device, "device_kind", str(device))
    return "".join(c if c.isalnum() else "_" for c in kind).strip("_").lower()


def _useful_flops(spec) -> float:
    """2 x multiply-adds that touch real input samples (input-dilation zeros excluded)."""
    return spec.cost()["flops"] / math.prod(spec.lhs_dilation)


def _timeit(fn, args, repeats: int, warmup: int = 2, target_s: float = 0.02) -> float:
    """Median seconds per call. Each sample runs ``k`` calls back to back and blocks
    once (``k`` chosen so a sample lasts about ``target_s``), so the host's dispatch
    time overlaps the device's work, as in a training step, and sub-0.1 ms layers are
    not timed as launch latency."""
    import jax

    for _ in range(warmup):
        jax.block_until_ready(fn(*args))
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    first = time.perf_counter() - t0
    k = max(1, min(200, int(target_s / max(first, 1e-6))))
    if first > 0.25:  # a slow program: a few samples are enough
        repeats = min(repeats, 3)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = None
        for _ in range(k):
            out = fn(*args)
        jax.block_until_ready(out)
        times.append((time.perf_counter() - t0) / k)
    return statistics.median(times)


def dispatch_floor(repeats: int) -> float:
    """Seconds per call of a trivial jitted program timed like the rows: the host's
    dispatch rate, under which a one-convolution-per-call time says nothing of the
    device."""
    import jax
    import jax.numpy as jnp

    return _timeit(jax.jit(lambda v: v + 1), (jnp.ones((8,), jnp.float32),), repeats)


def matmul_rate(dry_run: bool, repeats: int) -> float:
    """Measured bf16 matmul rate of the device, in TFLOP/s."""
    import jax
    import jax.numpy as jnp

    n = 256 if dry_run else 8192
    ka, kb = jax.random.split(jax.random.key(0))
    a = jax.random.normal(ka, (n, n), jnp.bfloat16)  # random data: zeros run faster
    b = jax.random.normal(kb, (n, n), jnp.bfloat16)
    f = jax.jit(lambda x, y: jnp.dot(x, y, preferred_element_type=jnp.float32).astype(jnp.bfloat16))
    t = _timeit(f, (a, b), repeats)
    return 2 * n**3 / t / 1e12


def run_tests(timeout: int, workers: int, log: Path | None) -> dict:
    """The GPU test subset in its own processes (``workers`` pytest-xdist workers share
    the card: compiling Triton kernels is CPU work), one line per test."""
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-v", "-p", "no:cacheprovider"]
    cmd += ["-n", str(workers)] if workers > 1 else []
    cmd += [str(ROOT / "tests" / "test_pallas_triton.py")]
    env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false")
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env
        )
        text, rc = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        text, rc = out + f"\n[timed out after {timeout} s]", None
    if log is not None:
        log.write_text(text)
    tail = text[-4000:]
    summary = [
        ln
        for ln in tail.splitlines()
        if " passed" in ln or " failed" in ln or " skipped" in ln or " error" in ln
    ]
    return {
        "command": " ".join(cmd),
        "returncode": rc,
        "seconds": time.perf_counter() - t0,
        "summary": summary[-1] if summary else "",
        "passed": text.count(" PASSED"),
        "failed": text.count(" FAILED") + text.count(" ERROR"),
        "tail": tail,
    }


@dataclasses.dataclass
class Case:
    """One row: layer x dtype x implementation x mode, lowered, then compiled."""

    layer: Layer
    dtype: str
    impl: str
    mode: str
    #: independent convolutions per timed program (see :func:`copies`)
    copies: int = 1
    lowered: object = None
    compiled: object = None
    compile_s: float = 0.0
    flops: float = 0.0
    error: str | None = None
    trace: str | None = None

    def key(self) -> dict:
        return dict(
            family=self.layer.family,
            layer=self.layer.name,
            dtype=self.dtype,
            implementation=self.impl,
            mode=self.mode,
        )


def _problem(layer: Layer, dtype_name: str):
    import jax.numpy as jnp

    from jaxconv._src.spec import ConvSpec, default_dimension_numbers

    dtype = {"bfloat16": jnp.bfloat16, "float32": jnp.float32}[dtype_name]
    dn = default_dimension_numbers(2)
    xs = (layer.batch, layer.size, layer.size, layer.cin)
    ws = (layer.k, layer.k, layer.cin // layer.groups, layer.cout)
    spec = ConvSpec.create(xs, ws, dimension_numbers=dn, lhs_dtype=dtype, **layer.conv_kwargs())
    return spec, dtype, dn, xs, ws


#: Device time one timed program should reach, and the most operand bytes its copies
#: may hold (``copies``).
PROGRAM_SECONDS = 150e-6
PROGRAM_BYTES = 6e9
#: At most this many copies (each copy's kernels are lowered and compiled again).
MAX_COPIES = 8


def copies(layer: Layer, dtype_name: str, mode: str, dry_run: bool = False) -> int:
    """Independent convolutions per timed program: enough for about
    :data:`PROGRAM_SECONDS` of device work at the H100's rates (400 TFLOP/s bf16, half
    for TF32; 2.5 TB/s), so the host's dispatch (~30-50 us per call) hides behind the
    device; at most :data:`MAX_COPIES`, and at most :data:`PROGRAM_BYTES` of operands."""
    if dry_run:
        return 2
    spec, *_ = _problem(layer, dtype_name)
    item = 2 if dtype_name == "bfloat16" else 4
    passes = 1 if mode == "forward" else 3
    flops = passes * _useful_flops(spec)
    nbytes = (
        passes
        * item
        * (math.prod(spec.lhs_shape) + math.prod(spec.rhs_shape) + math.prod(spec.out_shape))
    )
    seconds = max(flops / (400e12 if item == 2 else 200e12), nbytes / 2.5e12)
    r = max(1, min(MAX_COPIES, math.ceil(PROGRAM_SECONDS / seconds)))
    return max(1, min(r, int(PROGRAM_BYTES // nbytes)))


def _function(case: Case):
    """The jitted program of a row (``case.copies`` convolutions, each on its own
    operands, sharing the kernel), its abstract arguments ``(w, x_1.., [g_1..])`` and
    its useful FLOPs."""
    import jax

    import jaxconv

    spec, dtype, dn, xs, ws = _problem(case.layer, case.dtype)
    kw = case.layer.conv_kwargs()
    r = case.copies

    def conv(a, b):
        return jaxconv.conv_general_dilated(
            a, b, dimension_numbers=dn, implementation=case.impl, **kw
        )

    shapes = [jax.ShapeDtypeStruct(ws, dtype)] + [jax.ShapeDtypeStruct(xs, dtype)] * r
    if case.mode == "forward":

        def forward(w, *xs_):
            return tuple(conv(x, w) for x in xs_)

        return jax.jit(forward), shapes, r * _useful_flops(spec)

    def fwd_bwd(w, *xs_gs):
        outs = []
        for x, g in zip(xs_gs[:r], xs_gs[r:]):
            y, vjp = jax.vjp(conv, x, w)
            outs += [y, *vjp(g)]
        return tuple(outs)

    shapes += [jax.ShapeDtypeStruct(spec.out_shape, dtype)] * r
    return jax.jit(fwd_bwd), shapes, r * 3 * _useful_flops(spec)


def _arguments(case: Case):
    """Random operands (never zeros), made on the device: ``(w, x_1.., [g_1..])``."""
    import jax

    spec, dtype, _, xs, ws = _problem(case.layer, case.dtype)
    keys = jax.random.split(jax.random.key(0), 2 * case.copies + 1)
    w = jax.random.normal(keys[0], ws, dtype) / math.sqrt(math.prod(ws[:3]))
    args = [w] + [jax.random.normal(k, xs, dtype) for k in keys[1 : case.copies + 1]]
    if case.mode != "forward":
        args += [jax.random.normal(k, spec.out_shape, dtype) for k in keys[case.copies + 1 :]]
    return tuple(args)


def compile_cases(cases: list[Case], threads: int) -> None:
    """Lower every case (Python, one at a time), then compile them on ``threads``
    threads (XLA and Triton compile outside the GIL). Errors are kept per case."""
    import traceback
    from concurrent.futures import ThreadPoolExecutor

    for case in cases:
        try:
            fn, shapes, case.flops = _function(case)
            case.lowered = fn.lower(*shapes)
        except Exception as e:  # recorded, so one failure does not hide others
            case.error = f"{type(e).__name__}: {str(e)[:300]}"
            case.trace = traceback.format_exc()[-3000:]

    def compile_one(case: Case) -> None:
        if case.lowered is None:
            return
        t0 = time.perf_counter()
        try:
            case.compiled = case.lowered.compile()
        except Exception as e:
            case.error = f"{type(e).__name__}: {str(e)[:300]}"
            case.trace = traceback.format_exc()[-3000:]
        case.compile_s = time.perf_counter() - t0

    with ThreadPoolExecutor(max(1, threads)) as pool:
        list(pool.map(compile_one, cases))


def bench_case(case: Case, repeats: int) -> dict:
    """Median time of one compiled row."""
    flops = case.flops
    peak = None
    try:
        mem = case.compiled.memory_analysis()
        peak = int(mem.temp_size_in_bytes) if mem is not None else None
    except (AttributeError, NotImplementedError, RuntimeError):
        peak = None
    seconds = _timeit(case.compiled, _arguments(case), repeats) / case.copies
    flops /= case.copies
    return dict(
        case.key(),
        median_s=seconds,
        tflops=flops / seconds / 1e12,
        compile_s=case.compile_s,
        temp_bytes=peak,
        flops=flops,
        copies=case.copies,
        shape=dataclasses.asdict(case.layer),
    )


def _same_row(a: dict, b: dict) -> bool:
    keys = ("family", "layer", "dtype", "implementation", "mode")
    return all(a.get(k) == b.get(k) for k in keys)


def _add(rows: list[dict], row: dict) -> None:
    """Append ``row``, or fold it into the row of the same key already there: cases
    arrive with the many-copies timing first, so a later one is the one-convolution-per-
    call timing (``one_call_s``); a skip or an error adds nothing to a timed row."""
    first = next((r for r in rows if _same_row(r, row)), None)
    if first is None:
        rows.append(row)
    elif "median_s" in row:
        first["one_call_s"] = row["median_s"]


def summarise(rows: list[dict], matmul_tflops: float) -> dict:
    """Ratios against lax and the issue's speed targets."""
    by_key = {
        (r["layer"], r["dtype"], r["mode"], r["implementation"]): r for r in rows if "median_s" in r
    }
    for r in rows:
        if "median_s" not in r:
            continue
        r["fraction_of_matmul"] = r["tflops"] / matmul_tflops
        ref = by_key.get((r["layer"], r["dtype"], r["mode"], "xla"))
        r["speedup_vs_lax"] = ref["median_s"] / r["median_s"] if ref else None

    def ours(family, mode, dtype="bfloat16"):
        return [
            r
            for r in rows
            if r.get("family") == family
            and r.get("mode") == mode
            and r.get("dtype") == dtype
            and r.get("implementation") == "pallas_triton"
            and r.get("speedup_vs_lax")
        ]

    def gmean(xs):
        return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else None

    targets = {}
    for mode in ("forward", "forward+backward"):
        res = ours("resnet50_3x3", mode)
        g = gmean([r["speedup_vs_lax"] for r in res])
        targets[f"resnet50 3x3 {mode}: geomean vs lax >= 0.8"] = (g, g is not None and g >= 0.8)
        res += ours("resnet50_3x3_b128", mode)
        if res:
            largest = max(res, key=lambda r: r["flops"])  # ties: the first listed
            f = largest["fraction_of_matmul"]
            name = f"resnet50 3x3 {mode}: largest layer ({largest['layer']}) >= 50% of bf16 matmul"
            targets[name] = (f, f >= 0.5)
        for family in ("resnext50_grouped", "mobilenetv2_depthwise"):
            g = gmean([r["speedup_vs_lax"] for r in ours(family, mode)])
            targets[f"{family} {mode}: geomean vs lax >= 2"] = (g, g is not None and g >= 2)
    return {name: {"value": v, "pass": ok} for name, (v, ok) in targets.items()}


def table(result: dict) -> str:
    lines = [
        f"# GPU check: {result['device']} (jax {result['jax']})",
        "",
        f"bf16 matmul rate: {result['matmul_tflops']:.1f} TFLOP/s; host dispatch "
        f"{1e6 * result['dispatch_floor_s']:.1f} us per call; "
        f"GPU tests: {result['tests'].get('summary', 'not run')}",
        "",
        "ms: per convolution, timed as `copies` independent convolutions per program; "
        "1/call: one convolution per program (the host's dispatch can dominate it).",
        "",
        "| family | layer | dtype | mode | impl | ms | TFLOP/s | of matmul | vs lax "
        "| copies | ms 1/call | compile s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        if "median_s" not in r:
            lines.append(
                f"| {r['family']} | {r['layer']} | {r['dtype']} | {r['mode']} | "
                f"{r['implementation']} | {r.get('skipped') or r.get('error')} "
                "| | | | | | |"
            )
            continue
        sp = r.get("speedup_vs_lax")
        one = r.get("one_call_s")
        lines.append(
            f"| {r['family']} | {r['layer']} | {r['dtype']} | {r['mode']} | "
            f"{r['implementation']} | {1e3 * r['median_s']:.3f} | {r['tflops']:.1f} | "
            f"{100 * r['fraction_of_matmul']:.0f}% | {'' if sp is None else f'{sp:.2f}x'} | "
            f"{r.get('copies', 1)} | {'' if one is None else f'{1e3 * one:.3f}'} | "
            f"{r['compile_s']:.1f} |"
        )
    lines += ["", "| target | value | pass |", "|---|---|---|"]
    for name, t in result["targets"].items():
        v = t["value"]
        lines.append(
            f"| {name} | {'n/a' if v is None else f'{v:.3f}'} | {'PASS' if t['pass'] else 'FAIL'} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="CPU: interpret mode on tiny shapes (checks the script)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="results folder (default benchmarks/results; a temporary folder with --dry-run)",
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=450.0,
        help="seconds for the whole check; timings stop early past it",
    )
    parser.add_argument("--test-timeout", type=int, default=150)
    parser.add_argument("--test-workers", type=int, default=8, help="pytest-xdist workers")
    parser.add_argument("--compile-threads", type=int, default=8)
    parser.add_argument("--skip-tests", action="store_true")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--families", nargs="*", default=None, help="only these layer families")
    parser.add_argument("--dtypes", nargs="*", default=["bfloat16", "float32"])
    args = parser.parse_args(argv)
    start = time.perf_counter()

    if args.dry_run:
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
    out_dir = args.out or (
        Path(tempfile.mkdtemp(prefix="gpu_check_"))
        if args.dry_run
        else ROOT / "benchmarks" / "results"
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    # The tests run first, in their own processes, before this process claims the GPU's
    # memory (XLA preallocates most of it when the backend starts).
    tests = {"summary": "skipped (--skip-tests)"}
    if not args.skip_tests:
        tests = run_tests(args.test_timeout, args.test_workers, out_dir / "gpu_check_tests.log")
        print("GPU tests:", tests["summary"] or tests["tail"][-400:], flush=True)

    import jax

    sys.path.insert(0, str(ROOT))
    import jaxconv._src.pallas.triton  # noqa: F401  (registers "pallas_triton")

    device = jax.devices()[0]
    if not args.dry_run and device.platform != "gpu":
        print(f"no GPU (default device: {device}); use --dry-run on a CPU", file=sys.stderr)
        return 2
    repeats = args.repeats or (2 if args.dry_run else 15)
    mm = matmul_rate(args.dry_run, repeats)
    floor = dispatch_floor(repeats)
    print(f"bf16 matmul: {mm:.1f} TFLOP/s; dispatch: {1e6 * floor:.1f} us/call", flush=True)

    layers = [
        lay.tiny() if args.dry_run else lay
        for lay in LAYERS
        if args.families is None or lay.family in args.families
    ]
    rows, traces = [], []
    for dtype in args.dtypes:  # bfloat16 first: the targets
        cases = [
            Case(layer, dtype, impl, mode, r)
            for layer in layers
            for mode in ("forward", "forward+backward")
            for impl in IMPLEMENTATIONS
            for r in sorted({copies(layer, dtype, mode, args.dry_run), 1}, reverse=True)
        ]
        if time.perf_counter() - start > args.budget:
            for c in cases:
                _add(rows, dict(c.key(), skipped="time budget spent"))
            continue
        t0 = time.perf_counter()
        compile_cases(cases, args.compile_threads)
        print(f"compiled {len(cases)} {dtype} rows in {time.perf_counter() - t0:.0f} s", flush=True)
        for case in cases:
            if case.error is None and time.perf_counter() - start > args.budget:
                _add(rows, dict(case.key(), skipped="time budget spent"))
                continue
            if case.error is None:
                try:
                    row = bench_case(case, repeats)
                except Exception as e:  # recorded, so one failure does not hide others
                    import traceback

                    case.error = f"{type(e).__name__}: {str(e)[:300]}"
                    case.trace = traceback.format_exc()[-3000:]
            if case.error is not None:
                row = dict(case.key(), error=case.error)
                traces.append(f"## {case.key()}\n{case.trace}")
            case.compiled = case.lowered = None  # free the executable
            shown = (
                f"{1e3 * row['median_s']:.3f} ms {row['tflops']:.1f} TFLOP/s"
                if "median_s" in row
                else row.get("error")
            )
            print(
                f"{case.layer.name:24s} {dtype:8s} {case.mode:16s} {case.impl:14s} "
                f"x{case.copies:<2d} {shown}",
                flush=True,
            )
            _add(rows, row)

    result = {
        "device": getattr(device, "device_kind", str(device)),
        "platform": device.platform,
        "jax": jax.__version__,
        "dry_run": args.dry_run,
        "matmul_tflops": mm,
        "dispatch_floor_s": floor,
        "timing": (
            "median over samples of k back-to-back calls (one block per sample) of a "
            "program of `copies` independent convolutions, divided by `copies`; "
            "`one_call_s`: one convolution per call, timed the same way"
        ),
        "tests": tests,
        "rows": rows,
        "errors": traces,
        "seconds": time.perf_counter() - start,
    }
    result["targets"] = summarise(rows, mm)
    tag = card_tag(device, args.dry_run)
    (out_dir / f"gpu_check_{tag}.json").write_text(json.dumps(result, indent=1, default=str))
    md = table(result)
    (out_dir / f"gpu_check_{tag}.md").write_text(md)
    print(md)
    for t in traces[:3]:
        print(t)
    print(f"wrote {out_dir / f'gpu_check_{tag}.json'} and .md in {result['seconds']:.0f} s")
    failed = [r for r in rows if "error" in r]
    tests_ok = args.skip_tests or tests.get("returncode") == 0
    return 0 if not failed and tests_ok else 1


if __name__ == "__main__":
    sys.exit(main())
