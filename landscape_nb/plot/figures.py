"""The basic figures of a loss landscape (Li et al., "Visualizing the Loss Landscape of
Neural Nets", NeurIPS 2018): 1D curves, contours, heatmaps, rotatable 3D surfaces, an
optimizer trajectory drawn over a contour, and side-by-side comparisons on one colour scale.

Imports neither torch, Dask nor ipywidgets.
"""
from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from ..errors import LandscapeError, warn_user
from ..surface import Surface, metric_splits
from ._common import (
    COLORSCALE,
    DEFAULT_HEIGHT,
    DEFAULT_MARGIN,
    DEFAULT_WIDTH,
    PARTIAL_NOTE,
    SURFACE_LEVELS,
    TRAJECTORY_COLORSCALE,
    _above,
    _above_notes,
    _axis_label,
    _check_clip,
    _check_levels,
    _check_surface,
    _colorbar_title,
    _doc,
    _grid_trace,
    _range,
    _title,
    _transform,
    above_cap_trace,
    add_not_computed_tint,
    as_written,
    clip_limit,
    curve_labels,
    default_metric,
    display_values,
    fit_title,
    grid_points_trace,
    held_fixed_text,
    line_mode,
    log_ticks,
    lone_points_trace,
    non_positive_note,
    note_axes,
    note_coarse,
    note_partial,
    note_sources,
    note_undrawn_metrics,
    numbered,
    plot_area,
    refuse_log_of_non_positive,
    scene_axes,
    scene_z_ticks,
    set_caption,
    template_text,
)


def _single_grid_figure(kind, surf, *, log, clip, title, levels=30, contours=True) -> go.Figure:
    """One trace on its own colorbar; axis titles from the surface's labels."""
    _check_surface(surf, ndim=2, where=f"plot.{kind}")
    levels = _check_levels(levels)
    z = display_values(surf, log=log, clip=clip)  # checks clip: the arguments first, then what the values allow
    refuse_log_of_non_positive(log, [surf.loss], f"plot.{kind}")
    zmin, zmax = _range([z])
    trace = _grid_trace(kind, surf, z, zmin, zmax, levels=levels, contours=contours)
    shade = above_cap_trace(kind, surf, trace.z, zmax, log)
    trace.colorbar = dict(title=dict(text=_colorbar_title(log, zmax, surf.loss, shaded=shade is not None)))
    fig = go.Figure(trace)
    if shade is not None:  # after it (data[0] is the loss's trace): it shades only where no line is drawn
        fig.add_trace(shade)
    lone = lone_points_trace(kind, surf, z, zmin, zmax)
    if lone is not None:  # a partial surface's points that no drawn cell shows
        if kind == "contour" and not np.isfinite(np.asarray(trace.z, dtype=float)).any():
            lone.marker.showscale, lone.marker.colorbar = True, trace.colorbar.to_plotly_json()  # no line: no bar
        fig.add_trace(lone)
    points = grid_points_trace(kind, surf, z, zmin, zmax)
    if points is not None:  # a coarse grid's: what was computed, against what is interpolated
        fig.add_trace(points)
    # a partial contour plot's points not computed yet, told from computed ones no line crosses
    tint = add_not_computed_tint(fig, kind, surf)
    fig.update_layout(title=_run_title(title, surf, kind))
    note_sources(fig, [surf])
    note_partial(fig, surf)
    if tint:
        for note in fig.layout.annotations:
            if getattr(note, "name", None) == PARTIAL_NOTE:
                note.text += " (tinted: not computed yet)"
    note_coarse(fig, kind, [surf])
    add_plane_models(fig, surf, z if kind == "surface" else None)  # its note above the others
    width, height = plot_area(colorbar=trace.colorbar.title.text or True)
    if kind == "surface":
        scene, caption = scene_axes(surf.x_label, surf.y_label, _axis_label(log), width, height,
                                     grid=(surf.x, surf.y), z=z)
        fig.update_layout(scene=scene)
        fig.layout.scene.zaxis.update(scene_z_ticks(zmin, zmax))
        if any(t.name == "models" for t in fig.data) and fig.layout.scene.zaxis.range is not None:
            fig.layout.scene.zaxis.range = [zmin, max(zmax, pin_top(z))]  # the models' pins and names in the box
        set_caption(fig, caption)
    else:
        # outside ticks keep the first labels of the two axes off each other in the corner
        fig.update_xaxes(title_text=fit_title(surf.x_label, width), ticks="outside")
        fig.update_yaxes(title_text=fit_title(surf.y_label, height), ticks="outside")
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
    clip: Any = None,
) -> go.Figure:
    """1D loss curve(s): loss on the left axis, a metric on a right twin axis.

    Pass a list of 1D surfaces (e.g. several interpolations between minimizers, Li et al.
    2018 Fig. 2 [1]_) to overlay them. One surface: loss and metric in two colours, each
    axis in its curve's colour. Several: a colour per surface, the loss solid and the
    metric dashed (the axis titles say so). Curves whose x axes mean different things (their
    ``provenance["x_label"]``, e.g. filter-normalized vs raw directions) share the one axis, and
    a note above the plot names each one's (`note_axes`). A straight line between two models
    (`landscape_nb.interpolation_surface`) marks them at t = 0 and t = 1 by name, hovering the
    loss there (`line_models`); those outside the range are named above the plot.

    Parameters
    ----------
    %(surfaces_1d)s
    metric : str or None, default "accuracy"
        Metric for the right axis. The default is, for surfaces without accuracy (e.g. a
        regression), their one metric where they all have the same one and only it (a user's
        ``"mse"`` was dropped with no word, trial s41), else skipped, and a note above the plot
        names the metrics not drawn; any other name must exist. None: loss only.
    log : bool, default False
        Logarithmic loss axis (the values themselves are not transformed).
    %(run_title)s
    clip : None, False or float, default None
        Top of the loss axis, in loss units. None: automatic, ``min + 5 * (median - min)``
        of the curves' finite losses when some lie above it (an extrapolated end of an
        interpolation can be 10,000 times the barrier, which then draws flat); False: every
        value on the axis. The curves keep their values (hover shows them) and a note says
        how far they go off the axis; not where the curves rise to at most 4 times the cap's height above
        their minimum (``AUTO_CLIP_SPAN``: a bowl steep at its ends, drawn whole). Not applied with ``log``,
        unless a number.

    %(returns)s

    %(raises)s
        Also if the list is empty or ``metric`` is missing from a surface.

    References
    ----------
    %(li2018)s
    """
    surfaces = [surface] if isinstance(surface, Surface) else list(surface)
    if not surfaces:
        raise LandscapeError(
            "plot.line: got an empty list; expected a 1D Surface or a non-empty list of them."
        )
    _check_clip(clip, log)
    for k, s in enumerate(surfaces):
        _check_surface(s, ndim=1, where=f"plot.line (surface {k})")
        if metric not in (None, "accuracy") and metric not in s.metrics:
            raise LandscapeError(
                f"plot.line: metric={metric!r} but surface {k} has metrics {sorted(s.metrics)}; "
                "expected one of those; pass one of them, or metric=None for loss only."
            )
    refuse_log_of_non_positive(log, [s.loss for s in surfaces], "plot.line")
    names = [list(s.metrics) for s in surfaces]
    metric = default_metric(metric, names)
    single = len(surfaces) == 1
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    palette = qualitative.Plotly
    # One surface: a colour per quantity, matched by its axis. Several: a colour per
    # surface and a dash per quantity (loss solid, metric dashed), named on the axes.
    loss_color, metric_color = palette[0], palette[1]
    labels = curve_labels(surfaces)
    drawn = {_loss_split(s) for s in surfaces}  # surfaces over named splits: each loss is one split's
    split = next(iter(drawn)) if len(drawn) == 1 else None
    for k, s in enumerate(surfaces):
        label = labels[k]
        color = palette[k % len(palette)]
        x = np.asarray(s.x, dtype=float)
        loss = _transform(s.loss, log=False, clip=False)
        fig.add_trace(
            go.Scatter(
                x=x, y=loss, mode=line_mode(loss),
                name=(f"{as_written(split)} loss" if split else "loss") if single else
                as_written(f"{label}: {split} loss" if split else f"{label}: loss"),
                legendgroup=label, line=dict(color=loss_color if single else color),
                hovertemplate=_line_hover(s, label),
            ),
            secondary_y=False,
        )
        if metric is not None and metric in s.metrics:
            values = _transform(s.metrics[metric], log=False, clip=False)
            fig.add_trace(
                go.Scatter(
                    x=x, y=values, mode=line_mode(values), name=as_written(metric if single else f"{label}: {metric}"),
                    legendgroup=label,
                    line=dict(color=metric_color, dash="dash") if single else dict(color=color, dash="dash"),
                    hovertemplate=_metric_hover(s, metric, label),
                ),
                secondary_y=True,
            )
    twin = any(t.yaxis == "y2" for t in fig.data)
    right = 160  # plotly.js's room for the legend
    if twin:
        # plotly.js sets the legend just right of the plot, over the right axis's tick labels
        # and title: pin it to the figure's right edge and keep the room for both
        legend_px = max(len(html.unescape(t.name)) for t in fig.data) * 12 * 0.5 + 45  # as shown, not escaped
        right = int(75 + legend_px)
        fig.update_layout(legend=dict(xref="container", x=1.0, xanchor="right"), margin=dict(r=right))
    width, _ = plot_area(colorbar=False, margin=dict(r=right))
    fig.update_xaxes(title_text=fit_title(surfaces[0].x_label, width))
    fig.update_yaxes(title_text=("loss" if single or not twin else "loss (solid)")
                     + non_positive_note(log, [s.loss for s in surfaces]).replace("<br>", " "),
                     type="log" if log else "linear", secondary_y=False,
                     **(log_ticks([s.loss for s in surfaces], top=clip) if log else {}))
    if twin:
        fig.update_yaxes(title_text=as_written(metric if single else f"{metric} (dashed)"), secondary_y=True,
                         showgrid=False, tickmode="auto")
        if single:  # each axis in its curve's colour
            fig.update_yaxes(title_font_color=loss_color, tickfont_color=loss_color, secondary_y=False)
            fig.update_yaxes(title_font_color=metric_color, tickfont_color=metric_color, secondary_y=True)
    fig.update_layout(title=_run_title(title, surfaces[0], "line") if single else _title(title, surfaces[0]),
                      hovermode="x unified")
    _cap_loss_axis(fig, [s.loss for s in surfaces], clip=clip, log=log)
    note_sources(fig, surfaces)
    note_partial(fig, surfaces)
    note_axes(fig, surfaces, labels, overlaid=True)
    note_undrawn_metrics(fig, metric, dict(zip(labels, names)), loss_split=split)
    add_line_models(fig, surfaces, labels, width)
    return fig


def _loss_split(surface: Surface) -> str | None:
    """The split whose loss ``surface.loss`` is, for a surface over named splits (the first: its ``"<split>_loss"``
    metric holds the same values); None otherwise. plot.line drew it as "loss", beside a note that the splits
    were not drawn (trial s57)."""
    splits = metric_splits(surface.metrics)
    if not splits:
        return None
    same = np.array_equal(np.asarray(surface.loss, float), np.asarray(surface.metrics[f"{splits[0]}_loss"], float),
                          equal_nan=True)
    return splits[0] if same else None


def add_line_models(fig: go.Figure, surfaces: Sequence[Surface], labels: Sequence[str],
                    width_px: float | None = None) -> None:
    """Mark on a line figure the two models of each straight line between them (`line_models_trace`: white stars
    for one curve, in each curve's colour and unnamed beside them for several), and above the plot (``width_px``
    wide, default `plot_area`'s) name those outside the grid's range or say why none is marked (with the curve's
    label, ``labels``, for several)."""
    single = len(surfaces) == 1
    palette = qualitative.Plotly
    texts = []
    for k, s in enumerate(surfaces):
        trace = line_models_trace(s, "white" if single else palette[k % len(palette)],
                                  curve=None if single else labels[k])
        if trace is not None:
            fig.add_trace(trace, secondary_y=False)
        text = line_models_note(s)
        if text:
            texts.append(text if single else f"{labels[k]}: {text}")
    _note_models(fig, "; ".join(texts), width_px or plot_area()[0])


def line_models_note(surface: Surface) -> str | None:
    """What a figure of a straight line between two models says of the models it does not mark (outside the
    range, or a line centred at another model: `line_models`); None where it marks both, or for other
    surfaces."""
    models = line_models(surface)
    outside = line_models_outside(surface)
    return (models or {}).get("unmarked") or (
        f"outside the range drawn (not marked): {', '.join(outside)}; a range of -0.5..1.5 holds both models"
        if outside else None)


#: the automatic cap of a line's loss axis applies where the curve rises above its minimum more than this many times
#: as high as the cap does: an extrapolated end 10,000 times the barrier (235 times in the test), not a bowl steeper
#: at its ends (a quartic's: 3.2 times; trial s42's: 1.1)
AUTO_CLIP_SPAN = 4.0


#: the name of a line's note that its loss axis is capped (`loss_axis_cap`), replaced by a live line's updates
CAP_NOTE = "loss axis cap"


def loss_axis_cap(losses: Sequence[np.ndarray], *, clip: Any, log: bool) -> tuple[list[float], dict] | None:
    """The loss axis's range with its top at ``clip`` (None: `clip_limit` of the finite losses, not with ``log``)
    and the note saying how high the losses go off it (keyword arguments of ``add_annotation``), where some loss
    lies above it; None where the axis is not capped. The values themselves stay.

    Raises
    ------
    LandscapeError
        If a given ``clip`` is at or below every loss.
    """
    finite = np.concatenate([np.asarray(v, float).ravel() for v in losses])
    finite = finite[np.isfinite(finite) & ((finite > 0) if log else True)]
    if clip is False or clip is True or finite.size == 0 or (clip is None and log):
        return None
    lo, hi = float(finite.min()), float(finite.max())
    top = clip_limit(finite) if clip is None else float(clip)
    # most points at the minimum (the cap within rounding of it); measured against the minimum, not the span: an
    # exponential blow-up to 3e18 over a median of 2e8 read as that and drew the minimum flat, no note (trial s46)
    if top is None or not top < hi or (clip is None and top - lo <= 1e-6 * abs(lo)):
        return None
    if clip is None and hi - lo <= AUTO_CLIP_SPAN * (top - lo):  # a curve going a few times the cap's height: an
        return None  # ordinary bowl steep at its ends, whose ends the cap hid (1.83 of 1.86, trial s42), drawn whole
    if top <= lo:
        raise LandscapeError(f"clip={clip!r} is at or below every loss shown (the lowest is {lo:.6g}), so the "
                             f"axis would hold none of the curve; expected a cap above it, e.g. clip={_above(lo)} "
                             "(or None: automatic, False: every value)")
    pad = 0.04 * (top - lo)
    flat = not log and lo > 0 and top > 1e3 * lo  # the cap itself far above the minimum: its valley is still flat
    note = dict(text=f"loss axis capped at {top:.4g}: the curve reaches {hi:.4g} off it ({CLIP_OFF} shows every "
                     "value" + ("; the minimum's neighbourhood is flat even so: a log scale shows it" if flat else "")
                     + ")", name=CAP_NOTE, xref="paper", yref="paper", x=0.0, y=1.0, xanchor="left",
                yanchor="bottom", yshift=4, showarrow=False, font=dict(size=11))
    if log:  # padded as a linear axis is: the minimum sat on the frame (re-trial s59)
        a, b = float(np.log10(lo)), float(np.log10(top))
        return [a - 0.04 * (b - a), b + 0.04 * (b - a)], note
    return [lo - pad, top + pad], note


def _cap_loss_axis(fig: go.Figure, losses: Sequence[np.ndarray], *, clip: Any, log: bool) -> None:
    """`loss_axis_cap` applied to ``fig``'s loss axis (a line's left one)."""
    cap = loss_axis_cap(losses, clip=clip, log=log)
    if cap is not None:
        fig.update_yaxes(range=cap[0], secondary_y=False)
        fig.add_annotation(**cap[1])


#: a title's words for the schemes' lines and planes ("mine: the line between two models, 51 points")
TITLE_WORDS = {"interpolate": ("the line between two models", "the line between two models"),
               "plane3": ("the plane through three models", "the plane through three models"),
               "pca": ("the first principal component of the training trajectory",
                       "the plane of the training trajectory's two principal components"),
               "hessian": ("the top Hessian eigenvector", "the plane of the extreme Hessian eigenvectors")}


def _panel_titles(surfaces: Sequence[Surface]) -> list[str]:
    """`compare`'s default panel titles: each surface's ``provenance["title"]`` or ``["label"]`` (plain text), those
    alike told apart by how their random directions were made ("mlp-digits (raw)"), else numbered from their
    second on (trial s57: four panels, filter-normalized and raw planes of two models, all titled "mlp-digits")."""
    from ..directions import how_made

    titles = [as_written(s.provenance.get("title", s.provenance.get("label", f"surface {k}")))
              for k, s in enumerate(surfaces)]
    made = [how_made(s.provenance.get("directions") or {}) if str(s.provenance.get("scheme", "")).startswith("random")
            else "" for s in surfaces]
    return numbered([f"{t} ({m})" if m and len({made[j] for j, u in enumerate(titles) if u == t}) > 1 else t
                     for t, m in zip(titles, made)])


def _run_title(title: str | None, surface: Surface, drawn: str) -> str | None:
    """``title`` or the surface's own (`_title`), else for a computed run (its provenance names the model and
    the scheme) what the CLI titles its figure of kind ``drawn`` (`run_title`: an eigen-map's loss drawn is not
    titled as its ratio map): a figure made in Python had no title, so an exported one did not say which model,
    directions, split or grid it showed (trial s58)."""
    given = _title(title, surface)
    prov = surface.provenance
    if given is None and prov.get("label") and prov.get("scheme"):
        return run_title(surface, drawn=drawn)
    return given


def run_title(surface: Surface, split: str | None = None, drawn: str | None = None) -> str:
    """A title that says which run a figure shows: model, directions (random ones with their normalization,
    whether they were orthogonalized after it and whether biases and BatchNorm moved too; the other schemes'
    line or plane, `TITLE_WORDS`), their seed where it picks them, the split (``split``, else
    ``provenance["split"]``) and the subset of its samples where one was taken, how BatchNorm was evaluated
    where not in eval mode and the precision where not fp32, and the grid, e.g. "mlp-digits: random
    (filter-normalized) directions, seed 7, train split (500 of 1437 samples), 81×61 points". Two runs that
    differ in any of these (a test and a train surface, several-fold apart) were titled alike. An eigen-map drawn
    as one (``drawn`` None or ``"eigen_map"``: the CLI's kind) says so."""
    from ..directions import how_made

    prov = surface.provenance
    scheme = str(prov.get("scheme", ""))
    directions = prov.get("directions") or {}
    seed = directions.get("seed")
    if scheme.startswith("random"):
        ortho = directions.get("orthogonalized") or scheme == "random-orthogonal"  # a live grid's provenance lacks it
        moved = ", biases/BN moved too" if "ignore" in directions and directions["ignore"] is None else ""
        what = f"random ({how_made({**directions, 'orthogonalized': ortho})}{moved}) directions"
        what += f", seed {seed}" if seed is not None else ""
    else:
        what = TITLE_WORDS[scheme][min(surface.loss.ndim, 2) - 1] if scheme in TITLE_WORDS else \
            f"{scheme or 'given'} directions"
        if scheme == "pca" and "ignore" in directions and directions["ignore"] is None:
            what += " (biases/BN included)"
    split = split or prov.get("split")
    subset = str((prov.get("data") or {}).get("subset", "")).split(", seed")[0]
    data = f", {split} split" + (f" ({subset})" if subset else "") if split else (f", {subset}" if subset else "")
    mode = ((getattr(surface, "spec", None) or {}).get("eval") or {}).get("mode")
    how = (", BN statistics re-estimated per point" if mode in ("bn-recompute", "bn") and
           prov.get("bn_fold") != "no BatchNorm" else "")
    precision = prov.get("precision")
    how += f", {precision}" if precision not in (None, "fp32", "fp64") else ""
    label = as_written(prov.get("label", ""))  # a name with <b>..</b> drew bold (trial s47)
    if "eig_ratio" in surface.metrics and drawn in (None, "eigen_map"):  # ``drawn``: the figure's kind; an
        # eigen-map's was titled as a loss surface (trial s57), and its loss drawn as a ratio map (re-trial s57)
        what = (f"non-convexity map |λmin/λmax| over {what}" if surface.loss.ndim >= 2 else
                f"λmax, λmin along {what}")  # short: a line's title was cut at the figure's edge (re-trial s57)
    return f"{label}: {what}{data}{how}, {'×'.join(map(str, reversed(surface.loss.shape)))} points"


#: how the loss axis's cap note says to draw every value (the CLI's figures say --clip none)
CLIP_OFF = "clip=False"


def _line_hover(s: Surface, label: str) -> str:
    """Hover text of a loss curve, with the parameters held fixed (not on its metric curve,
    which shares the hover box under ``hovermode="x unified"``)."""
    fixed = held_fixed_text(s)
    return (f"{template_text(s.x_label)}: %{{x:.4g}}<br>loss: %{{y:.4g}}" + (f"<br>{fixed}" if fixed else "")
            + f"<extra>{template_text(label)}</extra>")


def _metric_hover(s: Surface, metric: str, label: str) -> str:
    return (f"{template_text(s.x_label)}: %{{x:.4g}}<br>{template_text(metric)}: %{{y:.4g}}"
            f"<extra>{template_text(label)}</extra>")


def provenance_path(surface: Surface) -> dict | None:
    """The training path a trajectory-PCA plane keeps in its directions' provenance (``path_x``, ``path_y``,
    ``path_distance``, ``path_norm``, ``path_loss`` from `landscape_nb.pca_directions`) as a ``trajectory``
    for `contour`/`pca_contour`, each checkpoint labelled by its file (the CLI's ``--checkpoints``), as
    `landscape_nb.trajectory.default_labels` named it (``path_labels``) or "checkpoint k";
    None for a surface without one (not 2D, other directions)."""
    prov = surface.provenance.get("directions") or {}
    if surface.ndim != 2 or "path_x" not in prov or "path_y" not in prov:
        return None
    path = {"x": prov["path_x"], "y": prov["path_y"], "distance": prov.get("path_distance"),
            "norm": prov.get("path_norm"), "loss": prov.get("path_loss"), "left_out": prov.get("path_left_out")}
    files, named = prov.get("checkpoints"), prov.get("path_labels")
    path["labels"] = (files if isinstance(files, list) and len(files) == len(path["x"]) else
                      named if isinstance(named, list) and len(named) == len(path["x"]) else
                      [f"checkpoint {k}" for k in range(len(path["x"]))])
    return {k: v for k, v in path.items() if v is not None}


def path_outside(surface: Surface) -> tuple[int, int]:
    """``(k, n)``: how many of the ``n`` checkpoints of a PCA plane's training path (`provenance_path`) lie
    outside the surface's grid, where a figure cannot draw them; ``(0, 0)`` without a path."""
    path = provenance_path(surface)
    if path is None:
        return 0, 0
    x, y = np.asarray(path["x"], float), np.asarray(path["y"], float)
    inside = ((x >= surface.x.min()) & (x <= surface.x.max()) & (y >= surface.y.min()) & (y <= surface.y.max()))
    return int((~inside).sum()), int(x.size)


def _model_labels(surface: Surface, names: Sequence[str]) -> tuple[list[str], list[str]]:
    """The labels and hover notes of a path's models (`plane_models`, `line_models`), ``names[0]`` its centre.
    Where the path kept the centre's buffers (``include_buffers=False``) and a model has others, its point holds
    that model's weights only (trial s49: "B" hovered 1.347 where B's own loss was 0.124): labelled "B's weights"
    and said. Under ``mode="bn-recompute"`` every point of a BatchNorm net has statistics re-estimated on the data,
    whatever the path kept: every model is then its weights, said so."""
    prov = surface.provenance.get("directions") or {}
    labels, notes = list(names), [""] * len(names)
    if (surface.spec.get("eval") or {}).get("mode") == "bn-recompute":
        if surface.provenance.get("bn_fold") == "no BatchNorm":
            return labels, notes
        # trial s50: "a" hovered 0.164 where a's own loss (its running statistics) was 0.428
        return ([f"{n}'s weights" for n in names],
                [f"BatchNorm statistics re-estimated on the data there (mode='bn-recompute'), not {n}'s own" for n in names])
    kept, weights_only = prov.get("buffers_of_the_centre") or [], prov.get("weights_only") or []
    if not kept:
        return labels, notes
    for k, name in enumerate(names[1:], 1):
        if name in weights_only:
            labels[k] = f"{name}'s weights"
            notes[k] = (f"with {names[0]}'s buffers (which differ from {name}'s, e.g. {kept[0]}): not {name} "
                        f"itself; include_buffers=True puts {name} there")
    return labels, notes


def plane_models(surface: Surface) -> dict | None:
    """The three models a plane through three models passes through (`landscape_nb.plane_directions`,
    ``--directions plane3``): ``{"x": [0, 1, 0], "y": [0, 0, 1], "labels": [a, b, c], "notes": [...],
    "unmarked": None}``, model ``a`` at the origin, ``b`` at (1, 0) and ``c`` at (0, 1) of the plane's axes, exactly,
    by construction; the names from the directions' provenance (``models``, else the axes' "a → b" titles). Where
    the plane kept ``a``'s buffers (``include_buffers=False``) and ``b`` or ``c`` has others, the points at (1, 0)
    and (0, 1) are their weights only: labelled so, and ``notes`` says it. ``unmarked``: why no model can be marked
    (a surface computed around another model than ``a``: none of them is where the axes put it). None for any
    other surface."""
    prov = surface.provenance.get("directions") or {}
    if surface.ndim != 2 or not isinstance(prov, Mapping) or prov.get("scheme") != "plane3":
        return None
    names = prov.get("models")
    if not (isinstance(names, (list, tuple)) and len(names) == 3):  # a store written before "models" was kept
        ends = [str(prov.get(k, "")).split(" → ") for k in ("x_label", "y_label")]
        names = ([ends[0][0], ends[0][1], ends[1][1]] if all(len(e) == 2 for e in ends) and ends[0][0] == ends[1][0]
                 else ["a", "b", "c"])
    names = [str(n) for n in names]
    labels, notes = _model_labels(surface, names)
    unmarked = None
    if prov.get("made_around_another_model"):
        unmarked = (f"the three models are not marked: the surface is centred at other weights or BatchNorm "
                    f"statistics than {names[0]}'s, which the plane was made around, so none lies where the axes "
                    "put it")
    return {"x": [0.0, 1.0, 0.0], "y": [0.0, 0.0, 1.0], "labels": labels, "notes": notes, "unmarked": unmarked}


def line_models(surface: Surface) -> dict | None:
    """The two models at the ends of a straight line between them (`landscape_nb.interpolation_surface`,
    ``interpolation_direction``, ``--model-file2``): ``{"x": [0, 1], "labels": [a, b], "notes": [...],
    "unmarked": None}``, model ``a`` at t = 0 and ``b`` at t = 1, exactly, by construction; the names from the
    directions' provenance (``models``, else the axis's "t (a → b)"). As `plane_models`: where the line kept
    ``a``'s buffers (``include_buffers=False``) and ``b`` has others, t = 1 is ``b``'s weights only, labelled so;
    ``unmarked`` says why neither can be marked (a line computed around another model than ``a``). None for any
    other surface."""
    prov = surface.provenance.get("directions") or {}
    if surface.ndim != 1 or not isinstance(prov, Mapping) or prov.get("scheme") != "interpolate":
        return None
    names = prov.get("models")
    if not (isinstance(names, (list, tuple)) and len(names) == 2):  # a mode curve's straight line, an older store
        _, sep, rest = str(surface.x_label).partition("(")
        ends = rest[:-1].split(" → ") if sep and rest.endswith(")") else []
        names = ends if len(ends) == 2 else ["a", "b"]
    names = [str(n) for n in names]
    labels, notes = _model_labels(surface, names)
    unmarked = None
    if prov.get("made_around_another_model"):
        unmarked = (f"the two models are not marked: the line is centred at other weights or BatchNorm statistics "
                    f"than {names[0]}'s, which it was made from, so neither lies where the axis puts it")
    return {"x": [0.0, 1.0], "labels": labels, "notes": notes, "unmarked": unmarked}


def line_models_trace(surface: Surface, color: str = "white", curve: str | None = None) -> go.Scatter | None:
    """Named stars on a straight line's loss curve at its two models (`line_models`) that lie inside the grid's
    range, in ``color``, each hovering the loss there. Where no grid point lies on a model the star sits on the
    curve as drawn (between its two neighbours) and the hover gives the nearest grid point's loss, said as such.
    A model whose neighbours' losses are not known (not computed yet, diverged) is not drawn. ``curve``: the
    curve's label, for an overlay of several (hovered, no name written beside the stars). None for other
    surfaces, none drawn, or models that cannot be marked."""
    models = line_models(surface)
    if models is None or models["unmarked"]:
        return None
    x, loss = np.asarray(surface.x, float), np.asarray(surface.loss, float)
    t = np.asarray(models["x"])
    near = np.abs(x[None, :] - t[:, None]).argmin(axis=1)
    on_grid = np.abs(x[near] - t) <= 1e-9 * np.ptp(x)
    known = np.isfinite(loss)
    order = np.argsort(x[known])
    xs, ls = x[known][order], loss[known][order]
    # the height drawn at t: the curve's own line between the known points around it (none past them, nor
    # across a point not known)
    y = np.full(t.shape, np.nan)
    for k, tk in enumerate(t):
        if on_grid[k]:
            y[k] = loss[near[k]]
        elif xs.size >= 2 and xs[0] <= tk <= xs[-1]:
            j = int(np.searchsorted(xs, tk))
            lo, hi = xs[j - 1], xs[j]
            between = (x > min(lo, hi)) & (x < max(lo, hi))  # a gap (NaN) between them breaks the drawn line
            if not between.any():
                y[k] = float(np.interp(tk, xs, ls))
    shown = np.flatnonzero(np.isfinite(y) & np.isfinite(loss[near]))
    if not shown.size:
        return None
    at = "%{hovertext}: no grid point there; at the nearest, t = %{customdata[1]:.6g}: loss: %{customdata[0]:.4g}"
    hover = [("%{hovertext}: loss: %{customdata[0]:.4g}" if on_grid[k] else at) + "<extra></extra>" for k in shown]
    named = [models["labels"][k] + (f" ({models['notes'][k]})" if models["notes"][k] else "") for k in shown]
    return go.Scatter(
        x=t[shown], y=y[shown], name="models", mode="markers" if curve else "markers+text", showlegend=False,
        textposition="top center", hovertemplate=hover,
        text=None if curve else [as_written(models["labels"][k]) for k in shown],
        # names as hovertext, read as %{hovertext}: a name holding "%{x}" is shown as written
        hovertext=[as_written(f"{curve}: {n}" if curve else n) for n in named],
        customdata=np.stack([loss[near], x[near]], axis=-1)[shown],
        marker={"symbol": "star", "size": 14, "color": color, "line": {"width": 1.5, "color": "black"}})


def line_models_outside(surface: Surface) -> list[str]:
    """The models at a straight line's ends (`line_models`) outside the grid's range, each as "name (t = 1)";
    empty for other surfaces or models that cannot be marked."""
    models = line_models(surface)
    if models is None or models["unmarked"]:
        return []
    x = np.asarray(surface.x, float)
    return [f"{label}\u00a0(t\u00a0=\u00a0{t:g})" for t, label in zip(models["x"], models["labels"])
            if not x.min() <= t <= x.max()]


def nearest_grid_points(surface: Surface, px: Any, py: Any) -> dict[str, np.ndarray]:
    """For each point (``px``, ``py``, shape (n,)) of a 2D surface: ``row``/``col`` of the nearest grid point,
    its ``x``/``y``, the surface's ``loss`` there (NaN for a point outside the grid's range), ``inside`` (within
    the range) and ``on_grid`` (a grid point lies at the point itself, to 1e-9 of the axis span)."""
    x, y = np.asarray(surface.x, float), np.asarray(surface.y, float)
    px, py = np.asarray(px, float).ravel(), np.asarray(py, float).ravel()
    col = np.abs(x[None, :] - px[:, None]).argmin(axis=1)
    row = np.abs(y[None, :] - py[:, None]).argmin(axis=1)
    inside = (px >= x.min()) & (px <= x.max()) & (py >= y.min()) & (py <= y.max())
    on_grid = inside & (np.abs(x[col] - px) <= 1e-9 * np.ptp(x)) & (np.abs(y[row] - py) <= 1e-9 * np.ptp(y))
    loss = np.where(inside, np.asarray(surface.loss, float)[row, col], np.nan)
    return {"row": row, "col": col, "x": x[col], "y": y[row], "loss": loss, "inside": inside, "on_grid": on_grid}


def plane_models_trace(surface: Surface, z: np.ndarray | None = None) -> go.Scatter | go.Scatter3d | None:
    """Named stars at the three models of a plane through three models (`plane_models`) that lie inside the
    grid's range, each hovering the plane's loss there (the nearest grid point's, said as such, where no grid
    point lies on the model: a neighbour's loss shown as the model's misled, trial s35; "not computed yet" or
    "diverged" where the loss is not known there); with ``z``, the values drawn (the grid's shape), a 3D trace: for
    each model a mark on the surface at its drawn height (none where its point has no value) and a pin from it up
    to `pin_top` above the drawn values, where the model is named (a mark on the surface alone was hidden by the
    surface in front of it or under a capped plateau, trial s54): its points in threes, (surface, top, gap).
    None for other surfaces, none inside, or models that cannot be marked (``unmarked``)."""
    models = plane_models(surface)
    if models is None or models["unmarked"]:
        return None
    near = nearest_grid_points(surface, models["x"], models["y"])
    shown = np.flatnonzero(near["inside"])
    if not shown.size:
        return None
    done = np.ones(np.shape(surface.loss), bool) if surface.done is None else np.asarray(surface.done, bool)
    hover = []
    for k in shown:
        value = near["loss"][k]
        at = ("" if near["on_grid"][k] else
              "no grid point there; at the nearest, (%{customdata[1]:.6g}, %{customdata[2]:.6g}): ")
        known = ("not computed yet" if not done[near["row"][k], near["col"][k]] else
                 "the loss diverged (NaN or inf)" if not np.isfinite(value) else "loss: %{customdata[0]:.4g}")
        hover.append(f"%{{text}} at ({models['x'][k]:g}, {models['y'][k]:g})<br>{at}{known}%{{hovertext}}"
                     "<extra></extra>")
    px, py = np.asarray(models["x"])[shown], np.asarray(models["y"])[shown]
    # names and notes as text and hovertext, read by the hover as %{text} and %{hovertext}: a name holding "%{x}"
    # is shown as written (trial s49)
    style = {"x": px, "y": py, "name": "models", "mode": "markers+text", "showlegend": False,
             "textposition": "top center", "hovertemplate": hover,
             "text": [as_written(models["labels"][k]) for k in shown],
             "hovertext": [f"<br>{as_written(models['notes'][k])}" if models["notes"][k] else ""
                           for k in shown],
             "customdata": np.stack([near["loss"], near["x"], near["y"]], axis=-1)[shown],
             "marker": {"symbol": "diamond" if z is not None else "star", "size": 6 if z is not None else 14,
                        "color": "white", "line": {"width": 1.5, "color": "black"}}}
    if z is None:
        return go.Scatter(**style)
    heights = drawn_height(surface, z, np.asarray(models["x"], float), np.asarray(models["y"], float), near)[shown]
    top, gap = pin_top(z), np.nan

    def threes(values, fill=None) -> list:  # each model's (surface, top, gap) points
        return [v for value in values for v in (value, value, fill)]

    return go.Scatter3d(
        x=threes(px), y=threes(py), z=[v for h in heights for v in (h, top, None)], mode="lines+markers+text",
        name="models", showlegend=False, textposition="top center",
        text=[v for t in style["text"] for v in ("", t, "")], hovertext=threes(style["hovertext"], ""),
        hovertemplate=threes(hover, ""), customdata=threes(style["customdata"].tolist(), [gap] * 3),
        line={"color": "black", "width": 3}, connectgaps=False,
        marker={"symbol": "diamond", "size": [5, 7, 0] * len(heights), "color": "white",
                "line": {"width": 1.5, "color": "black"}})


#: how far above the drawn values a 3D figure's model pins reach, in their span
PIN_ABOVE = 0.08


def pin_top(z: np.ndarray) -> float:
    """The height where a 3D figure names a plane's models (`plane_models_trace`): `PIN_ABOVE` of the drawn values'
    span above the highest, so each name is seen over the surface (a capped plateau included) from any angle."""
    finite = np.asarray(z, float)[np.isfinite(z)]
    if not finite.size:
        return 0.0
    hi, lo = float(finite.max()), float(finite.min())
    return hi + PIN_ABOVE * ((hi - lo) or max(abs(hi), 1.0))


def drawn_height(surface: Surface, z: np.ndarray, px: np.ndarray, py: np.ndarray, near: dict) -> np.ndarray:
    """The height of the drawn surface ``z`` (the grid's shape) at each point (``px``, ``py``): bilinear within
    its grid cell, so a mark off the grid sits on the surface as drawn (at the nearest grid point's height it
    floated above it or sank below, trial s50); the nearest point's height where a corner of the cell has no
    value; NaN outside the grid's range."""
    from scipy.interpolate import RegularGridInterpolator

    values = np.asarray(z, float)
    at = RegularGridInterpolator((np.asarray(surface.y, float), np.asarray(surface.x, float)), values,
                                 bounds_error=False, fill_value=np.nan)(np.stack([py, px], axis=-1))
    nearest = np.where(near["inside"], values[near["row"], near["col"]], np.nan)
    return np.where(np.isfinite(at), at, nearest)


def plane_models_outside(surface: Surface, sep: str = ", ") -> list[str]:
    """The models of a plane through three models (`plane_models`) outside the grid's range, where a figure
    cannot mark them, each as "name (x, y)" (``sep`` between x and y); empty for other surfaces or models that
    cannot be marked."""
    models = plane_models(surface)
    if models is None or models["unmarked"]:
        return []
    near = nearest_grid_points(surface, models["x"], models["y"])
    return [f"{models['labels'][k]} ({models['x'][k]:g}{sep}{models['y'][k]:g})" for k in np.flatnonzero(~near["inside"])]


def add_plane_models(fig: go.Figure, surface: Surface, z: np.ndarray | None = None) -> None:
    """Mark on ``fig`` the three models of a plane through three models (`plane_models_trace`; nothing for other
    surfaces), and above the plot name those outside the grid's range (not drawn), or say why none is marked.
    ``z`` as there."""
    trace = plane_models_trace(surface, z)
    if trace is not None:
        fig.add_trace(trace)
    models = plane_models(surface)
    outside = plane_models_outside(surface, sep=",\u00a0")  # no line break inside (1, 0)
    _note_models(fig, (models or {}).get("unmarked") or (
        f"outside the range drawn (not marked): {', '.join(outside)}; a range of -0.5..1.5 on both axes holds all "
        "three models" if outside else None), plot_area()[0])


#: the name of the note above a figure that says which models of a path it does not mark (`models_note`)
MODELS_NOTE = "models not marked"


def models_note(fig: go.Figure, text: str | None, width_px: float) -> dict | None:
    """The note (keyword arguments of ``add_annotation``, named `MODELS_NOTE`) that says ``text`` (plain text) above
    the plot, ``width_px`` wide, above the notes already there (a partial surface's): which models of a path a
    figure does not mark, and why. None for no text."""
    if not text:
        return None
    return {"text": fit_title(text, width_px, size=11), "name": MODELS_NOTE,
            "xref": "paper", "yref": "paper", "x": 0.0, "y": 1.0, "xanchor": "left", "yanchor": "bottom",
            "yshift": max(4.0, _above_notes(fig, but=MODELS_NOTE)), "showarrow": False, "font": {"size": 11},
            "align": "left"}


def _note_models(fig: go.Figure, text: str | None, width_px: float) -> None:
    note = models_note(fig, text, width_px)
    if note:
        fig.add_annotation(**note)


def _trajectory_field(trajectory: Any, name: str):
    if isinstance(trajectory, Mapping):
        return trajectory.get(name)
    return getattr(trajectory, name, None)


def _check_path_fits(surface: Surface, path: Any) -> None:
    """Refuse a projected path (``project_trajectory``'s) of other directions than ``surface``'s: its coordinates
    are not points of this plane (one projected onto random directions was drawn on a PCA plane, trial s35). Warn
    where its true losses were evaluated in another mode than the surface's."""
    drawn = (surface.spec.get("directions") or {}).get("fingerprint")
    made = _trajectory_field(path, "directions")
    if drawn and made and drawn != made:
        raise LandscapeError(
            f"trajectory: the path was projected onto other directions (fingerprint {made}) than the surface was "
            f"computed along ({drawn}), so its coordinates are not points of this plane; expected "
            "project_trajectory(checkpoints, d, ...) with the d of compute_surface(model, data, d, ...)")
    evaluated = surface.spec.get("eval") or {}
    drawn_on = (surface.spec.get("data") or {}).get("fingerprint")  # a surface over named splits has none here
    path_on = _trajectory_field(path, "data")
    if drawn_on and path_on and drawn_on != path_on:  # train-split true losses beside a test plane's, unsaid (s40)
        warn_user(f"landscape_nb: trajectory: the path's true losses were evaluated on other data (fingerprint {path_on}) than "
                  f"the surface (fingerprint {drawn_on}, {surface.spec['data'].get('n_samples')} samples): a "
                  "checkpoint's true loss and the plane's under it differ by the data as well as the projection; "
                  "pass project_trajectory(..., data=) the data the surface was computed on (a surface computed "
                  "with max_samples evaluates a subset of them: compute it without)")
    given = _trajectory_field(path, "loss") is not None and not isinstance(path, Mapping)
    if given and isinstance(evaluated, Mapping) and "loss_fingerprint" in evaluated:
        theirs, ours = _trajectory_field(path, "loss_fn"), evaluated.get("loss_fingerprint")
        if theirs != ours:  # a label-smoothed plane beside the default cross-entropy's true losses (re-trial s40)
            warn_user("landscape_nb: trajectory: the path's true losses are of another loss function than the surface's ("
                      + ("the default cross-entropy" if theirs is None else f"fingerprint {theirs}") + " against "
                      + ("the default cross-entropy" if ours is None else f"fingerprint {ours}") + "): a checkpoint's "
                      "true loss and the plane's under it differ by more than the projection; pass "
                      "project_trajectory(..., loss_fn=) the loss_fn the surface was computed with")
    mode, surface_mode = _trajectory_field(path, "mode"), evaluated.get("mode")
    if mode and surface_mode and mode != surface_mode:
        warn_user(f"landscape_nb: trajectory: the path's true losses were evaluated with mode={mode!r}, the surface with "
                  f"mode={surface_mode!r}: a checkpoint's true loss and the plane's under it differ by BatchNorm's "
                  f"statistics as well as the projection; pass project_trajectory(..., mode={surface_mode!r})")
    elif mode == surface_mode == "bn-recompute" and not isinstance(path, Mapping):  # a ProjectedPath's own record
        stats, theirs = evaluated.get("bn_data"), _trajectory_field(path, "bn_data")  # None: the evaluation data
        stats = stats.get("fingerprint") if isinstance(stats, Mapping) else stats  # "given": a fingerprint unknown
        if (theirs is None) if stats == "given" else stats != theirs:  # the final checkpoint off the centre (s37)
            where = ["the evaluation data" if f is None else "bn_data" for f in (theirs, stats)]
            where[1] = "other bn_data" if where == ["bn_data", "bn_data"] else where[1]
            warn_user(f"landscape_nb: trajectory: the path's BatchNorm statistics were re-estimated on {where[0]}, the surface's "
                      f"on {where[1]}: a checkpoint's true loss and the plane's under it differ by more than the "
                      "projection (the centre model's too); pass project_trajectory(..., bn_data=) the surface's "
                      "bn_data")


def add_off_plane_note(fig: go.Figure, surface: Surface, path: Any, labels: list[str]) -> None:
    """Above the plot of ``fig``: the checkpoint of ``path`` farthest from the plane, its distance and that as a
    share of its offset from the centre model (``distance / norm``), and where every checkpoint is over half off the plane, why that
    may be; and how many checkpoints lie outside the grid, where the figure cannot show them (trial s40: 5 of 7,
    each hovering "plane's loss: nan", with no word). Nothing where neither applies."""
    px, py = (_trajectory_field(path, a) for a in "xy")
    inside = (np.asarray(px, float) >= surface.x.min()) & (np.asarray(px, float) <= surface.x.max())
    if py is not None and surface.y is not None:
        inside &= (np.asarray(py, float) >= surface.y.min()) & (np.asarray(py, float) <= surface.y.max())
    outside = int((~inside).sum())
    # drawn: the axes widen to their markers, over no surface (re-trial s58: "not shown" of markers in view)
    beyond = (f"{outside} of {inside.size} checkpoints lie outside the range computed (drawn where no loss is): "
              "compute the surface over a range that holds them (d.suggested_grid(n) for PCA directions)"
              if outside else "")
    distance, norm = _trajectory_field(path, "distance"), _trajectory_field(path, "norm")
    lines = [_off_plane_text(surface, path, labels, distance, norm)] if distance is not None and norm is not None else []
    lines += [beyond] if beyond else []
    if lines:  # wrapped to the figure's width: one line ran off it (trial s58: "...(ignore biasb"), the top margin
        # and the figure grown for the lines past two (the title's room above them)
        text = "<br>".join(fit_title(line, (fig.layout.width or DEFAULT_WIDTH) - DEFAULT_MARGIN["l"], size=11)
                           for line in lines)
        fig.add_annotation(text=text, xref="paper", yref="paper", x=0.0, y=1.0, xanchor="left", yanchor="bottom",
                           yshift=4, showarrow=False, align="left", font={"size": 11})  # above: below is x's title
        extra = 15 * (text.count("<br>") - 1)
        if extra > 0:  # the figure grown by as much: the plot keeps its height (its colour bars' ticks their room);
            # the title pinned where it was, at the top (plotly.js centres it in the top margin: it sank into the
            # note, re-trial s58)
            fig.update_layout(margin={"t": (fig.layout.margin.t or DEFAULT_MARGIN["t"]) + extra},
                              height=(fig.layout.height or DEFAULT_HEIGHT) + extra,
                              title={"y": 1.0, "yref": "container", "yanchor": "top", "pad": {"t": 30}})


def _off_plane_text(surface: Surface, path: Any, labels: list[str], distance, norm) -> str:
    """``add_off_plane_note``'s first line: the checkpoint farthest from the plane, and why all may be."""
    far = np.asarray(norm, float) > 0  # the centre model itself, if in the path, is neither on nor off
    rel = np.asarray(distance, float) / np.where(far, np.asarray(norm, float), np.inf)
    worst = int(np.nanargmax(np.abs(np.asarray(distance, float))))  # the farthest, not the largest share: a
    name = labels[worst] if len(labels[worst]) <= 48 else f"{labels[worst][:22]}…{labels[worst][-22:]}"  # a file
    # name of 90 characters, one word, ran off the figure (re-trial s58)
    text = (f"farthest from the plane: {name}, {abs(float(np.asarray(distance, float)[worst])):.3g} off it "  # checkpoint
            f"({100 * float(rel[worst]):.0f}% of its offset from the centre model)")  # 0.001 off was named (s57)
    if far.any() and float(np.nanmin(rel[far])) > 0.5:  # e.g. another run's checkpoints
        # the same share as the farthest's, said as one: "56% of its offset" then "at least 56% off" read as two
        # measures (trial s58)
        text += f"; every checkpoint has {100 * float(np.nanmin(rel[far])):.0f}% or more of its offset off this plane: "
        biasbn = (surface.provenance.get("directions") or {}).get("ignore") == "biasbn"
        left_out = _trajectory_field(path, "left_out")  # the part no direction can move (ProjectedPath.left_out)
        if left_out is not None:  # said from the path itself: another run's checkpoints were blamed on the
            share = np.asarray(left_out, float)[far] ** 2 / np.asarray(distance, float)[far] ** 2  # biases (s37)
            unmoved = float(np.nanmedian(share)) > 0.5
        else:
            unmoved = biasbn
        text += ("the plane leaves out biases and norm-layer weights (ignore biasbn), where much of a run's "
                 "offset can lie: ignore=None (--ignore none) puts them in" if unmoved and biasbn else
                 "most of that offset lies in tensors none of the plane's directions moves (frozen ones, or "
                 "layers the run that made the plane left unchanged): is this the run that ends at the centre "
                 "model?" if unmoved else "is this the run that ends at the centre model?")
    return text


def centre_trace(surface: Surface) -> go.Scatter | None:
    """A white star at (0, 0), the model a trajectory-PCA plane is centred on, where the path ends when its last
    checkpoint is that model (Li et al. 2018, Fig. 9), its loss on hover; None where (0, 0) is outside the grid.
    Checkpoints that stop before the model left the centre unmarked in the Explorer (trial s58)."""
    centre = nearest_grid_points(surface, [0.0], [0.0])
    if not centre["inside"][0]:
        return None
    at = ("loss: %{customdata[0]:.4g}" if centre["on_grid"][0] else  # a neighbour's loss, said as the centre's
          "no grid point there; loss at the nearest, (%{customdata[1]:.3g}, %{customdata[2]:.3g}): "  # (s35)
          "%{customdata[0]:.4g} (a grid through 0: d.suggested_grid(n))")
    return go.Scatter(
        x=[0.0], y=[0.0], mode="markers", name="centre", showlegend=False,
        marker={"symbol": "star", "size": 14, "color": "white", "line": {"width": 1.5, "color": "black"}},
        customdata=[[float(centre["loss"][0]), float(centre["x"][0]), float(centre["y"][0])]],
        hovertemplate=f"the model at the centre (0, 0)<br>{at}<extra></extra>")


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
    norm = _trajectory_field(trajectory, "norm")
    if distance is not None:
        # with each checkpoint's distance from the centre model (norm): the share of it off the plane, on a fixed
        # 0..1 scale, so a checkpoint mostly off the plane is dark whatever the others do; else the distance,
        # from 0. plotly.js ignores a cmin given without cmax: the scale then ran from the nearest checkpoint,
        # drawn white as if on the plane though 99 % of its offset was off it (trial Y)
        share = None
        if norm is not None and np.asarray(norm, dtype=float).size == n:
            scale = np.asarray(norm, dtype=float).ravel()
            share = np.clip(np.abs(distance) / np.where(scale > 0, scale, np.inf), 0.0, 1.0)
        shown = share if share is not None else np.abs(distance)
        top = 1.0 if share is not None else (float(np.nanmax(shown)) if np.isfinite(shown).any() else 0.0)
        far = float(np.nanmax(np.abs(distance))) if np.isfinite(distance).any() else 0.0  # sized by the distance
        marker.update(  # itself: a checkpoint by the centre, 0.001 off yet 95 % of its offset, drew as large (s57)
            size=np.nan_to_num(6 + 12 * (np.abs(distance) / far if far > 0 else np.zeros(n)), nan=6.0),
            color=shown, colorscale=TRAJECTORY_COLORSCALE, cmin=0.0, cmax=top if top > 0 else 1.0,
            showscale=True,
            colorbar=dict(
                title=dict(text="share of its<br>offset off<br>the plane" if share is not None else
                           "distance<br>from plane"), len=0.4, y=0.0, yanchor="bottom",
                nticks=4,  # a short bar: plotly.js's automatic ticks would crowd it
            ),
        )
        hover += ("<br>off the plane: %{marker.color:.0%} of its offset" if share is not None else
                  "<br>distance from plane: %{marker.color:.4g}")
    loss = _trajectory_field(trajectory, "loss")  # each checkpoint's own loss: the plane's under it is not it
    loss = None if loss is None else np.asarray(loss, dtype=float).ravel()
    if loss is not None and loss.size == n:
        hover += "<br>true loss: %{customdata:.4g}"
    return go.Scatter(
        x=x, y=y, mode="lines+markers", name="trajectory", text=text, marker=marker,
        line=dict(color="black", width=1.5), hovertemplate=hover + "<extra>trajectory</extra>",
        customdata=loss if loss is not None and loss.size == n else None, showlegend=False,
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

    The contour view of a filter-normalized random plane is the figure of Li et al. 2018
    (Figs. 1, 5 [1]_); a trajectory on a PCA plane is Fig. 9 (see `pca_contour`).

    Parameters
    ----------
    %(surface)s
    %(levels)s
    %(log)s
    %(clip)s
    %(run_title)s
    trajectory : dict or object, optional
        ``x`` and ``y`` arrays (the path projected onto the plane), optional ``distance``
        (each point's distance from the plane, shown by marker colour and size, so points
        far off the plane are not mistaken for points on it) and ``labels``; all of
        shape ``(n_checkpoints,)``, in the plane's step-size units.

    %(returns)s

    %(raises)s
        Also if %(bad_clip)s, ``levels`` is not a positive integer, or ``trajectory``
        lacks ``x``/``y`` or its arrays differ in length.

    References
    ----------
    %(li2018)s
    """
    fig = _single_grid_figure("contour", surface, log=log, clip=clip, title=title, levels=levels)
    if trajectory is not None:
        _check_path_fits(surface, trajectory)
        path = _trajectory_trace(trajectory)
        fig.add_trace(path)
        if path.marker.showscale:  # stack the two colorbars instead of overlapping them
            fig.data[0].colorbar.update(len=0.5, y=1.0, yanchor="top")  # the path's: 0..0.4
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
    %(run_title)s

    %(returns)s

    %(raises)s
        Also if %(bad_clip)s.
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
    """Rotatable 3D loss surface with its contour lines projected on the floor
    (the 3D views of Li et al. 2018, Fig. 5 [1]_).

    The height axis spans the values shown, with round tick values only above the bottom
    quarter of the box, whose corner holds the y axis's end label (see `scene_z_ticks`).

    Parameters
    ----------
    %(surface)s
    %(log)s
    %(clip)s
    %(run_title)s
    contours : bool, default True
        Draw contour lines on the surface and project them onto the floor, if the surface
        has no gaps (missing or non-finite points): next to a gap plotly.js's WebGL contour
        lines take seconds a frame without a GPU, so a surface with gaps is drawn without
        them (`plot.contour` draws them at no such cost).

    %(returns)s

    %(raises)s
        Also if %(bad_clip)s.

    References
    ----------
    %(li2018)s
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
    and without skip connections (Li et al. 2018, Fig. 5 [1]_).

    Panels with the same axis label share one axis title; panels spanning different ranges are
    each drawn to their own, and a note above the plot names the ranges (`note_axes`). Three or more 3D panels get a
    fixed width (250 px a panel, plus 200) so that each scene keeps its labels; their height
    axes share one range and tick values, as in `surface`.

    Parameters
    ----------
    surfaces : Surface or sequence of Surface
        2D landscapes, each with ``loss`` of shape ``(len(y), len(x))``; grids may differ.
    kind : {"contour", "heatmap", "surface"}, default "contour"
        The figure drawn for each surface.
    titles : sequence of str, optional
        One per surface; defaults to each ``provenance["title"]`` or ``["label"]``.
    %(log)s
    %(clip)s
        The automatic cap is computed over all surfaces together.
    %(levels)s

    %(returns)s

    %(raises)s
        Also if the list is empty, ``kind`` is unknown, ``titles`` has another length,
        %(bad_clip)s, or ``levels`` is not a positive integer.

    References
    ----------
    %(li2018)s
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
    refuse_log_of_non_positive(log, [s.loss for s in surfaces], "plot.compare")
    n = len(surfaces)
    if titles is None:
        titles = _panel_titles(surfaces)
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
    # Panels that share a label share one axis title, centred under (or beside) them all, so
    # it need not squeeze into one panel; the y axes of panels 2..n then need room only for
    # their tick labels, else for their own title too.
    # 3D scenes under ~230 px wide clip their own tick labels and titles: more than two of
    # them get a figure wide enough (a fixed width: they no longer fit a default one)
    width = max(DEFAULT_WIDTH, 250 * n + 200) if kind == "surface" else None
    raw = np.concatenate([np.asarray(s.loss, dtype=float).ravel() for s in surfaces])
    # a 3D panel's z title is kept only where the panel is drawn wide enough (`scene_axes`): a capped scale's long
    # colour-bar title narrows the panels (a contour's shade, known below, only changes its wording)
    area_w, area_h = plot_area(height=450, width=width or DEFAULT_WIDTH,
                               colorbar=_colorbar_title(log, zmax, raw) if kind == "surface" else True)
    flat = kind != "surface" and n > 1
    shared_x = flat and len({s.x_label for s in surfaces}) == 1
    shared_y = flat and len({s.y_label for s in surfaces}) == 1
    gap = 30 if kind == "surface" else (60 if shared_y else 100)
    spacing = min(0.3, gap / area_w) if n > 1 else 0.0
    panel_w = area_w * (1 - spacing * (n - 1)) / n
    fig = make_subplots(
        rows=1, cols=n, specs=[[spec] * n], subplot_titles=titles, horizontal_spacing=spacing,
        x_title=fit_title(surfaces[0].x_label, area_w) if shared_x else None,
        y_title=fit_title(surfaces[0].y_label, area_h) if shared_y else None,
    )
    x_lines = 1
    captions: list[str | None] = []
    shaded = False  # a contour panel shades where it is above the cap (`above_cap_trace`)
    for k, (s, z) in enumerate(zip(surfaces, zs)):
        n_levels = SURFACE_LEVELS if kind == "surface" else levels
        trace = _grid_trace(kind, s, z, zmin, zmax, levels=n_levels, contours=True)
        trace.coloraxis = "coloraxis"
        fig.add_trace(trace, row=1, col=k + 1)
        shade = above_cap_trace(kind, s, trace.z, zmax, log)
        if shade is not None:
            shaded = True
            fig.add_trace(shade, row=1, col=k + 1)
        lone = lone_points_trace(kind, s, z, zmin, zmax)
        if lone is not None:
            fig.add_trace(lone, row=1, col=k + 1)
        points = grid_points_trace(kind, s, z, zmin, zmax)
        if points is not None:
            fig.add_trace(points, row=1, col=k + 1)
        add_not_computed_tint(fig, kind, s, row=1, col=k + 1)  # a partial contour panel's points not computed yet
        if kind == "surface":
            name = "scene" if k == 0 else f"scene{k + 1}"
            scene, caption = scene_axes(s.x_label, s.y_label, _axis_label(log), panel_w, area_h,
                                         grid=(s.x, s.y))
            fig.layout[name].update(scene)
            fig.layout[name].zaxis.update(scene_z_ticks(zmin, zmax))
            captions.append(caption)
        else:
            if not shared_x:
                x_title = fit_title(s.x_label, panel_w)
                x_lines = max(x_lines, x_title.count("<br>") + 1)
                fig.update_xaxes(title_text=x_title, row=1, col=k + 1)
            if not shared_y:
                fig.update_yaxes(title_text=fit_title(s.y_label, area_h), row=1, col=k + 1)
    if len(set(captions)) == 1:  # one caption says it for every scene
        set_caption(fig, captions[0])
    else:
        for k, caption in enumerate(captions):
            domain = fig.layout["scene" if k == 0 else f"scene{k + 1}"].domain.x
            lines = caption.split("<br>") if caption else []  # markup already (fit_title's): refitted as text
            set_caption(fig, "<br>".join(fit_title(html.unescape(line), panel_w, size=12) for line in lines) or None,
                        x=(domain[0] + domain[1]) / 2, key=str(k))
    if x_lines > 2:
        fig.update_layout(margin=dict(b=44 + 18 * x_lines))
    if kind != "surface":
        fig.update_xaxes(ticks="outside")
        fig.update_yaxes(ticks="outside")
    fig.update_layout(
        coloraxis=dict(
            colorscale=COLORSCALE, cmin=zmin, cmax=zmax,
            colorbar=dict(title=dict(text=_colorbar_title(log, zmax, raw, shaded=shaded))),
        ),
        height=450, width=width if width and width > DEFAULT_WIDTH else None,
    )
    note_sources(fig, surfaces)
    note_partial(fig, surfaces, titles)
    note_coarse(fig, kind, surfaces, titles)
    note_axes(fig, surfaces, titles, overlaid=False)
    return fig

