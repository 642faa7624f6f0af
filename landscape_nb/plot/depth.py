"""Figure of the depth comparison (Li et al. 2018, Fig. 5): plotly only, no torch.

One figure: with skip connections on the top row, without on the bottom, depth growing
to the right, every panel on one colour scale (the traces come from ``plot.compare``,
so the automatic cap and colour bar are the same as for any comparison), each titled
with the numbers ``landscape_nb.depth`` measured on it.
"""
from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..errors import LandscapeError
from ._common import (
    AXES_NOTE,
    NOTE_LINE_PX,
    PARTIAL_NOTE,
    TITLE_FONT,
    fit_title,
    plot_area,
)
from .figures import compare

_HEIGHT = 820
# Room in px around a panel, as Chromium draws plotly.js's default font: outside ticks and their
# labels take 10-24 px under a panel and 19-43 px left of one ("−0.5"); an axis title starts 11 px
# (x) or 17 px (y) beyond those, 18 px a line; a panel title (a 16 px line and a 70 % <sub> line)
# is 40 px tall, above its panel. Between rows and columns these must not meet.
_X_TICKS_PX, _Y_TICKS_PX = 24, 44
_AXIS_TITLE_PX, _TITLE_LINE_PX = 17, 18
_PANEL_TITLE_PX = 40
_CLEAR_PX = 10
_NOTES = (PARTIAL_NOTE, AXES_NOTE)  # `compare`'s notes above the plot: kept above the two-line panel titles


def panel_title(row) -> str:
    """``"ResNet-56, no skip"`` and its numbers on a second line (HTML); the non-convex fraction only where an
    eigen-map gave one (a comparison without them read "non-convex –" with nothing to say why, trial s53b)."""
    radius = f"≥{row.basin_radius:.2f}" if row.basin_capped else f"{row.basin_radius:.2f}"
    fraction = ("" if row.nonconvex_fraction != row.nonconvex_fraction else
                f" · non-convex {row.nonconvex_fraction:.0%}")
    minima = f"{row.n_minima} {'minimum' if row.n_minima == 1 else 'minima'}"
    zoo = row.name == f"resnet{row.depth}{'' if row.skip else '-noskip'}-digits"  # your own nets: their names
    net = f"ResNet-{row.depth}, {'skip' if row.skip else 'no skip'}" if zoo else row.name
    accuracy = "" if row.test_accuracy != row.test_accuracy else f" (acc {row.test_accuracy:.2f})"
    return (
        f"{net}{accuracy}<br>"
        f"<sub>{minima} · basin r {radius}{fraction}</sub>"
    )


def depth_figure(comparison, *, kind: str = "contour", levels: int = 25, log: bool = False) -> go.Figure:
    """The comparison's loss planes, skip (top) vs no skip (bottom), depth left to right.

    Parameters
    ----------
    comparison : landscape_nb.depth.DepthComparison
        From ``depth_comparison``; its surfaces are 2D planes.
    kind : {"contour", "heatmap", "surface"}, default "contour"
    levels : int, default 25
        Contour levels (as in ``plot.compare``).
    log : bool, default False
        Colour by log10 of the loss.

    Returns
    -------
    plotly.graph_objects.Figure
        2 rows × (number of depths) panels sharing one colour axis; panel titles carry
        the accuracy, minima count, basin radius and non-convex fraction. 2D panels with
        the same direction labels share one x and one y axis title (else each panel has
        its own, wrapped to it), and rows and columns are spaced so that no panel title,
        tick label or axis title runs into a neighbouring panel's.

    Raises
    ------
    LandscapeError
        If the comparison has no rows.

    References
    ----------
    Li et al., "Visualizing the Loss Landscape of Neural Nets", NeurIPS 2018, Fig. 5.
    """
    rows = list(getattr(comparison, "rows", ()))
    if not rows:
        raise LandscapeError(
            f"depth_figure: got {type(comparison).__name__} with no rows; expected the result of "
            "landscape_nb.depth.depth_comparison()."
        )
    depths = sorted({r.depth for r in rows})
    grid = {(r.depth, r.skip): r for r in rows}
    order = [grid[(d, s)] for s in (True, False) for d in depths if (d, s) in grid]
    surfaces = [comparison.surfaces[r.name] for r in order]
    shared = compare(surfaces, kind=kind, levels=levels, log=log, titles=[r.name for r in order])
    spec = {"type": "scene"} if kind == "surface" else {}
    n_cols = len(depths)
    width = max(900, 380 * n_cols)
    notes = sorted((a for a in shared.layout.annotations if a.name in _NOTES), key=lambda a: a.yshift or 0)
    n_lines = sum(1 + str(a.text).count("<br>") for a in notes)
    top = 2 * (_PANEL_TITLE_PX + NOTE_LINE_PX * n_lines) + 20  # px: the title's baseline is at half of it
    area_w, area_h = plot_area(width=width, height=_HEIGHT, margin={"t": top})
    flat = kind != "surface"
    # one axis title for every panel when they agree (as in plot.compare), else each its own, wrapped to it
    shared_x = flat and len({s.x_label for s in surfaces}) == 1
    shared_y = flat and len({s.y_label for s in surfaces}) == 1
    h_space, v_space = _spacing(n_cols, area_w, area_h, flat=flat, x_lines=0, y_lines=0)
    for _ in range(3):  # wrapped titles need more room between panels, which narrows the panels
        panel_w, panel_h = area_w * (1 - h_space * (n_cols - 1)) / n_cols, area_h * (1 - v_space) / 2
        x_titles = {r.name: fit_title(comparison.surfaces[r.name].x_label, panel_w) for r in order}
        y_titles = {r.name: fit_title(comparison.surfaces[r.name].y_label, panel_h) for r in order}
        x_lines = 0 if shared_x or not flat else max(t.count("<br>") + 1 for t in x_titles.values())
        y_lines = 0 if shared_y or not flat else max(t.count("<br>") + 1 for t in y_titles.values())
        h_space, v_space = _spacing(n_cols, area_w, area_h, flat=flat, x_lines=x_lines, y_lines=y_lines)
    titles = [panel_title(grid[(d, s)]) if (d, s) in grid else "" for s in (True, False) for d in depths]
    fig = make_subplots(rows=2, cols=n_cols, specs=[[spec] * n_cols] * 2, subplot_titles=titles,
                        vertical_spacing=v_space, horizontal_spacing=h_space)
    for k, row in enumerate(order):
        i_row, i_col = (1 if row.skip else 2), depths.index(row.depth) + 1
        # by panel, not by position: a panel can hold a second trace, its isolated points' markers (trial s35)
        for trace in shared.select_traces(row=1, col=k + 1):
            fig.add_trace(trace, row=i_row, col=i_col)
        if not flat:  # compare's scene axes (titles, z ticks): the panels' own said "x" and "y" (trial s57)
            theirs = shared.layout["scene" if k == 0 else f"scene{k + 1}"]
            n = (i_row - 1) * n_cols + i_col
            fig.layout["scene" if n == 1 else f"scene{n}"].update(xaxis=theirs.xaxis, yaxis=theirs.yaxis,
                                                                   zaxis=theirs.zaxis)
        if flat:
            fig.update_xaxes(title_text=None if shared_x else x_titles[row.name], row=i_row, col=i_col,
                             ticks="outside")
            fig.update_yaxes(title_text=None if shared_y else y_titles[row.name], row=i_row, col=i_col,
                             ticks="outside")
    if shared_x:  # under the bottom row's tick labels
        fig.add_annotation(text=fit_title(surfaces[0].x_label, area_w), xref="paper", yref="paper", x=0.5, y=0.0,
                           xanchor="center", yanchor="top", yshift=-_X_TICKS_PX - 6, showarrow=False,
                           font={"size": TITLE_FONT}, name="x title")
    if shared_y:  # left of the left column's tick labels
        fig.add_annotation(text=fit_title(surfaces[0].y_label, area_h), xref="paper", yref="paper", x=0.0, y=0.5,
                           xanchor="right", yanchor="middle", xshift=-_Y_TICKS_PX - 6, textangle=-90,
                           showarrow=False, font={"size": TITLE_FONT}, name="y title")
    shift = _PANEL_TITLE_PX + 4
    for note in notes:  # e.g. "partial: ...": above the panel titles, the figure's title above them
        fig.add_annotation(note, yshift=shift)
        shift += NOTE_LINE_PX * (1 + str(note.text).count("<br>"))
    fig.update_layout(
        coloraxis=shared.layout.coloraxis,
        meta=shared.layout.meta,  # the parameters held fixed (`note_sources`)
        margin={"t": top},
        height=_HEIGHT,
        width=width,
        title=dict(text="Depth without skip connections: filter-normalized planes on one colour scale "
                        "(Li et al. 2018, Fig. 5)", font=dict(size=14)),
    )
    return fig


def _spacing(n_cols: int, area_w: float, area_h: float, *, flat: bool, x_lines: int,
             y_lines: int) -> tuple[float, float]:
    """``horizontal_spacing`` and ``vertical_spacing`` (fractions of the plotting area, at
    least 0.06 and 0.14) that keep the labels of one panel off the next: a panel's y tick
    labels and ``y_lines`` of title off the panel on its left, a bottom-row title off the
    top row's x tick labels and ``x_lines`` of title (2D panels only: 3D scenes hold
    their labels)."""
    def title(lines: int) -> int:
        return _AXIS_TITLE_PX + _TITLE_LINE_PX * lines if lines else 0

    across = (_Y_TICKS_PX + title(y_lines) if flat else 0) + _CLEAR_PX
    down = (_X_TICKS_PX + title(x_lines) if flat else 0) + _PANEL_TITLE_PX + _CLEAR_PX
    h_space = max(0.06, across / area_w) if n_cols > 1 else 0.06
    return min(0.3, h_space), min(0.3, max(0.14, down / area_h))


__all__ = ["depth_figure", "panel_title"]
