"""``"xla"``: ``jax.lax.conv_general_dilated`` itself, the reference."""

from __future__ import annotations

from jax import lax

from jaxconv._src.spec import ConvSpec, crop_input

NAME = "xla"


def supports(spec: ConvSpec) -> str | None:
    return None


def conv(lhs, rhs, spec: ConvSpec):
    # crops as slices: XLA:CPU miscomputes some mixed-sign pads (see `crop_input`)
    lhs, spec = crop_input(lhs, spec)
    return lax.conv_general_dilated(lhs, rhs, **spec.lax_kwargs())
