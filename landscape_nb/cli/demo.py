"""The main job: surfaces for bundled models on the embedded cluster, written as HTML figures.

1. ResNet-20 with vs without skip connections (Li et al.'s headline figure):
   filter-normalized 2D surfaces, 3D and a side-by-side contour on one colour scale;
   then the depth row: ResNet-20/56/110 with and without skips on one colour scale, with
   their measured minima, basin radius and non-convex fraction (``landscape_nb.depth``).
2. Small-batch vs large-batch minimizers of the digits MLP: 1D interpolation
   (Keskar et al.) and filter-normalized 1D slices through each.
3. The 2D moons MLP: contour of a filter-normalized plane.
"""
from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from .. import plot, zoo
from ..compute import compute_surface
from ..depth import DepthSettings, depth_comparison
from ..directions import random_directions
from ..model_paths import interpolation_direction
from ..plot.export import export_html
from .progress import TqdmProgress

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def training_said() -> Iterator[None]:
    """The zoo's "Training zoo example ..." and "Trained ..." lines printed while the demo runs: a first run
    trains six ResNets for minutes, which it did in silence (trial s43). Put back as it was after."""
    zoo_log = logging.getLogger(zoo.__name__)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    level, propagate = zoo_log.level, zoo_log.propagate
    zoo_log.addHandler(handler)
    zoo_log.setLevel(logging.INFO)
    zoo_log.propagate = False  # said once, also where --verbose set the root logger to INFO
    try:
        yield
    finally:
        zoo_log.removeHandler(handler)
        zoo_log.setLevel(level)
        zoo_log.propagate = propagate


# the zoo examples the demo shows, the longest to train first (so two workers finish about together)
DEMO_MODELS = ("resnet110-digits", "resnet110-noskip-digits", "resnet56-digits", "resnet56-noskip-digits",
               "resnet20-digits", "resnet20-noskip-digits", "mlp-digits", "mlp-moons")


def run_demo(out: Path, *, client="local", n_workers: int | None = None, resolution: int = 31) -> list[Path]:
    """Compute the demo surfaces and write them as standalone HTML figures.

    Seven figures, on the bundled zoo (models trained on first use, then cached):

    - ``resnet20-digits-surface.html`` and ``resnet20-noskip-digits-surface.html``: 3D
      filter-normalized random planes of ResNet-20 with and without skip connections, and
      ``resnet20-skip-vs-noskip.html``: their contours side by side on one colour scale
      (Li et al. 2018, the paper's headline figure), and ``depth-skip-vs-noskip.html``:
      ResNet-20/56/110 with and without skips on one colour scale, each panel titled with its
      minima count and basin radius (the |λ_min/λ_max| fraction, which needs Hessian products,
      is left to ``notebooks/skip_connections.ipynb``).
    - ``mlp-digits-small-vs-large-batch.html``: the 1D interpolation from the small-batch to
      the large-batch minimizer of the digits MLP (Keskar et al. 2017), and
      ``mlp-digits-flat-vs-sharp.html``: a filter-normalized 1D slice through each.
    - ``mlp-moons-contour.html``: the contour of a filter-normalized plane of the moons MLP.

    Each surface is saved as a store under ``out/stores``, so a rerun resumes (or, when
    complete, only redraws). Progress bars go to stderr, the files written and the Dask
    dashboard link to stdout.

    Parameters
    ----------
    out : pathlib.Path
        The output directory; created if missing.
    client : None, str or distributed.Client, optional
        Where to evaluate: ``"local"`` (default, an embedded local Dask cluster, closed at
        the end), None (in this process), ``"cuda"`` (dask-cuda GPU workers), a scheduler
        address such as ``"tcp://host:8786"``, or a running client (left open).
    n_workers : int, optional
        Workers of the cluster started for ``"local"`` or ``"cuda"`` (default: Dask's choice).
    resolution : int, optional
        Points per axis of the 2D surfaces (default 31; an even one is made odd, n, so that the trained
        model is a grid point); the 1D interpolation has ``4 n + 1`` points (the minimizers at 0 and 1
        among them) and each 1D slice ``2 n + 1``.

    Returns
    -------
    list of pathlib.Path
        The HTML files written, in the order above.

    Raises
    ------
    LandscapeError
        ``client`` is not one of the above, the scheduler cannot be reached, ``resolution``
        is below 2, or a store in ``out/stores`` was written for a different surface.

    References
    ----------
    .. [1] H. Li, Z. Xu, G. Taylor, C. Studer and T. Goldstein, "Visualizing the Loss
       Landscape of Neural Nets", NeurIPS 2018.
    .. [2] N. S. Keskar, D. Mudigere, J. Nocedal, M. Smelyanskiy and P. T. P. Tang, "On
       Large-Batch Training for Deep Learning: Generalization Gap and Sharp Minima", ICLR 2017.
    """
    from ..cluster import get_client

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

    with training_said():
        try:
            if owned is not None:  # a cluster the demo started on this machine: its workers share the cache
                zoo.train_on_workers(DEMO_MODELS, cl)
            n = resolution | 1  # odd: every figure's grid holds its models (at 0, and 1 on the interpolation)
            pair = []
            for name in ("resnet20-digits", "resnet20-noskip-digits"):
                ex = zoo.load(name)
                d = random_directions(ex.model, n=2, norm="filter", ignore="biasbn", seed=0)
                s = surface(name, ex.model, ex.test, d, x=(-1, 1, n), y=(-1, 1, n), loss_fn=ex.loss_fn)
                pair.append(s)
                write(plot.surface(s, title=f"{name}: filter-normalized random plane"), f"{name}-surface.html")
            write(plot.compare(pair, kind="contour", titles=["with skip connections", "without skip connections"]),
                  "resnet20-skip-vs-noskip.html")
            # no eigen-map here (Hessian products on six deep nets take minutes on a laptop CPU): the
            # non-convex fraction is in notebooks/skip_connections.ipynb and lnb.depth.depth_comparison
            # a bar a plane: the phase ran minutes with no output (trial s53b)
            print(f"depth comparison: ResNet-20/56/110 with and without skips, 6 planes of {n}×{n} points")
            bar = TqdmProgress("depth comparison plane")
            try:
                depth = depth_comparison(settings=DepthSettings(resolution=n, max_samples=128, eigen_resolution=0),
                                         client=cl, store_dir=out / "stores" / "depth", callbacks=[bar])
            finally:
                bar.close()
            write(plot.depth_figure(depth), "depth-skip-vs-noskip.html")

            ex = zoo.load("mlp-digits")
            small, large = ex.minimizers["small-batch"], ex.minimizers["large-batch"]
            interp = surface("mlp-digits", small, ex.test, interpolation_direction(small, large, names=(
                             "small-batch", "large-batch")), x=(-0.5, 1.5, 4 * n + 1),
                             loss_fn=ex.loss_fn, label="small-to-large batch")
            write(plot.line(interp, title="mlp-digits: small-batch (0) → large-batch (1) minimizer"),
                  "mlp-digits-small-vs-large-batch.html")
            slices = []
            for key, m in (("small-batch", small), ("large-batch", large)):
                d = random_directions(m, n=1, norm="filter", seed=0)
                s = surface("mlp-digits", m, ex.test, d, x=(-1, 1, 2 * n + 1), loss_fn=ex.loss_fn, label=f"{key} slice")
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
