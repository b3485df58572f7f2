"""The digits training run: xla and taps give the same loss curve, the checkpoint
restores to the same predictions, the curves and history are written, the command runs;
the full run (slow) reaches 98% test accuracy."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("sklearn")
pytest.importorskip("orbax.checkpoint")
pytest.importorskip("matplotlib")

from jaxconv._src.reference import tolerance  # noqa: E402
from jaxconv._src.train_digits import (  # noqa: E402
    SMOKE,
    DigitsCNN,
    TrainConfig,
    load_digits_split,
    predict,
    restore_checkpoint,
    train,
)


@pytest.fixture(scope="module")
def data():
    return load_digits_split()


@pytest.fixture(scope="module")
def runs(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("digits")
    return {
        impl: train(
            TrainConfig(implementation=impl, seed=3, **SMOKE),
            str(out / impl),
            progress=False,
            data=data,
        )
        for impl in ("xla", "taps")
    }


def test_data_split(data):
    assert data.x_train.shape == (1437, 8, 8, 1) and data.x_test.shape == (360, 8, 8, 1)
    assert data.x_train.dtype == np.float32 and 0 <= data.x_train.min() < data.x_train.max() <= 1
    assert set(np.unique(data.y_test)) == set(range(10))


def test_xla_and_taps_give_the_same_loss_curve(runs):
    a, b = (np.asarray(runs[i].history["loss"]) for i in ("xla", "taps"))
    assert a.shape == b.shape == (SMOKE["epochs"] * SMOKE["steps_per_epoch"],)
    np.testing.assert_allclose(b, a, rtol=tolerance(np.float32))
    # and the curve is a training curve: the loss falls from ln(10)
    assert a[0] == pytest.approx(np.log(10), rel=0.15)
    assert np.mean(a[-4:]) < a[0] - 0.1
    assert not np.array_equal(a, np.full_like(a, a[0]))


def test_checkpoint_restores_the_same_predictions(runs, data):
    r = runs["taps"]
    # restore into a template with other values: the values must come from disk
    template = DigitsCNN().init(jax.random.key(123), jnp.zeros((1, 8, 8, 1)))["params"]
    restored = restore_checkpoint(r.checkpoint, template)
    for x, y in zip(jax.tree.leaves(restored), jax.tree.leaves(r.params)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    logits = predict(restored, data.x_test, "taps")
    np.testing.assert_array_equal(logits, r.test_logits)
    accuracy = np.mean(np.argmax(logits, -1) == data.y_test)
    assert accuracy == pytest.approx(r.test_accuracy)


def test_curves_and_history_are_written(runs):
    r = runs["xla"]
    with open(r.plot, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with open(r.out_dir + "/history.json") as f:
        saved = json.load(f)
    assert saved["config"]["implementation"] == "xla"
    assert saved["history"]["loss"] == pytest.approx(r.history["loss"])
    assert len(saved["history"]["test_accuracy"]) == SMOKE["epochs"]


def test_command_smoke(tmp_path, capsys):
    from jaxconv._src.cli import main

    rc = main(
        ["train", "--smoke", "--no-progress", "--implementation", "im2col", "--out", str(tmp_path)]
    )
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "same predictions" in out and "test accuracy" in out
    assert (tmp_path / "curves.png").exists() and (tmp_path / "checkpoint").is_dir()


def test_config_errors():
    with pytest.raises(ValueError, match="epochs"):
        TrainConfig(epochs=0)
    with pytest.raises(ValueError, match="steps_per_epoch"):
        TrainConfig(steps_per_epoch=0)


@pytest.mark.slow
@pytest.mark.parametrize("impl", ["xla", "taps"])
def test_full_run_reaches_98_percent(impl, data, tmp_path):
    r = train(TrainConfig(implementation=impl), str(tmp_path), progress=False, data=data)
    assert r.test_accuracy >= 0.98, r.history["test_accuracy"]


def test_devices_flag_gives_the_single_device_loss_curve(runs, tmp_path):
    """`jaxconv train --devices 8`: batch split over 8 CPU devices, parameters replicated;
    the loss curve equals the single-device run within float32 tolerance."""
    import os
    import subprocess
    import sys

    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)  # the command asks for its own 8 host devices
    cmd = [
        sys.executable,
        "-m",
        "jaxconv",
        "train",
        "--smoke",
        "--no-progress",
        "--seed",
        "3",
        "--implementation",
        "xla",
        "--devices",
        "8",
        "--out",
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with open(tmp_path / "history.json") as f:
        loss = np.asarray(json.load(f)["history"]["loss"])
    ref = np.asarray(runs["xla"].history["loss"])
    assert loss.shape == ref.shape
    assert np.max(np.abs(loss - ref) / np.abs(ref)) <= tolerance(np.float32)
