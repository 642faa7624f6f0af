"""Every figure builder's output is clean at its default size and in the Explorer.

Two kinds of check, over one case (or more) per public builder in ``landscape_nb.plot``:

* from the layout alone (no browser): colour bars as plotly.js draws them do not overlap
  (at most one per colour scale), explicit tick values are unique, monotone and spaced,
  axis titles fit their axis (2D) or scene (3D), panels leave room for their neighbour's
  tick labels and titles, and quantities on twin y axes are told apart by colour;
* from the page Chromium renders (Playwright driving Debian's /usr/bin/chromium, the
  figure drawn by plotly.js): no two text boxes overlap, all text lies inside the figure,
  and each axis or colour bar labels every tick value once.

Text drawn inside WebGL (3D axis titles) is not in the page, so 3D titles are checked
from the layout. The surfaces are small synthetic ones with the long labels
``compute_surface`` writes for random directions.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import pytest

import landscape_nb as lnb
from landscape_nb import Surface, plot
from landscape_nb.spectrum import Spectrum

# plotly.js's defaults for a figure that sets no size (what a notebook or export shows at least)
WIDTH, HEIGHT = 700, 450
MARGIN = dict(l=80, r=80, t=100, b=80)
TITLE_PX = 14  # axis-title font size for plotly.js's 12 px default font
GLYPH = 0.5  # an upper bound of the average glyph width in Open Sans, in font sizes
COLORBAR_ROOM = 40  # px a colour bar takes off the plotting area beyond the right margin
MIN_SCENE_PX = 220  # narrower 3D scenes clip their tick labels and axis titles
SCENE_SHARE = 0.45  # a 3D axis title is centred on its axis: it may span this share of the scene
TICK_ROOM = 35  # px the tick labels of a y axis need left of its panel
LINE_PX = 18  # px per line of an axis title
MIN_TICK_PX = 16  # explicit ticks at least this far apart on screen
BAR_GAP_PX = 14  # stacked colour bars: the end tick labels stick out half a line each
OVERLAP_PX = 3.0  # text boxes may meet by this much: a box spans the font's full ascent and
# descent, a few px beyond the glyphs (plotly.js puts a colour bar's top tick label that close
# to the bar's title)

RANDOM_LABELS = {"x_label": "α (random direction 1, filter-normalized)",
                 "y_label": "β (random direction 2, filter-normalized)"}
# the Explorer's Hessian scheme: symbols too wide for a 3D title, alike in their first characters
HESSIAN_LABELS = {"x_label": "Hessian eigenvector λ_max = 1.952 (on 512 training samples)",
                  "y_label": "Hessian eigenvector λ_min = -0.01318 (on 512 training samples)"}


# --- synthetic inputs ----------------------------------------------------------------------


def plane(n=15, label="resnet-56", labels=RANDOM_LABELS, metrics=True, scale=1.0) -> Surface:
    x = np.linspace(-1.0, 1.0, n)
    y = np.linspace(-1.0, 1.0, n - 2)  # non-square, 0 on both axes (sharpness is read there)
    loss = scale * (0.4 + x[None, :] ** 2 + 2 * y[:, None] ** 2 + 0.3 * np.sin(3 * x[None, :]))
    loss[0, 0] = 40.0  # a diverged corner: the colour bar says it is capped
    m = {"accuracy": np.clip(1 - loss / 5, 0, 1)} if metrics else {}
    return Surface(x=x, y=y, loss=loss, metrics=m, provenance={"label": label, **labels})


def low_corner_only(sx: int, sy: int) -> Surface:
    """`plane`'s labels over a bowl whose corners rise far above the rest but the one at (sx, sy) (signs), where
    the 3D camera then stands."""
    x, y = np.linspace(-1.0, 1.0, 15), np.linspace(-1.0, 1.0, 13)
    loss = 0.4 + x[None, :] ** 2 + y[:, None] ** 2
    for cx, cy in ((1, 1), (1, -1), (-1, 1), (-1, -1)):
        if (cx, cy) != (sx, sy):
            loss = loss + 8 * np.clip(cx * x[None, :] + cy * y[:, None] - 0.6, 0, None)
    return Surface(x=x, y=y, loss=loss, provenance={"label": "resnet-56", **RANDOM_LABELS})


def line_1d(label="resnet-56", n=41, shift=0.0) -> Surface:
    x = np.linspace(-1.0, 1.0, n)
    loss = 0.4 + (x - shift) ** 2
    return Surface(x=x, y=None, loss=loss, metrics={"accuracy": 0.9 - 0.2 * (x - shift) ** 2},
                   provenance={"label": label, "x_label": RANDOM_LABELS["x_label"]})


def _decades_line(scale: float = 1.0) -> Surface:
    """A random line's loss from 0.1 at the centre to 30 at its ends (mlp-digits over -3..3), times ``scale``."""
    x = np.linspace(-3.0, 3.0, 61)
    loss = scale * 0.1 * np.exp(np.log(300.0) * np.abs(x) / 3)
    return Surface(x=x, y=None, loss=loss, metrics={"accuracy": 0.95 - 0.25 * np.abs(x)},
                   provenance={"label": "mlp-digits", "x_label": RANDOM_LABELS["x_label"]})


def interpolation_line(x=(-0.5, 1.5), n=41, label="straight line", partial=False) -> Surface:
    """A straight line between two models (scheme interpolate), the models at t = 0 and t = 1; ``x`` the range."""
    t = np.linspace(*x, n)
    loss = 0.3 + 2.0 * (t - 0.5) ** 2 + 0.4 * np.sin(4 * t)
    done = np.arange(n) < n // 2 if partial else None
    return Surface(x=t, y=None, loss=np.where(done, loss, np.nan) if partial else loss,
                   metrics={"accuracy": np.clip(1 - loss / 3, 0, 1)}, done=done, provenance={
                       "label": label, "x_label": "t (small-batch → large-batch)",
                       "directions": {"scheme": "interpolate", "models": ["small-batch", "large-batch"]}})


def path_dict():
    return {"x": [0.8, 0.5, 0.2, 0.0], "y": [0.9, 0.4, 0.1, 0.0], "distance": [0.4, 0.2, 0.05, 0.0],
            "norm": [1.2, 0.7, 0.2, 0.0], "loss": [2.4, 1.2, 0.6, 0.4],
            "labels": ["init", "epoch 1", "epoch 2", "final"]}


def _biasbn(surf: Surface) -> Surface:
    surf.provenance["directions"] = {"scheme": "pca", "ignore": "biasbn"}
    return surf


def pca_plane(capped: bool = True) -> Surface:
    surf = plane(labels={"x_label": "PC1 (81.3% of variance)", "y_label": "PC2 (12.9% of variance)"})
    if not capped:  # no diverged corner: the colour bar's title is short and the scene wider (its titles kept whole)
        surf.loss[0, 0] = surf.loss[0, 1]
    return surf


def plane3_plane(x=(-0.5, 1.5), y=(-0.5, 1.5)) -> Surface:
    """A plane through three models (scheme plane3), the models at (0, 0), (1, 0), (0, 1); ``x``/``y`` the range."""
    xs, ys = np.linspace(*x, 17), np.linspace(*y, 15)
    loss = 0.3 + (xs[None, :] - 0.5) ** 2 + (ys[:, None] - 0.5) ** 2
    names = ["trained", "small-batch", "large-batch"]
    return Surface(x=xs, y=ys, loss=loss, provenance={
        "label": "mlp-digits", "x_label": "trained → small-batch", "y_label": "trained → large-batch",
        "directions": {"scheme": "plane3", "models": names}})


def _partial_plane3(elsewhere=False):  # a stopped run of a range that leaves two models out: both notes above
    full = plane3_plane(x=(-0.5, 0.5), y=(-0.5, 0.5))  # the plot (centred at another model: why none is marked)
    if elsewhere:
        full.provenance["directions"]["made_around_another_model"] = True
    done = np.zeros(full.loss.shape, bool)
    done[:5] = True
    return Surface(full.x, full.y, np.where(done, full.loss, np.nan), done=done, provenance=dict(full.provenance))


def _explorer_live_plane3():  # the Explorer on a plane through three models: the three marked, named
    fig = plot.live(plane3_plane(), title="mlp-digits: plane through three models, 17×15 points")
    fig.update_layout(width=explorer_width())
    return plot.update(fig, plane3_plane())


def eigen_plane() -> Surface:
    s = plane(metrics=False)
    ratio = np.abs(np.sin(3 * s.loss))
    return Surface(s.x, s.y, s.loss, {"eig_ratio": ratio, "lambda_max": 1 + s.loss, "lambda_min": -ratio},
                   provenance=dict(s.provenance))


def spectrum_obj() -> Spectrum:
    grid = np.linspace(-2.0, 60.0, 400)
    density = np.exp(-0.5 * (grid / 0.3) ** 2) / 0.75 + 0.01 * np.exp(-0.5 * ((grid - 50) / 1.5) ** 2)
    rng = np.random.default_rng(0)
    ritz = np.sort(np.concatenate([rng.normal(0, 0.3, (3, 9)), rng.normal(50, 1, (3, 1))], axis=1), axis=1)
    return Spectrum(grid=grid, density=density, ritz_values=ritz, ritz_weights=np.full(ritz.shape, 0.1),
                    sigma=0.1, n_params=1000, n_products=30, seconds=1.0)


def volume_3d() -> Surface:
    x, y, z = np.linspace(-1, 1, 9), np.linspace(-1, 1, 7), np.linspace(-1, 1, 5)
    zz, yy, xx = np.meshgrid(z, y, x, indexing="ij")
    return Surface(x=x, y=y, loss=0.3 + xx ** 2 + 2 * yy ** 2 + 0.5 * zz ** 2, z=z,
                   provenance={"label": "resnet-56", **RANDOM_LABELS, "z_label": "γ (random direction 3)"})


def explorer_width() -> int:
    from landscape_nb.widgets.view import FIGURE_WIDTH

    return FIGURE_WIDTH


def _explorer_live():  # what the Explorer does: build, set its width, update as tiles arrive
    fig = plot.live(plane(), title="resnet-56: filter-normalized random directions")
    fig.update_layout(width=explorer_width())
    return plot.update(fig, plane())


def _explorer_live_hessian():  # the Explorer's figure of the Hessian scheme: its 3D titles and caption
    fig = plot.live(plane(labels=HESSIAN_LABELS), title="mlp-digits: Hessian eigenvectors directions, 31×31 points")
    fig.update_layout(width=explorer_width())
    return plot.update(fig, plane(labels=HESSIAN_LABELS))


def _partial_live():
    full = plane()
    loss = np.array(full.loss)
    loss[5:] = np.nan  # the first tiles are in
    fig = plot.live(Surface(full.x, full.y, loss * np.nan, provenance=dict(full.provenance)))
    return plot.update(fig, Surface(full.x, full.y, loss, provenance=dict(full.provenance)))


def _partial(builder):  # what an export of a cancelled run draws: the points in, marked partial
    full = plane()
    loss, done = np.array(full.loss), np.zeros(full.loss.shape, bool)
    done[:5] = True
    loss[~done] = np.nan
    part = Surface(full.x, full.y, loss, done=done, provenance=dict(full.provenance))
    return plot.mark_partial(getattr(plot, builder)(part), part)


def _depth_figure(labels=False):
    from test_plot_depth import realistic_comparison, synthetic_comparison

    return plot.depth_figure(realistic_comparison() if labels else synthetic_comparison())


CASES = {  # builder -> {case: figure factory}
    "line": {"one": lambda: plot.line(line_1d()),
             # --log over 2.5 decades: plotly.js labels every digit of each decade, small, crowded (trial s58)
             "log, decades": lambda: plot.line(_decades_line(), log=True),
             "several": lambda: plot.line([line_1d("A"), line_1d("B", shift=0.3)]),
             "interpolation models": lambda: plot.line(interpolation_line()),
             "interpolation partial, models outside": lambda: plot.line(interpolation_line(x=(0.1, 0.9), partial=True)),
             "interpolations, several": lambda: plot.line([interpolation_line(label="seed 0"),
                                                          interpolation_line(x=(0.2, 1.5), label="seed 1")])},
    "contour": {"long labels": lambda: plot.contour(plane()),
                "trajectory": lambda: plot.contour(plane(), trajectory=path_dict()),
                "plane3 models": lambda: plot.contour(plane3_plane()),
                "plane3 models outside": lambda: plot.contour(plane3_plane(x=(-0.5, 0.5), y=(-0.5, 0.5))),
                "plane3 partial, models outside": lambda: plot.contour(_partial_plane3()),
                "plane3 partial, centred elsewhere": lambda: plot.contour(_partial_plane3(elsewhere=True))},
    "heatmap": {"log": lambda: plot.heatmap(plane(), log=True)},
    "surface": {"long labels": lambda: plot.surface(plane()),
                "hessian labels": lambda: plot.surface(plane(labels=HESSIAN_LABELS)),
                "plane3 models": lambda: plot.surface(plane3_plane()),
                "pca labels": lambda: plot.surface(pca_plane(capped=False)),  # trial s58: titles ran out of the scene's bottom
                # the camera over the low side (s58): each other corner's view keeps its labels in the figure
                **{f"camera {sx:+d}{sy:+d}": (lambda sx=sx, sy=sy: plot.surface(low_corner_only(sx, sy)))
                   for sx, sy in ((-1, -1), (-1, 1), (1, -1))}},
    "compare": {"contour": lambda: plot.compare([plane(label="skip"), plane(label="no skip", scale=3)]),
                "heatmap 3": lambda: plot.compare([plane(label=f"w{k}") for k in (1, 2, 3)], kind="heatmap"),
                "surface": lambda: plot.compare([plane(label="skip"), plane(label="no skip")], kind="surface"),
                "surface 3 planes": lambda: plot.compare(
                    [plane(label="random"), pca_plane(), plane(label="raw", labels={
                        "x_label": "α (random direction 1, raw)", "y_label": "β (random direction 2, raw)"})],
                    kind="surface")},
    "with_sharpness": {"contour": lambda: plot.with_sharpness(plot.contour(plane()), plane(), radius=0.5)},
    "pca_contour": {"path": lambda: plot.pca_contour(pca_plane(), path_dict()),
                    # every checkpoint far off the plane, one outside the range: a three-line note (trial s58: one
                    # line ran off the figure)
                    "far off": lambda: plot.pca_contour(_biasbn(pca_plane()), title="a PCA plane, titled", path=dict(
                        path_dict(), x=[3.0, 0.5, 0.2, 0.0], distance=[0.9, 0.6, 0.15, 0.0],
                        labels=["ckpt/experiment_2024_a_very_long_descriptive_checkpoint_name_e000_of_run.pt", "e1", "e2",
                                "final"]))},
    "eigen_map": {"ratio": lambda: plot.eigen_map(eigen_plane())},
    "paths": {"accuracy": lambda: plot.paths(
        [Surface(np.linspace(0, 1, 21), None, 1 + 0.5 * np.sin(np.pi * np.linspace(0, 1, 21)),
                 {"accuracy": 0.9 - 0.3 * np.sin(np.pi * np.linspace(0, 1, 21))}, provenance={"label": "line"}),
         Surface(np.linspace(0, 1, 21), None, 1 + 0.05 * np.sin(np.pi * np.linspace(0, 1, 21)),
                 {"accuracy": 0.9 - 0.03 * np.sin(np.pi * np.linspace(0, 1, 21))}, provenance={"label": "curve"})],
        metric="accuracy")},
    "line_panels": {"two": lambda: plot.line_panels(
        [[line_1d("original"), line_1d("rescaled", shift=0.1)], [line_1d("original"), line_1d("rescaled")]],
        titles=["raw directions", "filter-normalized"], radius=0.5),
                    "log, decades": lambda: plot.line_panels([[_decades_line()], [_decades_line(1.3)]],
                                                             titles=["raw", "filter-normalized"], log=True)},
    "live": {"2d": lambda: plot.live(plane()), "2d explorer": _explorer_live, "2d partial": _partial_live,
             "2d explorer hessian": _explorer_live_hessian, "2d explorer plane3": _explorer_live_plane3,
             "2d explorer pca": lambda: plot.live(pca_plane(capped=False), title="mlp-digits: PCA of the training path",
                                                  width=explorer_width()),
             "1d": lambda: plot.live(line_1d()), "1d log, decades": lambda: plot.live(_decades_line(), log=True)},
    "spectrum": {"slq": lambda: plot.spectrum(spectrum_obj())},
    "persistence": {"diagram": lambda: plot.persistence(plane().topology()),
                    "barcode": lambda: plot.persistence(plane().topology(), kind="barcode")},
    "animate": {"path": lambda: plot.animate(plane(), path_dict())},
    "volume": {"isosurface": lambda: plot.volume(volume_3d())},
    "volume_slices": {"z": lambda: plot.volume_slices(volume_3d())},
    "depth_figure": {"contour": lambda: _depth_figure(), "random labels": lambda: _depth_figure(labels=True)},
    "mark_partial": {"contour": lambda: _partial("contour"), "surface": lambda: _partial("surface")},
    "line_splits": {"train-test": lambda: plot.line_splits({"train": line_1d("train"), "test": line_1d("test", shift=0.2)}),
                    "log, decades": lambda: plot.line_splits({"train": _decades_line(), "test": _decades_line(1.3)},
                                                             log=True)},
}
NOT_BUILDERS = {"update", "display_values", "clip_limit", "to_plotly_z", "hover_template", "hover_customdata",
                "export_html", "export_image", "export_vtk"}
PARAMS = [pytest.param(builder, case, id=f"{builder}-{case}") for builder, cases in CASES.items() for case in cases]


def build(builder: str, case: str) -> go.Figure:
    fig = CASES[builder][case]()
    assert isinstance(fig, go.Figure)
    return fig


def test_every_public_figure_builder_has_a_case():
    builders = set(plot.__all__) - NOT_BUILDERS
    assert builders - set(CASES) == set(), "add a case for each new builder to CASES"
    assert set(CASES) <= builders


# --- the layout, as plotly.js reads it ---------------------------------------------------------


def size(fig) -> tuple[float, float, dict]:
    m = {k: (getattr(fig.layout.margin, k) if getattr(fig.layout.margin, k) is not None else v)
         for k, v in MARGIN.items()}
    return fig.layout.width or WIDTH, fig.layout.height or HEIGHT, m


def text_px(text, font=TITLE_PX) -> float:
    lines = re.split(r"<br\s*/?>", str(text or ""))
    return max(len(re.sub(r"<[^>]+>", "", s)) for s in lines) * font * GLYPH


def n_lines(text) -> int:
    return len(re.split(r"<br\s*/?>", str(text))) if text else 0


BAR_TYPES = {"contour", "heatmap", "surface", "histogram2d", "histogram2dcontour", "mesh3d", "volume",
             "isosurface", "cone", "streamtube", "choropleth"}


def colour_bars(fig) -> list[dict]:
    """The colour bars plotly.js draws: one per colour axis its traces share compatibly, one
    per trace with its own scale. A colour axis shared by traces whose bars look different (a
    contour coloured by lines or fill vs a heatmap-like trace) is dropped by plotly.js
    ("Ignoring coloraxis ... linked to incompatible colorscales"), and then every one of them
    draws its own bar."""
    axes: dict[str, list] = {}
    bars = []
    for tr in fig.data:
        if tr.visible is False:
            continue
        if tr.type in BAR_TYPES:
            container, default_show = tr, True
        elif getattr(tr, "marker", None) is not None and "colorbar" in tr.marker:
            container, default_show = tr.marker, False
        else:
            continue
        look = (tr.contours.coloring or "fill") if tr.type == "contour" else "heatmap"
        ax = getattr(container, "coloraxis", None)
        if ax:
            axes.setdefault(ax, []).append((look, container, default_show))
        elif container.showscale if container.showscale is not None else default_show:
            bars.append(container.colorbar)
    for name, members in axes.items():
        if len({look for look, *_ in members}) == 1:
            cax = fig.layout[name]
            if cax.showscale is not False:
                bars.append(cax.colorbar)
        else:
            bars += [c.colorbar for _, c, d in members if (c.showscale if c.showscale is not None else True)]
    return bars


def bar_extent(bar, plot_h) -> tuple[float, float]:
    length = bar.len if bar.len is not None else 1.0
    if bar.lenmode == "pixels":
        length /= plot_h
    y = bar.y if bar.y is not None else 0.5
    anchor = bar.yanchor or "middle"
    lo = {"bottom": y, "middle": y - length / 2, "top": y - length}[anchor]
    return lo, lo + length


def check_colour_bars(fig) -> None:
    _, h, m = size(fig)
    plot_h = h - m["t"] - m["b"]
    bars = colour_bars(fig)
    spots: dict[tuple, list] = {}
    for bar in bars:
        spots.setdefault((round(bar.x if bar.x is not None else 1.02, 3), bar.xanchor or "left"), []).append(bar)
    for spot, here in spots.items():
        extents = sorted(bar_extent(b, plot_h) for b in here)
        for (_, hi1), (lo2, _) in zip(extents, extents[1:]):
            assert (lo2 - hi1) * plot_h >= BAR_GAP_PX - 1e-6, (
                f"{len(here)} colour bars at x={spot} overlap or touch: {extents} of a {plot_h} px plot; their "
                f"tick labels are drawn on top of each other (one bar per colour scale, or stack them "
                f"{BAR_GAP_PX} px apart)")


def axes_2d(fig):
    for key in fig.layout:
        if re.fullmatch(r"[xy]axis\d*", key) and fig.layout[key] is not None:
            yield key, fig.layout[key]


def scenes(fig):
    for key in fig.layout:
        if re.fullmatch(r"scene\d*", key) and fig.layout[key] is not None:
            yield key, fig.layout[key]


def plot_size(fig) -> tuple[float, float]:
    w, h, m = size(fig)
    bar = COLORBAR_ROOM if colour_bars(fig) else 0
    return w - m["l"] - m["r"] - bar, h - m["t"] - m["b"]


def check_ticks(fig) -> None:
    pw, ph = plot_size(fig)
    found = []
    for key, ax in axes_2d(fig):
        found.append((key, ax, ax.range, pw if key.startswith("x") else ph, ax.domain or (0, 1)))
    for key, scene in scenes(fig):
        for a in "xyz":
            found.append((f"{key}.{a}axis", scene[f"{a}axis"], scene[f"{a}axis"].range, 0.5 * pw, (0, 1)))
    for bar in colour_bars(fig):
        found.append(("colorbar", bar, None, ph * (bar.len if bar.len is not None else 1.0), (0, 1)))
    for name, ax, rng, length, domain in found:
        if ax.tickvals is None or len(ax.tickvals) < 2:  # one tick (a barcode of one dimension): no spacing
            continue
        vals = np.asarray(ax.tickvals, dtype=float)
        if getattr(ax, "type", None) == "log":  # plotly.js places them (and reads a log axis's range) in log10
            vals = np.log10(vals)
        assert len(set(vals.tolist())) == vals.size, f"{name}: tick values repeat: {vals}"
        steps = np.diff(vals)
        assert (steps > 0).all() or (steps < 0).all(), f"{name}: tick values not monotone: {vals}"
        span = abs(rng[1] - rng[0]) if rng is not None else np.ptp(vals)
        px = np.abs(steps) / span * length * (domain[1] - domain[0])
        assert px.min() >= MIN_TICK_PX, f"{name}: ticks {vals} only {px.min():.0f} px apart"


def check_titles(fig) -> None:
    pw, ph = plot_size(fig)
    xs = {k: ax for k, ax in axes_2d(fig) if k.startswith("x")}
    for key, ax in axes_2d(fig):
        text = ax.title.text
        if not text:
            continue
        domain = ax.domain or (0, 1)
        length = (domain[1] - domain[0]) * (pw if key.startswith("x") else ph)
        assert text_px(text) <= length, f"{key} title {text!r} (~{text_px(text):.0f} px) longer than its {length:.0f} px axis"
    # a y axis of a panel to the right of another needs room for its ticks and title
    ys = sorted(((ax.domain or (0, 1))[0], k) for k, ax in axes_2d(fig)
                if k.startswith("y") and fig.layout[k].overlaying is None and fig.layout[k].side != "right")
    for _, key in ys:
        ax = fig.layout[key]
        anchor = fig.layout[ax.anchor.replace("x", "xaxis")] if ax.anchor and ax.anchor != "free" else None
        start = (anchor.domain or (0, 1))[0] if anchor is not None else 0.0
        ends = [(x.domain or (0, 1))[1] for x in xs.values()] + [(sc.domain.x or (0, 1))[1] for _, sc in scenes(fig)]
        left = [end for end in ends if end <= start + 1e-9]
        if not left:
            continue
        gap = (start - max(left)) * pw
        need = (TICK_ROOM if ax.showticklabels is not False else 0) + LINE_PX * n_lines(ax.title.text)
        assert gap >= need, f"{key}: {gap:.0f} px to the panel on its left; its tick labels and title need {need}"
    for key, scene in scenes(fig):
        dx, dy = scene.domain.x or (0, 1), scene.domain.y or (0, 1)
        width, height = (dx[1] - dx[0]) * pw, (dy[1] - dy[0]) * ph
        assert width >= MIN_SCENE_PX, f"{key} is {width:.0f} px wide: too narrow for its tick labels and titles"
        for a in "xyz":
            text = scene[f"{a}axis"].title.text
            assert text_px(text) <= SCENE_SHARE * width, (
                f"{key}.{a}axis title {text!r} (~{text_px(text):.0f} px) is cut off by its {width:.0f} px scene")
            # the front axes run down the scene too: a wide, short scene cut "PC2 (6.7% of variance)" at its
            # bottom (trial s58; the z title stands upright at the back, bounded by the width alone)
            assert a == "z" or text_px(text) <= SCENE_SHARE * height, (
                f"{key}.{a}axis title {text!r} (~{text_px(text):.0f} px) runs out of its {height:.0f} px tall scene")
        x_title, y_title = scene.xaxis.title.text, scene.yaxis.title.text
        assert not x_title or x_title != y_title, f"{key}: the x and y axes are both titled {x_title!r}"


def check_twin_axes(fig) -> None:
    for key, ax in axes_2d(fig):
        if not key.startswith("y") or ax.overlaying is None:
            continue
        twin_ref = "y" + key[len("yaxis"):]
        base_ref = "y" + ax.overlaying[1:]
        curves = [t for t in fig.data if t.type == "scatter" and t.name != "models"]  # a path's models: marks
        base = [t for t in curves if (t.yaxis or "y") == base_ref]
        twin = [t for t in curves if t.yaxis == twin_ref]
        if not base or not twin:
            continue
        if len(base) == 1 and len(twin) == 1:  # one quantity per axis: told apart by colour
            assert base[0].line.color and base[0].line.color != twin[0].line.color, (
                f"{base[0].name!r} and {twin[0].name!r} share the colour {base[0].line.color} on twin axes")
        else:  # several curves: a colour per quantity (dash per curve), or a dash per quantity (colour per curve)
            colours = [{t.line.color for t in base}, {t.line.color for t in twin}]
            dashes = [{t.line.dash or "solid" for t in base}, {t.line.dash or "solid" for t in twin}]
            by_colour = all(len(c) == 1 for c in colours) and colours[0] != colours[1]
            by_dash = all(len(d) == 1 for d in dashes) and dashes[0] != dashes[1]
            assert by_colour or by_dash, (
                f"quantities on the twin axes are told apart neither by colour {colours} nor by dash {dashes}")
            for group in (base, twin):
                styles = [(t.line.color, t.line.dash or "solid") for t in group]
                assert len(set(styles)) == len(styles), f"curves on one axis look the same: {styles}"


@pytest.mark.parametrize("builder, case", PARAMS)
def test_layout_colour_bars_ticks_titles_and_twin_axes(builder, case):
    fig = build(builder, case)
    check_colour_bars(fig)
    check_ticks(fig)
    check_titles(fig)
    check_twin_axes(fig)


def test_the_layout_checks_catch_the_faults_they_look_for():
    s = plane()
    shared = go.Figure([go.Surface(z=s.loss, coloraxis="coloraxis"),
                        go.Contour(z=s.loss, coloraxis="coloraxis", contours_coloring="lines")])
    with pytest.raises(AssertionError, match="colour bars .* overlap"):
        check_colour_bars(shared)
    check_colour_bars(go.Figure([go.Contour(z=s.loss, coloraxis="coloraxis"),
                                 go.Contour(z=s.loss, coloraxis="coloraxis")]))  # one compatible axis
    ticks = go.Figure(go.Heatmap(z=s.loss, zmin=0, zmax=2, colorbar=dict(tickvals=[0.4, 0.4, 1.6])))
    with pytest.raises(AssertionError, match="repeat"):
        check_ticks(ticks)
    ticks.data[0].colorbar.tickvals = [0.4, 0.41, 1.6]
    with pytest.raises(AssertionError, match="px apart"):
        check_ticks(ticks)
    ticks.data[0].colorbar.tickvals = [1.6, 0.4, 1.0]
    with pytest.raises(AssertionError, match="monotone"):
        check_ticks(ticks)
    long3d = go.Figure(go.Surface(z=s.loss))
    long3d.update_layout(scene_yaxis_title=RANDOM_LABELS["y_label"])
    with pytest.raises(AssertionError, match="cut off"):
        check_titles(long3d)
    twin = go.Figure([go.Scatter(y=[1, 2], line_color="blue"), go.Scatter(y=[2, 1], yaxis="y2", line_color="blue")])
    twin.update_layout(yaxis2=dict(overlaying="y", side="right"))
    with pytest.raises(AssertionError, match="share the colour"):
        check_twin_axes(twin)


# --- the page Chromium renders -----------------------------------------------------------------

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--enable-unsafe-swiftshader"]

TEXT_BOXES_JS = """async ([fig, width, height]) => {
  const gd = document.getElementById('graph');
  gd.style.width = width + 'px'; gd.style.height = height + 'px';
  Plotly.purge(gd);
  await Plotly.newPlot(gd, fig.data, {...fig.layout, width, height}, {staticPlot: true});
  const origin = gd.getBoundingClientRect();
  const out = [];
  for (const t of gd.querySelectorAll('svg.main-svg text')) {
    const text = t.textContent.trim();
    const style = getComputedStyle(t);
    const r = t.getBoundingClientRect();
    if (!text || style.display === 'none' || style.visibility === 'hidden' || r.width === 0 || r.height === 0) continue;
    let hidden = false;
    for (let e = t; e && e !== gd; e = e.parentElement) {
      const s = getComputedStyle(e);
      if (s.display === 'none' || s.visibility === 'hidden' || s.opacity === '0') { hidden = true; break; }
    }
    if (hidden) continue;
    const group = t.closest('g[class]');
    out.push({text, x: r.x - origin.x, y: r.y - origin.y, w: r.width, h: r.height,
              group: group ? group.getAttribute('class') : '',
              control: !!t.closest('.slider-container, .updatemenu-container')});
  }
  for (const c of gd.querySelectorAll('rect.slider-rail-rect, rect.updatemenu-item-rect')) {  // animation controls
    const r = c.getBoundingClientRect();
    if (r.width > 0 && r.height > 0)
      out.push({text: '', x: r.x - origin.x, y: r.y - origin.y, w: r.width, h: r.height,
                group: 'control ' + c.getAttribute('class'), control: true});
  }
  for (const bar of gd.querySelectorAll('g.colorbar')) {  // a colour bar's whole box, ticks and title in
    const r = bar.getBoundingClientRect();
    if (r.width > 0 && r.height > 0)
      out.push({text: '', x: r.x - origin.x, y: r.y - origin.y, w: r.width, h: r.height,
                group: 'colorbar ' + bar.getAttribute('class')});
  }
  return out;
}"""


@pytest.fixture(scope="module")
def page():
    pytest.importorskip("playwright")
    if not CHROMIUM.exists():
        pytest.skip("Debian's Chromium is not installed at /usr/bin/chromium (apt-get install chromium)")
    import plotly.offline
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            pg = browser.new_page(viewport={"width": 1200, "height": 900})
            pg.set_content("<html><body style='margin:0'><div id='graph'></div><script>"
                           + plotly.offline.get_plotlyjs() + "</script></body></html>")
            yield pg
        finally:
            browser.close()


def text_boxes(page, fig) -> tuple[list[dict], float, float]:
    w, h, _ = size(fig)
    boxes = page.evaluate(TEXT_BOXES_JS, [json.loads(fig.to_json()), w, h])
    return boxes, w, h


def check_rendered_text(boxes, width, height) -> None:
    bars = [b for b in boxes if b["group"].startswith("colorbar ")]
    controls = [b for b in boxes if b["group"].startswith("control ")]
    boxes = [b for b in boxes if not b["group"].startswith(("colorbar ", "control "))]
    for c in controls:  # a slider's rail or a button over text that is not its own
        for b in boxes:
            if b.get("control"):
                continue
            dx = min(c["x"] + c["w"], b["x"] + b["w"]) - max(c["x"], b["x"])
            dy = min(c["y"] + c["h"], b["y"] + b["h"]) - max(c["y"], b["y"])
            assert dx <= OVERLAP_PX or dy <= OVERLAP_PX, (
                f"{c['group']} is drawn over {b['text']!r} ({b['group']}) by {dx:.0f}x{dy:.0f} px")
    for i, a in enumerate(bars):
        for b in bars[i + 1:]:
            dx = min(a["x"] + a["w"], b["x"] + b["w"]) - max(a["x"], b["x"])
            dy = min(a["y"] + a["h"], b["y"] + b["h"]) - max(a["y"], b["y"])
            assert dx <= OVERLAP_PX or dy <= OVERLAP_PX, (
                f"two colour bars drawn on one spot ({a['group']}, {b['group']}): their tick labels interleave")
    for b in boxes:
        assert (b["x"] >= -OVERLAP_PX and b["y"] >= -OVERLAP_PX and b["x"] + b["w"] <= width + OVERLAP_PX
                and b["y"] + b["h"] <= height + OVERLAP_PX), (
            f"{b['text']!r} ({b['group']}) at x={b['x']:.0f}..{b['x'] + b['w']:.0f}, "
            f"y={b['y']:.0f}..{b['y'] + b['h']:.0f} is cut off by the {width}x{height} figure")
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            dx = min(a["x"] + a["w"], b["x"] + b["w"]) - max(a["x"], b["x"])
            dy = min(a["y"] + a["h"], b["y"] + b["h"]) - max(a["y"], b["y"])
            assert dx <= OVERLAP_PX or dy <= OVERLAP_PX, (
                f"{a['text']!r} ({a['group']}) and {b['text']!r} ({b['group']}) overlap by {dx:.0f}x{dy:.0f} px")
    ticks: dict[str, list[str]] = {}
    for b in boxes:
        if b["group"].endswith("tick"):
            ticks.setdefault(b["group"], []).append(b["text"])
    for group, labels in ticks.items():
        assert len(set(labels)) == len(labels), f"{group}: a tick value is labelled twice: {labels}"


@pytest.mark.parametrize("builder, case", PARAMS)
def test_rendered_text_does_not_overlap_and_fits_the_figure(page, builder, case):
    fig = build(builder, case)
    boxes, width, height = text_boxes(page, fig)
    assert any(b["group"].endswith("tick") for b in boxes) or builder == "surface"  # it drew
    check_rendered_text(boxes, width, height)


def test_the_rendered_checks_catch_the_faults_they_look_for(page):
    s = plane()
    fig = go.Figure([go.Surface(z=s.loss, coloraxis="coloraxis"),
                     go.Contour(z=s.loss, coloraxis="coloraxis", contours_coloring="lines")])
    boxes, width, height = text_boxes(page, fig)
    with pytest.raises(AssertionError, match="two colour bars drawn on one spot"):
        check_rendered_text(boxes, width, height)
    fig = plot.animate(plane(), path_dict())
    fig.layout.sliders[0].y = -0.1  # on the x axis's title
    boxes, width, height = text_boxes(page, fig)
    with pytest.raises(AssertionError, match="slider-rail-rect is drawn over 'α"):
        check_rendered_text(boxes, width, height)
    fig = plot.contour(plane())
    fig.update_xaxes(ticks="")  # the first tick labels of the two axes meet in the corner
    fig.update_yaxes(ticks="")
    boxes, width, height = text_boxes(page, fig)
    with pytest.raises(AssertionError, match=r"'−1' \(xtick\) and '−1' \(ytick\) overlap"):
        check_rendered_text(boxes, width, height)


SCENE_WIDTH_JS = """([fig, w, h]) => {
    const div = document.getElementById('graph');
    return Plotly.newPlot(div, fig.data, {...fig.layout, width: w, height: h}).then(
        () => document.querySelector('.gl-container > div').getBoundingClientRect().width);
}"""


@pytest.mark.parametrize("points_above", [0, 1, 120])
def test_a_3d_scene_names_its_height_axis_only_where_it_is_drawn_wide_enough(page, points_above):
    """The z title of a 3D scene is drawn left of its box, and a scene under `SCENE_Z_TITLE_PX` wide cuts it at the
    figure's edge, so the caption names the height instead. The Explorer's scene was drawn narrower than laid out
    where a capped colour scale's title ("310 of 961 points above (shaded),") widened the colour bar: its z title
    showed as "s" (trial s55). Measured in Chromium: a title only on a scene drawn wide enough."""
    from landscape_nb.plot._common import SCENE_Z_TITLE_PX

    surf = plane(n=31)
    loss = np.array(surf.loss)
    loss[0, 0] = 1.0  # plane()'s diverged corner
    if points_above:
        loss.flat[np.argsort(loss, axis=None)[-points_above:]] = 1e5  # the highest points diverged
    surf = Surface(surf.x, surf.y, loss, provenance=dict(surf.provenance))
    fig = plot.live(surf, title="mlp-digits: random directions", width=explorer_width())
    w, h, _ = size(fig)
    drawn = page.evaluate(SCENE_WIDTH_JS, [json.loads(fig.to_json()), w, h])
    titled = bool(fig.layout.scene.zaxis.title.text)
    # laid out within 20 px of the width drawn (a 410 px scene holds its title whole)
    assert titled == (drawn >= SCENE_Z_TITLE_PX - 20), (drawn, fig.layout.scene.zaxis.title.text)
    caption = " ".join(a.text for a in fig.layout.annotations if a.text and "height" in a.text)
    assert ("height: loss" in caption) == (not titled)
    # the long title of a capped scale
    assert (f"{points_above} of" in fig.layout.coloraxis.colorbar.title.text) == bool(points_above)


def test_an_exported_animation_keeps_its_loss_contours_while_it_plays(page, tmp_path):
    """``export_html(plot.animate(...))`` opens playing its frames; plotly.js removed every contour line at the
    first frame played without a redraw (trial s54: the path moved over an empty plane, on opening and at each
    ▶ play). The page's contour lines are counted as Chromium draws them, against the same figure with its
    frames taken out (naive: nothing plays), after the opening run and during and after a ▶ play."""
    fig = plot.animate(plane(), path_dict(), duration=40)
    still = go.Figure(fig)
    still.frames = []
    count = "() => document.querySelectorAll('g.contourlevel path').length"
    last = len(fig.frames) - 1

    def opened(figure, name):
        pg = page.context.browser.new_page(viewport={"width": 1200, "height": 900})
        pg.goto(lnb.export_html(figure, tmp_path / name).as_uri())
        pg.wait_for_function("() => { const gd = document.querySelector('.plotly-graph-div');"
                             " return gd && gd._fullLayout; }")
        return pg

    pg = opened(still, "still.html")
    pg.wait_for_function(f"{count} > 0")
    drawn = pg.evaluate(count)
    pg.close()
    pg = opened(fig, "played.html")
    try:
        current = ("() => { const gd = document.querySelector('.plotly-graph-div');"
                   " return gd.data[gd.data.length - 1].x[0]; }")  # the 'current' marker's checkpoint
        xs = path_dict()["x"]
        pg.wait_for_function(f"() => ({current})() === {xs[last]!r}", timeout=10_000)  # the opening run played
        pg.wait_for_timeout(200)
        assert pg.evaluate(count) == drawn > 0
        pg.get_by_text("▶ play").click()
        seen = []
        for _ in range(8):
            pg.wait_for_timeout(40)
            seen.append(pg.evaluate(count))
        pg.wait_for_timeout(300)
        seen.append(pg.evaluate(count))
        # each frame redraws the plot (a sample may fall inside a redraw); what a frame ends with is drawn
        assert seen[-1] == drawn and seen.count(drawn) > len(seen) // 2, (
            f"contour lines while playing: {seen}, {drawn} in the still figure")
    finally:
        pg.close()
