"""Run a test file's worker mode in a subprocess with 8 CPU devices.

The device count must be set before JAX starts its backend, and the test session
has already started it with one device; so multi-device bodies run as
``python <test file> <args>`` and print their result as JSON on the last line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

DEVICES = 8


def run_worker(script: str, *args: str, timeout: float = 900) -> dict:
    """Run ``script`` with ``args`` on ``DEVICES`` CPU devices; return its JSON result."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = (
        env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={DEVICES}"
    ).strip()
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run(
        [sys.executable, os.path.abspath(script), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        pytest.fail(f"worker {args} failed (rc={proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
