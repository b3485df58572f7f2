"""Autotuning: measure the candidate implementations for one spec once, keep the winner.

``jaxconv.autotune(spec)`` (or ``jaxconv.autotune(lhs, rhs, **conv_general_dilated
kwargs)``) times every implementation that supports the spec on this backend, on random
operands of the spec's shapes and dtype, and returns the fastest one's name. Winners
are cached in memory and on disk, keyed by backend, device kind, spec (shapes, dtypes,
strides, pads, dilations, groups, layouts, precision) and mode, so each configuration
is measured once per machine.

``implementation="autotune"`` runs it inside the dispatch: the ``"autotune"``
implementation looks the winner up (measuring it the first time the spec is traced)
and calls it. Measuring happens at trace time, on concrete operands of its own, so it
works under ``jax.jit``, ``grad`` and ``vmap``.

The cache file is ``$JAXCONV_AUTOTUNE_CACHE`` if set, else
``~/.cache/jaxconv/autotune.json``. It is plain JSON (winner, every candidate's median
time, versions, date); delete it, or pass ``refresh=True``, to measure again.
"""

from __future__ import annotations

import datetime
import json
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxconv._src import dispatch
from jaxconv._src.spec import ConvSpec, dtype_kind

NAME = "autotune"
MODES = ("fwd", "fwd+bwd")

_LOCK = threading.Lock()
_MEMORY: dict[str, dict[str, Any]] = {}


def cache_path() -> str:
    """Where winners are kept: ``$JAXCONV_AUTOTUNE_CACHE`` or
    ``~/.cache/jaxconv/autotune.json``."""
    env = os.environ.get("JAXCONV_AUTOTUNE_CACHE")
    if env:
        return env
    return os.path.join(os.path.expanduser("~"), ".cache", "jaxconv", "autotune.json")


def cache_key(spec: ConvSpec, mode: str = "fwd", backend: str | None = None) -> str:
    """The cache key of ``spec``: backend, device kind, the spec's full description
    (dtype included) and the mode."""
    backend = backend or jax.default_backend()
    kind = jax.devices(backend)[0].device_kind
    dn = spec.dimension_numbers
    fields = [
        backend,
        kind,
        f"dtype={spec.lhs_dtype}",
        f"out={spec.out_dtype}",
        f"lhs={spec.lhs_shape}",
        f"rhs={spec.rhs_shape}",
        f"strides={spec.window_strides}",
        f"pad={spec.padding}",
        f"lhs_dil={spec.lhs_dilation}",
        f"rhs_dil={spec.rhs_dilation}",
        f"dn={tuple(dn.lhs_spec)},{tuple(dn.rhs_spec)},{tuple(dn.out_spec)}",
        f"G={spec.feature_group_count}",
        f"B={spec.batch_group_count}",
        f"precision={spec.precision}",
        f"boundary={spec.boundary}:{spec.boundary_value}",
        f"mode={mode}",
    ]
    return "|".join(fields)


def _load(path: str) -> dict[str, Any]:
    try:
        with open(path) as fh:
            data = json.load(fh)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _store(path: str, key: str, entry: dict[str, Any]) -> None:
    """Merge one entry into the cache file atomically (read, update, replace)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    data = _load(path)
    data[key] = entry
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=1, sort_keys=True)
    os.replace(tmp, path)


def candidates(spec: ConvSpec, backend: str | None = None) -> list[str]:
    """Implementations that can compute ``spec`` on ``backend`` (``autotune`` itself
    excluded)."""
    backend = backend or jax.default_backend()
    out = []
    for name in dispatch.implementations():
        if name == NAME:
            continue
        try:
            impl = dispatch._get(name)
        except ImportError:  # an implementation whose optional extra is missing
            continue
        if backend in impl.platforms and impl.supports(spec) is None:
            out.append(name)
    return out


def _operands(spec: ConvSpec):
    rng = np.random.default_rng(0)
    dt = jnp.dtype(spec.lhs_dtype)
    if dtype_kind(dt) in "iu":
        return (
            jnp.asarray(rng.integers(-3, 4, spec.lhs_shape), dt),
            jnp.asarray(rng.integers(-3, 4, spec.rhs_shape), dt),
            jnp.asarray(rng.integers(-3, 4, spec.out_shape), spec.out_dtype),
        )
    x = rng.standard_normal(spec.lhs_shape)
    w = rng.standard_normal(spec.rhs_shape)
    ct = rng.standard_normal(spec.out_shape)
    return jnp.asarray(x, dt), jnp.asarray(w, dt), jnp.asarray(ct, spec.out_dtype)


def _program(spec: ConvSpec, name: str, mode: str):
    def f(x, w):
        return dispatch.run(x, w, spec, name)

    if mode == "fwd":
        return jax.jit(lambda x, w, ct: f(x, w))

    def fb(x, w, ct):
        y, vjp = jax.vjp(f, x, w)
        return (y,) + vjp(ct)

    return jax.jit(fb)


def measure(
    spec: ConvSpec,
    names: Sequence[str],
    *,
    mode: str = "fwd",
    repeats: int = 5,
    give_up_factor: float = 3.0,
) -> dict[str, float]:
    """Median seconds of each implementation in ``names`` for ``spec`` (after one
    warm-up call). A candidate whose warm-up call is ``give_up_factor`` times slower
    than the best median so far is not repeated: its time is that one call."""
    if mode not in MODES:
        raise ValueError(f"`mode` must be one of {MODES}, got {mode!r}")
    if mode == "fwd+bwd" and dtype_kind(spec.lhs_dtype) in "iu":
        raise ValueError(f"`mode` 'fwd+bwd' needs floating inputs, got {spec.lhs_dtype}")
    with jax.ensure_compile_time_eval():  # measure for real even while tracing
        return _measure(spec, names, mode, repeats, give_up_factor)


def _measure(spec, names, mode, repeats, give_up_factor):
    x, w, ct = _operands(spec)
    times: dict[str, float] = {}
    for name in names:
        prog = _program(spec, name, mode)
        jax.block_until_ready(prog(x, w, ct))  # compile and warm up
        t0 = time.perf_counter()
        jax.block_until_ready(prog(x, w, ct))
        first = time.perf_counter() - t0
        best = min(times.values(), default=float("inf"))
        samples = [first]
        if first < give_up_factor * best:
            for _ in range(repeats - 1):
                t0 = time.perf_counter()
                jax.block_until_ready(prog(x, w, ct))
                samples.append(time.perf_counter() - t0)
        times[name] = statistics.median(samples)
    return times


def autotune(
    *args: Any,
    candidates_: Sequence[str] | None = None,
    mode: str = "fwd",
    refresh: bool = False,
    cache: str | None | bool = None,
    repeats: int = 5,
    **kwargs: Any,
) -> str:
    """Name of the fastest implementation for one convolution on this machine.

    Call it with a :class:`jaxconv.ConvSpec`, or with the arguments of
    :func:`jaxconv.conv_general_dilated` (arrays or shape-dtype structs for ``lhs`` and
    ``rhs``). The first call for a configuration measures every candidate
    (:func:`candidates`, or ``candidates_``); later calls read the cache.

    Args:
      mode: ``"fwd"`` (forward only) or ``"fwd+bwd"`` (forward and both gradients, for
        training); part of the cache key.
      refresh: measure again even if a winner is cached.
      cache: path of the cache file; ``None`` for :func:`cache_path`; ``False`` to keep
        the winner in memory only.
      repeats: timed calls per candidate (median).

    Returns:
      The winner's name, usable as ``implementation=``.
    """
    if len(args) == 1 and isinstance(args[0], ConvSpec) and not kwargs:
        spec = args[0]
    else:
        if len(args) < 2:
            raise TypeError(
                "autotune() takes a ConvSpec, or lhs, rhs and the keyword "
                "arguments of conv_general_dilated"
            )
        lhs, rhs, *rest = args
        names = (
            "window_strides",
            "padding",
            "lhs_dilation",
            "rhs_dilation",
            "dimension_numbers",
            "feature_group_count",
            "batch_group_count",
            "precision",
            "preferred_element_type",
        )
        kw = dict(zip(names, rest))
        kw.update(kwargs)
        kw.setdefault("window_strides", None)
        kw.setdefault("padding", "VALID")
        spec = ConvSpec.create(
            np.shape(lhs), np.shape(rhs), **kw, lhs_dtype=lhs.dtype, rhs_dtype=rhs.dtype
        )
    if mode not in MODES:
        raise ValueError(f"`mode` must be one of {MODES}, got {mode!r}")
    key = cache_key(spec, mode)
    path = None if cache is False else (cache or cache_path())
    with _LOCK:
        if not refresh:
            hit = _MEMORY.get(key)
            if hit is None and path is not None:
                hit = _load(path).get(key)
            if hit is not None and hit.get("winner") in dispatch.implementations():
                _MEMORY[key] = hit
                return hit["winner"]
        names = list(candidates_) if candidates_ is not None else candidates(spec)
        if not names:
            raise NotImplementedError(f"autotune: no implementation can compute {spec}")
        times = measure(spec, names, mode=mode, repeats=repeats)
        winner = min(times, key=times.get)
        entry = {
            "winner": winner,
            "times_s": times,
            "mode": mode,
            "jax": jax.__version__,
            "spec": str(spec),
            "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        }
        _MEMORY[key] = entry
        if path is not None:
            _store(path, key, entry)
        return winner


def clear_memory_cache() -> None:
    """Forget the winners kept in memory (the file stays)."""
    with _LOCK:
        _MEMORY.clear()


def supports(spec: ConvSpec) -> str | None:
    """``autotune`` takes what at least one candidate takes."""
    if candidates(spec):
        return None
    return "autotune: no registered implementation supports this spec"


def conv(lhs, rhs, spec: ConvSpec):
    """Run the cached (or freshly measured) winner for ``spec``."""
    name = autotune(spec)
    return dispatch._get(name).conv(lhs, rhs, spec)
