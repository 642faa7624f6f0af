"""An optimizer's path animated checkpoint by checkpoint over the loss contours."""
from __future__ import annotations

from typing import Any

import numpy as np
import plotly.graph_objects as go

from ..errors import LandscapeError
from ._common import _check_surface, refuse_log_of_non_positive
from .figures import _check_path_fits, add_off_plane_note, contour

__all__ = ["animate"]


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
    _check_surface(surface, ndim=2, where="plot.animate")  # a 1-D line first: its path has no y (plot.line draws it)
    refuse_log_of_non_positive(log, [surface.loss], "plot.animate")
    _check_path_fits(surface, path)  # a path projected onto other directions is not on this plane (trial s37)
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

    add_off_plane_note(fig, surface, path, labels)
    for t in traces(0):
        fig.add_trace(t)
    fig.frames = [go.Frame(data=traces(k), traces=[base, base + 1], name=str(k)) for k in range(n)]
    # the controls hang below the x axis's tick labels and (up to two-line) title
    height, bottom = 540, 170
    below = -80 / (height - 100 - bottom)  # 80 px under the plot, in plot fractions
    # redraw: without it plotly.js removed every contour line at the first frame played (trial s54: a path moving
    # over an empty plane, in the exported page's autoplay and at each ▶ play)
    step_args = {"mode": "immediate", "frame": {"duration": duration, "redraw": True}, "transition": {"duration": 0}}
    fig.update_layout(
        updatemenus=[dict(type="buttons", direction="left", x=0.0, y=below, xanchor="left", yanchor="top",
                          showactive=False, buttons=[
                              dict(label="▶ play", method="animate",
                                   args=[None, {**step_args, "fromcurrent": True}]),
                              dict(label="❚❚ pause", method="animate",
                                   args=[[None], {**step_args, "frame": {"duration": 0, "redraw": True}}])])],
        sliders=[dict(active=0, x=0.3, y=below, len=0.7, xanchor="left", yanchor="top",
                      currentvalue=dict(visible=False), pad=dict(t=0),
                      steps=[dict(label=labels[k], method="animate", args=[[str(k)], step_args])
                             for k in range(n)])],
        height=height, margin=dict(b=bottom),
    )
    return fig
