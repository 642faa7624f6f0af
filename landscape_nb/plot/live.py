"""Live figures: built once for a grid, then refreshed in place as tiles stream in.

Imports neither torch, Dask nor ipywidgets (a ``go.FigureWidget`` is the caller's choice).
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..errors import LandscapeError
from ..surface import Surface
from ._common import (
    ABOVE_CAP,
    ABOVE_CAP_FILL,
    CAPTION,
    COARSE_NOTE,
    COLORSCALE,
    DEFAULT_WIDTH,
    GRID_POINTS,
    LONE_POINTS,
    SCENE_ASPECT,
    SURFACE_LEVELS,
    _axis_label,
    _check_clip,
    _check_surface,
    _colorbar_title,
    _contour_spec,
    _doc,
    _grid_trace,
    _range,
    _title,
    _transform,
    above_cap_trace,
    coarse_note,
    contour_values,
    display_values,
    fit_title,
    grid_points_trace,
    held_fixed_notes,
    hover_customdata,
    hover_template,
    line_mode,
    log_ticks,
    lone_points_trace,
    low_corner,
    non_positive_note,
    plot_area,
    plotly_array,
    replace_note,
    scene_axes,
    scene_eye,
    set_caption,
    surface_contours_drawn,
    sync_partial_note,
)
from .figures import (
    CAP_NOTE,
    MODELS_NOTE,
    _line_hover,
    _metric_hover,
    _trajectory_trace,
    centre_trace,
    line,
    line_models_note,
    line_models_trace,
    loss_axis_cap,
    models_note,
    plane_models_trace,
    provenance_path,
)

_LIVE_KEY = "landscape_nb_live"
LIVE_LEVELS = 30
# the title at the top of the figure, the partial note under it above the panel titles: with t=70 and the title
# centred in the margin, the note ("partial: 270 of 441 points") ran over the title's first word (trial s46)
_HEIGHT, _MARGIN = 520, dict(l=10, r=10, t=92, b=90)
_TITLE_PLACE = dict(y=1.0, yref="container", yanchor="top", pad=dict(t=10))
_SCENE_SHARE = 0.55 * (1 - 0.1)  # the 3D column's share of the plotting area's width
_CONTOUR_SHARE = 0.45 * (1 - 0.1)


#: the name of a live plane's trace of a plane's models on its 3D surface (`_update_models`)
MODELS_3D = "models 3d"


@_doc
def live(
    surface: Surface,
    *,
    log: bool = False,
    clip: float | bool | None = None,
    metric: str | None = "accuracy",
    title: str | None = None,
    width: int | None = None,
) -> go.Figure:
    """A figure meant to be refreshed by `update` while a surface fills in tile by tile.

    2D: a rotatable 3D surface (contours projected on the floor once it has no gaps: see
    `landscape_nb.plot.surface`) and a 2D contour plot side by side on one colour scale.
    1D: loss and ``metric`` on twin axes. Points not computed yet are sent as null (NaN
    is not valid JSON), so they show as gaps.
    Wrap it in a ``FigureWidget`` to watch it update in a notebook (``lnb.widgets.figure_widget``: plotly's own
    takes the properties `update` set out of its copy once a page draws them, so an export of it loses them)::

        fig = lnb.widgets.figure_widget(lnb.plot.live(partial_surface))
        lnb.plot.update(fig, newer_surface)    # one batched message per call

    Parameters
    ----------
    %(surface_any)s
    %(log)s
    %(clip)s
    metric : str or None, default "accuracy"
        1D only: the metric on the right twin axis (skipped when the surface lacks it).
    %(title)s
    width : int, optional
        The figure's width in px (default: sized by the page). 2D: the 3D axis titles, their caption and
        the camera are laid out for it (default: for 700 px), as `update` lays them out later.

    %(returns)s

    %(raises)s
        Also if %(bad_clip)s.
    """
    _check_surface(surface, ndim=None, where="plot.live")
    _check_clip(clip, log)
    if surface.ndim == 1:
        fig = line(surface, metric=metric if metric in surface.metrics else None, log=log, title=title, clip=clip)
        fig.update_layout(height=420, width=width)
        if all(t.name != "models" for t in fig.data):  # a straight line's two models (`line_models_trace`), set
            fig.add_trace(go.Scatter(x=[], y=[], name="models", visible=False, showlegend=False),  # by `update`
                          secondary_y=False)
    else:
        fig = make_subplots(
            rows=1, cols=2, specs=[[{"type": "scene"}, {"type": "xy"}]],
            column_widths=[0.55, 0.45], horizontal_spacing=0.1,
            subplot_titles=["3D surface", "contours"],
        )
        empty = np.full(surface.loss.shape, np.nan)
        for col, (kind, levels) in enumerate((("surface", SURFACE_LEVELS), ("contour", LIVE_LEVELS)), 1):
            trace = _grid_trace(kind, surface, empty, None, None, levels=levels, contours=True)
            trace.name = f"loss {kind}"
            if kind == "surface":
                trace.coloraxis = "coloraxis"  # the one colour bar
            else:
                # plotly.js drops a colour axis shared by a line-coloured contour and a
                # surface, and then draws a colour bar for each on the same spot: the contour
                # keeps its own scale, set to the same range by `update`, without a bar
                trace.showscale = False
            fig.add_trace(trace, row=1, col=col)
        # the contours' shade where the loss is above the colour cap (`above_cap_trace`), set by `update`
        # (its style set here once: a FigureWidget's batched update sent its whole "contours" beside the contour
        # trace's "contours.end", which plotly.js refuses: "cannot set contours.end and a parent attribute")
        fig.add_trace(go.Contour(name=ABOVE_CAP, visible=False, showscale=False, showlegend=False, hoverinfo="skip",
                                 contours={"type": "constraint", "operation": "<", "showlabels": False},
                                 fillcolor=ABOVE_CAP_FILL, line={"width": 0}, connectgaps=False), row=1, col=2)
        # a trajectory-PCA plane's training path on the contours (Li et al. 2018, Fig. 9), set by `update`
        fig.add_trace(go.Scatter(x=[], y=[], name="trajectory", visible=False, showlegend=False), row=1, col=2)
        # and the model at its centre, where the path ends if the last checkpoint is the model (`centre_trace`)
        fig.add_trace(go.Scatter(x=[], y=[], name="centre", visible=False, showlegend=False), row=1, col=2)
        # a plane through three models: the three, named, on the contours and on the 3D surface at its drawn
        # heights (`plane_models_trace`; the 3D pane marked none, s51), set by `update`
        fig.add_trace(go.Scatter(x=[], y=[], name="models", visible=False, showlegend=False), row=1, col=2)
        fig.add_trace(go.Scatter3d(x=[], y=[], z=[], name=MODELS_3D, visible=False, showlegend=False), row=1, col=1)
        # a partial surface's points that no complete cell holds, as markers (`lone_points_trace`), set by `update`
        for col, cls in ((1, go.Scatter3d), (2, go.Scatter)):
            fig.add_trace(cls(name=LONE_POINTS, visible=False, showlegend=False), row=1, col=col)
        # a coarse grid's points (`grid_points_trace`: fewer than 5 an axis, the rest interpolated), set by `update`
        for col, cls in ((1, go.Scatter3d), (2, go.Scatter)):
            fig.add_trace(cls(name=GRID_POINTS, visible=False, showlegend=False), row=1, col=col)
        fig.update_layout(
            title=dict(text=_title(title, surface), **_TITLE_PLACE), height=_HEIGHT, margin=_MARGIN, width=width,
            coloraxis=dict(colorscale=COLORSCALE),
        )
        area, height = plot_area(width=width or DEFAULT_WIDTH, height=_HEIGHT, margin=_MARGIN)
        eye = scene_eye(_SCENE_SHARE * area, height)
        fig.layout.scene.update(camera_eye=eye, aspectmode="manual", aspectratio=SCENE_ASPECT)
        fig.update_xaxes(ticks="outside")
        fig.update_yaxes(ticks="outside")
    fig.update_layout(meta={_LIVE_KEY: {"ndim": surface.ndim, "log": bool(log),
                                        "metric": metric if surface.ndim == 1 and metric in surface.metrics else None,
                                        "placeholder": surface.ndim == 2,
                                        **({"eye": eye} if surface.ndim == 2 else {})}})
    return update(fig, surface, log=log, clip=clip)


def live_info(fig) -> Mapping | None:
    """What `live` recorded in a figure it made (``ndim``, ``log``, ``metric``); None for any other
    figure, or None."""
    meta = getattr(getattr(fig, "layout", None), "meta", None)
    info = meta.get(_LIVE_KEY) if isinstance(meta, Mapping) else None
    return info if isinstance(info, Mapping) else None


@_doc
def update(fig: go.Figure, surface: Surface, *, log: bool | None = None, clip: Any = None,
           title: str | None = None) -> go.Figure:
    """Write ``surface``'s current values into a figure made by `live`, in one batch.

    On a ``go.FigureWidget`` the changes travel to the browser as a single update
    message (``batch_update``); missing points are sent as null, and only what changed is
    sent. The colour range, contour levels and the automatic clipping follow the points
    computed so far. A 2D figure shows a transparent placeholder surface until its first
    values; after that, an update with no values hides the 3D surface until the next ones. The
    contour's axes span the grid from the start (updates on the same grid leave a reader's zoom).
    It batches its changes itself: called inside a ``batch_update`` block of the caller's, plotly does not read
    back what it set there, and the partial note's and caption's edits of ``layout.annotations`` left an empty
    annotation, drawn as a stray arrow on the contours (trial s46); pass ``title`` to set it in the same batch.

    Parameters
    ----------
    fig : plotly.graph_objects.Figure or FigureWidget
        A figure returned by `live` (or a ``go.FigureWidget`` of it); changed in place.
    surface : Surface
        Newer values on the same kind of grid as the one ``fig`` was built for (1D or
        2D, ``loss`` of shape ``(len(x),)`` or ``(len(y), len(x))``), possibly partial.
    log : bool or None, default None
        Show log10(loss); None keeps the figure's current scale.
    %(clip)s
    title : str, optional
        A new title, set in the same batch (None: the figure's stays).

    Returns
    -------
    plotly.graph_objects.Figure or FigureWidget
        ``fig`` itself.

    %(raises)s
        Also if ``fig`` was not made by `live`, ``surface`` has another dimension than
        the one ``fig`` was built for, or %(bad_clip)s.
    """
    meta = fig.layout.meta if isinstance(fig.layout.meta, Mapping) else {}
    info = live_info(fig)
    if info is None:
        raise LandscapeError(
            f"plot.update: got a {type(fig).__name__} not made by plot.live; expected the figure "
            "returned by landscape_nb.plot.live(surface) (or a go.FigureWidget of it)."
        )
    _check_surface(surface, ndim=int(info["ndim"]), where="plot.update")
    log = bool(info.get("log")) if log is None else bool(log)
    _check_clip(clip, log)
    new_meta = {**{k: v for k, v in meta.items() if k != "held_fixed"}, _LIVE_KEY: {**info, "log": log}}
    notes = held_fixed_notes([surface])  # the surface's own, as in the hover text
    if notes:
        new_meta["held_fixed"] = notes
    with fig.batch_update():
        if surface.ndim == 1:
            _update_line(fig, surface, log=log, metric=info.get("metric"), clip=clip)
        else:
            new_meta[_LIVE_KEY]["placeholder"], z = _update_grid(fig, surface, log=log, clip=clip,
                                                                  placeholder=bool(info.get("placeholder")))
            eye = _eye_when_done(fig, surface, z, info.get("eye"))
            if eye is not None:
                new_meta[_LIVE_KEY]["eye"] = eye
            extent = [float(surface.x.min()), float(surface.x.max()), float(surface.y.min()), float(surface.y.max())]
            if info.get("extent") != extent:  # a new grid; the same one keeps a reader's zoom
                # plotly.js autoranges a contour with no values yet to its defaults (-1..6 × -1..4), not its grid
                fig.layout.xaxis.range, fig.layout.yaxis.range = extent[:2], extent[2:]
                new_meta[_LIVE_KEY]["extent"] = extent
        fig.layout.meta = new_meta
        if title is not None:
            fig.layout.title.text = title
    sync_partial_note(fig, surface)  # after the batch: its traces' markers as this update left them
    if surface.ndim == 2:  # a coarse grid's: what is interpolated between its marked points
        replace_note(fig, COARSE_NOTE, coarse_note(fig, "live", [surface]))
    if surface.ndim == 1:  # above the partial note: which of a straight line's models are not marked
        replace_note(fig, MODELS_NOTE, models_note(fig, line_models_note(surface), _line_width(fig)))
    return fig


def _line_width(fig) -> float:
    """The plot area's width of a live line, in px (its legend's margin at the right)."""
    return plot_area(colorbar=False, margin=dict(r=fig.layout.margin.r or 160))[0]


def _eye_when_done(fig, surf: Surface, z: np.ndarray, auto: Mapping | None) -> dict | None:
    """Once ``surf`` is complete (``z``: its displayed values), the 3D camera moved to the corner `low_corner` picks
    for them, where the camera is still where the figure put it (``auto``; a reader's rotation stays), and the new
    position; else None. A capped corner in front drew a wall at the cap across the basin (trial s58); the view is
    not turned while tiles arrive."""
    eye = fig.layout.scene.camera.eye
    now = {a: getattr(eye, a) for a in "xyz"}
    if not surf.is_complete or not isinstance(auto, Mapping) or any(
            now[a] is None or not math.isclose(now[a], auto.get(a, math.nan), rel_tol=1e-6) for a in "xyz"):
        return None
    sx, sy = low_corner(z)
    new = {"x": sx * abs(now["x"]), "y": sy * abs(now["y"]), "z": now["z"]}
    if new != now:
        fig.layout.scene.camera.eye = new
    return new


def _update_line(fig, surf: Surface, *, log: bool, metric: str | None, clip: Any) -> None:
    fig.data[0].x = plotly_array(surf.x)
    loss = _transform(surf.loss, log=False, clip=False)
    fig.data[0].y, fig.data[0].mode = plotly_array(loss), line_mode(loss)  # markers for points with no neighbour
    fig.data[0].hovertemplate = _line_hover(surf, str(surf.provenance.get("label", "surface 0")))
    if len(fig.data) > 1 and metric in surf.metrics:
        fig.data[1].x = plotly_array(surf.x)
        values = _transform(surf.metrics[metric], log=False, clip=False)
        fig.data[1].y, fig.data[1].mode = plotly_array(values), line_mode(values)
        # the axis's name as the loss's hover has it (made from the empty grid's "α (direction 1)" at first)
        fig.data[1].hovertemplate = _metric_hover(surf, metric, str(surf.provenance.get("label", "surface 0")))
    fig.layout.xaxis.title.text = fit_title(surf.x_label, _line_width(fig))
    _update_models(fig, surf)
    fig.layout.yaxis.type = "log" if log else "linear"
    ticks = log_ticks([surf.loss], top=clip) if log else {}  # as plot.line labels them: 0.2, 2, 20, not "2" thrice
    if list(fig.layout.yaxis.tickvals or ()) != ticks.get("tickvals", []):
        fig.layout.yaxis.update(tickmode=ticks.get("tickmode"), tickvals=ticks.get("tickvals"),
                                ticktext=ticks.get("ticktext"))
    # losses ≤ 0 have no logarithm: counted in the axis title, as plot.line does (a live line hid them, its own
    # minimum among them, with no word, trial s34)
    fig.layout.yaxis.title.text = "loss" + non_positive_note(log, [surf.loss]).replace("<br>", " ")
    # capped as plot.line caps it: the Explorer's line of an interpolation extrapolated to 1.5e7 drew the path
    # between the two models flat at 0, while its README and its planes cap (trial s46)
    cap = loss_axis_cap([surf.loss], clip=clip, log=log)
    replace_note(fig, CAP_NOTE, cap[1] if cap else None)
    if list(fig.layout.yaxis.range or ()) != (cap[0] if cap else []):
        # plotly.js keeps an axis whose range was set off autorange when the range is unset: a line capped, then
        # recomputed uncapped, was drawn over plotly's default -1..4, its curve in the bottom fifth (trial s60)
        fig.layout.yaxis.update(range=cap[0], autorange=False) if cap else \
            fig.layout.yaxis.update(range=None, autorange=True)


def _update_grid(fig, surf: Surface, *, log: bool, clip: Any, placeholder: bool) -> tuple[bool, np.ndarray]:
    """Refresh a 2D live figure in place; whether its 3D surface is (still) the placeholder, and the values it
    displays."""
    z = display_values(surf, log=log, clip=clip)
    zmin, zmax = _range([z])
    z_json = plotly_array(z)
    custom = plotly_array(hover_customdata(surf))
    template = hover_template(surf)
    surface_trace, contour_trace = fig.data[0], fig.data[1]
    for trace in (surface_trace, contour_trace):
        trace.x = plotly_array(surf.x)
        trace.y = plotly_array(surf.y)
        trace.customdata = custom
    traced = contour_values(z)  # the lone points left out: markers
    contour_trace.z, contour_trace.hovertemplate = plotly_array(traced), template
    _update_path(fig, surf)
    _update_models(fig, surf, z)
    _update_lone_points(fig, surf, z, zmin, zmax)
    shaded = _update_above_cap(fig, surf, traced, zmax, log)
    # each property is set once: a FigureWidget sends only what differs from the drawn figure
    if zmin is None and placeholder:
        _placeholder(surface_trace, fig.layout, z.shape)  # a figure that has not shown values yet
    elif zmin is None:
        # plotly.js's WebGL surface fails on a z with no number at all: hidden until one arrives
        surface_trace.z, surface_trace.visible = z_json, False
    else:
        surface_trace.z, surface_trace.hovertemplate, surface_trace.visible = z_json, template, None
        if placeholder:  # only then: a reader's own opacity or colour bar setting stays
            _placeholder(surface_trace, fig.layout, None)
    contour_trace.update(_contour_spec(zmin, zmax, LIVE_LEVELS))
    spec = _contour_spec(zmin, zmax, SURFACE_LEVELS).get("contours")
    if spec:
        surface_trace.contours.z.update(spec)
    surface_trace.contours.z.show = surface_contours_drawn(z)
    contour_trace.update(zmin=zmin, zmax=zmax)
    bar_title = _colorbar_title(log, zmax, surf.loss, shaded=shaded) if zmax is not None else _axis_label(log)
    fig.layout.coloraxis.update(cmin=zmin, cmax=zmax, colorbar=dict(title=dict(text=bar_title)))
    # laid out for the figure's width when it has one (the Explorer sets it), else the default; read inside a
    # batch_update, the layout still holds the colour bar's title before this update
    width, height = plot_area(width=fig.layout.width or DEFAULT_WIDTH, height=fig.layout.height or _HEIGHT,
                              margin=_MARGIN, colorbar=bar_title)
    scene, caption = scene_axes(surf.x_label, surf.y_label, _axis_label(log), _SCENE_SHARE * width, height,
                                 grid=(surf.x, surf.y))
    for key in ("camera", "aspectmode", "aspectratio"):  # set once by `live`: an update must not
        scene.pop(key)  # undo the reader's rotation or zoom
    fig.layout.scene.update(scene)
    if caption != next((a.text for a in fig.layout.annotations or () if a.name == CAPTION), None):
        domain = fig.layout.scene.domain.x
        set_caption(fig, caption, x=(domain[0] + domain[1]) / 2)
    fig.layout.xaxis.title.text = fit_title(surf.x_label, _CONTOUR_SHARE * width)
    fig.layout.yaxis.title.text = fit_title(surf.y_label, height)
    return placeholder and zmin is None, z


def _update_above_cap(fig, surf: Surface, traced: np.ndarray, zmax, log: bool) -> bool:
    """Shade the contours (``traced``: the contour trace's values) where the loss is above the colour cap
    (`above_cap_trace`), or hide the shade; whether it shades. A live figure made before the trace existed is
    left as it is (False)."""
    trace = next((t for t in fig.data[2:] if t.name == ABOVE_CAP), None)
    if trace is None:
        return False
    drawn = above_cap_trace("contour", surf, traced, zmax, log)
    if drawn is None:
        if trace.visible is not False:
            trace.update(z=None, visible=False)
        return False
    trace.update(x=plotly_array(surf.x), y=plotly_array(surf.y), z=plotly_array(drawn.z), visible=True)
    trace.contours.value = drawn.contours.value  # the one sub-property that changes (see `live`)
    return True


def _update_lone_points(fig, surf: Surface, z: np.ndarray, zmin, zmax) -> None:
    """Show the points no complete cell holds (`lone_points_trace`: a run on small tiles streams them spread over
    the grid first, and one stopped early drew nothing), and a coarse grid's other points (`grid_points_trace`),
    as markers on the 3D surface and the contours, or hide the marker traces when there are none. A live figure
    made before they existed is left as it is."""
    builders = {LONE_POINTS: lone_points_trace, GRID_POINTS: grid_points_trace}
    for trace in fig.data[2:]:
        if trace.name not in builders:
            continue
        kind = "surface" if trace.type == "scatter3d" else "contour"
        drawn = builders[trace.name](kind, surf, z, zmin, zmax)
        if drawn is None:
            if trace.visible is not False:
                trace.update(x=[], y=[], customdata=None, visible=False, **({"z": []} if kind == "surface" else {}))
            continue
        trace.update(x=drawn.x, y=drawn.y, mode=drawn.mode, marker=drawn.marker, customdata=drawn.customdata,
                     hovertemplate=drawn.hovertemplate, visible=True, **({"z": drawn.z} if kind == "surface" else {}),
                     **({"text": drawn.text, "textposition": drawn.textposition} if drawn.text is not None else {}),
                     **({"cliponaxis": drawn.cliponaxis} if kind == "contour" else {}))


def _update_path(fig, surf: Surface) -> None:
    """Draw a trajectory-PCA plane's training path (`provenance_path`) and the model at its centre (`centre_trace`)
    on the contours, or hide both traces for other directions. Its distance from the plane colours and sizes the
    markers and is in the hover text, without the colour bar `contour` gives it (the live figure's bar is the
    loss's)."""
    trace = next((t for t in fig.data[2:] if t.name == "trajectory"), None)
    if trace is None:  # a live figure made before the path trace existed
        return
    path = provenance_path(surf)
    star = next((t for t in fig.data[2:] if t.name == "centre"), None)  # None: made before the star existed
    centre = None if star is None or path is None else centre_trace(surf)
    if centre is not None:
        star.update(x=centre.x, y=centre.y, mode=centre.mode, marker=centre.marker, customdata=centre.customdata,
                    hovertemplate=centre.hovertemplate, visible=True)
    elif star is not None and (star.visible is not False or len(star.x or ())):
        star.update(x=[], y=[], customdata=None, visible=False)
    if path is None:  # hidden and emptied: an export of the next surface carried the last PCA run's path
        if trace.visible is not False or len(trace.x or ()):
            trace.update(x=[], y=[], text=None, customdata=None, visible=False)
        return
    drawn = _trajectory_trace(path)
    drawn.marker.showscale = False
    trace.update(x=drawn.x, y=drawn.y, mode=drawn.mode, text=drawn.text, marker=drawn.marker, line=drawn.line,
                 hovertemplate=drawn.hovertemplate, customdata=drawn.customdata, visible=True)


def _update_models(fig, surf: Surface, z: np.ndarray | None = None) -> None:
    """Mark a plane through three models' three models on the contours (`plane_models_trace`) and, given ``z``
    (the values drawn), on the 3D surface at their drawn heights, or a straight line's two on the curve
    (`line_models_trace`): named stars, the loss there on hover; or hide the traces for other directions."""
    for name, height in (("models", None), (MODELS_3D, z)):
        trace = next((t for t in fig.data if t.name == name), None)
        if trace is None or (name == MODELS_3D and z is None):  # a live figure made before the trace existed
            continue
        drawn = line_models_trace(surf) if surf.ndim == 1 else plane_models_trace(surf, height)
        if drawn is None:
            if trace.visible is not False or len(trace.x or ()):
                trace.update(x=[], y=[], text=None, customdata=None, hovertemplate=None, hovertext=None, visible=False,
                             **({"z": []} if name == MODELS_3D else {}))
            continue
        trace.update(x=drawn.x, y=drawn.y, mode=drawn.mode, text=drawn.text, marker=drawn.marker,
                     textposition=drawn.textposition, hovertemplate=drawn.hovertemplate, hovertext=drawn.hovertext,
                     customdata=drawn.customdata, visible=True,
                     **({"z": drawn.z, "line": drawn.line, "connectgaps": False} if name == MODELS_3D else {}))


def _placeholder(surface_trace, layout, shape: tuple[int, int] | None) -> None:
    """Until a live figure first shows values (``shape`` given, the grid's): a flat, fully transparent
    surface at height 0, without hover, spike or highlight lines, or colour bar; ``shape=None``
    undoes it.

    plotly.js's WebGL surface fails on a z with no number at all, and it links the surface's
    WebGL programs the first time one is drawn: in software WebGL (Chromium's SwiftShader, a
    2-core box) a first tile took 0.54 s from update to drawn on a hidden surface vs 0.40 s on
    this placeholder (``benchmarks/bench_live_figure.py``, medians of 5 fresh pages). Drawing
    it when the figure is shown moves that cost before Compute. Nothing of it can be seen or
    hovered. A figure that has shown values hides its surface until the next ones instead:
    redrawing the placeholder over them took 0.20 s vs 0.09 s for hiding them (the widget's
    messages replayed in the same Chromium), and the Explorer's second Compute painted in
    0.90 vs 0.75 s.
    """
    show = shape is not None
    if show:  # plotly.js hovers a trace with a hovertemplate even when told to skip it
        surface_trace.z, surface_trace.hovertemplate = np.zeros(shape).tolist(), None
    surface_trace.opacity = 0 if show else None
    surface_trace.hoverinfo = "skip" if show else None
    layout.coloraxis.showscale = False if show else None
    for axis in "xyz":  # spike and highlight lines are drawn where the cursor meets a surface, seen or not
        layout.scene[f"{axis}axis"].showspikes = False if show else None
        surface_trace.contours[axis].highlight = False if show else None
