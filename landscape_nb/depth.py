"""Depth and skip connections, measured: the headline of Li et al. 2018 (Fig. 5, Fig. 6, §6).

Li et al. show that ResNet-20/56/110 keep one wide, convex-looking basin around their
minimizer while the same networks without skip connections turn chaotic as depth
grows. ``depth_comparison`` computes, for each depth × {skip, no skip} of the zoo's
digits ResNets, the filter-normalized 2D surface (one seed, range and resolution for
all) and three numbers read off it:

``n_minima``
    Local minima of the loss grid that survive a persistence filter: a minimum is the
    lowest point of a sublevel-set component (8-neighbour grid connectivity; on a grid
    without ties these are exactly the strict local minima, lower than all 8 neighbours);
    its *persistence* is the height of the lowest saddle joining it to a deeper
    minimum, minus its own value (0-dimensional sublevel-set persistence, elder rule).
    Minima with persistence ≥ ``prominence`` (loss units, default 0.02) are counted;
    the global minimum always counts. Non-finite losses count as +inf.
``basin_radius``
    The distance from the centre (the trained weights, α = β = 0) to the nearest grid
    point whose loss is at least the centre loss + ``basin_rise`` (default 1 nat), in
    the units of the filter-normalized axes: the largest radius within which the loss
    stays below that level. When no grid point reaches the level it is the largest
    distance on the grid (a lower bound; ``basin_capped`` says so). The notebook used
    "twice the centre loss" before; that level scales with the centre loss (0.02 for a
    well-trained skip net, 1.7 for ResNet-56 without skips), so it compared a rise of
    0.02 nats with one of 1.7, and gave 0.2 for both; one absolute rise compares like
    with like.
``nonconvex_fraction``
    The fraction of the points of a coarse eigen-map (``hessian.eigen_map``, Li et al.
    Fig. 6) where ``|λ_min / λ_max|`` of the Hessian exceeds ``ratio_threshold``
    (default 0.1): places with negative curvature at least a tenth of the positive.
    Points where the ratio is undefined (NaN) are left out of the fraction.

Every number is computed from the surfaces each call; nothing is typed in. The grid
functions (``minima_persistence``, ``count_minima``, ``basin_radius``,
``nonconvex_fraction``) are numpy only and work on any 2D surface.

References
----------
Li, Xu, Taylor, Studer, Goldstein. "Visualizing the Loss Landscape of Neural Nets",
NeurIPS 2018, §6 and Figures 5-6.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from .errors import LandscapeError, warn_user

DEPTHS = (20, 56, 110)
"""The depths of Li et al.'s Figure 5, all in the zoo as ``resnet{depth}[-noskip]-digits``."""

_BLOCKS = {20: 3, 56: 9, 110: 18}


def zoo_name(depth: int, skip: bool) -> str:
    """The zoo entry of the digits ResNet of ``depth`` layers, with or without skips."""
    if depth not in _BLOCKS:
        raise LandscapeError(
            f"Got depth {depth!r}; expected one of {sorted(_BLOCKS)} (the zoo's digits ResNets). "
            "Pass depths=(20, 56, 110) or a subset."
        )
    return f"resnet{depth}-digits" if skip else f"resnet{depth}-noskip-digits"


# ------------------------------------------------------------- numbers from a grid ----

def minima_persistence(loss: np.ndarray) -> np.ndarray:
    """Persistence of every local minimum of a 2D grid (sublevel sets, 8-neighbour).

    Parameters
    ----------
    loss : ndarray, shape (n_y, n_x)
        Values on a regular grid; NaN and ±inf are read as +inf.

    Returns
    -------
    ndarray, shape (n_minima,)
        One value per local minimum (lowest point of a sublevel-set component), sorted
        descending: the height of the lowest saddle joining it to a deeper minimum minus
        its value; ``inf`` for the global minimum. Ties are broken by grid order, so a
        flat plateau counts once.

    Raises
    ------
    LandscapeError
        If ``loss`` is not 2D or is empty.
    """
    values = _grid(loss, "minima_persistence")
    n_y, n_x = values.shape
    flat = values.ravel()
    order = np.argsort(flat, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    parent = np.full(flat.size, -1, dtype=np.int64)

    def find(i: int) -> int:
        root = i
        while parent[root] != root:
            root = parent[root]
        while parent[i] != root:  # path compression
            parent[i], i = root, parent[i]
        return root

    persistence = []
    for idx in order.tolist():
        parent[idx] = idx
        j, i = divmod(idx, n_x)
        for dj in (-1, 0, 1):
            for di in (-1, 0, 1):
                jj, ii = j + dj, i + di
                if (dj or di) and 0 <= jj < n_y and 0 <= ii < n_x and parent[jj * n_x + ii] >= 0:
                    a, b = find(idx), find(jj * n_x + ii)
                    if a == b:
                        continue
                    # a component's root is its lowest point (first in order): the younger dies
                    elder, younger = (a, b) if rank[a] < rank[b] else (b, a)
                    if younger != idx:  # a real minimum dies here (idx alone is never one)
                        persistence.append(flat[idx] - flat[younger])
                    parent[younger] = elder
    persistence.append(math.inf)
    out = np.asarray(persistence, dtype=np.float64)
    out = out[(out > 0) | ~np.isfinite(out)]
    return np.sort(out)[::-1]


def count_minima(loss: np.ndarray, prominence: float = 0.02) -> int:
    """Local minima of a 2D grid whose persistence is at least ``prominence``.

    Grid points connect to all 8 neighbours (``minima_persistence``); ``persistence.topology``
    (``Surface.topology``) connects face neighbours only, so it counts two basins that touch
    only at a corner as two, where this counts one.

    Parameters
    ----------
    loss : ndarray, shape (n_y, n_x)
    prominence : float, default 0.02
        In the units of ``loss`` (nats for cross-entropy); ≥ 0. With 0, every local
        minimum counts (on a grid without ties: the strict local minima).

    Returns
    -------
    int
        At least 1 (the global minimum always counts).
    """
    prominence = _non_negative(prominence, "prominence")
    return int(np.sum(minima_persistence(loss) >= prominence))


def basin_radius(x: np.ndarray, y: np.ndarray, loss: np.ndarray, rise: float = 1.0) -> tuple[float, bool]:
    """Distance from the centre to the nearest grid point with loss ≥ centre loss + ``rise``.

    Parameters
    ----------
    x : ndarray, shape (n_x,)
    y : ndarray, shape (n_y,)
        Grid coordinates; both must contain 0 (the centre, the trained weights).
    loss : ndarray, shape (n_y, n_x)
        ``loss[j, i]`` at ``(x[i], y[j])``; non-finite values count as above the level.
    rise : float, default 1.0
        The level is ``loss_at_centre + rise`` (loss units, nats for cross-entropy); > 0.

    Returns
    -------
    radius : float
        In the units of the axes (filter-normalized steps); NaN where the centre's loss is not
        finite (no level to rise from).
    capped : bool
        True when no grid point reaches the level: the radius is then the largest
        distance on the grid, a lower bound.

    Raises
    ------
    LandscapeError
        If an axis has no point at 0, the shapes disagree, or ``rise`` ≤ 0.
    """
    values = _grid(loss, "basin_radius")
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if values.shape != (y.size, x.size):
        raise LandscapeError(
            f"basin_radius: got loss of shape {values.shape} for {y.size} y and {x.size} x values; expected "
            "loss[j, i] at (x[i], y[j]), shape (len(y), len(x))."
        )
    rise = float(rise)
    if not rise > 0:
        raise LandscapeError(f"basin_radius: got rise={rise}; expected a loss increase > 0, e.g. 1.0.")
    centre = values[_origin(y, "y"), _origin(x, "x")]
    if not np.isfinite(centre):  # a NaN centre read as +inf gave (0.0, False): a plausible radius (trial s38)
        return math.nan, False
    distance = np.hypot(*np.meshgrid(x, y))
    above = distance[values >= centre + rise]
    if above.size == 0:
        return float(distance.max()), True
    return float(above.min()), False


def nonconvex_fraction(ratio: np.ndarray, threshold: float = 0.1) -> float:
    """Fraction of finite ``|λ_min/λ_max|`` values above ``threshold`` (NaN left out).

    Parameters
    ----------
    ratio : ndarray, any shape
        ``eig_ratio`` of an eigen-map (Li et al. 2018, Fig. 6) made with ``ratio="negative"``
        (`landscape_nb.eigen_map`'s default); an ``"abs"`` one (``compute_surface(...,
        quantity="hessian")``'s, the reference's files') counts convex points too: pass
        ``hessian.eig_ratio`` of its ``lambda_max`` and ``lambda_min`` instead.
    threshold : float, default 0.1

    Returns
    -------
    float
        In [0, 1]; NaN when no value is finite.
    """
    threshold = _non_negative(threshold, "ratio_threshold")
    ratio = np.asarray(ratio, dtype=np.float64)
    known = ~np.isnan(ratio)
    if not known.any():
        return math.nan
    return float(np.mean(ratio[known] > threshold))


# ------------------------------------------------------------------- comparison ----

@dataclass(frozen=True)
class DepthSettings:
    """Everything the comparison's numbers depend on, identical for every network.

    ``span`` and ``resolution``: the loss plane is ``[-span, span]²`` on
    ``resolution²`` points (odd, so the centre is a grid point); ``eigen_resolution``
    the same for the eigen-map (0 skips it). ``max_samples``/``eigen_max_samples``:
    a fixed random subset of the test set (``subset_seed`` 0, the same for all).
    """

    span: float = 1.0
    resolution: int = 21
    seed: int = 0
    max_samples: int | None = 128
    eigen_resolution: int = 5
    eigen_max_samples: int | None = 32
    eigen_tol: float = 1e-2
    prominence: float = 0.02
    basin_rise: float = 1.0
    ratio_threshold: float = 0.1


QUICK = DepthSettings(resolution=17, max_samples=64, eigen_resolution=3, eigen_max_samples=8, eigen_tol=0.1)
"""A comparison sized for a laptop CPU: 17² planes on 64 test samples and 3² eigen-maps on 8
(about 2 minutes on 2 cores, the eigen-maps over half of it). ``notebooks/skip_connections.ipynb``
uses it; ``DepthSettings()`` is finer (21² planes, 5² eigen-maps on 32 samples)."""


@dataclass(frozen=True)
class DepthRow:
    """The numbers of one network (see the module docstring for their definitions)."""

    name: str
    depth: int
    skip: bool
    test_accuracy: float
    centre_loss: float
    n_minima: int
    basin_radius: float
    basin_capped: bool
    nonconvex_fraction: float


@dataclass(frozen=True)
class DepthComparison:
    """Rows in ``depths`` × (skip, no skip) order, the settings, and the surfaces they came from.

    ``surfaces[name]`` is the loss plane, ``eigen_maps[name]`` the eigen-map (absent when
    ``settings.eigen_resolution`` is 0).
    """

    rows: tuple[DepthRow, ...]
    settings: DepthSettings
    surfaces: Mapping[str, Any] = field(repr=False)
    eigen_maps: Mapping[str, Any] = field(repr=False)

    def row(self, depth: int, skip: bool) -> DepthRow:
        """The row of ``depth`` with or without skip connections."""
        for r in self.rows:
            if r.depth == depth and r.skip == skip:
                return r
        raise LandscapeError(
            f"Got depth={depth}, skip={skip}; expected one of "
            f"{[(r.depth, r.skip) for r in self.rows]} (the depths this comparison computed)."
        )

    def series(self, field_name: str, skip: bool) -> list:
        """``field_name`` of the rows with (or without) skips, by increasing depth."""
        rows = sorted((r for r in self.rows if r.skip == skip), key=lambda r: r.depth)
        return [getattr(r, field_name) for r in rows]

    def trend(self) -> dict[str, dict[str, bool]]:
        """Whether each number reads "more chaotic with depth" (Li et al.'s claim), per skip setting.

        For ``n_minima`` and ``nonconvex_fraction`` worse is larger, for ``basin_radius``
        smaller. ``{"basin_radius": {"skip": ..., "noskip": ..., "noskip_worse_at_deepest": ...}, ...}``:
        ``skip``/``noskip`` say whether the series gets worse with depth: never better from one depth
        to the next, and worse at the deepest than at the shallowest (a flat series is not: 1, 1 minima
        read "more chaotic", trial s57; ``False`` when any value is NaN), ``noskip_worse_at_deepest``
        whether at the largest depth the no-skip network is strictly worse than its twin.
        """
        worse = {"n_minima": lambda a, b: b >= a, "basin_radius": lambda a, b: b <= a,
                 "nonconvex_fraction": lambda a, b: b >= a}
        strictly = {"n_minima": lambda s, n: n > s, "basin_radius": lambda s, n: n < s,
                    "nonconvex_fraction": lambda s, n: n > s}
        out = {}
        for name, step in worse.items():
            entry = {}
            for label, skip in (("skip", True), ("noskip", False)):
                values = self.series(name, skip)
                entry[label] = all(step(a, b) for a, b in zip(values, values[1:])) and not any(
                    isinstance(v, float) and math.isnan(v) for v in values) and bool(values) and bool(
                    strictly[name](values[0], values[-1]))
            deepest = max(r.depth for r in self.rows)
            pair = [r for r in self.rows if r.depth == deepest]
            if len(pair) == 2:
                s_val = getattr(next(r for r in pair if r.skip), name)
                n_val = getattr(next(r for r in pair if not r.skip), name)
                entry["noskip_worse_at_deepest"] = bool(strictly[name](s_val, n_val))
            out[name] = entry
        return out

    def table(self) -> str:
        """The rows as a Markdown table (settings in the caption line)."""
        s = self.settings
        lines = [
            f"filter-normalized plane [-{s.span:g}, {s.span:g}]², {s.resolution}² points, seed {s.seed}, "
            f"{s.max_samples or 'all'} test samples; minima with persistence ≥ {s.prominence:g}; basin: "
            f"loss < centre + {s.basin_rise:g}; " + (
                f"non-convex: |λmin/λmax| > {s.ratio_threshold:g} on a {s.eigen_resolution}² eigen-map "
                f"({s.eigen_max_samples or 'all'} samples)" if s.eigen_resolution else
                "no eigen-map (eigen_resolution=0), so no non-convex fraction"),  # "a 0² eigen-map" (re-trial s59)
            "",
            "| network | test acc. | centre loss | minima | basin radius | non-convex fraction |",
            "|---|---|---|---|---|---|",
        ]
        for r in self.rows:
            radius = f"≥ {r.basin_radius:.2f}" if r.basin_capped else f"{r.basin_radius:.2f}"
            lines.append(
                f"| {r.name} | {r.test_accuracy:.3f} | {r.centre_loss:.4g} | {r.n_minima} | {radius} | "
                f"{r.nonconvex_fraction:.2f} |"
            )
        return "\n".join(lines)


def summarize(name: str, depth: int, skip: bool, test_accuracy: float, surface, eigen=None,
              settings: DepthSettings = DepthSettings()) -> DepthRow:
    """One ``DepthRow`` from a computed loss surface (and eigen-map), per ``settings``.

    Parameters
    ----------
    surface : Surface
        2D loss surface whose axes contain 0.
    eigen : Surface, optional
        From ``hessian.eigen_map``; without it ``nonconvex_fraction`` is NaN.

    Returns
    -------
    DepthRow
    """
    if getattr(surface, "ndim", None) != 2:
        raise LandscapeError(
            f"summarize: got a {getattr(surface, 'ndim', '?')}-D surface for {name!r}; expected a 2D Surface."
        )
    loss = np.asarray(surface.loss, np.float64)
    radius, capped = basin_radius(surface.x, surface.y, loss, settings.basin_rise)
    centre = float(loss[_origin(np.asarray(surface.y), "y"), _origin(np.asarray(surface.x), "x")])
    fraction = math.nan
    if eigen is not None:
        fraction = nonconvex_fraction(eigen.metrics["eig_ratio"], settings.ratio_threshold)
    return DepthRow(
        name=name, depth=int(depth), skip=bool(skip), test_accuracy=float(test_accuracy), centre_loss=centre,
        n_minima=count_minima(loss, settings.prominence), basin_radius=radius, basin_capped=capped,
        nonconvex_fraction=fraction,
    )


def depth_comparison(
    depths: Sequence[int] = DEPTHS,
    settings: DepthSettings | None = None,
    *,
    client=None,
    store_dir=None,
    callbacks: Iterable[Callable] = (),
    load: Callable[[str], Any] | None = None,
    models: Mapping[tuple[int, bool], Any] | None = None,
) -> DepthComparison:
    """Surfaces and chaos numbers of the zoo's digits ResNets, with and without skips, or of your own networks.

    For each depth in ``depths`` and skip in (True, False): load the zoo model (trains
    on first use), draw two filter-normalized random directions (``ignore="biasbn"``,
    seed ``settings.seed``), compute the loss plane and, unless
    ``settings.eigen_resolution`` is 0, the eigen-map on a coarser grid over the same
    range, then ``summarize``.

    Parameters
    ----------
    depths : sequence of int, default (20, 56, 110)
    settings : DepthSettings, optional
        Grid, samples and thresholds; the defaults when None.
    client : optional
        Passed to ``compute_surface`` (None: in-process; ``"local"``; a Dask client).
    store_dir : str or Path, optional
        A directory for resumable stores, one per surface.
    callbacks : iterable of callables
        Passed to every ``compute_surface`` call (e.g. progress bars).
    load : callable, optional
        ``name -> zoo.Example``; default ``zoo.load``. What it returns needs ``.model``, ``.test``
        and ``.loss_fn``; ``.test_accuracy`` is optional (without it, the row's accuracy is the
        surface's at the centre, on the samples it evaluated, or NaN for a loss without accuracy).
    models : mapping, optional
        Your own networks instead of the zoo's: ``{(depth, skip): (model, data)}`` or ``(model, data,
        loss_fn)`` (``loss_fn`` default cross-entropy), e.g. ``{(13, True): (res13, test), (13, False):
        (plain13, test)}``; ``depth`` is your count of layers, ``skip`` whether the network has skip
        connections. Each row is named ``"ClassName-depth"`` (``-noskip`` without skips) and its accuracy is
        the surface's at the centre; ``depths`` and ``load`` are refused with it. A zoo-named comparison of
        your nets titled them "ResNet-20" and "ResNet-56" (trial s59).

    Returns
    -------
    DepthComparison

    Raises
    ------
    LandscapeError
        For an unknown depth or an even resolution; ``models`` not a mapping of ``(depth, skip)`` to
        ``(model, data[, loss_fn])``, or given with ``depths`` or ``load``.

    References
    ----------
    Li et al., "Visualizing the Loss Landscape of Neural Nets", NeurIPS 2018, Fig. 5-6.
    """
    from pathlib import Path

    from . import zoo
    from .compute import compute_surface
    from .directions import random_directions
    from .eigen_maps import eigen_map

    settings = settings or DepthSettings()
    callbacks = list(callbacks)
    for label, n in (("resolution", settings.resolution), ("eigen_resolution", settings.eigen_resolution)):
        if n != 0 and (n < 3 or n % 2 == 0):
            raise LandscapeError(
                f"Got {label}={n}; expected an odd number ≥ 3 so the trained weights (0, 0) are a grid point"
                + (", or 0 to skip the eigen-map." if label == "eigen_resolution" else ", e.g. 21.")
            )
    if models is not None:
        if load is not None or tuple(depths) != DEPTHS:
            raise LandscapeError("depth_comparison: models= was given with depths= or load=; expected one of them: "
                                 "models= names the depth of each of your networks, {(depth, skip): (model, data)}")
        own = _own_networks(models)
        names = [(d, skip, name) for (d, skip), (name, _) in own.items()]
        load = dict(own.values()).__getitem__  # name -> its example
    else:
        names = [(d, skip, zoo_name(d, skip)) for d in depths for skip in (True, False)]
        load = load or zoo.load
    span = float(settings.span)
    rows, surfaces, eigen_maps = [], {}, {}
    for depth, skip, name in names:
        ex = load(name)
        lacks = [a for a in ("model", "test", "loss_fn") if not hasattr(ex, a)]
        if lacks:
            raise LandscapeError(f"load({name!r}) returned a {type(ex).__name__} without {', '.join(lacks)}; "
                                 "expected an object like zoo.Example with .model, .test and .loss_fn (and "
                                 "optionally .test_accuracy)")
        d = random_directions(ex.model, n=2, norm="filter", ignore="biasbn", seed=settings.seed)

        def store(kind: str):
            return None if store_dir is None else Path(store_dir) / f"{name}-{kind}.zarr"

        grid = (-span, span, settings.resolution)
        surface = compute_surface(ex.model, ex.test, d, x=grid, y=grid, loss_fn=ex.loss_fn, client=client,
                                  max_samples=settings.max_samples, store=store("loss"), callbacks=callbacks,
                                  name=name)
        surfaces[name] = surface
        eigen = None
        if settings.eigen_resolution:
            coarse = (-span, span, settings.eigen_resolution)
            eigen = eigen_map(ex.model, ex.test, d, x=coarse, y=coarse, tol=settings.eigen_tol,
                              seed=settings.seed, loss_fn=ex.loss_fn, client=client,
                              max_samples=settings.eigen_max_samples, store=store("eigen"),
                              callbacks=callbacks, name=f"{name} eigen-map")
            eigen_maps[name] = eigen
        accuracy = getattr(ex, "test_accuracy", None)
        if accuracy is None:  # the centre's, on the samples the surface evaluated
            centre = surface.metrics.get("accuracy")
            accuracy = math.nan if centre is None else float(
                centre[_origin(np.asarray(surface.y), "y"), _origin(np.asarray(surface.x), "x")])
        rows.append(summarize(name, depth, skip, accuracy, surface, eigen, settings))
        _warn_if_near_chance(name, accuracy, ex.test, settings.max_samples, rows[-1],
                             documented=load is zoo.load and name in zoo.DOES_NOT_LEARN)
    return DepthComparison(tuple(rows), settings, surfaces, eigen_maps)


# ---------------------------------------------------------------------- helpers ----

def _own_networks(models) -> dict[tuple[int, bool], tuple[str, Any]]:
    """``models`` (``{(depth, skip): (model, data[, loss_fn])}``) as ``{(depth, skip): (row name, example)}``, the
    example with ``.model``, ``.test`` and ``.loss_fn`` as ``zoo.load`` gives them; refused naming what is wrong."""
    from types import SimpleNamespace

    from torch import nn

    form = "{(depth, skip): (model, data)} or (model, data, loss_fn), e.g. {(13, True): (res13, test)}"
    if not isinstance(models, Mapping) or not models:
        raise LandscapeError(f"models of type {type(models).__name__}; expected a non-empty mapping {form}")
    out = {}
    for key, value in models.items():
        whole = isinstance(key, tuple) and len(key) == 2 and isinstance(key[0], (int, np.integer))
        if not (whole and not isinstance(key[0], (bool, np.bool_)) and key[0] > 0
                and isinstance(key[1], (bool, np.bool_))):
            raise LandscapeError(f"models key {key!r}; expected (depth, skip): a whole number of layers above 0 and "
                                 f"True or False for skip connections, as in {form}")
        if not (isinstance(value, tuple) and len(value) in (2, 3) and isinstance(value[0], nn.Module)):
            raise LandscapeError(f"models[{key!r}] is a {type(value).__name__}; expected (model, data) or (model, "
                                 f"data, loss_fn) with an nn.Module first, as in {form}")
        depth, skip = int(key[0]), bool(key[1])
        name = f"{type(value[0]).__name__}-{depth}" + ("" if skip else "-noskip")
        out[depth, skip] = (name, SimpleNamespace(model=value[0], test=value[1],
                                          loss_fn=value[2] if len(value) == 3 else None))
    return dict(sorted(out.items(), key=lambda kv: (kv[0][0], not kv[0][1])))


def _warn_if_near_chance(name: str, accuracy: float, test, max_samples: int | None, row: DepthRow,
                         documented: bool = False) -> None:
    """Warn where a row's model is within a tenth of the way from chance (1 / the distinct integer targets) to
    perfect accuracy (0.19 for 10 classes, 0.55 for 2; 1.5× chance flagged a 2-class model at 0.74): its
    centre is no trained minimizer, and a flat plane around chance read as the widest basin (trial s38: a plain
    22-layer net that never trained, at 0.095 accuracy, "≥ 1.41" against its residual twin's 0.45). For a zoo
    entry ``documented`` as not learning (``zoo.DOES_NOT_LEARN``) it says that is the entry's result instead of
    asking for more training (which the bundled recipe would not give: the demo and notebook said to retrain)."""
    from .data import read_data

    if not math.isfinite(accuracy):
        return
    try:
        targets = read_data(test, "test", max_samples=max_samples).targets
    except Exception:  # noqa: BLE001 - data compute_surface read already; here only for the count
        return
    if targets is None or targets.ndim != 1 or targets.dtype.is_floating_point:
        return
    chance = 1.0 / max(int(targets.unique().numel()), 1)
    if chance < 1.0 and accuracy <= chance + 0.1 * (1.0 - chance):
        warn_user(f"landscape_nb.depth_comparison: {name} has test accuracy {accuracy:.3f}, near chance ({chance:.3f}: "
                  f"{round(1 / chance)} classes), so its centre is no trained minimizer and its row (basin radius "
                  f"{row.basin_radius:.2f}, {row.n_minima} minima) describes an untrained net's plane, not a basin: "
                  + ("as its zoo entry documents, without skip connections this depth does not learn with the recipe "
                     "its twin learns with (Li et al. 2018: the deepest nets without skips are the hardest to train), "
                     "so read its row as that, not as a basin's width" if documented else
                     "train it further (or with another learning rate) before comparing"))


def _grid(loss, where: str) -> np.ndarray:
    values = np.asarray(loss, dtype=np.float64)
    if values.ndim != 2 or values.size == 0:
        raise LandscapeError(
            f"{where}: got an array of shape {values.shape}; expected a non-empty 2D grid loss[j, i]."
        )
    return np.where(np.isnan(values), np.inf, values)


def _origin(t: np.ndarray, name: str) -> int:
    t = np.asarray(t, dtype=np.float64)
    k = int(np.argmin(np.abs(t)))
    if abs(t[k]) > 1e-9 * max(float(t.max() - t.min()), 1e-300):
        raise LandscapeError(
            f"The {name} axis runs {t.min():.3g}..{t.max():.3g} and has no point at 0 (the trained weights); "
            "expected a range symmetric around 0 with an odd number of points, e.g. (-1, 1, 21)."
        )
    return k


def _non_negative(value: float, name: str) -> float:
    value = float(value)
    if not value >= 0:
        raise LandscapeError(f"Got {name}={value}; expected a number ≥ 0.")
    return value


__all__ = ["DEPTHS", "zoo_name", "minima_persistence", "count_minima", "basin_radius", "nonconvex_fraction",
           "DepthSettings", "DepthRow", "DepthComparison", "summarize", "depth_comparison"]
