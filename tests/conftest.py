"""Shared test settings: hypothesis profiles and the implementations under test."""

import os

import jax
from hypothesis import HealthCheck, settings

# float64 references (1e-12 agreement) need x64; every test passes explicit dtypes.
jax.config.update("jax_enable_x64", True)

settings.register_profile(
    "ci",
    deadline=None,
    derandomize=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.register_profile(
    "slow",
    parent=settings.get_profile("ci"),
    max_examples=2000,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
