"""``jaxconv train``: a small CNN of jaxconv layers on scikit-learn's 8x8 digits."""

from __future__ import annotations

import argparse

HELP = "train a small CNN of jaxconv layers on scikit-learn's 8x8 digits (CPU, ~1 min)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from jaxconv._src.dispatch import implementations

    p.add_argument(
        "--implementation",
        default=None,
        choices=implementations(),
        help="convolution implementation for every layer (default: automatic)",
    )
    p.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="passes over the training set (default: 20; 2 with --smoke)",
    )
    p.add_argument("--seed", type=int, default=0, help="initialisation and batch order")
    p.add_argument(
        "--out",
        default="jaxconv-train-digits",
        metavar="DIR",
        help="where the checkpoint, curves.png and history.json go (default: %(default)s)",
    )
    p.add_argument(
        "--smoke",
        action="store_true",
        help="a short run (2 epochs of 8 steps) that checks the pipeline",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument(
        "--devices",
        type=int,
        default=None,
        metavar="N",
        help="data-parallel over N devices: each batch split over a mesh of N devices, "
        "parameters replicated (on a CPU, N host devices are created; N must divide 32)",
    )


def main(args: argparse.Namespace) -> int:
    import numpy as np

    from jaxconv._src.train_digits import (
        SMOKE,
        TrainConfig,
        predict,
        restore_checkpoint,
        train,
    )

    if args.devices is not None:  # before JAX starts its backends
        from jaxconv._src.data_parallel import request_cpu_devices

        request_cpu_devices(args.devices)
    kwargs = dict(SMOKE) if args.smoke else {}
    if args.epochs is not None:
        kwargs["epochs"] = args.epochs
    config = TrainConfig(
        seed=args.seed, implementation=args.implementation, devices=args.devices, **kwargs
    )
    result = train(config, args.out, progress=not args.no_progress)
    restored = restore_checkpoint(result.checkpoint, result.params)
    from jaxconv._src.train_digits import load_digits_split

    same = np.array_equal(
        predict(restored, load_digits_split().x_test, args.implementation),
        result.test_logits,
    )
    print(
        f"test accuracy      {100 * result.test_accuracy:.2f}% "
        f"({len(result.history['epoch_loss'])} epochs, {result.seconds:.1f} s)"
    )
    print(f"final train loss   {result.history['epoch_loss'][-1]:.4f}")
    print(
        f"checkpoint         {result.checkpoint} (restored: "
        f"{'same predictions' if same else 'DIFFERENT predictions'})"
    )
    print(f"curves             {result.plot}")
    return 0 if same else 1
