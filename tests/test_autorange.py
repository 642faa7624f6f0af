"""auto_range on a quadratic bowl against the analytic crossing (roots of a quadratic)."""
import math

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
    r = auto_range(model, data, dirs, rise=rise, loss_fn=nn.MSELoss())
    for k in range(2):
        neg, pos, l0 = analytic(model, data, dirs[k], rise)
        lo, hi = r.ranges[k]
        assert lo == pytest.approx(neg, rel=0.02) and hi == pytest.approx(pos, rel=0.02)
        assert r.reached[k] == (True, True)
    assert r.centre_loss == pytest.approx(l0, rel=1e-5)
    assert r.target == pytest.approx(rise * r.centre_loss)
    assert r.x == (r.ranges[0][0], r.ranges[0][1], 51)
    assert r.axis(1, 11, symmetric=True) == (-max(-r.ranges[1][0], r.ranges[1][1]),
                                             max(-r.ranges[1][0], r.ranges[1][1]), 11)
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
