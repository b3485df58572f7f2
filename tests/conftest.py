"""Shared test settings: hypothesis profiles, the x64 and split_regions fixtures."""

import os

# Tests compile hundreds of small programs: XLA's backend optimisations cost more time
# than they save at these sizes (measured: half the time of the random-config tests).
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"
).strip()

import jax  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,  # `x64` wraps the whole test on purpose
    ],
    print_blob=True,
)
# every random test sets its budget through tests/params.py's `examples(n)`, which this
# profile's name scales (20x); the profile itself only has to exist
settings.register_profile("slow", parent=settings.get_profile("ci"))
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def x64():
    """Run a test with 64-bit types enabled (float64 references agree to ~1e-12)."""
    with jax.enable_x64(True):
        yield


@pytest.fixture
def split_regions(monkeypatch):
    """Split every ``taps`` output into its border and interior boxes, as for large
    inputs (the small inputs of the tests would otherwise be read as one padded box)."""
    from jaxconv._src.impl import window

    monkeypatch.setattr(window, "SPLIT_REGIONS_BYTES", 0)


@pytest.fixture(autouse=True, scope="session")
def _autotune_cache(tmp_path_factory):
    """Keep `implementation="autotune"` from writing to the user's cache during tests."""
    path = tmp_path_factory.mktemp("autotune") / "autotune.json"
    old = os.environ.get("JAXCONV_AUTOTUNE_CACHE")
    os.environ["JAXCONV_AUTOTUNE_CACHE"] = str(path)
    yield
    if old is None:
        os.environ.pop("JAXCONV_AUTOTUNE_CACHE", None)
    else:
        os.environ["JAXCONV_AUTOTUNE_CACHE"] = old
