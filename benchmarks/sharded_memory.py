"""Per-device memory and halo traffic of ``sharded_conv`` with P = 1, 2, 4, 8 devices.

For three inputs too large to be comfortable on one device (a 2-D high-resolution
image, a 3-D volume, a long 1-D signal) the script compiles, without running,

* the single-device convolution (``jaxconv.conv``; the P = 1 row), and
* ``sharded_conv`` split over P CPU devices along the first spatial axis,

each forward and forward+backward (input and kernel gradients of a cotangent), and reads
the per-device peak memory from ``jax.jit(f).lower(...).compile().memory_analysis()``
(arguments + outputs + temporaries - aliased bytes; the compiled SPMD program is one
device's program). The halo traffic is counted in the compiled HLO: the bytes of every
``collective-permute`` result (what a device receives), and set against the device's
input bytes and FLOPs. Nothing is executed, so the sizes can be real ones.

Usage::

    python benchmarks/sharded_memory.py            # writes benchmarks/results/sharded_memory.{json,md}
    python benchmarks/sharded_memory.py --quick    # smaller shapes, printed only

The script asks for 8 CPU devices (``XLA_FLAGS=--xla_force_host_platform_device_count=8``)
before JAX starts.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time

if "jax" in sys.modules:  # pragma: no cover - the device count must be set first
    raise SystemExit("run this script as a program: it must set XLA_FLAGS before JAX starts")
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import Mesh, NamedSharding, PartitionSpec  # noqa: E402

import jaxconv  # noqa: E402
from jaxconv._src.sharded import halo_plan, sharded_conv, sharded_cost  # noqa: E402
from jaxconv._src.spec import ConvSpec, default_dimension_numbers  # noqa: E402

MiB = 2**20

#: name -> (input shape (N, *spatial, C), kernel shape (*window, C, O), conv kwargs)
WORKLOADS = {
    "image 2-D 1x2048x2048x32, 3x3 32->32": ((1, 2048, 2048, 32), (3, 3, 32, 32), {}),
    "volume 3-D 1x128^3x16, 3x3x3 16->16": ((1, 128, 128, 128, 16), (3, 3, 3, 16, 16), {}),
    "signal 1-D 4x2^20x32, k=3 dilation 8 (WaveNet)": (
        (4, 2**20, 32),
        (3, 32, 32),
        {"dilation": 8, "padding": "CAUSAL"},
    ),
}
QUICK = {
    "image 2-D 1x256x256x8, 3x3 8->8": ((1, 256, 256, 8), (3, 3, 8, 8), {}),
    "signal 1-D 1x2^14x8, k=3 dilation 8": ((1, 2**14, 8), (3, 8, 8), {"dilation": 8}),
}

_SHAPE = re.compile(r"(bf16|f16|f32|f64|s32|u32|s8|u8|pred)\[([\d,]*)\]")
_BYTES = {"bf16": 2, "f16": 2, "f32": 4, "f64": 8, "s32": 4, "u32": 4, "s8": 1, "u8": 1, "pred": 1}


def permute_bytes(hlo: str) -> int:
    """Bytes received by one device over all ``collective-permute`` ops of ``hlo``."""
    total = 0
    for line in hlo.splitlines():
        m = re.search(r"=\s*(.*?)\s+collective-permute(-start)?\(", line)
        if not m:
            continue
        shapes = _SHAPE.findall(m.group(1))
        # synchronous: the result shape; async start: the (operand, result, ...) tuple
        dtype, dims = shapes[1] if m.group(2) else shapes[0]
        count = int(np.prod([int(d) for d in dims.split(",") if d])) if dims else 1
        total += count * _BYTES[dtype]
    return total


def memory(compiled) -> dict[str, float]:
    m = compiled.memory_analysis()
    arg, out = m.argument_size_in_bytes, m.output_size_in_bytes
    temp, alias = m.temp_size_in_bytes, m.alias_size_in_bytes
    return {
        "argument_mib": arg / MiB,
        "output_mib": out / MiB,
        "temp_mib": temp / MiB,
        "peak_mib": (arg + out + temp - alias) / MiB,
    }


def compile_case(xs, ws, kw, devices: int, mode: str):
    """Compile the single-device (devices == 0) or the sharded convolution."""
    n = len(ws) - 2
    spec = ConvSpec.create(
        xs,
        ws,
        kw.get("stride", 1),
        kw.get("padding", "SAME"),
        None,
        kw.get("dilation", 1),
        default_dimension_numbers(n),
    )
    if devices == 0:
        mesh = Mesh(np.array(jax.devices()[:1]), ("x",))
        conv = lambda x, w: jaxconv.conv(x, w, implementation="xla", **kw)
    else:
        mesh = Mesh(np.array(jax.devices()[:devices]), ("x",))
        conv = lambda x, w: sharded_conv(x, w, mesh=mesh, axis_name="x", implementation="xla", **kw)
    split = PartitionSpec(*([None, "x"] + [None] * n)) if devices else PartitionSpec()
    xsh = NamedSharding(mesh, split)
    rep = NamedSharding(mesh, PartitionSpec())
    x = jax.ShapeDtypeStruct(xs, jnp.float32, sharding=xsh)
    w = jax.ShapeDtypeStruct(ws, jnp.float32, sharding=rep)
    if mode == "forward":
        f = jax.jit(conv, out_shardings=xsh)
        args = (x, w)
    else:
        ct = jax.ShapeDtypeStruct(spec.out_shape, jnp.float32, sharding=xsh)

        def f_raw(x, w, ct):
            _, vjp = jax.vjp(conv, x, w)
            return vjp(ct)

        f = jax.jit(f_raw, out_shardings=(xsh, rep))
        args = (x, w, ct)
    t0 = time.perf_counter()
    compiled = f.lower(*args).compile()
    return spec, compiled, time.perf_counter() - t0


def run(workloads: dict, device_counts=(1, 2, 4, 8)) -> list[dict]:
    rows = []
    for name, (xs, ws, kw) in workloads.items():
        for mode in ("forward", "forward+backward"):
            base = None
            for devices in (0, *device_counts):
                spec, compiled, seconds = compile_case(xs, ws, kw, devices, mode)
                row = {
                    "workload": name,
                    "mode": mode,
                    "devices": max(devices, 1),
                    "program": "jaxconv.conv (1 device)" if devices == 0 else "sharded_conv",
                    "compile_s": round(seconds, 2),
                    **memory(compiled),
                }
                if devices:
                    cost = sharded_cost(spec, 0, devices)
                    plan = halo_plan(spec, 0, devices)
                    hlo_bytes = permute_bytes(compiled.as_text())
                    fwd_halo = cost["halo_bytes"]
                    row.update(
                        {
                            "halo_rows": plan.halo_rows,
                            "local_rows": plan.local,
                            "halo_bytes_plan_forward": fwd_halo,
                            "collective_permute_bytes_hlo": hlo_bytes,
                            "halo_fraction_of_input": cost["halo_fraction_of_input"],
                            "flops_per_device": cost["flops_per_device"]
                            * (1 if mode == "forward" else 3),
                        }
                    )
                    row["halo_bytes_per_kflop"] = (
                        1e3 * hlo_bytes / row["flops_per_device"] if hlo_bytes else 0.0
                    )
                if base is None:
                    base = row["peak_mib"]
                row["peak_vs_single"] = row["peak_mib"] / base
                rows.append(row)
                print(
                    f"{name[:34]:34s} {mode:17s} {row['program']:24s} P={row['devices']} "
                    f"peak {row['peak_mib']:9.1f} MiB ({row['peak_vs_single']:.3f} of 1 device)"
                    + (
                        f"  halo {row['collective_permute_bytes_hlo'] / MiB:7.2f} MiB "
                        f"({100 * row['halo_fraction_of_input']:.2f}% of the local input)"
                        if devices
                        else ""
                    ),
                    flush=True,
                )
    return rows


def markdown(rows: list[dict]) -> str:
    lines = [
        "# sharded_conv: per-device peak memory and halo traffic",
        "",
        "Compiled (not run) on the CPU with 8 host devices "
        f"(jax {jax.__version__}); float32; split along the first spatial axis; local "
        "convolution `xla`. Peak = arguments + outputs + temporaries - aliases, from "
        "`jax.jit(f).lower(...).compile().memory_analysis()` (one device's program). "
        "Halo = bytes one device receives through `collective-permute` in the compiled "
        "HLO (forward+backward: the input-gradient halo goes back the other way); "
        "'% of input' sets the forward halo against the device's own input block. "
        "Ideal peak is 1/P of the single-device peak; the column 'P x peak / 1 device' "
        "stays constant when memory falls as 1/P. In the forward pass it is about 1.5: "
        "each device builds one contiguous copy of its input block with the halos "
        "attached (the local convolution's operand), an input-sized temporary that the "
        "single-device program does not need (input and output are the same size in "
        "these layers).",
        "",
        "| workload | mode | program | P | peak MiB | of 1 device | ideal 1/P | P x peak "
        "/ 1 device | halo MiB (HLO) | halo % of input | halo bytes / kFLOP |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        sharded = r["program"] == "sharded_conv"
        lines.append(
            f"| {r['workload']} | {r['mode']} | {r['program']} | {r['devices']} | "
            f"{r['peak_mib']:.1f} | {r['peak_vs_single']:.3f} | {1 / r['devices']:.3f} | "
            f"{r['devices'] * r['peak_vs_single']:.2f} | "
            + (
                f"{r['collective_permute_bytes_hlo'] / MiB:.2f} | "
                f"{100 * r['halo_fraction_of_input']:.2f}% | {r['halo_bytes_per_kflop']:.3f} |"
                if sharded
                else "- | - | - |"
            )
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small shapes, results printed only")
    p.add_argument(
        "--out",
        default=os.path.join(os.path.dirname(__file__), "results"),
        help="folder for sharded_memory.json and .md",
    )
    args = p.parse_args(argv)
    rows = run(QUICK if args.quick else WORKLOADS)
    if args.quick:
        return 0
    os.makedirs(args.out, exist_ok=True)
    meta = {
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "devices": len(jax.devices()),
        "dtype": "float32",
        "local_implementation": "xla",
    }
    with open(os.path.join(args.out, "sharded_memory.json"), "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=1)
    with open(os.path.join(args.out, "sharded_memory.md"), "w") as f:
        f.write(markdown(rows))
    print(f"wrote {args.out}/sharded_memory.json and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
