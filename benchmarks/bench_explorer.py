"""The Explorer from Compute to the last tile, in Python (no browser), measured in one run.

    python benchmarks/bench_explorer.py [--models mlp-digits,cnn-digits,resnet20-digits] [--reps 2]

Per zoo model, on the Explorer's defaults (random filter-normalized plane, 21×21, test split,
in-process, auto range with rise 5 and tol 0.05):

- auto range: points and seconds of ``lnb.auto_range`` against the plain search it replaced
  (double from max_distance/256 until the loss reaches the target, then bisect; kept here as
  the baseline), on the same evaluator, model and directions;
- Compute → first tile and → last tile, with the kernel's OpenMP team released before the
  worker thread starts (what ``ExplorerState.compute`` does) and without (the release
  patched out; the main thread runs a parallel torch op before each Compute, as a notebook's
  cells do). The ratio is without / with.

The browser's side (Plotly's WebGL in Chromium) is measured by ``bench_live_figure.py`` and
printed by ``tests/test_browser.py``.
"""
from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

import landscape_nb as lnb
from landscape_nb import process, zoo
from landscape_nb.directions import as_directions
from landscape_nb.evaluate import EvalSettings, Evaluator
from landscape_nb.widgets.state import ExplorerState

RISE, TOL = 5.0, 0.05  # the Explorer's


def plain_search(model, data, directions, rise=RISE, tol=TOL, max_distance=10.0) -> tuple[list, int]:
    """The baseline: all (direction, sign) pairs double from max_distance/256, then bisect; one
    evaluator call per round. Returns the crossings (linear in loss inside the bracket) and the points."""
    d = as_directions(model, directions)
    ev = Evaluator(model, data, d.vectors, d.layout, metrics=None, settings=EvalSettings())
    n, signs = d.n, np.tile([-1.0, 1.0], d.n)
    with ev.session():
        centre = float(ev.evaluate(np.zeros((1, n)))[0, 0])
        points, target = 1, rise * centre

        def losses(which, dist):
            nonlocal points
            pairs = np.flatnonzero(which)
            coords = np.zeros((len(pairs), n))
            coords[np.arange(len(pairs)), pairs // 2] = signs[pairs] * dist[pairs]
            points += len(pairs)
            return ev.evaluate(coords)[:, 0]

        lo, f_lo = np.zeros(2 * n), np.full(2 * n, centre)
        hi, f_hi = np.full(2 * n, np.nan), np.full(2 * n, np.nan)
        while (open_ := np.isnan(hi) & (lo < max_distance)).any():
            t = np.minimum(np.where(lo > 0, 2 * lo, max_distance / 256), max_distance)
            f = np.full(2 * n, np.nan)
            f[open_] = losses(open_, t)
            up, down = open_ & ~(f < target), open_ & (f < target)
            hi[up], f_hi[up], lo[down], f_lo[down] = t[up], f[up], t[down], f[down]
        while (open_ := ~np.isnan(hi) & (hi - lo > tol * hi)).any():
            mid = (lo + hi) / 2
            f = np.full(2 * n, np.nan)
            f[open_] = losses(open_, mid)
            up, down = open_ & ~(f < target), open_ & (f < target)
            hi[up], f_hi[up], lo[down], f_lo[down] = mid[up], f[up], mid[down], f[down]
    frac = np.clip((target - f_lo) / np.where(f_hi > f_lo, f_hi - f_lo, 1.0), 0, 1)
    return list(np.where(np.isnan(hi), max_distance, lo + frac * (hi - lo))), points


def explorer_run(state: ExplorerState, seed: int) -> tuple[float, float]:
    """Seconds from Compute to the first tile and to the end."""
    first: list[float] = []

    def on_surface(change):
        if not first and change["new"] is not None and change["new"].done.any():
            first.append(time.perf_counter() - t0)

    state.observe(on_surface, "surface")
    state.seed = seed
    t0 = time.perf_counter()
    state.compute(wait=True)
    total = time.perf_counter() - t0
    state.unobserve(on_surface, "surface")
    if state.status != "done":
        raise RuntimeError(f"the Explorer ended {state.status}: {state.message}")
    return first[0], total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="mlp-digits,cnn-digits,resnet20-digits")
    ap.add_argument("--reps", type=int, default=2)
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; best of {args.reps} runs")
    ranges, runs = [], []
    release = process.release_openmp_threads
    warm = torch.randn(1 << 20)
    for name in args.models.split(","):
        ex = zoo.load(name)
        d = lnb.random_directions(ex.model, n=2, seed=0)
        best = {"new": (math.inf, 0, None), "plain": (math.inf, 0, None)}
        for _ in range(args.reps):
            t0 = time.perf_counter()
            r = lnb.auto_range(ex.model, ex.test, d, rise=RISE, tol=TOL)
            best["new"] = min(best["new"], (time.perf_counter() - t0, r.n_points, [c for pair in r.ranges for c in pair]))
            t0 = time.perf_counter()
            crossings, pts = plain_search(ex.model, ex.test, d)
            edges = [-c if k % 2 == 0 else c for k, c in enumerate(crossings)]
            best["plain"] = min(best["plain"], (time.perf_counter() - t0, pts, edges))
        (t_new, p_new, e_new), (t_old, p_old, e_old) = best["new"], best["plain"]
        worst = max(abs(a - b) / abs(b) for a, b in zip(e_new, e_old))
        ranges.append((name, p_old, p_new, t_old, t_new, t_old / t_new, worst))

        state = ExplorerState()
        state.set(model_name=name)
        timing = {True: (math.inf, math.inf), False: (math.inf, math.inf)}
        for rep in range(args.reps):
            for released in (False, True):
                process.release_openmp_threads = release if released else (lambda: False)
                warm.exp()  # the main thread's OpenMP team, as after any notebook cell that ran torch
                first, total = explorer_run(state, seed=rep)
                timing[released] = (min(timing[released][0], first), min(timing[released][1], total))
        process.release_openmp_threads = release
        state.close()
        (f_off, t_off), (f_on, t_on) = timing[False], timing[True]
        runs.append((name, f_off, f_on, t_off, t_on, t_off / t_on))

    from bench_surface import print_table

    print_table("auto range (rise 5, tol 0.05): plain doubling + bisection vs lnb.auto_range",
                ["model", "plain points", "auto_range points", "plain s", "auto_range s", "speed-up",
                 "largest edge difference"], ranges,
                ["{}", "{}", "{}", "{:.3f}", "{:.3f}", "{:.2f}×", "{:.2%}"])
    print_table("Explorer, in-process, 21×21: Compute → first tile / last tile, kernel's OpenMP team kept vs released",
                ["model", "first tile, kept", "first tile, released", "surface, kept", "surface, released",
                 "speed-up"], runs,
                ["{}", "{:.2f} s", "{:.2f} s", "{:.2f} s", "{:.2f} s", "{:.2f}×"])


if __name__ == "__main__":
    main()
