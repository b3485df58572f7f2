"""Flax NNX modules whose convolutions run through jaxconv's dispatch.

``Conv`` *is* :class:`flax.nnx.Conv`: it subclasses it and passes Flax's own
``conv_general_dilated=`` argument a lax-signature callable bound to an
``implementation``, so parameters, initialisers, padding words and dtype handling are
Flax's code. The state of a Flax module loads unchanged into ours and the other way round.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from flax import nnx

from jaxconv._src.flax_linen import conv_hook

Implementation = str | Sequence[str] | None


class Conv(nnx.Conv):
    """Drop-in for :class:`flax.nnx.Conv` with a choice of implementation.

    Takes every argument of :class:`flax.nnx.Conv` (same names, same defaults) and
    creates the same parameters: ``kernel`` of shape
    ``(*kernel_size, in_features // feature_group_count, out_features)`` and ``bias`` of
    shape ``(out_features,)``.

    Args:
      in_features, out_features, kernel_size, strides: as in :class:`flax.nnx.Conv`.
      implementation: ``None`` (automatic), a name from :func:`jaxconv.implementations`,
        or a sequence of names tried in order.
      conv_general_dilated: your own lax-signature function instead (then leave
        ``implementation`` as ``None``).
      **kwargs: the remaining keyword arguments of :class:`flax.nnx.Conv` (``padding``,
        ``input_dilation``, ``kernel_dilation``, ``feature_group_count``, ``use_bias``,
        ``mask``, ``dtype``, ``param_dtype``, ``precision``, ``kernel_init``,
        ``bias_init``, ``promote_dtype``, ``preferred_element_type``, ``rngs``, ...).

    Input ``(*batch_dims, *spatial, in_features)`` (no batch dimension is allowed);
    output ``(*batch_dims, *out_spatial, out_features)``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size: int | Sequence[int],
        strides: None | int | Sequence[int] = 1,
        *,
        implementation: Implementation = None,
        conv_general_dilated: Any = None,
        **kwargs: Any,
    ):
        hook = conv_hook(implementation, conv_general_dilated, "Conv")
        super().__init__(in_features, out_features, kernel_size, strides,
                         conv_general_dilated=hook, **kwargs)
        self.implementation = getattr(hook, "implementation", None)
