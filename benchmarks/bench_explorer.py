"""The Explorer from Compute to the last tile, in Python (no browser), measured in one run.

    python benchmarks/bench_explorer.py [--models mlp-digits,cnn-digits,resnet20-digits] [--reps 2]

Per zoo model, on the Explorer's defaults (random filter-normalized plane, 21×21, test split,
in-process, auto range with rise 5 and tol 0.05):

- auto range: points and seconds of ``lnb.auto_range`` with its search (``autorange.Crossing``)
  and with the plain one it replaced (double from max_distance/256 until the loss reaches the
  target, then bisect; ``PlainSearch`` here), on the same model, data and directions;
- Compute → first tile and → last tile, with the kernel's OpenMP team released before the
  worker thread starts (what ``ExplorerState.compute`` does) and without (the release
  patched out; the main thread runs a parallel torch op before each Compute, as a notebook's
  cells do). The ratio is without / with. The range is searched after Compute in both.
- Compute → first tile with the range searched after Compute and with it found ahead (the
  Explorer's prefetch when a zoo model is picked or a control changes; here the seed changes,
  then the search is given time to end before Compute, as while a user reads the panel).

The browser's side (Plotly's WebGL in Chromium) is measured by ``bench_live_figure.py`` and
printed by ``tests/test_browser.py``.
"""
from __future__ import annotations

import argparse
import math
import time

import torch

import landscape_nb as lnb
from landscape_nb import autorange, process, zoo
from landscape_nb.autorange import Crossing
from landscape_nb.widgets.state import ExplorerState

RISE, TOL = 5.0, 0.05  # the Explorer's


class PlainSearch(Crossing):
    """The baseline: double from max_distance/256 until the loss reaches the target, then bisect;
    the crossing linear in the loss inside the bracket. Run by ``auto_range``'s own loop (all pairs
    per evaluator call), so only the search differs."""

    FIRST = 1 / 256

    def _next(self) -> float | None:
        if self.hi is None:
            if self.lo >= self.max_distance:
                return None
            return min(2 * self.lo if self.lo > 0 else self.max_distance * self.FIRST, self.max_distance)
        return None if self.hi - self.lo <= self.tol * self.hi else (self.lo + self.hi) / 2

    def _interpolate(self) -> float | None:
        if not (math.isfinite(self.f_hi) and self.f_hi > self.f_lo):
            return None
        frac = min(max((self.target - self.f_lo) / (self.f_hi - self.f_lo), 0.0), 1.0)
        return self.lo + frac * (self.hi - self.lo)


def timed_range(model, data, directions, search: type[Crossing]) -> tuple[float, int, list[float]]:
    """Seconds, points and edges (−x, +x, −y, +y) of ``lnb.auto_range`` searching with ``search``."""
    saved, autorange.Crossing = autorange.Crossing, search
    try:
        t0 = time.perf_counter()
        r = lnb.auto_range(model, data, directions, rise=RISE, tol=TOL)
        return time.perf_counter() - t0, r.n_points, [c for pair in r.ranges for c in pair]
    finally:
        autorange.Crossing = saved


def explorer_run(state: ExplorerState, seed: int, ahead: bool = False) -> tuple[float, float]:
    """Seconds from Compute to the first tile and to the end; ``ahead``: the range is found before Compute."""
    first: list[float] = []

    def on_surface(change):
        if not first and change["new"] is not None and change["new"].done.any():
            first.append(time.perf_counter() - t0)

    if state._prefetcher is not None:  # one the panel started (its model or controls changed)
        state._prefetcher.join()
    state._prepared.clear()
    state.prefetch = lambda: False  # not when the seed changes: below, or never
    state.seed = seed
    if ahead:
        ExplorerState.prefetch(state)
        state._prefetcher.join()
    state.observe(on_surface, "surface")
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
    ranges, runs, prefetched = [], [], []
    release = process.release_openmp_threads
    warm = torch.randn(1 << 20)
    for name in args.models.split(","):
        ex = zoo.load(name)
        d = lnb.random_directions(ex.model, n=2, seed=0)
        best = {Crossing: (math.inf, 0, None), PlainSearch: (math.inf, 0, None)}
        for _ in range(args.reps):
            for search, so_far in list(best.items()):
                best[search] = min(so_far, timed_range(ex.model, ex.test, d, search))
        (t_new, p_new, e_new), (t_old, p_old, e_old) = best[Crossing], best[PlainSearch]
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

        state = ExplorerState()
        state.set(model_name=name)
        firsts = {False: math.inf, True: math.inf}
        for rep in range(args.reps):
            for ahead in (False, True):
                firsts[ahead] = min(firsts[ahead], explorer_run(state, seed=100 + 2 * rep + ahead, ahead=ahead)[0])
        state.close()
        prefetched.append((name, firsts[False], firsts[True], firsts[False] / firsts[True]))

    from bench_surface import print_table

    print_table("auto range (rise 5, tol 0.05): plain doubling + bisection vs lnb.auto_range",
                ["model", "plain points", "auto_range points", "plain s", "auto_range s", "speed-up",
                 "largest edge difference"], ranges,
                ["{}", "{}", "{}", "{:.3f}", "{:.3f}", "{:.2f}×", "{:.2%}"])
    print_table("Explorer, in-process, 21×21: Compute → first tile / last tile, kernel's OpenMP team kept vs released",
                ["model", "first tile, kept", "first tile, released", "surface, kept", "surface, released",
                 "speed-up"], runs,
                ["{}", "{:.2f} s", "{:.2f} s", "{:.2f} s", "{:.2f} s", "{:.2f}×"])
    print_table("Explorer, in-process, 21×21: Compute → first tile, auto range searched after Compute vs ahead",
                ["model", "after Compute", "ahead", "speed-up"], prefetched,
                ["{}", "{:.3f} s", "{:.3f} s", "{:.2f}×"])


if __name__ == "__main__":
    main()
