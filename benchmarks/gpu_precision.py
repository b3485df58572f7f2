"""Which float32 matrix-unit path the ``pallas_triton`` kernels take on a GPU.

The float32 rows of ``gpu_check`` ran 3.5-7x slower than their bfloat16 twins where
TF32 should cost 2x: this times one ResNet-50 3x3 forward layer (float32, batch 32)
with the kernels' dot precision set three ways, each checked against lax at HIGHEST
(the error tells which arithmetic ran: TF32 near 1e-3, full float32 near 1e-6):

* ``default``: ``(Precision.DEFAULT, Precision.DEFAULT)``, what the kernels pass today;
* ``tf32_preset``: ``lax.DotAlgorithmPreset.TF32_TF32_F32`` (the algorithm named);
* ``highest``: ``(Precision.HIGHEST, Precision.HIGHEST)`` (full float32).

lax at DEFAULT and at HIGHEST are timed beside them. Usage: ``python
benchmarks/gpu_precision.py --out DIR`` on a GPU (about a minute).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from gpu_variants import _gpu_check  # noqa: E402  (gpu_check.py, loaded by path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--layers", nargs="*", default=["conv4_14x14x256", "conv2_56x56x64"])
    parser.add_argument("--dry-run", action="store_true", help="CPU: tiny layers, interpreted")
    args = parser.parse_args(argv)
    gc = _gpu_check()
    import jax
    import numpy as np
    from jax import lax

    sys.path.insert(0, str(ROOT))
    import jaxconv._src.pallas.triton as pt

    original = pt._dot_precision
    settings = {
        "default": original,
        "tf32_preset": lambda spec: lax.DotAlgorithmPreset.TF32_TF32_F32,
        "highest": lambda spec: (lax.Precision.HIGHEST, lax.Precision.HIGHEST),
    }
    rows = []
    for layer in [lay for lay in gc.LAYERS if lay.name in args.layers]:
        layer = layer.tiny() if args.dry_run else layer
        r = 2 if args.dry_run else 5
        ref = None
        runs = [("xla", "highest"), ("xla", "default")] + [("pallas_triton", s) for s in settings]
        for impl, setting in runs:
            jax.clear_caches()
            pt._dot_precision = settings[setting] if impl == "pallas_triton" else original
            case = gc.Case(layer, "float32", impl, "forward", r)
            try:
                if impl == "xla" and setting == "highest":
                    with jax.default_matmul_precision("highest"):
                        fn, shapes, _ = gc._function(case)
                        compiled = fn.lower(*shapes).compile()
                else:
                    fn, shapes, _ = gc._function(case)
                    compiled = fn.lower(*shapes).compile()
                operands = gc._arguments(case)
                seconds = gc._timeit(compiled, operands, 10) / r
                y = np.asarray(compiled(*operands)[0], np.float64)
                if ref is None:
                    ref = y
                err = float(np.linalg.norm(y - ref) / np.linalg.norm(ref))
                row = dict(
                    layer=layer.name,
                    implementation=impl,
                    precision=setting,
                    ms=1e3 * seconds,
                    relative_error_vs_lax_highest=err,
                )
            except Exception as e:  # recorded: one failing setting must not hide the rest
                row = dict(
                    layer=layer.name,
                    implementation=impl,
                    precision=setting,
                    error=f"{type(e).__name__}: {str(e)[:400]}",
                )
            finally:
                pt._dot_precision = original
            rows.append(row)
            print(row, flush=True)
    device = jax.devices()[0]
    args.out.mkdir(parents=True, exist_ok=True)
    result = dict(
        device=getattr(device, "device_kind", str(device)), jax=jax.__version__, rows=rows
    )
    (args.out / "gpu_precision.json").write_text(json.dumps(result, indent=1))
    print("| layer | impl | precision | ms | rel. error vs lax HIGHEST |\n|---|---|---|---|---|")
    for row in rows:
        cells = (
            f"{row['ms']:.3f} | {row['relative_error_vs_lax_highest']:.1e}"
            if "ms" in row
            else f"{row['error']} |"
        )
        print(f"| {row['layer']} | {row['implementation']} | {row['precision']} | {cells} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
