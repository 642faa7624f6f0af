"""Plotly figures of loss landscapes (Li et al., "Visualizing the Loss Landscape of Neural
Nets", NeurIPS 2018): 1D curves, contours, heatmaps, rotatable 3D surfaces, trajectory
overlays and side-by-side comparisons with one colour scale.

Every builder takes the data first and styling as keyword-only arguments, returns a new
``plotly.graph_objects.Figure`` and never shows it::

    import landscape_nb as lnb
    fig = lnb.plot.contour(surf, levels=40, log=True)
    fig = lnb.plot.compare([with_skip, without_skip], kind="surface", titles=["skip", "no skip"])
    fig = go.FigureWidget(lnb.plot.live(partial))  # then lnb.plot.update(fig, newer) per tile

Display rules shared by all builders:

* Points not computed yet (NaN) and diverged points (inf) are gaps, never zeros.
* ``log=True`` shows log10(loss); non-positive losses have no logarithm and are gaps.
* Clipping caps huge losses so one diverged corner does not flatten the picture; the hover
  text always shows the true values.

This module imports neither torch, Dask nor ipywidgets.
"""
from __future__ import annotations

from numbers import Real
from typing import Any, Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from .errors import LandscapeError
from .surface import Surface

__all__ = [
    "line",
    "contour",
    "heatmap",
    "surface",
    "compare",
    "live",
    "update",
    "display_values",
    "clip_limit",
    "to_plotly_z",
    "hover_template",
    "hover_customdata",
]

COLORSCALE = "Viridis"
TRAJECTORY_COLORSCALE = "Reds"
CLIP_FACTOR = 5.0
SURFACE_LEVELS = 20  # contour lines drawn on (and projected under) 3D surfaces

# Shared parameter docs, substituted into each builder's docstring (plotly.express style).
_PARAMS = {
    "surface": """surface : Surface
        A computed (or partially computed) 2D landscape; ``loss[j, i]`` is at ``(x[i], y[j])``.""",
    "log": """log : bool, default False
        Show log10(loss) instead of the loss. Non-positive losses become gaps.""",
    "clip": """clip : None, False or float, default None
        Cap on the displayed loss, in loss units. None: automatic, the displayed values are
        capped at ``min + 5 * (median - min)`` of the finite values (no cap when most points
        sit at the minimum). False: no cap. Hover text always shows the true values.""",
    "title": """title : str, optional
        Figure title; defaults to ``surface.provenance["title"]`` when present.""",
    "levels": """levels : int, default 30
        Number of contour lines, evenly spaced over the displayed range.""",
    "returns": """Returns
    -------
    plotly.graph_objects.Figure
        A new figure; call ``.show()`` or ``landscape_nb.export_html`` yourself.""",
}


def _doc(func):
    func.__doc__ = func.__doc__ % _PARAMS
    return func


# ---------------------------------------------------------------------------------------
# Shared helpers: validation, the display transform (log + clip), hover, JSON-safe z.
# ---------------------------------------------------------------------------------------


def _check_surface(surf: Any, *, ndim: int | None, where: str) -> Surface:
    if not isinstance(surf, Surface):
        raise LandscapeError(
            f"{where}: got a {type(surf).__name__}; expected a landscape_nb.Surface. "
            "Build one with landscape_nb.compute_surface(...) or Surface(x=..., y=..., loss=...)."
        )
    if ndim is not None and surf.ndim != ndim:
        fix = (
            "use plot.line() for 1D surfaces"
            if surf.ndim == 1
            else "use plot.contour(), plot.heatmap() or plot.surface() for 2D surfaces"
        )
        raise LandscapeError(
            f"{where}: got a {surf.ndim}D surface (loss shape {surf.shape}); expected a {ndim}D "
            f"surface; {fix}."
        )
    x = np.asarray(surf.x)
    if surf.ndim == 1:
        expected, dims = (x.size,), "(len(x),)"
        order = "loss[i] must be at x[i]"
    else:
        expected, dims = (np.asarray(surf.y).size, x.size), "(len(y), len(x))"
        order = "loss[j, i] must be at (x[i], y[j])"
    arrays = {"loss": surf.loss, **dict(surf.metrics)}
    for name, arr in arrays.items():
        shape = np.shape(arr)
        if shape != expected:
            hint = " (it looks transposed)" if shape == expected[::-1] else ""
            raise LandscapeError(
                f"{where}: {name!r} has shape {shape}{hint}; expected {expected} = {dims} "
                f"for this grid; {order}."
            )
    return surf


def _check_clip(clip: Any, log: bool) -> None:
    if clip is None or clip is False or clip is True:
        return
    if not isinstance(clip, Real) or not np.isfinite(clip) or (log and clip <= 0):
        raise LandscapeError(
            f"clip={clip!r}; expected None (automatic), False (no cap) or a finite number in "
            "loss units (positive when log=True); e.g. clip=10."
        )


def clip_limit(values: np.ndarray) -> float | None:
    """The automatic cap for displayed values: ``min + 5 * (median - min)`` of the finite
    values, or their maximum when that rule would cap nothing sensible (more than half the
    points at the minimum). None when no value is finite.

    The median tracks the typical loss across the plane, so a few diverged points (e.g. at
    the edges of a plane around a network without skip connections) do not set the scale.
    """
    values = np.asarray(values, dtype=float)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return None
    lo, hi = float(finite.min()), float(finite.max())
    cap = lo + CLIP_FACTOR * (float(np.median(finite)) - lo)
    return hi if not cap > lo else min(cap, hi)


def _transform(values: np.ndarray, *, log: bool, clip: Any) -> np.ndarray:
    """The log/explicit-clip part of the display transform (no automatic cap)."""
    z = np.array(values, dtype=float)
    z[~np.isfinite(z)] = np.nan
    if clip is not None and clip is not False and clip is not True:
        z = np.minimum(z, float(clip))  # NaN stays NaN
    if log:
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(z > 0, np.log10(np.where(z > 0, z, 1.0)), np.nan)
    return z


def display_values(
    values: Surface | np.ndarray, *, log: bool = False, clip: Any = None, quantity: str = "loss"
) -> np.ndarray:
    """The float array a figure shows: non-finite → NaN, optional log10, then the cap.

    ``clip`` is None (automatic cap, see `clip_limit`), False (none) or a cap in loss units.
    The live figure widget and the VTK export use this same transform.
    """
    _check_clip(clip, log)
    arr = values.values(quantity) if isinstance(values, Surface) else values
    z = _transform(arr, log=log, clip=clip)
    if clip is None or clip is True:
        cap = clip_limit(z)
        if cap is not None:
            z = np.minimum(z, cap)
    return z


def to_plotly_z(array: Any) -> list:
    """Nested lists of Python floats with None for NaN/inf: JSON-safe z for Plotly.

    NaN is not valid JSON; Plotly renders ``null`` as a gap. Use this when sending data
    as JSON yourself (e.g. patching a live ``FigureWidget``).

    >>> to_plotly_z([[1.0, float("nan")], [float("inf"), 2.0]])
    [[1.0, None], [None, 2.0]]
    """
    a = np.asarray(array, dtype=float)
    out = a.astype(object)
    out[~np.isfinite(a)] = None
    return out.tolist()


def _axis_label(log: bool, quantity: str = "loss") -> str:
    return f"log10({quantity})" if log else quantity


def _quantity_names(surf: Surface) -> list[str]:
    return ["loss", *surf.metrics]


def hover_customdata(surf: Surface) -> np.ndarray:
    """Per point ``[loss, metric...]`` (true values, unclipped), last axis stacked."""
    return np.stack([np.asarray(surf.values(n), dtype=float) for n in _quantity_names(surf)], -1)


def hover_template(surf: Surface) -> str:
    """Hover text for a grid trace using `hover_customdata`: x, y, loss and every metric."""
    lines = [f"{surf.x_label}: %{{x:.4g}}", f"{surf.y_label}: %{{y:.4g}}"]
    lines += [f"{n}: %{{customdata[{k}]:.4g}}" for k, n in enumerate(_quantity_names(surf))]
    return "<br>".join(lines) + "<extra></extra>"


def _title(title: str | None, surf: Surface | None) -> str | None:
    if title is not None:
        return title
    return None if surf is None else surf.provenance.get("title")


def _range(zs: Sequence[np.ndarray]) -> tuple[float | None, float | None]:
    finite = [z[np.isfinite(z)] for z in zs]
    finite = [f for f in finite if f.size]
    if not finite:
        return None, None
    lo = float(min(f.min() for f in finite))
    hi = float(max(f.max() for f in finite))
    return lo, hi


def _colorbar_title(log: bool, zmax: float | None, raw: np.ndarray) -> str:
    """Colorbar title; says so when the display is capped below the true maximum."""
    label = _axis_label(log)
    raw_disp = _transform(raw, log=log, clip=False)
    if zmax is not None and np.nanmax(raw_disp, initial=-np.inf) > zmax:
        label += f"<br>(capped at {zmax:.3g})"
    return label


def _contour_spec(zmin: float | None, zmax: float | None, levels: int) -> dict:
    """Exactly ``levels`` lines, centred in ``levels`` equal bands of [zmin, zmax]."""
    if zmin is None:
        return dict(autocontour=True, ncontours=levels)
    if not zmax > zmin:
        return dict(autocontour=False, ncontours=1, contours=dict(start=zmin, end=zmin, size=1.0))
    size = (zmax - zmin) / levels
    return dict(
        autocontour=False,
        ncontours=levels,
        contours=dict(start=zmin + size / 2, end=zmax - size / 2, size=size),
    )


def _check_levels(levels: Any) -> int:
    if isinstance(levels, bool) or not isinstance(levels, (int, np.integer)) or levels < 1:
        raise LandscapeError(f"levels={levels!r}; expected a positive integer, e.g. levels=30.")
    return int(levels)


def _grid_trace(
    kind: str, surf: Surface, z: np.ndarray, zmin, zmax, *, levels: int, contours: bool
):
    common = dict(
        z=z,
        customdata=hover_customdata(surf),
        hovertemplate=hover_template(surf),
        colorscale=COLORSCALE,
    )
    x, y = np.asarray(surf.x, dtype=float), np.asarray(surf.y, dtype=float)
    if kind == "contour":
        return go.Contour(
            x=x, y=y, zmin=zmin, zmax=zmax, connectgaps=False,
            contours_coloring="lines", line_width=1.5,
            **_contour_spec(zmin, zmax, levels), **common,
        )
    if kind == "heatmap":
        return go.Heatmap(x=x, y=y, zmin=zmin, zmax=zmax, connectgaps=False, **common)
    if kind == "surface":
        trace = go.Surface(x=x, y=y, cmin=zmin, cmax=zmax, **common)
        if contours:
            spec = _contour_spec(zmin, zmax, levels).get("contours", {})
            trace.contours.z = dict(
                show=True, project_z=True, usecolormap=True, highlightcolor="white", **spec
            )
        return trace
    raise LandscapeError(
        f"kind={kind!r}; expected one of 'contour', 'heatmap', 'surface'; e.g. kind='contour'."
    )


def _single_grid_figure(kind, surf, *, log, clip, title, levels=30, contours=True) -> go.Figure:
    """One trace on its own colorbar; axis titles from the surface's labels."""
    _check_surface(surf, ndim=2, where=f"plot.{kind}")
    levels = _check_levels(levels)
    z = display_values(surf, log=log, clip=clip)
    zmin, zmax = _range([z])
    trace = _grid_trace(kind, surf, z, zmin, zmax, levels=levels, contours=contours)
    trace.colorbar = dict(title=dict(text=_colorbar_title(log, zmax, surf.loss)))
    fig = go.Figure(trace)
    fig.update_layout(title=_title(title, surf))
    if kind == "surface":
        fig.update_layout(
            scene=dict(
                xaxis_title=surf.x_label, yaxis_title=surf.y_label, zaxis_title=_axis_label(log)
            )
        )
    else:
        fig.update_xaxes(title_text=surf.x_label)
        fig.update_yaxes(title_text=surf.y_label)
    return fig


# ---------------------------------------------------------------------------------------
# Builders
# ---------------------------------------------------------------------------------------


@_doc
def line(
    surface: Surface | Sequence[Surface],
    *,
    metric: str | None = "accuracy",
    log: bool = False,
    title: str | None = None,
) -> go.Figure:
    """1D loss curve(s): loss on the left axis, a metric on a right twin axis.

    Pass a list of 1D surfaces (e.g. several interpolations between minimizers) to overlay
    them; each is named by its ``provenance["label"]``.

    Parameters
    ----------
    surface : Surface or list of Surface
        1D landscapes; ``loss[i]`` is at ``x[i]``.
    metric : str or None, default "accuracy"
        Metric for the right axis. The default is skipped for surfaces without accuracy
        (e.g. regression); any other name must exist. None: loss only.
    log : bool, default False
        Logarithmic loss axis.
    %(title)s

    %(returns)s
    """
    surfaces = [surface] if isinstance(surface, Surface) else list(surface)
    if not surfaces:
        raise LandscapeError(
            "plot.line: got an empty list; expected a 1D Surface or a non-empty list of them."
        )
    for k, s in enumerate(surfaces):
        _check_surface(s, ndim=1, where=f"plot.line (surface {k})")
        if metric not in (None, "accuracy") and metric not in s.metrics:
            raise LandscapeError(
                f"plot.line: metric={metric!r} but surface {k} has metrics {sorted(s.metrics)}; "
                "expected one of those; pass one of them, or metric=None for loss only."
            )
    single = len(surfaces) == 1
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    palette = qualitative.Plotly
    for k, s in enumerate(surfaces):
        label = str(s.provenance.get("label", f"surface {k}"))
        color = palette[k % len(palette)]
        x = np.asarray(s.x, dtype=float)
        loss = _transform(s.loss, log=False, clip=False)
        fig.add_trace(
            go.Scatter(
                x=x, y=loss, mode="lines", name="loss" if single else f"{label}: loss",
                legendgroup=label, line=dict(color=color),
                hovertemplate=f"{s.x_label}: %{{x:.4g}}<br>loss: %{{y:.4g}}<extra>{label}</extra>",
            ),
            secondary_y=False,
        )
        if metric is not None and metric in s.metrics:
            values = _transform(s.metrics[metric], log=False, clip=False)
            fig.add_trace(
                go.Scatter(
                    x=x, y=values, mode="lines", name=metric if single else f"{label}: {metric}",
                    legendgroup=label, line=dict(color=color, dash="dash"),
                    hovertemplate=(
                        f"{s.x_label}: %{{x:.4g}}<br>{metric}: %{{y:.4g}}<extra>{label}</extra>"
                    ),
                ),
                secondary_y=True,
            )
    fig.update_xaxes(title_text=surfaces[0].x_label)
    fig.update_yaxes(title_text="loss", type="log" if log else "linear", secondary_y=False)
    if any(t.yaxis == "y2" for t in fig.data):
        fig.update_yaxes(title_text=metric, secondary_y=True, showgrid=False, tickmode="auto")
    fig.update_layout(title=_title(title, surfaces[0]), hovermode="x unified")
    return fig


def _trajectory_field(trajectory: Any, name: str):
    if isinstance(trajectory, Mapping):
        return trajectory.get(name)
    return getattr(trajectory, name, None)


def _trajectory_trace(trajectory: Any) -> go.Scatter:
    x = _trajectory_field(trajectory, "x")
    y = _trajectory_field(trajectory, "y")
    if x is None or y is None:
        raise LandscapeError(
            f"trajectory: got a {type(trajectory).__name__} without 'x' and 'y'; expected a dict "
            "or object with x and y arrays (optional distance, labels), e.g. "
            "trajectory={'x': xs, 'y': ys, 'distance': ds}."
        )
    x, y = np.asarray(x, dtype=float).ravel(), np.asarray(y, dtype=float).ravel()
    n = x.size
    distance = _trajectory_field(trajectory, "distance")
    labels = _trajectory_field(trajectory, "labels")
    lengths = {"x": n, "y": y.size}
    if distance is not None:
        distance = np.asarray(distance, dtype=float).ravel()
        lengths["distance"] = distance.size
    if labels is not None:
        labels = [str(v) for v in labels]
        lengths["labels"] = len(labels)
    if len(set(lengths.values())) != 1:
        raise LandscapeError(
            f"trajectory: lengths {lengths}; expected x, y, distance and labels of one length "
            "(one entry per checkpoint)."
        )
    text = labels if labels is not None else [f"step {k}" for k in range(n)]
    hover = "%{text}<br>x: %{x:.4g}<br>y: %{y:.4g}"
    marker: dict[str, Any] = dict(size=8, color="red", line=dict(width=1, color="black"))
    if distance is not None:
        dmax = float(np.nanmax(np.abs(distance))) if np.isfinite(distance).any() else 0.0
        scaled = np.abs(distance) / dmax if dmax > 0 else np.zeros(n)
        marker.update(
            size=np.nan_to_num(6 + 12 * scaled, nan=6.0),
            color=distance,
            colorscale=TRAJECTORY_COLORSCALE,
            cmin=0.0 if np.nanmin(distance, initial=0.0) >= 0 else None,
            showscale=True,
            colorbar=dict(
                title=dict(text="distance<br>from plane"), len=0.45, y=0.0, yanchor="bottom"
            ),
        )
        hover += "<br>distance from plane: %{marker.color:.4g}"
    return go.Scatter(
        x=x, y=y, mode="lines+markers", name="trajectory", text=text, marker=marker,
        line=dict(color="black", width=1.5), hovertemplate=hover + "<extra>trajectory</extra>",
        showlegend=False,
    )


@_doc
def contour(
    surface: Surface,
    *,
    levels: int = 30,
    log: bool = False,
    clip: float | bool | None = None,
    title: str | None = None,
    trajectory: Any = None,
) -> go.Figure:
    """2D contour lines of the loss, optionally with an optimizer trajectory on top.

    Parameters
    ----------
    %(surface)s
    %(levels)s
    %(log)s
    %(clip)s
    %(title)s
    trajectory : dict or object, optional
        ``x`` and ``y`` arrays (the path projected onto the plane), optional ``distance``
        (each point's distance from the plane, shown by marker colour and size, so points
        far off the plane are not mistaken for points on it) and ``labels``.

    %(returns)s
    """
    fig = _single_grid_figure("contour", surface, log=log, clip=clip, title=title, levels=levels)
    if trajectory is not None:
        path = _trajectory_trace(trajectory)
        fig.add_trace(path)
        if path.marker.showscale:  # stack the two colorbars instead of overlapping them
            fig.data[0].colorbar.update(len=0.5, y=1.0, yanchor="top")
    return fig


@_doc
def heatmap(
    surface: Surface,
    *,
    log: bool = False,
    clip: float | bool | None = None,
    title: str | None = None,
) -> go.Figure:
    """Filled 2D map of the loss, one cell per grid point.

    Parameters
    ----------
    %(surface)s
    %(log)s
    %(clip)s
    %(title)s

    %(returns)s
    """
    return _single_grid_figure("heatmap", surface, log=log, clip=clip, title=title)


@_doc
def surface(
    surface: Surface,
    *,
    log: bool = False,
    clip: float | bool | None = None,
    title: str | None = None,
    contours: bool = True,
) -> go.Figure:
    """Rotatable 3D loss surface with its contour lines projected on the floor.

    Parameters
    ----------
    %(surface)s
    %(log)s
    %(clip)s
    %(title)s
    contours : bool, default True
        Draw contour lines on the surface and project them onto the floor.

    %(returns)s
    """
    return _single_grid_figure(
        "surface", surface, log=log, clip=clip, title=title,
        levels=SURFACE_LEVELS, contours=contours,
    )


@_doc
def compare(
    surfaces: Sequence[Surface],
    *,
    kind: str = "contour",
    titles: Sequence[str] | None = None,
    log: bool = False,
    clip: float | bool | None = None,
    levels: int = 30,
) -> go.Figure:
    """Side-by-side landscapes on one shared colour scale (one colorbar), e.g. ResNet with
    and without skip connections (Li et al. 2018, Fig. 5).

    Parameters
    ----------
    surfaces : list of Surface
        2D landscapes; grids may differ.
    kind : {"contour", "heatmap", "surface"}, default "contour"
    titles : list of str, optional
        One per surface; defaults to each ``provenance["title"]`` or ``["label"]``.
    %(log)s
    %(clip)s
        The automatic cap is computed over all surfaces together.
    %(levels)s

    %(returns)s
    """
    surfaces = [surfaces] if isinstance(surfaces, Surface) else list(surfaces)
    if not surfaces:
        raise LandscapeError(
            "plot.compare: got an empty list; expected one or more 2D Surfaces, e.g. "
            "compare([surf_skip, surf_noskip])."
        )
    if kind not in ("contour", "heatmap", "surface"):
        raise LandscapeError(
            f"plot.compare: kind={kind!r}; expected 'contour', 'heatmap' or 'surface'."
        )
    for k, s in enumerate(surfaces):
        _check_surface(s, ndim=2, where=f"plot.compare (surface {k})")
    levels = _check_levels(levels)
    _check_clip(clip, log)
    n = len(surfaces)
    if titles is None:
        titles = [
            str(s.provenance.get("title", s.provenance.get("label", f"surface {k}")))
            for k, s in enumerate(surfaces)
        ]
    titles = list(titles)
    if len(titles) != n:
        raise LandscapeError(
            f"plot.compare: got {len(titles)} titles for {n} surfaces; expected one title per "
            "surface, or titles=None."
        )

    zs = [_transform(s.loss, log=log, clip=clip) for s in surfaces]
    if clip is None or clip is True:
        cap = clip_limit(np.concatenate([z.ravel() for z in zs]))
        if cap is not None:
            zs = [np.minimum(z, cap) for z in zs]
    zmin, zmax = _range(zs)

    spec = {"type": "scene"} if kind == "surface" else {}
    fig = make_subplots(rows=1, cols=n, specs=[[spec] * n], subplot_titles=titles)
    for k, (s, z) in enumerate(zip(surfaces, zs)):
        n_levels = SURFACE_LEVELS if kind == "surface" else levels
        trace = _grid_trace(kind, s, z, zmin, zmax, levels=n_levels, contours=True)
        trace.coloraxis = "coloraxis"
        fig.add_trace(trace, row=1, col=k + 1)
        if kind == "surface":
            scene = "scene" if k == 0 else f"scene{k + 1}"
            fig.layout[scene].update(
                xaxis_title=s.x_label, yaxis_title=s.y_label, zaxis_title=_axis_label(log),
                zaxis_range=None if zmin is None else [zmin, zmax],
            )
        else:
            fig.update_xaxes(title_text=s.x_label, row=1, col=k + 1)
            fig.update_yaxes(title_text=s.y_label, row=1, col=k + 1)
    raw = np.concatenate([np.asarray(s.loss, dtype=float).ravel() for s in surfaces])
    fig.update_layout(
        coloraxis=dict(
            colorscale=COLORSCALE, cmin=zmin, cmax=zmax,
            colorbar=dict(title=dict(text=_colorbar_title(log, zmax, raw))),
        ),
        height=450,
    )
    return fig


# ---------------------------------------------------------------------------------------
# Beyond random planes: trajectory PCA, eigen-maps, paths between minima, sharpness
# ---------------------------------------------------------------------------------------


def with_sharpness(fig: go.Figure, surface: Surface, *, radius: float | None = None) -> go.Figure:
    """A copy of ``fig`` with ``surface``'s sharpness numbers (see ``Surface.sharpness``) as an
    annotation in the top-left corner: the loss increase at ``radius`` and the curvature
    L''(0) along each axis through the centre."""
    from .sharpness import sharpness_text

    out = go.Figure(fig)
    out.add_annotation(
        text="sharpness at the centre<br>" + sharpness_text(surface, radius), xref="paper", yref="paper",
        x=0.0, y=1.0, xanchor="left", yanchor="top", showarrow=False, align="left",
        bgcolor="rgba(255,255,255,0.8)", font=dict(size=11), name="sharpness",
    )
    return out


@_doc
def pca_contour(
    surface: Surface,
    path: Any,
    *,
    levels: int = 30,
    log: bool = False,
    clip: float | bool | None = None,
    title: str | None = None,
) -> go.Figure:
    """Contour of a trajectory-PCA plane with the projected optimizer path (Li et al. 2018, Fig. 9).

    Axes are labelled with each direction's explained variance (from the surface's
    labels). Each checkpoint's marker shows its distance from the plane (colour and
    size) and its hover text the true loss next to the loss drawn under it, so a
    checkpoint far off the plane is not mistaken for a point on it.

    Parameters
    ----------
    %(surface)s
    path : ProjectedPath or dict
        From ``project_trajectory`` (``x``, ``y``, ``distance``, optional ``loss``,
        ``norm`` and ``labels``).
    %(levels)s
    %(log)s
    %(clip)s
    %(title)s

    %(returns)s
    """
    fig = contour(surface, levels=levels, log=log, clip=clip, title=title, trajectory=path)
    trace = fig.data[-1]
    n = len(trace.x)
    true_loss = _trajectory_field(path, "loss")
    distance = _trajectory_field(path, "distance")
    norm = _trajectory_field(path, "norm")
    cols = [np.asarray(distance if distance is not None else np.full(n, np.nan), float).ravel(),
            np.asarray(norm if norm is not None else np.full(n, np.nan), float).ravel(),
            np.asarray(true_loss if true_loss is not None else np.full(n, np.nan), float).ravel(),
            _surface_at(surface, np.asarray(trace.x, float), np.asarray(trace.y, float))]
    trace.customdata = np.stack(cols, axis=-1)
    trace.hovertemplate = (
        "%{text}<br>x: %{x:.4g}<br>y: %{y:.4g}<br>distance from plane: %{customdata[0]:.4g}"
        " (from final: %{customdata[1]:.4g})<br>true loss: %{customdata[2]:.4g}"
        "<br>loss drawn here: %{customdata[3]:.4g}<extra>trajectory</extra>"
    )
    if distance is not None and norm is not None:
        rel = np.asarray(distance, float) / np.where(np.asarray(norm, float) > 0, np.asarray(norm, float), np.inf)
        fig.add_annotation(
            text=f"largest distance from the plane: {100 * float(np.nanmax(rel)):.0f}% of the checkpoint's "
                 "distance from the final model",
            xref="paper", yref="paper", x=0.0, y=-0.12, xanchor="left", yanchor="top", showarrow=False,
            font=dict(size=11),
        )
    return fig


def _surface_at(surface: Surface, px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """The surface's loss at the grid point nearest to each (px, py) (NaN outside the grid)."""
    x, y = np.asarray(surface.x, float), np.asarray(surface.y, float)
    out = np.full(len(px), np.nan)
    for k, (a, b) in enumerate(zip(px, py)):
        if x.min() <= a <= x.max() and y.min() <= b <= y.max():
            out[k] = surface.loss[int(np.argmin(np.abs(y - b))), int(np.argmin(np.abs(x - a)))]
    return out


def eigen_map(
    surface: Surface,
    *,
    loss_levels: int = 15,
    title: str | None = None,
) -> go.Figure:
    """The non-convexity map of Li et al. 2018 (Fig. 6): ``|λ_min / λ_max|`` per grid point.

    Parameters
    ----------
    surface : Surface
        From ``landscape_nb.eigen_map`` (metrics ``eig_ratio``, ``lambda_max``,
        ``lambda_min``). Near 0 (dark): locally near-convex; large (bright): negative
        curvature comparable to the positive.
    loss_levels : int, default 15
        Contour lines of the loss drawn on top (0: none).
    title : str, optional

    Returns
    -------
    plotly.graph_objects.Figure
    """
    _check_surface(surface, ndim=2, where="plot.eigen_map")
    missing = [m for m in ("eig_ratio", "lambda_max", "lambda_min") if m not in surface.metrics]
    if missing:
        raise LandscapeError(
            f"plot.eigen_map: the surface has no {missing}; expected a surface from landscape_nb.eigen_map "
            "(compute_surface(..., quantity='hessian'))."
        )
    ratio = _transform(surface.metrics["eig_ratio"], log=False, clip=False)
    finite = ratio[np.isfinite(ratio)]
    zmax = float(finite.max()) if finite.size else 1.0
    custom = np.stack([np.asarray(surface.values(n), float)
                       for n in ("eig_ratio", "lambda_max", "lambda_min", "loss")], -1)
    fig = go.Figure(go.Heatmap(
        x=np.asarray(surface.x, float), y=np.asarray(surface.y, float), z=ratio, zmin=0.0,
        zmax=zmax if zmax > 0 else 1.0, colorscale=COLORSCALE, connectgaps=False, customdata=custom,
        colorbar=dict(title=dict(text="|λ<sub>min</sub>/λ<sub>max</sub>|")),
        hovertemplate=(f"{surface.x_label}: %{{x:.4g}}<br>{surface.y_label}: %{{y:.4g}}"
                       "<br>|λmin/λmax|: %{customdata[0]:.4g}<br>λmax: %{customdata[1]:.4g}"
                       "<br>λmin: %{customdata[2]:.4g}<br>loss: %{customdata[3]:.4g}<extra></extra>"),
        name="eigenvalue ratio",
    ))
    if loss_levels:
        z = display_values(surface)
        zmin, zmax_l = _range([z])
        fig.add_trace(go.Contour(
            x=np.asarray(surface.x, float), y=np.asarray(surface.y, float), z=z, showscale=False,
            contours_coloring="none", line=dict(color="white", width=1), hoverinfo="skip", name="loss",
            **_contour_spec(zmin, zmax_l, _check_levels(loss_levels)),
        ))
    fig.update_xaxes(title_text=surface.x_label)
    fig.update_yaxes(title_text=surface.y_label)
    fig.update_layout(title=_title(title, surface) or "non-convexity map |λmin/λmax|")
    return fig


def paths(
    profiles: Any,
    *,
    metric: str | None = None,
    log: bool = False,
    title: str | None = None,
) -> go.Figure:
    """Loss profiles of paths between two models on one axis, each named with its barrier.

    Parameters
    ----------
    profiles : BezierCurve or list of Surface
        A ``bezier_curve`` result (its curve and straight-line profiles), or 1D
        surfaces over t with t = 0 and t = 1 on the grid (e.g. interpolations with and
        without BN buffers). Names come from ``provenance["label"]``.
    metric : str, optional
        A metric to draw on a right axis (e.g. "accuracy").
    log : bool, default False
        Logarithmic loss axis.
    title : str, optional

    Returns
    -------
    plotly.graph_objects.Figure
    """
    from .sharpness import loss_barrier

    if isinstance(getattr(profiles, "profile", None), Surface):
        profiles = [profiles.line_profile, profiles.profile]
    surfaces = [profiles] if isinstance(profiles, Surface) else list(profiles)
    labelled = []
    for k, s in enumerate(surfaces):
        _check_surface(s, ndim=1, where=f"plot.paths (profile {k})")
        label = str(s.provenance.get("label", f"path {k}"))
        prov = {**s.provenance, "label": f"{label}, barrier {loss_barrier(s):.4g}"}
        labelled.append(Surface(s.x, None, s.loss, s.metrics, s.done, s.spec, prov))
    fig = line(labelled, metric=metric, log=log, title=title or "loss along paths between two models")
    fig.update_xaxes(title_text="t (0: first model, 1: second model)")
    return fig


def line_panels(
    groups: Sequence[Sequence[Surface]],
    *,
    titles: Sequence[str] | None = None,
    log: bool = False,
    radius: float | None = None,
    title: str | None = None,
) -> go.Figure:
    """Side-by-side panels of overlaid 1D slices, each legend entry with its sharpness
    (loss increase at ``radius`` and curvature at 0), e.g. raw vs filter-normalized
    directions through an original and a rescaled network (Dinh et al. 2017).

    Parameters
    ----------
    groups : list of lists of Surface
        One list of 1D surfaces per panel; names from ``provenance["label"]``.
    titles : list of str, optional
        One per panel.
    log : bool, default False
        Logarithmic loss axes.
    radius : float, optional
        Radius for the sharpness numbers (default: half the shorter side of the range).
    title : str, optional

    Returns
    -------
    plotly.graph_objects.Figure
    """
    from .sharpness import axis_sharpness

    groups = [list(g) for g in groups]
    if not groups or not all(groups):
        raise LandscapeError("plot.line_panels: expected a non-empty list of non-empty lists of 1D Surfaces.")
    titles = list(titles) if titles is not None else [f"panel {k + 1}" for k in range(len(groups))]
    if len(titles) != len(groups):
        raise LandscapeError(f"plot.line_panels: {len(titles)} titles for {len(groups)} panels; expected one each.")
    fig = make_subplots(rows=1, cols=len(groups), subplot_titles=titles)
    palette = qualitative.Plotly
    for col, group in enumerate(groups, start=1):
        for k, s in enumerate(group):
            _check_surface(s, ndim=1, where=f"plot.line_panels (panel {col}, surface {k})")
            sh = axis_sharpness(s, "x", radius)
            label = str(s.provenance.get("label", f"surface {k}"))
            fig.add_trace(go.Scatter(
                x=np.asarray(s.x, float), y=_transform(s.loss, log=False, clip=False), mode="lines",
                line=dict(color=palette[k % len(palette)], dash="solid" if k == 0 else "dash"),
                name=f"{label}: ΔL(r={sh.radius:.2g})={sh.increase:.3g}, L''(0)={sh.curvature:.3g}",
                legendgroup=str(col),
                hovertemplate=f"{s.x_label}: %{{x:.4g}}<br>loss: %{{y:.4g}}<extra>{label}</extra>",
            ), row=1, col=col)
        fig.update_xaxes(title_text=group[0].x_label, row=1, col=col)
        fig.update_yaxes(title_text="loss", type="log" if log else "linear", row=1, col=col)
    fig.update_layout(title=title, legend=dict(orientation="h", y=-0.25), height=480)
    return fig


__all__ += ["with_sharpness", "pca_contour", "eigen_map", "paths", "line_panels"]


# ---------------------------------------------------------------------------------------
# Live figures: built once for a grid, then refreshed in place as tiles stream in.
# ---------------------------------------------------------------------------------------

_LIVE_KEY = "landscape_nb_live"
LIVE_LEVELS = 30


@_doc
def live(
    surface: Surface,
    *,
    log: bool = False,
    clip: float | bool | None = None,
    metric: str | None = "accuracy",
    title: str | None = None,
) -> go.Figure:
    """A figure meant to be refreshed by `update` while a surface fills in tile by tile.

    2D: a rotatable 3D surface (contours projected on the floor) and a 2D contour plot
    side by side on one colour scale. 1D: loss and ``metric`` on twin axes. Points not
    computed yet are sent as null (NaN is not valid JSON), so they show as gaps.
    Wrap it in ``go.FigureWidget`` to watch it update in a notebook::

        fig = go.FigureWidget(lnb.plot.live(partial_surface))
        lnb.plot.update(fig, newer_surface)    # one batched message per call

    Parameters
    ----------
    surface : Surface
        A 1D or 2D landscape, possibly partial (NaN where not computed yet).
    %(log)s
    %(clip)s
    metric : str or None, default "accuracy"
        1D only: the metric on the right twin axis (skipped when the surface lacks it).
    %(title)s

    %(returns)s
    """
    _check_surface(surface, ndim=None, where="plot.live")
    _check_clip(clip, log)
    if surface.ndim == 1:
        fig = line(surface, metric=metric if metric in surface.metrics else None, log=log, title=title)
        fig.update_layout(height=420)
    else:
        fig = make_subplots(
            rows=1, cols=2, specs=[[{"type": "scene"}, {"type": "xy"}]],
            column_widths=[0.55, 0.45], horizontal_spacing=0.08,
            subplot_titles=["3D surface", "contours"],
        )
        empty = np.full(surface.loss.shape, np.nan)
        for col, (kind, levels) in enumerate((("surface", SURFACE_LEVELS), ("contour", LIVE_LEVELS)), 1):
            trace = _grid_trace(kind, surface, empty, None, None, levels=levels, contours=True)
            trace.coloraxis = "coloraxis"
            trace.name = f"loss {kind}"
            fig.add_trace(trace, row=1, col=col)
        fig.update_layout(
            title=_title(title, surface), height=520, margin=dict(l=10, r=10, t=70, b=40),
            coloraxis=dict(colorscale=COLORSCALE),
        )
    fig.update_layout(meta={_LIVE_KEY: {"ndim": surface.ndim, "log": bool(log),
                                        "metric": metric if surface.ndim == 1 else None}})
    return update(fig, surface, log=log, clip=clip)


def update(fig: go.Figure, surface: Surface, *, log: bool | None = None, clip: Any = None) -> go.Figure:
    """Write ``surface``'s current values into a figure made by `live`, in one batch.

    On a ``go.FigureWidget`` the changes travel to the browser as a single update
    message (``batch_update``); missing points are sent as null. The colour range,
    contour levels and the automatic clipping follow the points computed so far.
    ``log=None`` keeps the figure's current scale. Returns ``fig``.
    """
    meta = fig.layout.meta if isinstance(fig.layout.meta, Mapping) else {}
    info = meta.get(_LIVE_KEY)
    if not isinstance(info, Mapping):
        raise LandscapeError(
            f"plot.update: got a {type(fig).__name__} not made by plot.live; expected the figure "
            "returned by landscape_nb.plot.live(surface) (or a go.FigureWidget of it)."
        )
    _check_surface(surface, ndim=int(info["ndim"]), where="plot.update")
    log = bool(info.get("log")) if log is None else bool(log)
    _check_clip(clip, log)
    new_meta = {_LIVE_KEY: {**info, "log": log}}
    with fig.batch_update():
        if surface.ndim == 1:
            _update_line(fig, surface, log=log, metric=info.get("metric"))
        else:
            _update_grid(fig, surface, log=log, clip=clip)
        fig.layout.meta = new_meta
    return fig


def _update_line(fig, surf: Surface, *, log: bool, metric: str | None) -> None:
    fig.data[0].x = to_plotly_z(surf.x)
    fig.data[0].y = to_plotly_z(_transform(surf.loss, log=False, clip=False))
    if len(fig.data) > 1 and metric in surf.metrics:
        fig.data[1].x = to_plotly_z(surf.x)
        fig.data[1].y = to_plotly_z(_transform(surf.metrics[metric], log=False, clip=False))
    fig.layout.xaxis.title.text = surf.x_label
    fig.layout.yaxis.type = "log" if log else "linear"


def _update_grid(fig, surf: Surface, *, log: bool, clip: Any) -> None:
    z = display_values(surf, log=log, clip=clip)
    zmin, zmax = _range([z])
    z_json = to_plotly_z(z)
    custom = to_plotly_z(hover_customdata(surf))
    template = hover_template(surf)
    surface_trace, contour_trace = fig.data[0], fig.data[1]
    for trace in (surface_trace, contour_trace):
        trace.x = to_plotly_z(surf.x)
        trace.y = to_plotly_z(surf.y)
        trace.z = z_json
        trace.customdata = custom
        trace.hovertemplate = template
    # plotly.js's WebGL surface fails on a z with no number at all: hide it until one arrives
    surface_trace.visible = zmin is not None
    contour_trace.update(_contour_spec(zmin, zmax, LIVE_LEVELS))
    spec = _contour_spec(zmin, zmax, SURFACE_LEVELS).get("contours")
    if spec:
        surface_trace.contours.z.update(spec)
    fig.layout.coloraxis.update(
        cmin=zmin, cmax=zmax,
        colorbar=dict(title=dict(text=_colorbar_title(log, zmax, surf.loss) if zmax is not None
                                 else _axis_label(log))),
    )
    fig.layout.scene.update(xaxis_title=surf.x_label, yaxis_title=surf.y_label, zaxis_title=_axis_label(log))
    fig.layout.xaxis.title.text = surf.x_label
    fig.layout.yaxis.title.text = surf.y_label
