"""``jaxconv bench``: time every implementation and the baselines on real-model layers."""

from __future__ import annotations

import argparse

HELP = "time every implementation against lax (and PyTorch if installed) on real-model layers"


def _csv(value: str) -> list[str]:
    return [v for v in value.replace(" ", ",").split(",") if v]


def add_arguments(p: argparse.ArgumentParser) -> None:
    from jaxconv._src.bench import MODES, SUITES

    p.add_argument(
        "--suites",
        type=_csv,
        default=None,
        help=f"comma-separated suites (default: all of {', '.join(SUITES)})",
    )
    p.add_argument(
        "--layers",
        type=_csv,
        default=None,
        help="comma-separated layer names (or suite/name) within the suites",
    )
    p.add_argument(
        "--modes",
        type=_csv,
        default=list(MODES),
        help="comma-separated modes: fwd, fwd+bwd (default: both)",
    )
    p.add_argument(
        "--impls",
        "--implementations",
        dest="impls",
        type=_csv,
        default=None,
        help="comma-separated implementations (default: every one registered "
        "for this backend; lax and PyTorch are always timed)",
    )
    p.add_argument(
        "--dtypes",
        type=_csv,
        default=None,
        help="comma-separated dtypes (default: float32, plus bfloat16 where "
        "the backend computes it natively)",
    )
    p.add_argument("--batch", type=int, default=None, help="override the batch size (8)")
    p.add_argument(
        "--tiny", action="store_true", help="tiny versions of every layer (a smoke run, seconds)"
    )
    p.add_argument("--repeats", type=int, default=5, help="timed repeats (median)")
    p.add_argument(
        "--max-time",
        type=float,
        default=6.0,
        help="seconds per row beyond which fewer repeats are taken",
    )
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch baseline")
    p.add_argument("--no-check", action="store_true", help="skip comparing every result with lax's")
    p.add_argument("--out", default="benchmarks/results", help="output folder")
    p.add_argument(
        "--name", default=None, help="file name stem (default: <backend>_<dtypes>[_tiny])"
    )
    p.add_argument("--list", action="store_true", help="list suites and layers, run nothing")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def main(args: argparse.Namespace) -> int:
    from jaxconv._src import bench

    if args.list:
        for suite, layers in bench.SUITES.items():
            print(suite)
            for layer in layers:
                spec = layer.spec()
                print(
                    f"  {layer.name:28s} {layer.kind:10s} {spec.cost()['flops'] / 1e9:8.2f} "
                    f"GFLOP  {spec}"
                )
        return 0
    for mode in args.modes:
        if mode not in bench.MODES:
            raise SystemExit(f"--modes: expected some of {bench.MODES}, got {mode!r}")
    opts = bench.Options(
        suites=args.suites,
        layers=args.layers,
        modes=tuple(args.modes),
        implementations=args.impls,
        dtypes=args.dtypes,
        torch=not args.no_torch,
        tiny=args.tiny,
        batch=args.batch,
        repeats=args.repeats,
        max_time=args.max_time,
        check=not args.no_check,
    )
    result = bench.run(opts, progress=not args.no_progress)
    import jax

    name = args.name or "_".join(
        [jax.default_backend(), *(args.dtypes or ["default"])] + (["tiny"] if args.tiny else [])
    )
    paths = bench.write(result, args.out, name)
    bad = [r for r in result["rows"] if r.get("matches_lax") is False]
    for r in bad:
        print(
            f"MISMATCH {r['suite']}/{r['layer']} {r['mode']} {r['impl']}: "
            f"relative error {r['rel_error']:.3g}"
        )
    print("wrote " + ", ".join(paths.values()))
    if "png" not in paths:
        print("(no PNG chart: install the bench extra, `pip install jaxconv[bench]`)")
    return 1 if bad else 0
