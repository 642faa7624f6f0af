"""Persistence diagrams and barcodes of a surface's sublevel-set topology (``Surface.topology``)."""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.colors import qualitative

from ..errors import LandscapeError
from ._common import note_sources

__all__ = ["persistence"]

DIMENSION_NAMES = {0: "basins (H0)", 1: "loops (H1)", 2: "voids (H2)"}


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
        horizontal bar per class from birth to death, longest-lived at the top of each dimension
        (named on the y axis), those shorter than the threshold pale (noise).
        Classes that never die are drawn up to a level above every finite value (the line marked
        "∞"), ending in an arrow.
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
    groups: list[tuple[float, str]] = []  # a barcode's dimensions: the middle row of each, its name
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
            colour = colors[d % len(colors)]
            for noise in (False, True):  # the bars of classes shorter-lived than the threshold: pale
                xs, ys, hover = [], [], []
                for k, i in enumerate(order):
                    if (np.isfinite(death[i]) and death[i] - birth[i] < threshold) != noise:
                        continue
                    life = "∞" if not np.isfinite(death[i]) else f"{death[i] - birth[i]:.4g}"
                    words = f"birth {birth[i]:.4g}<br>death {text[i]}<br>lifetime {life}"
                    xs += [birth[i], shown[i], None]
                    ys += [row + k, row + k, None]
                    hover += [words, words, None]
                if xs:
                    fig.add_trace(go.Scatter(
                        x=xs, y=ys, mode="lines", name=name + (" (noise)" if noise else ""), text=hover,
                        line={"color": colour, "width": 4}, opacity=0.35 if noise else 1.0,
                        hovertemplate="%{text}<extra>" + name + "</extra>"))
            endless = [k for k, i in enumerate(order) if not np.isfinite(death[i])]
            if endless:  # never dies: an arrow where its bar is cut
                fig.add_trace(go.Scatter(x=[top] * len(endless), y=[row + k for k in endless], mode="markers",
                                         marker={"symbol": "triangle-right", "size": 11, "color": colour},
                                         showlegend=False, hoverinfo="skip"))
            if len(order):  # a dimension with no class: no row, no label
                groups.append((row + (len(order) - 1) / 2, name))
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
        if any(not np.all(np.isfinite(diagrams[d][:, 1])) for d in dims):  # a class that never dies is cut here
            fig.add_vline(x=top, line={"color": "lightgray", "width": 1}, annotation_text="∞",
                          annotation_position="top")
        span = top - lo or 1.0
        fig.update_xaxes(title_text="loss", range=[lo - 0.03 * span, top + 0.04 * span])
        fig.update_yaxes(autorange="reversed", tickvals=[g[0] for g in groups], ticktext=[g[1] for g in groups],
                         showgrid=False, zeroline=False)  # row 0, the longest-lived, at the top
        fig.update_layout(showlegend=True)
    if title is None and hasattr(topology, "n_basins"):
        smad = getattr(topology, "smad", math.nan)
        title = (f"{topology.n_basins} basin(s) deeper than {topology.threshold:.3g}"
                 + ("" if not np.isfinite(smad) else f"; SMAD {smad:.3g}"))
    fig.update_layout(title=title)
    note_sources(fig, [topology])  # the surface's provenance, where the topology was computed from one
    return fig
