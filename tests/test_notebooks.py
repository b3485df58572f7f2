"""Execute every notebook of ``colab/`` top to bottom, on the CPU, in the smoke setting.

Each notebook's parameter cell reads ``JAXCONV_SMOKE=1`` and shrinks its sizes; a cell that
raises (a failed check included) fails the test. The kernel is the interpreter running
pytest (a kernelspec written for ``sys.executable``), so the notebooks see this checkout's
jaxconv, never another Python's; nbclient starts it and shuts it down. Needs nbclient,
nbformat and ipykernel (the ``notebooks`` extra, and the ``test`` extra once it lists them;
skipped without them) and matplotlib, scikit-learn, flax and optax (``demo``, ``flax``).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

# The ``test`` extra installs these; without them the notebooks cannot be executed.
nbclient = pytest.importorskip("nbclient", reason="needs nbclient (the test extra)")
nbformat = pytest.importorskip("nbformat", reason="needs nbformat (the test extra)")
pytest.importorskip("ipykernel", reason="needs ipykernel (the test extra)")
from jupyter_client.kernelspec import KernelSpecManager  # noqa: E402 (nbclient's dependency)

COLAB = Path(__file__).resolve().parent.parent / "colab"
NOTEBOOKS = sorted(COLAB.glob("*.ipynb"))
EXPECTED = {
    "01_convolution_from_scratch.ipynb",
    "02_pallas_kernels.ipynb",
    "03_train_flax_cnn.ipynb",
}
KERNEL_NAME = "jaxconv-notebook-test"
BADGE = re.compile(
    r"\(https://colab\.research\.google\.com/github/[\w.-]+/[\w.-]+/blob/main/colab/([\w.-]+)\)"
)


def _kernelspec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Write a kernelspec that starts ``sys.executable -m ipykernel_launcher`` with the smoke
    setting on the CPU, make it the one Jupyter finds (files under ``tmp_path``), and return
    its name. nbclient then owns the kernel and shuts it down after the run."""
    spec_dir = tmp_path / "jupyter" / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": f"Python ({sys.executable})",
        "language": "python",
        "env": {
            "JAXCONV_SMOKE": "1",
            "JAX_PLATFORMS": "cpu",
            "MPLBACKEND": "module://matplotlib_inline.backend_inline",
            "OMP_NUM_THREADS": "1",
            "IPYTHONDIR": str(tmp_path / "ipython"),
            "MPLCONFIGDIR": str(tmp_path / "matplotlib"),
            "PYDEVD_DISABLE_FILE_VALIDATION": "1",
        },
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    assert KernelSpecManager().get_kernel_spec(KERNEL_NAME).argv[0] == sys.executable
    return KERNEL_NAME


def _code(nb) -> list[str]:
    return [cell.source for cell in nb.cells if cell.cell_type == "code"]


def test_every_notebook_is_here():
    assert {p.name for p in NOTEBOOKS} >= EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_committed_without_outputs(path: Path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    dirty = [
        i
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)
    ]
    assert not dirty, f"{path.name}: cells {dirty} carry outputs; clear them before committing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_has_the_standard_cells(path: Path):
    """A Colab badge pointing at this file, an install cell guarded by an import check,
    a cell printing the devices, and exactly one parameter cell with the smoke switch."""
    nb = nbformat.read(path, as_version=4)
    assert nb.cells[0].cell_type == "markdown"
    assert BADGE.findall(nb.cells[0].source) == [path.name]
    code = _code(nb)
    assert 'find_spec("jaxconv") is None' in code[0] and "pip" in code[0]
    assert "jax.devices()" in code[1]
    params = [c for c in code if "JAXCONV_SMOKE" in c]
    assert len(params) == 1, f"{path.name}: {len(params)} cells read JAXCONV_SMOKE"
    assert "SMOKE =" in params[0]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(path: Path, tmp_path: Path, monkeypatch):
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        kernel_name=_kernelspec(tmp_path, monkeypatch),
        shutdown_kernel="immediate",
        timeout=300,
        allow_errors=False,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()  # raises CellExecutionError, naming the cell, on any error
    printed = "".join(
        out.get("text", "")
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.outputs
        if out.output_type == "stream"
    )
    assert "jaxconv is already importable" in printed  # the install cell installed nothing
    assert "devices: [CpuDevice" in printed
    figures = sum(
        "image/png" in out.get("data", {})
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.outputs
    )
    assert figures >= 3, f"{path.name} drew {figures} figures"
