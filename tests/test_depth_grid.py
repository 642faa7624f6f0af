"""The depth comparison's grid numbers against naive computations on synthetic grids (numpy only).

Local minima: every strict local minimum (lower than its up-to-8 neighbours) is found by
brute force, and its persistence by flooding: raise a level through the sorted grid
values until the 8-connected component of {loss ≤ level} holding the minimum reaches a
lower value (scipy.ndimage.label). Basin radius: a loop over all points.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from landscape_nb import LandscapeError
from landscape_nb.depth import basin_radius, count_minima, minima_persistence, nonconvex_fraction


def naive_minima_persistence(loss: np.ndarray) -> list[float]:
    n_y, n_x = loss.shape
    eight = np.ones((3, 3), dtype=int)
    levels = np.unique(loss)
    out = []
    for j in range(n_y):
        for i in range(n_x):
            nbrs = [loss[jj, ii] for jj in range(j - 1, j + 2) for ii in range(i - 1, i + 2)
                    if (jj, ii) != (j, i) and 0 <= jj < n_y and 0 <= ii < n_x]
            if not all(loss[j, i] < v for v in nbrs):
                continue
            persistence = math.inf
            for level in levels[levels >= loss[j, i]]:
                labels, _ = ndimage.label(loss <= level, structure=eight)
                if (loss[labels == labels[j, i]] < loss[j, i]).any():
                    persistence = level - loss[j, i]
                    break
            out.append(persistence)
    return sorted(out, reverse=True)


def naive_basin_radius(x, y, loss, rise):
    centre = loss[list(y).index(0.0), list(x).index(0.0)]
    best, capped = -1.0, True
    for j, yy in enumerate(y):
        for i, xx in enumerate(x):
            if not loss[j, i] < centre + rise:
                r = math.sqrt(xx * xx + yy * yy)
                if capped or r < best:
                    best, capped = r, False
    if capped:
        best = max(math.sqrt(xx * xx + yy * yy) for xx in x for yy in y)
    return best, capped


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("shape", [(9, 9), (7, 12), (1, 15), (15, 1), (2, 2)])
def test_persistence_matches_flooding_on_random_grids(seed, shape):
    loss = np.random.default_rng(seed).random(shape)
    assert minima_persistence(loss).tolist() == pytest.approx(naive_minima_persistence(loss))


@pytest.mark.parametrize("seed", range(4))
def test_persistence_on_smooth_bumpy_grid_and_prominence_filter(seed):
    rng = np.random.default_rng(seed)
    t = np.linspace(-1, 1, 25)
    xx, yy = np.meshgrid(t, t)
    loss = xx**2 + yy**2 + 0.15 * np.sin(rng.uniform(4, 9) * xx + 1) * np.cos(rng.uniform(4, 9) * yy)
    loss += 1e-9 * rng.random(loss.shape)  # no ties
    naive = naive_minima_persistence(loss)
    assert minima_persistence(loss).tolist() == pytest.approx(naive)
    for prominence in (0.0, 0.01, 0.05, 0.2, 10.0):
        assert count_minima(loss, prominence) == sum(p >= prominence for p in naive)
    assert count_minima(loss, 10.0) == 1  # the global minimum always counts


def test_two_wells_known_values():
    loss = np.array([[5, 5, 5, 5, 5],
                     [5, 0, 3, 1, 5],
                     [5, 5, 5, 5, 5]], dtype=float)
    assert minima_persistence(loss).tolist() == [math.inf, 2.0]
    assert count_minima(loss, 2.0) == 2 and count_minima(loss, 2.5) == 1
    # a NaN wall reads as +inf: both wells stay separate forever
    loss[1, 2] = np.nan
    loss[0, :] = loss[2, :] = np.nan
    loss[:, 0] = loss[:, 4] = np.nan
    assert minima_persistence(loss).tolist() == [math.inf, math.inf]


def test_plateau_counts_once():
    loss = np.full((5, 5), 3.0)
    loss[1:3, 1:3] = 1.0
    assert minima_persistence(loss).tolist() == [math.inf]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("rise", [0.3, 1.0, 4.0])
def test_basin_radius_matches_a_loop(seed, rise):
    rng = np.random.default_rng(seed)
    x = np.linspace(-1, 1, 11)
    y = np.linspace(-0.6, 0.6, 7)
    xx, yy = np.meshgrid(x, y)
    loss = 0.2 + rng.uniform(0.5, 3) * (xx**2 + 2 * yy**2) + 0.3 * rng.random(xx.shape)
    loss[3, 5] = 0.2 + 0.05 * rng.random()
    if seed == 0:
        loss[0, 0] = np.nan  # non-finite counts as above the level
    got = basin_radius(x, y, loss, rise)
    expected = naive_basin_radius(x, y, loss, rise)
    assert got[1] == expected[1] and got[0] == pytest.approx(expected[0])


def test_basin_radius_capped_when_no_point_reaches_the_level():
    x = np.linspace(-1, 1, 5)
    loss = np.ones((5, 5))
    assert basin_radius(x, x, loss, 1.0) == (pytest.approx(math.sqrt(2)), True)
    loss[4, 2] = 2.0  # (0, 1): distance 1
    assert basin_radius(x, x, loss, 1.0) == (pytest.approx(1.0), False)


def test_nonconvex_fraction_leaves_nan_out():
    ratio = np.array([[0.0, 0.05, 0.2], [np.nan, 1.5, 0.1]])
    assert nonconvex_fraction(ratio, 0.1) == pytest.approx(2 / 5)
    assert math.isnan(nonconvex_fraction(np.full(3, np.nan)))


def test_bad_input_raises_with_a_fix():
    with pytest.raises(LandscapeError, match="no point at 0"):
        basin_radius(np.linspace(-1, 1, 4), np.linspace(-1, 1, 5), np.ones((5, 4)))
    with pytest.raises(LandscapeError, match="rise"):
        basin_radius(np.linspace(-1, 1, 5), np.linspace(-1, 1, 5), np.ones((5, 5)), rise=0.0)
    nan_centre = np.ones((5, 5))
    nan_centre[2, 2] = np.nan  # was (0.0, False): a plausible radius 0 (trial s38)
    radius, capped = basin_radius(np.linspace(-1, 1, 5), np.linspace(-1, 1, 5), nan_centre)
    assert np.isnan(radius) and not capped
    with pytest.raises(LandscapeError, match="2D grid"):
        minima_persistence(np.ones(5))
    with pytest.raises(LandscapeError, match="prominence"):
        count_minima(np.ones((3, 3)), -1)


def test_depth_comparison_with_a_users_load_needs_no_test_accuracy_and_names_what_is_missing():
    """``load=`` returning an object without ``.test_accuracy`` raised a bare AttributeError; now the row's
    accuracy is the surface's at the centre (checked against a plain evaluation), and an object without
    ``.test`` is refused naming it."""
    import types

    import torch
    from torch import nn

    from landscape_nb.depth import DepthSettings, depth_comparison

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 5, generator=g), torch.randint(0, 3, (40,), generator=g)
    models = {}

    def load(name):
        torch.manual_seed(len(models))
        models[name] = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
        return types.SimpleNamespace(model=models[name], test=(x, y), loss_fn=nn.CrossEntropyLoss())

    settings = DepthSettings(resolution=3, max_samples=None, eigen_resolution=0)
    # untrained nets near chance: their flat planes read as wide basins with no word (trial s38)
    with pytest.warns(UserWarning, match=r"resnet20-(noskip-)?digits has test accuracy 0\.\d+, near chance \(0\.333: 3 "
                                         r"classes\), so its centre is no trained minimizer") as said:
        comp = depth_comparison((20,), settings, load=load)
    assert len(comp.rows) == 2
    assert sum("near chance" in str(w.message) for w in said) == sum(r.test_accuracy <= 0.4 for r in comp.rows)
    for row in comp.rows:
        with torch.no_grad():
            expected = int((models[row.name](x).argmax(1) == y).sum()) / len(y)  # the exact fraction K/N
        assert row.test_accuracy == expected
    with pytest.raises(LandscapeError, match=r"returned a SimpleNamespace without test; expected an object like "
                                             r"zoo.Example with .model, .test and .loss_fn"):
        depth_comparison((20,), settings, load=lambda name: types.SimpleNamespace(model=load(name).model,
                                                                                  loss_fn=None))


def test_a_zoo_entry_documented_as_not_learning_is_said_to_be_so_not_sent_back_to_training(monkeypatch):
    """The demo and the skip_connections notebook told the user to train the zoo's resnet110-noskip-digits further:
    its entry documents that it does not learn with its twin's recipe (Li et al.'s deepest no-skip net). Near chance,
    a zoo entry in zoo.DOES_NOT_LEARN is said to be that; any other model near chance still gets "train it
    further". (The zoo's loader is stood in for by untrained MLPs on 3 classes: both rows are near chance.)"""
    import types

    import torch
    from torch import nn

    from landscape_nb import zoo
    from landscape_nb.depth import DepthSettings, depth_comparison

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 5, generator=g), torch.randint(0, 3, (40,), generator=g)

    def untrained(name):
        torch.manual_seed(0)
        return types.SimpleNamespace(model=nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3)).eval(),
                                     test=(x, y), loss_fn=nn.CrossEntropyLoss())

    monkeypatch.setattr(zoo, "load", untrained)
    assert "resnet110-noskip-digits" in zoo.DOES_NOT_LEARN and "resnet110-digits" not in zoo.DOES_NOT_LEARN
    settings = DepthSettings(resolution=3, max_samples=None, eigen_resolution=0)
    for load in (None, lambda name: untrained(name)):  # the zoo's loader (the default), and a user's
        with pytest.warns(UserWarning) as said:
            depth_comparison((110,), settings, load=load)
        near = {name: str(w.message) for w in said for name in ("resnet110-digits", "resnet110-noskip-digits")
                if f"depth_comparison: {name} has test accuracy" in str(w.message)}
        assert set(near) == {"resnet110-digits", "resnet110-noskip-digits"}, near
        assert "train it further" in near["resnet110-digits"] and "zoo entry" not in near["resnet110-digits"]
        documented = load is None
        assert ("as its zoo entry documents, without skip connections this depth does not learn"
                in near["resnet110-noskip-digits"]) is documented
        assert ("train it further" in near["resnet110-noskip-digits"]) is not documented


def test_depth_comparison_of_your_own_networks_names_them_by_their_class_and_depth():
    """Trial s59: the depth comparison took only the zoo's depths, so one's own plain and residual nets went in
    through load= under zoo names and were titled "ResNet-20" and "ResNet-56". models= takes them as they are,
    named by class and depth; the surfaces are the naive losses at w0 + a·d1 + b·d2 of the seed's directions."""
    import copy
    import warnings

    import torch
    from torch import nn

    import landscape_nb as lnb
    from landscape_nb.depth import DepthSettings, depth_comparison
    from landscape_nb.plot.depth import panel_title

    class Res(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.out = nn.Linear(5, 8), nn.Linear(8, 8), nn.Linear(8, 3)

        def forward(self, x):
            h = torch.relu(self.a(x))
            return self.out(h + torch.relu(self.b(h)))

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 5, generator=g), torch.randint(0, 3, (40,), generator=g)
    torch.manual_seed(0)
    res, plain = Res().eval(), nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(),
                                             nn.Linear(8, 3)).eval()
    settings = DepthSettings(resolution=3, max_samples=None, eigen_resolution=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # untrained: near chance, said
        comp = depth_comparison(settings=settings, models={(3, False): (plain, (x, y)), (3, True): (res, (x, y))})
    assert [r.name for r in comp.rows] == ["Res-3", "Sequential-3-noskip"]
    assert [(r.depth, r.skip) for r in comp.rows] == [(3, True), (3, False)]
    assert panel_title(comp.rows[0]).startswith("Res-3 (acc ") and "ResNet" not in panel_title(comp.rows[1])
    for row, model in zip(comp.rows, (res, plain)):
        surf = comp.surfaces[row.name]
        d = lnb.random_directions(model, n=2, norm="filter", ignore="biasbn", seed=settings.seed)
        w0 = torch.nn.utils.parameters_to_vector(model.parameters()).detach()
        for j, b in enumerate(surf.y):
            for i, a in enumerate(surf.x):
                m = copy.deepcopy(model)
                torch.nn.utils.vector_to_parameters(w0 + float(a) * d.vectors[0] + float(b) * d.vectors[1],
                                                    m.parameters())
                with torch.no_grad():
                    want = float(nn.functional.cross_entropy(m.eval()(x), y))
                assert surf.loss[j, i] == pytest.approx(want, rel=1e-5)
    lnb.plot.depth_figure(comp)  # draws
    table = comp.table()  # re-trial s59: "on a 0² eigen-map" where none was computed
    assert "no eigen-map (eigen_resolution=0), so no non-convex fraction" in table and "0² eigen-map" not in table
    with pytest.raises(LandscapeError, match=r"models key \(3, 'skip'\); expected \(depth, skip\)"):
        depth_comparison(settings=settings, models={(3, "skip"): (res, (x, y))})
    with pytest.raises(LandscapeError, match=r"models= was given with depths= or load="):
        depth_comparison((20,), settings, models={(3, True): (res, (x, y))})
