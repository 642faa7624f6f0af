"""auto_range on a quadratic bowl against the analytic crossing (roots of a quadratic)."""
import math
import time

import numpy as np
import pytest
import torch
from torch import nn

from landscape_nb.autorange import auto_range
from landscape_nb.errors import LandscapeError


@pytest.fixture
def bowl():
    """Least squares: loss(w) = mean((x·w − y)²), a quadratic in the weights of a linear model."""
    torch.manual_seed(0)
    model = nn.Linear(5, 1, bias=False)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(64, 5, generator=g)
    y = x @ torch.randn(5, 1, generator=g) + 0.3 * torch.randn(64, 1, generator=g)
    dirs = torch.randn(2, 5, generator=g)
    return model, (x, y), dirs


def analytic(model, data, direction, rise):
    """Both roots of a t² + b t + (1 − rise) L0 = 0 along w0 + t d, in float64."""
    x, y = (t.double() for t in data)
    w0 = model.weight.detach().double().reshape(-1)
    d = direction.double()
    r, xd = x @ w0 - y.reshape(-1), x @ d
    l0, a, b = float((r ** 2).mean()), float((xd ** 2).mean()), float(2 * (r * xd).mean())
    disc = math.sqrt(b * b + 4 * a * (rise - 1) * l0)
    return (-b - disc) / (2 * a), (-b + disc) / (2 * a), l0


@pytest.mark.parametrize("rise", [1.5, 4.0])
def test_quadratic_bowl_matches_the_analytic_distance_within_two_percent(bowl, rise):
    model, data, dirs = bowl
    before = model.weight.detach().clone()
    t0 = time.perf_counter()
    r = auto_range(model, data, dirs, rise=rise, loss_fn=nn.MSELoss())
    wall = time.perf_counter() - t0
    # the cost of a point, timed over the points after the centre's: a part of the search's wall time
    assert 0 < r.seconds_per_point and r.seconds_per_point * (r.n_points - 1) <= wall
    for k in range(2):
        neg, pos, l0 = analytic(model, data, dirs[k], rise)
        lo, hi = r.ranges[k]
        assert lo == pytest.approx(neg, rel=0.02) and hi == pytest.approx(pos, rel=0.02)
        assert r.reached[k] == (True, True)
    assert r.centre_loss == pytest.approx(l0, rel=1e-5)
    assert (r.x, r.y) == (r.axis(0), r.axis(1))
    assert r.target == pytest.approx(rise * r.centre_loss)
    # x, y and axis(): grids that cover the crossings (at most 1 % and two steps further out) with the model at 0
    # one of their points (trial X: r.x missed it, and Surface.sharpness refused the surface); naive linspace
    for k, num, symmetric in ((0, None, False), (1, None, False), (0, 50, False), (1, 11, True), (1, 20, True)):
        lo, hi = r.ranges[k]
        if symmetric:
            lo, hi = -max(-lo, hi), max(-lo, hi)
        start, stop, n = r.axis(k, num, symmetric=symmetric)
        assert n == (num or 51)
        step = (hi - lo) / (n - 1)
        assert lo - 0.011 * (hi - lo) - 2 * step <= start <= lo and hi <= stop <= hi + 0.011 * (hi - lo) + 2 * step
        assert np.abs(np.linspace(start, stop, n)).min() < 1e-9 * (stop - start), (k, num, start, stop)
    assert r.n_points < 1 + 4 * 20
    assert torch.equal(model.weight, before)  # the centre is restored


def test_range_capped_where_the_loss_never_rises_enough(bowl):
    model, data, dirs = bowl
    neg, pos, _ = analytic(model, data, dirs[0], 3.0)
    cap = 0.5 * min(-neg, pos)
    r = auto_range(model, data, dirs[:1], rise=3.0, loss_fn=nn.MSELoss(), max_distance=cap)
    assert r.ranges[0] == (-cap, cap) and r.reached[0] == (False, False)


def test_refuses_bad_arguments(bowl):
    model, data, dirs = bowl
    with pytest.raises(LandscapeError, match="rise"):
        auto_range(model, data, dirs, rise=1.0, loss_fn=nn.MSELoss())
    with pytest.raises(LandscapeError, match="tol"):
        auto_range(model, data, dirs, tol=0, loss_fn=nn.MSELoss())
    with pytest.raises(LandscapeError, match="centre"):
        auto_range(model, data, dirs, loss_fn=lambda out, y: (out * 0).sum())
    with pytest.raises(LandscapeError, match="one direction"):
        auto_range(model, data, dirs[:1], loss_fn=nn.MSELoss()).y
    with pytest.raises(LandscapeError, match=r"^rise=-2; expected a positive finite number: a factor > 1"):
        auto_range(model, data, dirs, rise=-2, loss_fn=nn.MSELoss())
    with pytest.raises(LandscapeError, match=r"^data with named splits \['train', 'test'\]; expected one data set "
                                             r"here .*pass one of them, e.g. data\['train'\]"):
        auto_range(model, {"train": data, "test": data}, dirs, loss_fn=nn.MSELoss())
    found = auto_range(model, data, dirs, loss_fn=nn.MSELoss())
    with pytest.raises(LandscapeError, match=r"^k=2; expected a direction index from 0 to 1"):
        found.axis(2)
    with pytest.raises(LandscapeError, match=r"^num=1; expected an integer ≥ 2 points per axis"):
        found.axis(0, num=1)
    # a zero direction (the loss never moves) and a non-finite weight returned ±max_distance, "not reached"
    with pytest.raises(LandscapeError, match="direction 0 of 1 is all zeros, so the loss is the centre's"):
        auto_range(model, data, torch.zeros(1, 5), loss_fn=nn.MSELoss())
    with torch.no_grad():
        model.weight[0, 2] = float("inf")
    with pytest.raises(LandscapeError, match="param 'weight' holds 1 non-finite value"):
        auto_range(model, data, dirs, loss_fn=nn.SmoothL1Loss())


def drive(loss, target, tol, max_distance=10.0):
    """Run a Crossing search on a Python function of the distance; (crossing, reached, distances tried)."""
    from landscape_nb.autorange import Crossing

    search, tried = Crossing(loss(0.0), target, max_distance, tol), []
    while (t := search.propose()) is not None:
        assert 0 < t <= max_distance and len(tried) < 200
        tried.append(t)
        search.observe(t, loss(t))
    return search.crossing(), search.reached, tried


def first_crossing(loss, target, max_distance=10.0):
    """Naive: the first of 200,000 geometrically spaced distances where the loss reaches the target."""
    for t in np.geomspace(1e-6, max_distance, 200_000):
        v = loss(t)
        if not v < target:
            return t
    return max_distance


SHAPES = {  # centre loss 0.1 at distance 0; the target is 5x that
    "quadratic": lambda t: 0.1 + 0.4 * t ** 2,
    "exponential": lambda t: 0.1 * math.exp(4 * t),
    "steep wall": lambda t: 0.1 + 0.01 * t + (50.0 if t > 0.37 else 0.0),
    "crossing below the first step": lambda t: 0.1 * (1 + 1e6 * t ** 2),
    "dips before rising": lambda t: 0.1 - 0.08 * math.sin(min(t, 1.0) * math.pi) + 0.05 * t ** 3,
    "overflows to inf": lambda t: 0.1 + 0.1 * t if t < 0.9 else math.inf,  # inf counts as reached
    "reaches it, then NaN": lambda t: 0.1 + 0.4 * t ** 2 if t < 3.0 else math.nan,
    "goes negative (not a log)": lambda t: 0.1 - t + 2 * t ** 2,
    "saturates like cross-entropy": lambda t: min(0.1 * math.exp(3 * t), 2.3) + 0.05 * t,
}


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("tol", [0.05, 0.01])
def test_crossing_search_against_a_dense_scan(shape, tol):
    loss = SHAPES[shape]
    target = 5 * loss(0.0)
    found, reached, tried = drive(loss, target, tol)
    expected = first_crossing(loss, target)
    assert reached
    assert found == pytest.approx(expected, rel=tol), (found, expected, tried)
    # never more points than doubling from 10/64 and then bisecting would take
    assert len(tried) <= math.ceil(math.log2(640 / expected)) + math.ceil(math.log2(1 / tol)) + 2, tried


def test_crossing_search_never_reached_stops_at_max_distance():
    found, reached, tried = drive(lambda t: 0.1 + 0.001 * t, 0.5, 0.01, max_distance=10.0)
    assert (found, reached) == (10.0, False) and tried[-1] == 10.0 and len(tried) <= 7


@pytest.mark.parametrize("edge", [0.9, 2.37, 7.0])
def test_a_loss_that_turns_nan_below_the_target_ends_the_range_at_its_last_finite_point(edge):
    """NaN is no crossing (it counted as one, so the range ended at a NaN point with reached=True): the search
    narrows to where the loss stops being a number; the crossing is the last finite point, within tol of it."""
    from landscape_nb.autorange import Crossing

    def loss(t):
        return 0.1 + 0.01 * t if t < edge else math.nan

    search, tried = Crossing(loss(0.0), 0.5, 10.0, 0.01), []
    while (t := search.propose()) is not None:
        tried.append(t)
        search.observe(t, loss(t))
    found = search.crossing()
    assert (search.reached, search.undefined) == (False, True)
    assert math.isfinite(loss(found)) and found == pytest.approx(edge, rel=0.01), (found, tried)
    assert len(tried) <= math.ceil(math.log2(640 / edge)) + math.ceil(math.log2(100)) + 2, tried


def test_auto_range_of_a_model_undefined_past_a_distance_says_so_and_never_ends_on_a_nan(bowl):
    """sqrt(x·w + 10) is NaN where x·w < −10 for some sample: both ends found are finite points (checked by a
    naive evaluation), flagged undefined and not reached, with a warning naming the sides."""
    model, (x, y), dirs = bowl

    class Sqrt(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = model

        def forward(self, v):
            return torch.sqrt(self.lin(v) + 10)

    net = Sqrt()
    with pytest.warns(UserWarning, match=r"the loss is NaN beyond direction 0 at -[0-9.]+, direction 0 at \+[0-9.]+ "
                                         r"before reaching 50× the centre's.*undefined=True, reached=False"):
        r = auto_range(net, (x, y), dirs[:1], rise=50, loss_fn=nn.MSELoss())
    assert r.undefined == ((True, True),) and r.reached == ((False, False),)
    w0, d = model.weight.detach().clone(), dirs[0].reshape(1, -1)
    for end in r.ranges[0]:
        for t, finite in ((end, True), (end * 1.05, False)):  # the edge is within tol (0.01) of the end
            with torch.no_grad():
                model.weight.copy_(w0 + t * d)
                value = float(nn.functional.mse_loss(net(x), y))
            model.weight.data.copy_(w0)
            assert math.isfinite(value) == finite and (not finite or value < r.target), (end, t, value)


def test_crossing_search_edge_cases_end():
    from landscape_nb.autorange import Crossing

    # two losses above e a float apart share a log: no slope to aim with, so it doubles on
    c = Crossing(2.9, 14.5, 10.0, 0.01)
    for f in (3.0, math.nextafter(3.0, 4.0)):
        c.observe(c.propose(), f)
    assert c.propose() == pytest.approx(2 * 10.0 / 32)
    # a wall: interpolation makes little progress, so bisection takes over for good
    def wall(t):
        return 1.0 + (4.11 if t > 7.89 else 0.0)

    found, reached, tried = drive(wall, 5.0, 1e-3)
    assert reached and found == pytest.approx(7.89, rel=1e-3)
    assert len(tried) <= math.ceil(math.log2(640 / 7.89)) + math.ceil(math.log2(1e3)) + 2, tried
    # a tolerance below float precision cannot be met: the search still ends
    found, reached, tried = drive(lambda t: 0.1 + t, 0.5, 1e-17)
    assert reached and found == pytest.approx(0.4) and len(tried) == Crossing.MAX_POINTS


def test_a_cancelled_search_raises_cancelled_and_restores_the_model():
    import threading

    from conftest import assert_bit_identical, state_copy

    from landscape_nb.evaluate import Cancelled

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    data = (torch.randn(64, 4), torch.randint(0, 3, (64,)))
    saved = state_copy(model)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        auto_range(model, data, [torch.randn(67), torch.randn(67)], cancel=cancel)
    assert_bit_identical(model, saved)
    cancel.clear()
    assert auto_range(model, data, [torch.randn(67), torch.randn(67)], cancel=cancel).n_points > 1


def test_directions_made_for_another_model_warn_as_the_surface_over_the_range_does():
    """Trial s56: compute_surface, eigen_map and project_trajectory warned of directions filter-normalized to
    another model, auto_range (whose range such a surface is then drawn over) said nothing. It warns as they do;
    a float64 copy of the model is the same model."""
    import warnings

    import landscape_nb as lnb

    torch.manual_seed(0)
    a, b = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)), nn.Sequential(
        nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
    g = torch.Generator().manual_seed(0)
    data = (torch.randn(40, 4, generator=g), torch.randint(0, 3, (40,), generator=g))
    d = lnb.random_directions(a, seed=0)
    with pytest.warns(UserWarning, match=r"landscape_nb.auto_range: these random directions were made around "
                                         r"another model's weights .* filter-normalized to that model's weights"):
        auto_range(b, data, d, max_distance=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        auto_range(a, data, d, max_distance=2)
        auto_range(a.double(), (data[0].double(), data[1]), d, max_distance=2)


def test_a_nan_weight_is_refused_with_no_warning_that_the_directions_are_another_models(bowl):
    """Trial s59: the refusal of a NaN weight came with a warning that the directions were made around another
    model's weights, of the same model with one weight NaN: refused first, and said alone."""
    import copy
    import warnings

    import landscape_nb as lnb

    model, data, _ = bowl
    d = lnb.random_directions(model, n=1, seed=0)
    broken = copy.deepcopy(model)
    with torch.no_grad():
        broken.weight[0, 0] = float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(LandscapeError, match=r"NaN"):
            auto_range(broken, data, d, loss_fn=nn.functional.mse_loss)
