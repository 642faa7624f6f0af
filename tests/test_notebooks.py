"""Every notebook in notebooks/ runs top to bottom, headless, in a fresh kernel (nbclient)."""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
KERNEL = "landscape-nb-test"
try:  # notebooks another test module already executes are not run twice
    from test_notebooks_analysis import NOTEBOOKS as RUN_ELSEWHERE
except ImportError:
    RUN_ELSEWHERE = []


def kernel_env(cache: Path) -> dict[str, str]:
    """The kernel imports this checkout, trains zoo models into ``cache`` and uses one OpenMP
    thread per process (tiny models on shared CI cores: spin-waiting threads only cost time)."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path, "LANDSCAPE_NB_CACHE": str(cache), "OMP_NUM_THREADS": "1",
            "MPLBACKEND": "agg"}


def write_kernelspec(where: Path, env: dict[str, str]) -> Path:
    """A kernelspec for *this* interpreter, so the test needs no installed 'python3' kernel."""
    spec_dir = where / "kernels" / KERNEL
    spec_dir.mkdir(parents=True, exist_ok=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "landscape_nb test", "language": "python", "env": env,
    }))
    return where / "kernels"


@pytest.fixture(scope="session")
def zoo_cache(shared_zoo_cache) -> Path:
    """The session's zoo cache (conftest), so notebooks reuse models other tests trained."""
    return Path(shared_zoo_cache)


def test_the_three_notebooks_are_there_with_outputs_cleared():
    assert {p.name for p in NOTEBOOKS} >= {"explore.ipynb", "skip_connections.ipynb", "flat_vs_sharp.ipynb",
                                            "beyond_peers.ipynb"}
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: outputs not cleared"


# notebook -> (session fixture, the directory under the notebook's own where it reads the stores)
RESUMES = {"skip_connections.ipynb": ("quick_depth_comparison", "depth-stores")}


@pytest.mark.slow
@pytest.mark.timeout(1500)  # skip_connections computes the depth comparison's stores (RESUMES), minutes on 2 cores
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(path, tmp_path, zoo_cache, request):
    """Each notebook, every cell, in a fresh kernel. One that stores its surfaces gets a copy of
    the stores a session fixture computed with the same settings (RESUMES), so its code runs in
    full (loading, plotting, the store-resume path) without computing the same surfaces twice."""
    if path in RUN_ELSEWHERE:
        pytest.skip(f"{path.name} runs in tests/test_notebooks_analysis.py")
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(path, work / path.name)
    stores = None
    if path.name in RESUMES:
        fixture, stores = RESUMES[path.name]
        shutil.copytree(request.getfixturevalue(fixture)[1], work / stores)
        stored = {p: p.stat().st_mtime_ns for p in (work / stores).rglob("*") if p.is_file()}
    ksm = KernelSpecManager(kernel_dirs=[str(write_kernelspec(tmp_path, kernel_env(zoo_cache)))])
    km = KernelManager(kernel_name=KERNEL, kernel_spec_manager=ksm)
    nb = nbformat.read(work / path.name, as_version=4)
    client = nbclient.NotebookClient(nb, km=km, timeout=300, startup_timeout=120,
                                     resources={"metadata": {"path": str(work)}})
    t0 = time.perf_counter()
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as exc:
        pytest.fail(f"{path.name} failed:\n{str(exc)[-3000:]}")
    elapsed = time.perf_counter() - t0
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    figures = [o for o in outputs if "application/vnd.plotly.v1+json" in o.get("data", {})
               or "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert figures, f"{path.name} displayed no figure or widget"
    if stores is not None:  # it read the stores (a recomputation would have written over them)
        now = {p: p.stat().st_mtime_ns for p in (work / stores).rglob("*") if p.is_file()}
        assert now == stored, f"{path.name} computed again instead of resuming from {stores}/"
    print(f"{path.name}: {elapsed:.0f} s")
