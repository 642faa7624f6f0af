"""Surface and Directions value-object helpers: with_provenance, empty, check."""
import numpy as np
import pytest
import torch

import landscape_nb as lnb
from landscape_nb import LandscapeError, Surface
from landscape_nb.directions import Directions
from landscape_nb.grid import Grid

from conftest import make_mlp


def _plane(nx=5, ny=3):
    x, y = np.linspace(-1, 1, nx), np.linspace(-2, 2, ny)
    loss = x[None, :] ** 2 + y[:, None] ** 2
    return Surface(x, y, loss, {"accuracy": 1.0 - loss / 10}, spec={"seed": 1}, provenance={"scheme": "random"})


# --------------------------------------------------------- with_provenance ----

def test_surface_with_provenance_adds_and_replaces_keys_and_keeps_the_rest():
    surf = _plane()
    new = surf.with_provenance(label="line", scheme="pca")
    assert dict(new.provenance) == {"scheme": "pca", "label": "line"}
    assert dict(surf.provenance) == {"scheme": "random"}  # the original is untouched
    assert new is not surf and new.x is surf.x and new.y is surf.y and new.loss is surf.loss
    assert new.metrics is surf.metrics and new.done is surf.done and new.spec is surf.spec
    assert new.x_label == "α (direction 1)" and surf.with_provenance(x_label="t").x_label == "t"


def test_directions_with_provenance_shares_vectors_and_layout():
    d = lnb.random_directions(make_mlp(), n=2, seed=4)
    new = d.with_provenance(x_range=[-0.5, 1.5], scheme="custom")
    assert new.vectors is d.vectors and new.layout is d.layout
    assert new.provenance["x_range"] == [-0.5, 1.5] and new.scheme == "custom"
    assert d.scheme == "random" and "x_range" not in d.provenance
    assert {k: v for k, v in new.provenance.items() if k not in ("x_range", "scheme")} == \
        {k: v for k, v in d.provenance.items() if k != "scheme"}
    assert new.fingerprint() == d.fingerprint()  # provenance does not define the values


def test_schemes_range_is_only_a_default():
    from landscape_nb.schemes import _with_range

    d = Directions(torch.ones(1, 3), lnb.random_directions(torch.nn.Linear(2, 1), n=1).layout, {"x_range": [0, 1]})
    new = _with_range(d, x=[-0.5, 1.5], y=[-2, 2])
    assert new.provenance == {"x_range": [0, 1], "y_range": [-2, 2]}
    assert d.provenance == {"x_range": [0, 1]}


# ------------------------------------------------------------------ empty ----

@pytest.mark.parametrize("y", [None, (-2, 2, 4)])
def test_empty_surface_is_all_missing_on_the_grid(y):
    grid = Grid.make((-1, 1, 7), y)
    surf = Surface.empty(grid, ["accuracy", "error"])
    np.testing.assert_array_equal(surf.x, np.linspace(-1, 1, 7))
    shape = (7,) if y is None else (4, 7)
    if y is None:
        assert surf.y is None and surf.ndim == 1
    else:
        np.testing.assert_array_equal(surf.y, np.linspace(-2, 2, 4))
        assert surf.ndim == 2
    assert surf.shape == shape and np.isnan(surf.loss).all()
    assert sorted(surf.metrics) == ["accuracy", "error"]
    assert all(m.shape == shape and np.isnan(m).all() for m in surf.metrics.values())
    assert surf.done.shape == shape and surf.n_done == 0 and not surf.is_complete
    assert dict(surf.spec) == {} and dict(surf.provenance) == {}
    assert surf.check(ndim=grid.ndim) is surf
    assert Surface.empty(grid).metrics == {}


# ------------------------------------------------------------------ check ----

def test_check_passes_and_returns_the_surface():
    surf = _plane()
    assert surf.check() is surf and surf.check(ndim=2, where="plot.contour") is surf
    line = Surface(np.linspace(0, 1, 4), None, np.zeros(4))
    assert line.check(ndim=1) is line


def test_check_refuses_the_other_dimension_and_names_the_plot_that_fits():
    with pytest.raises(LandscapeError) as info:
        _plane().check(ndim=1, where="plot.line")
    assert str(info.value) == ("plot.line: got a 2D surface (loss shape (3, 5)); expected a 1D surface; "
                               "use plot.contour(), plot.heatmap() or plot.surface() for 2D surfaces.")
    line = Surface(np.linspace(0, 1, 4), None, np.zeros(4))
    with pytest.raises(LandscapeError) as info:
        line.check(ndim=2, where="plot.heatmap")
    assert str(info.value) == ("plot.heatmap: got a 1D surface (loss shape (4,)); expected a 2D surface; "
                               "use plot.line() for 1D surfaces.")


def test_check_refuses_arrays_that_do_not_fit_the_grid():
    surf = _plane()
    transposed = Surface(surf.x, surf.y, surf.loss.T)
    with pytest.raises(LandscapeError) as info:
        transposed.check(where="export_vtk")
    assert str(info.value) == ("export_vtk: 'loss' has shape (5, 3) (it looks transposed); expected (3, 5) = "
                               "(len(y), len(x)) for this grid; loss[j, i] must be at (x[i], y[j]).")
    bad_metric = Surface(surf.x, surf.y, surf.loss, {"accuracy": np.zeros((3, 4))})
    with pytest.raises(LandscapeError, match=r"^Surface: 'accuracy' has shape \(3, 4\); expected \(3, 5\)"):
        bad_metric.check()
    short = Surface(np.linspace(0, 1, 4), None, np.zeros(3))
    with pytest.raises(LandscapeError) as info:
        short.check(ndim=1, where="plot.line")
    assert str(info.value) == ("plot.line: 'loss' has shape (3,); expected (4,) = (len(x),) for this grid; "
                               "loss[i] must be at x[i].")


def test_sharpness_method_still_works_from_surface():
    x = np.linspace(-1, 1, 21)
    s = Surface(x, None, 2.0 * x ** 2).sharpness(radius=0.5)["x"]
    assert s.curvature == pytest.approx(4.0) and s.increase == pytest.approx(0.5)
