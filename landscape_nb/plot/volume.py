"""Figures of a 3D loss volume (three directions, ``compute_surface(..., x=, y=, z=)``): rotatable
isosurfaces or a translucent volume with slice planes, and 2D contour slices through it drawn by
the plane builders on one colour scale.

Imports neither torch, Dask nor ipywidgets.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from ..errors import LandscapeError
from ..surface import Surface
from . import _common
from ._common import (
    CAPTION_FONT,
    COLORSCALE,
    DEFAULT_WIDTH,
    _axis_label,
    _check_surface,
    as_written,
    cap_words,
    display_values,
    fit_title,
    plot_area,
    refuse_log_of_non_positive,
    scene_title,
    set_caption,
    template_text,
)
from .figures import _run_title, compare

__all__ = ["complete_boxes", "volume", "volume_slices"]

KINDS = ("isosurface", "volume")
AXES = ("x", "y", "z")


def _points(surf: Surface) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flat x, y, z coordinates in the order of ``loss.ravel()`` ((z, y, x), x fastest)."""
    zz, yy, xx = np.meshgrid(np.asarray(surf.z, float), np.asarray(surf.y, float), np.asarray(surf.x, float),
                             indexing="ij")
    return xx.ravel(), yy.ravel(), zz.ravel()


def _slice_locations(surf: Surface, slices) -> dict:
    """Plotly ``slices`` for each axis: ``"centre"`` (the grid value nearest 0, or the middle),
    None (no slices) or a mapping axis -> list of coordinates."""
    if slices is None:
        return {}
    if isinstance(slices, str):
        if slices not in ("centre", "center"):
            raise LandscapeError(f"plot.volume: slices={slices!r}; expected 'centre', None or a mapping "
                                 "axis -> coordinates, e.g. {'z': [0.0]}")
        out = {}
        for a in AXES:
            c = np.asarray(getattr(surf, a), float)
            out[a] = [float(c[np.argmin(np.abs(c))]) if c.min() <= 0 <= c.max() else float(c[c.size // 2])]
        return out
    if not isinstance(slices, dict) or not set(slices) <= set(AXES):
        raise LandscapeError(f"plot.volume: slices={slices!r}; expected 'centre', None or a mapping with keys "
                             "among 'x', 'y', 'z' to lists of coordinates")
    out = {}
    for a, vals in slices.items():
        c = np.asarray(getattr(surf, a), float)
        try:
            out[a] = [float(v) for v in np.atleast_1d(vals)]
        except (TypeError, ValueError):
            out[a] = [math.nan]
        outside = [v for v in out[a] if not c.min() <= v <= c.max()]
        if outside:  # plotly draws nothing there, without a word
            raise LandscapeError(f"plot.volume: slices[{a!r}]={vals!r}; {outside[0]!r} is outside the grid's "
                                 f"{a} range {c.min():g}..{c.max():g}: expected coordinates within it")
    return out


#: most isosurface traces a partial volume is drawn with (`complete_boxes`); the points of any further boxes
#: are markers
MAX_BOXES = 64


def complete_boxes(done: np.ndarray) -> list[tuple[slice, slice, slice]]:
    """Boxes of grid points (slices over z, y, x), every point in each computed, that together hold every cube
    of 8 computed corners once: the whole grid for a complete volume, else a greedy split of those cubes
    (grown along x, then y, then z), largest first, at most ``MAX_BOXES``.

    An isosurface is built cube by cube, and a point not computed has no value to build it from: given a
    stand-in above every value, plotly.js drew shells between computed and missing points, so a volume
    stopped with every other z-plane computed showed closed discs on those planes (loss seemingly rising
    steeply in z where it is flat: trial s33), and NaN makes it draw nothing at all. Each box is drawn as
    its own trace; boxes share faces, so their shells meet."""
    done = np.asarray(done, dtype=bool)
    free = _common.complete_cells(done)
    if free.size and free.all():  # a complete volume: one box
        return [tuple(slice(0, n) for n in done.shape)]
    boxes = []
    for k, j, i in zip(*np.unravel_index(np.flatnonzero(free), free.shape)):  # in C order: each box's first cell
        if not free[k, j, i]:
            continue
        i1 = i + int(np.argmin(np.append(free[k, j, i:], False)))
        j1 = j + int(np.argmin(np.append(free[k, j:, i:i1].all(axis=1), False)))
        k1 = k + int(np.argmin(np.append(free[k:, j:j1, i:i1].all(axis=(1, 2)), False)))
        free[k:k1, j:j1, i:i1] = False
        boxes.append((slice(k, k1 + 1), slice(j, j1 + 1), slice(i, i1 + 1)))
    boxes.sort(key=lambda b: -math.prod(s.stop - s.start for s in b))
    return boxes[:MAX_BOXES]


def _hover_values(surf: Surface) -> list[str]:
    """Per point, in ``loss.ravel()`` order: the true loss and metrics, or why there is none."""
    rows = _common.hover_customdata(surf).reshape(-1, 1 + len(surf.metrics))
    done = np.asarray(surf.done_mask, dtype=bool).ravel()
    names = ["loss", *surf.metrics]
    return ["loss: not computed" if not computed else "<br>".join(f"{n}: {v:.4g}" for n, v in zip(names, row))
            for row, computed in zip(rows, done)]


def volume(
    surface: Surface,
    *,
    kind: str = "isosurface",
    name: str = "loss",
    log: bool = False,
    clip: float | bool | None = None,
    levels: int = 5,
    upper: float | None = None,
    slices="centre",
    opacity: float | None = None,
    title: str | None = None,
) -> go.Figure:
    """A rotatable 3D view of a loss volume: nested isosurfaces (or a translucent volume) of
    the loss around the centre, with slice planes through it.

    >>> vol = lnb.compute_surface(model, data, lnb.random_directions(model, n=3), x=(-1, 1, 21),
    ...                           y=(-1, 1, 21), z=(-1, 1, 21))
    >>> lnb.plot.volume(vol, slices={"z": [0.0]})

    Landscaper and the Hessian-direction views (Böttcher & Wheeler 2022) look at more than two
    directions; this is the three-direction analogue of ``plot.surface`` [1]_.

    Parameters
    ----------
    surface : Surface
        A 3D surface: ``loss`` of shape (len(z), len(y), len(x)), ``loss[k, j, i]`` at
        (x[i], y[j], z[k]).
    kind : {"isosurface", "volume"}, default "isosurface"
        ``go.Isosurface`` (opaque nested shells, clearer) or ``go.Volume`` (translucent).
    name : str, default "loss"
        ``"loss"`` or a metric of the surface.
    log : bool, default False
        Show log10 of the values (non-positive values become gaps).
    clip : float, bool or None
        Where the outermost isosurface sits, as ``plot.contour``'s cap on the shown loss: None at the
        ``upper`` quantile, a number at that loss (at the largest finite value if none reaches it),
        False at the largest finite value (every value inside a shell). Values above it are capped.
    levels : int, default 5
        Number of isosurfaces between the lowest value and the outermost one.
    upper : float in (0, 1], default 0.5
        With ``clip=None``, the quantile of the finite values where the outermost isosurface sits
        (0.5: the shell enclosing the lower half of the volume's values).
    slices : "centre", None or mapping axis -> list of float
        Slice planes coloured by the value: "centre" draws one through the grid value nearest 0
        on each axis; None draws none.
    opacity : float, optional
        Default 0.35 for isosurfaces and 0.1 for a volume.
    title : str, optional
        Default: ``surface.provenance["title"]`` when present, else what the CLI titles it
        (`plot.figures.run_title`: model, directions, split, grid); ``""`` for none.

    Returns
    -------
    plotly.graph_objects.Figure
        For a complete volume one trace (``Isosurface`` or ``Volume``) with flat x, y, z, value arrays
        in the order of ``loss.ravel()``; diverged points take a value above every finite one, so
        they sit outside every shell. ``value`` holds the values (capped by the automatic cap where
        ``clip`` is None, past which no shell sits); the hover text shows the stored
        loss and metrics (``text``), or says that a point holds none. A partial volume (a stopped
        run) is drawn with a trace per box of computed points (`complete_boxes`, at most
        ``MAX_BOXES``; no shell is built from a point not computed), a ``Scatter3d`` of the computed
        points no such box holds, coloured on the same scale, and a note saying how many points it
        holds (``plot.mark_partial``).

    Raises
    ------
    LandscapeError
        Not a 3D surface, an unknown ``kind``, ``levels`` not a positive integer, ``upper`` outside
        (0, 1] or given with a ``clip``, a ``clip`` below every value, no finite value at all, or
        malformed ``slices``.

    References
    ----------
    .. [1] H. Li, Z. Xu, G. Taylor, C. Studer, T. Goldstein, "Visualizing the Loss Landscape of
       Neural Nets", NeurIPS 2018.
    """
    surf = _check_surface(surface, ndim=3, where="plot.volume")
    refuse_log_of_non_positive(log, [surf.loss], "plot.volume")
    if kind not in KINDS:
        raise LandscapeError(f"plot.volume: kind={kind!r}; expected one of {KINDS}")
    if isinstance(levels, bool) or not isinstance(levels, (int, np.integer)) or levels < 1:
        raise LandscapeError(f"plot.volume: levels={levels!r}; expected a positive integer, e.g. levels=5")
    auto = clip is None or clip is True
    if upper is not None and not auto:
        raise LandscapeError(f"plot.volume: upper={upper!r} and clip={clip!r} both place the outermost isosurface; "
                             "expected one of them: upper a quantile of the values, clip a loss value (or False: "
                             "the largest)")
    upper = 0.5 if upper is None else upper
    if not 0 < float(upper) <= 1:
        raise LandscapeError(f"plot.volume: upper={upper!r}; expected a quantile in (0, 1], e.g. 0.5")
    values = display_values(surf, log=log, clip=clip, name=name)  # refuses a cap at or below every value
    # the surface's own values, not the capped ones: the colour bar's "up to" (with the automatic cap "up to 5.58"
    # was the cap itself, the loss reaching 14, trial s59)
    true = display_values(surf, log=log, clip=False, name=name)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        raise LandscapeError("plot.volume: no finite value to draw (nothing computed yet, or every point diverged)")
    lo, hi = float(finite.min()), float(finite.max())
    top = float(np.quantile(finite, float(upper)))
    if not auto:  # the outermost shell at the cap, or at the largest value under it (the CLI's --clip left the
        top = hi  # shells at the median whatever it was; trial s36); built from the values themselves, in
        values = true  # which a point above the cap is outside it
        hi = float(np.nanmax(values))  # (capped, it sat on the shell)
    if top <= lo:
        top = hi if hi > lo else lo + 1.0
    flat = np.where(np.isfinite(values), values, hi + (hi - lo) + 1.0).ravel()
    x, y, z = _points(surf)
    label = _axis_label(log, name)
    shown = true[np.isfinite(true)]
    if shown.size and float(shown.max()) > top:  # the shells stop at ``top``: said, as the planes' capped colour bars
        above = int((shown > top).sum())  # say it (trial s57: "loss" over 0..1.04, values up to 8.54)
        # on a log scale in the values' own units, as the planes say it (s58)
        peak = f"{name} {10 ** float(shown.max()):.3g}" if log else f"{float(shown.max()):.3g}"
        label += f"<br>(shells up to {cap_words(top, log, name)}:<br>{above} of {shown.size} points<br>above, up to {peak})"
    common = dict(
        x=x, y=y, z=z, value=flat, isomin=lo + 0.02 * (top - lo), isomax=top, surface_count=int(levels),
        colorscale=COLORSCALE, cmin=lo, cmax=top, colorbar=dict(title=dict(text=label)),
        caps=dict(x_show=False, y_show=False, z_show=False),
        slices={a: dict(show=True, locations=locs) for a, locs in _slice_locations(surf, slices).items()},
        text=_hover_values(surf),  # the stored values: ``value`` is capped, and gaps get a stand-in
        hovertemplate=(f"{template_text(surf.x_label)}: %{{x:.4g}}<br>{template_text(surf.y_label)}: %{{y:.4g}}"
                       f"<br>{template_text(surf.z_label)}: %{{z:.4g}}"
                       "<br>%{text}<extra></extra>"),
    )
    make = go.Isosurface if kind == "isosurface" else go.Volume
    opacity = (0.35 if kind == "isosurface" else 0.1) if opacity is None else opacity
    fig = go.Figure()
    order = np.arange(flat.size).reshape(values.shape)
    drawn = np.zeros(values.shape, dtype=bool)
    for n, box in enumerate(complete_boxes(surf.done_mask)):  # the whole grid, for a complete volume
        keep, drawn[box] = order[box].ravel(), True
        fig.add_trace(make(opacity=opacity, showscale=n == 0, **{
            **common, "x": x[keep], "y": y[keep], "z": z[keep], "value": flat[keep],
            "text": [common["text"][k] for k in keep]}))
    lone = np.isfinite(values) & ~drawn  # computed points no complete cube holds: no shell can show them
    if lone.any():
        keep = lone.ravel()
        in_cubes = _common.cell_corners(_common.complete_cells(surf.done_mask))  # past the MAX_BOXES drawn
        fig.add_trace(go.Scatter3d(
            meta={"past_boxes": int((lone & in_cubes).sum())},
            x=x[keep], y=y[keep], z=z[keep], mode="markers", name=_common.LONE_POINTS, showlegend=False,
            marker=dict(size=3, color=flat[keep], colorscale=COLORSCALE, cmin=lo, cmax=top, showscale=not drawn.any(),
                        colorbar=dict(title=dict(text=label))),
            text=[common["text"][k] for k in np.flatnonzero(keep)], hovertemplate=common["hovertemplate"]))
    # titles that fit the scene (a label too long for it as its symbol, said in full in a caption): at plotly's
    # default 700×450 the three long labels ran out of the scene and over each other (s59)
    margin = dict(l=10, r=10, t=50, b=10)
    width, height = plot_area(colorbar=label, margin=margin)
    titles, notes = {}, []
    for a, symbol in zip("xyz", "αβγ"):
        text = str(getattr(surf, f"{a}_label"))
        titles[a], note = scene_title(text, width, symbol=symbol if text != symbol else "", height_px=height)
        if note:
            notes.append(fit_title(note, width, size=CAPTION_FONT))
    caption = "<br>".join(notes)
    fig.update_layout(
        title=_run_title(title, surf, "volume"),
        scene=dict(**{f"{a}axis_title": as_written(t) for a, t in titles.items()}, aspectmode="cube"),
        margin=dict(margin, b=margin["b"] + round(1.4 * CAPTION_FONT) * len(notes and caption.split("<br>"))),
    )
    set_caption(fig, caption or None)
    _common.note_partial(fig, surf)
    _common.note_sources(fig, [surf])
    return fig


def _signed(value: float) -> str:
    """``value`` as ``:.3g`` writes it, with the minus sign the axes' tick labels show (−1, not -1)."""
    return f"{value:.3g}".replace("-", "\u2212")


def volume_slices(
    surface: Surface,
    axis: str = "z",
    *,
    indices: Sequence[int] | None = None,
    values: Sequence[float] | None = None,
    kind: str = "contour",
    log: bool = False,
    clip: float | bool | None = None,
    levels: int = 30,
) -> go.Figure:
    """2D slices through a volume side by side on one colour scale (``plot.compare`` of
    ``surface.slice(axis, ...)``): contour, heatmap or surface panels.

    >>> lnb.plot.volume_slices(vol, "z", values=[-0.5, 0.0, 0.5])

    Parameters
    ----------
    surface : Surface
        A 3D surface (``loss`` of shape (len(z), len(y), len(x))).
    axis : {"x", "y", "z"}, default "z"
        The axis held fixed in each panel.
    indices : sequence of int, optional
        Grid indices along ``axis``.
    values : sequence of float, optional
        Coordinates along ``axis`` (nearest grid value). Give at most one of ``indices`` and
        ``values``; neither: the first, middle and last grid value (two slices for two values).
    kind : {"contour", "heatmap", "surface"}, default "contour"
        The panel drawn for each slice.
    log, clip, levels
        As in ``plot.contour``; the automatic cap is computed over all slices together.

    Returns
    -------
    plotly.graph_objects.Figure
        One panel per slice, titled with the fixed coordinate.

    Raises
    ------
    LandscapeError
        Not a 3D surface, an unknown axis or kind, both ``indices`` and ``values``, an index
        outside the grid, or a value outside the axis' range (``Surface.slice``).
    """
    surf = _check_surface(surface, ndim=3, where="plot.volume_slices")
    refuse_log_of_non_positive(log, [surf.loss], "plot.volume_slices")
    if indices is not None and values is not None:
        raise LandscapeError("plot.volume_slices: both indices= and values= given; expected at most one")
    if axis not in AXES:
        raise LandscapeError(f"plot.volume_slices: axis={axis!r}; expected one of {AXES}")
    if values is not None:
        planes = [surf.slice(axis, value=v) for v in values]
    else:
        n = np.asarray(getattr(surf, axis)).size
        indices = sorted({0, n // 2, n - 1}) if indices is None else list(indices)
        planes = [surf.slice(axis, index=i) for i in indices]
    if not planes:
        raise LandscapeError(f"plot.volume_slices: indices={indices!r}, values={values!r}: no slice to draw; "
                             "expected at least one index or value (or neither: the first, middle and last plane)")
    label = {"x": surf.x_label, "y": surf.y_label, "z": surf.z_label}[axis]
    name = planes[0].provenance["slice"]["symbol"]
    titles = [as_written(f"{name} = {_signed(p.provenance['slice']['value'])}") for p in planes]
    fig = compare(planes, kind=kind, titles=titles, log=log, clip=clip, levels=levels)
    # what the panels' "γ = …" hold fixed: the axis's whole label (the panels named only its letter, trial s54),
    # after the symbol where the label does not begin with it ("γ: Hessian eigenvector λ_max3 = 1.146", s58)
    held = name if not label.strip() else label if label.split(" ")[0] == name else f"{name}: {label}"
    fig.update_layout(title={"text": fit_title(f"the volume's loss on planes of fixed {held}",
                                               plot_area(width=fig.layout.width or DEFAULT_WIDTH)[0]),
                             "font": {"size": 14}})
    fig.layout.annotations = [a for a in fig.layout.annotations if a.name != _common.PARTIAL_NOTE]
    _common.note_partial(fig, surf)  # the volume's count, not each plane's
    return fig
