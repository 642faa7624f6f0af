"""depth_figure: the six planes in a 2 × 3 grid on one colour axis, titled with their numbers."""
from __future__ import annotations

import re

import numpy as np
import pytest

from landscape_nb import LandscapeError, Surface, plot
from landscape_nb.depth import (
    DepthComparison,
    DepthRow,
    DepthSettings,
    summarize,
    zoo_name,
)
from landscape_nb.plot import depth_figure
from landscape_nb.plot._common import ABOVE_CAP, NOT_COMPUTED


def synthetic_comparison():
    t = np.linspace(-1, 1, 11)
    xx, yy = np.meshgrid(t, t)
    rows, surfaces = [], {}
    for depth in (20, 56, 110):
        for skip in (True, False):
            loss = 0.1 + (xx**2 + yy**2) * (1 if skip else depth / 10) + (0 if skip else 0.2 * np.sin(7 * xx))
            name = zoo_name(depth, skip)
            surfaces[name] = Surface(t, t, loss)
            rows.append(summarize(name, depth, skip, 0.9, surfaces[name]))
    return DepthComparison(tuple(rows), DepthSettings(), surfaces, {})


@pytest.mark.parametrize("kind", ["contour", "surface"])
def test_six_panels_share_one_colour_axis(kind):
    comp = synthetic_comparison()
    fig = depth_figure(comp, kind=kind)
    shades = [t for t in fig.data if t.name == ABOVE_CAP]  # where a panel is above the cap (`above_cap_trace`)
    grids = [t for t in fig.data if t.name != ABOVE_CAP]
    assert len(grids) == 6
    assert {trace.coloraxis for trace in grids} == {"coloraxis"}
    top = fig.layout.coloraxis.cmax
    capped = [r.name for r in comp.rows if np.nanmax(comp.surfaces[r.name].loss) > top]
    assert len(shades) == (len(capped) if kind == "contour" else 0) and (kind != "contour" or shades)
    every = np.concatenate([np.asarray(s.loss).ravel() for s in comp.surfaces.values()])
    assert fig.layout.coloraxis.cmin == pytest.approx(every.min())
    assert fig.layout.coloraxis.cmax <= every.max()
    titles = [a.text for a in fig.layout.annotations]
    for row in comp.rows:
        expected = f"ResNet-{row.depth}, {'skip' if row.skip else 'no skip'}"
        (title,) = [t for t in titles if t.startswith(expected + " ")]
        minima = f"{row.n_minima} {'minimum' if row.n_minima == 1 else 'minima'} ·"
        assert minima in title and f"{row.basin_radius:.2f}" in title
        assert ("non-convex" in title) == (row.nonconvex_fraction == row.nonconvex_fraction)  # none without eigen


def test_skip_on_top_row_depth_left_to_right():
    comp = synthetic_comparison()
    fig = depth_figure(comp)
    for k, trace in enumerate(t for t in fig.data if t.name != ABOVE_CAP):
        depth, skip = (20, 56, 110)[k % 3], k < 3
        assert np.array_equal(np.asarray(trace.z, float)[5], np.minimum(
            np.asarray(comp.surfaces[zoo_name(depth, skip)].loss)[5], fig.layout.coloraxis.cmax))
        xaxis = fig.layout[trace.xaxis.replace("x", "xaxis")]
        yaxis = fig.layout[trace.yaxis.replace("y", "yaxis")]
        assert xaxis.domain[0] == pytest.approx((k % 3) / 3, abs=0.05)
        assert (yaxis.domain[0] > 0.5) == skip  # skip on the top row


def test_empty_comparison_raises():
    with pytest.raises(LandscapeError, match="depth_comparison"):
        depth_figure(DepthComparison((), DepthSettings(), {}, {}))


# Geometry as Chromium draws plotly.js's default font (measured on this figure): a panel title is a
# 16 px line and a <sub> line at 70 % of it, 40 px tall together, drawn just above its panel; outside
# ticks and their labels reach 24 px under a panel and 43 px left of one ("−0.5"); an axis title
# starts 11 px (x) or 17 px (y) beyond the tick labels, 18 px a line. Glyphs: at most half the font
# size wide on average.
TITLE_FONT, SUB_SCALE, GLYPH = 16, 0.7, 0.5
PANEL_TITLE_PX, X_TICKS_PX, Y_TICKS_PX, TITLE_LINE_PX = 40, 24, 43, 18
RANDOM = {"x_label": "α (random direction 1, filter-normalized)",
          "y_label": "β (random direction 2, filter-normalized)"}


def realistic_comparison(depths=(20, 56, 110), labels=lambda name: RANDOM):
    """Planes with the labels compute_surface gives random directions, and titles with wide numbers."""
    t = np.linspace(-1, 1, 11)
    xx, yy = np.meshgrid(t, t)
    rows, surfaces = [], {}
    for depth in depths:
        for skip in (True, False):
            name = zoo_name(depth, skip)
            surfaces[name] = Surface(t, t, 0.1 + (xx**2 + yy**2) * (1 if skip else depth / 10),
                                     provenance=dict(labels(name)))
            rows.append(DepthRow(name, depth, skip, 0.9312, 0.1, 12, 0.85, True, 1.0))
    return DepthComparison(tuple(rows), DepthSettings(), surfaces, {})


def _lines(text):
    return [line for line in re.split(r"<br\s*/?>", text or "") if line] if text else []


def _title_width(text):
    """Estimated px width of a panel title: its widest line, a <sub> line at 70 % size."""
    return max(len(re.sub(r"<[^>]+>", "", line)) * TITLE_FONT * (SUB_SCALE if "<sub>" in line else 1) * GLYPH
               for line in _lines(text))


def _axis_title_room(text):
    """px an x axis title takes under the tick labels."""
    n = len(_lines(text))
    return 0 if n == 0 else 11 + TITLE_LINE_PX * n


@pytest.mark.parametrize("depths", [(56,), (20, 56), (20, 56, 110)])
@pytest.mark.parametrize("mixed_labels", [False, True])
def test_panel_titles_and_axis_labels_do_not_overlap_at_the_figures_size(depths, mixed_labels):
    raw = {"x_label": "α (random direction 1, raw)", "y_label": "β (random direction 2, raw)"}
    comp = realistic_comparison(
        depths, labels=lambda name: raw if mixed_labels and name == "resnet56-digits" else RANDOM)
    fig = depth_figure(comp)
    width, height = fig.layout.width, fig.layout.height
    m = fig.layout.margin
    pw = width - (m.l if m.l is not None else 80) - (m.r if m.r is not None else 80) - 40  # and the colour bar
    ph = height - (m.t if m.t is not None else 100) - (m.b if m.b is not None else 80)
    panels = {}  # (x domain, y domain) of each 2D panel, with its axes
    for trace in fig.data:
        xa, ya = fig.layout[trace.xaxis.replace("x", "xaxis")], fig.layout[trace.yaxis.replace("y", "yaxis")]
        panels[(tuple(xa.domain), tuple(ya.domain))] = (xa, ya)
    titles = [a for a in fig.layout.annotations if a.text.startswith("ResNet-")]
    assert len(titles) == 2 * len(depths) == len(panels)
    top_row = max(y for _, y in panels)
    # each title sits centred over its panel, no wider than its panel and the gap to the next one
    xs = sorted({x for x, _ in panels})
    pitch = (xs[1][0] - xs[0][0]) * pw if len(xs) > 1 else pw
    for a in titles:
        (x, y), = [(x, y) for x, y in panels if a.x == pytest.approx((x[0] + x[1]) / 2) and a.y == pytest.approx(y[1])]
        assert a.yanchor == "bottom" and a.xanchor == "center"
        assert _title_width(a.text) <= pitch - 8, f"{a.text!r} runs into the next panel's title"
        assert (x[0] + x[1]) / 2 * pw - _title_width(a.text) / 2 >= -(m.l or 80)  # inside the figure
    # the bottom row's titles clear the top row's x tick labels and axis titles
    for (x, y), (xa, _) in panels.items():
        if y != top_row:
            continue
        below = [yy for xx, yy in panels if xx == x and yy != y]
        if below:
            gap = (y[0] - below[0][1]) * ph
            need = X_TICKS_PX + _axis_title_room(xa.title.text) + PANEL_TITLE_PX
            assert gap >= need, f"{gap:.0f} px between the rows; the top row's labels and the titles need {need}"
    # a panel's y tick labels and title clear the panel on its left
    for (x, y), (_, ya) in panels.items():
        left = [xx for xx, yy in panels if yy == y and xx[1] <= x[0]]
        if left:
            gap = (x[0] - max(xx[1] for xx in left)) * pw
            need = Y_TICKS_PX + (17 + TITLE_LINE_PX * len(_lines(ya.title.text)) if ya.title.text else 0)
            assert gap >= need, f"{gap:.0f} px between columns; the y tick labels and title need {need}"
    # axis titles (14 px) fit their axis; every panel's directions are named, on it or once for all
    for xa, ya in panels.values():
        for ax, length in ((xa, (xa.domain[1] - xa.domain[0]) * pw), (ya, (ya.domain[1] - ya.domain[0]) * ph)):
            for line in _lines(ax.title.text):
                assert len(line) * 14 * GLYPH <= length, f"axis title line {line!r} longer than its {length:.0f} px"
    named = {" ".join(_lines(t)) for t in [a.text for a in fig.layout.annotations]
             + [ax.title.text for pair in panels.values() for ax in pair] if t}
    for s in comp.surfaces.values():
        assert s.x_label in named and s.y_label in named


@pytest.mark.parametrize("kind", ["contour", "surface"])
def test_each_panel_shows_its_own_surface_when_one_holds_isolated_points(kind):
    """`compare` adds a marker trace for a panel's isolated points, and depth_figure paired surfaces with traces
    by position: after a cancelled surface (one point) or one with a diverged corner around a single finite point,
    every later panel showed its neighbour's surface under its own title, the last was dropped, and the partial
    note was lost (trial s35). Each panel's grid must equal the arrays passed in (NaN where not finite, capped at
    the colour axis's top) and its markers the isolated points of its own surface."""
    comp = synthetic_comparison()
    t = comp.surfaces[zoo_name(20, True)].x
    cancelled = np.full((t.size, t.size), np.nan)
    cancelled[4, 6] = 0.3
    corner = np.array(comp.surfaces[zoo_name(56, True)].loss)
    corner[:3, :3] = np.inf
    corner[1, 1] = 5.0  # a finite point whose eight neighbours diverged
    surfaces = {**comp.surfaces, zoo_name(20, True): Surface(t, t, cancelled, done=np.isfinite(cancelled)),
                zoo_name(56, True): Surface(t, t, corner)}
    lone = {zoo_name(20, True): {(t[6], t[4])}, zoo_name(56, True): {(t[1], t[1])}}
    fig = depth_figure(DepthComparison(comp.rows, comp.settings, surfaces, {}), kind=kind)
    top = fig.layout.coloraxis.cmax
    for row in comp.rows:
        traces = list(fig.select_traces(row=1 if row.skip else 2, col=(20, 56, 110).index(row.depth) + 1))
        grid, *markers = (t for t in traces if t.name not in (ABOVE_CAP, NOT_COMPUTED))
        loss = np.asarray(surfaces[row.name].loss, float)
        want = np.where(np.isfinite(loss), np.minimum(loss, top), np.nan)
        if kind == "contour":  # a contour traces no line from its markers' points (`contour_values`)
            for x, y in lone.get(row.name, set()):
                want[list(t).index(y), list(t).index(x)] = np.nan
        np.testing.assert_array_equal(np.asarray(grid.z, float), want, err_msg=row.name)
        assert {(x, y) for m in markers for x, y in zip(m.x, m.y)} == lone.get(row.name, set()), row.name
    assert len([t for t in fig.data if t.name not in (ABOVE_CAP, NOT_COMPUTED)]) == 6 + 2
    tints = [t for t in fig.data if t.name == NOT_COMPUTED]  # a contour panel's points not computed yet
    assert len(tints) == (kind == "contour")
    for tint in tints:
        np.testing.assert_array_equal(np.isfinite(np.asarray(tint.z, float)), ~np.isfinite(cancelled))
    (note,) = [a for a in fig.layout.annotations if a.name == "partial"]
    assert note.text.startswith(f"partial: {zoo_name(20, True)}: 1 of {t.size ** 2} points; "
                                f"{zoo_name(56, True)}: 8 of {t.size ** 2} points diverged")
    assert note.text.endswith("; 2 drawn as markers (no cell of finite losses around them)")
    # above the two-line panel titles (40 px), below the figure's title (its baseline at half the top margin)
    assert note.yshift >= 40 and note.yshift + 18 <= fig.layout.margin.t / 2


def test_planes_on_different_ranges_are_said_above_the_panel_titles():
    """`compare`'s note that panels span different ranges (trial s35) is kept, above the two-line panel titles."""
    comp = synthetic_comparison()
    s = comp.surfaces[zoo_name(56, False)]
    surfaces = {**comp.surfaces, zoo_name(56, False): Surface(s.x / 5, s.y / 5, s.loss)}
    fig = depth_figure(DepthComparison(comp.rows, comp.settings, surfaces, {}))
    (note,) = [a for a in fig.layout.annotations if a.name == "axes differ"]
    assert f"{zoo_name(56, False)}: α ∈ [-0.2, 0.2], β ∈ [-0.2, 0.2]" in note.text.replace("<br>", " ")
    assert note.yshift >= 40 and note.yshift + 18 * (1 + note.text.count("<br>")) <= fig.layout.margin.t / 2


def test_trend_reads_a_flat_series_as_not_getting_worse():
    """Trial s57: minima 1 → 1 and a basin radius 0.60 → 0.60 with skips read "more chaotic with depth" (the test
    was never better from one depth to the next). Worse now also means worse at the deepest than at the
    shallowest; naive: the series below, each read by hand."""
    def row(depth, skip, minima, radius, fraction):
        return DepthRow(f"d{depth}{skip}", depth, skip, 0.9, 0.1, minima, radius, False, fraction)

    rows = (row(20, True, 1, 0.6, 0.5), row(20, False, 1, 0.6, 0.5), row(56, True, 1, 0.6, 0.7),
            row(56, False, 3, 0.2, 0.5), row(110, True, 1, 0.6, 0.7), row(110, False, 3, 0.1, float("nan")))
    trend = DepthComparison(rows, DepthSettings(), {}, {}).trend()
    assert trend["n_minima"] == {"skip": False, "noskip": True, "noskip_worse_at_deepest": True}  # 1,1,1; 1,3,3
    assert trend["basin_radius"] == {"skip": False, "noskip": True, "noskip_worse_at_deepest": True}
    assert trend["nonconvex_fraction"]["skip"] is True  # 0.5, 0.7, 0.7: never better, worse at the deepest
    assert trend["nonconvex_fraction"]["noskip"] is False  # a NaN


def test_a_3d_depth_figures_panels_keep_their_axes_titles_and_z_ticks():
    """Trial s57: depth_figure(kind="surface") copied compare's traces but not its scenes' axes, so each 3D panel
    said "x" and "y" and plotly's own z ticks ran into them. Every panel's scene has compare's axes."""
    comp = synthetic_comparison()
    fig = depth_figure(comp, kind="surface")
    surfaces = [comp.surfaces[zoo_name(d, s)] for s in (True, False) for d in (20, 56, 110)]
    shared = plot.compare(surfaces, kind="surface")
    for n in range(1, 7):
        ours, theirs = fig.layout["scene" if n == 1 else f"scene{n}"], shared.layout["scene" if n == 1 else f"scene{n}"]
        for axis in ("xaxis", "yaxis", "zaxis"):
            assert ours[axis].title.text == theirs[axis].title.text, (n, axis)
            assert ours[axis].tickvals == theirs[axis].tickvals, (n, axis)
        assert ours.xaxis.title.text  # not plotly's "x"
