"""The main job: surfaces for bundled models on the embedded cluster, written as HTML figures.

1. ResNet-20 with vs without skip connections (Li et al.'s headline figure):
   filter-normalized 2D surfaces, 3D and a side-by-side contour on one colour scale.
2. Small-batch vs large-batch minimizers of the digits MLP: 1D interpolation
   (Keskar et al.) and filter-normalized 1D slices through each.
3. The 2D moons MLP: contour of a filter-normalized plane.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

from . import plot, zoo
from .compute import compute_surface
from .directions import interpolation_direction, random_directions
from .export import export_html

log = logging.getLogger(__name__)


def run_demo(out: Path, *, client="local", n_workers: int | None = None, resolution: int = 31) -> list[Path]:
    """Compute the demo surfaces (resumable stores in ``out/stores``) and write HTML figures to ``out``."""
    from .cli import TqdmProgress
    from .cluster import get_client

    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    t0 = time.perf_counter()
    cl, owned = get_client(client, n_workers=n_workers) if client is not None else (None, None)
    if cl is not None:
        print(f"Dask dashboard: {cl.dashboard_link}")

    def surface(name, model, data, d, x, y=None, loss_fn=None, label=None):
        bar = TqdmProgress(label or name)
        try:
            return compute_surface(model, data, d, x=x, y=y, loss_fn=loss_fn, client=cl, name=label or name,
                                   store=out / "stores" / f"{(label or name).replace(' ', '_')}.zarr",
                                   callbacks=[bar])
        finally:
            bar.close()

    def write(fig, filename):
        path = export_html(fig, out / filename)
        written.append(path)
        print(f"wrote {path}")

    try:
        n = resolution
        pair = []
        for name in ("resnet20-digits", "resnet20-noskip-digits"):
            ex = zoo.load(name)
            d = random_directions(ex.model, n=2, norm="filter", ignore="biasbn", seed=0)
            s = surface(name, ex.model, ex.test, d, x=(-1, 1, n), y=(-1, 1, n), loss_fn=ex.loss_fn)
            pair.append(s)
            write(plot.surface(s, title=f"{name}: filter-normalized random plane"), f"{name}-surface.html")
        write(plot.compare(pair, kind="contour", titles=["with skip connections", "without skip connections"]),
              "resnet20-skip-vs-noskip.html")

        ex = zoo.load("mlp-digits")
        small, large = ex.minimizers["small-batch"], ex.minimizers["large-batch"]
        interp = surface("mlp-digits", small, ex.test, interpolation_direction(small, large), x=(-0.5, 1.5, 4 * n),
                         loss_fn=ex.loss_fn, label="small-to-large batch")
        write(plot.line(interp, title="mlp-digits: small-batch (0) → large-batch (1) minimizer"),
              "mlp-digits-small-vs-large-batch.html")
        slices = []
        for key, m in (("small-batch", small), ("large-batch", large)):
            d = random_directions(m, n=1, norm="filter", seed=0)
            s = surface("mlp-digits", m, ex.test, d, x=(-1, 1, 2 * n), loss_fn=ex.loss_fn, label=f"{key} slice")
            slices.append(s)
        write(plot.line(slices, title="mlp-digits: filter-normalized slices through each minimizer"),
              "mlp-digits-flat-vs-sharp.html")

        ex = zoo.load("mlp-moons")
        d = random_directions(ex.model, n=2, seed=0)
        s = surface("mlp-moons", ex.model, ex.test, d, x=(-1, 1, n), y=(-1, 1, n), loss_fn=ex.loss_fn)
        write(plot.contour(s, title="mlp-moons: filter-normalized random plane"), "mlp-moons-contour.html")
    finally:
        if owned is not None:
            owned.close()
    print(f"demo finished in {time.perf_counter() - t0:.0f} s: {len(written)} figures in {out}")
    return written
