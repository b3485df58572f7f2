"""``jaxconv check``: every available implementation against lax on this backend."""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

HELP = "check every available implementation against lax on the default backend"

#: (name, lhs shape NHWC-style, kernel shape HWIO-style, keyword arguments of ConvSpec.create)
CONFIGS: list[tuple[str, tuple, tuple, dict[str, Any]]] = [
    ("1d valid", (2, 17, 3), (3, 3, 4), dict(padding="VALID")),
    ("1d causal dilated", (2, 16, 4), (3, 4, 4), dict(padding="CAUSAL", rhs_dilation=(2,))),
    ("1d stride 2 same", (2, 15, 3), (4, 3, 5), dict(window_strides=(2,), padding="SAME")),
    ("2d same", (2, 9, 8, 3), (3, 3, 3, 4), dict(padding="SAME")),
    ("2d stride 2 valid", (2, 11, 10, 4), (3, 3, 4, 6), dict(window_strides=(2, 2))),
    ("2d same_lower", (1, 8, 8, 2), (2, 2, 2, 3), dict(padding="SAME_LOWER")),
    ("2d full", (1, 6, 5, 2), (3, 2, 2, 2), dict(padding="FULL")),
    ("2d explicit crop", (2, 9, 9, 2), (3, 3, 2, 2), dict(padding=((2, -1), (0, 3)))),
    ("2d rhs dilation", (2, 12, 12, 3), (3, 3, 3, 4), dict(padding="SAME", rhs_dilation=(2, 3))),
    (
        "2d lhs dilation",
        (2, 5, 6, 3),
        (3, 3, 3, 2),
        dict(padding=((2, 2), (1, 2)), lhs_dilation=(2, 2)),
    ),
    ("2d grouped", (2, 8, 8, 8), (3, 3, 2, 8), dict(padding="SAME", feature_group_count=4)),
    ("2d depthwise x2", (2, 9, 9, 4), (3, 3, 1, 8), dict(padding="SAME", feature_group_count=4)),
    ("2d batch groups", (4, 7, 7, 3), (3, 3, 3, 4), dict(batch_group_count=2)),
    ("2d circular", (2, 8, 8, 2), (3, 3, 2, 3), dict(padding="SAME", boundary="circular")),
    ("2d reflect", (2, 8, 8, 2), (5, 5, 2, 3), dict(padding="SAME", boundary="reflect")),
    (
        "2d replicate stride",
        (1, 9, 9, 2),
        (3, 3, 2, 2),
        dict(padding=1, window_strides=(2, 2), boundary="replicate"),
    ),
    ("3d same", (1, 6, 6, 6, 2), (3, 3, 3, 2, 3), dict(padding="SAME")),
    (
        "3d stride grouped",
        (1, 7, 6, 5, 4),
        (3, 2, 3, 2, 4),
        dict(window_strides=(2, 1, 2), feature_group_count=2),
    ),
    ("2d bfloat16", (2, 8, 8, 4), (3, 3, 4, 4), dict(padding="SAME", dtype="bfloat16")),
    ("2d float16", (2, 8, 8, 4), (3, 3, 4, 4), dict(padding="SAME", dtype="float16")),
]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--implementations",
        nargs="*",
        default=None,
        help="names to check (default: every registered implementation)",
    )
    p.add_argument("--repeats", type=int, default=3, help="timed repeats per configuration")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _time(f, *args, repeats: int) -> float:
    """Median seconds of ``f(*args)`` after a warm-up call (the benchmark runner's timer)."""
    from jaxconv._src.bench import _time_calls

    return _time_calls(lambda: f(*args), repeats=repeats, min_time=0.0, max_time=float("inf"))[0]


def run_check(names=None, repeats: int = 3, progress: bool = True):
    """Run the check; returns rows ``{implementation, passed, failed, unsupported,
    max_rel_err, time_vs_lax, failures}``."""
    import jax
    import jax.numpy as jnp
    from tqdm.auto import tqdm

    from jaxconv._src import dispatch
    from jaxconv._src.reference import reference_conv, relative_error, tolerance
    from jaxconv._src.spec import ConvSpec, default_dimension_numbers

    names = names or dispatch.implementations()
    rng = np.random.default_rng(0)
    stats = {
        n: dict(
            implementation=n,
            passed=0,
            failed=0,
            unsupported=0,
            max_rel_err=0.0,
            ratios=[],
            failures=[],
        )
        for n in names
    }
    bar = tqdm(
        total=len(CONFIGS) * len(names), disable=not progress, desc="jaxconv check", leave=False
    )
    for cname, xs, ws, kw in CONFIGS:
        kw = dict(kw)
        dtype = np.dtype(jnp.dtype(kw.pop("dtype", "float32")))
        spec = ConvSpec.create(
            xs, ws, dimension_numbers=default_dimension_numbers(len(xs) - 2), lhs_dtype=dtype, **kw
        )
        x = jnp.asarray(rng.standard_normal(xs), dtype)
        w = jnp.asarray(rng.standard_normal(ws), dtype)
        ref = reference_conv(x, w, spec)
        t_lax = None
        for n in ["xla"] + [m for m in names if m != "xla"]:
            if n not in stats:
                if n == "xla":  # the baseline time is needed for the ratio
                    t_lax = _time(
                        jax.jit(lambda a, b: dispatch.run(a, b, spec, "xla")), x, w, repeats=repeats
                    )
                continue
            st = stats[n]
            try:
                dispatch.select(spec, n)
            except NotImplementedError:
                st["unsupported"] += 1
                bar.update()
                continue
            f = jax.jit(lambda a, b, n=n: dispatch.run(a, b, spec, n))
            try:
                out = f(x, w)
                err = relative_error(out, ref)
                ok = err <= tolerance(spec.out_dtype)
            except Exception as e:  # a crash is a failure, reported, not hidden
                err, ok = float("inf"), False
                st["failures"].append(f"{cname}: {type(e).__name__}: {e}")
            if ok:
                st["passed"] += 1
            else:
                st["failed"] += 1
                if err != float("inf"):
                    st["failures"].append(f"{cname}: relative error {err:.3g}")
            st["max_rel_err"] = max(st["max_rel_err"], err)
            t = _time(f, x, w, repeats=repeats)
            if n == "xla":
                t_lax = t
            st["ratios"].append(t / t_lax)
            bar.update()
    bar.close()
    rows = []
    for st in stats.values():
        ratios = st.pop("ratios")
        st["time_vs_lax"] = float(np.median(ratios)) if ratios else float("nan")
        rows.append(st)
    return rows


def format_table(rows, backend: str) -> str:
    lines = [
        f"jaxconv check on backend {backend!r} ({len(CONFIGS)} configurations)",
        "",
        "| implementation | passed | failed | unsupported | max rel. error | median time vs lax |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['implementation']} | {r['passed']} | {r['failed']} | {r['unsupported']} | "
            f"{r['max_rel_err']:.2e} | {r['time_vs_lax']:.2f}x |"
        )
    for r in rows:
        for f in r["failures"]:
            lines.append(f"FAIL {r['implementation']}: {f}")
    return "\n".join(lines)


def main(args) -> int:
    import jax

    rows = run_check(args.implementations, args.repeats, progress=not args.no_progress)
    print(format_table(rows, jax.default_backend()))
    return 1 if any(r["failed"] for r in rows) else 0
