"""Eigenvalue spectral density of the Hessian (``hessian_spectrum``) as a figure."""
from __future__ import annotations

from typing import Any

import numpy as np
import plotly.graph_objects as go

from ..errors import LandscapeError
from ._common import note_sources

__all__ = ["spectrum"]

DENSITY_FLOOR = 1e-8  # log-scale spectra show densities down to this fraction of the peak


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
    note_sources(fig, [spec])  # what it was computed from (Spectrum.provenance), kept by export_html
    return fig
