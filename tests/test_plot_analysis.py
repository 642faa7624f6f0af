"""Figures for PCA planes, eigen-maps, paths and sharpness: checked by their structure."""
import numpy as np
import plotly.graph_objects as go
import pytest

from landscape_nb import LandscapeError, Surface, plot


def _plane(metrics=None, labels=("PC1 (80.0% of variance)", "PC2 (15.0% of variance)")):
    x, y = np.linspace(-1, 1, 7), np.linspace(-0.5, 0.5, 5)
    loss = 1 + x[None, :] ** 2 + 2 * y[:, None] ** 2
    return Surface(x, y, loss, metrics or {}, provenance={"x_label": labels[0], "y_label": labels[1]})


def test_pca_contour_shows_the_path_with_distances_true_losses_and_variance_axes():
    surf = _plane()
    path = {"x": [-0.9, -0.4, 0.0], "y": [-0.3, 0.1, 0.0], "distance": [0.5, 0.2, 0.0],
            "norm": [1.0, 0.5, 0.0], "loss": [2.5, 1.4, 1.0], "labels": ["init", "epoch 1", "final"]}
    fig = plot.pca_contour(surf, path)
    assert isinstance(fig, go.Figure) and [t.type for t in fig.data] == ["contour", "scatter", "scatter"]
    assert (fig.data[2].name, fig.data[2].x, fig.data[2].y) == ("centre", (0.0,), (0.0,))  # the plane's model
    assert fig.data[2].customdata[0][0] == pytest.approx(surf.loss[2, 3])
    assert fig.layout.xaxis.title.text == "PC1 (80.0% of variance)" and "PC2" in fig.layout.yaxis.title.text
    tr = fig.data[1]
    assert "true loss" in tr.hovertemplate and "distance from plane" in tr.hovertemplate
    custom = np.asarray(tr.customdata, float)
    np.testing.assert_allclose(custom[:, 2], path["loss"])
    drawn = custom[:, 3]  # loss of the nearest grid point under each checkpoint
    assert drawn[2] == pytest.approx(surf.loss[2, 3])
    assert list(tr.text) == path["labels"]
    assert any("50%" in a.text for a in fig.layout.annotations)  # the farthest point is 50% off
    bare = plot.pca_contour(surf, {"x": path["x"], "y": path["y"]})  # no true losses or distances: not NaN
    assert "true loss" not in bare.data[1].hovertemplate and "distance" not in bare.data[1].hovertemplate


def test_the_centre_marker_says_when_no_grid_point_holds_the_centre_and_whose_loss_it_shows():
    """A PCA range is rarely symmetric: x=(*x_range, 21) missed 0, and the star said "the model at the centre
    (0, 0), loss: 0.4997" of a grid point at x = 0.187, the model's own being 0.4985 (trial s35)."""
    x, y = np.linspace(-0.8, 2.2, 6), np.linspace(-0.5, 0.5, 5)  # x: -0.8, -0.2, 0.4, ...: no 0
    loss = 1 + x[None, :] ** 2 + 2 * y[:, None] ** 2
    star = plot.pca_contour(Surface(x, y, loss), {"x": [-0.5, 0.0], "y": [0.2, 0.0]}).data[-1]
    assert star.name == "centre"
    said = "no grid point there; loss at the nearest, (%{customdata[1]:.3g}, %{customdata[2]:.3g})"
    assert said in star.hovertemplate
    np.testing.assert_allclose(star.customdata[0], [loss[2, 1], -0.2, 0.0])
    on = plot.pca_contour(_plane(), {"x": [-0.5, 0.0], "y": [0.2, 0.0]}).data[-1]  # 0 a grid point
    assert on.hovertemplate == "the model at the centre (0, 0)<br>loss: %{customdata[0]:.4g}<extra></extra>"


def test_suggested_grids_hold_the_centre_and_the_models_and_cover_the_suggested_ranges():
    """``Directions.suggested_grid``: the scheme's ranges moved so that a grid point is the centre (and, for
    paths between models, 1 too), checked against the grid's own points."""
    import torch

    import landscape_nb as lnb

    model = torch.nn.Linear(4, 3)
    g = torch.Generator().manual_seed(0)
    checkpoints = [{k: v + 0.2 * i * torch.randn(v.shape, generator=g) for k, v in model.state_dict().items()}
                   for i in range(6)]
    other = torch.nn.Linear(4, 3)
    for d, unit in ((lnb.pca_directions(checkpoints, final=model, ignore=None), False),
                    (lnb.random_directions(model, n=3, seed=0), False),
                    (lnb.interpolation_direction(model, other).with_provenance(x_range=[-0.4, 1.3]), True)):
        for num in (21, 20, 11):
            grid = d.suggested_grid(num)
            assert sorted(grid) == ["x", "y", "z"][: d.n]
            for axis, (start, stop, n) in grid.items():
                points = np.linspace(start, stop, n)
                lo, hi = d.provenance.get(f"{axis}_range", (-1.0, 1.0))
                assert n == num and np.abs(points).min() < 1e-9 * (stop - start)  # the centre
                if unit:
                    assert np.abs(points - 1).min() < 1e-9 * (stop - start)  # the second model
                else:  # the suggested range covered
                    assert start <= lo + 1e-9 and stop >= hi - 1e-9
    with pytest.raises(LandscapeError, match=r"num_y=0"):
        lnb.random_directions(model, n=2).suggested_grid(21, num_y=0)


def test_the_path_is_coloured_by_the_share_of_each_offset_off_the_plane_on_a_fixed_scale():
    """Trial Y: the colour scale got cmin=0 without cmax, which plotly.js ignores, so it ran from the nearest
    checkpoint to the farthest: a checkpoint 99 % off the plane was drawn white, as if on it, and another run's
    checkpoints (all far off) looked like a path. The markers now show distance / norm (naive) on 0..1, the note
    names the checkpoint farthest off, and says when every one is mostly off the plane."""
    surf = _plane()
    path = {"x": [-0.9, -0.4, 0.1], "y": [-0.3, 0.1, 0.05], "distance": [1.2, 3.0, 0.99],
            "norm": [2.0, 3.1, 1.0], "labels": ["epoch 0", "epoch 4", "epoch 8"]}
    fig = plot.pca_contour(surf, path)
    marker = fig.data[1].marker
    np.testing.assert_allclose(marker.color, np.array(path["distance"]) / np.array(path["norm"]))
    assert (marker.cmin, marker.cmax) == (0.0, 1.0)  # both given: plotly.js honours them
    notes = " ".join(a.text for a in fig.layout.annotations).replace("<br>", " ")  # wrapped to the plot (s58)
    # the farthest in distance, with its share (trial s57: the largest share, a checkpoint 0.001 off, was named)
    assert "farthest from the plane: epoch 4, 3 off it (97% of its offset from the centre model)" in notes
    np.testing.assert_allclose(marker.size, 6 + 12 * np.array(path["distance"]) / 3.0)  # sized by the distance
    assert "every checkpoint has 60% or more of its offset off this plane: is this the run that ends at the centre " \
           "model?" in notes
    # a plane that leaves biases and norm weights out (ignore="biasbn", the default) leaves their offset off it:
    # trial 2's own run was asked whether it was the run (98.5 % of the weights' variance was in the plane)
    biasbn = _plane()
    biasbn.provenance["directions"] = {"scheme": "pca", "ignore": "biasbn"}
    notes = " ".join(a.text for a in plot.pca_contour(biasbn, path).layout.annotations).replace("<br>", " ")
    assert "60% or more of its offset off this plane: the plane leaves out biases and norm-layer weights" in notes
    assert "--ignore none" in notes and "is this the run" not in notes
    near = dict(path, distance=[0.2, 0.3, 0.0], norm=[2.0, 3.1, 0.0])  # the last one is the centre model
    notes = " ".join(a.text for a in plot.pca_contour(surf, near).layout.annotations).replace("<br>", " ")
    assert "epoch 4, 0.3 off it (10% of" in notes and "every checkpoint" not in notes  # 0.3 > 0.2; 0.3 / 3.1
    bare = plot.contour(surf, trajectory={"x": path["x"], "y": path["y"], "distance": path["distance"]})
    assert (bare.data[1].marker.cmin, bare.data[1].marker.cmax) == (0.0, 3.0)  # no norm: the distance, from 0


def test_eigen_map_figure_is_a_ratio_heatmap_with_loss_contours():
    ratio = np.abs(np.linspace(-1, 1, 35)).reshape(5, 7)
    surf = _plane({"eig_ratio": ratio, "lambda_max": np.ones((5, 7)), "lambda_min": -ratio})
    fig = plot.eigen_map(surf)
    assert [t.type for t in fig.data] == ["heatmap", "contour"]
    heat = fig.data[0]
    np.testing.assert_allclose(np.asarray(heat.z, float), ratio)
    assert fig.data[1].contours.showlabels  # the loss written on its lines: white lines said nothing before
    assert heat.zmin == 0 and "λ" in heat.colorbar.title.text and "λmin" in heat.hovertemplate
    # one colour scale for every map, the reference's 0..0.5: ratios over it share its top colour, which says so
    assert heat.zmax == 0.5 and heat.colorbar.ticktext[-1] == "≥ 0.5" and heat.colorbar.tickvals[-1] == 0.5
    # a convex model's rounding noise (trial s53: |λmin/λmax| up to 5.7e-8 filled the whole scale) stays dark
    noise = 5.7e-8 * np.abs(np.sin(np.arange(35))).reshape(5, 7)
    convex = plot.eigen_map(_plane({"eig_ratio": noise, "lambda_max": np.ones((5, 7)), "lambda_min": -noise}))
    assert convex.data[0].zmax == 0.5 and convex.data[0].colorbar.ticktext[-1] == "0.5"
    np.testing.assert_allclose(np.asarray(convex.data[0].z, float), noise)
    assert len(plot.eigen_map(surf, loss_levels=0).data) == 1
    with pytest.raises(LandscapeError, match="landscape_nb.eigen_map"):
        plot.eigen_map(_plane())


def test_eigen_map_of_a_line_draws_its_eigenvalues_under_its_loss():
    """A 1D eigen-map (eigen_map(..., y=None)) was refused by plot.eigen_map (trial s53): it draws the loss, and
    λmax and λmin below it with 0 marked; the hover's ratio is |λmin/λmax| where λmin < 0, else 0."""
    x = np.linspace(-1, 1, 5)
    lmax, lmin = np.array([2.0, 1.5, 1.0, 1.5, 4.0]), np.array([-0.5, -0.1, 0.2, 0.3, -2.0])
    surf = Surface(x, None, 1 + x ** 2, metrics={"lambda_max": lmax, "lambda_min": lmin,
                                                   "eig_ratio": np.abs(lmin / lmax)})
    fig = plot.eigen_map(surf)
    assert [t.name for t in fig.data] == ["loss", "λmax", "λmin"]
    np.testing.assert_allclose(np.asarray(fig.data[0].y, float), 1 + x ** 2)
    np.testing.assert_allclose(np.asarray(fig.data[1].y, float), lmax)
    np.testing.assert_allclose(np.asarray(fig.data[2].y, float), lmin)
    np.testing.assert_allclose(np.asarray(fig.data[2].customdata, float)[:, 0], [0.25, 0.1 / 1.5, 0, 0, 0.5])
    assert fig.data[2].yaxis == "y2" and any(s.y0 == 0 and s.yref.startswith("y2") for s in fig.layout.shapes)
    assert "curvature along the line" in fig.layout.title.text
    with pytest.raises(LandscapeError, match="the surface has no"):
        plot.eigen_map(Surface(x, None, 1 + x ** 2))


def test_paths_names_each_profile_with_its_barrier():
    t = np.linspace(0, 1, 11)
    line = Surface(t, None, 1 + 0.5 * np.sin(np.pi * t), provenance={"label": "straight line"})
    curve = Surface(t, None, 1 + 0.05 * np.sin(np.pi * t), provenance={"label": "Bézier curve"})
    fig = plot.paths([line, curve])
    names = [tr.name for tr in fig.data]
    assert names == ["straight line, barrier 0.5: loss", "Bézier curve, barrier 0.05: loss"]

    class Curve:  # a BezierCurve-like object: its two profiles
        profile, line_profile = curve, line

    assert [tr.name for tr in plot.paths(Curve()).data] == names

    class Chain:  # another curve between the same models: its straight line to float32's rounding (trial s57: drawn
        profile = Surface(t, None, 1 + 0.1 * np.sin(np.pi * t), provenance={"label": "polygonal chain"})  # twice)
        line_profile = Surface(t, None, line.loss * (1 + 2.5e-7), provenance={"label": "straight line"})

    names = [tr.name for tr in plot.paths([Curve(), Chain()]).data]
    assert [n.split(",")[0] for n in names] == ["straight line", "Bézier curve", "polygonal chain"]


def test_the_loss_axis_of_paths_keeps_each_barrier_and_caps_only_the_extrapolation():
    """The automatic cap of plot.line stopped the axis at 0.3788 while the straight line peaked at 0.863, the
    barrier the figure is drawn for, and its note's "clip=False shows every value" was refused by plot.paths
    (trial s37). The axis now reaches the highest loss between the two models (naive: the max over t in [0, 1])
    and caps only an extrapolated end; clip=False shows every value; no profile at all is refused in words."""
    t = np.linspace(-0.1, 1.1, 25)
    inside = (t >= -1e-9) & (t <= 1 + 1e-9)
    bump = np.where(inside, np.sin(np.pi * np.clip(t, 0, 1)) ** 8, 0.0)  # a narrow barrier: the median stays low
    far = np.where(inside, 0.0, 30 * (np.abs(t - 0.5) - 0.5))  # an extrapolation that rises to 3
    line = Surface(t, None, 0.1 + 0.76 * bump + far, provenance={"label": "straight line"})
    curve = Surface(t, None, 0.1 + 0.01 * bump + far, provenance={"label": "Bézier curve"})
    peak = float(max(line.loss[inside].max(), curve.loss[inside].max()))
    fig = plot.paths([line, curve])
    low, high = fig.layout.yaxis.range
    assert high >= peak and high < far.max()  # the barrier on the axis, the extrapolation capped
    assert any("loss axis capped at 0.86" in a.text for a in fig.layout.annotations)
    assert plot.paths([line, curve], clip=False).layout.yaxis.range is None
    for bad in (None, [], "curve"):
        with pytest.raises(LandscapeError, match=r"^plot.paths: got .* expected a ModeCurve"):
            plot.paths(bad)


def test_line_panels_put_sharpness_in_the_legend_and_with_sharpness_annotates():
    x = np.linspace(-1, 1, 21)
    flat = Surface(x, None, x ** 2, provenance={"label": "original"})
    sharp = Surface(x, None, 10 * x ** 2, provenance={"label": "rescaled"})
    fig = plot.line_panels([[flat, sharp], [flat, flat]], titles=["raw", "filter-normalized"], radius=0.5)
    assert len(fig.data) == 4 and [a.text for a in fig.layout.annotations][:2] == ["raw", "filter-normalized"]
    assert "L''(0) ≈ 2 (h=0.1)" in fig.data[0].name and "L''(0) ≈ 20 (h=0.1)" in fig.data[1].name
    assert fig.data[2].xaxis == "x2"
    ann = plot.with_sharpness(plot.contour(_plane()), _plane(), radius=0.5)
    assert "L''(0) ≈ 2 (h=0.33)" in ann.layout.annotations[-1].text and "L''(0) ≈ 4 (h=0.25)" in ann.layout.annotations[-1].text
    with pytest.raises(LandscapeError, match="one each"):
        plot.line_panels([[flat]], titles=["a", "b"])


def test_the_analysis_figures_of_partial_surfaces_say_so():
    """plot.eigen_map, plot.line_panels and plot.line_splits of a stopped run drew only gaps, with no note
    (trial s33); they say "partial: ..." as the other static figures do, and nothing for complete ones."""
    ratio = np.abs(np.linspace(-1, 1, 35)).reshape(5, 7)
    done = np.ones((5, 7), bool)
    done[:, 4:] = False

    def cut(a):
        return np.where(done, a, np.nan)

    full = _plane({"eig_ratio": ratio, "lambda_max": np.ones((5, 7)), "lambda_min": -ratio})
    part = Surface(full.x, full.y, cut(full.loss), {k: cut(v) for k, v in full.metrics.items()}, done=done)

    def notes(fig):
        return [a.text for a in fig.layout.annotations if a.name == "partial"]

    assert notes(plot.eigen_map(part)) == ["partial: 20 of 35 points"] and notes(plot.eigen_map(full)) == []
    t = np.linspace(-1, 1, 9)
    row = np.isfinite(np.where(t < 0.5, t, np.nan))
    line = Surface(t, None, np.where(row, 1 + t ** 2, np.nan), done=row, provenance={"label": "cut"})
    whole = Surface(t, None, 1 + t ** 2, provenance={"label": "whole"})
    with pytest.warns(UserWarning, match=r"sharpness along x: the loss is NaN at \d+ of the points within r=.* "
                                         r"not computed there \(a partial surface: finish it\), or diverged"):
        panels = plot.line_panels([[whole], [line]])  # it said "the model diverged there"
    assert notes(panels) == [f"partial: cut: {int(row.sum())} of 9 points"]
    assert notes(plot.line_panels([[whole]])) == []
    splits = Surface(t, None, np.where(row, 1 + t ** 2, np.nan), done=row,
                     metrics={"train_loss": np.where(row, 1 + t ** 2, np.nan),
                              "test_loss": np.where(row, 1.2 + t ** 2, np.nan)})
    assert notes(plot.line_splits(splits)) == [f"partial: {int(row.sum())} of 9 points"]
