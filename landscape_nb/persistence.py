"""Topology of a computed loss surface: sublevel-set persistence, basins, merge tree, SMAD.

The loss sampled on a 2D (or 3D) grid is read as a function on the grid's vertices;
its sublevel sets ``{loss ≤ t}`` grow as ``t`` rises (grid points joined along the axes,
4-neighbours in 2D, 6 in 3D). Each local minimum starts a connected component (a basin)
at its loss; when two basins meet at a saddle, the younger one (the higher minimum) dies
there (the elder rule). Its *persistence* ``saddle − minimum`` is the depth of the basin
below the lowest pass out of it; shallow basins from noise have small persistence.

Persistence is computed by ``gudhi``'s cubical complexes (``CubicalComplex(vertices=...)``,
sublevel filtration; all homology dimensions are kept in ``diagrams``). The basins, their
minima and saddles and the merge tree (which basin merges into which, at what loss) come from
one union-find over the same filtration with one tie-break (loss, then grid index), so they
stay consistent where losses tie; their (birth, death) values are gudhi's 0-dimensional
pairs, which do not depend on ties. The SMAD score is after Landscaper
(Chen et al. 2026), defined precisely in :attr:`Topology.smad`.

Needs the ``topology`` extra (``pip install landscape_nb[topology]``: gudhi). The module is
not called ``topology``: importing a submodule of that name would replace the package's
public function ``landscape_nb.topology`` with the module.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from .errors import LandscapeError


@dataclass(frozen=True)
class Basin:
    """One basin of the sublevel filtration: a local minimum and where it merges away.

    ``index`` is the minimum's grid index (array axes order: ``loss[index]``), ``location``
    its coordinates in ``(x, y[, z])`` order; ``birth`` the loss there. ``death`` is the loss
    at the saddle where the basin merges into the older basin ``parent`` (an index into
    ``Topology.basins``); the deepest basin never dies (``death`` = inf, no saddle, no parent),
    nor does one walled off from every older basin by non-finite (NaN/inf) points (``topology``).
    """

    index: tuple[int, ...]
    location: tuple[float, ...]
    birth: float
    death: float
    saddle_index: tuple[int, ...] | None
    saddle_location: tuple[float, ...] | None
    parent: int | None

    @property
    def persistence(self) -> float:
        return self.death - self.birth

    @property
    def saddle_distance(self) -> float:
        """Euclidean distance from the minimum to its saddle, in coordinate units (NaN: none)."""
        if self.saddle_location is None:
            return math.nan
        return float(np.linalg.norm(np.subtract(self.location, self.saddle_location)))


@dataclass(frozen=True, eq=False)
class Topology:
    """Sublevel-set persistence of a loss grid and the basins above a persistence threshold.

    ``diagrams[d]`` is the (n, 2) array of (birth, death) losses of the d-dimensional classes
    (d = 0: basins; 1: loops; 2: voids in 3D), zero-length pairs left out, an infinite death for
    classes that never die at a finite loss (the deepest basin; basins, loops and voids walled
    off by non-finite points, see ``topology``). ``basins`` are the basins whose persistence exceeds ``threshold``,
    deepest first (increasing ``birth``; minima of equal loss longest-lived first, so ``basins[0]``
    never dies and every parent comes before the basins merging into it).
    """

    diagrams: tuple[np.ndarray, ...]
    basins: tuple[Basin, ...]
    threshold: float
    shape: tuple[int, ...]
    axes: tuple[np.ndarray, ...]  # coordinates along each array axis
    #: the surface's provenance where one was given (model, data, directions, grid, versions), else empty:
    #: ``plot.persistence`` keeps it in the figure (an exported diagram said nothing of what it was of)
    provenance: Mapping[str, Any] = field(default_factory=dict)

    @property
    def n_basins(self) -> int:
        """Basins deeper than ``threshold`` (the global one always counts)."""
        return len(self.basins)

    @property
    def merge_tree(self) -> tuple[tuple[int, int, float], ...]:
        """``(child, parent, level)``: basin ``child`` merges into the older ``parent`` at loss
        ``level`` (indices into ``basins``), in increasing ``level``."""
        edges = [(i, b.parent, b.death) for i, b in enumerate(self.basins) if b.parent is not None]
        return tuple(sorted(edges, key=lambda e: e[2]))

    @property
    def smad(self) -> float:
        """Saddle–minimum average distance (after Landscaper's SMAD, Chen et al. 2026).

        Here: the mean, over the basins that merge away (every basin in ``basins`` but the
        deepest, i.e. the finite 0-dimensional persistence pairs with persistence above
        ``threshold``), of the Euclidean distance in the surface's coordinates (direction
        coefficients, ``(x, y[, z])``) between the basin's minimum and the saddle vertex where
        it merges into an older basin. Small: shallow basins hugging their saddles (a rugged
        surface); large: wide basins. NaN when the surface has a single basin.

        Where several grid points tie at a basin's minimum or saddle loss (a flat plateau, e.g.
        a loss saturated at ``log C``) any of them is that vertex; gudhi's order picks one, so
        SMAD may move by up to the plateau's extent, while every minimum, saddle and
        persistence keeps its loss. Losses computed in floating point rarely tie exactly.
        """
        d = [b.saddle_distance for b in self.basins if b.saddle_location is not None]
        return float(np.mean(d)) if d else math.nan

    @property
    def mean_persistence(self) -> float:
        """Mean ``saddle − minimum`` loss over the basins that merge away (NaN: a single basin)."""
        p = [b.persistence for b in self.basins if b.parent is not None]
        return float(np.mean(p)) if p else math.nan


def _grid(surface_or_array) -> tuple[np.ndarray, tuple[np.ndarray, ...], float]:
    """The loss array, the coordinates along each of its axes, and the level standing in for
    non-finite values in the array (above every finite one; inf when there are none)."""
    if isinstance(surface_or_array, np.ndarray) or isinstance(surface_or_array, (list, tuple)):
        arr = np.asarray(surface_or_array, dtype=np.float64)
        axes = tuple(np.arange(n, dtype=np.float64) for n in arr.shape)
    elif hasattr(surface_or_array, "loss") and hasattr(surface_or_array, "x"):
        surf = surface_or_array
        if not surf.is_complete:
            fix = ("load the file again once the reference's run has filled it in (plot_surface.py --surf_file "
                   "resumes it)" if surf.provenance.get("source") == "reference-h5" else
                   "wait for the computation (or resume it from its store) first")
            raise LandscapeError(f"the surface has {surf.n_done} of {surf.loss.size} points computed; expected a "
                                 f"complete surface: {fix}")
        arr = np.asarray(surf.loss, dtype=np.float64)
        names = [a for a in ("z", "y", "x") if getattr(surf, a, None) is not None]
        axes = tuple(np.asarray(getattr(surf, a), dtype=np.float64) for a in names)
    else:
        raise LandscapeError(f"topology of a {type(surface_or_array).__name__}; expected a Surface or a 2D/3D "
                             "numpy array of loss values")
    if arr.ndim not in (2, 3) or min(arr.shape) < 2:
        raise LandscapeError(f"a loss grid of shape {arr.shape}; expected a 2D or 3D grid with at least 2 points "
                             "per axis (compute a plane or a volume)")
    if tuple(len(a) for a in axes) != arr.shape:
        raise LandscapeError(f"coordinates of lengths {[len(a) for a in axes]} for a grid of shape {arr.shape}")
    finite = np.isfinite(arr)
    if not finite.any():
        raise LandscapeError("every loss value is NaN or infinite; expected a surface with finite values")
    wall = math.inf
    if not finite.all():  # gudhi needs numbers: diverged points join after every finite level (see topology)
        lo, hi = float(arr[finite].min()), float(arr[finite].max())
        wall = hi + (hi - lo) + 1.0
        arr = np.where(finite, arr, wall)
    return arr, axes, wall


def _location(axes: Sequence[np.ndarray], index: tuple[int, ...]) -> tuple[float, ...]:
    return tuple(float(axes[k][index[k]]) for k in reversed(range(len(axes))))  # (x, y[, z])


def topology(surface_or_array: Any, threshold: float | None = None) -> Topology:
    """Sublevel-set persistence, basins, merge tree and SMAD of a 2D or 3D loss grid.

    Grid points are connected to their face neighbours only (4 in 2D, 6 in 3D, not diagonals):
    two points touching at a corner are in one basin only through a path along the axes.

    >>> topo = lnb.topology(surf)              # or surf.topology()
    >>> topo.n_basins, topo.smad, topo.merge_tree
    >>> lnb.plot.persistence(topo)

    Parameters
    ----------
    surface_or_array : Surface or numpy.ndarray
        A complete 2D (or 3D) surface, or a loss array; for an array the last axis is x and
        the coordinates are the indices. ``loss[j, i]`` is at ``(x[i], y[j])`` as in ``Surface``.
        Non-finite values (NaN/inf: diverged points) are in no sublevel set ``{loss ≤ t}`` of
        finite ``t``, so they are not part of the filtration: a basin that could merge with an
        older one only through them never merges and persists to infinity like the deepest
        basin (``death`` = inf, no saddle, no parent; it counts in ``n_basins`` but not in the
        merge tree or SMAD), and loops (2D) or voids (3D) around them never die. No class dies,
        and no saddle is reported, at a non-finite point.
    threshold : float, optional
        Basins with persistence (saddle − minimum, loss units) at most this are noise and left
        out of ``basins``, the merge tree and SMAD (they stay in ``diagrams``). Default: 1 % of
        the range of the finite loss values.

    Returns
    -------
    Topology

    Raises
    ------
    LandscapeError
        For a partial surface, a grid that is not 2D/3D, a negative threshold, or when gudhi
        is not installed.

    References
    ----------
    Edelsbrunner & Harer, "Computational Topology", AMS 2010 (persistence, elder rule).
    Chen et al., "Landscaper: Understanding loss landscapes through multi-dimensional
    topological analysis", 2026 (SMAD). Li et al., NeurIPS 2018 (the surfaces).
    """
    try:
        import gudhi
    except ImportError:
        raise LandscapeError("topology needs gudhi, which is not installed; install it with "
                             "`pip install landscape_nb[topology]`") from None
    arr, axes, wall = _grid(surface_or_array)
    if threshold is None:
        finite = arr[arr < wall]
        threshold = 0.01 * float(finite.max() - finite.min())
    elif not (isinstance(threshold, (int, float, np.floating)) and math.isfinite(threshold) and threshold >= 0):
        raise LandscapeError(f"threshold={threshold!r}; expected a persistence ≥ 0 in loss units, or None "
                             "for 1 % of the loss range")
    cc = gudhi.CubicalComplex(vertices=arr)
    cc.compute_persistence(homology_coeff_field=2, min_persistence=0.0)
    diagrams = tuple(_finite_filtration(np.asarray(cc.persistence_intervals_in_dimension(d),
                                                   dtype=np.float64).reshape(-1, 2), wall)
                     for d in range(arr.ndim))
    rows = _basins(arr, wall, float(threshold))
    row_of = {r[2]: i for i, r in enumerate(rows)}
    basins = tuple(Basin(r[2], _location(axes, r[2]), r[0], r[1], r[3],
                         None if r[3] is None else _location(axes, r[3]),
                         None if r[4] is None else row_of[r[4]]) for r in rows)
    given = getattr(surface_or_array, "provenance", None)
    return Topology(diagrams, basins, float(threshold), arr.shape, axes,
                    dict(given) if isinstance(given, Mapping) else {})


def _finite_filtration(pairs: np.ndarray, wall: float) -> np.ndarray:
    """(birth, death) pairs with the non-finite points' stand-in level ``wall`` taken out: a class
    dying there never dies at a finite level (death inf), one born there is not in the filtration."""
    pairs = pairs[pairs[:, 0] < wall]
    return np.column_stack([pairs[:, 0], np.where(pairs[:, 1] >= wall, math.inf, pairs[:, 1])])


def _basins(arr: np.ndarray, wall: float, threshold: float) -> list[tuple]:
    """The basins of the sublevel filtration of ``arr`` (0-dimensional persistence by union-find over face
    neighbours, points taken in order of (loss, C-order index); points at ``wall``, the non-finite ones,
    never enter): ``(birth, death, minimum index, saddle index or None, parent's minimum index or None)``
    for those with persistence above ``threshold`` or infinite, deepest first and at a tie the
    longest-lived first, so ``rows[0]`` never dies and every parent (the elder the basin merges into)
    comes before its children. The (birth, death) values are those of gudhi's diagram whatever the ties
    (they are unique); which of tied points is a minimum or a saddle follows this order."""
    flat = arr.ravel()
    shape, n = arr.shape, arr.size
    strides = [int(np.prod(shape[k + 1:])) for k in range(arr.ndim)]
    coords = np.array(np.unravel_index(np.arange(n), shape)).T
    order = [int(v) for v in np.lexsort((np.arange(n), flat)) if flat[v] < wall]
    parent = np.full(n, -1, dtype=np.int64)
    lowest: dict[int, int] = {}  # root -> the minimum of its component (its basin's vertex)

    def find(v: int) -> int:
        root = v
        while parent[root] != root:
            root = parent[root]
        while parent[v] != root:
            parent[v], v = root, parent[v]
        return root

    died = []  # (birth, death, minimum, saddle, elder's minimum)
    for v in order:
        parent[v] = v
        roots = set()
        for k in range(arr.ndim):
            for step in (-1, 1):
                c = coords[v, k] + step
                if 0 <= c < shape[k] and parent[u := v + step * strides[k]] >= 0:
                    roots.add(find(u))
        if not roots:
            lowest[v] = v
            continue
        elder = min(roots, key=lambda r: (flat[lowest[r]], lowest[r]))
        for r in roots - {elder}:  # the younger basins die here, at v, merging into the elder's
            died.append((float(flat[lowest[r]]), float(flat[v]), lowest[r], v, lowest[elder]))
            parent[r] = elder
        parent[v] = elder
    alive = [(float(flat[m]), math.inf, m, None, None) for r, m in lowest.items() if find(r) == r]
    rows = alive + [d for d in died if d[1] - d[0] > threshold]
    rows.sort(key=lambda r: (r[0], -r[1], r[2]))

    def unravel(v: int | None) -> tuple[int, ...] | None:
        return None if v is None else tuple(int(k) for k in np.unravel_index(v, shape))

    return [(b, d, unravel(m), unravel(s), unravel(e)) for b, d, m, s, e in rows]


__all__ = ["Topology", "Basin", "topology"]
