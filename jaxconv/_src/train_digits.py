"""A real training run: a small CNN of jaxconv layers on scikit-learn's 8x8 digits.

The model (:class:`DigitsCNN`) is a 3x3 convolution, a depthwise-separable block, a 2x2
max pool and a dense head, all ``jaxconv.nn`` layers taking one ``implementation``. The
data are scikit-learn's bundled handwritten digits (1797 images, no download), split
80/20 with a fixed stratified split; training uses optax's AdamW with a cosine schedule
and random one-pixel shifts. :func:`train` shows a tqdm bar with the running loss, saves
an orbax checkpoint, writes the curves as a PNG and the history as JSON.

scikit-learn, orbax-checkpoint and matplotlib are imported only when used.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxconv._src.flax_linen import Conv, MaxPool, SeparableConv
from jaxconv._src.pooling import POOL_IMPLEMENTATIONS

NUM_CLASSES = 10


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of the digits run (the defaults reach >= 98% test accuracy).

    Attributes:
      epochs: passes over the training set.
      batch_size: images per step.
      learning_rate: peak AdamW learning rate (cosine-decayed to 0).
      weight_decay: AdamW weight decay.
      seed: parameter initialisation and batch order.
      implementation: convolution implementation for every layer (``None``: automatic).
      augment: shift each batch by up to one pixel (zero fill).
      steps_per_epoch: cap on the steps of an epoch (``None``: the full epoch).
    """

    epochs: int = 20
    batch_size: int = 32
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    seed: int = 0
    implementation: str | Sequence[str] | None = None
    augment: bool = True
    steps_per_epoch: int | None = None
    devices: int | None = None

    def __post_init__(self):
        for name in ("epochs", "batch_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"`{name}` must be an int >= 1, got {v!r}")
        if self.devices is not None and (self.devices < 1 or self.batch_size % self.devices):
            raise ValueError(
                f"`devices` must be >= 1 and divide `batch_size` "
                f"(={self.batch_size}), got {self.devices!r}"
            )
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise ValueError(
                f"`steps_per_epoch` must be >= 1 or None, got {self.steps_per_epoch!r}"
            )


#: The short setting of ``jaxconv train --smoke`` and of the tests.
SMOKE = dict(epochs=2, steps_per_epoch=8)


@dataclasses.dataclass
class Digits:
    """Images ``(N, 8, 8, 1)`` float32 in [0, 1] and labels ``(N,)`` int32."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def load_digits_split(test_fraction: float = 0.2, split_seed: int = 0) -> Digits:
    """scikit-learn's bundled 8x8 digits, split stratified (fixed by ``split_seed``)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[..., None]
    y = d.target.astype(np.int32)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=test_fraction, stratify=y, random_state=split_seed
    )
    return Digits(x_tr, y_tr, x_te, y_te)


class DigitsCNN(nn.Module):
    """``(N, 8, 8, 1) -> (N, 10)`` logits: conv 3x3 (32) -> separable 3x3 (64) ->
    max pool 2x2 -> dense (10), ReLU between, every convolution on ``implementation``.

    The max pool runs on ``implementation`` where pooling has it (``xla``, ``taps``,
    ``im2col``), else on its default; a max is exact, so this changes no number.
    """

    implementation: str | Sequence[str] | None = None

    @nn.compact
    def __call__(self, x):
        impl = self.implementation
        pool_impl = impl if isinstance(impl, str) and impl in POOL_IMPLEMENTATIONS else None
        x = nn.relu(Conv(32, (3, 3), implementation=impl)(x))
        x = nn.relu(SeparableConv(64, (3, 3), implementation=impl)(x))
        x = MaxPool((2, 2), (2, 2), implementation=pool_impl)(x)
        x = x.reshape(x.shape[:-3] + (-1,))
        return nn.Dense(NUM_CLASSES)(x)


@dataclasses.dataclass
class TrainResult:
    """What :func:`train` returns."""

    config: TrainConfig
    params: Any
    history: dict[str, list[float]]
    test_accuracy: float
    test_logits: np.ndarray
    seconds: float
    out_dir: str | None = None
    checkpoint: str | None = None
    plot: str | None = None


def _shift_batch(x_padded: np.ndarray, idx: np.ndarray, rng: np.random.Generator):
    dy, dx = rng.integers(0, 3, size=2)
    return x_padded[idx, dy : dy + 8, dx : dx + 8]


def make_step(model: DigitsCNN, tx: optax.GradientTransformation, mesh=None) -> Callable:
    """The jitted training step ``(params, opt_state, x, y) -> (params, opt_state,
    loss)`` (mean softmax cross-entropy)."""

    def loss_fn(params, x, y):
        logits = model.apply({"params": params}, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    if mesh is not None:  # batch split over the mesh, parameters replicated
        from jaxconv._src.data_parallel import data_parallel_step

        return data_parallel_step(loss_fn, tx, mesh)

    @jax.jit
    def step(params, opt_state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return step


def predict(params, x, implementation: Any = None) -> np.ndarray:
    """Logits ``(N, 10)`` of :class:`DigitsCNN` for images ``(N, 8, 8, 1)``."""
    model = DigitsCNN(implementation)
    return np.asarray(jax.jit(model.apply)({"params": params}, jnp.asarray(x)))


def train(
    config: TrainConfig = TrainConfig(),
    out_dir: str | None = None,
    *,
    progress: bool = True,
    data: Digits | None = None,
) -> TrainResult:
    """Train :class:`DigitsCNN`; with ``out_dir``, save the checkpoint
    (``out_dir/checkpoint``), the curves (``curves.png``) and ``history.json``.

    Returns a :class:`TrainResult` with the per-step losses (``history["loss"]``), the
    per-epoch mean training loss and test accuracy, and the final test accuracy.
    """
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    data = data or load_digits_split()
    model = DigitsCNN(config.implementation)
    params = model.init(jax.random.key(config.seed), jnp.asarray(data.x_train[:1]))["params"]
    n_train = len(data.x_train)
    steps = n_train // config.batch_size
    if config.steps_per_epoch is not None:
        steps = min(steps, config.steps_per_epoch)
    schedule = optax.cosine_decay_schedule(config.learning_rate, config.epochs * steps)
    tx = optax.adamw(schedule, weight_decay=config.weight_decay)
    opt_state = tx.init(params)
    mesh = None
    if config.devices is not None:
        from jaxconv._src.data_parallel import device_mesh, replicate

        mesh = device_mesh(config.devices)
        params, opt_state = replicate((params, opt_state), mesh)
    step = make_step(model, tx, mesh)
    evaluate = jax.jit(model.apply)
    rng = np.random.default_rng(config.seed)
    x_padded = np.pad(data.x_train, ((0, 0), (1, 1), (1, 1), (0, 0)))

    history: dict[str, list[float]] = {"loss": [], "epoch_loss": [], "test_accuracy": []}
    label = config.implementation or "auto"
    bar = tqdm(
        total=config.epochs * steps,
        desc=f"digits [{label}]",
        unit="step",
        disable=not progress,
        dynamic_ncols=True,
    )
    with bar:
        for epoch in range(config.epochs):
            perm = rng.permutation(n_train)
            epoch_losses = []
            for i in range(steps):
                idx = perm[i * config.batch_size : (i + 1) * config.batch_size]
                xb = _shift_batch(x_padded, idx, rng) if config.augment else data.x_train[idx]
                params, opt_state, loss = step(params, opt_state, xb, data.y_train[idx])
                epoch_losses.append(float(loss))
                bar.update(1)
                bar.set_postfix(epoch=epoch + 1, loss=f"{np.mean(epoch_losses):.4f}", refresh=False)
            logits = evaluate({"params": params}, data.x_test)
            acc = float(np.mean(np.argmax(np.asarray(logits), -1) == data.y_test))
            history["loss"].extend(epoch_losses)
            history["epoch_loss"].append(float(np.mean(epoch_losses)))
            history["test_accuracy"].append(acc)
            bar.set_postfix(
                epoch=epoch + 1, loss=f"{np.mean(epoch_losses):.4f}", test_acc=f"{acc:.4f}"
            )
    test_logits = np.asarray(evaluate({"params": params}, data.x_test))
    result = TrainResult(
        config=config,
        params=params,
        history=history,
        test_accuracy=float(np.mean(np.argmax(test_logits, -1) == data.y_test)),
        test_logits=test_logits,
        seconds=time.perf_counter() - t0,
    )
    if out_dir is not None:
        out_dir = os.path.abspath(out_dir)
        os.makedirs(out_dir, exist_ok=True)
        result.out_dir = out_dir
        result.checkpoint = save_checkpoint(os.path.join(out_dir, "checkpoint"), params)
        result.plot = plot_history(
            history,
            os.path.join(out_dir, "curves.png"),
            title=f"digits CNN, implementation={label}",
        )
        with open(os.path.join(out_dir, "history.json"), "w") as f:
            json.dump(
                {
                    "config": dataclasses.asdict(config),
                    "history": history,
                    "test_accuracy": result.test_accuracy,
                    "train_seconds": result.seconds,
                },
                f,
                indent=1,
            )
    return result


def save_checkpoint(path: str, params: Any) -> str:
    """Save a parameter tree with orbax-checkpoint (replacing ``path``); returns it."""
    import orbax.checkpoint as ocp

    path = os.path.abspath(path)
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(path, params, force=True)
    return path


def restore_checkpoint(path: str, like: Any) -> Any:
    """Restore a parameter tree saved by :func:`save_checkpoint`; ``like`` gives the
    structure, shapes and dtypes (e.g. ``DigitsCNN().init(...)["params"]``)."""
    import orbax.checkpoint as ocp

    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    with ocp.StandardCheckpointer() as ckptr:
        return ckptr.restore(os.path.abspath(path), abstract)


def plot_history(history: dict[str, list[float]], path: str, title: str = "") -> str:
    """Write the loss curve (per step, and the per-epoch mean) and the test accuracy
    per epoch to a PNG at ``path``; returns ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    losses = np.asarray(history["loss"])
    epochs = len(history["epoch_loss"])
    steps_per_epoch = max(len(losses) // max(epochs, 1), 1)
    fig, (ax_l, ax_a) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax_l.plot(
        np.arange(1, len(losses) + 1) / steps_per_epoch, losses, lw=0.6, alpha=0.5, label="per step"
    )
    ax_l.plot(np.arange(1, epochs + 1), history["epoch_loss"], "o-", label="epoch mean")
    ax_l.set_yscale("log")
    ax_l.set_xlabel("epoch")
    ax_l.set_ylabel("training loss (cross-entropy)")
    ax_l.legend()
    acc = 100 * np.asarray(history["test_accuracy"])
    ax_a.plot(np.arange(1, epochs + 1), acc, "o-", color="C2")
    ax_a.axhline(98, color="grey", ls="--", lw=0.8)
    ax_a.set_xlabel("epoch")
    ax_a.set_ylabel("test accuracy (%)")
    ax_a.set_ylim(min(90.0, float(acc.min()) - 1 if acc.size else 90.0), 100.5)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
