"""ResNet-20/56/110 with and without skips (Li et al. 2018, Fig. 5): the zoo entries and the comparison.

The entries train on first use (the session's zoo cache, shared with tests/test_zoo.py). The
comparison is recomputed at ``depth.QUICK`` (the notebook's settings; conftest's session
fixture, which the notebook test resumes from) and its numbers are checked against naive
computations on its own surfaces, then the trend it reports is checked.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from landscape_nb import zoo
from landscape_nb.depth import DEPTHS, QUICK, zoo_name
from landscape_nb.zoo.training import accuracy_of, train

from test_depth_grid import naive_basin_radius, naive_minima_persistence

# the comparison fixture may wait for another xdist worker computing its stores (conftest), minutes on 2 cores
pytestmark = pytest.mark.timeout(1500)

NEW = ["resnet56-digits", "resnet56-noskip-digits", "resnet110-digits", "resnet110-noskip-digits"]

# Stated in each entry's description (zoo/entries.py), measured on a 2-core CPU with torch 2.13.
# Bands are wide where training is unstable (deep nets without skips): the band is the claim.
ACCURACY_BAND = {
    "resnet56-digits": (0.9, 1.0),
    "resnet110-digits": (0.9, 1.0),
    # 0.206-0.597 over seeds 0-7 (AMD EPYC, 1 thread), 0.22-0.44 before the warm-up: unstable
    "resnet56-noskip-digits": (0.15, 0.8),
    "resnet110-noskip-digits": (0.05, 0.2),  # chance is 0.1: it does not learn
}



@pytest.fixture(scope="module")
def examples():
    return {name: zoo.load(name) for name in [zoo_name(d, s) for d in DEPTHS for s in (True, False)]}


@pytest.mark.parametrize("name", NEW)
def test_new_entry_is_registered_with_its_accuracy_in_the_description(name):
    assert name in zoo.names()
    doc = zoo.registry.entry(name).description
    assert "ResNet" in doc


@pytest.mark.parametrize("name", NEW)
def test_new_entry_loads_and_reaches_its_stated_band(name, examples):
    ex = examples[name]
    n_blocks = 9 if "56" in name else 18
    assert len(ex.model.blocks) == 3 * n_blocks
    has_skip = any(b.shortcut is not None for b in ex.model.blocks)
    assert has_skip == ("noskip" not in name)
    inputs, targets = ex.test
    with torch.no_grad():
        naive = float((ex.model(inputs).argmax(1) == targets).float().mean())
    assert naive == pytest.approx(ex.test_accuracy)
    low, high = ACCURACY_BAND[name]
    assert low <= ex.test_accuracy <= high


@pytest.mark.parametrize("name", NEW)
def test_training_is_deterministic(name):
    """The full recipe's code path on a shortened run (256 samples, one epoch past the warm-up),
    twice: bit-identical. A different seed gives different weights, so the comparison can fail."""
    recipe = zoo.registry.recipe(name)
    n_epochs = recipe.training.warmup_epochs + 1
    short = dataclasses.replace(recipe, training=dataclasses.replace(recipe.training, n_epochs=n_epochs))
    (x, y), test = recipe.data()
    split = (x[:256], y[:256])
    first, second = train(short, split, test), train(short, split, test)
    other = train(dataclasses.replace(short, seed=1), split, test)
    assert first.final.keys() == second.final.keys()
    for key in first.final:
        assert torch.equal(first.final[key], second.final[key]), key
    assert not all(torch.equal(first.final[k], first.trajectory[0][k]) for k in first.final)
    assert any(not torch.equal(first.final[k], other.final[k]) for k in first.final)
    assert first.test_accuracy == second.test_accuracy


@pytest.fixture(scope="module")
def comparison(quick_depth_comparison):
    """The comparison at QUICK on an embedded Dask cluster (conftest; eigen-map points dominate)."""
    return quick_depth_comparison[0]


def test_comparison_numbers_are_computed_from_its_surfaces(comparison, examples):
    s = QUICK
    assert [(r.depth, r.skip) for r in comparison.rows] == [(d, k) for d in DEPTHS for k in (True, False)]
    for row in comparison.rows:
        surf, eig = comparison.surfaces[row.name], comparison.eigen_maps[row.name]
        assert surf.loss.shape == (s.resolution, s.resolution) and surf.is_complete
        assert eig.metrics["eig_ratio"].shape == (s.eigen_resolution, s.eigen_resolution)
        loss = np.asarray(surf.loss, float)
        assert row.test_accuracy == examples[row.name].test_accuracy
        assert row.centre_loss == loss[s.resolution // 2, s.resolution // 2]
        persistence = naive_minima_persistence(np.where(np.isfinite(loss), loss, np.inf))
        assert row.n_minima == sum(p >= s.prominence for p in persistence) >= 1
        radius, capped = naive_basin_radius(list(surf.x), list(surf.y), loss, s.basin_rise)
        assert (row.basin_radius, row.basin_capped) == (pytest.approx(radius), capped)
        ratio = np.asarray(eig.metrics["eig_ratio"], float)
        lmin, lmax = eig.metrics["lambda_min"], eig.metrics["lambda_max"]
        np.testing.assert_allclose(ratio, np.abs(lmin / lmax))
        finite = ratio[~np.isnan(ratio)]
        assert row.nonconvex_fraction == pytest.approx(np.mean(finite > s.ratio_threshold))


def test_same_directions_seed_range_and_samples_for_every_network(comparison):
    specs = [comparison.surfaces[r.name].spec for r in comparison.rows]
    grids = {(tuple(comparison.surfaces[r.name].x), tuple(comparison.surfaces[r.name].y)) for r in comparison.rows}
    assert len(grids) == 1
    assert all(math.isclose(comparison.surfaces[r.name].x[-1], QUICK.span) for r in comparison.rows)
    assert len({str(sp.get("data")) for sp in specs}) == 1  # one evaluation subset


def test_table_lists_every_network(comparison):
    table = comparison.table()
    for row in comparison.rows:
        assert f"| {row.name} |" in table


def test_cache_writes_stacked_trajectories_and_still_reads_format_1(tmp_path):
    """Format 2 stacks each parameter over the checkpoints (ResNet-110 reads in 0.5 s, not 3.7 s)."""
    from landscape_nb.zoo import _cache
    from landscape_nb.zoo.training import TrainedWeights

    model = zoo.build_model("resnet20-noskip-digits")
    g = torch.Generator().manual_seed(0)
    trajectory = [{k: torch.randn(v.shape, generator=g).to(v.dtype) if v.is_floating_point() else v + i
                   for k, v in model.state_dict().items()} for i in range(3)]
    weights = TrainedWeights(trajectory, {"m": trajectory[1]}, 0.5)
    path = tmp_path / "w.pt"
    _cache.write(path, weights)
    payload = torch.load(path, weights_only=True)
    assert payload["format"] == 2 and isinstance(payload["trajectory"], dict)
    assert all(v.shape[0] == 3 for v in payload["trajectory"].values())
    torch.save({"format": 1, "trajectory": trajectory, "minimizers": {"m": trajectory[1]}, "test_accuracy": 0.5},
               tmp_path / "v1.pt")
    for p in (path, tmp_path / "v1.pt"):
        back = _cache.read(p, model.state_dict())
        assert back.test_accuracy == 0.5 and len(back.trajectory) == 3
        for a, b in zip(back.trajectory, trajectory):
            assert all(torch.equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in b)
        assert all(torch.equal(back.minimizers["m"][k], trajectory[1][k]) for k in trajectory[1])


def test_trend_it_reports(comparison):
    """Li et al.'s claim, read off the recomputed numbers: what holds on digits is asserted.

    Holds (measured at QUICK, 2-core AMD EPYC, trained on one thread: centre loss without skips
    0.098 / 1.50 / 2.29, basin radius 0.515 / 0.125 / 0.125 against 0.5 / 0.625 / 0.354 with skips;
    trained with 2 threads on a 2-core Intel Xeon the weights differ: centre 0.198 / 1.31 / 2.29,
    radius 0.625 / 0.177 / 0.125 against 0.559 / 0.625 / 0.354): without skips the minimizer sits
    higher as depth grows (training fails) and the basin shrinks with depth, never wider than its
    skip twin's past the shallowest depth and narrower at some depth. Does not hold on this data
    (reported, not asserted): more persistence-filtered minima with depth without skips (1 / 1 / 3
    with skips, 1 / 1 / 1 without: ResNet-110-noskip's loss explodes, to 2.6e16 at the corners of its
    plane, rather than turning bumpy), and a non-convex fraction clearly separating skip from no
    skip (0.78 / 0.56 / 0.89 with, 0.78 / 0.89 / 1.00 without; three and one eigen-map points of nine
    apart from depth 56 on). ``trend()`` must agree with the series it summarizes.
    """
    trend = comparison.trend()
    noskip_centre = comparison.series("centre_loss", False)
    assert noskip_centre == sorted(noskip_centre)
    for depth in DEPTHS[1:]:
        assert comparison.row(depth, False).centre_loss > comparison.row(depth, True).centre_loss
    radius = comparison.series("basin_radius", False)
    assert all(b <= a for a, b in zip(radius, radius[1:])) and radius[-1] < radius[0]
    assert trend["basin_radius"]["noskip"]
    twins = list(zip(comparison.series("basin_radius", True), radius))
    # deeper than the shallowest, never wider than its skip twin's, and narrower at some depth (at the
    # shallowest the two are alike, as in Li et al.'s Fig. 5: on an Intel Xeon the no-skip one came out wider)
    assert all(n <= s for s, n in twins[1:]) and any(n < s for s, n in twins)
    for name, entry in trend.items():
        for label, skip in (("skip", True), ("noskip", False)):
            values = comparison.series(name, skip)
            better = (lambda a, b: b > a) if name == "basin_radius" else (lambda a, b: b < a)
            assert entry[label] == (not any(better(a, b) for a, b in zip(values, values[1:]))
                                    and not any(v != v for v in values) and better(values[-1], values[0]))
