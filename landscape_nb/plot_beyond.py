"""Figures for the analyses beyond the paper's: Hessian spectral density, persistence, and the
optimizer's path animated over the contours.

To be moved into the ``plot`` package as ``plot.spectrum``, ``plot.persistence`` and
``plot.animate``. Like every builder, each takes the data first and styling as keyword-only
arguments, returns a new figure and never shows it. This module imports neither torch,
Dask nor ipywidgets.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.colors import qualitative

from .errors import LandscapeError

__all__ = ["spectrum", "persistence", "animate"]

DENSITY_FLOOR = 1e-8  # log-scale spectra show densities down to this fraction of the peak
DIMENSION_NAMES = {0: "basins (H0)", 1: "loops (H1)", 2: "voids (H2)"}


def spectrum(spec: Any, *, log: bool = True, ritz: bool = True, title: str | None = None) -> go.Figure:
    """The Hessian eigenvalue density from ``hessian_spectrum`` (Ghorbani et al. 2019, Fig. 1 style).

    Parameters
    ----------
    spec : Spectrum
        From ``landscape_nb.hessian_spectrum``.
    log : bool, default True
        Log-scale density (the bulk near zero and the few outliers both visible); densities
        below 1e-8 of the peak are drawn at that floor.
    ritz : bool, default True
        Mark every probe's Ritz values (the quadrature nodes) along the bottom.
    title : str, optional
        Figure title; default says the probes, steps and products used.

    Returns
    -------
    plotly.graph_objects.Figure
    """
    for name in ("grid", "density", "ritz_values", "ritz_weights"):
        if not hasattr(spec, name):
            raise LandscapeError(f"spectrum of a {type(spec).__name__} without {name!r}; expected the Spectrum "
                                 "returned by landscape_nb.hessian_spectrum")
    grid, density = np.asarray(spec.grid, float), np.asarray(spec.density, float)
    peak = float(np.nanmax(density)) if np.isfinite(density).any() else 1.0
    floor = DENSITY_FLOOR * peak if peak > 0 else DENSITY_FLOOR
    y = np.maximum(density, floor) if log else density
    fig = go.Figure(go.Scatter(x=grid, y=y, mode="lines", name="density", line=dict(width=2),
                               hovertemplate="λ = %{x:.4g}<br>density %{y:.3g}<extra></extra>"))
    if ritz:
        theta, tau = np.asarray(spec.ritz_values, float), np.asarray(spec.ritz_weights, float)
        keep = np.isfinite(theta)
        fig.add_trace(go.Scatter(
            x=theta[keep], y=np.full(int(keep.sum()), floor if log else 0.0), mode="markers", name="Ritz values",
            marker=dict(symbol="line-ns-open", size=12, color="black"), customdata=tau[keep],
            hovertemplate="Ritz value %{x:.4g}<br>weight %{customdata:.3g}<extra></extra>"))
    n_probes, n_steps = np.asarray(spec.ritz_values).shape
    default = (f"Hessian eigenvalue density<br><sup>SLQ: {n_probes} probes × {n_steps} Lanczos steps, "
               f"{getattr(spec, 'n_products', n_probes * n_steps)} Hessian-vector products</sup>")
    fig.update_layout(title=title or default, showlegend=ritz)
    fig.update_xaxes(title_text="eigenvalue λ")
    fig.update_yaxes(title_text="density", type="log" if log else "linear")
    return fig


def _extent(diagrams: Sequence[np.ndarray], threshold: float) -> tuple[float, float]:
    """The lowest finite value, and the level where classes that never die are drawn: above
    every finite value and above the threshold line's start."""
    finite = np.concatenate([d[np.isfinite(d)] for d in diagrams if d.size] or [np.zeros(1)])
    lo, hi = float(finite.min()), float(finite.max())
    span = max(hi - lo, threshold) or 1.0
    return lo, max(hi, lo + threshold) + 0.1 * span


def persistence(topology: Any, *, kind: str = "diagram", dims: Sequence[int] | None = None,
                title: str | None = None) -> go.Figure:
    """Persistence diagram or barcode of a loss surface's sublevel filtration.

    Parameters
    ----------
    topology : Topology
        From ``landscape_nb.topology`` (or ``Surface.topology()``).
    kind : {"diagram", "barcode"}
        ``"diagram"``: one point (birth, death) per class, the diagonal, and the dashed line
        ``death = birth + threshold`` below which basins count as noise. ``"barcode"``: one
        horizontal bar per class from birth to death, longest-lived at the top of each dimension.
        Classes that never die are drawn at a level above every finite value (marked "∞").
    dims : sequence of int, optional
        Homology dimensions to show; default all (0: basins, 1: loops, 2: voids).
    title : str, optional
        Figure title; default gives the number of basins, the threshold and the SMAD score.

    Returns
    -------
    plotly.graph_objects.Figure
    """
    if not hasattr(topology, "diagrams"):
        raise LandscapeError(f"persistence of a {type(topology).__name__}; expected the Topology returned by "
                             "landscape_nb.topology or Surface.topology()")
    if kind not in ("diagram", "barcode"):
        raise LandscapeError(f"kind={kind!r}; expected 'diagram' or 'barcode'")
    diagrams = [np.asarray(d, float).reshape(-1, 2) for d in topology.diagrams]
    dims = list(range(len(diagrams))) if dims is None else [int(d) for d in dims]
    bad = [d for d in dims if not 0 <= d < len(diagrams)]
    if bad:
        raise LandscapeError(f"dims={dims}; expected dimensions in 0..{len(diagrams) - 1} for this "
                             f"{len(diagrams)}D grid")
    threshold = float(getattr(topology, "threshold", 0.0))
    lo, top = _extent(diagrams, threshold)
    fig = go.Figure()
    colors = qualitative.Plotly
    row = 0
    for d in dims:
        pts = diagrams[d]
        birth, death = pts[:, 0], pts[:, 1]
        shown = np.where(np.isfinite(death), death, top)
        text = ["∞" if not np.isfinite(v) else f"{v:.4g}" for v in death]
        name = DIMENSION_NAMES.get(d, f"H{d}")
        if kind == "diagram":
            fig.add_trace(go.Scatter(
                x=birth, y=shown, mode="markers", name=name, text=text,
                marker=dict(color=colors[d % len(colors)], size=8,
                            symbol=["triangle-up" if not np.isfinite(v) else "circle" for v in death]),
                hovertemplate="birth %{x:.4g}<br>death %{text}<extra>" + name + "</extra>"))
        else:
            order = np.argsort(-(shown - birth), kind="stable")
            xs, ys = [], []
            for k, i in enumerate(order):
                xs += [birth[i], shown[i], None]
                ys += [row + k, row + k, None]
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name=name,
                                     line=dict(color=colors[d % len(colors)], width=4),
                                     hovertemplate="%{x:.4g}<extra>" + name + "</extra>"))
            row += len(order) + 1
    if kind == "diagram":
        fig.add_trace(go.Scatter(x=[lo, top], y=[lo, top], mode="lines", name="diagonal",
                                 line=dict(color="gray", width=1), hoverinfo="skip"))
        if threshold > 0:
            fig.add_trace(go.Scatter(x=[lo, top - threshold], y=[lo + threshold, top], mode="lines",
                                     name=f"threshold {threshold:.3g}", hoverinfo="skip",
                                     line=dict(color="gray", width=1, dash="dash")))
        fig.add_hline(y=top, line=dict(color="lightgray", width=1), annotation_text="∞",
                      annotation_position="right")
        fig.update_xaxes(title_text="birth (loss)")
        fig.update_yaxes(title_text="death (loss)")
    else:
        fig.update_xaxes(title_text="loss")
        fig.update_yaxes(title_text="class", showticklabels=False)
    if title is None and hasattr(topology, "n_basins"):
        smad = getattr(topology, "smad", math.nan)
        title = (f"{topology.n_basins} basin(s) deeper than {topology.threshold:.3g}"
                 + ("" if not np.isfinite(smad) else f"; SMAD {smad:.3g}"))
    fig.update_layout(title=title)
    return fig


def _path_field(path: Any, name: str):
    if isinstance(path, dict):
        return path.get(name)
    return getattr(path, name, None)


def animate(surface: Any, path: Any, *, levels: int = 30, log: bool = False, clip: Any = None,
            duration: int = 300, title: str | None = None) -> go.Figure:
    """The optimizer's path drawn checkpoint by checkpoint over the loss contours.

    One Plotly frame per checkpoint (frame k shows checkpoints 0..k and marks k), with a
    play/pause button and a slider; ``export_html`` writes it as a standalone animated page.

    Parameters
    ----------
    surface : Surface
        A 2D surface (e.g. on the trajectory's PCA plane, ``TrajectoryRecorder.pca_directions``).
    path : ProjectedPath or dict
        ``x``, ``y`` (one entry per checkpoint), optional ``labels``, ``distance`` and ``loss``
        (from ``project_trajectory`` or ``TrajectoryRecorder.project``).
    levels, log, clip
        As for ``plot.contour``.
    duration : int, default 300
        Milliseconds per frame when playing.
    title : str, optional
        Figure title.

    Returns
    -------
    plotly.graph_objects.Figure
    """
    from .plot import contour

    x, y = _path_field(path, "x"), _path_field(path, "y")
    if x is None or y is None:
        raise LandscapeError(f"path of type {type(path).__name__} without x and y; expected a ProjectedPath "
                             "(from project_trajectory) or a dict with 'x' and 'y' arrays")
    x, y = np.asarray(x, float).ravel(), np.asarray(y, float).ravel()
    n = len(x)
    if n == 0 or len(y) != n:
        raise LandscapeError(f"path with {len(x)} x and {len(y)} y values; expected one (x, y) per checkpoint, "
                             "at least one")
    if isinstance(duration, bool) or not isinstance(duration, (int, np.integer)) or duration < 1:
        raise LandscapeError(f"duration={duration!r}; expected milliseconds per frame, an integer ≥ 1")
    labels = _path_field(path, "labels")
    labels = [f"checkpoint {k}" for k in range(n)] if labels is None or len(labels) == 0 else [str(s) for s in labels]
    if len(labels) != n:
        raise LandscapeError(f"{len(labels)} labels for {n} checkpoints; expected one label per checkpoint")
    hover = [labels[k] for k in range(n)]
    for name, fmt in (("distance", "distance from plane {:.4g}"), ("loss", "true loss {:.4g}")):
        values = _path_field(path, name)
        if values is not None:
            values = np.asarray(values, float).ravel()
            hover = [f"{h}<br>{fmt.format(v)}" for h, v in zip(hover, values)]
    fig = contour(surface, levels=levels, log=log, clip=clip, title=title)
    base = len(fig.data)

    def traces(k: int) -> list[go.Scatter]:
        return [go.Scatter(x=x[:k + 1], y=y[:k + 1], mode="lines+markers", name="path", text=hover[:k + 1],
                           line=dict(color="black", width=1.5), marker=dict(size=6, color="red"),
                           hovertemplate="%{text}<br>x %{x:.4g}, y %{y:.4g}<extra></extra>", showlegend=False),
                go.Scatter(x=[x[k]], y=[y[k]], mode="markers", name="current", text=[hover[k]],
                           marker=dict(size=14, color="red", line=dict(width=2, color="white")),
                           hovertemplate="%{text}<extra></extra>", showlegend=False)]

    for t in traces(0):
        fig.add_trace(t)
    fig.frames = [go.Frame(data=traces(k), traces=[base, base + 1], name=str(k)) for k in range(n)]
    step_args = {"mode": "immediate", "frame": {"duration": duration, "redraw": False}, "transition": {"duration": 0}}
    fig.update_layout(
        updatemenus=[dict(type="buttons", direction="left", x=0.0, y=-0.2, xanchor="left", yanchor="top",
                          showactive=False, buttons=[
                              dict(label="▶ play", method="animate",
                                   args=[None, {**step_args, "fromcurrent": True}]),
                              dict(label="❚❚ pause", method="animate",
                                   args=[[None], {**step_args, "frame": {"duration": 0, "redraw": False}}])])],
        sliders=[dict(active=0, x=0.3, y=-0.18, len=0.7, xanchor="left", yanchor="top",
                      currentvalue=dict(visible=False), pad=dict(t=0),
                      steps=[dict(label=labels[k], method="animate", args=[[str(k)], step_args])
                             for k in range(n)])],
        margin=dict(b=140),
    )
    return fig
