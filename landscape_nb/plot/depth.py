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
from .figures import compare


def panel_title(row) -> str:
    """``"ResNet-56, no skip"`` and its numbers on a second line (HTML)."""
    radius = f"≥{row.basin_radius:.2f}" if row.basin_capped else f"{row.basin_radius:.2f}"
    fraction = "–" if row.nonconvex_fraction != row.nonconvex_fraction else f"{row.nonconvex_fraction:.0%}"
    return (
        f"ResNet-{row.depth}, {'skip' if row.skip else 'no skip'} (acc {row.test_accuracy:.2f})<br>"
        f"<sub>{row.n_minima} minima · basin r {radius} · non-convex {fraction}</sub>"
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
        the accuracy, minima count, basin radius and non-convex fraction.

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
    shared = compare([comparison.surfaces[r.name] for r in order], kind=kind, levels=levels, log=log,
                     titles=[r.name for r in order])
    spec = {"type": "scene"} if kind == "surface" else {}
    n_cols = len(depths)
    titles = [panel_title(grid[(d, s)]) if (d, s) in grid else "" for s in (True, False) for d in depths]
    fig = make_subplots(rows=2, cols=n_cols, specs=[[spec] * n_cols] * 2, subplot_titles=titles,
                        vertical_spacing=0.14, horizontal_spacing=0.06)
    for k, (row, trace) in enumerate(zip(order, shared.data)):
        i_row, i_col = (1 if row.skip else 2), depths.index(row.depth) + 1
        fig.add_trace(trace, row=i_row, col=i_col)
        if kind != "surface":
            surface = comparison.surfaces[row.name]
            fig.update_xaxes(title_text=surface.x_label, row=i_row, col=i_col, ticks="outside")
            fig.update_yaxes(title_text=surface.y_label, row=i_row, col=i_col, ticks="outside")
    fig.update_layout(
        coloraxis=shared.layout.coloraxis,
        height=820,
        width=max(900, 380 * n_cols),
        title=dict(text="Depth without skip connections: filter-normalized planes on one colour scale "
                        "(Li et al. 2018, Fig. 5)", font=dict(size=14)),
    )
    return fig


__all__ = ["depth_figure", "panel_title"]
