"""Tile variants of the ``pallas_triton`` grouped and depthwise kernels, timed on a GPU.

Companion of ``gpu_check.py`` (same layers, same timing): for each variant it sets the
tiling knobs of :mod:`jaxconv._src.pallas.tiling`, compiles the grouped (ResNeXt) and
depthwise (MobileNetV2) layers afresh and times them; lax (cuDNN) is timed once per row
as the reference. The variants:

* ``default``: the kernels as they are (the reference with ``--no-lax``);
* ``fma_divisor``: depthwise channel tiles that divide the channels (144 -> 16 lanes);
* ``fma``: no block-diagonal dots (every group below 8 channels on multiply-adds);
* ``blockdiag_below8``: block-diagonal dots below 8 channels per group only (8-15 take
  one group per program, 16-wide tiles half empty);
* ``blockdiag16`` / ``blockdiag32``: grouped layers with 2-7 channels per group on the
  matrix unit, block-diagonal kernel tiles of 16 or 32 lanes (the default is 32);
* ``blockdiag_dw16`` / ``blockdiag_dw32``: depthwise too (one channel per group);
* ``fma_m{M}n{N}w{W}``: the multiply-add kernel with ``M`` rows x ``N`` channels per
  program and ``W`` warps (the default, 64 x 64 with 4 warps, is ``blockdiag16``'s
  depthwise column).

Usage: ``python benchmarks/gpu_variants.py --out DIR`` (GPU), or ``--dry-run`` (CPU,
interpret mode, tiny shapes). Each variant runs in a child process of its own and writes
``gpu_variants_<card>_<variant>.json`` and ``.md`` (each with its own lax rows).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _divisor_blocks():
    """A ``tiling.blocks`` whose forward/fma channel tile divides the channels (the
    largest power of two that does, 8-64 lanes; 144 -> 16, 96 -> 32) with ``m`` rows
    so that a program still holds 4096 outputs (at most 256 rows)."""
    from jaxconv._src.pallas import tiling

    default = tiling.blocks

    def blocks(geom, itemsize):
        if geom.formulation == "forward" and geom.variant == "fma":
            o = geom.out_features
            n = max(8, min(64, o & -o))
            m = tiling.clamp_pow2(geom.phase_rows, 8, min(256, 4096 // n))
            return tiling.Blocks(m=m, n=n, num_warps=4, num_stages=2)
        return default(geom, itemsize)

    return blocks


def _fma_blocks(m: int, n: int, warps: int):
    """A ``tiling.blocks`` that gives forward/fma programs ``m x n`` tiles."""
    from jaxconv._src.pallas import tiling

    default = tiling.blocks

    def blocks(geom, itemsize):
        if geom.formulation == "forward" and geom.variant == "fma":
            return tiling.Blocks(m=m, n=n, num_warps=warps, num_stages=2)
        return default(geom, itemsize)

    return blocks


def _forward_error(gc, case) -> float:
    """||y - y_ref|| / ||y_ref|| of a compiled forward row on fresh random operands, the
    reference from lax in float32 at HIGHEST precision."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    w, *xs = gc._arguments(case)
    key = jax.random.key(int(time.time() * 1e3) % 2**31)
    x = jax.random.normal(key, xs[0].shape, xs[0].dtype)
    y = case.compiled(w, x, *xs[1:])[0].astype(jnp.float32)
    dn = ("NHWC", "HWIO", "NHWC")
    ref = jax.lax.conv_general_dilated(
        x.astype(jnp.float32),
        w.astype(jnp.float32),
        dimension_numbers=dn,
        precision=jax.lax.Precision.HIGHEST,
        **case.layer.conv_kwargs(),
    )
    return float(np.linalg.norm(np.asarray(y - ref)) / np.linalg.norm(np.asarray(ref)))


VARIANTS = {
    "default": dict(),
    "fma_divisor": dict(blocks="divisor"),
    "fma": dict(BLOCKDIAG_MIN_CHANNELS=10**9),
    "blockdiag_below8": dict(BLOCKDIAG_MAX_CHANNELS=8),
    "blockdiag16": dict(BLOCKDIAG_MIN_CHANNELS=2, BLOCKDIAG_LANES=16),
    "blockdiag32": dict(BLOCKDIAG_MIN_CHANNELS=2, BLOCKDIAG_LANES=32),
    "blockdiag_dw16": dict(BLOCKDIAG_MIN_CHANNELS=1, BLOCKDIAG_LANES=16),
    "blockdiag_dw32": dict(BLOCKDIAG_MIN_CHANNELS=1, BLOCKDIAG_LANES=32),
    "fma_m128n64w8": dict(blocks=(128, 64, 8)),
    "fma_m128n32w4": dict(blocks=(128, 32, 4)),
    "fma_m64n128w8": dict(blocks=(64, 128, 8)),
    "fma_m256n32w8": dict(blocks=(256, 32, 8)),
}
#: Variants that only change one family's kernels (the others time both families).
ONLY = {
    "fma_divisor": "mobilenetv2_depthwise",
    "blockdiag_below8": "resnext50_grouped",
    "blockdiag_dw16": "mobilenetv2_depthwise",
    "blockdiag_dw32": "mobilenetv2_depthwise",
    "fma_m128n64w8": "mobilenetv2_depthwise",
    "fma_m128n32w4": "mobilenetv2_depthwise",
    "fma_m64n128w8": "mobilenetv2_depthwise",
    "fma_m256n32w8": "mobilenetv2_depthwise",
}
#: Variants also timed forward+backward (the others forward only).
BACKWARD = ("default", "fma", "blockdiag_below8", "blockdiag16", "blockdiag32", "blockdiag_dw16")
FAMILIES = ("resnext50_grouped", "mobilenetv2_depthwise")


def _one_process_per_variant(args, argv: list[str]) -> int:
    """Run each variant in a child process of its own (``--variants V --tag _V``): on
    jax 0.11.2 a second variant timed in the same process ran the first variant's
    kernels (NOTES.md, the void tile sweep), so nothing traced under one variant's knobs
    may be reachable from the next."""
    import subprocess

    base, skip = [], False
    for a in argv:  # drop the parent's --variants and --tag lists
        if a in ("--variants", "--tag"):
            skip = True
            continue
        if skip and not a.startswith("--"):
            continue
        skip = False
        base.append(a)
    start, worst = time.perf_counter(), 0
    for name in args.variants:
        if time.perf_counter() - start > args.budget:
            print(f"{name}: skipped (time budget spent)", flush=True)
            continue
        cmd = [sys.executable, __file__, *base, "--variants", name, "--tag", f"{args.tag}_{name}"]
        worst = max(worst, subprocess.run(cmd).returncode)
    return worst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--compile-threads", type=int, default=8)
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS))
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--budget", type=float, default=1e9, help="seconds; later variants skipped")
    parser.add_argument("--tag", default="", help="suffix of the output file names")
    parser.add_argument(
        "--no-lax", action="store_true", help="skip lax's rows (compare with 'default')"
    )
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="time several variants in this process (default: one child process each)",
    )
    args = parser.parse_args(argv)
    if len(args.variants) > 1 and not args.in_process:
        return _one_process_per_variant(args, argv if argv is not None else sys.argv[1:])
    if args.dry_run:
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
    gc = _gpu_check()
    import jax

    sys.path.insert(0, str(ROOT))
    from jaxconv._src.pallas import tiling

    knob_names = ("BLOCKDIAG_MIN_CHANNELS", "BLOCKDIAG_MAX_CHANNELS", "BLOCKDIAG_LANES")
    saved = {k: getattr(tiling, k) for k in knob_names}
    saved_blocks = tiling.blocks
    layers = [lay.tiny() if args.dry_run else lay for lay in gc.LAYERS if lay.family in FAMILIES]
    repeats = args.repeats or (2 if args.dry_run else 15)
    start = time.perf_counter()
    rows = []

    def run(cases, variant):
        gc.compile_cases(cases, args.compile_threads)
        for case in cases:
            if case.error is None:
                try:
                    row = gc.bench_case(case, repeats)
                    if case.mode == "forward":
                        row["relative_error"] = _forward_error(gc, case)
                except Exception as e:  # recorded, so one failure does not hide others
                    row = dict(case.key(), error=f"{type(e).__name__}: {str(e)[:300]}")
            else:
                row = dict(case.key(), error=case.error)
            case.compiled = case.lowered = None
            row["variant"] = variant
            rows.append(row)
            shown = f"{1e3 * row['median_s']:.3f} ms" if "median_s" in row else row["error"]
            if "relative_error" in row:
                shown += f"  err {row['relative_error']:.1e}"
            print(f"{variant:16s} {case.layer.name:20s} {case.mode:16s} {shown}", flush=True)

    modes = ("forward", "forward+backward")

    def case(lay, impl, mode):
        return gc.Case(lay, args.dtype, impl, mode, gc.copies(lay, args.dtype, mode, args.dry_run))

    if not args.no_lax:
        run([case(lay, "xla", m) for lay in layers for m in modes], "lax")
    for name in args.variants:
        if time.perf_counter() - start > args.budget:
            print(f"{name}: skipped (time budget spent)", flush=True)
            continue
        knobs = dict(VARIANTS[name])
        jax.clear_caches()  # nothing traced or compiled under the last knobs is reused
        for k, v in saved.items():
            setattr(tiling, k, knobs.get(k, v))
        if knobs.get("blocks") == "divisor":
            tiling.blocks = _divisor_blocks()
        elif "blocks" in knobs:
            tiling.blocks = _fma_blocks(*knobs["blocks"])
        else:
            tiling.blocks = saved_blocks
        try:
            ms = modes if name in BACKWARD else ("forward",)
            mine = [lay for lay in layers if ONLY.get(name, lay.family) == lay.family]
            run([case(lay, "pallas_triton", m) for lay in mine for m in ms], name)
        finally:
            for k, v in saved.items():
                setattr(tiling, k, v)
            tiling.blocks = saved_blocks

    lax_ms = {(r["layer"], r["mode"]): r.get("median_s") for r in rows if r["variant"] == "lax"}
    for r in rows:
        ref = lax_ms.get((r["layer"], r["mode"]))
        r["speedup_vs_lax"] = ref / r["median_s"] if ref and "median_s" in r else None
    device = jax.devices()[0]
    tag = gc.card_tag(device, args.dry_run) + args.tag
    args.out.mkdir(parents=True, exist_ok=True)
    result = {
        "device": getattr(device, "device_kind", str(device)),
        "jax": jax.__version__,
        "dtype": args.dtype,
        "variants": {k: VARIANTS[k] for k in args.variants},
        "rows": rows,
        "seconds": time.perf_counter() - start,
    }
    (args.out / f"gpu_variants_{tag}.json").write_text(json.dumps(result, indent=1, default=str))
    # Table: one row per layer x mode, one column per variant (ms, and x lax).
    names = ["lax"] + list(args.variants)
    keys = sorted({(r["layer"], r["mode"]) for r in rows}, key=lambda k: (k[1], k[0]))
    cell = {(r["layer"], r["mode"], r["variant"]): r for r in rows}
    lines = [
        f"# pallas_triton tile variants: {result['device']} (jax {result['jax']}, {args.dtype})",
        "",
        "ms (x lax) per variant; lax = cuDNN through XLA.",
        "",
        "| layer | mode | " + " | ".join(names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    for layer, mode in keys:
        cells = []
        for v in names:
            r = cell.get((layer, mode, v))
            if r is None:
                cells.append("")
            elif "median_s" not in r:
                cells.append("error")
            elif v == "lax":
                cells.append(f"{1e3 * r['median_s']:.3f}")
            else:
                bad = r.get("relative_error", 0.0) > 1e-2  # bf16 operands: ~3e-3
                sp = r["speedup_vs_lax"]
                cells.append(
                    f"{1e3 * r['median_s']:.3f}"
                    + ("" if sp is None else f" ({sp:.2f}x)")
                    + (" WRONG" if bad else "")
                )
        lines.append(f"| {layer} | {mode} | " + " | ".join(cells) + " |")
    md = "\n".join(lines) + "\n"
    (args.out / f"gpu_variants_{tag}.md").write_text(md)
    print(md)
    print(f"{result['seconds']:.0f} s")
    return 0 if all("median_s" in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
