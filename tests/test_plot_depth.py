"""depth_figure: the six planes in a 2 × 3 grid on one colour axis, titled with their numbers."""
from __future__ import annotations

import numpy as np
import pytest

from landscape_nb import LandscapeError, Surface
from landscape_nb.depth import DepthComparison, DepthSettings, summarize, zoo_name
from landscape_nb.plot import depth_figure


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
    assert len(fig.data) == 6
    assert {trace.coloraxis for trace in fig.data} == {"coloraxis"}
    every = np.concatenate([np.asarray(s.loss).ravel() for s in comp.surfaces.values()])
    assert fig.layout.coloraxis.cmin == pytest.approx(every.min())
    assert fig.layout.coloraxis.cmax <= every.max()
    titles = [a.text for a in fig.layout.annotations]
    for row in comp.rows:
        expected = f"ResNet-{row.depth}, {'skip' if row.skip else 'no skip'}"
        (title,) = [t for t in titles if t.startswith(expected + " ")]
        assert f"{row.n_minima} minima" in title and f"{row.basin_radius:.2f}" in title


def test_skip_on_top_row_depth_left_to_right():
    comp = synthetic_comparison()
    fig = depth_figure(comp)
    for k, trace in enumerate(fig.data):
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
