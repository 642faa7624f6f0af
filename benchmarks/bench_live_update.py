"""The kernel's side of a live figure's update, in Python (no browser), measured in one run.

    python benchmarks/bench_live_update.py [--sizes 51,101,201] [--reps 5]

``plot.update`` of a ``go.FigureWidget`` made by ``plot.live``, half of its points computed then
all of them (what the Explorer does on its event loop at each throttled update, holding the
loop meanwhile): plotly's validation of the new values and ipywidgets' serialization of the
update message, not the browser's drawing (``bench_live_figure.py``). Two ways of handing the
values to plotly: nested Python lists (``plot.to_plotly_z``, what ``live`` sent before) and
numpy object arrays (``_common.plotly_array``, what it sends now). Prints the median ms per update.
"""
from __future__ import annotations

import argparse
import importlib
import time
from unittest import mock

import numpy as np
import plotly.graph_objects as go

from landscape_nb import plot
from landscape_nb.surface import Surface

live = importlib.import_module("landscape_nb.plot.live")  # the module (plot.live is its function)


def surfaces(n: int) -> list[Surface]:
    x = np.linspace(-1, 1, n)
    xx, yy = np.meshgrid(x, x)
    loss = 0.1 + xx ** 2 + 2 * yy ** 2
    half = np.random.default_rng(0).random((n, n)) < 0.5
    out = []
    for done in (half, np.ones((n, n), bool)):
        out.append(Surface(x=x, y=x, loss=np.where(done, loss, np.nan), done=done,
                           metrics={"acc": np.where(done, 1 - loss / 4, np.nan)},
                           provenance={"scheme": "random", "label": "bowl"}))
    return out


def ms_per_update(n: int, reps: int) -> float:
    """Median ms of one `plot.update` of a fresh FigureWidget, over ``reps`` × 2 updates."""
    surfs = surfaces(n)
    times = []
    for _ in range(reps):
        fig = go.FigureWidget(plot.live(Surface(x=surfs[0].x, y=surfs[0].y, loss=np.full((n, n), np.nan),
                                                provenance={"scheme": "random", "label": "bowl"})))
        for s in surfs:
            t = time.perf_counter()
            plot.update(fig, s)
            times.append(time.perf_counter() - t)
    return 1e3 * float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="51,101,201", help="points per axis, comma-separated")
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    print("\n## plot.update of a live FigureWidget (loss + one metric), kernel side: median ms per update\n")
    print("| grid | nested lists (before) | numpy arrays (now) | speed-up |\n|---|---|---|---|")
    for n in (int(s) for s in args.sizes.split(",")):
        with mock.patch.object(live, "plotly_array", plot.to_plotly_z):
            before = ms_per_update(n, args.reps)
        now = ms_per_update(n, args.reps)
        print(f"| {n}×{n} | {before:.0f} | {now:.0f} | {before / now:.1f}× |")


if __name__ == "__main__":
    main()
