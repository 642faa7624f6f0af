"""Numbers read off a computed surface (numpy only): sharpness at the centre, loss barriers.

Along each axis, the 1D slice through the origin gives
* ``increase``: the largest rise ``L(t) − L(0)`` over ``|t| ≤ r`` (the grid points within r and
  ``L(±r)`` interpolated linearly between grid points), a Keskar-style sharpness at radius ``r``;
* ``curvature``: the second derivative ``L''(0)``, from the centre and its two neighbours on the
  grid (the second difference, within O(h²) for grid spacing h; for Hessian eigen-directions of
  unit norm it estimates the eigenvalue). It does not depend on ``r``.

Both are in the units of the axis: raw directions and filter-normalized ones give
different numbers for the same minimum (Dinh et al. 2017); compare like with like.

``loss_barrier`` reads the barrier of a 1D path profile (see ``landscape_nb.paths``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import LandscapeError, warn_user


@dataclass(frozen=True)
class AxisSharpness:
    axis: str
    label: str
    radius: float
    centre_loss: float
    increase: float
    curvature: float
    #: the grid spacing h of ``curvature``'s second difference (half the span of its three points): L''(0) read at
    #: 21 and 41 points (0.360, 0.409) was labelled as one exact value (trial s46); figures now name it
    spacing: float = math.nan
    #: whether the centre is the grid's end, so ``curvature`` is the one-sided second difference (trial s47)
    one_sided: bool = False


def _slice(surface, axis: str) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(surface.x, float)
    if surface.ndim == 1:
        return x, np.asarray(surface.loss, float)
    y = np.asarray(surface.y, float)
    loss = np.asarray(surface.loss, float)
    if axis == "x":
        j = _origin_index(y, "y")
        return x, loss[j, :]
    i = _origin_index(x, "x")
    return y, loss[:, i]


def _origin_index(t: np.ndarray, name: str) -> int:
    k = int(np.argmin(np.abs(t)))
    if abs(t[k]) > 1e-9 * (t.max() - t.min()):
        raise LandscapeError(
            f"the {name} axis runs {t.min():.3g}..{t.max():.3g} and has no point at 0; sharpness is taken at the "
            "centre of the surface: use a range symmetric around 0 with an odd number of points, e.g. (-1, 1, 51)"
        )
    return k


def axis_sharpness(surface, axis: str = "x", radius: float | None = None) -> AxisSharpness:
    """Sharpness along one axis (``"x"`` or ``"y"``) through the surface's centre."""
    t, loss = _slice(surface, axis)
    k0 = _origin_index(t, axis)
    try:
        r = float(radius) if radius is not None else 0.5 * min(abs(t.min()), abs(t.max()))
    except (TypeError, ValueError):
        r = math.nan
    if isinstance(radius, bool):  # sharpness(surf, True): 1.0 by accident
        r = math.nan
    if radius is None and r == 0:  # "radius=None; expected a positive distance" blamed an argument not given
        raise LandscapeError(
            f"the {axis} axis runs {t.min():.3g}..{t.max():.3g}: the centre is at its end, so the default radius (half "
            f"the shorter side) is 0; pass radius= up to {max(-float(t.min()), float(t.max())):.3g} (the one side's "
            "rise, and a one-sided curvature), or compute a range on both sides of 0")
    if not r > 0:
        raise LandscapeError(f"radius={radius!r}; expected a positive distance from the centre within the grid")
    reach = max(-float(t.min()), float(t.max()))
    if not r <= reach + 1e-12:  # neither −r nor +r on the grid: the rise would be NaN
        raise LandscapeError(
            f"radius={radius!r}; expected a positive distance from the centre within the grid: the {axis} axis runs "
            f"{t.min():.3g}..{t.max():.3g}, so at most {reach:.3g} (pass a smaller radius, or compute a wider range)")
    l0 = float(loss[k0])
    tol = 1e-12 * max(1.0, reach)
    within = np.abs(t) <= r + tol
    used = within.copy()  # and the first point beyond ±r where ±r falls between two: interpolated from it
    sides = [side for side in (-r, r) if t.min() - tol <= side <= t.max() + tol]
    for side in sides:
        beyond = np.flatnonzero(np.sign(side) * t > r + tol)
        if beyond.size and not np.any(np.abs(t - side) <= tol):
            used[beyond[np.argmin(np.abs(t[beyond]))]] = True
    if not np.isfinite(loss[used]).all():
        return _not_finite(surface, axis, t, loss, used, r, l0)
    order = np.argsort(t)
    at_r = [float(np.interp(side, t[order], loss[order])) for side in sides]
    increase = max([*loss[within].tolist(), *at_r]) - l0  # the largest rise within r, a peak inside it included
    _warn_if_interpolation_decides(axis, t[order], loss[order], sides, at_r, increase + l0, l0, tol)
    curv = _centre_curvature(t, loss, k0)
    one_sided = len(t) >= 3 and k0 in (int(np.argmin(t)), int(np.argmax(t)))
    if one_sided and math.isfinite(curv):  # unwarned, and labelled as centred (trial s47)
        h = _centre_spacing(t, k0)
        warn_user(f"landscape_nb: sharpness along {axis}: the centre is the grid's end ({axis} runs "
                  f"{t.min():.3g}..{t.max():.3g}), so L''(0) = {curv:.4g} is one-sided, the curvature of the parabola "
                  f"through L(0) and the next two points (spacing {h:.3g}; within O(h) of L''(0), not O(h²), and at a "
                  "sharp minimum it may even be negative); compute a range on both sides of 0 for the centred one")
    rounding = surface_precision(surface) in ("bf16", "fp16") and math.isfinite(curv)
    if rounding:
        warn_user(f"landscape_nb: sharpness along {axis}: the surface was computed in "
                  f"{surface_precision(surface)}, about 1e-2 relative per point, and L''(0) is a second difference "
                  "of three of them: it may be far off; compute the surface in fp32 for the curvature")
    else:
        rounding = _warn_if_rounding_dominates(surface, axis, t, k0, l0, curv)
    if not one_sided and not rounding:  # rounding read as spacing: "a finer grid" against "a coarser" (review s60)
        _warn_if_spacing_decides(axis, t, loss, k0, curv)
    label = surface.x_label if axis == "x" else surface.y_label
    return AxisSharpness(axis, label, r, l0, float(increase), curv, _centre_spacing(t, k0), one_sided)


def _warn_if_spacing_decides(axis: str, t: np.ndarray, loss: np.ndarray, k0: int, curv: float) -> None:
    """Warn where the grid's spacing may move ``L''(0)`` by more than 5 %: the centred second difference at
    spacing h reads L''(0) + h² L⁗(0) / 12 + ..., the one over the points 2h away (the next but one on each side,
    where the grid is even there) four times that term, so a third of their difference is about the spacing's
    error. An 11-point grid over -1..1 read 9.74 for an L''(0) of 13.04 (autograd), with no word (trial s60)."""
    order = np.argsort(t)
    j = int(np.flatnonzero(order == k0)[0])
    if not math.isfinite(curv) or j < 2 or j > len(t) - 3:
        return
    apart = order[[j - 2, j, j + 2]]
    h = _centre_spacing(t, k0)
    if not np.isfinite(loss[apart]).all() or not np.allclose(np.diff(t[apart].astype(float)), 2 * h, rtol=1e-6):
        return
    wide = _parabola_curvature(t[apart], loss[apart])
    error = abs(curv - wide) / 3
    if error > 0.05 * abs(curv):
        warn_user(f"landscape_nb: sharpness along {axis}: L''(0) = {curv:.4g} is the second difference at the grid's "
                  f"spacing {h:.3g}, and the one at twice it reads {wide:.4g}: the spacing may move it by about "
                  f"{error:.2g} ({f'{error / abs(curv):.0%}; ' if curv else ''}{curv + (curv - wide) / 3:.4g} "
                  f"extrapolated); compute a finer grid near the centre, e.g. {axis}=(-{h / 2:.2g}, {h / 2:.2g}, 5), "
                  "for the curvature")


def _warn_if_interpolation_decides(axis: str, t, loss, sides, at_r, top: float, l0: float, tol: float) -> None:
    """Warn where the rise is read at ±r between two grid points (``t``, ``loss`` sorted by ``t``; ``at_r`` the
    interpolated values at ``sides``) and linear interpolation may move it by more than 5 %: the chord between
    the points a < r < b misses the loss by about (r − a)(b − r)·|L''|/2, L'' the second difference of the three
    points nearest ±r. An 11-point grid read the rise at r = 0.5 39 % above its true value, with no word (trial
    s59); a fine grid (51 points over −1..1) stays quiet."""
    for side, value in zip(sides, at_r):
        if value < top or np.any(np.abs(t - side) <= tol) or len(t) < 3:
            continue
        b = int(np.searchsorted(t, side))  # t[b - 1] < side < t[b]
        k = min(max(b - 1, 1), len(t) - 2)  # the middle of the three points nearest ±r
        error = 0.5 * (side - t[b - 1]) * (t[b] - side) * abs(_parabola_curvature(t[k - 1:k + 2], loss[k - 1:k + 2]))
        if np.isfinite(error) and error > 0.05 * abs(top - l0):
            radii = sorted({float(abs(v)) for v in (t[b - 1], t[b]) if v != 0})  # 0 is no radius (review s59)
            warn_user(f"landscape_nb: sharpness along {axis}: the rise is read at {axis} = {side:.3g}, between the "
                      f"grid points {t[b - 1]:.3g} and {t[b]:.3g}, where the loss is interpolated linearly (the chord "
                      f"misses a curved slice by about {error:.3g}, against a rise of {top - l0:.4g}); pass a radius on "
                      f"the grid, e.g. {' or '.join(f'{v:.3g}' for v in radii)}, or compute a finer grid")
            return


def _not_finite(surface, axis: str, t, loss, used, r: float, l0: float) -> AxisSharpness:
    """A slice whose loss is NaN or inf within r (the model diverged there): the rise is inf where the loss is
    +inf and nothing is NaN, else NaN (the curvature NaN too where the centre's three points are not finite);
    said in a warning, as read off finite points only the numbers looked ordinary (a NaN at −r gave the +r
    side's rise)."""
    bad = used & ~np.isfinite(loss)
    nan = bool(np.isnan(loss[bad]).any() or np.isneginf(loss[bad]).any())
    increase = float("nan") if nan or not math.isfinite(l0) else float("inf")
    shown = ", ".join(f"{v:.3g}" for v in t[bad][:4]) + (" ..." if bad.sum() > 4 else "")
    what = "NaN" if nan and not np.isinf(loss[bad]).any() else ("inf" if not nan else "NaN or inf")
    curv = _centre_curvature(t, loss, int(np.argmin(np.abs(t))))
    why = ("the model diverged there" if getattr(surface, "is_complete", True) else
           "not computed there (a partial surface: finish it), or diverged")
    warn_user(f"landscape_nb: sharpness along {axis}: the loss is {what} at {int(bad.sum())} of the points within "
              f"r={r:.3g} of the centre ({axis} = {shown}; {why}), so the rise is "
              f"{increase}" + ("" if math.isfinite(curv) else " and the curvature NaN")
              + "; pass a smaller radius to read the rise where the loss is finite")
    label = surface.x_label if axis == "x" else surface.y_label
    return AxisSharpness(axis, label, r, l0, increase, curv, _centre_spacing(t, int(np.argmin(np.abs(t)))))


#: relative rounding of one loss value per precision (`surface_precision`): the unit roundoff of its products
ROUNDING = {"fp64": 2.0 ** -52, "fp32": 2.0 ** -23, "tf32": 2.0 ** -11}


def _warn_if_rounding_dominates(surface, axis: str, t: np.ndarray, k0: int, l0: float, curv: float) -> bool:
    """Warn where rounding alone can move the second difference by a tenth of it or more: each point off by
    about ``δ = 2u·max(|L(0)|, 0.01)`` (u the precision's roundoff, ``ROUNDING``; measured 0.35–3.4·u·L(0))
    moves it by up to ``4δ/h²``. A float32 surface at h = 5e-4 along unit Hessian eigenvectors read +0.0075
    for λ_min = -0.0018, at h = 5e-5 -0.37 for λ_max = +0.46, where L(0) = 0.014 (trial s34; a naive float32
    loop read the same). bf16/fp16 are warned about apart. Returns whether it warned."""
    u = ROUNDING.get(surface_precision(surface))
    if u is None or not math.isfinite(curv) or len(t) < 3:
        return False
    h = float(np.min(np.diff(t[_centre_points(t, k0)].astype(float))))
    delta = 2 * u * max(abs(l0), 1e-2)  # a loss near 0 (a fitted net's) still rounds its logits: a floor
    noise = 4 * delta / h ** 2
    if noise > 0.1 * abs(curv):
        coarser = f"a spacing ≥ {math.sqrt(40 * delta / abs(curv)):.2g}, " if curv else ""
        warn_user(f"landscape_nb: sharpness along {axis}: L''(0) = {curv:.3g} is a second difference over a spacing "
                  f"of {h:.3g}, and rounding each {surface_precision(surface)} loss value (about {u:.1g} relative) can "
                  f"move it by up to {noise:.2g}: it may be rounding more than curvature; use a coarser grid near the "
                  f"centre ({coarser}if the curvature is that small), or compute the surface in float64 "
                  "(copy.deepcopy(model).double())")
        return True
    return False


def _centre_points(t: np.ndarray, k0: int) -> np.ndarray:
    """The indices, in order of ``t``, of the three points `_centre_curvature` takes: the centre ``k0`` and its
    neighbours on the grid (at an end of the grid, the next two on its one side); ``len(t) >= 3``."""
    order = np.argsort(t)
    j = min(max(int(np.flatnonzero(order == k0)[0]), 1), len(t) - 2)
    return order[j - 1:j + 2]


def _centre_spacing(t: np.ndarray, k0: int) -> float:
    """The spacing h of the centre's second difference: half the span of its three points (NaN under 3 points)."""
    if len(t) < 3:
        return math.nan
    three = t[_centre_points(t, k0)].astype(float)
    return float(three.max() - three.min()) / 2


def _centre_curvature(t: np.ndarray, loss: np.ndarray, k0: int) -> float:
    """``L''(0)``: twice the second divided difference of the loss at the centre and its two neighbours on the
    grid, one on each side (at an end of the grid, the next two on its one side): the curvature of the parabola
    through the three points, exact for a quadratic and within O(h²) of L''(0) otherwise (O(h) from one side);
    NaN where one of the three losses is not finite. A quadratic fit over ``|t| ≤ r`` gave 1.2–2.8× the curvature
    at the centre on real slices (23.6 along a Hessian eigenvector of eigenvalue 8.46), and a maximum where a
    slice rose and fell again within r."""
    if len(t) < 3:
        return float("nan")
    three = _centre_points(t, k0)
    if not np.isfinite(loss[three].astype(float)).all():
        return float("nan")
    return _parabola_curvature(t[three], loss[three])


def _parabola_curvature(t: np.ndarray, loss: np.ndarray) -> float:
    """The second derivative of the parabola through three points (``t`` increasing): twice their second divided
    difference."""
    (t0, t1, t2), (l0, l1, l2) = np.asarray(t, dtype=float), np.asarray(loss, dtype=float)
    return float(2 * ((l2 - l1) / (t2 - t1) - (l1 - l0) / (t1 - t0)) / (t2 - t0))


def surface_precision(surface) -> str | None:
    """The precision a surface's points were computed in (``provenance["precision"]``), None if not recorded."""
    prov = getattr(surface, "provenance", None)
    return prov.get("precision") if isinstance(prov, dict) else None


def sharpness(surface, radius: float | None = None) -> dict[str, AxisSharpness]:
    """``{"x": AxisSharpness, "y": ...}`` for a 1D or 2D surface centred on a grid point at 0.

    >>> s = lnb.sharpness(surf, radius=0.5)       # or surf.sharpness(0.5)
    >>> s["x"].increase, s["x"].curvature

    Along each axis, the slice through the origin gives ``increase``, the largest rise
    ``L(t) − L(0)`` over ``|t| ≤ r``: the grid points within r, and ``L(±r)`` by linear
    interpolation between grid points (a Keskar-style sharpness, the maximum over the
    ball, a peak inside r included; not divided by 1 + L(0) as Keskar et al. do; on an
    asymmetric range that reaches r on one side only, up to r on that side, the whole
    range on the other), and
    ``curvature``, ``L''(0)`` at the centre: the curvature of the parabola through
    the centre and its two neighbours on the grid (where the centre is the grid's
    end, the next two points on its side: one-sided, within O(h), with a warning;
    the second difference; within
    O(h²) of the derivative for grid spacing h; for a unit Hessian eigen-direction it
    estimates the eigenvalue; independent of r; a quadratic fit over ``|t| ≤ r``, used
    before 2026-12-04, gave 1.2–2.8× it on real slices; on a ReLU or max-pool network a
    spacing much finer than the weights' scale samples the loss between its kinks: a
    small CNN read 11.85 at h = 0.02 for λ_max 11.85, and 9.2 at h = 0.002, as a
    float64 loop did). A surface computed in bf16
    or fp16 (about 1e-2 relative per point) is warned about: three such points give
    an unreliable second difference. Where the loss is NaN or inf within r (a model
    that diverged) the rise is NaN (inf where it is +inf and nowhere NaN), with a
    warning, not a number read off the finite points only.

    Parameters
    ----------
    surface : Surface
        A 1D or 2D surface (anything with ``ndim``, ``x``, ``loss`` and, for 2D,
        ``y``) whose axes have a grid point at 0, e.g. ``x=(-1, 1, 51)``.
    radius : float, optional
        Distance r from the centre, in the axis' units (direction coefficients),
        positive and on the grid on at least one side of each axis. Defaults to
        half the shorter side of each axis' range.

    Returns
    -------
    dict of str to AxisSharpness
        ``{"x": ...}`` for a line, ``{"x": ..., "y": ...}`` for a plane; each holds
        the radius, ``centre_loss`` L(0), ``increase`` (loss units) and
        ``curvature`` (loss units per axis unit squared).

    Raises
    ------
    LandscapeError
        An axis with no grid point at 0, or a radius that is not positive or lies
        beyond both ends of an axis (the message gives the largest that fits).

    Notes
    -----
    Both numbers are in the units of the axes: raw and filter-normalized
    directions give different numbers for the same minimum (Dinh et al. 2017), so
    compare surfaces computed with the same kind of directions.

    References
    ----------
    N. S. Keskar, D. Mudigere, J. Nocedal, M. Smelyanskiy and P. T. P. Tang, "On
    Large-Batch Training for Deep Learning: Generalization Gap and Sharp Minima",
    ICLR 2017. L. Dinh, R. Pascanu, S. Bengio and Y. Bengio, "Sharp Minima Can
    Generalize For Deep Nets", ICML 2017.
    """
    axes = ["x"] if surface.ndim == 1 else ["x", "y"]
    return {a: axis_sharpness(surface, a, radius) for a in axes}


def curvature_text(s: AxisSharpness, digits: int = 4) -> str:
    """``L''(0) ≈ 2.4 (h=0.1)``: the curvature as the second difference it is, with its grid spacing."""
    return f"L''(0) ≈ {s.curvature:.{digits}g} (h={s.spacing:.2g}{', one-sided' if s.one_sided else ''})"


def sharpness_text(surface, radius: float | None = None, sep: str = "<br>") -> str:
    """One line per axis, e.g. ``x: max ΔL(|t|≤0.5) = 0.31, L''(0) ≈ 2.4 (h=0.1)`` (for figure annotations)."""
    parts = []
    for a, s in sharpness(surface, radius).items():
        parts.append(f"{a}: max ΔL(|t|≤{s.radius:.3g}) = {s.increase:.4g}, {curvature_text(s)}")
    return sep.join(parts)


def _is_surface(values) -> bool:
    """Duck-typed: anything with a dimension, ``x`` and ``loss`` (a ``Surface``; no import of it here)."""
    return getattr(values, "ndim", None) in (1, 2) and hasattr(values, "x") and hasattr(values, "loss")


def _profile(values) -> tuple[np.ndarray, np.ndarray]:
    if _is_surface(values):
        if values.ndim != 1:
            raise LandscapeError(f"a {values.ndim}D surface; expected a 1D path profile (e.g. from "
                                 "interpolation_surface or bezier_curve(...).profile)")
        return np.asarray(values.x, float), np.asarray(values.loss, float)
    if _is_surface(getattr(values, "profile", None)):
        return _profile(values.profile)
    raise LandscapeError(f"a {type(values).__name__}; expected a 1D Surface over t (a path profile) or a BezierCurve")


#: direction schemes whose 1D surfaces are no path between two models (``loss_barrier`` refuses them)
NOT_PATHS = ("random", "random-orthogonal", "pca", "hessian")


def loss_barrier(path) -> float:
    """``max_t [L(t) − ((1 − t)·L(0) + t·L(1))]`` over the points with 0 ≤ t ≤ 1 (Frankle et al. 2020).

    ``path``: a 1D ``Surface`` over t whose grid contains t = 0 and t = 1 (e.g.
    ``interpolation_surface(a, b, data)`` or ``bezier_curve(...).profile``), or a
    ``BezierCurve``. Positive: the path rises above the chord between its ends by
    that much; 0: it never does (the maximum includes the ends, where the excess is 0).
    For models with BatchNorm a ``BezierCurve``'s profiles re-estimate the statistics at every t
    (``mode="bn-recompute"``), its straight line too: compare ``curve.barrier`` with
    ``curve.line_barrier``, not with the barrier of an eval-mode ``interpolation_surface``.

    >>> lnb.loss_barrier(lnb.interpolation_surface(a, b, data, x=(0, 1, 25)))

    Parameters
    ----------
    path : Surface or BezierCurve
        A 1D surface over t, shape (n_t,), whose grid contains t = 0 and t = 1, or
        an object with such a ``.profile`` (a ``BezierCurve``).

    Returns
    -------
    float
        The barrier, ≥ 0, in the units of the loss.

    Raises
    ------
    LandscapeError
        A 2D surface or another type, a 1D surface along directions that are no path (``NOT_PATHS``:
        random, PCA, Hessian), a t grid without both 0 and 1 or without a point between them, or
        missing or non-finite losses between t = 0 and 1 (each said as such).

    References
    ----------
    J. Frankle, G. K. Dziugaite, D. Roy and M. Carbin, "Linear Mode Connectivity and
    the Lottery Ticket Hypothesis", ICML 2020. T. Garipov et al., "Loss Surfaces,
    Mode Connectivity, and Fast Ensembling of DNNs", NeurIPS 2018.
    """
    t, loss = _profile(path)
    scheme = (getattr(getattr(path, "profile", path), "provenance", None) or {}).get("scheme")
    if scheme in NOT_PATHS:
        raise LandscapeError(
            f"a 1D surface along {scheme!r} directions: its t = 1 is the model moved by one direction, not a second "
            "model, so a barrier there means nothing; expected a path between two models "
            "(lnb.interpolation_surface(a, b, data), lnb.bezier_curve(a, b, data).profile)")
    ends = [np.flatnonzero(np.isclose(t, v, rtol=0.0, atol=1e-9)) for v in (0.0, 1.0)]
    if not len(ends[0]) or not len(ends[1]):
        raise LandscapeError(
            f"the path's t grid runs {t.min():.3g}..{t.max():.3g} with {len(t)} points and does not contain both "
            "t = 0 and t = 1; expected a grid through both ends, e.g. x=(0, 1, 25) or x=(-0.5, 1.5, 41)"
        )
    inside = (t >= -1e-9) & (t <= 1 + 1e-9)
    if inside.sum() <= 2:
        raise LandscapeError(
            f"the path's t grid ({len(t)} points, {t.min():.3g}..{t.max():.3g}) has no point strictly between t = 0 "
            "and t = 1, where a barrier would be (it would be 0 whatever the path); expected a grid with points "
            "inside, e.g. x=(0, 1, 25)")
    if not np.isfinite(loss[inside]).all():
        done = getattr(getattr(path, "profile", path), "done_mask", np.ones(len(t), bool))[inside]
        if not done.all():
            raise LandscapeError(f"the path profile is missing {int((~done).sum())} of its points between t = 0 and "
                                 "1 (a cancelled or unfinished run); finish (or recompute) the surface before taking "
                                 "its barrier")
        bad = ", ".join(f"{v:.3g}" for v in t[inside][~np.isfinite(loss[inside])][:6])
        raise LandscapeError(f"the loss along the path is NaN or infinite at t = {bad} (computed: the model diverges "
                             "there, or the loss is undefined), so a barrier over it would mean nothing; check the "
                             "models and loss_fn there, or take the barrier of a path whose losses are finite")
    l0, l1 = loss[ends[0][0]], loss[ends[1][0]]
    excess = loss[inside] - ((1 - t[inside]) * l0 + t[inside] * l1)
    surface = getattr(path, "profile", path)
    directions = (getattr(surface, "provenance", None) or {}).get("directions") or {}
    mode = ((getattr(surface, "spec", None) or {}).get("eval") or {}).get("mode")
    if directions.get("weights_only") and mode != "bn-recompute":  # trial s50: 0.0 for a line whose t = 1 lay 40
        a, b = (directions.get("models") or ["a", "b"])[:2]  # times above b's own loss, unsaid
        warn_user(f"landscape_nb: loss_barrier: the path kept {a}'s BatchNorm statistics (include_buffers=False), so "
                  f"its t = 1 (loss {l1:.4g}) is {b}'s weights with {a}'s statistics, not {b}, and the barrier is "
                  f"between {a} and that point; interpolation_surface(a, b, data) (include_buffers=True) ends at "
                  f"{b} itself")
    return float(max(excess.max(), 0.0))


__all__ = ["AxisSharpness", "axis_sharpness", "sharpness", "sharpness_text", "curvature_text", "loss_barrier"]
