"""``jaxconv.autotune`` and ``implementation="autotune"``: measured once, cached in
memory and on disk, keyed by backend, device kind, spec and dtype."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxconv
from jaxconv._src import autotune as at
from jaxconv._src.reference import reference_conv, relative_error, tolerance
from jaxconv._src.spec import ConvSpec, default_dimension_numbers


@pytest.fixture
def cache_file(tmp_path, monkeypatch):
    path = tmp_path / "autotune.json"
    monkeypatch.setenv("JAXCONV_AUTOTUNE_CACHE", str(path))
    at.clear_memory_cache()
    yield path
    at.clear_memory_cache()


def _spec(dtype=np.float32, groups=4):
    return ConvSpec.create(
        (2, 9, 9, 8),
        (3, 3, 8 // groups, 8),
        1,
        "SAME",
        dimension_numbers=default_dimension_numbers(2),
        feature_group_count=groups,
        lhs_dtype=dtype,
    )


def test_winner_is_measured_once_then_read_from_memory_and_disk(cache_file, monkeypatch):
    spec = _spec()
    calls = []
    real = at.measure

    def counting(spec, names, **kw):
        calls.append(tuple(names))
        return real(spec, names, **kw)

    monkeypatch.setattr(at, "measure", counting)
    winner = at.autotune(spec, candidates_=["xla", "taps"], repeats=2)
    assert winner in ("xla", "taps") and len(calls) == 1
    entry = json.loads(cache_file.read_text())[at.cache_key(spec)]
    assert entry["winner"] == winner
    assert set(entry["times_s"]) == {"xla", "taps"}
    assert entry["times_s"][winner] == min(entry["times_s"].values())
    assert at.autotune(spec) == winner and len(calls) == 1  # memory
    at.clear_memory_cache()
    assert at.autotune(spec) == winner and len(calls) == 1  # disk


def test_refresh_measures_again_and_the_fastest_wins(cache_file, monkeypatch):
    spec = _spec()
    monkeypatch.setattr(at, "measure", lambda spec, names, **kw: {"xla": 2.0, "taps": 1.0})
    assert at.autotune(spec, candidates_=["xla", "taps"]) == "taps"
    monkeypatch.setattr(at, "measure", lambda spec, names, **kw: {"xla": 1.0, "taps": 3.0})
    assert at.autotune(spec) == "taps"  # cached
    assert at.autotune(spec, refresh=True, candidates_=["xla", "taps"]) == "xla"
    assert json.loads(cache_file.read_text())[at.cache_key(spec)]["winner"] == "xla"


def test_key_holds_backend_device_kind_spec_dtype_and_mode():
    k32, k16 = at.cache_key(_spec(np.float32)), at.cache_key(_spec(jnp.bfloat16))
    assert k32 != k16 and "float32" in k32 and "bfloat16" in k16
    backend = jax.default_backend()
    assert k32.startswith(f"{backend}|{jax.devices()[0].device_kind}|")
    assert at.cache_key(_spec(groups=2)) != k32
    assert at.cache_key(_spec(), mode="fwd+bwd") != k32


def test_implementation_autotune_under_jit_and_grad(cache_file):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((2, 9, 9, 8)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((3, 3, 2, 8)), jnp.float32)
    f = lambda x, w, impl: jnp.sum(jnp.tanh(jaxconv.conv(x, w, groups=4, implementation=impl)))
    y = jax.jit(lambda x, w: jaxconv.conv(x, w, groups=4, implementation="autotune"))(x, w)
    assert relative_error(y, reference_conv(x, w, _spec())) <= tolerance(np.float32)
    g = jax.jit(jax.grad(f, (0, 1)), static_argnums=2)(x, w, "autotune")
    g_ref = jax.grad(f, (0, 1))(x, w, "xla")
    for a, b in zip(g, g_ref):
        assert relative_error(a, b) <= 1e-4
    assert cache_file.exists()


def test_called_with_conv_general_dilated_arguments(cache_file):
    x = jax.ShapeDtypeStruct((1, 4, 8, 8), jnp.float32)
    w = jax.ShapeDtypeStruct((6, 4, 3, 3), jnp.float32)
    name = at.autotune(x, w, (2, 2), "SAME", mode="fwd+bwd", repeats=1, candidates_=["xla", "taps"])
    assert name in ("xla", "taps")
    spec = ConvSpec.create(x.shape, w.shape, (2, 2), "SAME")
    assert json.loads(cache_file.read_text())[at.cache_key(spec, "fwd+bwd")]["winner"] == name


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="mode"):
        at.autotune(_spec(), mode="backward", cache=False)
    with pytest.raises(TypeError, match="ConvSpec"):
        at.autotune(np.zeros((1, 2, 3)))
    assert "autotune" in jaxconv.implementations()
