"""``"xla"``: ``jax.lax.conv_general_dilated`` itself, the reference."""

from __future__ import annotations

from jax import lax

from jaxconv._src.spec import ConvSpec

NAME = "xla"


def supports(spec: ConvSpec) -> str | None:
    return None


def conv(lhs, rhs, spec: ConvSpec):
    return lax.conv_general_dilated(lhs, rhs, **spec.lax_kwargs())
