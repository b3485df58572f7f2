"""One dispatch: pick an implementation for a canonical spec and run it.

An implementation is registered under a name with two callables:

* ``supports(spec) -> str | None``: ``None`` when it can compute ``spec``, else the
  reason it cannot (it becomes the ``NotImplementedError`` message);
* ``conv(lhs, rhs, spec) -> out``: the convolution for a zero-boundary spec (boundary
  modes are materialised by the dispatcher with :func:`jaxconv._src.spec.pad_input`).

An implementation may also take the fused epilogue (``bias``, ``activation``) by
registering with ``fuses_epilogue=True``; for the others the dispatcher applies it.

``implementation=None`` is the automatic choice (:func:`auto_order`); a name runs that
implementation or raises; a sequence of names is tried in order, skipping those that
raise ``NotImplementedError``. A user mistake is raised by the spec before any of this
and is never hidden by a fallback.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxconv._src.spec import ConvSpec, pad_input


@dataclasses.dataclass(frozen=True)
class Implementation:
    name: str
    conv: Callable[..., Any]
    supports: Callable[[ConvSpec], str | None]
    fuses_epilogue: bool = False
    #: Platforms where the implementation is worth trying automatically.
    platforms: tuple[str, ...] = ("cpu", "gpu", "tpu")


_REGISTRY: dict[str, Implementation] = {}
# Implementations that live in modules imported on first use (keeps import light).
_LAZY: dict[str, str] = {}


def register(impl: Implementation) -> None:
    """Register (or replace) an implementation under ``impl.name``."""
    _REGISTRY[impl.name] = impl


def register_lazy(name: str, module: str) -> None:
    """Register an implementation whose module registers it when imported."""
    _LAZY[name] = module


def _get(name: str) -> Implementation:
    if name not in _REGISTRY and name in _LAZY:
        importlib.import_module(_LAZY[name])
    if name not in _REGISTRY:
        raise ValueError(
            f"`implementation` must be one of {implementations()} or None, got {name!r}"
        )
    return _REGISTRY[name]


def implementations() -> list[str]:
    """Names of all known implementations."""
    return sorted(set(_REGISTRY) | set(_LAZY))


def backend() -> str:
    return jax.default_backend()


def auto_order(spec: ConvSpec, platform: str | None = None) -> list[str]:
    """The automatic choice: the implementations tried, in order, for ``spec``.

    The rule comes from the CPU benchmarks in ``benchmarks/results/`` (the table is
    ``benchmarks/results/cpu_float32_auto_choice.md``, also in the README). On the CPU:

    * float32 without batch groups (grouped, depthwise, dense, transposed):
      ``cpu_direct`` (a C++ loop through XLA's FFI, compiled on first use; pointwise
      layers' forward stays one XLA matmul). In the committed run (NOTES.md section
      15): forward 11-433x lax's and forward+backward 31-567x on grouped and depthwise
      layers; 1.01-54x and 1.06-36x on dense and transposed ones (ResNet-50,
      U-Net/DCGAN/MelGAN, WaveNet, C3D, a dense 31x31); where it declines (other
      dtypes, no compiler), the rules below. Built for 8-float vectors (AVX2, no
      AVX-512), its 6 x 16 intrinsics block runs dense layers 1.0-2.1x faster than
      lax forward and 1.3-2.2x forward+backward on ResNet-50's 3x3, U-Net/DCGAN/MelGAN,
      WaveNet and C3D (NOTES.md section 22); there dense pointwise layers with kernels
      over 512 KB skip it, and so do wide (>= 128 input channels) or 1-D dense layers
      whose output channels are not a multiple of 16 (the rules below: XLA's forward
      with taps' kernel gradient for 2-D and 1x1 layers, with ``cpu_direct``'s for
      transposed and 1-D ones, lax for 3-D ones; NOTES.md sections 17, 20 and 21);
    * a window of at least 121 taps (11x11 and up): ``fft`` (RepLKNet's 31x31: 16-47x
      lax), then ``xla`` (integer inputs, which fft does not take);
    * feature groups of at most 8 input channels each (depthwise, ResNeXt stages 1-2):
      ``taps`` (fused multiply-adds without a padded copy: 3.9-69x lax forward,
      9.9-181x forward+backward);
    * input-dilated (transposed) convolutions: ``xla_direct_grad`` (an XLA forward of
      sub-pixel phases, the input gradient likewise, and ``cpu_direct``'s kernel
      gradient: 1.0-1.9x faster than taps' on DCGAN / U-Net / MelGAN, NOTES.md section
      21);
    * groups of more than 8 channels: ``xla_taps_grad`` (lax's forward, taps'
      gradients, 11-54x faster than lax's forward+backward);
    * 1x1 (pointwise) convolutions: ``xla_taps_grad`` (the forward is one dot, 1.2-2.4x
      lax's; the kernel gradient one matmul: 1.5-3.0x forward+backward);
    * float32 1-D dense layers: ``xla_direct_grad`` (lax's forward and input gradient,
      ``cpu_direct``'s kernel gradient, 1.6x lax's on WaveNet's layers);
    * float32 dense layers with two spatial axes: ``xla_taps_grad`` (lax's forward and
      input gradient; the kernel gradient one dot per tap, 1.7-2.3x faster than lax's
      on ResNet-50's 3x3 layers of 128-512 channels, AVX2);
    * everything else (3-D dense, other dtypes, batch groups): ``xla``.

    On GPU and TPU, ``xla`` (cuDNN / the TPU convolution emitter) is the default.
    """
    platform = platform or backend()
    if platform != "cpu":
        return ["xla"]
    if _cpu_direct_first(spec):
        # a C++ loop through XLA's FFI (float32; it declines other specs, and the
        # rules below then apply)
        return ["cpu_direct"] + _xla_order(spec)
    return _xla_order(spec)


#: Output channels per group that ``cpu_direct``'s AVX2 block computes at once (6 x 16,
#: written with intrinsics): dense layers whose output channels are not a multiple of it
#: run its portable loop there, which measured 0.61-0.84x lax's forward on wide
#: (>= 128-channel) 2-D layers (NOTES.md section 17) and 0.7-1.5x on 1-D ones (section 21).
AVX2_BLOCK_CHANNELS = 16
NARROW_VECTOR_DENSE_CHANNELS = 128
#: Dense pointwise layers with kernels larger than this skip ``cpu_direct`` on AVX2: its
#: kernel gradient then splits over the result (``kSplitResultBytes`` in
#: ``cpu_direct.cc``) and XLA's dot each way was 1.0-1.4x faster on ResNet-50's 1x1
#: layers of 1-4 MB; at 14-256 KB ``cpu_direct`` was level or 1.1-1.5x faster (NOTES.md
#: section 22).
AVX2_POINTWISE_KERNEL_BYTES = 512 << 10


def _cpu_direct_first(spec: ConvSpec) -> bool:
    """Whether ``cpu_direct`` leads the CPU order: every spec without batch groups but,
    where its vectors are 8 floats (AVX2), dense pointwise layers with kernels over
    512 KB (XLA's dot each way measured 1.0-1.4x faster, NOTES.md section 22) and dense
    layers that its 6 x 16 block does not take (output channels not a multiple of 16)
    when they are wide or 1-D."""
    import math

    if spec.batch_group_count != 1:
        return False
    if spec.feature_group_count == 1:
        from jaxconv._src.impl import cpu_direct

        if cpu_direct.vector_lanes() != 8:
            return True
        if math.prod(spec.window) == 1:
            kernel_bytes = spec.rhs_in_features * spec.out_features * spec.rhs_dtype.itemsize
            return kernel_bytes <= AVX2_POINTWISE_KERNEL_BYTES
        signal = spec.nspatial == 1 and all(d == 1 for d in spec.lhs_dilation)
        wide = signal or spec.rhs_in_features >= NARROW_VECTOR_DENSE_CHANNELS
        return not wide or spec.out_features % AVX2_BLOCK_CHANNELS == 0
    return True


def _xla_order(spec: ConvSpec) -> list[str]:
    """The automatic choice on the CPU among the implementations XLA computes."""
    import math

    if math.prod(spec.window) >= 121:
        return ["fft", "xla"]
    if spec.feature_group_count > 1 and spec.rhs_in_features <= 8:
        return ["taps", "xla"]
    if any(d > 1 for d in spec.lhs_dilation):
        # transposed: XLA's sub-pixel forward and input gradient, cpu_direct's kernel
        # gradient (DCGAN/U-Net/MelGAN on AVX2: as fast as taps' to 1.9x faster;
        # NOTES.md section 21)
        return ["xla_direct_grad", "xla_taps_grad", "xla"]
    if spec.feature_group_count > 1:
        return ["xla_taps_grad", "xla"]
    if math.prod(spec.window) == 1 and spec.batch_group_count == 1:
        # 1x1 (pointwise): the kernel gradient is one matmul, 1.3-2x faster than lax's
        return ["xla_taps_grad", "xla"]
    float32 = spec.lhs_dtype == np.float32 and spec.rhs_dtype == np.float32
    if spec.nspatial == 1 and spec.batch_group_count == 1 and float32:
        # 1-D dense: lax's forward and input gradient, cpu_direct's kernel gradient
        # (WaveNet: 1.6x faster than lax's; NOTES.md section 21)
        return ["xla_direct_grad", "xla"]
    if spec.nspatial == 2 and spec.batch_group_count == 1 and float32:
        # 2-D dense: lax's forward and input gradient, the kernel gradient one dot per
        # tap (1.7-2.3x faster than lax's on ResNet-50's wide 3x3 layers; on C3D's 3-D
        # conv5a 17x slower, so 1-D and 3-D layers stay lax's; NOTES.md section 20)
        return ["xla_taps_grad", "xla"]
    return ["xla"]


def _candidates(implementation: Any, spec: ConvSpec) -> tuple[list[str], bool]:
    if implementation is None:
        return auto_order(spec), False
    if isinstance(implementation, str):
        return [implementation], True
    if isinstance(implementation, Sequence):
        names = list(implementation)
        if not names or not all(isinstance(n, str) for n in names):
            raise TypeError(
                "`implementation` must be None, a name, or a non-empty sequence of names, "
                f"got {implementation!r}"
            )
        return names, False
    raise TypeError(
        "`implementation` must be None, a name, or a sequence of names, "
        f"got {type(implementation).__name__}"
    )


def select(spec: ConvSpec, implementation: Any = None) -> Implementation:
    """The implementation that will compute ``spec`` (raises if none can)."""
    names, explicit = _candidates(implementation, spec)
    impls = [_get(n) for n in names]  # unknown names raise ValueError up front
    reasons = []
    for impl in impls:
        reason = impl.supports(spec)
        if reason is None:
            return impl
        reasons.append(f"{impl.name}: {reason}")
    raise NotImplementedError(
        f"no implementation among {names} can compute {spec}: " + "; ".join(reasons)
    )


def apply_epilogue(y, spec: ConvSpec, bias=None, activation=None):
    """Add a per-output-feature ``bias`` (shape ``(O,)``) and apply ``activation``."""
    if bias is not None:
        shape = [1] * y.ndim
        shape[spec.dimension_numbers.out_spec[1]] = spec.out_features
        y = y + jnp.reshape(bias, shape).astype(y.dtype)
    if activation is not None:
        y = activation(y)
    return y


def run(lhs, rhs, spec: ConvSpec, implementation: Any = None, *, bias=None, activation=None):
    """Compute the convolution described by ``spec`` (boundary mode included)."""
    impl = select(spec, implementation)
    lhs, zspec = pad_input(lhs, spec)
    if impl.supports(zspec) is not None:  # padding can change what a kernel takes
        impl = select(zspec, implementation)
    if impl.fuses_epilogue:
        return impl.conv(lhs, rhs, zspec, bias=bias, activation=activation)
    return apply_epilogue(impl.conv(lhs, rhs, zspec), spec, bias, activation)


def _register_builtins() -> None:
    from jaxconv._src.impl import cpu_direct, fft, im2col, taps, xla

    for mod in (xla, im2col, taps, fft):
        register(Implementation(mod.NAME, mod.conv, mod.supports))
    register(Implementation(taps.XLA_TAPS_GRAD, taps.xla_taps_grad_conv, taps.supports))
    register(
        Implementation(cpu_direct.NAME, cpu_direct.conv, cpu_direct.supports, platforms=("cpu",))
    )
    register(
        Implementation(
            cpu_direct.XLA_DIRECT_GRAD,
            cpu_direct.xla_direct_grad_conv,
            taps.supports,
            platforms=("cpu",),
        )
    )
    from jaxconv._src import autotune

    register(Implementation(autotune.NAME, autotune.conv, autotune.supports))


_register_builtins()

# Pallas kernels load on first use (they pull in Pallas and its backends).
register_lazy("pallas_triton", "jaxconv._src.pallas.triton")
register_lazy("pallas_tpu", "jaxconv._src.pallas_tpu.kernel")
