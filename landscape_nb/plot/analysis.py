"""Figures beyond random planes: sharpness annotations, trajectory-PCA contours, the
Hessian eigenvalue-ratio map, loss along paths between two minimizers and side-by-side
1D slices with their sharpness (Li et al., "Visualizing the Loss Landscape of Neural
Nets", NeurIPS 2018; Garipov et al. 2018; Dinh et al. 2017).

Imports neither torch, Dask nor ipywidgets.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from ..errors import LandscapeError, check_choice
from ..sharpness import axis_sharpness, curvature_text, loss_barrier, sharpness_text
from ..surface import Surface
from ._common import (
    COLORSCALE,
    _check_levels,
    _check_surface,
    _contour_spec,
    _doc,
    _range,
    _title,
    _transform,
    as_written,
    clip_limit,
    display_values,
    fit_title,
    line_mode,
    log_ticks,
    note_partial,
    note_sources,
    plot_area,
    refuse_log_of_non_positive,
    template_text,
)
from .figures import (
    _trajectory_field,
    add_off_plane_note,
    centre_trace,
    contour,
    line,
    nearest_grid_points,
)


@_doc
def with_sharpness(fig: go.Figure, surface: Surface, *, radius: float | None = None) -> go.Figure:
    """A copy of ``fig`` with ``surface``'s sharpness numbers as an annotation in the
    top-left corner: the largest loss rise within ``radius`` and the curvature L''(0) along each
    axis through the centre (see ``Surface.sharpness``).

    Parameters
    ----------
    %(fig)s
    surface : Surface
        The 1D or 2D landscape drawn in ``fig``, centred at the model (0 on each axis).
    radius : float, optional
        Distance from the centre, in step-size units, at which the loss increase is read;
        default: half the shorter side of the grid's range.

    Returns
    -------
    plotly.graph_objects.Figure
        A new figure; ``fig`` is left unchanged.

    Raises
    ------
    LandscapeError
        If the grid does not contain the centre or ``radius`` is not a positive distance
        within it.

    References
    ----------
    %(li2018)s
    """
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
    """Contour of a trajectory-PCA plane with the projected optimizer path (Li et al. 2018,
    Fig. 9 [1]_).

    Axes are labelled with each direction's explained variance (from the surface's
    labels). Each checkpoint's marker shows its distance from the plane (colour and
    size) and its hover text the true loss next to the loss drawn under it, so a
    checkpoint far off the plane is not mistaken for a point on it.

    Parameters
    ----------
    %(surface)s
    path : ProjectedPath or dict
        From ``project_trajectory``: ``x``, ``y`` (step-size units) and ``distance``
        (weight-space distance from the plane), optional ``loss`` (true loss), ``norm``
        (distance from the final model) and ``labels``; each of shape ``(n_checkpoints,)``.
    %(levels)s
    %(log)s
    %(clip)s
    %(title)s

    %(returns)s

    %(raises)s
        Also if %(bad_clip)s, ``levels`` is not a positive integer, or ``path`` lacks
        ``x``/``y`` or its arrays differ in length.

    References
    ----------
    %(li2018)s
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
            nearest_grid_points(surface, trace.x, trace.y)["loss"]]
    trace.customdata = np.stack(cols, axis=-1)
    trace.hovertemplate = (  # what the path does not hold is left out, not shown as NaN
        "%{text}<br>x: %{x:.4g}<br>y: %{y:.4g}"
        + ("<br>distance from plane: %{customdata[0]:.4g}" if distance is not None else "")
        + (" (from final: %{customdata[1]:.4g})" if distance is not None and norm is not None else "")
        + ("<br>true loss: %{customdata[2]:.4g}" if true_loss is not None else "")
        + "<br>plane's loss at the nearest grid point: %{customdata[3]:.4g}<extra>trajectory</extra>"
    )
    centre = centre_trace(surface)
    if centre is not None:
        fig.add_trace(centre)
    add_off_plane_note(fig, surface, path, list(trace.text))
    return fig


# the colour scale's top: ratios from it up share its colour, as in the reference's plot_2d_eig_ratio (vmin=0,
# vmax=.5; Li et al. 2018, Fig. 6), so maps compare by colour; scaled to each map's largest ratio, a convex model's
# rounding noise (|λmin/λmax| ~ 1e-8) filled the whole scale and read as non-convex (trial s53)
EIG_RATIO_TOP = 0.5


@_doc
def eigen_map(
    surface: Surface,
    *,
    loss_levels: int = 15,
    title: str | None = None,
    ratio: str = "negative",
) -> go.Figure:
    """The non-convexity map of Li et al. 2018 (Fig. 6 [1]_): ``|λ_min / λ_max|``, 0 where λ_min ≥ 0
    (``ratio="negative"``), per grid point, with the loss contours on top. Of a line (``eigen_map(...,
    y=None)``): the loss above, ``λ_max`` and ``λ_min`` below it with 0 marked, the ratio in the hover.

    The map is drawn from ``lambda_max`` and ``lambda_min`` (`landscape_nb.hessian.eig_ratio`), not from the
    surface's ``eig_ratio``, whose definition depends on how it was made: ``compute_surface(...,
    quantity="hessian")`` and the reference's files store ``|λ_min/λ_max|`` as written at every point
    (``"abs"``), which drew a convex least-squares fit as non-convex everywhere.

    Parameters
    ----------
    surface : Surface
        A 2D (or 1D) surface from ``landscape_nb.eigen_map`` (metrics ``eig_ratio``,
        ``lambda_max`` and ``lambda_min``, each of shape ``(len(y), len(x))``; the
        eigenvalues in loss units per squared step). The colours span 0 to `EIG_RATIO_TOP` (0.5) on every
        map, as the reference's ``plot_2d_eig_ratio`` does, so that maps compare by colour: near 0 (dark),
        locally near-convex; 0.5 and more (bright, the colour bar's top then says "≥ 0.5"), negative
        curvature comparable to the positive. Hovering gives each point's ratio and eigenvalues.
    loss_levels : int, default 15
        Contour lines of the loss drawn on top (0: none).
    %(title)s
    ratio : {"negative", "abs"}, default "negative"
        ``"abs"`` draws ``|λ_min/λ_max|`` at every point, as the reference's ``plot_2d_eig_ratio``
        does (for a positive definite Hessian its inverse condition number).

    %(returns)s

    %(raises)s
        Also if the surface lacks ``lambda_max`` or ``lambda_min``, ``loss_levels`` is
        negative or ``ratio`` is neither choice.

    References
    ----------
    %(li2018)s
    """
    _check_surface(surface, ndim=None, where="plot.eigen_map")
    from ..hessian import RATIOS, eig_ratio

    check_choice("plot.eigen_map ratio", ratio, RATIOS)
    missing = [m for m in ("lambda_max", "lambda_min") if m not in surface.metrics]
    if missing:
        raise LandscapeError(
            f"plot.eigen_map: the surface has no {missing}; expected a surface from landscape_nb.eigen_map "
            "(compute_surface(..., quantity='hessian'))."
        )
    if surface.ndim not in (1, 2):
        raise LandscapeError(f"plot.eigen_map: got a {surface.ndim}D surface; expected an eigen-map of a line or a "
                             "plane (eigen_map(..., y=None) or with x and y)")
    lmax, lmin = (np.asarray(surface.values(n), float) for n in ("lambda_max", "lambda_min"))
    definition = ratio
    ratio = np.vectorize(lambda a, b: eig_ratio(a, b, definition), otypes=[float])(lmax, lmin)
    ratio[~np.asarray(surface.done_mask, bool)] = np.nan
    if surface.ndim == 1:
        return _eigen_line(surface, lmax, lmin, ratio, title, definition)
    over = bool(np.any(ratio[np.isfinite(ratio)] > EIG_RATIO_TOP))
    ticks = np.linspace(0.0, EIG_RATIO_TOP, 6)
    custom = np.stack([ratio, lmax, lmin, np.asarray(surface.values("loss"), float)], -1)
    fig = go.Figure(go.Heatmap(
        x=np.asarray(surface.x, float), y=np.asarray(surface.y, float), z=ratio, zmin=0.0,
        zmax=EIG_RATIO_TOP, colorscale=COLORSCALE, connectgaps=False, customdata=custom,
        colorbar=dict(title=dict(text="|λ<sub>min</sub>/λ<sub>max</sub>|"), tickvals=list(ticks),
                      ticktext=[f"{t:g}" for t in ticks[:-1]] + [f"{'≥ ' if over else ''}{EIG_RATIO_TOP:g}"]),
        hovertemplate=(f"{template_text(surface.x_label)}: %{{x:.4g}}<br>{template_text(surface.y_label)}: %{{y:.4g}}"
                       "<br>|λmin/λmax|: %{customdata[0]:.4g}<br>λmax: %{customdata[1]:.4g}"
                       "<br>λmin: %{customdata[2]:.4g}<br>loss: %{customdata[3]:.4g}<extra></extra>"),
        name="eigenvalue ratio",
    ))
    if loss_levels:
        z = display_values(surface)
        zmin, zmax_l = _range([z])
        spec = _contour_spec(zmin, zmax_l, _check_levels(loss_levels))
        # each line's loss written on it: white lines over the ratio's colours said nothing of what they were
        spec["contours"] = {**spec.get("contours", {}), "showlabels": True,
                            "labelfont": {"color": "white", "size": 10}, "labelformat": ".3g"}
        fig.add_trace(go.Contour(
            x=np.asarray(surface.x, float), y=np.asarray(surface.y, float), z=z, showscale=False,
            contours_coloring="none", line=dict(color="white", width=1), hoverinfo="skip", name="loss",
            **spec,
        ))
    width, height = plot_area()
    fig.update_xaxes(title_text=fit_title(surface.x_label, width), ticks="outside")
    fig.update_yaxes(title_text=fit_title(surface.y_label, height), ticks="outside")
    fig.update_layout(title=_title(title, surface) or ("non-convexity map |λmin/λmax| (0 where λmin ≥ 0)"
                                                        if definition == "negative" else
                                                        "|λmin/λmax| at every point (ratio='abs')"))
    note_partial(fig, surface)
    note_sources(fig, [surface])  # an exported eigen-map kept no provenance (re-trial s41)
    return fig


def _eigen_line(surface: Surface, lmax: np.ndarray, lmin: np.ndarray, ratio: np.ndarray, title: str | None,
                definition: str) -> go.Figure:
    """`eigen_map`'s figure of a line: the loss above, ``λ_max`` and ``λ_min`` below it on one axis with 0 marked
    (negative curvature is ``λ_min`` below it), each point's ratio in the hover (a 1D eigen-map had no figure,
    trial s53)."""
    x = np.asarray(surface.x, float)
    done = np.asarray(surface.done_mask, bool)
    lmax, lmin = np.where(done, lmax, np.nan), np.where(done, lmin, np.nan)
    loss = np.where(done, np.asarray(surface.values("loss"), float), np.nan)
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.06, row_heights=[0.4, 0.6])
    fig.add_trace(go.Scatter(x=x, y=loss, mode=line_mode(loss), name="loss", line=dict(color="black"),
                             hovertemplate="loss: %{y:.4g}<extra></extra>"), row=1, col=1)
    custom = np.stack([ratio], -1)
    what = "|λmin/λmax| (0 where λmin ≥ 0)" if definition == "negative" else "|λmin/λmax|"
    for name, values, color in (("λmax", lmax, qualitative.Plotly[1]), ("λmin", lmin, qualitative.Plotly[0])):
        fig.add_trace(go.Scatter(x=x, y=values, mode=line_mode(values), name=name, line=dict(color=color),
                                 customdata=custom, hovertemplate=f"{name}: %{{y:.4g}}<br>{what}: "
                                                                  "%{customdata[0]:.4g}<extra></extra>"), row=2, col=1)
    fig.add_hline(y=0, line=dict(color="grey", width=1, dash="dot"), row=2, col=1)
    width, _ = plot_area()
    fig.update_xaxes(title_text=fit_title(surface.x_label, width), ticks="outside", row=2, col=1)
    fig.update_yaxes(title_text="loss", row=1, col=1)
    fig.update_yaxes(title_text="Hessian eigenvalue", row=2, col=1)
    fig.update_layout(hovermode="x unified", title=_title(title, surface) or (
        "curvature along the line: λmax and λmin of the Hessian (below 0: negative curvature)"))
    note_partial(fig, surface)
    note_sources(fig, [surface])
    return fig


@_doc
def paths(
    profiles: Any,
    *,
    metric: str | None = None,
    log: bool = False,
    title: str | None = None,
    clip: Any = None,
) -> go.Figure:
    """Loss profiles of paths between two models on one axis, each named with its barrier
    (how far the loss along the path rises above the chord between its end losses; see
    ``landscape_nb.loss_barrier``).

    Parameters
    ----------
    profiles : ModeCurve, Surface or sequence of them
        A ``bezier_curve`` or ``polychain_curve`` result (its straight-line and curve
        profiles, Garipov et al. 2018 [2]_; in a sequence, each curve's profile, and its
        straight line once), or 1D surfaces over t, ``loss`` of shape ``(len(t),)``, with
        t = 0 and t = 1 on the grid (e.g. interpolations with and without BN buffers).
        Names come from ``provenance["label"]``.
    metric : str, optional
        A metric to draw on a right axis (e.g. "accuracy").
    log : bool, default False
        Logarithmic loss axis.
    title : str, optional
        Figure title; default "loss along paths between two models".
    clip : None, False or float, default None
        Top of the loss axis, as for ``plot.line``; the automatic one (None) never cuts off a
        path between its two models (t in [0, 1], where its barrier is), only an extrapolation
        beyond them. False: every value.

    %(returns)s

    %(raises)s
        Also if ``profiles`` holds no profile, a profile does not contain t = 0 and t = 1 or
        has non-finite losses between them.

    References
    ----------
    %(li2018)s
    .. [2] T. Garipov, P. Izmailov, D. Podoprikhin, D. Vetrov and A. G. Wilson, "Loss
       Surfaces, Mode Connectivity, and Fast Ensembling of DNNs", NeurIPS 2018.
    """

    single = isinstance(profiles, Surface) or hasattr(profiles, "profile")
    if not single and not (isinstance(profiles, Sequence) and profiles and not isinstance(profiles, str)):
        raise LandscapeError(f"plot.paths: got {type(profiles).__name__} {str(profiles)[:60]!r}; expected a ModeCurve "
                             "(bezier_curve, polychain_curve), a 1D Surface over t (interpolate) or a non-empty list "
                             "of them")
    surfaces = []
    for p in [profiles] if single else list(profiles):
        if isinstance(getattr(p, "profile", None), Surface):  # a curve: its straight line (once), then itself
            straight = p.line_profile
            if not any(s.x.shape == straight.x.shape and np.array_equal(s.x, straight.x) and  # to float32's
                       np.allclose(s.loss, straight.loss, rtol=1e-6, atol=0, equal_nan=True)  # rounding: two curves'
                       for s in surfaces):  # lines between the same models differed in the last bits (trial s57)
                surfaces.append(straight)
            p = p.profile
        surfaces.append(p)
    labelled = []
    for k, s in enumerate(surfaces):
        _check_surface(s, ndim=1, where=f"plot.paths (profile {k})")
        label = str(s.provenance.get("label", f"path {k}"))
        prov = {**s.provenance, "label": f"{label}, barrier {loss_barrier(s):.4g}"}
        labelled.append(Surface(s.x, None, s.loss, s.metrics, s.done, s.spec, prov))
    if clip is None and not log:  # the automatic cap cut off the straight line's peak, its barrier (trial s37)
        between = np.concatenate([s.loss[(s.x >= -1e-9) & (s.x <= 1 + 1e-9)] for s in labelled])
        between = between[np.isfinite(between)]
        every = np.concatenate([np.asarray(s.loss, float).ravel() for s in labelled])
        top = clip_limit(every[np.isfinite(every)])
        clip = float(between.max()) if top is not None and between.size and top < between.max() else None
    fig = line(labelled, metric=metric, log=log, title=title or "loss along paths between two models", clip=clip)
    fig.update_xaxes(title_text="t (0: first model, 1: second model)")
    return fig


@_doc
def line_panels(
    groups: Sequence[Sequence[Surface]],
    *,
    titles: Sequence[str] | None = None,
    log: bool = False,
    radius: float | None = None,
    title: str | None = None,
) -> go.Figure:
    """Side-by-side panels of overlaid 1D slices, each legend entry with its sharpness
    (largest loss rise within ``radius`` and curvature at 0), e.g. raw vs filter-normalized
    directions through an original and a rescaled network (Dinh et al. 2017 [2]_): filter
    normalization (Li et al. 2018 [1]_) keeps the two alike where raw directions do not.

    Parameters
    ----------
    groups : sequence of sequences of Surface
        One list of 1D surfaces per panel, each ``loss`` of shape ``(len(x),)`` and
        centred at the model (x = 0 on the grid); names from ``provenance["label"]``.
    titles : sequence of str, optional
        One per panel; default "panel 1", "panel 2", ...
    log : bool, default False
        Logarithmic loss axes.
    radius : float, optional
        Radius for the sharpness numbers, in step-size units (default: half the shorter
        side of the range).
    title : str, optional
        Figure title.

    %(returns)s

    %(raises)s
        Also if a panel is empty, ``titles`` has another length, or a slice does not
        contain x = 0.

    References
    ----------
    %(li2018)s
    .. [2] L. Dinh, R. Pascanu, S. Bengio and Y. Bengio, "Sharp Minima Can Generalize for
       Deep Nets", ICML 2017.
    """

    groups = [list(g) for g in groups]
    if not groups or not all(groups):
        raise LandscapeError("plot.line_panels: expected a non-empty list of non-empty lists of 1D Surfaces.")
    titles = list(titles) if titles is not None else [f"panel {k + 1}" for k in range(len(groups))]
    if len(titles) != len(groups):
        raise LandscapeError(f"plot.line_panels: {len(titles)} titles for {len(groups)} panels; expected one each.")
    for col, group in enumerate(groups, start=1):
        for k, s in enumerate(group):
            _check_surface(s, ndim=1, where=f"plot.line_panels (panel {col}, surface {k})")
    refuse_log_of_non_positive(log, [s.loss for g in groups for s in g], "plot.line_panels")
    fig = make_subplots(rows=1, cols=len(groups), subplot_titles=titles)
    n = len(groups)
    panel_w = plot_area(colorbar=False)[0] * (1 - (n - 1) * 0.2 / n) / n  # make_subplots' gaps: 0.2 / cols
    palette = qualitative.Plotly
    for col, group in enumerate(groups, start=1):
        for k, s in enumerate(group):
            sh = axis_sharpness(s, "x", radius)
            label = str(s.provenance.get("label", f"surface {k}"))
            fig.add_trace(go.Scatter(
                x=np.asarray(s.x, float), y=_transform(s.loss, log=False, clip=False), mode="lines",
                line=dict(color=palette[k % len(palette)], dash="solid" if k == 0 else "dash"),
                name=as_written(f"{label}: max ΔL(|t|≤{sh.radius:.2g})={sh.increase:.3g}, {curvature_text(sh, 3)}"),
                legendgroup=str(col),
                hovertemplate=(f"{template_text(s.x_label)}: %{{x:.4g}}<br>loss: %{{y:.4g}}"
                               f"<extra>{template_text(label)}</extra>"),
            ), row=1, col=col)
        fig.update_xaxes(title_text=fit_title(group[0].x_label, panel_w), row=1, col=col)
        fig.update_yaxes(title_text="loss", type="log" if log else "linear", row=1, col=col,
                         **(log_ticks([s.loss for s in group]) if log else {}))
    fig.update_layout(title=title, legend=dict(orientation="h", y=-0.25), height=480)
    note_partial(fig, [s for group in groups for s in group])
    note_sources(fig, [s for group in groups for s in group])
    return fig
