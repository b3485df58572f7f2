"""``"cpu_direct"``: grouped, depthwise and dense convolution as a direct loop in C++,
called from XLA:CPU through its FFI.

XLA:CPU has no fast kernel for feature-grouped convolution: lax's depthwise and grouped
layers run 10-200x slower than PyTorch's on the CPU, and the best XLA formulations
(:mod:`~jaxconv._src.impl.taps`) still leave small layers at a floor of nine fused loops
and ResNeXt's 16-channel groups 10x behind (``benchmarks/NOTES.md``). Its dense
convolutions are slower than its matmuls (ResNet-50's 56x56 3x3 at 99 GFLOP/s where a
matmul reaches 200) and every kernel gradient is a matmul with a transposed operand, which
XLA:CPU computes at 97-146. This implementation is a C++ loop nest (``cpu_direct.cc``)
in two layouts:

* dense layers (outputs rounded up to a multiple of 8) and groups with a multiple of 8
  output channels each (ResNeXt's 8 and 16, depthwise multipliers of 8): the operands as
  they come, channels last; a vector holds 8 or 16
  output channels of one group, each input value is broadcast to them, and the kernel
  is made group-major (a small transpose) so that a group's vectors are contiguous. No
  activation is transposed on the way in or out;
* every other group shape (depthwise, 1-4 outputs per group): 16 groups (8 on AVX2) in the lanes
  of a vector, so every group does its own small product in its own lane: input
  ``(N, *spatial, C)`` as ``(N, *spatial, C/G, G)``, the kernel ``(*window, C/G, O)``
  as ``(*window, C/G, O/G, G)``, the output back from ``(N, *out, O/G, G)``, the groups
  axis padded to a multiple of 16 (a free reshape for depthwise, else XLA transposes);
* each block of output columns x output channels accumulates in registers over the
  taps that reach the input (taps in the padding are skipped, so a 31x31 kernel on a
  14x14 input costs what its reachable taps cost). Channels last, rows of at most 8
  columns with a large kernel take several whole rows per block, and inputs of a
  multiple of 3 channels are taken 3 at a time. Depthwise rows of kernel width 3, 5
  or 7 use sliding blocks: a kernel row's vectors stay in registers and each input
  vector is loaded once for every output it reaches (the kernel gradient likewise,
  with the cotangents in registers); wider depthwise kernels at stride 1 (RepLKNet's
  31x31) run one vector of 16 groups at a time on its kernel and input gathered into
  contiguous buffers, 8 taps' kernel vectors in registers; outputs larger than the
  caches are written with streaming stores;
* input dilation is index arithmetic (no zeros are read): transposed layers, and the
  input gradient of a strided layer (a convolution on the transposed spec of
  :mod:`jaxconv._src.autodiff`), run in the same loops, output columns taken one phase
  (residue) at a time; the kernel gradient is a second loop per layout (``KernelGrad``,
  ``KernelGradNhwc``);
* the work is split over output rows on XLA's intra-op thread pool; channels-last
  kernel gradients over 512 KB split over the result instead (no copy per thread), and
  forwards with kernels over 16 MB over runs of output channels as well;
* dense layers with a number of outputs that is not a multiple of 8 (the input gradient
  of a 3-channel stem) compute it rounded up, with zero kernel columns; dense pointwise
  forwards are one XLA matmul, their kernel gradients the C++ loop.

Derivatives: the same bilinear primitive as ``"taps"`` (any order, forward and reverse
mode); the kernel gradient's own derivatives are taps' (exact, slower).

The vector width and the register blocks follow the instruction set the compiler targets
(``-march=native``): 16 floats and 32 registers with AVX-512, 8 floats and 16 registers
otherwise (AVX2; other targets compile the same code through GCC's vector extensions).

The library is compiled on first use with the system C++ compiler (``$CXX``, else
``c++``/``g++``/``clang++``; ``-O3 -march=native``), about 15 s, and cached under
``$JAXCONV_CACHE_DIR`` (default ``~/.cache/jaxconv``) by a hash of the source, the
flags, jaxlib's version and the processor. Without a compiler, ``supports`` says so and
the automatic choice moves on. Float32 on the CPU backend only; 1-3 spatial dimensions;
no batch groups.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import math
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import jaxlib
import numpy as np

from jaxconv._src.impl import taps
from jaxconv._src.impl import window as W
from jaxconv._src.spec import ConvSpec

NAME = "cpu_direct"
#: Groups per vector (the lane count of the C++ kernel).
LANES = 16
_SOURCE = Path(__file__).with_name("cpu_direct.cc")
_FLAGS = ("-O3", "-march=native", "-std=c++17", "-shared", "-fPIC")
_TARGETS = {
    "forward": ("jaxconv_cpu_direct_forward", "JaxconvCpuDirectForward"),
    "kernel_grad": ("jaxconv_cpu_direct_kernel_grad", "JaxconvCpuDirectKernelGrad"),
    "forward_nhwc": ("jaxconv_cpu_direct_forward_nhwc", "JaxconvCpuDirectForwardNhwc"),
    "kernel_grad_nhwc": ("jaxconv_cpu_direct_kernel_grad_nhwc", "JaxconvCpuDirectKernelGradNhwc"),
}


def _compiler() -> str | None:
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _cpu_id() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return platform.processor()


def _cache_dir() -> Path:
    default = Path.home() / ".cache" / "jaxconv"
    return Path(os.environ.get("JAXCONV_CACHE_DIR", default))


@functools.cache
def library() -> tuple[ctypes.CDLL | None, str | None]:
    """``(library, None)`` once compiled, loaded and registered with XLA, else
    ``(None, reason)``. Compiles at most once per source, flags and machine."""
    cxx = _compiler()
    if cxx is None:
        return None, "no C++ compiler found (set $CXX)"
    include = jax.ffi.include_dir()
    key = hashlib.sha256(
        "\n".join(
            [
                _SOURCE.read_text(),
                " ".join(_FLAGS),
                cxx,
                jax.__version__,
                jaxlib.__version__,
                include,
                platform.machine(),
                _cpu_id(),
            ]
        ).encode()
    ).hexdigest()[:16]
    path = _cache_dir() / f"cpu_direct-{key}.so"
    try:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            with _build_lock(path):  # concurrent first uses: one compiles, the others wait
                if not path.exists():
                    reason = _compile(cxx, include, path)
                    if reason is not None:
                        return None, reason
        lib = ctypes.cdll.LoadLibrary(str(path))
    except OSError as e:
        return None, f"could not build or load {path} ({e}); set $JAXCONV_CACHE_DIR"
    for target, symbol in _TARGETS.values():
        jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(lib, symbol)), "cpu")
    return lib, None


def _compile(cxx: str, include: str, path: Path) -> str | None:
    """Compiles the source into ``path`` (atomically: written aside, then renamed);
    the compiler's error as the reason on failure."""
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=path.parent)
    os.close(fd)
    cmd = [cxx, *_FLAGS, f"-I{include}", str(_SOURCE), "-o", tmp]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        os.unlink(tmp)
        return f"compiling {_SOURCE.name} failed: {done.stderr[-800:]}"
    os.replace(tmp, path)
    return None


@contextlib.contextmanager
def _build_lock(path: Path):
    """An exclusive lock beside ``path`` where the platform has ``fcntl`` (else none:
    concurrent builds then each write their own copy and rename it in place)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(path.with_suffix(".lock"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def vector_lanes() -> int | None:
    """Floats per vector of the compiled loops: 16 with AVX-512, 8 otherwise (AVX2 and
    other targets); ``None`` where the library is unavailable."""
    lib, _ = library()
    return None if lib is None else int(lib.jaxconv_cpu_direct_lanes())


def supports(spec: ConvSpec) -> str | None:
    if jax.default_backend() != "cpu":
        return f"runs on the CPU backend only (default backend: {jax.default_backend()})"
    if spec.lhs_dtype != np.float32 or spec.rhs_dtype != np.float32:
        return f"float32 operands only (got {spec.lhs_dtype}, {spec.rhs_dtype})"
    if spec.preferred_element_type not in (None, np.dtype(np.float32)):
        return "float32 accumulation only"
    if not 1 <= spec.nspatial <= 3:
        return f"1-3 spatial dimensions (got {spec.nspatial})"
    if spec.batch_group_count != 1:
        return "no batch groups"
    return library()[1]


def _geometry(spec: ConvSpec, Cg: int, M: int, Gp: int) -> np.ndarray:
    """The ``Geom`` attribute of ``cpu_direct.cc`` (``Gp``: the groups, padded for the
    lanes layout), on 3 spatial axes (size-1 leading axes for lower ranks)."""
    pad = 3 - spec.nspatial

    def three(values, fill):
        return (fill,) * pad + tuple(values)

    geom = (
        (spec.batch, *three(spec.lhs_spatial, 1), Cg, Gp, *three(spec.window, 1), M)
        + three(spec.out_spatial, 1)
        + three(spec.window_strides, 1)
        + three((lo for lo, _ in spec.padding), 0)
        + three(spec.rhs_dilation, 1)
        + three(spec.lhs_dilation, 1)
    )
    return np.asarray(geom, np.int64)


def _outputs_computed(spec: ConvSpec) -> int:
    """Output channels per group the loop computes: dense specs round theirs up to a
    multiple of 8 (zero kernel columns, sliced off the result: a 3-channel stem's input
    gradient), so that they always run channels last."""
    M = spec.out_features // spec.feature_group_count
    return -(-M // 8) * 8 if spec.feature_group_count == 1 else M


def _channels_last(spec: ConvSpec) -> bool:
    """Whether the loop runs on the channels-last operands, 8 or 16 output channels of a
    group in the lanes (whole vectors of them), rather than with the groups in the
    lanes; then no activation is transposed on the way in or out (``NOTES.md`` section
    14)."""
    return _outputs_computed(spec) % 8 == 0


def _pointwise(spec: ConvSpec) -> bool:
    """1x1 windows, unit strides, no padding or dilation: a matmul over the channels."""
    return all(
        k == 1 and s == 1 and p == (0, 0) and d == 1
        for k, s, p, d in zip(spec.window, spec.window_strides, spec.padding, spec.lhs_dilation)
    )


def _padded_groups(spec: ConvSpec) -> tuple[int, int]:
    """``(G, Gp)``: the feature groups and their count padded to whole vectors."""
    G = spec.feature_group_count
    return G, -(-G // LANES) * LANES


def _lanes_last(a, groups: int, Gp: int):
    """``(..., G * K)`` -> ``(..., K, Gp)``: the groups axis last, padded to ``Gp``."""
    a = a.reshape(a.shape[:-1] + (groups, a.shape[-1] // groups))
    return W.pad_last(jnp.swapaxes(a, -1, -2), Gp)


def _lanes_merged(a, groups: int):
    """``(..., K, Gp)`` -> ``(..., G * K)`` (the inverse of :func:`_lanes_last`)."""
    a = jnp.swapaxes(a[..., :groups], -1, -2)
    return a.reshape(a.shape[:-2] + (a.shape[-2] * a.shape[-1],))


def _call(target: str, out_shape, *operands, geom):
    library()  # registers the targets (a no-op after the first call)
    call = jax.ffi.ffi_call(
        _TARGETS[target][0],
        jax.ShapeDtypeStruct(out_shape, jnp.float32),
        vmap_method="sequential",
    )
    return call(*operands, geom=geom)


def forward(lhs, rhs, spec: ConvSpec):
    """The convolution of ``lhs`` and ``rhs`` (in the spec's layouts) by the C++ loop;
    dense pointwise specs by XLA's matmul (5-20% faster than the loop on ResNet-50's 7x7
    and 14x14 1x1 layers; their kernel gradient stays here)."""
    if spec.feature_group_count == 1 and _pointwise(spec):
        return taps._xla_forward(lhs, rhs, spec)
    G, Gp = _padded_groups(spec)
    M, Mc, Cg = spec.out_features // G, _outputs_computed(spec), spec.rhs_in_features
    x, w = W.to_channels_last(lhs, rhs, spec)  # (N, *sp, C), (*win, Cg, O)
    if _channels_last(spec):
        L = 16 if Mc % 16 == 0 else 8  # the loop's channels per block (cpu_direct.cc)
        wg = W.pad_last(w.reshape(w.shape[:-1] + (G, M)), Mc)
        wg = wg.reshape(wg.shape[:-1] + (Mc // L, L))  # (*win, Cg, G, Mc / L, L)
        wg = jnp.moveaxis(wg, (-3, -2), (0, 1))  # panels: (G, Mc / L, *win, Cg, L)
        geom = _geometry(spec, Cg, Mc, G)
        y = _call("forward_nhwc", (spec.batch, *spec.out_spatial, G * Mc), x, wg, geom=geom)
        return W.from_channels_last(y[..., : G * M] if Mc != M else y, spec)
    xt = _lanes_last(x, G, Gp)  # (N, *sp, Cg, Gp)
    wt = _lanes_last(w, G, Gp)  # (*win, Cg, M, Gp)
    geom = _geometry(spec, Cg, M, Gp)
    yt = _call("forward", (spec.batch, *spec.out_spatial, M, Gp), xt, wt, geom=geom)
    return W.from_channels_last(_lanes_merged(yt, G), spec)


def _kernel_grad_direct(lhs, g, spec: ConvSpec):
    G, Gp = _padded_groups(spec)
    M, Mc, Cg = spec.out_features // G, _outputs_computed(spec), spec.rhs_in_features
    x = W.lhs_to_channels_last(lhs, spec)  # (N, *sp, C)
    gy = taps._to_channels_last_out(g, spec)  # (N, *out, O)
    if _channels_last(spec):
        geom = _geometry(spec, Cg, Mc, G)  # dense: Mc = M rounded up, G = 1
        gy = W.pad_last(gy, G * Mc)
        dw = _call("kernel_grad_nhwc", spec.window + (Cg, G * Mc), x, gy, geom=geom)
        dw = dw[..., : G * M] if Mc != M else dw
    else:
        geom = _geometry(spec, Cg, M, Gp)
        xt, gt = _lanes_last(x, G, Gp), _lanes_last(gy, G, Gp)  # (N, *sp, Cg, Gp), (N, *out, M, Gp)
        dw = _lanes_merged(_call("kernel_grad", spec.window + (Cg, M, Gp), xt, gt, geom=geom), G)
    return taps._from_channels_last_rhs(dw, spec).astype(spec.rhs_dtype)  # from (*win, Cg, O)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def _kernel_grad_bilinear(lhs, g, spec: ConvSpec):
    return _kernel_grad_direct(lhs, g, spec)


@_kernel_grad_bilinear.defjvp
def _kernel_grad_jvp(spec, primals, tangents):
    # bilinear in (lhs, g); the tangent map runs on taps' (differentiable) kernel gradient
    lhs, g = primals
    t_lhs, t_g = tangents
    out = _kernel_grad_bilinear(lhs, g, spec)
    return out, taps.kernel_grad(t_lhs, g, spec) + taps.kernel_grad(lhs, t_g, spec)


def kernel_grad(lhs, g, spec: ConvSpec):
    """Gradient w.r.t. the kernel: the C++ loop where it applies (float32, the specs of
    :func:`supports`), else ``"taps"``' kernel gradient."""
    if supports(spec) is not None or g.size == 0:
        return taps.kernel_grad(lhs, g, spec)
    return _kernel_grad_bilinear(lhs, g, spec)


_conv = taps.bilinear_primitive("jaxconv_cpu_direct", forward, kernel_grad)


def conv(lhs, rhs, spec: ConvSpec):
    """The ``"cpu_direct"`` convolution of ``lhs`` and ``rhs`` (in the spec's layouts),
    differentiable to any order in either mode."""
    if math.prod(spec.out_shape) == 0:
        return jnp.zeros(spec.out_shape, spec.out_dtype)
    return _conv(lhs, rhs, spec)


#: ``"xla_direct_grad"``: XLA's forward (:func:`jaxconv._src.impl.taps._xla_forward`:
#: sub-pixel phases for transposed layers, a dot for 1x1, else lax) with this module's
#: kernel gradient (:func:`kernel_grad`: the C++ loop where it applies, else taps').
#: The input gradient is the same primitive on the transposed spec, so it is XLA's
#: forward too. The forward / input gradient / kernel gradient each from where it is
#: fastest on AVX2 for wide transposed layers (``benchmarks/NOTES.md`` section 21).
XLA_DIRECT_GRAD = "xla_direct_grad"

_xla_direct_grad = taps.bilinear_primitive(
    "jaxconv_xla_direct_grad", taps._xla_forward, kernel_grad
)


def xla_direct_grad_conv(lhs, rhs, spec: ConvSpec):
    """``"xla_direct_grad"``: an XLA forward convolution with ``"cpu_direct"``'s kernel
    gradient (taps' where the C++ loop declines the spec, empty cotangents included),
    differentiable to any order."""
    return _xla_direct_grad(lhs, rhs, spec)
