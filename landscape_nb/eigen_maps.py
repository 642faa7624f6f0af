"""The non-convexity map of Li et al. 2018 (Fig. 6): Hessian eigenvalues over a grid.

An analysis built on ``compute_surface`` (``quantity="hessian"``): the per-point work is
``hessian.HessianEvaluator``, the tiles, runners and store are those of a loss surface.

(The module is not called ``eigen_map``: the package's lazy ``lnb.eigen_map`` names the
function, and importing a submodule of the same name would replace it by the module.)
"""
from __future__ import annotations

import numpy as np
from torch import nn

from .compute import compute_surface
from .errors import LandscapeError, check_choice, closest_name, warn_user
from .hessian import RATIOS, check_lanczos_options
from .surface import Surface


def eigen_map(model: nn.Module, data, directions, x=(-1.0, 1.0, 11), y=(-1.0, 1.0, 11), *, tol: float = 1e-3,
              max_iter: int | None = None, seed: int = 0, ratio: str = "negative", **compute_kwargs) -> Surface:
    """The non-convexity map: ``|λ_min / λ_max|`` (0 where ``λ_min ≥ 0``) of the loss Hessian at every grid point.

    >>> d = lnb.random_directions(model, n=2, seed=0)
    >>> m = lnb.eigen_map(model, (x, y), d, x=(-1, 1, 11), y=(-1, 1, 11), client="local")
    >>> m.metrics["eig_ratio"]      # also "lambda_max", "lambda_min", "n_hvp"; m.loss is the loss
    >>> lnb.plot.eigen_map(m)

    Blue (near 0) regions are locally near-convex; yellow ones have negative curvature
    comparable to the positive: the figure's colours span 0 to 0.5 on every map, as the reference's
    ``plot_2d_eig_ratio`` does, ratios of 0.5 or more all yellow (1 or more: as much negative curvature
    as positive, or more; the hover gives each point's value).

    Parameters
    ----------
    model : torch.nn.Module
        The network; its Hessian is taken in eval mode with respect to its trainable parameters.
    data : (inputs, targets), Dataset, DataLoader or zero-argument callable
        Evaluation data; the Hessian is that of the mean loss over it.
    directions : Directions or list of two state-dict-like mappings
        The plane's two axes, in weight units.
    x, y : (start, stop, num)
        Grid coefficients along each direction (dimensionless multiples of the directions).
    tol : float
        Relative accuracy: λ_max within ``tol·λ_max``, λ_min within ``tol·(λ_max − λ_min)``, so
        ``eig_ratio`` within about ``tol·(1 + eig_ratio)`` (for λ_min to ``tol`` of itself, at 1.4–5
        times the products, use ``hessian_eigenvalues`` at the points of interest).
    max_iter : int, optional
        Lanczos restarts allowed to each run (default ``max(100, 10 * ncv)``).
    seed : int
        Seed of the Lanczos start vectors.
    ratio : {"negative", "abs"}
        ``eig_ratio``'s definition (``hessian.eig_ratio``): ``"negative"`` (default) is
        ``|λ_min/λ_max|`` where ``λ_min < 0`` and 0 where ``λ_min ≥ 0`` (no negative curvature:
        locally convex); ``"abs"`` is ``|λ_min/λ_max|`` as written, which where the Hessian is
        positive definite is the inverse condition number, not negative curvature (a convex
        least-squares fit shows 0.76 everywhere). Part of the store's spec.
    **compute_kwargs
        Passed to ``compute_surface``: ``client``, ``store``, ``tile``, ``callbacks``, ``cancel``,
        ``max_samples``, ``loss_fn``, ...; a store resumes the same way as for a loss surface.

    Returns
    -------
    Surface
        ``loss`` (rows, cols) and metrics ``lambda_max``, ``lambda_min`` (1/weight² units of the
        loss), ``eig_ratio`` (dimensionless, see ``ratio``) and ``n_hvp`` (Hessian-vector
        products used per point). The three eigen-quantities are NaN at a point where Lanczos did
        not reach ``tol`` within ``max_iter`` (never the value it stopped at), ``eig_ratio`` also
        where ``λ_max`` is exactly 0; a ``UserWarning`` says how many, and
        ``provenance["lanczos_not_converged"]`` and ``["lambda_max_zero"]`` count them. The three are NaN
        where the loss is NaN or infinite too (a diverged point, stored as a loss surface stores it;
        ``n_hvp`` 0: no products run), and all four where a Hessian-vector product was NaN or infinite
        at a finite loss (no second derivative there, e.g. sqrt at 0, or an overflow; counted in
        ``provenance["nonfinite_curvature"]`` and warned about).

    Raises
    ------
    LandscapeError
        For the same invalid inputs as ``compute_surface``, e.g. not two directions for a plane; for a
        ``tol`` not in [0, 1), a ``max_iter`` that is not a positive integer, a ``seed`` that is not an
        integer ≥ 0, or a ``ratio`` other than "negative" or "abs"; for ``mode="bn-recompute"`` (the
        Hessian would hold the re-estimated BatchNorm statistics fixed: another function's eigenvalues than
        the loss's, which depends on the weights through them).

    Notes
    -----
    Cost per point: one loss pass plus two Lanczos runs of 20–40 Hessian-vector products each
    (≈ 9–14 forward passes per product), one run for both ends from 100k parameters on; see
    ``landscape_nb.hessian``. Use a coarse grid,
    ``max_samples`` and a Dask cluster.

    References
    ----------
    .. [1] H. Li, Z. Xu, G. Taylor, C. Studer, T. Goldstein, "Visualizing the Loss Landscape of
       Neural Nets", NeurIPS 2018, section 7 and Fig. 6.
    """
    _check_keywords(compute_kwargs)
    check_lanczos_options(tol, max_iter, seed)
    check_choice("ratio", ratio, RATIOS)
    options = {"tol": float(tol), "max_iter": max_iter, "seed": int(seed), "ratio": ratio}
    surf = compute_surface(model, data, directions, x=x, y=y, quantity="hessian", quantity_options=options,
                           metrics=None, **compute_kwargs)
    _say_where_undefined(surf, tol, max_iter)
    return surf


def _check_keywords(compute_kwargs: dict) -> None:
    """Refuse a keyword neither eigen_map nor compute_surface takes, with a did-you-mean over both (a plain
    ``TypeError`` named compute_surface for ``eigen_map(tolerance=...)``)."""
    import inspect

    ours = [n for n in inspect.signature(eigen_map).parameters if n not in ("compute_kwargs", "model", "data")]
    theirs = [n for n in inspect.signature(compute_surface).parameters
              if n not in ("model", "data", "directions", "x", "y", "quantity", "quantity_options", "metrics")]
    for key in compute_kwargs:
        if key not in theirs:
            close = closest_name(key, ours + theirs)
            raise LandscapeError(f"eigen_map got an unexpected keyword argument {key!r}; expected its own ("
                                 f"{', '.join(ours)}) or compute_surface's ({', '.join(theirs)})"
                                 + (f" (did you mean {close!r}?)" if close else ""))


def _say_where_undefined(surf: Surface, tol: float, max_iter: int | None) -> None:
    """Count (``provenance``) and warn about the computed points whose eigenvalues or ratio are NaN."""
    lmax = surf.metrics["lambda_max"]
    counted = surf.done_mask & np.isfinite(surf.loss)  # a diverged loss has no Hessian to speak of
    nonfinite = counted & np.isnan(surf.metrics["n_hvp"])  # a NaN/inf product (HessianEvaluator.point)
    not_converged = int((counted & ~nonfinite & np.isnan(lmax)).sum())
    flat = int((counted & (lmax == 0)).sum())
    surf.provenance["lanczos_not_converged"], surf.provenance["lambda_max_zero"] = not_converged, flat
    surf.provenance["nonfinite_curvature"] = int(nonfinite.sum())
    n = int(counted.sum())
    if nonfinite.any():
        warn_user(f"landscape_nb.eigen_map: a Hessian-vector product was NaN or infinite at a finite loss at "
                  f"{int(nonfinite.sum())} of {n} points (the loss has no second derivative there, e.g. sqrt or "
                  "abs at 0, or it overflows); their lambda_max, lambda_min, eig_ratio and n_hvp are NaN. "
                  "Evaluate in float64 (copy.deepcopy(model).double()) or smooth the loss there")
    if not_converged:
        limit = f"max_iter={max_iter} restarts" if max_iter else "the default limit of restarts"
        warn_user(f"landscape_nb.eigen_map: Lanczos did not reach tol={tol:g} within {limit} at "
                  f"{not_converged} of {n} points; their lambda_max, lambda_min and eig_ratio are NaN (not the "
                  "values it stopped at). Pass a larger max_iter or a looser tol")
    if flat:
        warn_user(f"landscape_nb.eigen_map: λ_max is exactly 0 at {flat} of {n} points (a loss piecewise linear "
                  "in the weights has a zero Hessian): eig_ratio = |λ_min/λ_max| is undefined there and NaN")


__all__ = ["eigen_map"]
