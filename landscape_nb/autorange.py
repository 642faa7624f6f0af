"""How far to look: per direction, the distance at which the loss has risen by a factor.

A plot range chosen by hand is either all basin or all wall. ``auto_range`` walks out from
the centre along each direction and each sign, doubling the step until the loss reaches
``rise × loss(centre)`` (bracketing), then bisects the last step until the crossing is
known to ``tol`` (relative). All directions and signs advance together, so each round is
one call of the surface evaluator on at most ``2 × n_directions`` points.

**Cost**: one point for the centre, then per (direction, sign) about
``log2(max_distance / first_step)`` bracketing points and ``log2(1 / tol)`` bisection
points: with the defaults (``max_distance=10``, first step 10/256, ``tol=0.01``) at most
9 + 7 = 16 points per direction and sign, 65 for a plane: the price of a 8 × 8 grid.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
from torch import nn

from .errors import LandscapeError


@dataclass(frozen=True)
class AutoRange:
    """Per direction, the coordinates where the loss reaches ``target`` on each side.

    ``ranges[k] = (lo, hi)``: ``lo < 0 < hi`` are the first crossings found on the negative and
    positive side of direction k (``±max_distance`` where the loss stays below the target:
    see ``reached``). ``x``/``y`` are ready for ``compute_surface(..., x=r.x, y=r.y)``.
    """

    ranges: tuple[tuple[float, float], ...]
    reached: tuple[tuple[bool, bool], ...]
    centre_loss: float
    target: float
    rise: float
    num: int
    n_points: int

    def axis(self, k: int, num: int | None = None, *, symmetric: bool = False) -> tuple[float, float, int]:
        """``(start, stop, num)`` for direction ``k``; ``symmetric``: ±the larger of the two sides."""
        lo, hi = self.ranges[k]
        if symmetric:
            r = max(-lo, hi)
            lo, hi = -r, r
        return (lo, hi, int(num or self.num))

    @property
    def x(self) -> tuple[float, float, int]:
        return self.axis(0)

    @property
    def y(self) -> tuple[float, float, int]:
        if len(self.ranges) < 2:
            raise LandscapeError("auto_range was run on one direction; expected two for a y range")
        return self.axis(1)


def _positive(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(value) or value <= 0:
        raise LandscapeError(f"{name}={value!r}; expected a positive finite number")
    return float(value)


def auto_range(model: nn.Module, data, directions, rise: float = 5.0, loss_fn: Callable | None = None, *,
               max_distance: float = 10.0, tol: float = 0.01, num: int = 51, max_samples: int | None = None,
               batch_size: int | None = None) -> AutoRange:
    """Per direction and sign, the distance at which the loss first reaches ``rise × loss(centre)``.

    >>> d = lnb.random_directions(model, n=2, seed=0)
    >>> r = lnb.auto_range(model, (x, y), d, rise=5)
    >>> surf = lnb.compute_surface(model, (x, y), d, x=r.x, y=r.y)

    Parameters
    ----------
    model : torch.nn.Module
        The centre of the plot (restored bit-identically afterwards).
    data
        ``(inputs, targets)``, a Dataset, a DataLoader or a zero-argument factory.
    directions : Directions or tensors
        As for ``compute_surface``; distances are in the same coefficients as its ``x``/``y``.
    rise : float
        The factor (> 1) over the centre's loss that marks the edge of the range.
    loss_fn : callable, optional
        ``(outputs, targets) -> mean loss``; cross-entropy by default. The centre's loss must be
        positive for a factor to mean anything.
    max_distance : float
        The farthest coefficient tried on each side (the range where the loss never rises enough).
    tol : float
        Relative accuracy of each crossing: bisection stops when the bracket is narrower than
        ``tol × distance``; the crossing is then the linear interpolation inside it.
    num : int
        Points per axis in the ``(start, stop, num)`` tuples ``x``/``y``/``axis()`` return.
    max_samples, batch_size : int, optional
        As for ``compute_surface``: a seeded subset of the data (cheaper), and the batch size.

    Returns
    -------
    AutoRange

    Raises
    ------
    LandscapeError
        For ``rise ≤ 1``, a non-positive distance or tolerance, or a centre loss that is not
        positive and finite.

    References
    ----------
    Li et al., NeurIPS 2018 (the plots whose range this chooses).
    """
    from .directions import as_directions
    from .evaluate import EvalSettings, Evaluator

    rise = _positive("rise", rise)
    if rise <= 1:
        raise LandscapeError(f"rise={rise!r}; expected a factor > 1 over the centre's loss (e.g. 5)")
    max_distance, tol = _positive("max_distance", max_distance), _positive("tol", tol)
    if isinstance(num, bool) or not isinstance(num, (int, np.integer)) or num < 2:
        raise LandscapeError(f"num={num!r}; expected an integer ≥ 2 points per axis")
    if tol >= 1:
        raise LandscapeError(f"tol={tol!r}; expected a relative tolerance below 1, e.g. 0.01")
    d = as_directions(model, directions)
    settings = EvalSettings(max_samples=max_samples, batch_size=batch_size)
    ev = Evaluator(model, data, d.vectors, d.layout, loss_fn=loss_fn, metrics=None, settings=settings)
    n = d.n
    n_points = 0
    signs = np.tile([-1.0, 1.0], n)

    def losses(which: np.ndarray, dist: np.ndarray) -> np.ndarray:
        """The loss of each (direction, sign) pair in ``which`` (pair j: direction j // 2, sign
        − for even j) at its unsigned distance in ``dist``; one evaluator call."""
        nonlocal n_points
        pairs = np.flatnonzero(which)
        coords = np.zeros((len(pairs), n))
        coords[np.arange(len(pairs)), pairs // 2] = signs[pairs] * dist[pairs]
        n_points += len(pairs)
        return ev.evaluate(coords)[:, 0]

    with ev.session():
        centre = float(ev.evaluate(np.zeros((1, n)))[0, 0])
        n_points += 1
        if not (math.isfinite(centre) and centre > 0):
            raise LandscapeError(f"the loss at the centre is {centre!r}; expected a positive finite loss for a "
                                 "factor over it to define a range: use another loss_fn or set x=/y= by hand")
        target = rise * centre
        lo, f_lo = np.zeros(2 * n), np.full(2 * n, centre)  # last distance below the target, and its loss
        hi, f_hi = np.full(2 * n, np.nan), np.full(2 * n, np.nan)
        step = max_distance / 256
        while True:  # bracketing: double until the target is passed, all pairs at once
            open_ = np.isnan(hi) & (lo < max_distance)
            if not open_.any():
                break
            t = np.minimum(np.where(lo > 0, 2 * lo, step), max_distance)
            f = np.full(2 * n, np.nan)
            f[open_] = losses(open_, t)
            up = open_ & ~(f < target)  # NaN / inf (diverged) counts as passed
            hi[up], f_hi[up] = t[up], f[up]
            below = open_ & (f < target)
            lo[below], f_lo[below] = t[below], f[below]
        while True:  # bisection of the brackets still wider than tol
            open_ = ~np.isnan(hi) & (hi - lo > tol * hi)
            if not open_.any():
                break
            mid = (lo + hi) / 2
            f = np.full(2 * n, np.nan)
            f[open_] = losses(open_, mid)
            up = open_ & ~(f < target)
            hi[up], f_hi[up] = mid[up], f[up]
            down = open_ & (f < target)
            lo[down], f_lo[down] = mid[down], f[down]
    reached = ~np.isnan(hi)
    finite = reached & np.isfinite(f_hi) & (f_hi > f_lo)
    frac = np.where(finite, (target - f_lo) / np.where(finite, f_hi - f_lo, 1.0), 0.0)
    cross = np.where(finite, lo + np.clip(frac, 0, 1) * (hi - lo), np.where(reached, hi, max_distance))
    ranges = tuple((-float(cross[2 * k]), float(cross[2 * k + 1])) for k in range(n))
    flags = tuple((bool(reached[2 * k]), bool(reached[2 * k + 1])) for k in range(n))
    return AutoRange(ranges, flags, centre, target, rise, int(num), n_points)


__all__ = ["AutoRange", "auto_range"]
