"""Pallas Mosaic TPU convolution kernels (implementation ``"pallas_tpu"``).

``blocks``: the kernel layout, the block-size rule and the roofline model;
``kernel``: the ``pallas_call`` wiring, autodiff and the registration with dispatch.
"""
