"""Spec keys are what existing stores resume by: they must never change by accident.

The expected keys below were computed with the code as it was before the redesign (commit
65e00be); a change here means every store written by earlier versions stops resuming.
"""
import pytest
import torch
from torch import nn

import landscape_nb as lnb


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))


def _data():
    g = torch.Generator().manual_seed(1)
    return torch.randn(32, 4, generator=g), torch.randint(0, 3, (32,), generator=g)


@pytest.mark.parametrize("n, kwargs, key", [
    (1, dict(x=(-1, 1, 5)), "df5e6b9121c3bcabd7c7c297"),
    (2, dict(x=(-1, 1, 3), y=(-0.5, 0.5, 4), mode="bn-recompute", max_samples=16, batch_size=8, tile=(2, 2)),
     "85b257f435b8c37053c398e3"),
    (2, dict(x=(-1, 1, 2), y=(-1, 1, 2), quantity="hessian", quantity_options={"tol": 1e-3}),
     "f44f69f48e6242b4f5d8850e"),
])
def test_spec_key_is_unchanged_since_before_the_redesign(n, kwargs, key):
    model = _model()
    d = lnb.random_directions(model, n=n, seed=0)
    assert lnb.compute_surface(model, _data(), d, **kwargs).provenance["key"] == key
