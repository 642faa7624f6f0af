"""How far to look: per direction, the distance at which the loss has risen by a factor.

A plot range chosen by hand is either all basin or all wall. ``auto_range`` walks out from
the centre along each direction and each sign until the loss reaches ``rise × loss(centre)``,
then narrows the crossing down to ``tol`` (relative). All directions and signs advance
together, so each round is one call of the surface evaluator on at most ``2 × n_directions``
points.

**Search** (`Crossing`): steps start at ``max_distance / 64`` and double; once two steps
have raised the loss, the next one goes where the log-loss line through them reaches the
target (5 % beyond, at most 8× the last distance): away from a minimum, cross-entropy grows roughly
exponentially along a direction. Inside the bracket each point is the log-linear estimate of the
crossing, pushed by ``0.45 × tol`` towards the side that has not moved last, so that the next
point usually lands across the crossing and closes the bracket; after two rounds in a row that
shrink it by less than half the search bisects to the end, so it never takes many more points
than doubling and bisection would.

**Cost** (measured on the zoo's mlp, cnn, resnet20, resnet20-noskip and vit digits models,
three seeds each, the loss at 120 distances per side replayed offline): with ``rise=5``,
``tol=0.05`` 4.9 points per direction and sign (plain doubling and bisection: 9.0), at most 7
rounds (11); with ``tol=0.01`` 5.5 (11.4). A plane costs about 21 points: the price of a
5 × 5 grid.
"""
from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
from torch import nn

from .errors import LandscapeError, positive_number, warn_user
from .grid import range_through


@dataclass(frozen=True)
class AutoRange:
    """Per direction, the coordinates where the loss reaches ``target`` on each side.

    ``ranges[k] = (lo, hi)``: ``lo < 0 < hi`` are the first crossings found on the negative and
    positive side of direction k (``±max_distance`` where the loss stays below the target:
    see ``reached``; where the loss turns NaN before reaching it, the last finite point found
    before the NaN: see ``undefined``). ``x``/``y`` are ready for
    ``compute_surface(..., x=r.x, y=r.y)``.
    """

    ranges: tuple[tuple[float, float], ...]
    reached: tuple[tuple[bool, bool], ...]
    centre_loss: float
    target: float
    rise: float
    num: int
    n_points: int
    #: per direction and side: the loss is NaN just beyond the range there (not a number, so neither
    #: reached nor below the target: the model is undefined past it), e.g. a sqrt of a negative
    undefined: tuple[tuple[bool, bool], ...] = ()
    #: wall seconds per point of the search's evaluations after the centre's (the evaluator's setup and
    #: batch-size tuning, paid once, left out): what a point of a surface on the range costs, about
    seconds_per_point: float = math.nan

    def axis(self, k: int, num: int | None = None, *, symmetric: bool = False) -> tuple[float, float, int]:
        """``(start, stop, num)`` for direction ``k``, covering ``ranges[k]`` (``symmetric``: ±the larger of its
        two sides, before the move), moved by `landscape_nb.grid.range_through` so that the model at 0 is one
        of the ``num`` points (from 3 points on; an even ``num`` then makes a symmetric range lopsided by a
        step): a range of crossings is rarely symmetric, and the surface then never showed the centre's own
        loss (``Surface.sharpness`` refused it). The ends are short decimals, at most about two steps further
        out (the points are shared between the sides in whole steps). Grids before this move (stores of
        ``r.x``/``r.y`` written before 2026-12) are other grids: resume them with their stored ranges."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= k < len(self.ranges):
            raise LandscapeError(f"k={k!r}; expected a direction index from 0 to {len(self.ranges) - 1} (auto_range "
                                 f"was run on {len(self.ranges)} direction(s))")
        if num is not None and (isinstance(num, bool) or not isinstance(num, (int, np.integer)) or num < 2):
            raise LandscapeError(f"num={num!r}; expected an integer ≥ 2 points per axis, or None for {self.num}")
        lo, hi = self.ranges[k]
        if symmetric:
            r = max(-lo, hi)
            lo, hi = -r, r
        num = int(num or self.num)
        return (*range_through(lo, hi, num), num)  # the model at 0 a grid point (trial X: sharpness refused)

    @property
    def x(self) -> tuple[float, float, int]:
        return self.axis(0)

    @property
    def y(self) -> tuple[float, float, int]:
        if len(self.ranges) < 2:
            raise LandscapeError("auto_range was run on one direction; expected two for a y range")
        return self.axis(1)


class Crossing:
    """The search along one direction and sign for the first distance where the loss reaches ``target``.

    ``propose()`` gives the next distance to evaluate (None when done), ``observe(t, loss)``
    takes its loss; ``crossing()`` is the answer: linear in log-loss inside the final bracket
    ``[lo, hi]`` (``hi − lo ≤ tol × hi``, loss(lo) < target ≤ loss(hi); inf counts as
    reached), or ``max_distance`` when the loss stays below the target that far (``reached``
    False). A NaN loss bounds the bracket as a loss above the target does, but it is no
    crossing: the search narrows to where the loss stops being a number and ``crossing()`` is
    the last finite point before it (``reached`` False, ``undefined`` True). "First" is up to
    the steps: a bump that rises past the target between two bracketing steps and falls back
    is stepped over (steps start at ``max_distance / 64`` and may jump 8×). See the module's
    docstring for the method and what it costs.
    """

    FIRST = 1 / 64  # the first step, as a fraction of max_distance
    MAX_JUMP = 8.0  # a bracketing step goes at most this factor beyond the last distance
    MAX_POINTS = 200  # a search ends here whatever its bracket (only a tol near float precision gets there)
    OVERSHOOT = 1.05  # a bracketing jump aims this far beyond the predicted crossing
    PUSH = 0.45  # × tol: how far past the estimate a refining point goes

    def __init__(self, centre: float, target: float, max_distance: float, tol: float):
        self.target, self.max_distance, self.tol = target, max_distance, tol
        self.lo, self.f_lo = 0.0, centre  # the farthest point known below the target
        self.prev: tuple[float, float] | None = None  # the point below before lo (bracketing)
        self.hi: float | None = None  # the nearest point known at or above it, once bracketed
        self.f_hi = math.nan
        self.moved = 0  # refining: +1 lo moved last, −1 hi did
        self.slow = 0  # refining rounds in a row that shrank the bracket by less than half; 2: bisect from now on
        self.n_proposed = 0

    @property
    def reached(self) -> bool:
        return self.hi is not None and not math.isnan(self.f_hi)

    @property
    def undefined(self) -> bool:
        """The bracket's far end is a NaN loss: the loss stops being a number before reaching the target."""
        return self.hi is not None and math.isnan(self.f_hi)

    def propose(self) -> float | None:
        t = None if self.n_proposed >= self.MAX_POINTS else self._next()
        self.n_proposed += t is not None
        return t

    def _next(self) -> float | None:
        if self.hi is None:
            if self.lo >= self.max_distance:
                return None
            if self.lo == 0:
                return self.max_distance * self.FIRST
            step = 2 * self.lo
            if self.prev is not None and self.f_lo > self.prev[1] > 0:  # log-loss rising: aim at the target
                slope = (math.log(self.f_lo) - math.log(self.prev[1])) / (self.lo - self.prev[0])
                if slope > 0 and math.isfinite(slope):  # 0 when two nearby floats share a log
                    aim = self.OVERSHOOT * (self.lo + (math.log(self.target) - math.log(self.f_lo)) / slope)
                    step = min(max(aim, 1.25 * self.lo), self.MAX_JUMP * self.lo)
            return min(step, self.max_distance)
        lo, hi = self.lo, self.hi
        if hi - lo <= self.tol * hi:
            return None
        est = self._interpolate() if self.slow < 2 else None
        if est is None:  # no usable estimate, or too little progress: bisect
            return (lo + hi) / 2
        est += self.moved * self.PUSH * self.tol * est  # across the crossing from the side that moved last
        return min(max(est, lo + 0.01 * (hi - lo)), hi - 0.01 * (hi - lo))

    def observe(self, t: float, loss: float) -> None:
        width = None if self.hi is None else self.hi - self.lo
        if loss < self.target:  # NaN (undefined) and inf (diverged) bound the bracket as a loss above it
            if self.hi is None:
                self.prev = (self.lo, self.f_lo) if self.lo > 0 else None
            self.lo, self.f_lo, self.moved = t, loss, 1
        else:
            self.hi, self.f_hi, self.moved = t, loss, -1 if self.hi is not None else 0  # bracketed: no side yet
        if width is not None and self.slow < 2:
            self.slow = self.slow + 1 if self.hi - self.lo > width / 2 else 0

    def _interpolate(self) -> float | None:
        """Where the line through (lo, log loss(lo)) and (hi, log loss(hi)) reaches log target."""
        f_lo, f_hi = self.f_lo, self.f_hi
        if not (f_lo > 0 and math.isfinite(f_hi) and f_hi > f_lo):
            return None
        frac = (math.log(self.target) - math.log(f_lo)) / (math.log(f_hi) - math.log(f_lo))
        return self.lo + min(max(frac, 0.0), 1.0) * (self.hi - self.lo)

    def crossing(self) -> float:
        if self.hi is None:
            return self.max_distance
        if self.undefined:  # never a NaN point as an end of the range
            return self.lo
        est = self._interpolate()
        return self.hi if est is None else est


def _positive(name: str, value) -> float:
    positive_number(name, value)
    return float(value)


def auto_range(model: nn.Module, data, directions, rise: float = 5.0, loss_fn: Callable | None = None, *,
               max_distance: float = 10.0, tol: float = 0.01, num: int = 51, max_samples: int | None = None,
               batch_size: int | None = None, target_key: str | int | None = "labels",
               cancel: threading.Event | None = None) -> AutoRange:
    """Per direction and sign, the first distance found at which the loss reaches ``rise × loss(centre)``.

    "First" is among the distances evaluated (``Crossing``): they start at ``max_distance / 64``
    and grow by up to 8× a step where the log-loss rises slowly, so a wall the loss rises past
    the target in and falls back from between two of them is stepped over (a bump of width 0.5
    at distance 1.5, with the steps at 0.31 and 2.5, gave a range of ±8.9). The surface over the
    range shows such a wall (a line, ``compute_surface`` with ``x=(0, hi, n)``, finds where it starts).

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
        Relative accuracy of each crossing: the search stops when the bracket around it is
        narrower than ``tol ×`` its far end; the crossing is then the log-linear interpolation
        inside it.
    num : int
        Points per axis in the ``(start, stop, num)`` tuples ``x``/``y``/``axis()`` return.
    max_samples, batch_size : int, optional
        As for ``compute_surface``: a seeded subset of the data (cheaper), and the batch size.
    target_key : str or int, optional
        Where the targets are in dict batches (default ``"labels"``) or tuples of more than two tensors
        (default the last), as ``compute_surface``'s (``data.read_data``).
    cancel : threading.Event, optional
        Set from another thread to stop the search before its next round of points.

    Returns
    -------
    AutoRange

    Raises
    ------
    LandscapeError
        For ``rise ≤ 1``, a non-positive distance or tolerance, or a centre loss that is not
        positive and finite; a non-finite weight the directions cover, or an all-zero direction; for
        what ``compute_surface`` refuses of the model, data and loss; and
        for an exception the model or ``loss_fn`` raises at a point, named in one line and chained as
        ``__cause__`` (the model's weights are restored).
    Cancelled
        When ``cancel`` was set (``landscape_nb.evaluate.Cancelled``; the model is restored).

    Warns
    -----
    UserWarning
        Where ``directions`` were made around another model's weights (normalized to its filters, its
        path or Hessian), as ``compute_surface`` warns of the surface over this range.

    References
    ----------
    Li et al., NeurIPS 2018 (the plots whose range this chooses).
    """
    from .compute import warn_if_made_around_another_model
    from .directions import as_directions
    from .evaluate import Cancelled, EvalSettings, Evaluator
    from .params import check_finite
    from .statecheck import naming_user_errors

    positive_number("rise", rise, fix="a factor > 1 over the centre's loss, e.g. rise=5")
    rise = float(rise)
    if rise <= 1:
        raise LandscapeError(f"rise={rise!r}; expected a factor > 1 over the centre's loss (e.g. 5)")
    max_distance, tol = _positive("max_distance", max_distance), _positive("tol", tol)
    if isinstance(num, bool) or not isinstance(num, (int, np.integer)) or num < 2:
        raise LandscapeError(f"num={num!r}; expected an integer ≥ 2 points per axis")
    if tol >= 1:
        raise LandscapeError(f"tol={tol!r}; expected a relative tolerance below 1, e.g. 0.01")
    d = as_directions(model, directions)
    # refused first: a NaN weight also made the weights "another model's" to the warning (trial s59)
    check_finite(d.layout, d.layout.tensors(model), ", so every point the search evaluates holds it too")
    warn_if_made_around_another_model(model, d, "landscape_nb.auto_range")  # the range of a surface that warns
    zero = [k for k in range(d.n) if not bool(d.vectors[k].any())]
    if zero:  # the loss never moves along it: "not reached" at ±max_distance would read as a flat basin
        raise LandscapeError(f"direction {zero[0]} of {d.n} is all zeros, so the loss is the centre's at every "
                             "distance along it and no range can be found; expected non-zero directions (e.g. "
                             "lnb.random_directions)")
    settings = EvalSettings(max_samples=max_samples, batch_size=batch_size, target_key=target_key)
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
        at.update(reach=float(np.max(dist[pairs])), before=n_points)
        n_points += len(pairs)
        t0 = time.perf_counter()
        values = ev.evaluate(coords)[:, 0]
        timed[0], timed[1] = timed[0] + time.perf_counter() - t0, timed[1] + len(pairs)
        return values

    timed = [0.0, 0]  # seconds and points of the evaluations after the centre's

    at = {"reach": 0.0, "before": 0}  # the points being evaluated, for an error's message
    where = (lambda: f"while auto_range evaluated points at distances up to {at['reach']:.4g}, after "
                     f"{at['before']} points" if at["reach"] else "while auto_range evaluated the centre")

    with ev.session(), naming_user_errors(model, loss_fn, where, "auto_range keeps nothing; the model's weights "
                                                                  "are restored"):
        centre = float(ev.evaluate(np.zeros((1, n)))[0, 0])
        n_points += 1
        if not (math.isfinite(centre) and centre > 0):
            raise LandscapeError(f"the loss at the centre is {centre + 0.0!r}; expected a positive finite loss for a "
                                 "factor over it to define a range: use another loss_fn or set x=/y= by hand")
        target = rise * centre
        searches = [Crossing(centre, target, max_distance, tol) for _ in range(2 * n)]
        moved = False  # whether any point's loss differs from the centre's
        while True:  # one round: every pair still searching proposes one distance
            if cancel is not None and cancel.is_set():
                raise Cancelled()
            dist = np.array([math.nan if t is None else t for t in (c.propose() for c in searches)])  # NaN: done
            open_ = ~np.isnan(dist)
            if not open_.any():
                break
            for j, f in zip(np.flatnonzero(open_), losses(open_, dist)):
                searches[j].observe(float(dist[j]), float(f))
                moved = moved or abs(float(f) - centre) > 1e-6 * abs(centre)  # float32's rounding far out (2.4e-7
                # at ±10) is no landscape (re-trial s57)
    ranges = tuple((-searches[2 * k].crossing(), searches[2 * k + 1].crossing()) for k in range(n))
    flags = tuple((searches[2 * k].reached, searches[2 * k + 1].reached) for k in range(n))
    if not moved:  # ±max_distance "not reached" read as a basin wider than any range (re-trial s57)
        from .compute import CHECK_UNREAD, UNREAD_WEIGHTS

        warn_user(f"landscape_nb.auto_range: the loss is {centre:.6g} at every point evaluated, out to ±{max_distance:g} "
                  f"along every direction, to 1e-6 of it: {UNREAD_WEIGHTS}, so no range shows a landscape; "
                  f"{CHECK_UNREAD}")
    nan = tuple((searches[2 * k].undefined, searches[2 * k + 1].undefined) for k in range(n))
    if any(any(sides) for sides in nan):
        warn_user(
            f"landscape_nb.auto_range: the loss is NaN beyond {_nan_sides(ranges, nan)} before reaching "
            f"{rise:g}× the centre's; the range ends at the last finite point found there (undefined=True, "
            "reached=False). The model is not a number past it: check for a sqrt or log of a negative, or a division "
            "by zero, in the model or loss_fn")
    return AutoRange(ranges, flags, centre, target, rise, int(num), n_points, nan,
                     timed[0] / timed[1] if timed[1] else math.nan)


def _nan_sides(ranges, nan) -> str:
    """E.g. ``"direction 0 at +2.31, direction 1 at -0.7"``: the sides where the loss turned NaN."""
    return ", ".join(f"direction {k} at {ranges[k][side]:+.4g}" for k, sides in enumerate(nan)
                     for side in (0, 1) if sides[side])


__all__ = ["AutoRange", "Crossing", "auto_range"]
